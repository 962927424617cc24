"""What this machine can do: netem, OVS datapaths, iperf3's MPTCP support, MPTCP sysctls.

:func:`probe` starts nothing and writes nothing (the netem probe runs inside a throw-away network
namespace), so it can run before the preflight and a refused run leaves no process, file or bridge
behind -- though asking whether netem or the OVS datapath exists lets the kernel autoload their
modules, as any `tc` or netlink user would. :func:`prepare` then does what a run needs -- start Open vSwitch, load
the openvswitch module where the kernel allows -- and probes again. Every answer is recorded in
each result, so a reader knows how the links were emulated.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from . import __version__

OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"


def _run(argv: list[str], timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def read_sysctl(name: str, root: str = "/proc/sys") -> str | None:
    try:
        return Path(root, *name.split(".")).read_text().strip()
    except OSError:
        return None


@functools.cache
def has_netem() -> bool:
    """True when the kernel accepts a netem qdisc (tried on lo of a fresh, private netns)."""
    if not shutil.which("unshare") or not shutil.which("tc"):
        return False
    r = _run(["unshare", "--net", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"])
    return r.returncode == 0


def _genl_family_exists(name: str) -> bool:
    try:
        from pyroute2.netlink.generic import GenericNetlinkSocket
    except ImportError:  # reported by the preflight (capabilities.pyroute2)
        return False

    sock = GenericNetlinkSocket()
    try:
        sock.get_protocol_id(name)
        return True
    except Exception:
        return False
    finally:
        sock.close()


def ovs_kernel_datapath() -> bool:
    """True when the openvswitch kernel module answers (loaded already; see :func:`prepare`)."""
    return _genl_family_exists("ovs_datapath")


def load_ovs_module() -> None:
    """Load the openvswitch module where the kernel can (a run's preparation, after preflight)."""
    if not ovs_kernel_datapath() and shutil.which("modprobe") and Path("/proc/modules").exists():
        _run(["modprobe", "openvswitch"])


def ovs_running() -> bool:
    if not shutil.which("ovs-vsctl"):
        return False
    try:
        return _run(["ovs-vsctl", "--timeout=5", "show"], timeout=8).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def start_ovs() -> None:
    """Start Open vSwitch if it is installed but not running (idempotent)."""
    if ovs_running():
        return
    if not Path(OVS_CTL).exists():
        raise RuntimeError("Open vSwitch is not installed: apt-get install openvswitch-switch (or `make setup`)")
    r = _run([OVS_CTL, "start"], timeout=60)
    if not ovs_running():
        raise RuntimeError(f"could not start Open vSwitch: {r.stderr.strip() or r.stdout.strip()}")


@functools.cache
def iperf3_version() -> str | None:
    if not shutil.which("iperf3"):
        return None
    m = re.search(r"iperf (\d+\.\d+(?:\.\d+)?)", _run(["iperf3", "--version"]).stdout)
    return m.group(1) if m else None


def iperf3_has_mptcp(version: str | None) -> bool:
    """iperf3 has --mptcp from 3.19 on; older ones need `mptcpize run`."""
    if not version:
        return False
    parts = tuple(int(x) for x in version.split("."))
    return parts >= (3, 19)


@functools.cache
def tool_version(argv: tuple[str, ...], pattern: str) -> str | None:
    if not shutil.which(argv[0]):
        return None
    try:
        r = _run(list(argv))
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(pattern, r.stdout + r.stderr)
    return m.group(1) if m else None


def pyroute2_version() -> str | None:
    try:
        from pyroute2 import __version__ as version
    except ImportError:
        return None
    return str(version)


def mininet_version() -> str | None:
    try:
        from mininet.net import VERSION
    except ImportError:
        return None
    return VERSION


def git_commit() -> str | None:
    """The mptcplab checkout's commit, with '+dirty' when the work tree has changes."""
    here = Path(__file__).resolve().parent
    if not shutil.which("git"):
        return None
    r = _run(["git", "-C", str(here), "rev-parse", "HEAD"])
    if r.returncode != 0:
        return None
    dirty = _run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
    return r.stdout.strip() + ("+dirty" if dirty else "")


def mptcp_sysctls() -> dict[str, str]:
    """Every net.mptcp.* sysctl of this namespace and its value."""
    return {f"net.mptcp.{p.name}": read_sysctl(f"net.mptcp.{p.name}") or ""
            for p in sorted(Path("/proc/sys/net/mptcp").glob("*"))}


def available(name: str) -> list[str]:
    v = read_sysctl(name)
    return v.split() if v else []


@dataclass(frozen=True)
class Capabilities:
    kernel: str
    netem: bool
    ovs_installed: bool
    ovs_kernel_datapath: bool
    mptcp_enabled: bool
    path_managers: list[str]
    schedulers: list[str]
    congestion_controls: list[str]
    iperf3: str | None
    iperf3_mptcp: str  # "--mptcp", "mptcpize" or "none"
    mininet: str | None
    mptcpize: bool
    ethtool: bool
    cc: bool
    nsenter: bool
    pyroute2: str | None = None

    @property
    def datapath(self) -> str:
        return "kernel" if self.ovs_kernel_datapath else "user"

    @property
    def shaping_backend(self) -> str:
        """What `shaper: auto` uses here (a link netem cannot express exactly still gets the
        user-space emulator)."""
        return "netem" if self.netem else "userspace"

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["datapath"] = self.datapath
        d["shaping_backend"] = self.shaping_backend
        return d


def probe() -> Capabilities:
    ver = iperf3_version()
    mode = "--mptcp" if iperf3_has_mptcp(ver) else ("mptcpize" if shutil.which("mptcpize") else "none")
    return Capabilities(
        kernel=os.uname().release,
        netem=has_netem(),
        ovs_installed=bool(shutil.which("ovs-vsctl")),
        ovs_kernel_datapath=ovs_kernel_datapath() if os.geteuid() == 0 else False,
        mptcp_enabled=read_sysctl("net.mptcp.enabled") == "1",
        path_managers=available("net.mptcp.available_path_managers") or ["kernel"],
        schedulers=available("net.mptcp.available_schedulers") or ["default"],
        congestion_controls=available("net.ipv4.tcp_available_congestion_control"),
        iperf3=ver,
        iperf3_mptcp=mode,
        mininet=mininet_version(),
        mptcpize=bool(shutil.which("mptcpize")),
        ethtool=bool(shutil.which("ethtool")),
        cc=bool(shutil.which("cc") or shutil.which("gcc")),
        nsenter=bool(shutil.which("nsenter")),
        pyroute2=pyroute2_version(),
    )


def prepare(caps: Capabilities, ovs: bool = True) -> Capabilities:
    """Make the machine ready for a run that passed preflight: Open vSwitch running, its kernel
    module loaded where possible -- when ``ovs`` (some switch is Open vSwitch; Linux bridges need
    neither). Returns the capabilities probed again."""
    if not ovs:
        return caps
    start_ovs()
    load_ovs_module()
    return dataclasses.replace(caps, ovs_kernel_datapath=ovs_kernel_datapath())


def existing_bridges() -> frozenset[str]:
    """OVS bridges now (empty when OVS is not running: then none can clash)."""
    if not ovs_running():
        return frozenset()
    return frozenset(_run(["ovs-vsctl", "--timeout=5", "list-br"]).stdout.split())


def existing_interfaces() -> frozenset[str]:
    return frozenset(os.listdir("/sys/class/net"))


def versions() -> dict[str, str | None]:
    return {
        "mptcplab": __version__,
        "mptcplab_git": git_commit(),
        "iperf3": iperf3_version(),
        "openvswitch": tool_version(("ovs-vsctl", "--version"), r"\(Open vSwitch\) (\S+)"),
        "mininet": mininet_version(),
        "iproute2": tool_version(("ip", "-V"), r"iproute2-([0-9][0-9.]*[0-9])"),
        "ethtool": tool_version(("ethtool", "--version"), r"version (\S+)"),
        "python": ".".join(map(str, sys.version_info[:3])),
    }

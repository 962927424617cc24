"""Processes inside the emulated hosts: argument lists in, stopped by PID, never a shell.

Every command mptcplab runs in a Mininet node goes through :func:`node_run` (wait for it) or the
node's ``popen`` (keep it, then :func:`stop` it); both are argument lists that Mininet hands to
``mnexec`` -- no string ever reaches a shell. The offload switches live here once: the OVS
userspace datapath and the user-space emulator need whole frames with real checksums, and htb is
exact only on wire-sized packets.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: ethtool features turned off on every veth (tx/rx checksumming, TSO, GSO, GRO).
OFFLOADS = ("tx", "rx", "tso", "gso", "gro")
#: `ethtool -k` long names -> the short names above.
_OFFLOAD_NAMES = {
    "tx-checksumming": "tx", "rx-checksumming": "rx", "tcp-segmentation-offload": "tso",
    "generic-segmentation-offload": "gso", "generic-receive-offload": "gro",
}
#: ethtool -K exits 80 when some features were already fixed: not an error.
ETHTOOL_OK = (0, 80)


def node_run(node: Any, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run an argument list inside a Mininet node's namespace and wait for it."""
    p = node.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


def stop(p: subprocess.Popen, grace: float = 2.0) -> tuple[str, str]:
    """SIGTERM the process we started (by its Popen, i.e. its PID), SIGKILL after ``grace``
    seconds; returns what it printed."""
    if p.poll() is None:
        p.terminate()
    try:
        return p.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.communicate()


def offloads_off_argv(ifname: str) -> list[str]:
    return ["ethtool", "-K", ifname, *[x for f in OFFLOADS for x in (f, "off")]]


def offloads_off(node: Any, ifname: str) -> None:
    r = node_run(node, offloads_off_argv(ifname))
    if r.returncode not in ETHTOOL_OK:
        raise RuntimeError(f"{ifname}: ethtool -K failed: {r.stderr.strip()}")


def offloads(node: Any, ifname: str) -> dict[str, str]:
    """What ethtool says of the offloads above ('on'/'off'), for the metadata."""
    r = node_run(node, ["ethtool", "-k", ifname])
    found = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^([a-z-]+): (on|off)", line)
        if m and m.group(1) in _OFFLOAD_NAMES:
            found[_OFFLOAD_NAMES[m.group(1)]] = m.group(2)
    return found


# --------------------------------------------------------------------------- /proc


@dataclass(frozen=True)
class ProcStat:
    state: str
    ppid: int
    starttime: int


def proc_stat(pid: int) -> ProcStat | None:
    """State, parent and start time (clock ticks since boot) from /proc/PID/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        # The command name may contain spaces and parentheses: split after the last ')'.
        fields = text.rsplit(")", 1)[1].split()
        return ProcStat(state=fields[0], ppid=int(fields[1]), starttime=int(fields[19]))
    except (OSError, IndexError, ValueError):
        return None


def proc_starttime(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat)."""
    st = proc_stat(pid)
    return None if st is None else st.starttime

"""Shared fixtures. Tests marked `root` build real Mininet networks: they need root, Open vSwitch
running and MPTCP enabled, and are skipped -- saying which of those is missing -- otherwise."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _why_no_network() -> str | None:
    if os.geteuid() != 0:
        return "needs root to build Mininet networks (run: sudo make test)"
    if Path("/proc/sys/net/mptcp/enabled").read_text().strip() != "1":
        return "net.mptcp.enabled is not 1"
    try:
        import mininet.net  # noqa: F401
    except ImportError:
        return "Mininet is not importable (make setup)"
    r = subprocess.run(["ovs-vsctl", "--timeout=5", "show"], capture_output=True)
    if r.returncode != 0:
        return "Open vSwitch is not running (make setup starts it)"
    return None


def pytest_collection_modifyitems(config, items):
    why = _why_no_network()
    if why:
        skip = pytest.mark.skip(reason=why)
        for item in items:
            if "root" in item.keywords:
                item.add_marker(skip)


@dataclass(frozen=True)
class Snapshot:
    bridges: frozenset[str]
    links: frozenset[str]
    processes: frozenset[str]
    states: frozenset[str]


def snapshot() -> Snapshot:
    """What of the toolkit's kind exists now: OVS bridges, Mininet-style interfaces in the root
    namespace, experiment processes, registry state files."""
    br = subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True, text=True).stdout.split()
    links = [n for n in os.listdir("/sys/class/net") if re.search(r"-eth\d+$", n)]
    procs = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if re.search(r"(^|/)(iperf3|mnexec|linkemu-[0-9a-f]+)\b|mininet:", argv) and "pytest" not in argv:
            procs.append(f"{d.name} {argv.strip()}")
    from mptcplab.registry import STATE_DIR

    states = [p.name for p in STATE_DIR.glob("*.json")] if STATE_DIR.exists() else []
    return Snapshot(frozenset(br), frozenset(links), frozenset(procs), frozenset(states))


def leftovers(before: Snapshot, after: Snapshot) -> dict[str, set[str]]:
    out = {
        "bridges": set(after.bridges - before.bridges),
        "links": set(after.links - before.links),
        "processes": set(after.processes - before.processes),
        "state files": set(after.states - before.states),
    }
    return {k: v for k, v in out.items() if v}


@pytest.fixture
def no_leftovers():
    """Fails the test if it leaves any bridge, interface, process or state file behind."""
    before = snapshot()
    yield before
    left = leftovers(before, snapshot())
    assert not left, f"the run left things behind: {left}"


@pytest.fixture
def foreign_bridge():
    """An OVS bridge somebody else created: mptcplab must never touch it."""
    name = "usrbr" + str(os.getpid() % 10000)
    subprocess.run(["ovs-vsctl", "--timeout=5", "--may-exist", "add-br", name, "--", "set", "bridge",
                    name, "datapath_type=netdev"], check=True)
    yield name
    subprocess.run(["ovs-vsctl", "--timeout=5", "--if-exists", "del-br", name], check=False)


def bridge_exists(name: str) -> bool:
    return name in subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True,
                                  text=True).stdout.split()


def cli(*args: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess[str]:
    """Run one of the package's console scripts as a user would."""
    exe = str(BIN / args[0])
    return subprocess.run([exe, *args[1:]], capture_output=True, text=True, timeout=timeout,
                          cwd=kw.pop("cwd", REPO), **kw)

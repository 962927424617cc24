"""Fixtures. Tests marked `root` build real Mininet networks: they need root, Open vSwitch running
and MPTCP enabled, and are skipped -- saying which of those is missing -- otherwise. Plain helper
functions live in helpers.py (import them from there, not from this file)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

from helpers import leftovers, snapshot


#: Set by kernel-patches/uml/pytest_guest.py: these tests run inside the User-Mode Linux guest
#: (`make test-netem`), which has netem but no Open vSwitch; only `netem` tests run there.
IN_UML = os.environ.get("MPTCPLAB_UML_GUEST") == "1"


def _why_no_network() -> str | None:
    if os.geteuid() != 0:
        return "needs root to build Mininet networks (run: sudo make test)"
    if Path("/proc/sys/net/mptcp/enabled").read_text().strip() != "1":
        return "net.mptcp.enabled is not 1"
    if importlib.util.find_spec("mininet") is None:
        return "Mininet is not importable (make setup)"
    if IN_UML:  # the netem tests join hosts by links alone: no switch, no OVS
        return None
    r = subprocess.run(["ovs-vsctl", "--timeout=5", "show"], capture_output=True)
    if r.returncode != 0:
        return "Open vSwitch is not running (make setup starts it)"
    return None


def pytest_collection_modifyitems(config, items):
    from mptcplab.capabilities import has_netem

    netem_tests = [item for item in items if "netem" in item.keywords]
    if IN_UML:
        # the guest runs the netem tests only (the rest run on the host)
        keep, items[:] = items[:], netem_tests
        config.hook.pytest_deselected(items=[i for i in keep if i not in netem_tests])
    elif netem_tests and not has_netem():
        # not skipped but moved: `make test-netem` runs them in User-Mode Linux, which has netem
        items[:] = [item for item in items if "netem" not in item.keywords]
        config.hook.pytest_deselected(items=netem_tests)
        config._netem_moved = len(netem_tests)
    why = _why_no_network()
    if why:
        skip = pytest.mark.skip(reason=why)
        for item in items:
            if "root" in item.keywords:
                item.add_marker(skip)


def pytest_report_header(config):
    return ["mptcplab: in the User-Mode Linux guest (netem tests only)"] if IN_UML else []


def pytest_terminal_summary(terminalreporter, config):
    moved = getattr(config, "_netem_moved", 0)
    if moved:
        terminalreporter.write_line(
            f"mptcplab: {moved} netem tests deselected here (this kernel has no netem qdisc); "
            "`make test-netem` runs them in User-Mode Linux")


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

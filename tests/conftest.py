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


def _why_no_network() -> str | None:
    if os.geteuid() != 0:
        return "needs root to build Mininet networks (run: sudo make test)"
    if Path("/proc/sys/net/mptcp/enabled").read_text().strip() != "1":
        return "net.mptcp.enabled is not 1"
    if importlib.util.find_spec("mininet") is None:
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

"""Provenance: what a reader of a result needs to know of how it was made.

The metadata of a run -- the machine (kernel, capabilities, tool versions, the MPTCP sysctls of the
root namespace), the command, how the links were emulated -- collected in one place so that every
run directory answers the same questions.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from . import capabilities
from .capabilities import Capabilities
from .spec import Experiment

ROOT_SYSCTLS = ("net.mptcp.enabled", "net.mptcp.path_manager", "net.mptcp.scheduler",
                "net.ipv4.tcp_congestion_control", "net.ipv4.tcp_allowed_congestion_control")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def run_metadata(exp: Experiment, spec_file: Path, run_id: str, caps: Capabilities, expected_subflows: int,
                 swept: list[str]) -> dict[str, Any]:
    """metadata.json of a new run, before anything is measured."""
    return {
        "run_id": run_id, "experiment": exp.name, "spec_file": str(spec_file),
        "command": list(sys.argv), "hostname": socket.gethostname(), "user": _invoking_user(),
        "started": now(), "kernel": os.uname().release,
        "capabilities": caps.to_dict(), "versions": capabilities.versions(),
        "datapath": caps.datapath, "shaper_requested": exp.emulation.shaper,
        "switch_requested": exp.emulation.switch,
        "root_sysctls": {k: capabilities.read_sysctl(k) for k in ROOT_SYSCTLS},
        "mptcp_mode": caps.iperf3_mptcp, "expected_subflows": expected_subflows,
        "formats": list(exp.outputs.formats), "swept": swept,
        "shuffle_seed": exp.sweep.seed if exp.sweep and exp.sweep.shuffle else None,
    }


def _invoking_user() -> str | None:
    """Who asked: the sudo caller when there is one."""
    return os.environ.get("SUDO_USER") or os.environ.get("USER")

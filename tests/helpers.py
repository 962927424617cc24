"""Helpers shared by the tests: the one spec builder, the command line as a user runs it, what a
run may leave behind, and TCP/MPTCP header builders for parser tests."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from mptcplab.mptcp_options import MP_CAPABLE, MP_JOIN, MPTCP_KIND

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def write_spec(tmp_path: Path, experiment: str = "dual-path", *, inline_topology: bool = False,
               traffic: dict[str, Any] | None = None, mutate: Callable[[dict[str, Any]], None] | None = None,
               name: str = "spec.yaml") -> Path:
    """A copy of experiments/<experiment>.yaml written to tmp_path: results under tmp_path, the
    topology by absolute path (or inline), ``traffic`` fields replaced, then ``mutate`` applied."""
    spec = yaml.safe_load((REPO / "experiments" / f"{experiment}.yaml").read_text())
    topo_path = (REPO / "experiments" / spec["topology"]).resolve()
    spec["topology"] = yaml.safe_load(topo_path.read_text()) if inline_topology else str(topo_path)
    spec.setdefault("traffic", {}).update(traffic or {})
    spec.setdefault("outputs", {})["dir"] = str(tmp_path / "results")
    if mutate:
        mutate(spec)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def cli(*args: str, timeout: float = 600, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run one of the package's console scripts as a user would."""
    exe = str(BIN / args[0])
    return subprocess.run([exe, *args[1:]], capture_output=True, text=True, timeout=timeout,
                          cwd=kw.pop("cwd", REPO), **kw)


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


def bridge_exists(name: str) -> bool:
    return name in subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True,
                                  text=True).stdout.split()


def cli(*args: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess[str]:
    """Run one of the package's console scripts as a user would."""
    exe = str(BIN / args[0])
    return subprocess.run([exe, *args[1:]], capture_output=True, text=True, timeout=timeout,
                          cwd=kw.pop("cwd", REPO), **kw)


# --------------------------------------------------------------------------- packets

def build_mptcp_syn_options(kind: str, key: bytes = b"", token: int = 0, address_id: int = 0) -> bytes:
    """MPTCP options as a real stack would send them (for tests of the parser and the controller)."""
    if kind == "capable-syn":
        return bytes([MPTCP_KIND, 4, (MP_CAPABLE << 4) | 1, 0x81])
    if kind == "capable-synack":
        return bytes([MPTCP_KIND, 12, (MP_CAPABLE << 4) | 1, 0x81]) + key
    if kind == "join-syn":
        return bytes([MPTCP_KIND, 12, (MP_JOIN << 4), address_id]) + struct.pack("!II", token, 0x12345678)
    raise ValueError(kind)


def tcp_header(sport: int, dport: int, flags: int, options: bytes = b"") -> bytes:
    """A TCP header with these options (padded with no-ops to a multiple of 4)."""
    pad = (-len(options)) % 4
    options += b"\x01" * pad
    off = (20 + len(options)) // 4
    return struct.pack("!HHIIHHHH", sport, dport, 1000, 0, (off << 12) | flags, 65535, 0, 0) + options

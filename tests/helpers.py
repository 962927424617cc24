"""Helpers shared by the tests: the one spec builder, the command line as a user runs it, what a
run may leave behind, and TCP/MPTCP header builders for parser tests."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

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
    """What of the toolkit's kind exists now: OVS bridges and Linux bridges, Mininet-style
    interfaces in the root namespace, experiment processes, registry state files."""
    br = subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True, text=True).stdout.split()
    br += [n for n in os.listdir("/sys/class/net") if os.path.isdir(f"/sys/class/net/{n}/bridge")]
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
    """An Open vSwitch bridge of that name (the foreign bridges the tests make are OVS ones)."""
    return name in subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True,
                                  text=True).stdout.split()


# --------------------------------------------------------------------------- black-box runs


def dual_path_spec(tmp_path: Path, name: str = "spec.yaml", *, duration: float = 2, repetitions: int = 1,
                   protocols: list[str] | None = None, sweep: dict[str, list[Any]] | None = None,
                   check: str = "rtt") -> Path:
    """experiments/dual-path.yaml made short (write_spec), PNG figures only."""
    def mutate(spec: dict[str, Any]) -> None:
        spec["emulation"] = {"check": check}
        if sweep:
            spec["sweep"] = {"parameters": sweep}
        spec["outputs"]["formats"] = ["png"]

    traffic: dict[str, Any] = {"duration": duration, "repetitions": repetitions}
    if protocols:
        traffic["protocols"] = protocols
    return write_spec(tmp_path, "dual-path", traffic=traffic, mutate=mutate, name=name)


def dual_channel_spec(tmp_path: Path, name: str = "channel.yaml", duration: float = 1) -> Path:
    """A network with no switch at all (nothing whose name could clash with a dual-path run's)."""
    def mutate(spec: dict[str, Any]) -> None:
        spec.pop("sweep", None)
        spec["outputs"] = {"dir": str(tmp_path / "results-channel"), "formats": ["png"]}

    return write_spec(tmp_path, "dual-channel-max", traffic={"duration": duration, "repetitions": 1},
                      mutate=mutate, name=name)


def cmdlines() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, argv) of every process there is now (those gone while read are skipped)."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                yield int(d.name), (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue


def descendants(pid: int) -> list[int]:
    """Every process below pid (children, their children, ...), from /proc."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [c for c, p in parent.items() if p in frontier]
        found.extend(kids)
        frontier = kids
    return found


def iperf3_clients(pid: int) -> list[int]:
    """iperf3 clients started by the run whose runner is pid (the traffic of a test is flowing)."""
    out = []
    for c in descendants(pid):
        try:
            argv = Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"iperf3") and b"-c" in argv:
            out.append(c)
    return out


class Run:
    """One `run-experiment` (or `mptcplab`) process with its stderr read line by line as it comes,
    each line stamped with the time it arrived."""

    def __init__(self, *args: str, env: dict[str, str] | None = None):
        self.args = args
        self.started = time.monotonic()
        self.proc = subprocess.Popen([str(BIN / args[0]), *args[1:]], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, str]] = []
        self.out = ""
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._out = threading.Thread(target=self._read_out, daemon=True)
        self._err.start()
        self._out.start()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        self.out = self.proc.stdout.read()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stderr(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def count(self, pattern: str) -> int:
        return sum(1 for _, line in self.lines if re.search(pattern, line))

    def wait_until(self, ready: Callable[[], bool], timeout: float, poll: float = 0.02) -> bool:
        """True once ready() holds; False if the process ended first or timeout passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return True
            if self.proc.poll() is not None:
                return ready()
            time.sleep(poll)
        return False

    def wait_line(self, pattern: str, n: int = 1, timeout: float = 120) -> bool:
        """Wait for the n-th stderr line matching pattern."""
        return self.wait_until(lambda: self.count(pattern) >= n, timeout)

    def finish(self, timeout: float = 300) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._err.join(timeout=10)
        self._out.join(timeout=10)
        return rc

    def kill(self) -> int:
        """SIGKILL the runner alone, as the OOM killer or `kill -9 PID` would. Its orphans keep
        the pipes open until `mptcplab clean` ends them: the readers are not waited for."""
        self.proc.kill()
        rc = self.proc.wait(timeout=60)
        self._err.join(timeout=0.5)
        return rc


def read_json(path: Path, default: Any = None) -> Any:
    """A JSON file of a run directory, or default while it is absent (written atomically, so a
    file that exists is whole)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def points_done(run_dir: Path) -> set[str]:
    return {p["id"] for p in read_json(run_dir / "points.json", []) if p["status"] == "done"}



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

"""Helpers of the black-box tests that start `run-experiment` as a user would and watch it from
outside: through its stderr, its run directory and the process table -- never through its code.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from conftest import BIN, REPO


def dual_path_spec(tmp_path: Path, name: str = "spec.yaml", *, duration: float = 2, repetitions: int = 1,
                   protocols: list[str] | None = None, sweep: dict[str, list[Any]] | None = None,
                   check: str = "rtt") -> Path:
    """experiments/dual-path.yaml made short, with absolute paths, written to tmp_path/name."""
    spec = yaml.safe_load((REPO / "experiments/dual-path.yaml").read_text())
    spec["topology"] = str(REPO / "topologies/dual-path.yaml")
    spec["traffic"].update(duration=duration, repetitions=repetitions)
    if protocols:
        spec["traffic"]["protocols"] = protocols
    spec["emulation"] = {"check": check}
    if sweep:
        spec["sweep"] = {"parameters": sweep}
    spec["outputs"] = {"dir": str(tmp_path / "results"), "formats": ["png"]}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def dual_channel_spec(tmp_path: Path, name: str = "channel.yaml", duration: float = 1) -> Path:
    """A network with no switch at all (nothing whose name could clash with a dual-path run's)."""
    spec = yaml.safe_load((REPO / "experiments/dual-channel-max.yaml").read_text())
    spec["topology"] = str(REPO / "topologies/dual-channel.yaml")
    spec["traffic"].update(duration=duration, repetitions=1)
    spec.pop("sweep", None)
    spec["outputs"] = {"dir": str(tmp_path / "results-channel"), "formats": ["png"]}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


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


"""The user-space link emulator: build it, start one per link, talk to it.

Why a user-space emulator: many kernels (this project's own CI machine, cloud and WSL kernels)
have no netem qdisc, and then a link asked to have 10 ms of delay has none. ``linkemu`` (C,
``linkemu.c`` beside this file) forwards frames between two veth ends in a network namespace of
its own and applies loss, a drop-tail queue, rate and delay/jitter per direction -- after, if asked
(``mb_*`` settings), a middlebox that strips MPTCP options, drops MPTCP SYNs, clamps the MSS,
rewrites payload, splits, coalesces segments, randomises ISNs or NATs;
``linkemu --filter`` runs that middlebox alone on hex frames, for tests. One process per
link: links run in parallel on all cores and a link's namespace dies with its process, taking the
link's veths with it -- nothing is left in the root namespace.

The binary is compiled on first use (cc, about a second) into a cache keyed by the source's hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

from ..linkmodel import Direction, emulator_settings
from ..proc import ETHTOOL_OK, offloads_off_argv

SOURCE = Path(__file__).with_name("linkemu.c")
CACHE = Path(os.environ.get("MPTCPLAB_CACHE", "/var/cache/mptcplab"))

#: Called with (pid, argv) for every emulator started, so the run's registry records it.
on_process_started: list[Callable[[int, list[str]], None]] = []


class EmulatorError(RuntimeError):
    pass


def binary() -> Path:
    """Path of the compiled emulator, building it if the source changed."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    path = CACHE / f"linkemu-{digest}"
    if path.exists():
        return path
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise EmulatorError("no C compiler to build the link emulator: apt-get install gcc libc6-dev (make setup)")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    r = subprocess.run([cc, "-O2", "-Wall", "-o", str(tmp), str(SOURCE), "-lm"],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise EmulatorError(f"building the link emulator failed:\n{r.stderr}")
    os.replace(tmp, path)
    return path


class LinkEmulator:
    """One linkemu process: its own namespace with veth ends ``a`` (node1 side) and ``b``."""

    def __init__(self, name: str, seed: int = 1):
        self.name = name
        self.seed = seed
        self.proc: subprocess.Popen[str] | None = None
        self.pid = 0

    def start(self) -> "LinkEmulator":
        argv = [str(binary()), "--seed", str(self.seed)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("ready"):
            err = self.proc.stderr.read() if self.proc.stderr else ""  # type: ignore[union-attr]
            raise EmulatorError(f"{self.name}: emulator did not start: {line.strip()} {err.strip()}")
        self.pid = int(line.split()[1])
        for hook in on_process_started:
            hook(self.pid, argv)
        return self

    @property
    def netns(self) -> str:
        return f"/proc/{self.pid}/ns/net"

    def _in_ns(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", f"--net={self.netns}", *argv], capture_output=True, text=True,
                              check=False, timeout=30)

    def _ask(self, line: str) -> str:
        if self.proc is None or self.proc.poll() is not None:
            raise EmulatorError(f"{self.name}: emulator is not running")
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if answer.startswith("error") or not answer:
            raise EmulatorError(f"{self.name}: {line!r}: {answer or 'no answer'}")
        return answer

    def configure(self, a2b: Direction, b2a: Direction) -> None:
        for which, d in (("a2b", a2b), ("b2a", b2a)):
            self._ask("set " + which + " " + " ".join(f"{k}={v}" for k, v in emulator_settings(d).items()))

    def go(self) -> None:
        """Both veth ends exist in our namespace now: bring them up and start forwarding."""
        for ifname in ("a", "b"):
            for argv in (["ip", "link", "set", "dev", ifname, "up"], offloads_off_argv(ifname)):
                r = self._in_ns(argv)
                if r.returncode not in ETHTOOL_OK:
                    raise EmulatorError(f"{self.name}: {' '.join(argv)}: {r.stderr.strip()}")
        answer = self._ask("go")
        if answer != "running":
            raise EmulatorError(f"{self.name}: emulator did not start forwarding: {answer}")

    def stats(self) -> dict[str, Any]:
        return json.loads(self._ask("stats"))

    def set_down(self, down: bool) -> None:
        """Cut the cable (carrier off on both ends, queues flushed) or splice it again."""
        self._ask("down" if down else "up")
        for ifname in ("a", "b"):
            self._in_ns(["ip", "link", "set", "dev", ifname, "down" if down else "up"])

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=3)
            except (OSError, subprocess.TimeoutExpired, AssertionError):
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f:
                f.close()
        self.proc = None

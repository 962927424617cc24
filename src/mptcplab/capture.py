"""Packet captures of each test: one dumpcap per host interface, inside the host, started
before the test's traffic and stopped after it, by PID.

Each capture writes a ring buffer of ``RING_FILES`` files into a private directory (0700, made
for this test), so a long or fast test keeps the last ``max_mb`` of packets instead of filling
the disk; only the headers are kept by default (``snaplen``: Ethernet, IP and TCP with its
options fit in 128 bytes). After the test the ring's files go, oldest first and gzipped, to
raw/<test>-<interface>.pcapng.gz through the run directory; dumpcap's own counters (packets
received, dropped by the kernel or by dumpcap) are parsed from what it prints when it stops, so
a capture that lost packets says so in captures.csv.
"""

from __future__ import annotations

import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .proc import stop

#: Files in a capture's ring: the last max_mb are kept in this many pieces.
RING_FILES = 4
#: How long dumpcap may take to say it is capturing.
START_TIMEOUT_S = 10.0
#: How long captures go on after the test's processes ended: the connections' last segments
#: (FINs, DATA_FINs, the ACKs of data still in flight) cross the wire after iperf3 reports.
CLOSE_GRACE_S = 1.0
_RECEIVED = re.compile(r"Packets received/dropped on interface '([^']+)': (\d+)/(\d+)")
_PART = re.compile(r"_(\d{5})_\d{14}\.pcapng$")


def dumpcap_argv(interface: str, snaplen: int, max_mb: float, out: Path) -> list[str]:
    """dumpcap on one interface into a ring of RING_FILES files of max_mb / RING_FILES each."""
    kb = max(1, int(max_mb * 1000 / RING_FILES))
    # -q: no running packet count on stderr, which nobody reads until the end (a full pipe would
    # block dumpcap); "Capturing on", ring switches and the final counts are still printed
    return ["dumpcap", "-q", "-i", interface, "-s", str(snaplen), "-w", str(out),
            "-b", f"filesize:{kb}", "-b", f"files:{RING_FILES}"]


def parse_stats(stderr: str) -> tuple[int | None, int | None]:
    """(received, dropped) as dumpcap reports them when it stops; None when it did not say."""
    m = _RECEIVED.search(stderr or "")
    return (int(m.group(2)), int(m.group(3))) if m else (None, None)


def ring_parts(directory: Path, stem: str) -> tuple[list[Path], bool]:
    """The ring's files, oldest first, and whether it wrapped (its first file is gone)."""
    found = []
    for p in directory.iterdir():
        m = _PART.search(p.name)
        if p.name.startswith(stem + "_") and m and p.is_file() and not p.is_symlink():
            found.append((int(m.group(1)), p))
    found.sort()
    return [p for _, p in found], bool(found) and found[0][0] != 1


@dataclass
class Capture:
    host: str
    interface: str
    proc: subprocess.Popen | None = None
    parts: list[Path] = field(default_factory=list)
    wrapped: bool = False
    received: int | None = None
    dropped: int | None = None
    error: str | None = None

    def row(self) -> dict[str, Any]:
        return {"host": self.host, "interface": self.interface, "packets": self.received,
                "dropped": self.dropped, "wrapped": self.wrapped, "error": self.error}


@dataclass
class Captures:
    """The captures of one test: ``start()`` returns once every dumpcap is capturing."""

    network: Any
    targets: list[tuple[str, str]]  # (host, interface)
    snaplen: int = 128
    max_mb: float = 50.0
    captures: list[Capture] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dir: Path | None = None

    def start(self) -> "Captures":
        self.dir = Path(tempfile.mkdtemp(prefix="mptcplab-capture-"))
        try:
            for host, interface in self.targets:
                argv = dumpcap_argv(interface, self.snaplen, self.max_mb, self.dir / f"{interface}.pcapng")
                c = Capture(host, interface)
                c.proc = self.network.spawn(host, argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE, text=True)
                self.captures.append(c)
            for c in self.captures:
                self._wait_capturing(c)
        except BaseException:
            self.stop()
            self.close()
            raise
        return self

    @staticmethod
    def _wait_capturing(c: Capture) -> None:
        """Until dumpcap says "Capturing on ..." (it then has the interface open)."""
        assert c.proc is not None and c.proc.stderr is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        seen = ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([c.proc.stderr], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = c.proc.stderr.readline()
            if not line:  # dumpcap ended
                break
            seen += line
            if line.startswith("Capturing on"):
                return
        raise RuntimeError(f"dumpcap on {c.host}:{c.interface} did not start capturing: {seen.strip()[-300:]}")

    def stop(self) -> list[Capture]:
        """SIGINT every dumpcap (it then writes its statistics and ends), by PID; its counters
        and ring files collected, after CLOSE_GRACE_S for the connections' last segments."""
        if any(c.proc is not None and c.proc.poll() is None for c in self.captures):
            time.sleep(CLOSE_GRACE_S)
        for c in self.captures:
            if c.proc is not None and c.proc.poll() is None:
                c.proc.send_signal(signal.SIGINT)
        for c in self.captures:
            if c.proc is None:
                continue
            try:
                _, err = c.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                _, err = stop(c.proc)
                c.error = "dumpcap did not stop on SIGINT"
            c.received, c.dropped = parse_stats(err)
            if c.received is None and c.error is None:
                c.error = f"dumpcap reported no counts: {(err or '').strip()[-200:]}"
            if self.dir is not None:
                c.parts, c.wrapped = ring_parts(self.dir, c.interface)
        return self.captures

    def close(self) -> None:
        """The private directory removed (after the parts were written to the run directory)."""
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

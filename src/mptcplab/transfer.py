"""A byte-count transfer whose data can be checked end to end (``traffic.tool: transfer``).

iperf3 sends random data and never looks at what arrives, and its server stops reading when the
client says it is done, so neither a changed byte nor a short read shows. Middlebox experiments
ask exactly that question -- did the application get what was sent? -- so this tool sends a
stream drawn from a seeded generator and both ends hash it (SHA-256): the sender what it wrote,
the receiver what it read. After the sender has written everything it shuts its side down; the
receiver reads to the end, answers with its byte count and digest on the same connection, and
closes; so the sender's report holds both digests and the flow completion time (its connect() to
the receiver's last read, on the clock both ends share). Given the seed too, the receiver
regenerates the stream and compares as it reads, so a digest that differs also says where: the
first byte that differs and how long the differing run is -- one byte flipped by a box, a
segment's worth misplaced, or everything from some point on.

Run as a script (``python -I -S transfer.py``, standard library only, inside a host's namespace,
started by the runner as an argument list):

    transfer.py recv --port P [--mptcp] [--interval S] [--seed K]
    transfer.py send --to ADDRESS --port P [--mptcp] (--bytes N | --duration S) [--seed K]
                     [--congestion ALGO] [--connect-timeout-ms MS]

Each prints one JSON object shaped like iperf3's (``start.connected``, ``intervals[].sum``,
``end.sum_sent`` / ``end.sum_received``) so the runner reads it the same way, plus a
``transfer`` object with the digests. MPTCP uses the kernel's own socket (IPPROTO_MPTCP), no
LD_PRELOAD.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import socket
import sys
import time

IPPROTO_MPTCP = getattr(socket, "IPPROTO_MPTCP", 262)
CHUNK = 64 * 1024
#: The receiver's summary line is at most this long (a JSON object of four fields).
SUMMARY_MAX = 4096
#: A differing run ends where the data agrees again for this many bytes in a row (a single
#: byte agreeing by chance, 1 in 256 for shifted data, does not end it).
AGREE_AGAIN = 64


def stream(seed: int):
    """The data: CHUNK-byte blocks from a Mersenne Twister seeded with ``seed`` (fast, and the
    same bytes for the same seed on every machine)."""
    rng = random.Random(seed)
    while True:
        yield rng.randbytes(CHUNK)


def expected_stream(seed: int, nbytes: int) -> bytes:
    """The first ``nbytes`` bytes of the stream for ``seed``."""
    blocks = stream(seed)
    return b"".join(next(blocks) for _ in range(-(-nbytes // CHUNK)))[:nbytes]


def expected_digest(seed: int, nbytes: int) -> str:
    """SHA-256 of the first ``nbytes`` bytes of the stream for ``seed`` (what an intact transfer
    of that length delivers)."""
    h, left = hashlib.sha256(), nbytes
    for block in stream(seed):
        if left <= 0:
            break
        h.update(block[:left])
        left -= len(block)
    return h.hexdigest()


class StreamCheck:
    """What was read, compared with the stream the sender wrote, as it is read: each read
    against the same bytes of the regenerated stream (one comparison of whole buffers while they
    agree, so an intact transfer costs one generator and a memcmp per read). Records the first
    differing byte's offset and the length of the run of difference that starts there: it ends
    at the last differing byte before AGREE_AGAIN bytes agree in a row (compared in blocks of
    that size from the first difference; a block that differs is searched byte by byte only for
    its last differing byte). Later differences after that run are only counted
    (``differing_reads``: reads not equal to the stream, the first one's included)."""

    def __init__(self, seed: int):
        self._blocks = stream(seed)
        self._ahead, self._at = b"", 0
        self.offset = 0                       # bytes compared so far
        self.first_diff: int | None = None    # offset of the first differing byte
        self.last_diff: int | None = None     # ... and of the last one of its run so far
        self.agreeing = 0                     # bytes agreeing since last_diff (while the run is open)
        self.run_closed = False
        self.differing_reads = 0

    def _take(self, n: int) -> bytes:
        """The next n bytes of the stream (the block at hand kept, not copied down per read)."""
        if len(self._ahead) - self._at < n:
            rest = [self._ahead[self._at:]]
            while sum(map(len, rest)) < n:
                rest.append(next(self._blocks))
            self._ahead, self._at = b"".join(rest), 0
        self._at += n
        return self._ahead[self._at - n:self._at]

    def feed(self, got: bytes | memoryview) -> None:
        """Compare the next len(got) bytes read."""
        got = bytes(got)  # a copy, but bytes compare by memcmp (a memoryview item by item, 20x slower)
        want = self._take(len(got))
        same = got == want
        if not same:
            self.differing_reads += 1
        if self.first_diff is None and not same:
            i = _first_difference(got, want)
            self.first_diff = self.last_diff = self.offset + i
            self._follow_run(got, want, i + 1)
        elif self.first_diff is not None and not self.run_closed:
            self._follow_run(got, want, 0)
        self.offset += len(got)

    def _follow_run(self, got: bytes, want: bytes, start: int) -> None:
        """Extend the open run over got[start:], AGREE_AGAIN bytes at a time, until it closes."""
        for at in range(start, len(got), AGREE_AGAIN):
            end = min(at + AGREE_AGAIN, len(got))
            if got[at:end] == want[at:end]:
                self.agreeing += end - at
                if self.agreeing >= AGREE_AGAIN:
                    self.run_closed = True
                    return
                continue
            k = end - 1
            while got[k] == want[k]:
                k -= 1
            self.last_diff, self.agreeing = self.offset + k, end - 1 - k

    def report(self) -> dict:
        """The receiver's report fields: where the data first differs (None: nowhere in what was
        read -- a short read or a digest that agrees) and the run's length in bytes."""
        run = None if self.first_diff is None else (self.last_diff or 0) - self.first_diff + 1
        return {"first_diff_offset": self.first_diff, "diff_run_bytes": run, "differing_reads": self.differing_reads}


def _first_difference(a: bytes, b: bytes) -> int:
    """Index of the first byte where a and b (same length, not equal) differ: halving by slice
    comparisons (each a memcmp), so a 64 KB read costs 16 of them, not 64 K Python steps."""
    lo, hi = 0, len(b)  # the difference lies in a[lo:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] != b[lo:mid]:
            hi = mid
        else:
            lo = mid
    return lo


def _socket(address: str, mptcp: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return socket.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP if mptcp else 0)


def _sum(start: float, end: float, nbytes: int, **extra) -> dict:
    seconds = max(end - start, 1e-9)
    return {"start": 0.0, "end": seconds, "seconds": seconds, "bytes": nbytes,
            "bits_per_second": nbytes * 8 / seconds, **extra}


def _interval(start: float, end: float, nbytes: int) -> dict:
    """One of the receiver's reports, as iperf3's server writes them (seconds from the accept)."""
    seconds = max(end - start, 1e-9)
    return {"sum": {"start": round(start, 6), "end": round(end, 6), "seconds": seconds, "bytes": nbytes,
                    "bits_per_second": nbytes * 8 / seconds}}


def receive(port: int, mptcp: bool, interval: float, address: str = "0.0.0.0", seed: int | None = None) -> dict:
    """Accept one connection, read it to the end hashing every byte, answer with the count and
    digest, close. Goodput every ``interval`` s from the accept, as iperf3's server reports it.
    With the sender's ``seed``, every byte read is also compared with the stream (StreamCheck):
    the report says where the data first differs."""
    srv = _socket(address, mptcp)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((address, port))
    srv.listen(1)
    conn, peer = srv.accept()  # the listener stays open until the end: MP_JOINs arrive through it
    t0 = time.monotonic()
    h, total, intervals = hashlib.sha256(), 0, []
    mark, mark_bytes = t0, 0
    error = None
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    check = StreamCheck(seed) if seed is not None else None
    try:
        while True:
            n = conn.recv_into(buf)
            now = time.monotonic()
            while now - mark >= interval:  # close every interval that ended before this read
                intervals.append(_interval(mark - t0, mark + interval - t0, total - mark_bytes))
                mark, mark_bytes = mark + interval, total
            if n == 0:
                break
            h.update(view[:n])
            if check is not None:
                check.feed(view[:n])
            total += n
        ended = time.monotonic()
        digest = h.hexdigest()
        conn.sendall((json.dumps({"bytes": total, "sha256": digest, "seconds": ended - t0,
                                  "ended_monotonic": ended}) + "\n").encode())
    except OSError as e:
        ended, digest, error = time.monotonic(), h.hexdigest(), f"{type(e).__name__}: {e}"
    finally:
        conn.close()
        srv.close()
    if ended > mark:
        intervals.append(_interval(mark - t0, ended - t0, total - mark_bytes))
    out = {"start": {"accepted_connection": {"host": peer[0], "port": peer[1]}}, "intervals": intervals,
           "end": {"sum_received": _sum(t0, ended, total)},
           "transfer": {"role": "receiver", "bytes": total, "sha256": digest,
                        **({"seed": seed, **check.report()} if check is not None else {})}}
    if error:
        out["error"] = error
    return out


def _completion(summary: dict, t0: float) -> float | None:
    """Seconds from the sender's connect() to the receiver's reading the last byte: both ends
    read the one CLOCK_MONOTONIC (network namespaces share it), so no half RTT of the summary's
    way back is counted."""
    ended = summary.get("ended_monotonic")
    return round(ended - t0, 6) if isinstance(ended, (int, float)) and ended >= t0 else None


def send(address: str, port: int, mptcp: bool, nbytes: int | None, duration: float | None, seed: int,
         congestion: str | None, connect_timeout_ms: int) -> dict:
    """Connect, write ``nbytes`` of the stream (or write for ``duration`` s), shut down the
    sending side, read the receiver's summary. The report holds what was sent and what arrived."""
    sock = _socket(address, mptcp)
    h, sent, error, summary = hashlib.sha256(), 0, None, None
    sock.settimeout(connect_timeout_ms / 1000)
    t0 = time.monotonic()
    try:
        if congestion:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion.encode())
        sock.connect((address, port))
    except OSError as e:
        sock.close()
        return {"error": f"unable to connect to {address}:{port}: {e}"}
    sock.settimeout(None)
    local = sock.getsockname()
    try:  # what the kernel really uses (as iperf3 reports it)
        algorithm = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).split(b"\0")[0].decode()
    except OSError:
        algorithm = None
    start = {"connected": [{"local_host": local[0], "local_port": local[1], "remote_host": address,
                            "remote_port": port}],
             "test_start": {"protocol": "MPTCP" if mptcp else "TCP", "bytes": nbytes or 0,
                            "duration": duration or 0}}
    deadline = t0 + duration if duration else None
    try:
        for block in stream(seed):
            if nbytes is not None:
                block = block[:nbytes - sent]
            elif time.monotonic() >= deadline:
                break
            if not block:
                break
            sock.sendall(block)
            h.update(block)
            sent += len(block)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while len(reply) < SUMMARY_MAX:
            part = sock.recv(SUMMARY_MAX)
            if not part:
                break
            reply += part
        summary = json.loads(reply.decode()) if reply.strip() else None
        if summary is None:
            error = "the receiver closed without its summary (connection reset or cut short)"
    except (OSError, ValueError) as e:
        error = f"{type(e).__name__}: {e}"
    finally:
        ended = time.monotonic()
        sock.close()
    received = summary or {}
    got = int(received.get("bytes", 0)) if isinstance(received.get("bytes"), int) else 0
    digest = str(received.get("sha256", ""))
    out = {"start": start, "intervals": [],
           "end": {"sum_sent": _sum(t0, ended, sent), "sum_received": _sum(t0, ended, got),
                   "sender_tcp_congestion": algorithm},
           "transfer": {"role": "sender", "seed": seed, "bytes_sent": sent, "sha256_sent": h.hexdigest(),
                        "bytes_received": got if summary else None, "sha256_received": digest or None,
                        "intact": bool(summary) and got == sent and digest == h.hexdigest(),
                        "completion_s": _completion(received, t0)}}
    if error:
        out["error"] = error
    return out


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: must be more than 0")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="transfer.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="role", required=True)
    r = sub.add_parser("recv")
    s = sub.add_parser("send")
    for q in (r, s):
        q.add_argument("--port", type=int, required=True)
        q.add_argument("--mptcp", action="store_true")
    r.add_argument("--interval", type=_positive, default=0.1)
    r.add_argument("--seed", type=int, help="the sender's seed: compare what is read with its stream")
    s.add_argument("--to", required=True)
    length = s.add_mutually_exclusive_group(required=True)
    length.add_argument("--bytes", type=int)
    length.add_argument("--duration", type=float)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--congestion")
    s.add_argument("--connect-timeout-ms", type=int, default=5000)
    a = p.parse_args(argv)
    if a.role == "recv":
        out = receive(a.port, a.mptcp, a.interval, seed=a.seed)
    else:
        out = send(a.to, a.port, a.mptcp, a.bytes, a.duration, a.seed, a.congestion, a.connect_timeout_ms)
    sys.stdout.write(json.dumps(out) + "\n")
    return 1 if "error" in out else 0


if __name__ == "__main__":
    sys.exit(main())

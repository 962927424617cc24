"""The transfer tool (mptcplab.transfer): a seeded byte stream hashed at both ends, over loopback
(real TCP and MPTCP sockets of this machine; no namespace), its spec field and its rows."""

from __future__ import annotations

import json
import threading
import socket
import subprocess
import sys

import pytest

from mptcplab import transfer
from mptcplab.plan import make_plan
from mptcplab.rows import data_columns
from mptcplab.spec import parse_spec
from mptcplab.traffic import TRANSFER, _wait_listening, transfer_argv
from test_events import dual, problems


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mptcp_available() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, transfer.IPPROTO_MPTCP).close()
        return True
    except OSError:
        return False


def run_pair(protocol: str, nbytes: int, seed: int) -> tuple[dict, dict]:
    port = free_port()
    recv = subprocess.Popen(transfer_argv("server", protocol, port=port, interval=0.1, seed=seed),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert _wait_listening(lambda argv: subprocess.run(argv, capture_output=True, text=True).stdout, port)
        send = subprocess.run(transfer_argv("client", protocol, port=port, server_address="127.0.0.1",
                                            nbytes=nbytes, seed=seed), capture_output=True, text=True, timeout=30)
        out, _ = recv.communicate(timeout=10)
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
    return json.loads(send.stdout), json.loads(out)


@pytest.mark.parametrize("protocol", ["tcp", pytest.param("mptcp", marks=pytest.mark.skipif(
    not mptcp_available(), reason="MPTCP sockets are off here (net.mptcp.enabled=0); the root e2e tests cover it"))])
def test_a_transfer_arrives_whole_and_both_digests_agree(protocol):
    nbytes = 3_000_001  # not a multiple of the block size
    client, server = run_pair(protocol, nbytes, seed=7)
    t = client["transfer"]
    assert (t["bytes_sent"], t["bytes_received"]) == (nbytes, nbytes)
    assert t["sha256_sent"] == t["sha256_received"] == transfer.expected_digest(7, nbytes)
    assert t["intact"] is True and data_columns(client) == {"bytes_sent": nbytes, "bytes_received": nbytes,
                                                            "data_intact": True, "first_diff_offset": None,
                                                            "diff_run_bytes": None}
    assert server["transfer"]["sha256"] == t["sha256_sent"]
    # the receiver compared every byte with the stream of the same seed: nothing differs
    assert (server["transfer"]["seed"], server["transfer"]["first_diff_offset"]) == (7, None)
    assert (server["transfer"]["diff_run_bytes"], server["transfer"]["differing_reads"]) == (None, 0)
    # the receiver's goodput series adds up to what it read, in 0.1 s steps from the accept
    assert sum(iv["sum"]["bytes"] for iv in server["intervals"]) == nbytes
    assert all(iv["sum"]["end"] > iv["sum"]["start"] for iv in server["intervals"])
    assert client["end"]["sum_received"]["bytes"] == nbytes and client["start"]["connected"][0]["local_port"] > 0


def test_the_stream_depends_on_the_seed_and_a_changed_byte_changes_the_digest():
    a, b = transfer.expected_digest(1, 100_000), transfer.expected_digest(2, 100_000)
    assert a != b and transfer.expected_digest(1, 100_000) == a
    data = bytearray(next(transfer.stream(1)))
    import hashlib

    assert hashlib.sha256(bytes(data)).hexdigest() == transfer.expected_digest(1, len(data))
    data[len(data) // 2] ^= 0xFF
    assert hashlib.sha256(bytes(data)).hexdigest() != transfer.expected_digest(1, len(data))


def _checked(data: bytes, reads: list[int], seed: int = 3) -> dict:
    """StreamCheck's report on data fed in reads of these sizes (cycled)."""
    check, at, i = transfer.StreamCheck(seed), 0, 0
    while at < len(data):
        n = reads[i % len(reads)]
        check.feed(memoryview(data)[at:at + n])
        at, i = at + n, i + 1
    return check.report()


@pytest.mark.parametrize("reads", [[65536], [1448], [7, 100_000, 1], [1]], ids=["64k", "mss", "odd", "bytewise"])
def test_stream_check_finds_the_first_differing_byte_and_its_run(reads):
    """The receiver's comparison, fed as reads of any size (the answer must not depend on how
    the kernel split the stream): one byte, a run, a run with a short agreeing gap inside it
    (one run), two runs far apart (the first reported, both reads counted), everything shifted
    from some point, and a short but otherwise intact read."""
    if reads == [1]:
        size = 20_000  # byte by byte: a smaller stream
    else:
        size = 300_000
    good = transfer.expected_stream(3, size)

    def flip(data: bytes, *spans: tuple[int, int]) -> bytes:
        b = bytearray(data)
        for start, n in spans:
            for i in range(start, start + n):
                b[i] ^= 0xFF
        return bytes(b)

    assert _checked(good, reads) == {"first_diff_offset": None, "diff_run_bytes": None, "differing_reads": 0}
    assert _checked(good[:size // 2], reads)["first_diff_offset"] is None    # short, not changed
    one = _checked(flip(good, (12_345, 1)), reads)
    assert (one["first_diff_offset"], one["diff_run_bytes"], one["differing_reads"]) == (12_345, 1, 1)
    assert _checked(flip(good, (0, 1)), reads)["first_diff_offset"] == 0
    run = _checked(flip(good, (10_000, 3000)), reads)
    assert (run["first_diff_offset"], run["diff_run_bytes"]) == (10_000, 3000)
    # 40 bytes agreeing inside (< AGREE_AGAIN) do not split a run
    gap = _checked(flip(good, (10_000, 100), (10_140, 10)), reads)
    assert (gap["first_diff_offset"], gap["diff_run_bytes"]) == (10_000, 150)
    two = _checked(flip(good, (1_000, 2), (size - 5, 1)), reads)
    assert (two["first_diff_offset"], two["diff_run_bytes"]) == (1_000, 2) and two["differing_reads"] >= 2
    # shifted by a byte from 5000 on (a byte lost): one run to the end, chance agreements ignored
    shifted = _checked(good[:5_000] + good[5_001:] + b"x", reads)
    assert shifted["first_diff_offset"] == 5_000 and shifted["diff_run_bytes"] > size - 5_000 - 200, shifted
    assert transfer.AGREE_AGAIN == 64


def test_a_refused_connection_is_an_error_and_nothing_intact():
    port = free_port()  # nothing listens
    r = subprocess.run(transfer_argv("client", "tcp", port=port, server_address="127.0.0.1", nbytes=10,
                                     connect_timeout_ms=1000), capture_output=True, text=True, timeout=10)
    out = json.loads(r.stdout)
    assert r.returncode == 1 and "unable to connect" in out["error"]
    assert data_columns(out)["data_intact"] is False and data_columns(None)["data_intact"] is False


def test_argv_is_a_list_with_the_script_and_no_shell():
    argv = transfer_argv("client", "mptcp", port=5201, server_address="10.0.1.2", duration=3, seed=4,
                         congestion_control="cubic")
    assert argv[:4] == [sys.executable, "-I", "-S", str(TRANSFER)]
    assert argv[4:] == ["send", "--to", "10.0.1.2", "--port", "5201", "--seed", "4", "--connect-timeout-ms", "5000",
                        "--duration", "3", "--congestion", "cubic", "--mptcp"]
    assert transfer_argv("server", "tcp", port=5300, seed=4)[4:] == ["recv", "--port", "5300", "--seed", "4"]


def test_the_tool_is_planned_and_refused_where_it_cannot_run():
    spec = dual({})
    spec.pop("events")
    spec["traffic"]["tool"] = "transfer"
    assert make_plan(parse_spec(spec)).tool == "transfer"
    spec["traffic"]["parallel"] = 2
    assert any("traffic.parallel: 2: the transfer tool sends one connection" in p for p in problems(spec))
    spec["traffic"]["tool"] = "netcat"
    assert problems(spec) == ["traffic.tool: 'netcat' is not allowed: 'iperf3' or 'transfer'"]


def _proxy(listen_port: int, to_port: int, flip_at: int | None, stop_after: int | None,
           flip_run: int = 1) -> threading.Thread:
    """A TCP relay on loopback between sender and receiver: flips ``flip_run`` bytes from
    ``flip_at`` of the sender's stream (a box TCP cannot see), or ends both connections after
    ``stop_after`` bytes."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen_port))
    srv.listen(1)

    def back(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
            b.shutdown(socket.SHUT_WR)
        except OSError:  # the relay gave up
            pass

    def run() -> None:
        client, _ = srv.accept()
        srv.close()
        server = socket.create_connection(("127.0.0.1", to_port))
        threading.Thread(target=back, args=(server, client), daemon=True).start()
        seen = 0
        while data := client.recv(65536):
            data = bytearray(data)
            if flip_at is not None:
                for i in range(max(seen, flip_at), min(seen + len(data), flip_at + flip_run)):
                    data[i - seen] ^= 0xFF
            if stop_after is not None and seen + len(data) >= stop_after:
                server.sendall(data[:stop_after - seen])
                break
            server.sendall(data)
            seen += len(data)
        if stop_after is not None:  # the relay gives up: both connections end where they are
            for s in (client, server):
                s.shutdown(socket.SHUT_RDWR)
            return
        server.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("flip_at, flip_run, stop_after, received", [
    (1_234_567, 1, None, 2_000_000),   # one byte changed in flight: same length, other digest
    (0, 1, None, 2_000_000),           # the very first byte
    (65_530, 3000, None, 2_000_000),   # a run across the receiver's 64 KB reads
    (None, 1, 700_000, 700_000),       # cut short: the receiver's own report says how much
])
def test_a_changed_byte_or_a_short_read_is_never_intact(flip_at, flip_run, stop_after, received):
    """Never intact; and where bytes were changed, the receiver (which knows the seed) says
    where: the first changed byte's offset and the run's length, as the relay changed them."""
    port, relay = free_port(), free_port()
    recv = subprocess.Popen(transfer_argv("server", "tcp", port=port), stdout=subprocess.PIPE, text=True)
    try:
        assert _wait_listening(lambda argv: subprocess.run(argv, capture_output=True, text=True).stdout, port)
        t = _proxy(relay, port, flip_at, stop_after, flip_run)
        send = subprocess.run(transfer_argv("client", "tcp", port=relay, server_address="127.0.0.1",
                                            nbytes=2_000_000), capture_output=True, text=True, timeout=30)
        out, _ = recv.communicate(timeout=10)
        t.join(timeout=5)
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
    cols = data_columns(json.loads(send.stdout), json.loads(out))
    assert cols == {"bytes_sent": cols["bytes_sent"], "bytes_received": received, "data_intact": False,
                    "first_diff_offset": flip_at, "diff_run_bytes": flip_at is not None and flip_run or None}, cols
    reads = json.loads(out)["transfer"]["differing_reads"]
    assert reads == 0 if flip_at is None else (reads == 1 if flip_run == 1 else reads >= 1), reads
    assert cols["bytes_sent"] == (2_000_000 if stop_after is None else cols["bytes_sent"]) > 0

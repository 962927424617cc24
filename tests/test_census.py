"""The MPTCP option census (census.py, pure) and its tshark reader (tshark.py).

Hand-written rows of tshark field values with known answers; a capture written here and read
back through tshark with every option subtype; and real captures of the dual-path experiment
(tests/data/pcaps/, see its README) with counts checked by reading the packets with
``tshark -O mptcp``.
"""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from mptcplab import census as C
from mptcplab import tshark as T

PCAPS = Path(__file__).parent / "data" / "pcaps"
HAVE_TSHARK = shutil.which("tshark") is not None
needs_tshark = pytest.mark.skipif(not HAVE_TSHARK, reason="tshark is not installed (apt-get install tshark)")

KA = "1111111111111111"  # the client's key
KB = "2222222222222222"  # the server's key
# Their tokens (SHA-256, top 32 bits); Wireshark's mptcp.expected_token says the same
# (3874785792 and 69647965).
TOKEN_A, TOKEN_B = "e6f48a00", "0426be5d"

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
# MPTCP options as hex (kind 30 = 0x1e, length, subtype<<4 | ...), NOP-padded to 4 bytes.
MPC_SYN = "1e040181"
MPC_SYNACK = "1e0c0181" + KB
MPC_ACK = "1e140181" + KA + KB
MPC_DATA = "1e160181" + KA + KB + "0064" + "0101"        # data-level length 100
DSS_ACK = "1e082001" + "00000064"                        # A: 4-byte data ACK
DSS_MAP = "1e122005" + "00000064" + "00000001" + "00000001" + "05a8" + "0101"  # A+M, no checksum
DSS_MAP_CSUM = "1e142005" + "00000064" + "00000001" + "00000001" + "05a8" + "beef"
DSS_MAP8 = "1e18200d" + "00000064" + "0000000000000001" + "00000001" + "05a8" + "beef"  # m: 8-byte DSN
DSS_FIN = "1e122015" + "00000064" + "00000700" + "00000000" + "0001" + "0101"  # DATA_FIN
DSS_INFINITE = "1e122005" + "00000064" + "00000001" + "00000000" + "0000" + "0101"
ADD_ADDR = "1e103001" + "0a000202" + "aaaaaaaaaaaaaaaa"  # id 1, 10.0.2.2, truncated HMAC
ADD_ADDR_PORT = "1e123002" + "0a000302" + "1452" + "aaaaaaaaaaaaaaaa" + "0101"  # id 2 :5202
ADD_ADDR_ECHO = "1e083101" + "0a000202"
REMOVE_ADDR = "1e044001"
MP_PRIO = "1e035101"  # backup, plus one NOP
MP_FAIL = "1e0c6000" + "0000000000000063"
MP_FASTCLOSE = "1e0c7000" + KA
MP_TCPRST = "1e048001"
JOIN_SYN = "1e0c1002" + TOKEN_B + "00000007"  # address id 2, the server's token
JOIN_SYNACK = "1e101001" + "bbbbbbbbbbbbbbbb" + "00000009"
JOIN_ACK = "1e181000" + "cc" * 20
TS = "0101080a0000000100000000"  # NOP NOP timestamp, as Linux sends it

C1, S1, C2, S2 = "10.0.1.1", "10.0.1.2", "10.0.2.1", "10.0.2.2"


def row(t: float, src: str, dst: str, flags: int, opts: str = "", *, length: int = 0, seq: int = 1,
        ack: int = 0, ipid: int = 1, subtypes: str | None = None) -> dict[str, str]:
    """One tshark row (census.FIELDS); ``src``/``dst`` as ip:port. ``subtypes``: the
    dissector's tcp.options.mptcp.subtype list, left out (no cross-check) unless given."""
    (sip, sport), (dip, dport) = (x.rsplit(":", 1) for x in (src, dst))
    r = {"frame.number": "0", "frame.time_epoch": f"{t:.6f}", "ip.src": sip, "ip.dst": dip,
         "ip.id": f"0x{ipid:04x}", "ipv6.src": "", "ipv6.dst": "", "tcp.srcport": sport,
         "tcp.dstport": dport, "tcp.seq_raw": str(seq), "tcp.ack_raw": str(ack),
         "tcp.flags": f"0x{flags:04x}", "tcp.len": str(length), "tcp.options": opts}
    if subtypes is not None:
        r["tcp.options.mptcp.subtype"] = subtypes
    return r


def numbered(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{**r, "frame.number": str(i)} for i, r in enumerate(rows, 1)]


def later(rows: list[dict[str, str]], dt: float) -> list[dict[str, str]]:
    """The same segments as the receiver's capture sees them: ``dt`` seconds later."""
    return [{**r, "frame.time_epoch": f"{float(r['frame.time_epoch']) + dt:.6f}"} for r in rows]


A0, B0 = f"{C1}:40000", f"{S1}:5201"   # the initial subflow
A1, B1 = f"{C2}:40001", f"{S2}:5201"   # its join


def mptcp_connection() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """A complete MPTCP connection: (path-1 rows, path-2 rows) as the client sends/receives them."""
    p1 = numbered([
        row(0.00, A0, B0, SYN, MPC_SYN, seq=100, ipid=0),
        row(0.02, B0, A0, SYN | ACK, MPC_SYNACK, seq=900, ack=101, ipid=0),
        row(0.02, A0, B0, ACK, MPC_ACK, seq=101, ack=901, ipid=2),
        row(0.03, A0, B0, ACK | PSH, MPC_DATA, length=100, seq=101, ack=901, ipid=3),
        row(0.05, B0, A0, ACK, DSS_ACK + ADD_ADDR, seq=901, ack=201, ipid=2, subtypes="2,3"),
        row(0.05, A0, B0, ACK, DSS_ACK + ADD_ADDR_ECHO, seq=201, ack=901, ipid=4, subtypes="2,3"),
        row(0.10, A0, B0, ACK | PSH, DSS_MAP, length=1448, seq=201, ack=901, ipid=5),
        row(0.90, A0, B0, ACK | FIN, DSS_FIN, seq=1649, ack=901, ipid=6),
        row(0.92, B0, A0, ACK | FIN, DSS_FIN, seq=901, ack=1650, ipid=3),
        row(0.92, A0, B0, ACK, TS, seq=1650, ack=902, ipid=7),  # TIME-WAIT's ACK: no MPTCP option
    ])
    p2 = numbered([
        row(0.06, A1, B1, SYN, JOIN_SYN, seq=5000, ipid=0),
        row(0.08, B1, A1, SYN | ACK, JOIN_SYNACK, seq=7000, ack=5001, ipid=0),
        row(0.08, A1, B1, ACK, JOIN_ACK, seq=5001, ack=7001, ipid=1),
        row(0.10, B1, A1, ACK, DSS_ACK, seq=7001, ack=5001, ipid=1),
        row(0.12, A1, B1, ACK | PSH, DSS_MAP, length=1448, seq=5001, ack=7001, ipid=2),
        row(0.13, A1, B1, ACK | PSH, DSS_MAP, length=1448, seq=5001, ack=7001, ipid=3),  # retransmitted
        row(0.91, A1, B1, ACK | FIN, DSS_ACK, seq=6449, ack=7001, ipid=4),
    ])
    return p1, p2


def by_role(rows: list[dict]) -> dict[str, dict]:
    out = {r["role"]: r for r in rows}
    assert len(out) == len(rows)
    return out


def counts(r: dict) -> dict[str, int]:
    """The non-zero counters of a row."""
    return {c: r[c] for c in C.COUNTERS if r[c]}


def test_complete_connection_counts_handshakes_join_and_add_addr():
    p1, p2 = mptcp_connection()
    rows = C.census("001-mptcp-r1", {"h1-eth0": p1, "h1-eth1": p2})
    assert [r["role"] for r in rows] == ["initial", "join"]
    assert all(set(r) == set(C.COLUMNS) for r in rows)
    init, join = by_role(rows)["initial"], by_role(rows)["join"]
    assert counts(init) == {"MP_CAPABLE_SYN": 1, "MP_CAPABLE_SYNACK": 1, "MP_CAPABLE_ACK": 1,
                            "MP_CAPABLE_DATA": 1, "DSS": 5, "DSS_MAPPING": 3, "DSS_DATA_ACK": 5,
                            "DSS_DATA_FIN": 2, "ADD_ADDR": 1, "ADD_ADDR_ECHO": 1}
    assert counts(join) == {"MP_JOIN_SYN": 1, "MP_JOIN_SYNACK": 1, "MP_JOIN_ACK": 1, "DSS": 4,
                            "DSS_MAPPING": 2, "DSS_DATA_ACK": 4}
    # The join is tied to the connection by its token, across capture files.
    assert init["connection"] == join["connection"] == A0
    assert (init["client_token"], init["server_token"], init["version"]) == (TOKEN_A, TOKEN_B, 1)
    assert (init["local"], init["remote"], join["local"], join["remote"]) == (A0, B0, A1, B1)
    assert (join["address_id"], join["backup"]) == (2, False)
    assert init["announced"] == "1=10.0.2.2" and init["removed"] == ""
    assert (init["packets"], join["packets"]) == (10, 7)  # the retransmission counts: a copy of its own
    assert not init["fallback"] and not join["fallback"] and init["fallback_time"] is None
    assert (init["first_time"], init["last_time"]) == (0.0, 0.92)
    assert init["seen_on"] == "h1-eth0" and join["seen_on"] == "h1-eth1"


def test_segments_seen_on_both_ends_count_once():
    p1, p2 = mptcp_connection()
    one = C.census("t", {"h1-eth0": p1, "h1-eth1": p2})
    # The receiver's interfaces see the same segments, later; the last segment of path 1 was
    # lost on the way (only the sender saw it).
    two = C.census("t", {"h1-eth0": p1, "h1-eth1": p2, "h2-eth0": later(p1[:-1], 0.01),
                         "h2-eth1": later(p2, 0.04)})
    for a, b in zip(one, two):
        assert counts(a) == counts(b) and a["packets"] == b["packets"]
        assert a["first_time"] == b["first_time"]  # dated by the sender's copy
    init, join = by_role(two)["initial"], by_role(two)["join"]
    assert (init["copies"], join["copies"]) == (19, 14)
    assert init["seen_on"] == "h1-eth0;h2-eth0" and join["seen_on"] == "h1-eth1;h2-eth1"


def test_identical_bytes_in_one_capture_are_two_transmissions():
    syn = row(0.0, A0, B0, SYN, MPC_SYN, seq=100, ipid=0)
    again = {**syn, "frame.time_epoch": "1.000000"}  # SYN retransmitted after 1 s, same bytes
    rows = C.census("t", {"h1-eth0": [syn, again], "h2-eth0": [later([syn], 0.01)[0]]})
    assert rows[0]["MP_CAPABLE_SYN"] == 2 and rows[0]["packets"] == 2 and rows[0]["copies"] == 3


def test_several_options_in_one_segment():
    seg = [
        row(1.0, B0, A0, ACK, DSS_ACK + ADD_ADDR_PORT, subtypes="2,3"),
        row(1.1, B0, A0, ACK, REMOVE_ADDR + DSS_ACK, subtypes="4,2"),
        row(1.2, A0, B0, ACK, MP_PRIO + DSS_ACK, subtypes="5,2"),
        row(1.3, A0, B0, ACK, DSS_MAP_CSUM, length=1448),
        row(1.4, A0, B0, ACK, DSS_MAP8, length=1448, seq=2),
        row(1.5, A0, B0, ACK, MP_FAIL + DSS_ACK, subtypes="6,2"),
    ]
    (r,) = C.census("t", {"h1-eth0": seg})
    assert r["role"] == "unknown" and r["local"] == B0  # no SYN captured: the first sender
    assert counts(r) == {"DSS": 6, "DSS_DATA_ACK": 6, "DSS_MAPPING": 2, "DSS_CHECKSUM": 2,
                         "ADD_ADDR": 1, "REMOVE_ADDR": 1, "MP_PRIO": 1, "MP_FAIL": 1}
    assert r["announced"] == "2=10.0.3.2:5202" and r["removed"] == "1" and r["mptcp"]


def test_fastclose_and_tcprst_and_unknown_subtype():
    seg = [row(1.0, A0, B0, ACK, MP_FASTCLOSE), row(1.1, B0, A0, RST | ACK, MP_TCPRST),
           row(1.2, A0, B0, ACK, "1e04f000")]  # subtype 15 (experimental)
    (r,) = C.census("t", {"x": seg})
    assert counts(r) == {"MP_FASTCLOSE": 1, "MP_TCPRST": 1, "MPTCP_OTHER": 1}


def test_fallback_when_the_synack_has_no_mp_capable():
    rows = C.census("t", {"h1-eth0": [
        row(5.0, A0, B0, SYN, MPC_SYN, seq=1),
        row(5.1, B0, A0, SYN | ACK, "020405b4", seq=9, ack=2),  # MSS only
        row(5.1, A0, B0, ACK, "", seq=2, ack=10),
        row(5.2, A0, B0, ACK | PSH, "", length=100, seq=2, ack=10),
    ]})
    (r,) = rows
    assert r["mptcp"] and r["role"] == "initial" and counts(r) == {"MP_CAPABLE_SYN": 1}
    assert (r["fallback"], r["fallback_reason"], r["fallback_time"]) == (True, "synack-without-mp-capable", 5.1)
    (tot,) = C.totals(rows)
    assert (tot["fallbacks"], tot["first_fallback_time"], tot["mptcp_connections"]) == (1, 5.1, 1)


def test_fallback_when_data_comes_without_dss():
    p1, _ = mptcp_connection()
    p1 = p1[:7] + [row(0.2, A0, B0, ACK | PSH, TS, length=1448, seq=1649, ack=901, ipid=9)]
    (r,) = C.census("t", {"h1-eth0": p1})
    assert (r["fallback_reason"], r["fallback_time"]) == ("data-without-dss", 0.2)


def test_fallback_on_infinite_mapping_and_on_a_plain_third_ack():
    p1, _ = mptcp_connection()
    inf = p1[:7] + [row(0.3, A0, B0, ACK | PSH, DSS_INFINITE, length=10, seq=1649, ack=901, ipid=9)]
    (r,) = C.census("t", {"h1-eth0": inf})
    assert (r["fallback_reason"], r["fallback_time"], r["DSS_INFINITE_MAPPING"]) == ("infinite-mapping", 0.3, 1)
    plain = numbered(p1[:2] + [row(0.02, A0, B0, ACK, TS, seq=101, ack=901, ipid=2)])
    (r,) = C.census("t", {"h1-eth0": plain})
    assert (r["fallback_reason"], r["fallback_time"]) == ("ack-without-mp-capable", 0.02)


def test_syn_retransmitted_without_mp_capable_falls_back():
    (r,) = C.census("t", {"x": [row(0.0, A0, B0, SYN, MPC_SYN, seq=7), row(3.0, A0, B0, SYN, "020405b4", seq=7)]})
    assert (r["fallback_reason"], r["fallback_time"], r["packets"]) == ("syn-without-mp-capable", 3.0, 2)


def test_plain_tcp_has_no_mptcp_options_and_no_fallback():
    rows = C.census("t", {"h1-eth0": [row(0.0, A0, B0, SYN, "020405b4"), row(0.1, B0, A0, SYN | ACK, "020405b4"),
                                      row(0.1, A0, B0, ACK, TS), row(0.2, A0, B0, ACK, TS, length=1448)]})
    (r,) = rows
    assert r["role"] == "tcp" and not r["mptcp"] and not counts(r) and not r["fallback"]
    assert r["version"] is None and r["client_token"] == r["server_token"] == ""
    assert C.totals(rows)[0]["mptcp_connections"] == 0


def test_join_with_an_unknown_token_and_port_reuse():
    rows = C.census("t", {"x": [
        row(0.0, A1, B1, SYN, JOIN_SYN.replace(TOKEN_B, "deadbeef"), seq=1),
        row(0.1, A0, B0, SYN, "020405b4", seq=1), row(0.2, A0, B0, RST | ACK, "", seq=2),
        row(5.0, A0, B0, SYN, "020405b4", seq=5000),  # same 4-tuple, new ISN: a new connection
    ]})
    assert [(r["connection"], r["role"]) for r in rows] == [
        ("token:deadbeef", "join"), (A0, "tcp"), (f"{A0}#2", "tcp")]
    assert rows[0]["server_token"] == "deadbeef" and [r["packets"] for r in rows] == [1, 2, 1]


def test_malformed_options_are_flagged_not_counted():
    rows = C.census("t", {"x": [
        row(0.0, A0, B0, ACK, DSS_ACK + ADD_ADDR, subtypes="2"),  # the dissector saw one option
        row(0.1, A0, B0, ACK, "1e0c2001"),  # length past the option area
        row(0.2, A0, B0, ACK, "1e072001000000"),  # DSS length does not match its flags
    ]})
    (r,) = rows
    assert counts(r) == {"MALFORMED": 3}


def test_ipv6_endpoints_and_multiple_ip_values():
    r = row(0.0, "2001:db8::1:40000", "2001:db8::2:5201", SYN, MPC_SYN)
    r.update({"ip.src": "", "ip.dst": "", "ipv6.src": "2001:db8::1", "ipv6.dst": "2001:db8::2"})
    tunnelled = row(0.0, A0, B0, SYN, MPC_SYN, seq=9)
    tunnelled.update({"ip.src": f"192.168.0.1,{C1}", "ip.dst": f"192.168.0.2,{S1}"})
    rows = C.census("t", {"x": [r, tunnelled]})
    assert {(x["local"], x["remote"]) for x in rows} == {("[2001:db8::1]:40000", "[2001:db8::2]:5201"), (A0, B0)}


def test_non_tcp_rows_are_skipped():
    assert C.census("t", {"x": [{"frame.number": "1", "ip.src": C1, "ip.dst": S1}]}) == []


def test_totals_per_test_and_per_connection():
    p1, p2 = mptcp_connection()
    rows = C.census("a", {"h1-eth0": p1, "h1-eth1": p2}) + C.census("b", {"h1-eth0": [
        row(0.0, A0, B0, SYN, "020405b4")]})
    per_test = {t["test"]: t for t in C.totals(rows)}
    assert per_test["a"]["connections"] == 1 and per_test["a"]["subflows"] == 2 and per_test["a"]["joins"] == 1
    assert per_test["a"]["DSS"] == 9 and per_test["a"]["MP_JOIN_SYN"] == 1 and per_test["a"]["packets"] == 17
    assert per_test["b"]["mptcp_connections"] == 0 and per_test["b"]["DSS"] == 0
    (conn,) = C.totals([r for r in rows if r["test"] == "a"], by=("test", "connection"))
    assert (conn["connection"], conn["subflows"], conn["fallbacks"]) == (A0, 2, 0)


def test_compare_subflows_with_ss():
    p1, p2 = mptcp_connection()
    rows = C.census("t", {"h1-eth0": p1, "h1-eth1": p2, "h1-eth2": [row(0.0, "10.0.1.1:39999", B0, SYN, MPC_SYN)]})
    expected = [(A0, B0), (B1, A1), ("10.0.3.1:40002", "10.0.3.2:5201")]  # one reversed, one never opened
    check = C.compare_subflows(rows, expected, connections=[A0])
    assert check.seen == [(A0, B0), (B1, A1)]
    assert check.missing == [("10.0.3.1:40002", "10.0.3.2:5201")]
    assert check.unexpected == []
    everything = C.compare_subflows(rows, [(f"[::ffff:{C1}]:40000", B0)])  # ss's v4-mapped form
    assert everything.seen == [(f"[::ffff:{C1}]:40000", B0)]
    assert sorted(everything.unexpected) == [("10.0.1.1:39999", B0), (A1, B1)]


# --------------------------------------------------------------------------- tshark.py, pure


def test_tshark_argv_is_a_list_with_fields():
    argv = T.tshark_argv(Path("/runs/x/raw/001-mptcp-r1-h1-eth0.pcapng.gz"))
    assert argv[:4] == ["tshark", "-n", "-r", "/runs/x/raw/001-mptcp-r1-h1-eth0.pcapng.gz"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-e"] == list(C.FIELDS)
    assert {"occurrence=a", "aggregator=,", "separator=/t", "header=y"} <= set(argv)


def test_parse_fields():
    text = "a\tb\tc\n1\t\t2,3\n4\t5\t\n"
    assert T.parse_fields(text) == [{"a": "1", "b": "", "c": "2,3"}, {"a": "4", "b": "5", "c": ""}]
    assert T.parse_fields("") == []
    with pytest.raises(T.TsharkError, match="line 2"):
        T.parse_fields("a\tb\n1\n")


def test_capture_names_split_into_test_and_interface():
    """raw/<test>-<interface>.pcapng.gz (the analysis reads the files through RunDir.captures)."""
    m = T.CAPTURE_NAME.match("p001-001-mptcp-r1-h1-eth0.pcapng.gz")
    assert (m["test"], m["interface"]) == ("p001-001-mptcp-r1", "h1-eth0")
    assert T.CAPTURE_NAME.match("notes.txt") is None


def test_missing_tshark_is_a_clear_error(tmp_path):
    f = tmp_path / "x.pcapng.gz"
    f.write_bytes(b"")
    with pytest.raises(T.TsharkError, match="not found: install it"):
        T.read_fields(f, tshark="no-such-tshark-here")


# --------------------------------------------------------------------------- through tshark


def _pcap(packets: list[tuple[float, str, str, int, str, int]]) -> bytes:
    """A libpcap file of Ethernet/IPv4/TCP frames (time, src, dst, flags, option hex, payload)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, (t, src, dst, flags, opts, payload) in enumerate(packets):
        (sip, sport), (dip, dport) = (x.rsplit(":", 1) for x in (src, dst))
        o = bytes.fromhex(opts)
        o += b"\x01" * (-len(o) % 4)
        tcp = struct.pack("!HHIIHHHH", int(sport), int(dport), 1000 + i, 1, ((20 + len(o)) // 4 << 12) | flags,
                          65535, 0, 0) + o + b"x" * payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), i, 0, 64, 6, 0,
                         bytes(map(int, sip.split("."))), bytes(map(int, dip.split("."))))
        frame = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp
        sec = int(t)
        out.append(struct.pack("<IIII", sec, round((t - sec) * 1e6), len(frame), len(frame)) + frame)
    return b"".join(out)


@needs_tshark
def test_every_subtype_through_tshark(tmp_path):
    """tshark's view of a capture with every option subtype, several in one segment: its
    tcp.options bytes and subtype list agree with the census's parser (no MALFORMED)."""
    packets = [
        (0.0, A0, B0, SYN, MPC_SYN, 0), (0.1, B0, A0, SYN | ACK, MPC_SYNACK, 0),
        (0.1, A0, B0, ACK, MPC_ACK, 0), (0.2, A0, B0, ACK | PSH, MPC_DATA, 100),
        (0.3, B0, A0, ACK, DSS_ACK + ADD_ADDR, 0), (0.3, A0, B0, ACK, DSS_ACK + ADD_ADDR_ECHO, 0),
        (0.4, A0, B0, ACK | PSH, DSS_MAP_CSUM, 1448), (0.5, B0, A0, ACK, REMOVE_ADDR + DSS_ACK, 0),
        (0.6, A0, B0, ACK, MP_PRIO + DSS_ACK, 0), (0.7, A0, B0, ACK, MP_FAIL, 0),
        (0.8, A0, B0, ACK | FIN, DSS_FIN, 0), (0.9, B0, A0, ACK, MP_FASTCLOSE, 0),
        (1.0, B0, A0, RST | ACK, MP_TCPRST, 0),
        (0.35, A1, B1, SYN, JOIN_SYN, 0), (0.36, B1, A1, SYN | ACK, JOIN_SYNACK, 0),
        (0.37, A1, B1, ACK, JOIN_ACK, 0),
    ]
    f = tmp_path / "t-h1-eth0.pcapng.gz"
    f.write_bytes(gzip.compress(_pcap(packets)))
    got = T.read_fields(f)
    assert not got.truncated and len(got.rows) == len(packets)
    assert got.rows[4]["tcp.options.mptcp.subtype"] == "2,3"
    rows = by_role(C.census("t", {"h1-eth0": got.rows}))
    init, join = rows["initial"], rows["join"]
    assert counts(init) == {"MP_CAPABLE_SYN": 1, "MP_CAPABLE_SYNACK": 1, "MP_CAPABLE_ACK": 1, "MP_CAPABLE_DATA": 1,
                            "DSS": 6, "DSS_DATA_ACK": 6, "DSS_MAPPING": 2, "DSS_CHECKSUM": 1, "DSS_DATA_FIN": 1,
                            "ADD_ADDR": 1, "ADD_ADDR_ECHO": 1, "REMOVE_ADDR": 1, "MP_PRIO": 1, "MP_FAIL": 1,
                            "MP_FASTCLOSE": 1, "MP_TCPRST": 1}
    assert counts(join) == {"MP_JOIN_SYN": 1, "MP_JOIN_SYNACK": 1, "MP_JOIN_ACK": 1}
    assert join["connection"] == init["connection"] == A0 and init["server_token"] == TOKEN_B


@needs_tshark
def test_truncated_capture_keeps_its_complete_packets(tmp_path):
    data = _pcap([(0.0, A0, B0, SYN, MPC_SYN, 0), (0.1, B0, A0, SYN | ACK, MPC_SYNACK, 0)])
    f = tmp_path / "cut.pcapng.gz"
    f.write_bytes(gzip.compress(data[:-10]))
    got = T.read_fields(f)
    assert got.truncated and len(got.rows) == 1


@needs_tshark
def test_unreadable_capture_is_an_error(tmp_path):
    f = tmp_path / "junk.pcapng.gz"
    f.write_bytes(b"this is not a capture")
    with pytest.raises(T.TsharkError, match="exited"):
        T.read_fields(f)


# --------------------------------------------------------------------------- real captures
#
# tests/data/pcaps: captures of the dual-path and three-path experiments, trimmed (see its
# README). The expected counts were read off the packets with tshark display filters on the
# sender's capture of each segment, e.g. ``tcp.srcport==37058 && tcp.options.mptcp.subtype==2``
# (DSS) or ``... && tcp.options.mptcp.dseqnpresent.flag==1`` (mappings), and ``-O mptcp``.

# What ss recorded (subflows.csv of those runs): the data connections' subflows.
DUAL_SS = [("10.0.1.1:37058", "10.0.1.2:5201"), ("10.0.2.1:37555", "10.0.2.2:5201")]
THREE_SS = [("10.0.1.1:48673", "10.0.1.2:20032"), ("10.0.1.1:49973", "10.0.1.2:20031"),
            ("10.0.1.1:60078", "10.0.1.2:5201")]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """tests/data/pcaps laid out as a run directory's raw/."""
    d = tmp_path_factory.mktemp("run")
    shutil.copytree(PCAPS, d / "raw")
    return d


def real_census(run_dir: Path, test: str) -> list[dict]:
    files = {m["interface"]: p for p in sorted((run_dir / "raw").glob("*.pcapng.gz"))
             if (m := T.CAPTURE_NAME.match(p.name)) and m["test"] == test}
    assert files, f"no captures of {test} in {run_dir}"
    return C.census(test, {name: T.read_fields(p).rows for name, p in files.items()})


HANDSHAKES = {"MP_CAPABLE_SYN": 1, "MP_CAPABLE_SYNACK": 1, "MP_CAPABLE_ACK": 1, "MP_CAPABLE_DATA": 1}
JOIN = {"MP_JOIN_SYN": 1, "MP_JOIN_SYNACK": 1, "MP_JOIN_ACK": 1}


@needs_tshark
def test_real_dual_path_mptcp(run_dir):
    rows = real_census(run_dir, "001-mptcp-r1")
    got = {(r["connection"], r["role"], r["local"], r["remote"]): r for r in rows}
    assert list(got) == [
        ("10.0.1.1:37048", "initial", "10.0.1.1:37048", "10.0.1.2:5201"),  # iperf3's control connection
        ("10.0.1.1:37048", "join", "10.0.2.1:42379", "10.0.2.2:5201"),
        ("10.0.1.1:37058", "initial", "10.0.1.1:37058", "10.0.1.2:5201"),  # its data connection
        ("10.0.1.1:37058", "join", "10.0.2.1:37555", "10.0.2.2:5201"),
    ]
    ctl, ctl_join, data, data_join = got.values()
    # One MP_CAPABLE handshake per connection, one MP_JOIN per join, h2's ADD_ADDR and its echo
    # on the initial subflow; DSS as counted by tshark filters; nothing else, no fallback.
    assert counts(ctl) == {**HANDSHAKES, "DSS": 22, "DSS_MAPPING": 13, "DSS_DATA_ACK": 22,
                           "ADD_ADDR": 1, "ADD_ADDR_ECHO": 1}
    assert counts(ctl_join) == {**JOIN, "DSS": 7, "DSS_MAPPING": 3, "DSS_DATA_ACK": 7}
    assert counts(data) == {**HANDSHAKES, "DSS": 78, "DSS_MAPPING": 56, "DSS_DATA_ACK": 78,
                            "ADD_ADDR": 1, "ADD_ADDR_ECHO": 1}
    assert counts(data_join) == JOIN
    assert [r["packets"] for r in rows] == [28, 10, 84, 3]
    assert not any(r["fallback"] for r in rows)
    assert ctl["announced"] == data["announced"] == "2=10.0.2.2"
    assert (data["client_token"], data["server_token"]) == ("b1af3a06", "b9646baf")  # ss: b1af3a06
    assert data_join["address_id"] == 1 and data_join["backup"] is False
    # Path 2 is captured at both ends: every segment there counted once, seen twice but for
    # the last ones, sent before the capture was cut and not yet received.
    assert ctl_join["seen_on"] == "h1-eth1;h2-eth1" and ctl_join["copies"] == 20
    assert data_join["copies"] == 5
    check = C.compare_subflows(rows, DUAL_SS, connections={"10.0.1.1:37058"})
    assert check.seen == DUAL_SS and check.missing == [] and check.unexpected == []
    assert C.compare_subflows(rows, DUAL_SS).unexpected == [
        ("10.0.1.1:37048", "10.0.1.2:5201"), ("10.0.2.1:42379", "10.0.2.2:5201")]


@needs_tshark
def test_real_three_path_joins_to_announced_ports(run_dir):
    rows = real_census(run_dir, "p001-003-mptcp-dependent-r1")
    assert [(r["connection"], r["role"], r["remote"], r["packets"]) for r in rows] == [
        ("10.0.1.1:60064", "initial", "10.0.1.2:5201", 20),
        ("10.0.1.1:60064", "join", "10.0.1.2:20032", 7),
        ("10.0.1.1:60064", "join", "10.0.1.2:20031", 6),
        ("10.0.1.1:60078", "initial", "10.0.1.2:5201", 27),
        ("10.0.1.1:60078", "join", "10.0.1.2:20032", 5),
        ("10.0.1.1:60078", "join", "10.0.1.2:20031", 10),
    ]
    assert [r["DSS"] for r in rows] == [12, 4, 3, 19, 2, 7]
    assert [r["DSS_MAPPING"] for r in rows] == [7, 2, 1, 15, 1, 3]
    for r in rows:
        assert counts(r) == ({**HANDSHAKES, "ADD_ADDR": 2, "ADD_ADDR_ECHO": 2} if r["role"] == "initial" else JOIN) | {
            "DSS": r["DSS"], "DSS_MAPPING": r["DSS_MAPPING"], "DSS_DATA_ACK": r["DSS"]}
        assert not r["fallback"]
    assert rows[3]["announced"] == "101=10.0.1.2:20032;100=10.0.1.2:20031"
    check = C.compare_subflows(rows, THREE_SS, connections={"10.0.1.1:60078"})
    assert check.seen == THREE_SS and not check.missing and not check.unexpected
    (tot,) = C.totals(rows)
    assert (tot["connections"], tot["subflows"], tot["joins"], tot["MP_JOIN_SYN"], tot["fallbacks"]) == (2, 6, 4, 4, 0)


@needs_tshark
def test_real_tcp_has_no_mptcp_option(run_dir):
    rows = real_census(run_dir, "002-tcp-r1")
    assert [(r["connection"], r["role"], r["packets"]) for r in rows] == [
        ("10.0.1.1:37062", "tcp", 22), ("10.0.1.1:37074", "tcp", 15)]
    assert all(not counts(r) and not r["mptcp"] and not r["fallback"] for r in rows)


@needs_tshark
def test_real_tokens_agree_with_wireshark(run_dir):
    """Wireshark's own token of each MP_CAPABLE key (mptcp.expected_token, with its MPTCP
    analysis on) is the census's client or server token."""
    rows = real_census(run_dir, "001-mptcp-r1") + real_census(run_dir, "p001-003-mptcp-dependent-r1")
    ours = {r[k] for r in rows for k in ("client_token", "server_token")}
    theirs = set()
    for f in ("001-mptcp-r1-h1-eth0.pcapng.gz", "p001-003-mptcp-dependent-r1-h1-eth0.pcapng.gz"):
        out = subprocess.run(["tshark", "-n", "-r", str(PCAPS / f), "-Y", "mptcp.expected_token",
                              "-T", "fields", "-e", "mptcp.expected_token"],
                             capture_output=True, text=True, timeout=120, check=True).stdout
        theirs |= {f"{int(x):08x}" for x in out.split()}
    assert len(theirs) == 8 and theirs == ours

"""The link emulator's middlebox (linkemu.c: mb_strip, mb_drop_syn, mb_mss, mb_rewrite, mb_split,
mb_isn, mb_nat, mb_coalesce), through its test mode ``linkemu --filter``: no sockets, no namespace,
no root. Frames are crafted with scapy; the expected frame of every transform is built
independently with scapy too (the MPTCP options replaced by as many NOPs, the MSS lowered, the
checksum computed by scapy) and compared byte for byte."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

scapy_all = pytest.importorskip("scapy.all", reason="scapy is not installed (pip install -e '.[test]')")
ARP, Dot1Q, Ether, ICMP, IP, IPv6, Raw, TCP, UDP, raw = (
    scapy_all.ARP, scapy_all.Dot1Q, scapy_all.Ether, scapy_all.ICMP, scapy_all.IP, scapy_all.IPv6,
    scapy_all.Raw, scapy_all.TCP, scapy_all.UDP, scapy_all.raw)
IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop, ICMPv6MLReport, IPOption_Router_Alert = (
    scapy_all.IPv6ExtHdrDestOpt, scapy_all.IPv6ExtHdrHopByHop, scapy_all.ICMPv6MLReport,
    scapy_all.IPOption_Router_Alert)

SOURCE = Path(__file__).resolve().parents[1] / "src" / "mptcplab" / "emulator" / "linkemu.c"

# MPTCP options (kind 30, RFC 8684) as scapy (kind, value) pairs; value[0] >> 4 is the subtype.
MP_CAPABLE = (30, bytes([0x01, 0x81]))                              # SYN, v1, 4 bytes
MP_JOIN_SYN = (30, bytes([0x10, 0x02]) + b"\xaa" * 4 + b"\xbb" * 4)  # 12 bytes
MP_JOIN_ACK = (30, bytes([0x10, 0x00]) + b"\xcc" * 20)              # third ACK, 24 bytes
DSS = (30, bytes([0x20, 0x01]) + b"\x00\x00\x10\x00")               # data ACK, 8 bytes
ADD_ADDR = (30, bytes([0x30, 0x05]) + bytes([10, 0, 2, 1]) + b"\xdd" * 8)  # IPv4 + HMAC, 16 bytes
SYN_OPTS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]
TS = [("NOP", None), ("NOP", None), ("Timestamp", (5, 4))]
PAYLOAD = b"data the middlebox must not touch"

# name -> (flags, options, payload): segments of an MPTCP connection's life.
SEGMENTS = {
    "syn_mp_capable": ("S", SYN_OPTS + [MP_CAPABLE], b""),
    "synack_mp_capable": ("SA", SYN_OPTS + [MP_CAPABLE], b""),
    "syn_mp_join": ("S", SYN_OPTS + [MP_JOIN_SYN], b""),
    "ack_mp_join": ("A", TS + [MP_JOIN_ACK], b""),
    "data_dss": ("PA", TS + [DSS], PAYLOAD),
    "ack_dss_add_addr": ("A", TS + [DSS, ADD_ADDR], b""),
    "syn_plain": ("S", SYN_OPTS, b""),
    "data_plain": ("PA", TS, PAYLOAD),
}
MPTCP_SYNS = {"syn_mp_capable", "synack_mp_capable", "syn_mp_join"}


def segment(flags: str, options: list, payload: bytes = b"", v6: bool = False, ip_kw: dict | None = None,
            l2: list | None = None, seq: int = 1000) -> bytes:
    net = (IPv6(src="fd00::1", dst="fd00::2") if v6 else
           IP(src="10.0.0.1", dst="10.0.1.1", **(ip_kw or {})))
    pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    for layer in l2 or []:
        pkt = pkt / layer
    pkt = pkt / net / TCP(sport=40000, dport=5201, seq=seq, ack=2000 if "A" in flags else 0, flags=flags,
                          options=options)
    return raw(pkt / Raw(payload) if payload else pkt)


def raw_options_segment(opts: bytes, flags: str = "S", payload: bytes = b"") -> bytes:
    """A segment whose option bytes are exactly ``opts`` (maybe malformed): scapy's TCP with a data
    offset covering them and the bytes as its payload, so that scapy's checksum covers them."""
    assert len(opts) % 4 == 0
    return raw(Ether() / IP(src="10.0.0.1", dst="10.0.1.1") /
               TCP(sport=40000, dport=5201, flags=flags, dataofs=5 + len(opts) // 4) / Raw(opts + payload))


def subtype(opt: tuple) -> int | None:
    return opt[1][0] >> 4 if opt[0] == 30 and opt[1] else None


def without(options: list, strip) -> list:
    """The options with every one ``strip`` says replaced by NOPs of its size."""
    out = []
    for opt in options:
        if opt[0] == 30 and strip(opt):
            out += [("NOP", None)] * (2 + len(opt[1]))
        else:
            out.append(opt)
    return out


def checksum_ok(frame: bytes) -> bool:
    p = Ether(frame)
    given = p[TCP].chksum
    del p[TCP].chksum
    return Ether(raw(p))[TCP].chksum == given


def tcp_checksum(frame: bytes) -> tuple[int, int]:
    """(the checksum in the frame, the right one)."""
    p = Ether(frame)
    given = p[TCP].chksum
    del p[TCP].chksum
    return given, Ether(raw(p))[TCP].chksum


def assert_consistent(before: bytes, after: bytes) -> None:
    """What no transform may change: lengths, data offset, payload; and a valid checksum."""
    assert len(after) == len(before)
    b, a = Ether(before), Ether(after)
    if IP in b:
        assert (a[IP].len, a[IP].ihl, a[IP].chksum) == (b[IP].len, b[IP].ihl, b[IP].chksum)
    else:
        assert a[IPv6].plen == b[IPv6].plen
    assert a[TCP].dataofs == b[TCP].dataofs
    assert bytes(a[TCP].payload) == bytes(b[TCP].payload)
    assert checksum_ok(after), "TCP checksum invalid after the middlebox"


# --------------------------------------------------------------------------- the binary


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler (cc/gcc) to build linkemu")
    out = tmp_path_factory.mktemp("linkemu") / "linkemu"
    r = subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-o", str(out), str(SOURCE), "-lm"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    return out, r.stderr


@pytest.fixture(scope="module")
def emu(build):
    return build[0]


def run(emu: Path, lines: list[str], seed: int | None = None) -> list[str]:
    argv = [str(emu), "--filter"] + ([] if seed is None else ["--seed", str(seed)])
    r = subprocess.run(argv, input="".join(line + "\n" for line in lines),
                       capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert len(out) == len(lines), out  # one answer per line
    return out


def through(emu: Path, settings: str, frames: list[bytes], direction: str = "a2b"):
    """([frame out, None for a drop, or (first, second) for a split], the stats of the direction)."""
    lines = ([f"set {direction} {settings}"] if settings else []) + [f"frame {direction} {f.hex()}" for f in frames]
    out = run(emu, lines + ["stats"])
    if settings:
        assert out.pop(0) == "ok"
    results = []
    for answer in out[:-1]:
        if answer == "drop":
            results.append(None)
        elif answer.startswith("frames 2 "):
            words = answer.split()
            assert len(words) == 4, answer
            results.append((bytes.fromhex(words[2]), bytes.fromhex(words[3])))
        else:
            assert answer.startswith("frame "), answer
            results.append(bytes.fromhex(answer.split()[1]))
    return results, json.loads(out[-1])[direction]


ZERO = {"mb_stripped_frames": 0, "mb_stripped_options": 0, "mb_dropped_syn": 0, "mb_mss_clamped": 0, "mb_skipped": 0,
        "mb_rewritten": 0, "mb_split_frames": 0, "mb_isn_conns": 0, "mb_isn_rewritten": 0, "mb_isn_evicted": 0,
        "mb_nat_conns": 0, "mb_nat_rewritten": 0, "mb_nat_unknown": 0, "mb_nat_arp": 0, "mb_nat_evicted": 0,
        "mb_coalesced": 0}


def mb_counters(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k in ZERO}


def test_builds_without_warnings(build):
    assert build[1].strip() == "", build[1]


# --------------------------------------------------------------------------- mb_strip

STRIP_MODES = {
    "none": lambda flags, opt: False,
    "all": lambda flags, opt: True,
    "syn": lambda flags, opt: "S" in flags,
    "join": lambda flags, opt: subtype(opt) == 1,
    "add_addr": lambda flags, opt: subtype(opt) == 3,
    "join,add_addr": lambda flags, opt: subtype(opt) in (1, 3),
}


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("mode", list(STRIP_MODES))
def test_strip(emu, mode, v6):
    rule = STRIP_MODES[mode]
    names = list(SEGMENTS)
    frames = [segment(*SEGMENTS[n], v6=v6) for n in names]
    out, stats = through(emu, f"mb_strip={mode}", frames)
    frames_stripped = options_stripped = 0
    for name, before, after in zip(names, frames, out):
        flags, options, payload = SEGMENTS[name]
        expected_options = without(options, lambda opt: rule(flags, opt))
        n = sum(1 for opt in options if opt[0] == 30 and rule(flags, opt))
        frames_stripped += n > 0
        options_stripped += n
        assert after is not None, name
        assert_consistent(before, after)
        assert Ether(after)[TCP].options == Ether(segment(flags, expected_options, payload, v6=v6))[TCP].options, name
        # the whole frame, checksum included, as scapy builds it with the NOPs in place
        assert after == segment(flags, expected_options, payload, v6=v6), name
        if n == 0:
            assert after == before, name
    assert stats["mb_strip"] == mode
    assert mb_counters(stats) == dict(ZERO, mb_stripped_frames=frames_stripped, mb_stripped_options=options_stripped)
    if mode == "all":  # the test itself: every mode above is exercised on frames that have options to strip
        assert options_stripped == 7


def test_strip_after_vlan_tag_and_before_ethernet_padding(emu):
    tagged = segment("S", SYN_OPTS + [MP_CAPABLE], l2=[Dot1Q(vlan=7)])
    short = segment("S", [MP_CAPABLE])  # 58 bytes: padded to the minimum Ethernet frame
    assert len(short) < 60
    pad = b"\x00" * (60 - len(short))
    out, stats = through(emu, "mb_strip=all", [tagged, short + pad])
    assert out[0] == segment("S", without(SYN_OPTS + [MP_CAPABLE], lambda o: True), l2=[Dot1Q(vlan=7)])
    assert out[1] == segment("S", without([MP_CAPABLE], lambda o: True)) + pad
    assert checksum_ok(out[0]) and checksum_ok(out[1][:len(short)])
    assert mb_counters(stats) == dict(ZERO, mb_stripped_frames=2, mb_stripped_options=2)


def test_eol_ends_the_option_list(emu):
    # MP_CAPABLE, EOL, then bytes that look like another MPTCP option: they are padding.
    opts = b"\x1e\x04\x01\x81" + b"\x00\x1e\x02\x00"
    before = raw_options_segment(opts)
    (after,), stats = through(emu, "mb_strip=all", [before])
    # (scapy builds this one with its checksum; parsing it drops the bytes after EOL, so
    # assert_consistent's rebuild cannot check it)
    assert after == raw_options_segment(b"\x01\x01\x01\x01" + b"\x00\x1e\x02\x00")
    assert mb_counters(stats) == dict(ZERO, mb_stripped_frames=1, mb_stripped_options=1)


def test_checksum_is_updated_not_recomputed(emu):
    """A segment that arrived corrupt leaves corrupt, by the same amount (RFC 1624 update)."""
    good = segment("PA", TS + [DSS], PAYLOAD)
    p = Ether(good)
    p[TCP].chksum = (p[TCP].chksum + 0x0101) & 0xFFFF
    bad = raw(p)
    (after,), _ = through(emu, "mb_strip=all", [bad])
    given_in, right_in = tcp_checksum(bad)
    given_out, right_out = tcp_checksum(after)
    assert given_out != right_out
    assert (right_out - given_out) % 0xFFFF == (right_in - given_in) % 0xFFFF
    assert after[:-len(PAYLOAD)][-8:] == b"\x01" * 8 and after.endswith(PAYLOAD)


# --------------------------------------------------------------------------- mb_drop_syn


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_drop_syn(emu, v6):
    names = list(SEGMENTS)
    frames = [segment(*SEGMENTS[n], v6=v6) for n in names]
    out, stats = through(emu, "mb_drop_syn=1", frames)
    for name, before, after in zip(names, frames, out):
        if name in MPTCP_SYNS:
            assert after is None, name
        else:
            assert after == before, name
    assert mb_counters(stats) == dict(ZERO, mb_dropped_syn=len(MPTCP_SYNS))
    assert stats["mb_drop_syn"] == 1


def test_drop_syn_decides_before_strip(emu):
    frames = [segment(*SEGMENTS[n]) for n in ("syn_mp_capable", "data_dss")]
    out, stats = through(emu, "mb_drop_syn=1 mb_strip=all", frames)
    assert out[0] is None
    assert out[1] == segment("PA", without(TS + [DSS], lambda o: True), PAYLOAD)
    assert mb_counters(stats) == dict(ZERO, mb_dropped_syn=1, mb_stripped_frames=1, mb_stripped_options=1)


# --------------------------------------------------------------------------- mb_mss


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_mss_clamp(emu, v6):
    def opts(mss):
        return [("MSS", mss), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7), MP_CAPABLE]

    cases = [  # (flags, MSS in, MSS out)
        ("S", 1460, 1200),
        ("SA", 8960, 1200),
        ("S", 1200, 1200),   # equal: untouched
        ("S", 1000, 1000),   # smaller: untouched
        ("A", 1460, 1460),   # not a SYN: untouched
    ]
    frames = [segment(flags, opts(mss_in), v6=v6) for flags, mss_in, _ in cases]
    frames.append(segment("S", TS + [MP_CAPABLE], v6=v6))  # a SYN without MSS
    out, stats = through(emu, "mb_mss=1200", frames)
    for (flags, mss_in, mss_out), before, after in zip(cases, frames, out):
        assert after == segment(flags, opts(mss_out), v6=v6), (flags, mss_in)
        assert_consistent(before, after)
        assert dict(o for o in Ether(after)[TCP].options if o[0] == "MSS")["MSS"] == mss_out
    assert out[-1] == frames[-1]
    assert mb_counters(stats) == dict(ZERO, mb_mss_clamped=2)
    assert stats["mb_mss"] == 1200


def test_mss_clamp_and_strip_together(emu):
    before = segment(*SEGMENTS["syn_mp_join"])
    (after,), stats = through(emu, "mb_mss=536 mb_strip=join", [before])
    expected = [("MSS", 536)] + without(SYN_OPTS[1:] + [MP_JOIN_SYN], lambda o: True)
    assert after == segment("S", expected)
    assert_consistent(before, after)
    assert mb_counters(stats) == dict(ZERO, mb_stripped_frames=1, mb_stripped_options=1, mb_mss_clamped=1)


# --------------------------------------------------------------------------- mb_rewrite


def flipped(payload: bytes) -> bytes:
    """The payload as mb_rewrite leaves it: the middle byte (offset len // 2) XORed with 0xff."""
    at = len(payload) // 2
    return payload[:at] + bytes([payload[at] ^ 0xFF]) + payload[at + 1:]


# (flags, options, payload): data segments of even and odd lengths (the byte in either half of its
# 16-bit word), one of 1 byte, FIN with data; and segments that are not data, never counted.
REWRITE_STREAM = [
    ("S", SYN_OPTS + [MP_CAPABLE], b""),
    ("SA", SYN_OPTS + [MP_CAPABLE], b"syn with data (TFO) is not data"),
    ("PA", TS + [DSS], PAYLOAD),                 # data 1
    ("A", TS + [DSS], b""),
    ("PA", TS + [DSS], b"x" * 1000),            # data 2
    ("A", TS, b"\x01"),                          # data 3
    ("RA", [], b"a reset's text is not data"),
    ("PA", TS + [DSS], bytes(range(256)) * 3),  # data 4
    ("F", TS, b""),
    ("FPA", TS + [DSS], b"last words, odd"),     # data 5
    ("PA", [], b"0123456789"),                   # data 6
    ("A", TS + [DSS], b"abc"),                   # data 7
    ("PA", TS, b"ab"),                           # data 8
]


def is_data(flags: str, payload: bytes) -> bool:
    return bool(payload) and "S" not in flags and "R" not in flags


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("every,after", [(1, 0), (3, 0), (2, 3), (1, 6), (5, 100)])
def test_rewrite_every_nth_data_segment_after_k(emu, every, after, v6):
    frames = [segment(*s, v6=v6) for s in REWRITE_STREAM]
    out, stats = through(emu, f"mb_rewrite={every} mb_rewrite_after={after}", frames)
    data = rewritten = 0
    for (flags, options, payload), before, got in zip(REWRITE_STREAM, frames, out):
        if is_data(flags, payload):
            data += 1
        hit = is_data(flags, payload) and data > after and (data - after) % every == 0
        rewritten += hit
        if not hit:
            assert got == before, (flags, payload)
            continue
        # the whole frame as scapy builds it with the byte flipped: headers as they were, checksum right
        assert got == segment(flags, options, flipped(payload), v6=v6), (flags, payload)
        assert checksum_ok(got)
        # exactly one payload byte changed, besides the checksum
        tcp_at = len(before) - len(Ether(before)[TCP])
        at = len(before) - len(payload) + len(payload) // 2
        diff = {i for i, (x, y) in enumerate(zip(before, got)) if x != y}
        assert at in diff and diff <= {at, tcp_at + 16, tcp_at + 17}, (diff, at, tcp_at)
    assert data == 8
    assert mb_counters(stats) == dict(ZERO, mb_rewritten=rewritten)
    assert (stats["mb_rewrite"], stats["mb_rewrite_after"]) == (every, after)
    assert rewritten == {(1, 0): 8, (3, 0): 2, (2, 3): 2, (1, 6): 2, (5, 100): 0}[(every, after)]


def test_rewrite_max_rewrites_that_many_segments_of_each_connection(emu):
    """mb_rewrite_max=M: at most M rewrites per connection, the counts (data segments for
    mb_rewrite_after, rewrites) started again by each SYN without ACK -- a box that corrupts the
    K+1-th data segment of every connection once, and leaves what follows alone (what a test of
    the fallback after MP_FAIL needs: the data after it arrives unchanged). A SYN/ACK passing the
    same way restarts nothing."""
    data = [segment("PA", TS + [DSS], bytes([65 + i]) * 20) for i in range(6)]
    syn, synack = segment(*SEGMENTS["syn_mp_capable"]), segment(*SEGMENTS["synack_mp_capable"])
    stream = [syn, *data, synack, *data, syn, *data]
    out, stats = through(emu, "mb_rewrite=1 mb_rewrite_after=2 mb_rewrite_max=1", stream)
    changed = [i for i, (a, b) in enumerate(zip(stream, out)) if a != b]
    # the 3rd data segment of the first connection, then nothing until the next SYN, then its 3rd
    assert changed == [3, 17], changed
    assert out[3] == segment("PA", TS + [DSS], flipped(bytes([67]) * 20)) and checksum_ok(out[17])
    assert stats["mb_rewritten"] == 2 and stats["mb_rewrite_max"] == 1
    # two per connection, every second one after the first
    out, stats = through(emu, "mb_rewrite=2 mb_rewrite_max=2", [syn, *data, syn, *data])
    assert [i for i, (a, b) in enumerate(zip([syn, *data, syn, *data], out)) if a != b] == [2, 4, 9, 11]
    # without it (0, the default) the count runs on across SYNs, as before
    out, stats = through(emu, "mb_rewrite=1 mb_rewrite_after=2", [syn, *data, syn, *data])
    assert stats["mb_rewritten"] == 12 - 2 and stats["mb_rewrite_max"] == 0
    assert run(emu, ["set a2b mb_rewrite_max=-1", "set a2b mb_rewrite_max=x"]) == [
        "error: bad value mb_rewrite_max=-1", "error: bad value mb_rewrite_max=x"]


def test_rewrite_updates_the_checksum_incrementally_and_counts_across_settings(emu):
    """A corrupt segment leaves corrupt by the same amount; setting mb_rewrite again (as a link
    event does) does not restart the count."""
    good = segment("PA", TS + [DSS], PAYLOAD)
    p = Ether(good)
    p[TCP].chksum = (p[TCP].chksum + 0x0101) & 0xFFFF
    bad = raw(p)
    out = run(emu, ["set a2b mb_rewrite=2", f"frame a2b {good.hex()}", "set a2b mb_rewrite=2",
                    f"frame a2b {bad.hex()}", "stats"])
    assert out[:3] == ["ok", f"frame {good.hex()}", "ok"]
    after = bytes.fromhex(out[3].split()[1])
    given_in, right_in = tcp_checksum(bad)
    given_out, right_out = tcp_checksum(after)
    assert after.endswith(flipped(PAYLOAD)) and given_out != right_out
    assert (right_out - given_out) % 0xFFFF == (right_in - given_in) % 0xFFFF
    assert json.loads(out[4])["a2b"]["mb_rewritten"] == 1


def test_rewrite_with_strip_and_vlan(emu):
    before = segment("PA", TS + [DSS], PAYLOAD, l2=[Dot1Q(vlan=3)])
    (after,), stats = through(emu, "mb_rewrite=1 mb_strip=all", [before])
    assert after == segment("PA", without(TS + [DSS], lambda o: True), flipped(PAYLOAD), l2=[Dot1Q(vlan=3)])
    assert mb_counters(stats) == dict(ZERO, mb_rewritten=1, mb_stripped_frames=1, mb_stripped_options=1)


# --------------------------------------------------------------------------- mb_split


def without_flags(flags: str, drop: str) -> str:
    return "".join(f for f in flags if f not in drop)


def assert_split(before: bytes, got, at: int, v6: bool = False, l2: list | None = None) -> None:
    """``got`` is ``before`` split after ``at`` payload bytes, as scapy builds the two segments."""
    assert isinstance(got, tuple), got
    first, second = got
    b = Ether(before)
    tcp, payload = b[TCP], bytes(b[TCP].payload)
    flags = str(tcp.flags)
    ip_kw = None if v6 else {"id": b[IP].id, "flags": b[IP].flags, "ttl": b[IP].ttl, "tos": b[IP].tos}
    ip2_kw = None if v6 else dict(ip_kw, id=(b[IP].id + 1) % 65536)
    assert first == segment(without_flags(flags, "FP"), tcp.options, payload[:at], v6=v6, ip_kw=ip_kw, l2=l2,
                            seq=tcp.seq)
    assert second == segment(without_flags(flags, "C"), tcp.options, payload[at:], v6=v6, ip_kw=ip2_kw, l2=l2,
                             seq=(tcp.seq + at) % 2**32)
    f, s = Ether(first), Ether(second)
    assert bytes(f[TCP].payload) + bytes(s[TCP].payload) == payload
    assert f[TCP].options == s[TCP].options == tcp.options
    assert raw(f[TCP])[12:13] == raw(s[TCP])[12:13] == raw(tcp)[12:13]   # data offset
    assert checksum_ok(first) and checksum_ok(second)
    if not v6:
        for frame in (first, second):   # the IP header checksum, as scapy computes it
            q = Ether(frame)
            given = q[IP].chksum
            del q[IP].chksum
            assert Ether(raw(q))[IP].chksum == given
        assert (f[IP].len, s[IP].len) == (20 + len(f[TCP]), 20 + len(s[TCP]))
    else:
        assert (f[IPv6].plen, s[IPv6].plen) == (len(f[TCP]), len(s[TCP]))


BIG = bytes(range(256)) * 5 + b"tail"   # 1284 bytes


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("at", [1, 41, 500, 1283])
def test_split_makes_two_consistent_segments(emu, at, v6):
    cases = [("PA", TS + [DSS]), ("FPA", TS + [DSS, ADD_ADDR]), ("AEC", []), ("FPAEC", TS)]
    ip_kw = None if v6 else {"id": 0xFFFF, "flags": "DF"}   # the second ID wraps to 0
    frames = [segment(flags, opts, BIG, v6=v6, ip_kw=ip_kw, seq=2**32 - 7) for flags, opts in cases]
    out, stats = through(emu, f"mb_split={at}", frames)
    for before, got in zip(frames, out):
        assert_split(before, got, at, v6=v6)
    if not v6:
        assert Ether(out[0][1])[IP].id == 0 and str(Ether(out[0][1])[IP].flags) == "DF"
    assert mb_counters(stats) == dict(ZERO, mb_split_frames=len(cases))
    assert stats["mb_split"] == at


def test_split_only_longer_data_segments(emu):
    bad = Ether(segment("PA", TS + [DSS], BIG))
    bad[TCP].chksum ^= 0x00FF
    bad_ip = Ether(segment("PA", TS + [DSS], BIG))
    bad_ip[IP].chksum ^= 0x00FF
    untouched = {
        "as long as B": segment("PA", TS + [DSS], b"y" * 100),
        "shorter": segment("PA", TS + [DSS], b"y" * 99),
        "pure ack": segment("A", TS + [DSS]),
        "fin only": segment("FA", TS),
        "syn with data": segment("S", SYN_OPTS + [MP_CAPABLE], BIG),
        "rst with data": segment("RA", [], BIG),
        "urgent": segment("PAU", TS, BIG),
        "bad tcp checksum": raw(bad),
        "bad ip checksum": raw(bad_ip),
    }
    frames = list(untouched.values()) + [segment("PA", TS + [DSS], b"y" * 101)]
    out, stats = through(emu, "mb_split=100", frames)
    for name, before, got in zip(untouched, frames, out):
        assert got == before, name
    assert_split(frames[-1], out[-1], 100)
    assert mb_counters(stats) == dict(ZERO, mb_split_frames=1)


def test_split_drops_ethernet_padding_and_keeps_vlan_tags(emu):
    short = segment("PA", [], b"abcd")
    assert len(short) < 60
    tagged = segment("PA", TS + [DSS], BIG, l2=[Dot1Q(vlan=9)])
    out, stats = through(emu, "mb_split=2", [short + b"\x00" * (60 - len(short)), tagged])
    assert_split(short, out[0], 2)
    assert_split(tagged, out[1], 2, l2=[Dot1Q(vlan=9)])
    assert mb_counters(stats) == dict(ZERO, mb_split_frames=2)


def test_rewrite_then_split_then_each_part_is_consistent(emu):
    """In that order: the rewritten byte (the middle one of the whole payload) lands in the second
    part, and both parts' checksums are right."""
    before = segment("PA", TS + [DSS], PAYLOAD)
    (got,), stats = through(emu, "mb_rewrite=1 mb_split=10 mb_strip=all", [before])
    expected = segment("PA", without(TS + [DSS], lambda o: True), flipped(PAYLOAD))
    assert_split(expected, got, 10)
    assert mb_counters(stats) == dict(ZERO, mb_rewritten=1, mb_split_frames=1, mb_stripped_frames=1,
                                      mb_stripped_options=1)


def test_new_settings_refuse_bad_values(emu):
    out = run(emu, ["set a2b mb_rewrite=-1", "set a2b mb_rewrite=1.5", "set a2b mb_rewrite=4294967296",
                    "set a2b mb_rewrite_after=x", "set a2b mb_rewrite_after=", "set a2b mb_split=65536",
                    "set b2a mb_rewrite=4294967295 mb_rewrite_after=18446744073709551615",
                    "set b2a mb_split=65535 mb_rewrite_after=9223372036854775807", "stats"])
    assert out[:6] == ["error: bad value mb_rewrite=-1", "error: bad value mb_rewrite=1.5",
                       "error: bad value mb_rewrite=4294967296", "error: bad value mb_rewrite_after=x",
                       "error: bad value mb_rewrite_after=", "error: bad value mb_split=65536"]
    assert out[6] == "error: bad value mb_rewrite_after=18446744073709551615" and out[7] == "ok"
    stats = json.loads(out[8])
    assert (stats["a2b"]["mb_rewrite"], stats["a2b"]["mb_rewrite_after"], stats["a2b"]["mb_split"]) == (0, 0, 0)
    assert (stats["b2a"]["mb_rewrite"], stats["b2a"]["mb_rewrite_after"], stats["b2a"]["mb_split"]) == (
        4294967295, 9223372036854775807, 65535)


# --------------------------------------------------------------------------- connections (mb_isn)

A_MAC, B_MAC = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def tcp(src: str, dst: str, sport: int, dport: int, flags: str, seq: int = 0, ack: int = 0, options=(),
        payload: bytes = b"", smac: str = A_MAC, dmac: str = B_MAC, ip_kw: dict | None = None,
        window: int = 1000) -> bytes:
    """One segment between any two ends (IPv6 when the addresses are), sequence numbers mod 2^32."""
    net = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst, **(ip_kw or {}))
    pkt = Ether(src=smac, dst=dmac) / net / TCP(sport=sport, dport=dport, flags=flags, seq=seq % 2**32,
                                                ack=ack % 2**32, window=window, options=list(options))
    return raw(pkt / Raw(payload) if payload else pkt)


def answers(out: list[str]) -> list:
    """linkemu's answers to frames: bytes for "frame", a tuple for "frames N", ("reply", bytes), else
    the word."""
    res = []
    for a in out:
        words = a.split()
        if words[0] == "frame":
            res.append(bytes.fromhex(words[1]))
        elif words[0] == "reply":
            res.append(("reply", bytes.fromhex(words[1])))
        elif words[0] == "frames":
            assert len(words) == 2 + int(words[1]), a
            res.append(tuple(bytes.fromhex(w) for w in words[2:]))
        else:
            res.append(a)
    return res


def exchange(emu: Path, settings: list[str], frames: list[tuple[str, bytes]], seed: int | None = None):
    """(answers to (direction, frame) pairs, stats of both directions)."""
    out = run(emu, settings + [f"frame {d} {f.hex()}" for d, f in frames] + ["stats"], seed=seed)
    assert out[:len(settings)] == ["ok"] * len(settings)
    return answers(out[len(settings):-1]), json.loads(out[-1])


def ip_checksum_ok(frame: bytes) -> bool:
    q = Ether(frame)
    if IP not in q:
        return True
    given = q[IP].chksum
    del q[IP].chksum
    return Ether(raw(q))[IP].chksum == given


def conversation(c: str, s: str, sport: int, isn: int = 1000, server_isn: int = 7000, dport: int = 5201) -> list:
    """A connection's first segments, as its ends send them, with the direction each goes
    (client side a): SYN, SYN/ACK, ACK, 100 bytes, SACK for the second 100 bytes, the first 100."""
    return [
        ("a2b", tcp(c, s, sport, dport, "S", isn, options=SYN_OPTS + [MP_CAPABLE])),
        ("b2a", tcp(s, c, dport, sport, "SA", server_isn, isn + 1, options=SYN_OPTS + [MP_CAPABLE])),
        ("a2b", tcp(c, s, sport, dport, "A", isn + 1, server_isn + 1, options=TS + [DSS])),
        ("a2b", tcp(c, s, sport, dport, "PA", isn + 101, server_isn + 1, options=TS + [DSS], payload=b"y" * 100)),
        ("b2a", tcp(s, c, dport, sport, "A", server_isn + 1, isn + 1,
                    options=[("NOP", None), ("NOP", None), ("SAck", ((isn + 101) % 2**32, (isn + 201) % 2**32))])),
        ("a2b", tcp(c, s, sport, dport, "PA", isn + 1, server_isn + 1, options=TS + [DSS], payload=b"x" * 100)),
    ]


def seen_by_the_other_end(frames: list, off: int) -> list:
    """What the box must make of conversation(): a2b sequence numbers + off, b2a ack and SACK - off,
    every other field and option as sent (the client's acks and the server's seq untouched)."""
    out = []
    for d, f in frames:
        p = Ether(f)
        if d == "a2b":
            p[TCP].seq = (p[TCP].seq + off) % 2**32
        else:
            p[TCP].ack = (p[TCP].ack + off) % 2**32 if "A" in str(p[TCP].flags) else p[TCP].ack
            p[TCP].options = [(k, tuple((e + off) % 2**32 for e in v)) if k == "SAck" else (k, v)
                              for k, v in p[TCP].options]
        del p[TCP].chksum
        out.append(raw(p))
    return out


def test_isn_is_shifted_one_way_and_shifted_back_the_other(emu):
    """The box sees the server's view (ack = client ISN + off + 1): it must give the client its own back."""
    frames = conversation("10.0.0.1", "10.0.1.1", 40000)
    # the offset the box draws first (the same seed every run)
    (syn,), _ = exchange(emu, ["set a2b mb_isn=1"], frames[:1], seed=3)
    off = (Ether(syn)[TCP].seq - 1000) % 2**32
    assert off != 0
    # the server's segments as it sends them: acknowledging the shifted numbers
    server_view = seen_by_the_other_end(frames, off)
    sent = [(d, server_view[i] if d == "b2a" else f) for i, (d, f) in enumerate(frames)]
    out, stats = exchange(emu, ["set a2b mb_isn=1"], sent, seed=3)
    for (d, f), got, theirs, (_, ours) in zip(sent, out, server_view, frames):
        assert got == (theirs if d == "a2b" else ours), (d, Ether(f)[TCP].flags)
        assert checksum_ok(got) and ip_checksum_ok(got)
    a2b, b2a = stats["a2b"], stats["b2a"]
    assert mb_counters(a2b) == dict(ZERO, mb_isn_conns=1, mb_isn_rewritten=6)   # 4 shifted, 2 shifted back
    assert mb_counters(b2a) == ZERO and (a2b["mb_isn"], b2a["mb_isn"]) == (1, 0)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_every_connection_gets_its_own_offset_and_others_pass_untouched(emu, v6):
    c, s = ("fd00::1", "fd00::2") if v6 else ("10.0.0.1", "10.0.1.1")
    first = [f for d, f in conversation(c, s, 40000) if d == "a2b"]
    second = [f for d, f in conversation(c, s, 40001, isn=2**32 - 50) if d == "a2b"]   # wraps
    others = [tcp(c, s, 40002, 5201, "PA", 5, 6, TS, b"no SYN seen"),             # connection before the box
              tcp(s, c, 5201, 40002, "A", 6, 5, TS),
              tcp(c, s, 40000, 5202, "PA", 1001, 1, TS, b"other port"),
              tcp(s, c, 5201, 40001, "S", 9, 0, SYN_OPTS)]                            # a SYN the other way
    frames = ([("a2b", f) for f in first + second] + [("a2b" if i % 2 == 0 else "b2a", f)
                                                      for i, f in enumerate(others)])
    out, stats = exchange(emu, ["set a2b mb_isn=1"], frames)
    offs = []
    for fs, got in ((first, out[:4]), (second, out[4:8])):
        off = (Ether(got[0])[TCP].seq - Ether(fs[0])[TCP].seq) % 2**32
        offs.append(off)
        for f, g in zip(fs, got):   # the same offset on every segment of the connection
            assert (Ether(g)[TCP].seq - Ether(f)[TCP].seq) % 2**32 == off
            p = Ether(f)
            p[TCP].seq = (p[TCP].seq + off) % 2**32
            del p[TCP].chksum
            assert g == raw(p) and checksum_ok(g)
    assert 0 not in offs and offs[0] != offs[1]
    assert out[8:] == others
    # the reverse direction's SYN starts nothing: mb_isn is on a2b only
    assert mb_counters(stats["a2b"]) == dict(ZERO, mb_isn_conns=2, mb_isn_rewritten=8)


def test_isn_offsets_follow_the_seed_and_a_retransmitted_syn_keeps_its_offset(emu):
    syn = tcp("10.0.0.1", "10.0.1.1", 40000, 5201, "S", 1000, options=SYN_OPTS)
    again = tcp("10.0.0.1", "10.0.1.1", 40000, 5201, "S", 1000, options=SYN_OPTS)
    reused = tcp("10.0.0.1", "10.0.1.1", 40000, 5201, "S", 123456, options=SYN_OPTS)   # a new ISN: new connection

    def offsets(seed):
        out, stats = exchange(emu, ["set a2b mb_isn=1"], [("a2b", syn), ("a2b", again), ("a2b", reused)], seed=seed)
        seqs = [Ether(f)[TCP].seq for f in out]
        return ((seqs[0] - 1000) % 2**32, (seqs[1] - 1000) % 2**32, (seqs[2] - 123456) % 2**32), stats["a2b"]

    (o1, o2, o3), stats = offsets(7)
    assert o1 == o2 and o3 != o1
    assert stats["mb_isn_conns"] == 2 and stats["mb_isn_rewritten"] == 3
    assert offsets(7)[0] == (o1, o2, o3)          # reproducible
    assert offsets(8)[0][0] != o1                 # and the seed's


def test_isn_table_evicts_the_least_recently_used(emu):
    """4096 connections fit; the 4097th evicts the oldest unused one, whose segments then pass as sent."""
    syns = [("a2b", tcp("10.0.0.1", "10.0.1.1", 1000 + i, 5201, "S", i, options=[("MSS", 1460)]))
            for i in range(4097)]
    first_data = tcp("10.0.0.1", "10.0.1.1", 1000, 5201, "PA", 1, 1, payload=b"late")
    second_data = tcp("10.0.0.1", "10.0.1.1", 1001, 5201, "PA", 2, 1, payload=b"kept")
    # connection 1001 used again before the 4097th SYN: connection 1000 is the oldest then
    touch = ("a2b", tcp("10.0.0.1", "10.0.1.1", 1001, 5201, "A", 2, 1))
    out, stats = exchange(emu, ["set a2b mb_isn=1"], syns[:4096] + [touch] + syns[4096:] +
                          [("a2b", first_data), ("a2b", second_data)])
    assert out[-2] == first_data
    assert out[-1] != second_data and Ether(out[-1])[TCP].seq != 2
    assert (stats["a2b"]["mb_isn_conns"], stats["a2b"]["mb_isn_evicted"]) == (4097, 1)


def test_isn_skipped_frames_are_not_translated(emu):
    syn = tcp("10.0.0.1", "10.0.1.1", 40000, 5201, "S", 1000, options=SYN_OPTS)
    fragment = tcp("10.0.0.1", "10.0.1.1", 40000, 5201, "PA", 1001, 1, payload=b"x", ip_kw={"flags": "MF"})
    out, stats = exchange(emu, ["set a2b mb_isn=1"], [("a2b", syn), ("a2b", fragment)])
    assert out[1] == fragment
    assert mb_counters(stats["a2b"]) == dict(ZERO, mb_isn_conns=1, mb_isn_rewritten=1, mb_skipped=1)


def test_isn_keeps_a_bad_checksum_bad(emu):
    syn = tcp("10.0.0.1", "10.0.1.1", 40000, 5201, "S", 1000, options=SYN_OPTS)
    p = Ether(tcp("10.0.0.1", "10.0.1.1", 40000, 5201, "PA", 1001, 1, payload=b"x"))
    p[TCP].chksum ^= 0x0101
    bad = raw(p)
    out, _ = exchange(emu, ["set a2b mb_isn=1"], [("a2b", syn), ("a2b", bad)])
    given_in, right_in = tcp_checksum(bad)
    given_out, right_out = tcp_checksum(out[1])
    assert given_out != right_out and (right_out - given_out) % 0xFFFF == (right_in - given_in) % 0xFFFF


# --------------------------------------------------------------------------- mb_nat

PRIV, SERVER, PUBLIC, ASKER_MAC = "10.0.0.1", "10.0.1.1", "10.0.1.100", "02:00:00:00:00:bb"


def natted(frame: bytes, src: str | None = None, sport: int | None = None, dst: str | None = None,
           dport: int | None = None) -> bytes:
    """The frame with addresses and ports replaced, both checksums computed by scapy."""
    p = Ether(frame)
    for layer, field, value in ((IP, "src", src), (TCP, "sport", sport), (IP, "dst", dst), (TCP, "dport", dport)):
        if value is not None:
            setattr(p[layer], field, value)
    del p[IP].chksum
    del p[TCP].chksum
    return raw(p)


def arp_request(target: str, smac: str = ASKER_MAC, sip: str = SERVER) -> bytes:
    return raw(Ether(src=smac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=smac, psrc=sip, pdst=target))


def test_nat_translates_both_ways_and_gives_each_connection_a_port(emu):
    add_addr = tcp(PRIV, SERVER, 40000, 5201, "A", 1001, 7001, TS + [DSS, ADD_ADDR])   # a private address inside
    frames = [
        ("a2b", tcp(PRIV, SERVER, 40000, 5201, "S", 1000, options=SYN_OPTS + [MP_CAPABLE])),
        ("b2a", tcp(SERVER, PUBLIC, 5201, 20000, "SA", 7000, 1001, SYN_OPTS + [MP_CAPABLE], smac=B_MAC, dmac=A_MAC)),
        ("a2b", tcp(PRIV, SERVER, 40000, 5201, "PA", 1001, 7001, TS + [DSS], b"hello")),
        ("a2b", add_addr),
        ("a2b", tcp(PRIV, SERVER, 40001, 5201, "S", 5000, options=SYN_OPTS + [MP_JOIN_SYN])),   # the second
        ("a2b", tcp(PRIV, SERVER, 40000, 5201, "S", 1000, options=SYN_OPTS + [MP_CAPABLE])),    # repeated SYN
        ("b2a", tcp(SERVER, PUBLIC, 5201, 20001, "SA", 9000, 5001, SYN_OPTS, smac=B_MAC, dmac=A_MAC)),
        ("b2a", tcp(SERVER, PUBLIC, 5201, 20000, "A", 7001, 1006, TS + [DSS], smac=B_MAC, dmac=A_MAC)),
    ]
    out, stats = exchange(emu, [f"set a2b mb_nat={PUBLIC}"], frames)
    expected = [natted(frames[0][1], src=PUBLIC, sport=20000), natted(frames[1][1], dst=PRIV, dport=40000),
                natted(frames[2][1], src=PUBLIC, sport=20000), natted(frames[3][1], src=PUBLIC, sport=20000),
                natted(frames[4][1], src=PUBLIC, sport=20001), natted(frames[5][1], src=PUBLIC, sport=20000),
                natted(frames[6][1], dst=PRIV, dport=40001), natted(frames[7][1], dst=PRIV, dport=40000)]
    for (d, f), got, want in zip(frames, out, expected):
        assert got == want, (d, Ether(f)[TCP].sport, Ether(f)[TCP].dport)
        assert checksum_ok(got) and ip_checksum_ok(got)
    # MPTCP options are not a NAT's business: ADD_ADDR still names the private address
    assert Ether(out[3])[TCP].options == Ether(add_addr)[TCP].options
    assert mb_counters(stats["a2b"]) == dict(ZERO, mb_nat_conns=2, mb_nat_rewritten=8)
    assert stats["a2b"]["mb_nat"] == PUBLIC and stats["b2a"]["mb_nat"] == "off"
    assert mb_counters(stats["b2a"]) == ZERO


def test_nat_drops_what_matches_no_connection_and_passes_the_rest(emu):
    syn = tcp(PRIV, SERVER, 40000, 5201, "S", 1000, options=SYN_OPTS)
    dropped = [
        ("a2b", tcp(PRIV, SERVER, 40005, 5201, "PA", 1, 1, TS, b"no SYN seen")),    # outbound, unknown
        ("a2b", tcp(PRIV, SERVER, 40006, 5201, "SA", 1, 1, SYN_OPTS)),              # a SYN/ACK starts nothing
        ("b2a", tcp(SERVER, PUBLIC, 5201, 20099, "A", 1, 1)),                       # to an unused public port
        ("b2a", tcp(SERVER, PUBLIC, 5202, 20000, "A", 1, 1)),                       # from another server port
        ("b2a", tcp(SERVER, PUBLIC, 5201, 20050, "S", 1, 0, SYN_OPTS)),             # a SYN in from outside
    ]
    passed = [
        ("b2a", tcp(SERVER, PRIV, 5201, 40000, "A", 1, 1)),                         # not to the public address
        ("a2b", raw(Ether() / IP(src=PRIV, dst=SERVER) / UDP(sport=5, dport=6))),  # not TCP
        ("a2b", raw(Ether() / IP(src=PRIV, dst=SERVER) / ICMP())),
        ("b2a", raw(Ether() / IP(src=SERVER, dst=PUBLIC) / ICMP(type=3, code=3))),  # ICMP errors: not translated
        ("a2b", tcp("fd00::1", "fd00::2", 40000, 5201, "PA", 1, 1, TS, b"IPv6")),   # IPv4 only
    ]
    out, stats = exchange(emu, [f"set a2b mb_nat={PUBLIC}"], [("a2b", syn)] + dropped + passed)
    assert out[1:1 + len(dropped)] == ["drop"] * len(dropped)
    assert out[1 + len(dropped):] == [f for _, f in passed]
    assert mb_counters(stats["a2b"]) == dict(ZERO, mb_nat_conns=1, mb_nat_rewritten=1, mb_nat_unknown=len(dropped))


def test_nat_answers_arp_for_the_public_address_with_the_mac_behind_it(emu):
    syn = tcp(PRIV, SERVER, 40000, 5201, "S", 1000, options=SYN_OPTS, smac=A_MAC)
    other = arp_request(SERVER, smac=A_MAC, sip=PRIV)
    frames = [("b2a", arp_request(PUBLIC)),          # nothing learned yet: passes on
              ("a2b", syn),
              ("b2a", arp_request(PUBLIC)),          # answered
              ("b2a", arp_request("10.0.1.7")),     # another address: passes
              ("a2b", other),                        # the private side's own ARP: passes
              ("a2b", arp_request(PUBLIC))]         # from the private side: not the NAT's to answer
    out, stats = exchange(emu, [f"set a2b mb_nat={PUBLIC}"], frames)
    assert out[0] == frames[0][1] and out[3:] == [f for _, f in frames[3:]]
    want = raw(Ether(src=A_MAC, dst=ASKER_MAC) /
               ARP(op=2, hwsrc=A_MAC, psrc=PUBLIC, hwdst=ASKER_MAC, pdst=SERVER))
    assert out[2] == ("reply", want)
    assert mb_counters(stats["a2b"]) == dict(ZERO, mb_nat_conns=1, mb_nat_rewritten=1, mb_nat_arp=1)


def test_nat_answers_arp_behind_a_vlan_tag_keeping_padding(emu):
    syn = tcp(PRIV, SERVER, 40000, 5201, "S", 1000, options=SYN_OPTS)
    ask = raw(Ether(src=ASKER_MAC, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=5) /
              ARP(op=1, hwsrc=ASKER_MAC, psrc=SERVER, pdst=PUBLIC)) + b"\x00" * 14
    out, _ = exchange(emu, [f"set a2b mb_nat={PUBLIC}"], [("a2b", syn), ("b2a", ask)])
    want = raw(Ether(src=A_MAC, dst=ASKER_MAC) / Dot1Q(vlan=5) /
               ARP(op=2, hwsrc=A_MAC, psrc=PUBLIC, hwdst=ASKER_MAC, pdst=SERVER)) + b"\x00" * 14
    assert out[1] == ("reply", want)


def test_nat_and_isn_together_are_undone_in_reverse_order(emu):
    """NAT, then ISN on the way out (the ISN table keyed by the public tuple); on the way back the
    ISN shift comes off first, then the address: the client sees its own numbers and address."""
    syn = tcp(PRIV, SERVER, 40000, 5201, "S", 1000, options=SYN_OPTS)
    (out_syn,), _ = exchange(emu, [f"set a2b mb_nat={PUBLIC} mb_isn=1"], [("a2b", syn)], seed=5)
    off = (Ether(out_syn)[TCP].seq - 1000) % 2**32
    assert out_syn == natted(tcp(PRIV, SERVER, 40000, 5201, "S", 1000 + off, options=SYN_OPTS), src=PUBLIC,
                             sport=20000)
    synack = tcp(SERVER, PUBLIC, 5201, 20000, "SA", 7000, 1001 + off, SYN_OPTS, smac=B_MAC, dmac=A_MAC)
    out, stats = exchange(emu, [f"set a2b mb_nat={PUBLIC} mb_isn=1"], [("a2b", syn), ("b2a", synack)], seed=5)
    back = natted(tcp(SERVER, PUBLIC, 5201, 20000, "SA", 7000, 1001, SYN_OPTS, smac=B_MAC, dmac=A_MAC),
                  dst=PRIV, dport=40000)
    assert out[1] == back and checksum_ok(out[1]) and ip_checksum_ok(out[1])
    assert mb_counters(stats["a2b"]) == dict(ZERO, mb_nat_conns=1, mb_nat_rewritten=2, mb_isn_conns=1,
                                             mb_isn_rewritten=2)


def test_nat_table_evicts_the_least_recently_used(emu):
    syns = [("a2b", tcp(PRIV, SERVER, 1000 + i, 5201, "S", i, options=[("MSS", 1460)])) for i in range(4097)]
    late = ("a2b", tcp(PRIV, SERVER, 1000, 5201, "PA", 1, 1, payload=b"late"))
    back = ("b2a", tcp(SERVER, PUBLIC, 5201, 20000, "A", 1, 2))
    out, stats = exchange(emu, [f"set a2b mb_nat={PUBLIC}"], syns + [late, back])
    assert Ether(out[4096])[TCP].sport == 24096
    assert out[-2:] == ["drop", "drop"]
    s = stats["a2b"]
    assert (s["mb_nat_conns"], s["mb_nat_evicted"], s["mb_nat_unknown"]) == (4097, 1, 2)


def test_nat_refuses_bad_addresses(emu):
    out = run(emu, ["set a2b mb_nat=10.0.0", "set a2b mb_nat=0.0.0.0", "set a2b mb_nat=fd00::1",
                    "set a2b mb_nat=10.0.0.1x", "set a2b mb_nat=", "set b2a mb_nat=192.0.2.1",
                    "set b2a mb_nat=off", "set a2b mb_nat=192.0.2.9", "stats"])
    assert out[:5] == [f"error: bad value mb_nat={v}" for v in ("10.0.0", "0.0.0.0", "fd00::1", "10.0.0.1x", "")]
    assert out[5:8] == ["ok", "ok", "ok"]
    stats = json.loads(out[8])
    assert (stats["a2b"]["mb_nat"], stats["b2a"]["mb_nat"]) == ("192.0.2.9", "off")


# --------------------------------------------------------------------------- mb_coalesce

DSS_2 = (30, bytes([0x20, 0x05]) + b"\x00\x00\x10\x00" + b"\x00\x00\x20\x00" + b"\x00\x00\x00\x01" +
         b"\x00\xc8")   # data ACK + a mapping of 200 bytes: 20 bytes


def data(seq: int, payload: bytes, flags: str = "PA", ack: int = 7001, window: int = 1000,
         options=(*TS, DSS), sport: int = 40000, v6: bool = False) -> bytes:
    c, s = ("fd00::1", "fd00::2") if v6 else ("10.0.0.1", "10.0.1.1")
    return tcp(c, s, sport, 5201, flags, seq, ack, list(options), payload, window=window)


def sums_ok(frame: bytes) -> bool:
    return checksum_ok(frame) and ip_checksum_ok(frame)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_coalesce_merges_contiguous_segments_keeping_the_first_ones_options(emu, v6):
    first = data(1001, b"a" * 100, "A", v6=v6)
    second = data(1101, b"b" * 200, "PA", ack=7005, window=2000, options=TS + [DSS_2], v6=v6)
    third = data(1301, b"c" * 50, "A", ack=7009, v6=v6)
    out = run(emu, ["set a2b mb_coalesce=400"] + [f"frame a2b {f.hex()}" for f in (first, second, third)] +
              ["flush a2b", "flush a2b", "stats"])
    assert out[:6] == ["ok", "held", "held", "held", out[4], "none"]
    merged = bytes.fromhex(out[4].split()[1])
    # the first's headers and options (its DSS mapping alone), all payloads, the latest ack and window, PSH
    assert merged == data(1001, b"a" * 100 + b"b" * 200 + b"c" * 50, "PA", ack=7009, window=1000, v6=v6)
    assert sums_ok(merged)
    stats = json.loads(out[6])["a2b"]
    assert mb_counters(stats) == dict(ZERO, mb_coalesced=2)
    assert (stats["mb_coalesce"], stats["mb_coalesce_hold_us"]) == (400, 1000)


def test_coalesce_takes_the_latest_ack_and_window_and_drops_padding(emu):
    short = data(1, b"ab", "A", options=[])
    assert len(short) < 60
    out = run(emu, ["set a2b mb_coalesce=100", f"frame a2b {(short + bytes(60 - len(short))).hex()}",
                    f"frame a2b {data(3, b'cd', 'A', ack=8000, window=77, options=[]).hex()}", "flush a2b"])
    assert out[1:3] == ["held", "held"]
    merged = bytes.fromhex(out[3].split()[1])
    assert merged == data(1, b"abcd", "A", ack=8000, window=77, options=[]) and sums_ok(merged)


def test_coalesce_lets_both_leave_in_order_when_they_cannot_merge(emu):
    held = data(1001, b"a" * 100)
    cases = {
        "a gap": data(1201, b"b" * 10),
        "a retransmission": data(1001, b"a" * 100),
        "too long together": data(1101, b"b" * 201),
        "a pure ack": data(1101, b"", "A"),
        "FIN": data(1101, b"b" * 10, "FPA"),
        "RST": data(1101, b"", "RA"),
        "URG": data(1101, b"b" * 10, "PAU"),
    }
    for name, new in cases.items():
        out = run(emu, ["set a2b mb_coalesce=300", f"frame a2b {held.hex()}", f"frame a2b {new.hex()}", "flush a2b"])
        assert out[1] == "held", name
        assert out[2] == f"frames 2 {held.hex()} {new.hex()}", name
        assert out[3] == "none", name


def test_coalesce_does_not_hold_what_it_could_not_merge(emu):
    bad = Ether(data(1, b"x" * 10))
    bad[TCP].chksum ^= 0xFF
    passing = [data(1, b"x" * 300), data(1, b"x" * 301), data(1, b"", "A"), data(1, b"x", "FPA"), raw(bad),
               tcp("10.0.0.1", "10.0.1.1", 40000, 5201, "S", 1, options=SYN_OPTS),
               raw(Ether() / IP() / UDP() / Raw(b"x")), data(1, b"x", v6=True)[:-1]]   # truncated: skipped
    out, stats = through(emu, "mb_coalesce=300", passing)
    assert out == passing
    assert mb_counters(stats) == dict(ZERO, mb_skipped=1)


def test_coalesce_holds_one_segment_and_lets_other_connections_pass(emu):
    mine, other = data(1001, b"a" * 10), data(5, b"z" * 10, sport=41000)
    out = run(emu, ["set a2b mb_coalesce=300", f"frame a2b {mine.hex()}", f"frame a2b {other.hex()}",
                    f"frame b2a {data(1011, b'b' * 10).hex()}",    # the other direction: its own box, off
                    f"frame a2b {data(1011, b'b' * 10).hex()}", "flush a2b", "flush b2a"])
    assert out[1:4] == ["held", f"frame {other.hex()}", f"frame {data(1011, b'b' * 10).hex()}"]
    assert out[4] == "held" and out[5] == f"frame {data(1001, b'a' * 10 + b'b' * 10).hex()}" and out[6] == "none"


def test_coalesce_comes_before_split(emu):
    """The held segment leaves as it is (merged or not); the segment that made it leave is split."""
    held, big = segment("PA", TS + [DSS], b"a" * 10, seq=1001), segment("PA", TS + [DSS], b"b" * 100, seq=2000)
    out = run(emu, ["set a2b mb_coalesce=50 mb_split=60", f"frame a2b {held.hex()}", f"frame a2b {big.hex()}"])
    words = out[2].split()
    assert words[:2] == ["frames", "3"] and words[2] == held.hex()
    assert_split(big, (bytes.fromhex(words[3]), bytes.fromhex(words[4])), 60)


def test_coalesce_settings_refuse_bad_values(emu):
    out = run(emu, ["set a2b mb_coalesce=65001", "set a2b mb_coalesce=-1", "set a2b mb_coalesce_hold_us=0",
                    "set a2b mb_coalesce_hold_us=1000001", "set a2b mb_coalesce=65000 mb_coalesce_hold_us=250",
                    "flush c2d", "flush", "stats"])
    assert out[:4] == ["error: bad value mb_coalesce=65001", "error: bad value mb_coalesce=-1",
                       "error: bad value mb_coalesce_hold_us=0", "error: bad value mb_coalesce_hold_us=1000001"]
    assert out[4] == "ok" and out[5].startswith("error: flush") and out[6].startswith("error")
    stats = json.loads(out[7])
    assert (stats["a2b"]["mb_coalesce"], stats["a2b"]["mb_coalesce_hold_us"]) == (65000, 250)


# --------------------------------------------------------------------------- left alone

MALFORMED = {
    "length 0": b"\x1e\x04\x01\x81" + b"\x08\x00\x00\x00",
    "length 1": b"\x1e\x04\x01\x81" + b"\x08\x01\x00\x00",
    "past the header": b"\x1e\x04\x01\x81" + b"\x08\x0a\x00\x00",
    "no length byte": b"\x1e\x04\x01\x81" + b"\x01\x01\x01\x08",
    "mptcp past the header": b"\x01\x01\x1e\x08\x01\x81\x00\x00",
}

# Frames with an MPTCP SYN option the middlebox may not inspect: untouched, counted as skipped.
SKIPPED = {
    "ip options": segment("S", [MP_CAPABLE] + SYN_OPTS, ip_kw={"options": [IPOption_Router_Alert()]}),
    "fragment": segment("S", [MP_CAPABLE] + SYN_OPTS, ip_kw={"flags": "MF"}),
    "truncated": segment(*SEGMENTS["data_dss"])[:-3],
    "ipv6 extension header": raw(Ether() / IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrDestOpt() /
                                 TCP(flags="S", options=[MP_CAPABLE] + SYN_OPTS)),
    "data offset < 5": raw(Ether() / IP() / TCP(flags="S", dataofs=4) / Raw(b"\x1e\x04\x01\x81")),
    "data offset > segment": raw(Ether() / IP() / TCP(flags="S", dataofs=15) / Raw(b"\x1e\x04\x01\x81")),
    **{f"malformed option, {k}": raw_options_segment(v) for k, v in MALFORMED.items()},
}

# Frames that are not TCP: untouched, not counted.
NOT_TCP = {
    "udp": raw(Ether() / IP() / UDP() / Raw(b"\x1e\x04\x01\x81")),
    "icmp": raw(Ether() / IP() / ICMP()),
    "arp": raw(Ether() / ARP()),
    "ipv6 udp": raw(Ether() / IPv6() / UDP() / Raw(b"x")),
    "ipv6 hop-by-hop mld": raw(Ether() / IPv6() / IPv6ExtHdrHopByHop() / ICMPv6MLReport()),
    "runt": b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08",
}

EVERYTHING = "mb_strip=all mb_drop_syn=1 mb_mss=500 mb_rewrite=1 mb_split=1 mb_isn=1"


def test_skipped_frames_are_left_alone_and_counted(emu):
    frames = list(SKIPPED.values())
    out, stats = through(emu, EVERYTHING, frames)
    for name, before, after in zip(SKIPPED, frames, out):
        assert after == before, name
    assert mb_counters(stats) == dict(ZERO, mb_skipped=len(SKIPPED))


def test_the_skipped_frames_would_be_changed_if_well_formed(emu):
    """The control: the same segments without what makes them uninspectable are changed."""
    fixed = [segment("S", [MP_CAPABLE] + SYN_OPTS), segment(*SEGMENTS["data_dss"]),
             raw_options_segment(b"\x1e\x04\x01\x81" + b"\x01\x01\x01\x00")]
    out, stats = through(emu, "mb_strip=all", fixed)
    assert all(after != before for before, after in zip(fixed, out))
    assert stats["mb_stripped_frames"] == 3 and stats["mb_skipped"] == 0


def test_non_tcp_is_left_alone_and_not_counted(emu):
    frames = list(NOT_TCP.values())
    out, stats = through(emu, EVERYTHING, frames)
    for name, before, after in zip(NOT_TCP, frames, out):
        assert after == before, name
    assert mb_counters(stats) == ZERO


def test_no_setting_is_byte_identical(emu):
    frames = ([segment(*s) for s in SEGMENTS.values()] + [segment(*s, v6=True) for s in SEGMENTS.values()] +
              list(SKIPPED.values()) + list(NOT_TCP.values()))
    for direction in ("a2b", "b2a"):
        out, stats = through(emu, "", frames, direction)
        assert out == frames
        assert mb_counters(stats) == ZERO
        assert (stats["mb_strip"], stats["mb_drop_syn"], stats["mb_mss"]) == ("none", 0, 0)
        assert (stats["mb_rewrite"], stats["mb_rewrite_after"], stats["mb_split"]) == (0, 0, 0)


def test_directions_are_independent(emu):
    frame = segment(*SEGMENTS["syn_mp_capable"])
    out = run(emu, ["set a2b mb_strip=all mb_drop_syn=1", f"frame b2a {frame.hex()}", "stats"])
    assert out[:2] == ["ok", f"frame {frame.hex()}"]
    stats = json.loads(out[2])
    assert mb_counters(stats["a2b"]) == ZERO and mb_counters(stats["b2a"]) == ZERO
    assert stats["b2a"]["mb_strip"] == "none" and stats["a2b"]["mb_strip"] == "all"


# --------------------------------------------------------------------------- the protocol

OLD_KEYS = ["rx_pkts", "rx_bytes", "tx_pkts", "tx_bytes", "drop_loss", "drop_queue", "drop_down", "tx_err",
            "queued", "max_backlog_pkts", "max_backlog_bytes", "rate", "delay_us", "jitter_us", "loss",
            "limit_pkts", "limit_bytes"]
NEW_KEYS = ["mb_stripped_frames", "mb_stripped_options", "mb_dropped_syn", "mb_mss_clamped", "mb_skipped",
            "mb_strip", "mb_drop_syn", "mb_mss",
            "mb_rewritten", "mb_split_frames", "mb_rewrite", "mb_rewrite_after", "mb_split",
            "mb_isn_conns", "mb_isn_rewritten", "mb_isn_evicted", "mb_isn",
            "mb_nat_conns", "mb_nat_rewritten", "mb_nat_unknown", "mb_nat_arp", "mb_nat_evicted", "mb_nat",
            "mb_coalesced", "mb_coalesce", "mb_coalesce_hold_us", "mb_rewrite_max"]


def test_stats_keys_keep_their_order(emu):
    (line,) = run(emu, ["stats"])
    stats = json.loads(line)
    assert list(stats) == ["a2b", "b2a", "down"]
    for d in ("a2b", "b2a"):
        assert list(stats[d]) == OLD_KEYS + NEW_KEYS


def test_bad_commands_are_errors(emu):
    out = run(emu, ["set a2b mb_strip=bogus", "set a2b mb_strip=all,", "set a2b mb_strip=", "set both mb_mss=70000",
                    "set both mb_mss=-1", "frame a2b 0g", "frame a2b 123", "frame c2d 00", "frame a2b", "stats"])
    assert out[0] == "error: bad value mb_strip=bogus"
    assert out[1:3] == ["ok", "ok"]  # a trailing comma is fine; empty is none
    assert out[3:5] == ["error: bad value mb_mss=70000", "error: bad value mb_mss=-1"]
    assert all(line.startswith("error: frame") for line in out[5:9]), out
    stats = json.loads(out[9])
    assert (stats["a2b"]["mb_strip"], stats["a2b"]["mb_mss"]) == ("none", 0)

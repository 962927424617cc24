"""MPTCP option census of a test's packet captures: what went over the wire. Pure (no files, no
processes): it reads rows of tshark field values -- :mod:`mptcplab.tshark` produces them.

Why: the kernel's socket table (``ss``, subflows.csv) says which subflows a connection *ended up*
with; the packets say how it got there -- one MP_CAPABLE and one MP_JOIN handshake per subflow
or several, the ADD_ADDR that announced the second path and whether it was echoed, DSS mappings
and DATA_FINs, and whether a connection silently fell back to plain TCP (it still moves data, so
goodput alone never shows it).

Inputs. ``census(test, captures)`` takes, for each capture file of the test (one per host
interface, named e.g. ``h1-eth0``), the rows tshark printed for it: one dict per TCP segment with
the fields in :data:`FIELDS`. The MPTCP options are parsed here from the raw option bytes
(``tcp.options``), not from the dissector's per-option fields, because:

- several MPTCP options share one segment (a DSS with an ADD_ADDR, REMOVE_ADDR or MP_PRIO);
  tshark then prints each per-option field as a comma-joined list *of the options that have
  that field*, so ``tcp.options.mptcp.flags`` or ``datalvllen`` cannot be told apart by
  position (MP_CAPABLE's data-level length and DSS's share one field);
- Wireshark 4.0 never shows a DSS checksum (``tcp.options.mptcp.checksum``: its length check
  wants 2 bytes past the checksum), so a DSS checksum is only visible in the option's length;
- the MP_CAPABLE and MP_JOIN forms are defined by their lengths (RFC 8684 3.1, 3.2).

The dissector's ``tcp.options.mptcp.subtype`` list (one value per MPTCP option, in order) is
kept as a cross-check: a segment whose parsed subtypes differ from it, or whose options cannot
be parsed, counts as MALFORMED and contributes no option counts.

Duplicates. When both ends of a link are captured, every segment is in two files (the
sender's interface and the receiver's). A segment is identified by what no network element on
an emulated link changes and what differs between two transmissions: addresses, ports, raw
sequence and acknowledgement numbers, flags, payload length, IPv4 ID and the option bytes (the
TCP timestamp in them changes every millisecond, the IPv4 ID every packet). Within one file
every copy is a transmission of its own (a retransmission with identical bytes is still sent
twice); across files the k-th copy of a key in one file is the k-th copy in another. So each
key is counted max over files of its copies -- once per transmission, also when a lossy link
dropped it before the receiver's capture, with no time window to tune -- and it is dated by
its earliest copy (the sender's).

Subflows are TCP 4-tuples (in either direction); a SYN with a new initial sequence number on a
4-tuple already seen starts a new subflow (port reuse). The *client* (``local``) of a subflow is
the side that sent the SYN, as ``ss`` on the client shows it in subflows.csv. Initial subflows
(MP_CAPABLE SYN) are tied to their joins (MP_JOIN SYN) by the join's token: the top 32 bits of
SHA-256 (v1; SHA-1 in v0) of the key of the host it is sent to, read from the MP_CAPABLE
handshake -- so the initial subflow and its joins may be in different capture files (they are:
one per path).

Fallback to TCP (RFC 8684 3.7), first one per subflow, with its time:

- ``synack-without-mp-capable``: the SYN carried MP_CAPABLE, the SYN/ACK did not;
- ``syn-without-mp-capable``: a retransmitted SYN (same ISN) dropped MP_CAPABLE;
- ``ack-without-mp-capable``: the client's first segment after an MP_CAPABLE SYN/ACK carries
  neither MP_CAPABLE nor DSS;
- ``data-without-dss``: a segment with payload on an established MPTCP subflow carries neither
  DSS nor MP_CAPABLE (not pure ACKs: Linux sends ADD_ADDR and its echo on ACKs without a DSS,
  and a socket in TIME-WAIT has no MPTCP state left to put in its last ACK);
- ``infinite-mapping``: a DSS mapping of data-level length 0.

A connection fell back when any of its subflows did (see :func:`totals`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .mptcp_options import MPTCP_KIND, Handshake, parse_options, token_of_key

#: tshark fields a census needs, one dict key each (``tshark -T fields -e ...``).
FIELDS = (
    "frame.number", "frame.time_epoch",
    "ip.src", "ip.dst", "ip.id", "ipv6.src", "ipv6.dst",
    "tcp.srcport", "tcp.dstport", "tcp.seq_raw", "tcp.ack_raw", "tcp.flags", "tcp.len",
    "tcp.options", "tcp.options.mptcp.subtype",
)

#: Option counters, one column each in options.csv (see :data:`COLUMNS`).
COUNTERS = (
    "MP_CAPABLE_SYN", "MP_CAPABLE_SYNACK", "MP_CAPABLE_ACK", "MP_CAPABLE_DATA",
    "MP_JOIN_SYN", "MP_JOIN_SYNACK", "MP_JOIN_ACK",
    "DSS", "DSS_MAPPING", "DSS_DATA_ACK", "DSS_DATA_FIN", "DSS_CHECKSUM", "DSS_INFINITE_MAPPING",
    "ADD_ADDR", "ADD_ADDR_ECHO", "REMOVE_ADDR", "MP_PRIO", "MP_FAIL", "MP_FASTCLOSE", "MP_TCPRST",
    "MPTCP_OTHER", "MALFORMED",
)

#: options.csv, one row per test x connection x subflow:
#:
#: - test: the test's label;
#: - connection: the client's ``ip:port`` of the connection's initial subflow (subflows.csv's
#:   ``connection``); ``token:XXXXXXXX`` for joins whose connection's handshake was not captured;
#: - mptcp: the connection opened with MP_CAPABLE (or, without a captured SYN, carried MPTCP
#:   options); version: MPTCP version of its MP_CAPABLE (1 = RFC 8684), empty without one;
#: - client_token, server_token: 8 hex digits, from the keys in the MP_CAPABLE handshake
#:   (client_token is ``ss``'s token on the client, subflows.csv's ``token``); empty if unseen;
#: - role: ``initial`` (MP_CAPABLE SYN), ``join`` (MP_JOIN SYN), ``tcp`` (SYN without MPTCP),
#:   ``unknown`` (no SYN captured: local is then the sender of the first segment seen);
#: - local, remote: the subflow's client and server ``ip:port`` (IPv6 as ``[addr]:port``);
#: - address_id, backup: the join SYN's address ID and backup bit (empty for other roles);
#: - first_time, last_time: epoch seconds of its first and last segment;
#: - packets: distinct segments; copies: captured copies of them (packets x files that saw
#:   each); seen_on: capture names (interfaces) that saw it, ``;``-joined;
#: - the :data:`COUNTERS`: MPTCP options in its segments, both directions, each counted once;
#:   ADD_ADDR counts announcements, ADD_ADDR_ECHO their echoes (the two are disjoint);
#:   DSS_MAPPING/DATA_ACK/DATA_FIN/CHECKSUM/INFINITE_MAPPING count DSS options with that part
#:   (each is also in DSS) -- options, not events: Linux repeats a DATA_FIN on the DSS of its
#:   following segments (71 times on one subflow in a 3 s dual-path test); MPTCP_OTHER:
#:   subtypes not listed; MALFORMED: segments whose options could not be parsed or disagree
#:   with the dissector's subtypes (their options are not counted);
#: - fallback, fallback_reason, fallback_time: see the module's docstring;
#: - announced: ADD_ADDR announcements as ``id=addr[:port]``; removed: REMOVE_ADDR IDs.
COLUMNS = (
    "test", "connection", "mptcp", "version", "client_token", "server_token", "role",
    "local", "remote", "address_id", "backup", "first_time", "last_time", "packets", "copies",
    "seen_on", *COUNTERS, "fallback", "fallback_reason", "fallback_time", "announced", "removed",
)

# MPTCP option subtypes (RFC 8684 section 7.4).
MP_CAPABLE, MP_JOIN, DSS, ADD_ADDR, REMOVE_ADDR, MP_PRIO, MP_FAIL, MP_FASTCLOSE, MP_TCPRST = range(9)
_SIMPLE = {REMOVE_ADDR: "REMOVE_ADDR", MP_PRIO: "MP_PRIO", MP_FAIL: "MP_FAIL",
           MP_FASTCLOSE: "MP_FASTCLOSE", MP_TCPRST: "MP_TCPRST"}
FIN, SYN, RST = 0x01, 0x02, 0x04
ACK = 0x10
# DSS flags (RFC 8684 3.3): A data ACK present, a 8-octet ACK, M mapping, m 8-octet DSN, F DATA_FIN.
DSS_A, DSS_A8, DSS_M, DSS_M8, DSS_F = 0x01, 0x02, 0x04, 0x08, 0x10
# ADD_ADDR option lengths (kind and length included) by address family (RFC 8684 3.4.1).
_ADD_ADDR_V4 = {8, 10, 16, 18}
_ADD_ADDR_V6 = {20, 22, 28, 30}


@dataclass(frozen=True)
class MptcpOpt:
    """One MPTCP option: subtype and the bytes after kind and length (``data[0]`` holds the
    subtype). ``length`` is the option's length field (kind and length included)."""

    subtype: int
    data: bytes

    @property
    def length(self) -> int:
        return len(self.data) + 2


@dataclass(frozen=True)
class Segment(Handshake):
    """One captured TCP segment, as one capture file saw it."""

    capture: str
    frame: int
    time: float
    src: str  # "ip:port"
    dst: str
    seq: int
    ack: int
    flags: int
    length: int  # TCP payload bytes
    ip_id: str
    options: str  # raw option bytes, hex
    mptcp: tuple[MptcpOpt, ...]
    malformed: bool

    @property
    def key(self) -> tuple[Any, ...]:
        """What one transmission shares across the captures that saw it (module docstring)."""
        return (self.src, self.dst, self.seq, self.ack, self.flags, self.length, self.ip_id, self.options)

    def has(self, subtype: int) -> bool:
        return any(o.subtype == subtype for o in self.mptcp)


@dataclass(frozen=True)
class Transmission:
    """One segment on the wire: its earliest copy and the captures that saw it."""

    segment: Segment
    seen_on: tuple[str, ...]


def endpoint(ip: str, port: int | str) -> str:
    """``ip:port`` as ``ss`` writes it: IPv6 in brackets."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _last(row: Mapping[str, str], name: str) -> str:
    """A field's value; of a comma-joined list (``-E occurrence=a``), the last one -- the
    innermost header when a packet has several (a tunnel)."""
    value = row.get(name) or ""
    return value.rsplit(",", 1)[-1].strip()


def _int(text: str) -> int:
    return int(text, 0) if text.startswith("0x") else int(text)


def parse_mptcp(raw: bytes) -> tuple[MptcpOpt, ...]:
    """The MPTCP options among a segment's raw TCP options, in order (ValueError if malformed)."""
    out = []
    for kind, data in parse_options(raw):
        if kind == MPTCP_KIND:
            if not data:
                raise ValueError("MPTCP option without a subtype")
            out.append(MptcpOpt(data[0] >> 4, data))
    return tuple(out)


def parse_row(capture: str, row: Mapping[str, str]) -> Segment | None:
    """A tshark row (:data:`FIELDS`) as a :class:`Segment`; None when it is not a TCP segment."""
    src_ip = _last(row, "ipv6.src") or _last(row, "ip.src")
    dst_ip = _last(row, "ipv6.dst") or _last(row, "ip.dst")
    if not (src_ip and dst_ip and _last(row, "tcp.srcport") and _last(row, "tcp.dstport")):
        return None
    hexopts = _last(row, "tcp.options").replace(":", "").lower()
    malformed = False
    try:
        mptcp = parse_mptcp(bytes.fromhex(hexopts))
    except ValueError:
        mptcp, malformed = (), True
    listed = row.get("tcp.options.mptcp.subtype")
    if listed is not None and not malformed:  # the dissector's subtypes, as a cross-check
        if [_int(x) for x in listed.split(",") if x.strip()] != [o.subtype for o in mptcp]:
            mptcp, malformed = (), True
    return Segment(
        capture=capture, frame=_int(_last(row, "frame.number") or "0"),
        time=float(_last(row, "frame.time_epoch") or "0"),
        src=endpoint(src_ip, _last(row, "tcp.srcport")), dst=endpoint(dst_ip, _last(row, "tcp.dstport")),
        seq=_int(_last(row, "tcp.seq_raw") or "0"), ack=_int(_last(row, "tcp.ack_raw") or "0"),
        flags=_int(_last(row, "tcp.flags") or "0"), length=_int(_last(row, "tcp.len") or "0"),
        ip_id=_last(row, "ip.id"), options=hexopts, mptcp=mptcp, malformed=malformed,
    )


def dedupe(captures: Mapping[str, Iterable[Segment]]) -> list[Transmission]:
    """Each transmission once (module docstring), in time order."""
    per_key: dict[tuple[Any, ...], dict[str, list[Segment]]] = {}
    for name, segments in captures.items():
        for s in segments:
            per_key.setdefault(s.key, {}).setdefault(name, []).append(s)
    out = []
    for files in per_key.values():
        for lst in files.values():
            lst.sort(key=lambda s: (s.time, s.frame))
        for k in range(max(len(lst) for lst in files.values())):
            same = [lst[k] for lst in files.values() if len(lst) > k]
            first = min(same, key=lambda s: (s.time, s.capture, s.frame))
            out.append(Transmission(first, tuple(sorted(s.capture for s in same))))
    out.sort(key=lambda t: (t.segment.time, t.segment.capture, t.segment.frame))
    return out


def token(key: bytes, version: int | None) -> int:
    """RFC 8684 3.2 (v1): top 32 bits of SHA-256(key); RFC 6824 (v0): of SHA-1(key)."""
    if version == 0:
        return struct.unpack("!I", hashlib.sha1(key).digest()[:4])[0]
    return token_of_key(key)


@dataclass
class Subflow:
    """What the census learns of one subflow while walking its segments in time order."""

    local: str  # the client (sender of the SYN)
    remote: str
    role: str  # initial / join / tcp / unknown
    syn_seq: int | None
    first_time: float
    last_time: float = 0.0
    packets: int = 0
    copies: int = 0
    seen_on: set[str] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    version: int | None = None
    client_key: bytes | None = None
    server_key: bytes | None = None
    join_token: int | None = None
    address_id: int | None = None
    backup: bool | None = None
    synack_mpc: bool = False  # the SYN/ACK carried MP_CAPABLE: an MPTCP subflow from then on
    synack_join: bool = False
    client_spoke: bool = False  # a non-SYN segment from the client has been seen
    fallback_reason: str | None = None
    fallback_time: float | None = None
    announced: list[str] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)

    def fall_back(self, reason: str, time: float) -> None:
        if self.fallback_reason is None:
            self.fallback_reason, self.fallback_time = reason, time


def _role(seg: Segment) -> str:
    if seg.has(MP_CAPABLE):
        return "initial"
    if seg.has(MP_JOIN):
        return "join"
    return "tcp" if seg.flags & SYN else "unknown"


def _subflow_for(subflows: dict[frozenset[str], list[Subflow]], seg: Segment) -> Subflow:
    """The subflow of a segment; a SYN with a new ISN on a known 4-tuple starts a new one."""
    pair = frozenset((seg.src, seg.dst))
    known = subflows.setdefault(pair, [])
    cur = known[-1] if known else None
    if seg.syn and (cur is None or (cur.syn_seq is not None and cur.syn_seq != seg.seq)):
        cur = None
    if cur is None:
        if seg.synack:  # its SYN was not captured: the SYN/ACK's receiver is the client
            cur = Subflow(seg.dst, seg.src, _role(seg), None, seg.time)
        else:
            cur = Subflow(seg.src, seg.dst, _role(seg), seg.seq if seg.syn else None, seg.time)
        known.append(cur)
    elif seg.syn and cur.syn_seq is None:
        cur.syn_seq = seg.seq
    return cur


def _dss(sf: Subflow, opt: MptcpOpt) -> bool:
    """Count one DSS option; False when its length does not match its flags."""
    if len(opt.data) < 2:
        return False
    flags = opt.data[1]
    size = 4
    if flags & DSS_A:
        size += 8 if flags & DSS_A8 else 4
    dll_at = None
    if flags & DSS_M:
        size += 8 if flags & DSS_M8 else 4
        size += 4  # subflow sequence number
        dll_at = size - 2  # offset in data (kind and length are not in data)
        size += 2  # data-level length
    if opt.length not in (size, size + 2) or (opt.length == size + 2 and not flags & DSS_M):
        return False
    sf.counts["DSS"] += 1
    if flags & DSS_A:
        sf.counts["DSS_DATA_ACK"] += 1
    if flags & DSS_F:
        sf.counts["DSS_DATA_FIN"] += 1
    if dll_at is not None:
        sf.counts["DSS_MAPPING"] += 1
        if opt.length == size + 2:
            sf.counts["DSS_CHECKSUM"] += 1
        if struct.unpack("!H", opt.data[dll_at:dll_at + 2])[0] == 0:
            sf.counts["DSS_INFINITE_MAPPING"] += 1
    return True


def _add_addr(sf: Subflow, opt: MptcpOpt) -> bool:
    d = opt.data
    if opt.length in _ADD_ADDR_V4:
        ip, rest = str(ipaddress.IPv4Address(d[2:6])), opt.length - 8
    elif opt.length in _ADD_ADDR_V6:
        ip, rest = str(ipaddress.IPv6Address(d[2:18])), opt.length - 20
    else:
        return False
    if d[0] & 0x01:  # the E bit: an echo of the peer's announcement
        sf.counts["ADD_ADDR_ECHO"] += 1
        return True
    sf.counts["ADD_ADDR"] += 1
    at = 6 if opt.length in _ADD_ADDR_V4 else 18
    port = struct.unpack("!H", d[at:at + 2])[0] if rest in (2, 10) else None
    where = ip if port is None else endpoint(ip, port)
    sf.announced.append(f"{d[1]}={where}")
    return True


def _options(sf: Subflow, seg: Segment, from_client: bool) -> bool:
    """Count a segment's MPTCP options on its subflow; False if one was malformed."""
    ok = True
    for opt in seg.mptcp:
        d, st = opt.data, opt.subtype
        if st == MP_CAPABLE:
            if len(d) < 2:
                ok = False
                continue
            sf.version = d[0] & 0x0F
            key = d[2:10] if len(d) >= 10 else None
            if seg.syn:
                sf.counts["MP_CAPABLE_SYN"] += 1
                if key:  # v0: the client's key is in the SYN
                    sf.client_key = key
            elif seg.synack:
                sf.counts["MP_CAPABLE_SYNACK"] += 1
                if key:
                    sf.server_key = key
            else:
                sf.counts["MP_CAPABLE_DATA" if len(d) >= 20 else "MP_CAPABLE_ACK"] += 1
                if len(d) >= 18:  # sender's key, then receiver's
                    sender, receiver = d[2:10], d[10:18]
                    sf.client_key, sf.server_key = (sender, receiver) if from_client else (receiver, sender)
        elif st == MP_JOIN:
            if seg.syn:
                sf.counts["MP_JOIN_SYN"] += 1
                if len(d) >= 6:
                    sf.join_token = struct.unpack("!I", d[2:6])[0]
                    sf.address_id, sf.backup = d[1], bool(d[0] & 0x01)
            elif seg.synack:
                sf.counts["MP_JOIN_SYNACK"] += 1
            else:
                sf.counts["MP_JOIN_ACK"] += 1
        elif st == DSS:
            ok = _dss(sf, opt) and ok
        elif st == ADD_ADDR:
            ok = _add_addr(sf, opt) and ok
        elif st in _SIMPLE:
            sf.counts[_SIMPLE[st]] += 1
            if st == REMOVE_ADDR:
                sf.removed.extend(d[1:])
        else:
            sf.counts["MPTCP_OTHER"] += 1
    return ok


def _fallback(sf: Subflow, seg: Segment, from_client: bool, infinite_before: int) -> None:
    """Apply the fallback rules of the module's docstring to one segment."""
    if seg.malformed or sf.role not in ("initial", "join"):
        return
    mpc, dss = seg.has(MP_CAPABLE), seg.has(DSS)
    if sf.role == "initial" and seg.syn and not mpc and sf.counts["MP_CAPABLE_SYN"]:
        sf.fall_back("syn-without-mp-capable", seg.time)
    elif sf.role == "initial" and seg.synack:
        if mpc:
            sf.synack_mpc = True
        else:
            sf.fall_back("synack-without-mp-capable", seg.time)
    elif sf.role == "join" and seg.synack and seg.has(MP_JOIN):
        sf.synack_join = True
    if seg.flags & (SYN | RST):
        return
    established = sf.synack_mpc or sf.synack_join
    if from_client and not sf.client_spoke:
        sf.client_spoke = True
        if sf.synack_mpc and not mpc and not dss:
            sf.fall_back("ack-without-mp-capable", seg.time)
    if established and seg.length > 0 and not mpc and not dss:
        sf.fall_back("data-without-dss", seg.time)
    if sf.counts["DSS_INFINITE_MAPPING"] > infinite_before:
        sf.fall_back("infinite-mapping", seg.time)


def subflows(transmissions: Iterable[Transmission]) -> list[Subflow]:
    """Walk the segments in time order; the subflows they make, in order of their first segment."""
    by_pair: dict[frozenset[str], list[Subflow]] = {}
    order: list[Subflow] = []
    for t in transmissions:
        seg = t.segment
        sf = _subflow_for(by_pair, seg)
        if sf.packets == 0:
            order.append(sf)
        if sf.role == "unknown" and seg.mptcp:  # no SYN captured: what its options say
            sf.role = "join" if seg.has(MP_JOIN) else sf.role
        from_client = seg.src == sf.local
        sf.packets += 1
        sf.copies += len(t.seen_on)
        sf.seen_on.update(t.seen_on)
        sf.last_time = max(sf.last_time, seg.time)
        infinite = sf.counts["DSS_INFINITE_MAPPING"]
        if seg.malformed or not _options(sf, seg, from_client):
            sf.counts["MALFORMED"] += 1
        _fallback(sf, seg, from_client, infinite)
    return order


def _hex(n: int | None) -> str:
    return "" if n is None else f"{n:08x}"


def census(test: str, captures: Mapping[str, Iterable[Mapping[str, str]]]) -> list[dict[str, Any]]:
    """options.csv rows (:data:`COLUMNS`) of one test, from the tshark rows of each of its
    capture files (``{capture name: rows}``, the name being e.g. the interface ``h1-eth0``)."""
    segments = {name: [s for s in (parse_row(name, r) for r in rows) if s is not None]
                for name, rows in captures.items()}
    flows = subflows(dedupe(segments))

    # Connections: an initial (or TCP, or unknown) subflow opens one; joins find theirs by token.
    conn_of: dict[int, str] = {}
    info: dict[str, dict[str, Any]] = {}
    tokens: dict[int, str] = {}
    reused: Counter[str] = Counter()
    for sf in flows:
        if sf.role == "join":
            continue
        reused[sf.local] += 1  # the same client ip:port again (port reuse): name#2, #3, ...
        name = sf.local if reused[sf.local] == 1 else f"{sf.local}#{reused[sf.local]}"
        conn_of[id(sf)] = name
        ctok = token(sf.client_key, sf.version) if sf.client_key else None
        stok = token(sf.server_key, sf.version) if sf.server_key else None
        info[name] = {"mptcp": sf.role == "initial" or any(sf.counts[c] for c in COUNTERS if c != "MALFORMED"),
                      "version": sf.version, "client_token": _hex(ctok), "server_token": _hex(stok)}
        for tok in (ctok, stok):
            if tok is not None:
                tokens.setdefault(tok, name)
    for sf in flows:
        if sf.role == "join":
            tok = sf.join_token
            name = tokens.get(tok) if tok is not None else None
            if name is None:
                name = f"token:{_hex(tok)}" if tok is not None else f"token:?{sf.local}"
                info.setdefault(name, {"mptcp": True, "version": None, "client_token": "",
                                       "server_token": _hex(tok)})
            conn_of[id(sf)] = name

    first_of: dict[str, float] = {}
    for sf in flows:
        first_of.setdefault(conn_of[id(sf)], sf.first_time)
    flows.sort(key=lambda sf: (first_of[conn_of[id(sf)]], sf.first_time))
    rows = []
    for sf in flows:
        name = conn_of[id(sf)]
        rows.append({
            "test": test, "connection": name, **info[name], "role": sf.role,
            "local": sf.local, "remote": sf.remote,
            "address_id": sf.address_id if sf.role == "join" else None,
            "backup": sf.backup if sf.role == "join" else None,
            "first_time": sf.first_time, "last_time": sf.last_time, "packets": sf.packets,
            "copies": sf.copies, "seen_on": ";".join(sorted(sf.seen_on)),
            **{c: sf.counts[c] for c in COUNTERS},
            "fallback": sf.fallback_reason is not None, "fallback_reason": sf.fallback_reason or "",
            "fallback_time": sf.fallback_time, "announced": ";".join(sf.announced),
            "removed": ";".join(str(i) for i in sf.removed),
        })
    return rows


def totals(rows: Iterable[Mapping[str, Any]], by: tuple[str, ...] = ("test",)) -> list[dict[str, Any]]:
    """Sums of options.csv rows grouped by ``by`` -- per test (the default) or per connection
    (``by=("test", "connection")``): the counters and packets summed, plus connections,
    mptcp_connections, subflows, joins, fallbacks (connections with a subflow that fell back)
    and first_fallback_time."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    out = []
    for key, rs in groups.items():
        conns = {r["connection"] for r in rs}
        fell = {r["connection"] for r in rs if r["fallback"]}
        times = [r["fallback_time"] for r in rs if r["fallback"] and r["fallback_time"] is not None]
        out.append({
            **dict(zip(by, key)), "connections": len(conns),
            "mptcp_connections": len({r["connection"] for r in rs if r["mptcp"]}),
            "subflows": len(rs), "joins": sum(r["role"] == "join" for r in rs),
            "fallbacks": len(fell), "first_fallback_time": min(times) if times else None,
            "packets": sum(r["packets"] for r in rs), **{c: sum(r[c] for r in rs) for c in COUNTERS},
        })
    return out


# --------------------------------------------------------------------------- wire vs ss


def _endpoint_key(text: str) -> tuple[str, int]:
    """``ip:port`` (``[v6]:port``, ``ip%dev:port`` as ss may print it) -> (canonical ip, port)."""
    host, _, port = text.strip().rpartition(":")
    host = host.strip("[]").split("%", 1)[0]
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip), int(port)


@dataclass(frozen=True)
class SubflowCheck:
    """The expected (local, remote) pairs seen on the wire, those missing from it, and wire
    subflows nobody expected; pairs as given (expected) or as on the wire (unexpected)."""

    seen: list[tuple[str, str]]
    missing: list[tuple[str, str]]
    unexpected: list[tuple[str, str]]


def compare_subflows(rows: Iterable[Mapping[str, Any]], expected: Iterable[tuple[str, str]],
                     connections: Iterable[str] | None = None) -> SubflowCheck:
    """The subflows of options.csv ``rows`` against ``expected`` (local, remote) ``ip:port``
    pairs, e.g. subflows.csv's from ``ss``. Orientation does not matter (``ss`` on the server
    sees them reversed). Wire subflows of ``connections`` (default: of every connection) that
    nobody expected are ``unexpected`` -- pass subflows.csv's connections to leave out the
    subflows of iperf3's control connection, which subflows.csv does not record."""
    keep = None if connections is None else set(connections)
    wire = [r for r in rows if keep is None or r["connection"] in keep]
    wire_keys = {frozenset((_endpoint_key(r["local"]), _endpoint_key(r["remote"]))): (r["local"], r["remote"])
                 for r in wire}
    seen, missing, matched = [], [], set()
    for local, remote in expected:
        k = frozenset((_endpoint_key(local), _endpoint_key(remote)))
        (seen if k in wire_keys else missing).append((local, remote))
        matched.add(k)
    unexpected = [pair for k, pair in wire_keys.items() if k not in matched]
    return SubflowCheck(seen, missing, unexpected)

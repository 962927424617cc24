"""tracebox: what the path did to a TCP SYN, hop by hop. Pure (bytes in, findings out).

A router that drops a probe for its TTL quotes the packet *as it reached that router* in its
ICMP time exceeded (Linux quotes up to 576 bytes: the whole IP and TCP header, options
included). Comparing each quote with the SYN that was sent says what the path changed before
that hop; comparing consecutive hops says where: a change first seen in hop k's quote happened
between hop k-1 and hop k (Detal et al., "Revealing middlebox interference with tracebox",
IMC 2013). The probe itself (mptcplab.probe) runs in the source host; this module only reads
the bytes it recorded.

Ignored on purpose: TTL (decremented on the way by design), IP ID, total length and the
checksums (they follow any change), NOP/EOL padding (a box that overwrites an option with NOPs
is reported as having removed that option).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

MPTCP_KIND = 30
OPTION_NAMES = {2: "MSS", 3: "window scale", 4: "SACK-permitted", 5: "SACK", 8: "timestamps", 34: "TFO"}
MPTCP_SUBTYPES = {0: "MP_CAPABLE", 1: "MP_JOIN", 2: "DSS", 3: "ADD_ADDR", 4: "REMOVE_ADDR", 5: "MP_PRIO",
                  6: "MP_FAIL", 7: "MP_FASTCLOSE", 8: "MP_TCPRST"}
FLAG_NAMES = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")  # bit 0 first
PADDING = (0, 1)  # EOL, NOP


@dataclass(frozen=True)
class Option:
    kind: int
    data: bytes  # after kind and length

    @property
    def name(self) -> str:
        if self.kind == MPTCP_KIND and self.data:
            return MPTCP_SUBTYPES.get(self.data[0] >> 4, f"MPTCP subtype {self.data[0] >> 4}")
        return OPTION_NAMES.get(self.kind, f"option {self.kind}")

    def value(self) -> str:
        """The option's value in words, for '-> ' messages."""
        if self.kind == 2 and len(self.data) == 2:
            return str(struct.unpack("!H", self.data)[0])
        if self.kind == 3 and len(self.data) == 1:
            return str(self.data[0])
        if self.kind == MPTCP_KIND and self.data:
            flags = f", flags 0x{self.data[1]:02x}" if len(self.data) > 1 else ""
            return f"v{self.data[0] & 0x0f}{flags}, {len(self.data) + 2} bytes"
        return self.data.hex() or "(empty)"


@dataclass(frozen=True)
class Headers:
    """IPv4 and TCP header fields of one packet (sent, or quoted by a router). ``tcp`` holds
    what the bytes reach (a short quote: ports and seq only); ``options`` is None when the quote
    ends before the TCP options do."""

    ip: dict[str, Any]
    tcp: dict[str, int]
    options: tuple[Option, ...] | None


def parse_options(raw: bytes) -> tuple[Option, ...] | None:
    out = []
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind == 0:
            break
        if kind == 1:
            out.append(Option(1, b""))
            i += 1
            continue
        if i + 1 >= len(raw) or raw[i + 1] < 2 or i + raw[i + 1] > len(raw):
            return None  # malformed: not comparable
        out.append(Option(kind, raw[i + 2:i + raw[i + 1]]))
        i += raw[i + 1]
    return tuple(out)


def parse(raw: bytes) -> Headers:
    """IPv4 + TCP headers from the start of ``raw`` (ValueError when it is not IPv4/TCP)."""
    if len(raw) < 20 or raw[0] >> 4 != 4:
        raise ValueError("not an IPv4 header")
    ihl = (raw[0] & 0x0f) * 4
    tos, _length, ident, _frag, ttl, proto = struct.unpack("!BHHHBB", raw[1:10])
    ip = {"src": ".".join(map(str, raw[12:16])), "dst": ".".join(map(str, raw[16:20])), "tos": tos, "id": ident,
          "ttl": ttl, "proto": proto}
    if proto != 6:
        raise ValueError(f"not TCP (protocol {proto})")
    t = raw[ihl:]
    tcp: dict[str, int] = {}
    if len(t) >= 8:
        tcp.update(zip(("sport", "dport", "seq"), struct.unpack("!HHI", t[:8])))
    if len(t) >= 20:
        ack, off_flags, window, _csum, urgent = struct.unpack("!IHHHH", t[8:20])
        tcp.update(ack=ack, offset=off_flags >> 12, flags=off_flags & 0x0fff, window=window, urgent=urgent)
    options = None
    if "offset" in tcp and len(t) >= tcp["offset"] * 4:
        options = parse_options(t[20:tcp["offset"] * 4])
    return Headers(ip, tcp, options)


def flag_text(flags: int) -> str:
    """SYN, SYN/ACK, RST/ACK, ..."""
    return "/".join(c for k, c in enumerate(FLAG_NAMES) if flags & (1 << k)) or "none"


#: Fields compared, with how they are named in a change.
IP_FIELDS = {"src": "IP source", "dst": "IP destination", "tos": "IP ToS"}
TCP_FIELDS = {"sport": "source port", "dport": "destination port", "seq": "sequence number",
              "ack": "acknowledgment number", "offset": "TCP data offset", "flags": "TCP flags",
              "window": "TCP window", "urgent": "urgent pointer"}


def diff(sent: Headers, got: Headers) -> list[str]:
    """What changed from ``sent`` to ``got``, one phrase each ('MSS 1460 -> 1200', 'MP_CAPABLE
    removed'); fields the quote does not reach are not compared."""
    out = []
    for k, name in IP_FIELDS.items():
        if sent.ip[k] != got.ip[k]:
            out.append(f"{name} {_show(k, sent.ip[k])} -> {_show(k, got.ip[k])}")
    for k, name in TCP_FIELDS.items():
        if k in sent.tcp and k in got.tcp and sent.tcp[k] != got.tcp[k]:
            # sequence numbers: a randomising box draws an offset per connection, i.e. per probe;
            # named without values so that the same change reads the same at every later hop
            out.append(f"{name} changed" if k in ("seq", "ack") else
                       f"{name} {_show(k, sent.tcp[k])} -> {_show(k, got.tcp[k])}")
    if sent.options is not None and got.options is not None:
        out += _option_changes(sent.options, got.options)
    return out


def _show(key: str, v: Any) -> str:
    if key == "flags":
        return flag_text(v)
    if key == "tos":
        return f"0x{v:02x}"
    return str(v)


def _option_changes(sent: tuple[Option, ...], got: tuple[Option, ...]) -> list[str]:
    out = []
    before = [o for o in sent if o.kind not in PADDING]
    after = [o for o in got if o.kind not in PADDING]
    names = list(dict.fromkeys(o.name for o in before + after))
    for name in names:
        a = [o for o in before if o.name == name]
        b = [o for o in after if o.name == name]
        for x, y in zip(a, b):
            if x != y:
                out.append(f"{name} {x.value()} -> {y.value()}")
        out += [f"{name} removed" for _ in a[len(b):]]
        out += [f"{name} added ({y.value()})" for y in b[len(a):]]
    if [o.name for o in before if o.name in {p.name for p in after}] != \
            [o.name for o in after if o.name in {p.name for p in before}]:
        out.append("options reordered")
    return out


# --------------------------------------------------------------------------- hops


@dataclass
class Hop:
    """One TTL's answer: ``kind`` is time-exceeded, synack, rst, other or none (no answer: '*')."""

    ttl: int
    kind: str
    address: str | None = None
    rtt_ms: float | None = None
    changes: list[str] = field(default_factory=list)       # quoted vs sent
    new: list[str] = field(default_factory=list)           # first seen at this hop
    undone: list[str] = field(default_factory=list)        # seen before, gone here
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ttl": self.ttl, "kind": self.kind, "address": self.address, "rtt_ms": self.rtt_ms,
                "changes": self.changes, "new": self.new, "undone": self.undone, "note": self.note}


@dataclass
class Trace:
    src: str
    dst: str
    dport: int
    hops: list[Hop]
    sent_options: list[str] = field(default_factory=list)

    def findings(self) -> list[str]:
        """Where each change first appeared: 'between hop 2 (10.0.2.253) and hop 3 (10.0.3.253):
        MP_CAPABLE removed'."""
        out = []
        prev: Hop | None = None
        for h in self.hops:
            if h.new or h.undone:
                start = f"hop {prev.ttl} ({prev.address})" if prev else f"the source ({self.src})"
                what = h.new + [f"{c} undone" for c in h.undone]
                out.append(f"between {start} and hop {h.ttl} ({h.address}): {'; '.join(what)}")
            if h.kind == "time-exceeded" and h.note == "":
                prev = h
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "dport": self.dport, "sent_options": self.sent_options,
                "hops": [h.to_dict() for h in self.hops], "findings": self.findings()}


def answer_text(hex_bytes: str) -> str:
    """The destination's answer in a few words: its flags and options ('SYN/ACK: MSS 1460, ...')."""
    try:
        a = parse(bytes.fromhex(hex_bytes))
    except ValueError as e:
        return f"answer not parsed: {e}"
    opts = [o.name + (f" {o.value()}" if o.kind in (2, 3, MPTCP_KIND) else "") for o in a.options or ()
            if o.kind not in PADDING]
    return f"{flag_text(a.tcp.get('flags', 0))}" + (f": {', '.join(opts)}" if opts else "")


def analyse(probe: dict[str, Any]) -> Trace:
    """The probe's JSON (mptcplab.probe) -> per hop what changed since the last hop that quoted
    the probe. Each TTL's probe is compared with the quote of that same probe (they differ in
    TTL and sequence number only)."""
    hops = []
    seen: list[str] | None = []  # changes at the last comparable hop ([] at the source)
    sent_options: list[str] = []
    for p in probe["hops"]:
        h = Hop(p["ttl"], p["kind"], p.get("address"), p.get("rtt_ms"))
        sent = parse(bytes.fromhex(p["sent"]))
        if not sent_options and sent.options:
            sent_options = [o.name + (f" {o.value()}" if o.kind in (2, 3, MPTCP_KIND) else "") for o in sent.options
                            if o.kind not in PADDING]
        if p["kind"] == "time-exceeded" and p.get("quote"):
            try:
                got = parse(bytes.fromhex(p["quote"]))
            except ValueError as e:
                h.note = f"quote not comparable: {e}"
            else:
                h.changes = diff(sent, got)
                if got.options is None:
                    h.note = "the quote ends before the TCP options"
                elif seen is not None:
                    h.new = [c for c in h.changes if c not in seen]
                    h.undone = [c for c in seen if c not in h.changes]
                if got.options is not None:
                    seen = h.changes
        elif p["kind"] in ("synack", "rst") and p.get("answer"):
            h.note = answer_text(p["answer"])
        hops.append(h)
    return Trace(probe["src"], probe["dst"], probe["dport"], hops, sent_options)

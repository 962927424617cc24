"""MPTCP options read from raw TCP bytes (RFC 8684, MPTCP v1) -- no POX, no Mininet.

Why our own parser: POX 0.8's TCP parser rejects the v1 MP_CAPABLE option in SYNs, and no
public POX module understands v1 (the one found reads the key from the SYN, as only v0 sent it).

What a controller needs to tie subflows to connections:
- the SYN of a new connection carries MP_CAPABLE without a key (v1);
- the SYN/ACK carries MP_CAPABLE with the *server's* key; the token is the top 32 bits of
  SHA-256(key);
- a new subflow's SYN carries MP_JOIN with the token of the receiver's (server's) key.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

MPTCP_KIND = 30
MP_CAPABLE, MP_JOIN = 0, 1
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


class Handshake:
    """``syn`` / ``synack`` of anything with TCP ``flags`` (a parsed segment, a captured one)."""

    flags: int

    @property
    def syn(self) -> bool:
        return bool(self.flags & SYN) and not self.flags & ACK

    @property
    def synack(self) -> bool:
        return bool(self.flags & SYN) and bool(self.flags & ACK)


@dataclass(frozen=True)
class TcpSegment(Handshake):
    sport: int
    dport: int
    flags: int
    options: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True)
class MpCapable:
    version: int
    sender_key: bytes | None   # in SYN/ACK and third ACK (v1); absent in the SYN
    receiver_key: bytes | None  # in the third ACK

    @property
    def sender_token(self) -> int | None:
        return token_of_key(self.sender_key) if self.sender_key else None


@dataclass(frozen=True)
class MpJoin:
    token: int | None  # the receiver's token (SYN only)
    address_id: int
    backup: bool


def token_of_key(key: bytes) -> int:
    """RFC 8684 3.2: the token is the most significant 32 bits of SHA-256(key)."""
    return struct.unpack("!I", hashlib.sha256(key).digest()[:4])[0]


def parse_options(raw: bytes) -> tuple[tuple[int, bytes], ...]:
    """(kind, data) of each TCP option in the options area ``raw`` (no-ops skipped, stops at
    end-of-options); ValueError on a truncated option or a length that runs past ``raw``."""
    opts = []
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind == 0:  # end of options
            break
        if kind == 1:  # no-op
            i += 1
            continue
        if i + 1 >= len(raw):
            raise ValueError("truncated option")
        length = raw[i + 1]
        if length < 2 or i + length > len(raw):
            raise ValueError(f"bad length {length} of option {kind}")
        opts.append((kind, bytes(raw[i + 2:i + length])))
        i += length
    return tuple(opts)


def parse_tcp(segment: bytes) -> TcpSegment:
    """Ports, flags and options of a raw TCP header (the payload may follow)."""
    if len(segment) < 20:
        raise ValueError("shorter than a TCP header")
    sport, dport, _seq, _ack, off_flags = struct.unpack("!HHIIH", segment[:14])
    header_len = (off_flags >> 12) * 4
    if header_len < 20 or header_len > len(segment):
        raise ValueError(f"bad TCP data offset {header_len}")
    opts = parse_options(segment[20:header_len])
    return TcpSegment(sport, dport, off_flags & 0x3F, opts)


def mptcp_option(seg: TcpSegment) -> MpCapable | MpJoin | None:
    """The MP_CAPABLE or MP_JOIN option of a segment, if it has one."""
    for kind, data in seg.options:
        if kind != MPTCP_KIND or not data:
            continue
        subtype = data[0] >> 4
        if subtype == MP_CAPABLE:
            version = data[0] & 0x0F
            body = data[2:]  # after subtype/version and flags
            sender = body[0:8] if len(body) >= 8 else None
            receiver = body[8:16] if len(body) >= 16 else None
            return MpCapable(version, sender, receiver)
        if subtype == MP_JOIN:
            backup = bool(data[0] & 0x01)
            address_id = data[1] if len(data) > 1 else 0
            token = struct.unpack("!I", data[2:6])[0] if seg.syn and len(data) >= 10 else None
            return MpJoin(token, address_id, backup)
    return None

"""The tracebox probe, run inside the source host's namespace: one TCP SYN per TTL, answers as JSON.

``python -m mptcplab.probe --src A --dst B --dport P --max-ttl N --timeout S`` (an argument list
started by the node's popen; it prints one JSON object on stdout and nothing else). Each SYN
carries what a Linux MPTCP client's SYN does -- MSS 1460, SACK-permitted, timestamps, window
scale and MP_CAPABLE v1 (kind 30, length 4: subtype 0, version 1, flags 0x81; RFC 8684) -- so
that a router's ICMP time exceeded quotes it as far as that router, and the destination's
SYN/ACK or RST ends the trace. The source port is taken from the kernel and kept bound (never
listening) while probing: nothing else can use it, and the kernel resets the destination's
SYN/ACK, which is what we want.

Needs scapy and CAP_NET_RAW (root in the namespace).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import socket
import sys
import time
from typing import Any

#: MP_CAPABLE of a v1 SYN: subtype 0 / version 1, flags A (checksum) | H (HMAC-SHA256).
MP_CAPABLE_SYN = bytes([0x01, 0x81])


def syn(src: str, dst: str, sport: int, dport: int, ttl: int, seq: int, tsval: int | None = None) -> Any:
    from scapy.layers.inet import IP, TCP

    tsval = int(time.time() * 1000) & 0xFFFFFFFF if tsval is None else tsval
    options = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (tsval, 0)),
               ("NOP", None), ("WScale", 7), (30, MP_CAPABLE_SYN)]
    return IP(src=src, dst=dst, ttl=ttl, id=0x7100 + ttl) / TCP(sport=sport, dport=dport, flags="S", seq=seq,
                                                                 window=64240, options=options)


def _raw(p: Any) -> bytes:
    return bytes(getattr(p, "original", None) or bytes(p))


def classify(answer: Any, dst: str) -> tuple[str, bytes | None, bytes | None]:
    """(kind, quoted bytes, answer's own IP+TCP bytes) of one answer."""
    from scapy.layers.inet import ICMP, IP, TCP

    raw = _raw(answer)
    if answer.haslayer(ICMP):
        icmp = answer[ICMP]
        quote = raw[(raw[0] & 0x0f) * 4 + 8:]
        if icmp.type == 11:
            return "time-exceeded", quote, None
        return f"icmp {icmp.type}/{icmp.code}", quote, None
    if answer.haslayer(TCP) and answer[IP].src == dst:
        flags = int(answer[TCP].flags)
        if flags & 0x04:
            return "rst", None, raw
        if flags & 0x12 == 0x12:
            return "synack", None, raw
    return "other", None, raw


def trace(src: str, dst: str, dport: int, max_ttl: int, timeout: float) -> dict[str, Any]:
    from scapy.config import conf
    from scapy.sendrecv import sr
    from scapy.supersocket import L3RawSocket

    conf.L3socket = L3RawSocket  # the kernel routes and resolves next hops (the host's own tables)
    conf.verb = 0
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind((src, 0))  # bound, never listening: our source port, unused by anything else
    sport = holder.getsockname()[1]
    hops = []
    try:
        base = random.randrange(1 << 31)
        for ttl in range(1, max_ttl + 1):
            probe = syn(src, dst, sport, dport, ttl, base + ttl * 1000)
            sent = bytes(probe)
            answered, _ = sr(probe, timeout=timeout, verbose=0)
            hop: dict[str, Any] = {"ttl": ttl, "sent": sent.hex(), "kind": "none"}
            if answered:
                out, answer = answered[0]
                kind, quote, own = classify(answer, dst)
                hop.update(kind=kind, address=answer.src, rtt_ms=round((answer.time - out.sent_time) * 1e3, 3),
                           quote=quote.hex() if quote else None, answer=own.hex() if own else None)
            hops.append(hop)
            if hop["kind"] in ("synack", "rst") or hop["kind"].startswith("icmp "):
                break
    finally:
        holder.close()
    return {"src": src, "dst": dst, "dport": dport, "sport": sport, "hops": hops}


#: IPPROTO_MPTCP (Linux): a listener the destination answers with MP_CAPABLE from.
IPPROTO_MPTCP = 262


def listen(address: str, port: int, seconds: float) -> None:
    """An MPTCP listener (plain TCP where MPTCP is off), so that the destination answers the
    last probe with a SYN/ACK whose options say what it saw; stopped by its PID (or after
    ``seconds``). It never accepts: the probe's source resets the half-open connection."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    except OSError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(16)
    print("listening", flush=True)
    time.sleep(seconds)
    sock.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mptcplab.probe", description=__doc__.split("\n")[0])
    ap.add_argument("--listen", type=ipaddress.IPv4Address, help="listen on this address and --dport instead")
    ap.add_argument("--src", type=ipaddress.IPv4Address)
    ap.add_argument("--dst", type=ipaddress.IPv4Address)
    ap.add_argument("--dport", type=int, default=5201)
    ap.add_argument("--max-ttl", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=2.0)
    a = ap.parse_args(argv)
    if not (1 <= a.dport <= 65535 and 1 <= a.max_ttl <= 64 and 0 < a.timeout <= 30):
        ap.error("--dport 1..65535, --max-ttl 1..64, --timeout 0..30 s")
    if a.listen is not None:
        listen(str(a.listen), a.dport, 600)
        return 0
    if a.src is None or a.dst is None:
        ap.error("--src and --dst are required (or --listen)")
    json.dump(trace(str(a.src), str(a.dst), a.dport, a.max_ttl, a.timeout), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

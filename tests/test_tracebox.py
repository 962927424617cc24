"""tracebox: the diff of sent and quoted headers on crafted packets (scapy, no network), the command's
bad input, and on a real routed network (root) the hop where a middlebox strips MP_CAPABLE or
clamps the MSS."""

import json

import pytest
import yaml
from scapy.layers.inet import IP, TCP

from helpers import cli
from mptcplab.probe import syn
from mptcplab.tracebox import Trace, analyse, diff, parse

SRC, DST = "10.0.1.1", "10.0.5.1"
HOPS = ["10.0.1.254", "10.0.2.253", "10.0.3.253", "10.0.4.253"]


def sent(ttl: int = 1) -> bytes:
    return bytes(syn(SRC, DST, 40000, 5201, ttl, 1000 + ttl, tsval=77))


def as_quoted(raw: bytes, options=None, **fields) -> bytes:
    """The packet as a router further on saw it: TTL 1, options and fields rewritten (checksums
    made right again, as a middlebox does)."""
    p = IP(raw)
    p.ttl = 1
    tcp = p[TCP]
    if options is not None:
        tcp.options = options
    for k, v in fields.items():
        setattr(tcp if hasattr(tcp, k) and k not in ("src", "dst", "tos") else p, k, v)
    del p.chksum, tcp.chksum, p.len, tcp.dataofs
    return bytes(p)


def opts(raw: bytes) -> list:
    return list(IP(raw)[TCP].options)


def stripped(raw: bytes) -> list:
    """MPTCP options overwritten with NOPs, lengths kept (what the emulator's strip_mptcp does)."""
    return [o if o[0] != 30 else ("NOP", None) for o in opts(raw)] + [("NOP", None)] * 3


def clamped(raw: bytes, mss: int) -> list:
    return [("MSS", mss) if o[0] == "MSS" else o for o in opts(raw)]


def test_the_probe_sends_what_a_linux_mptcp_client_sends():
    h = parse(sent())
    assert [(o.kind, o.data.hex()) for o in h.options if o.kind != 1][:2] == [(2, "05b4"), (4, "")]
    names = [o.name for o in h.options if o.kind != 1]
    assert names == ["MSS", "SACK-permitted", "timestamps", "window scale", "MP_CAPABLE"]
    mpc = next(o for o in h.options if o.kind == 30)
    assert mpc.data == bytes([0x01, 0x81]) and mpc.value() == "v1, flags 0x81, 4 bytes"   # RFC 8684 SYN
    assert h.tcp["flags"] == 0x02 and h.tcp["offset"] * 4 == 20 + 24


def test_an_untouched_quote_shows_no_change():
    assert diff(parse(sent()), parse(as_quoted(sent()))) == []      # TTL, checksums and length ignored


def test_changed_fields_and_options_are_named():
    s = sent()
    assert diff(parse(s), parse(as_quoted(s, stripped(s)))) == ["MP_CAPABLE removed"]
    assert diff(parse(s), parse(as_quoted(s, clamped(s, 1200)))) == ["MSS 1460 -> 1200"]
    got = parse(as_quoted(s, [o for o in opts(s) if o[0] not in ("WScale", "NOP")], sport=40001, window=1000, tos=4))
    assert diff(parse(s), got) == ["IP ToS 0x00 -> 0x04", "source port 40000 -> 40001", "TCP data offset 11 -> 10",
                                   "TCP window 64240 -> 1000", "window scale removed"]
    added = parse(as_quoted(s, opts(s)[:-1] + [(30, bytes([0x01, 0x01]))]))
    assert diff(parse(s), added) == ["MP_CAPABLE v1, flags 0x81, 4 bytes -> v1, flags 0x01, 4 bytes"]


def test_a_short_quote_compares_what_it_reaches():
    """RFC 792 routers quote 8 bytes of TCP: ports and sequence number, no options."""
    s = sent()
    short = as_quoted(s, sport=1234)[:28]
    h = parse(short)
    assert h.options is None and "window" not in h.tcp
    assert diff(parse(s), h) == ["source port 40000 -> 1234"]


def probe_json(quotes: dict[int, bytes | None], end: str = "synack") -> dict:
    hops = []
    for ttl in range(1, len(HOPS) + 1):
        s = sent(ttl)
        q = quotes.get(ttl, as_quoted(s))
        hops.append({"ttl": ttl, "sent": s.hex(), "kind": "none" if q is None else "time-exceeded",
                     **({} if q is None else {"address": HOPS[ttl - 1], "rtt_ms": 1.0 * ttl, "quote": q.hex()})})
    answer = bytes(IP(src=DST, dst=SRC) / TCP(sport=5201, dport=40000, flags="SA", options=[("MSS", 1460)]))
    hops.append({"ttl": len(HOPS) + 1, "sent": sent(5).hex(), "kind": end, "address": DST, "rtt_ms": 5.0,
                 "answer": answer.hex()})
    return {"src": SRC, "dst": DST, "dport": 5201, "hops": hops}


def test_the_hop_where_a_change_first_appears_is_named():
    s3, s4 = sent(3), sent(4)
    trace = analyse(probe_json({3: as_quoted(s3, stripped(s3)), 4: as_quoted(s4, stripped(s4))}))
    assert [h.new for h in trace.hops] == [[], [], ["MP_CAPABLE removed"], [], []]
    assert trace.findings() == ["between hop 2 (10.0.2.253) and hop 3 (10.0.3.253): MP_CAPABLE removed"]
    assert trace.hops[-1].note == "SYN/ACK: MSS 1460"
    d = trace.to_dict()
    assert d["findings"] == trace.findings() and d["hops"][2]["changes"] == ["MP_CAPABLE removed"]
    assert "MP_CAPABLE v1, flags 0x81, 4 bytes" in d["sent_options"]


def test_a_silent_hop_moves_the_blame_to_the_last_hop_that_answered():
    s3, s4 = sent(3), sent(4)
    trace = analyse(probe_json({2: None, 3: as_quoted(s3, clamped(s3, 1200)), 4: as_quoted(s4, clamped(s4, 1200))}))
    assert trace.findings() == ["between hop 1 (10.0.1.254) and hop 3 (10.0.3.253): MSS 1460 -> 1200"]


def test_a_change_undone_further_on_is_reported():
    s2 = sent(2)
    trace = analyse(probe_json({2: as_quoted(s2, clamped(s2, 1200))}))
    assert trace.findings() == ["between hop 1 (10.0.1.254) and hop 2 (10.0.2.253): MSS 1460 -> 1200",
                                "between hop 2 (10.0.2.253) and hop 3 (10.0.3.253): MSS 1460 -> 1200 undone"]
    assert isinstance(trace, Trace)


def test_bad_input_exits_2_naming_the_option(tmp_path):
    r = cli("mptcplab", "tracebox", "routed-chain", "--from", "h1", "--to", "h7")
    assert r.returncode == 2 and "--to: 'h7' is not a host of the topology (hosts: h1, h2)" in r.stderr, r.stderr
    r = cli("mptcplab", "tracebox", "routed-chain", "--from", "h1", "--to", "h2", "--max-ttl", "0")
    assert r.returncode == 2 and "--max-ttl: 0 is not between 1 and 64" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    r = cli("mptcplab", "tracebox", "routed-chain", "--from", "h1", "--to", "h2", "--json", str(tmp_path))
    assert r.returncode == 2 and f"--json: {tmp_path} is a directory or a link" in r.stderr, r.stderr


def chain_with_box(tmp_path, box: dict) -> str:
    """h1 - r1 - r2 - r3 - h2 (topologies/routed-chain.yaml) with a middlebox from r2 to r3."""
    from helpers import REPO

    topo = yaml.safe_load((REPO / "topologies/routed-chain.yaml").read_text())
    link = next(l for l in topo["links"] if l["endpoints"] == ["r2", "r3"])
    link["up"] = {"middlebox": box}
    spec = {"name": "tracebox", "topology": topo, "traffic": {"client": "h1", "server": "h2"},
            "outputs": {"dir": str(tmp_path / "results")}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.root
def test_tracebox_names_the_hop_that_strips_mp_capable_and_clamps_the_mss(tmp_path, no_leftovers):
    """r2 -> r3 strips MPTCP options from SYNs and clamps their MSS to 1200 (one middlebox, both
    effects): hops 1 (r1) and 2 (r2) quote the SYN unchanged, hop 3 (r3) quotes it without
    MP_CAPABLE and with MSS 1200, and h2's MPTCP listener answers at hop 4 with a SYN/ACK without
    MP_CAPABLE: it never saw the client ask for MPTCP."""
    out = tmp_path / "trace.json"
    r = cli("mptcplab", "tracebox", chain_with_box(tmp_path, {"strip_mptcp": "syn", "clamp_mss": 1200}),
            "--from", "h1", "--to", "h2", "--json", str(out))
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    t = json.loads(out.read_text())
    kinds = [(h["ttl"], h["kind"], h["address"]) for h in t["hops"]]
    assert kinds == [(1, "time-exceeded", "10.0.1.254"), (2, "time-exceeded", "10.0.2.253"),
                     (3, "time-exceeded", "10.0.3.253"), (4, "synack", "10.0.4.1")], kinds
    assert t["hops"][0]["changes"] == [] and t["hops"][1]["changes"] == [], t["hops"]
    assert sorted(t["hops"][2]["new"]) == ["MP_CAPABLE removed", "MSS 1460 -> 1200"], t["hops"][2]
    assert t["findings"] == ["between hop 2 (10.0.2.253) and hop 3 (10.0.3.253): MSS 1460 -> 1200; "
                             "MP_CAPABLE removed"], t["findings"]
    assert "MP_CAPABLE removed" in r.stdout and "between hop 2" in r.stdout, r.stdout
    answer = t["hops"][3]["note"]
    assert answer.startswith("SYN/ACK: MSS 1460") and "MP_CAPABLE" not in answer, answer

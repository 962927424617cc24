"""Parsing the kernel's own view of subflows (ss -tinMH output captured on a dual-path run)."""

import os
from pathlib import Path

from mptcplab.measurements import (
    connection_token,
    counter_delta,
    parse_ss,
    read_counters,
    subflows_of,
    tcp_connection_is_plain,
)

SS = (Path(__file__).parent / "data" / "ss-tinMH.txt").read_text()


def test_parse_ss_sockets_and_fields():
    socks = parse_ss(SS)
    assert [s["kind"] for s in socks] == ["tcp"] * 4 + ["mptcp"] * 2 + ["tcp"]
    data = socks[1]
    assert data["local"] == "10.0.1.1:51236" and data["remote"] == "10.0.1.2:5201"
    assert data["rtt_ms"] == 25.674 and data["rttvar_ms"] == 2.237
    assert data["cwnd"] == 12 and data["bytes_acked"] == 1166158
    assert data["retrans_total"] == 2 and data["cc"] == "cubic"
    assert data["token"] == "7507ff92" and data["local_id"] == 0 and data["mptcp_subflow"]
    assert socks[5]["token"] == "7507ff92" and socks[5]["subflows"] == 1
    assert not socks[6]["mptcp_subflow"]


def test_subflows_grouped_by_local_token():
    socks = [dict(s, t=0.1) for s in parse_ss(SS)]
    token = connection_token(socks, "10.0.1.1:51236")
    assert token == "7507ff92"
    subs = subflows_of(socks, token)
    assert [(s["local"], s["remote"]) for s in subs] == [
        ("10.0.1.1:51236", "10.0.1.2:5201"), ("10.0.2.1:56863", "10.0.2.2:5201")]
    assert all(s["established"] for s in subs)
    # the control connection (token 642e902) has its own two subflows, not counted here
    assert len(subflows_of(socks, "642e902")) == 2


def test_plain_tcp_detected():
    socks = [dict(s, t=0.0) for s in parse_ss(SS)]
    assert tcp_connection_is_plain(socks, "10.0.1.1:51242") is True
    assert tcp_connection_is_plain(socks, "10.0.1.1:51236") is False
    assert tcp_connection_is_plain(socks, "10.9.9.9:1") is None


def test_counters_of_own_namespace_are_real():
    c = read_counters(os.getpid())
    assert "TcpActiveOpens" in c and "IpInReceives" in c
    assert counter_delta({"a": 1, "b": 2}, {"a": 1, "b": 5}) == {"b": 3}

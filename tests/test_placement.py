"""The POX component's placement decisions, without POX: one path per subflow, kept when the
controller sees the same SYN again (from a switch its rule had not reached, or retransmitted)."""

from __future__ import annotations

from helpers import build_mptcp_syn_options, tcp_header
from mptcplab.mptcp_options import ACK, SYN, parse_tcp, token_of_key
from mptcplab.placement import Placement, SubflowPlacer

CLI, SRV = "10.0.1.1", "10.0.1.2"
KEY = bytes.fromhex("00112233445566ff")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def syn(sport: int, dport: int, kind: str | None = None, token: int = 0):
    opts = build_mptcp_syn_options(kind, token=token) if kind else b""
    return parse_tcp(tcp_header(sport, dport, SYN, opts))


def synack(sport: int, dport: int, key: bytes = KEY):
    return parse_tcp(tcp_header(sport, dport, SYN | ACK, build_mptcp_syn_options("capable-synack", key=key)))


def ack(sport: int, dport: int):
    return parse_tcp(tcp_header(sport, dport, ACK))


def open_connection(placer: SubflowPlacer, sport: int = 40000) -> None:
    assert placer.place(CLI, SRV, syn(sport, 5201, "capable-syn")) == \
        Placement((CLI, sport, SRV, 5201), 0, True)
    # the answer installs the reverse rules of the same 5-tuple, on the same path
    assert placer.place(SRV, CLI, synack(5201, sport)) == Placement((CLI, sport, SRV, 5201), 0, False)


def join(placer: SubflowPlacer, sport: int, dport: int, key: bytes = KEY) -> int:
    return placer.place(CLI, SRV, syn(sport, dport, "join-syn", token_of_key(key))).index


def test_each_join_takes_the_connections_next_path():
    placer = SubflowPlacer()
    open_connection(placer)
    assert [join(placer, 41000 + i, 20011 + i) for i in range(3)] == [1, 2, 3]


def test_the_same_syn_again_keeps_its_path():
    """The SYN of subflow 1 comes back from the next switch before its rule got there: it must
    not take path 2, and the next subflow must still get path 2 (the bug seen with POX)."""
    placer = SubflowPlacer()
    open_connection(placer)
    assert join(placer, 41000, 20011) == 1
    assert join(placer, 41000, 20011) == 1  # from another switch, or retransmitted
    assert join(placer, 41000, 20011) == 1
    assert join(placer, 41001, 20012) == 2
    # and the MP_CAPABLE SYN seen again stays on path 0 without opening a second connection
    assert placer.place(CLI, SRV, syn(40000, 5201, "capable-syn")).index == 0
    assert join(placer, 41002, 20013) == 3


def test_a_5_tuple_reused_after_the_rules_idled_out_is_a_new_subflow():
    clock = Clock()
    placer = SubflowPlacer(hold=120, clock=clock)
    open_connection(placer)
    assert join(placer, 41000, 20011) == 1
    clock.now = 119.9
    assert join(placer, 41000, 20011) == 1
    clock.now = 120.1
    assert join(placer, 41000, 20011) == 2


def test_later_packets_follow_their_syn():
    placer = SubflowPlacer()
    open_connection(placer)
    join(placer, 41000, 20011)
    assert placer.place(CLI, SRV, ack(41000, 20011)) == Placement((CLI, 41000, SRV, 20011), 1, True)
    assert placer.place(SRV, CLI, ack(20011, 41000)) == Placement((CLI, 41000, SRV, 20011), 1, False)


def test_unknown_token_plain_tcp_and_unseen_connections_take_path_0():
    placer = SubflowPlacer()
    open_connection(placer)
    assert join(placer, 41000, 20011, key=b"otherkey") == 0
    assert placer.place(CLI, SRV, syn(42000, 5201)).index == 0          # plain TCP
    assert placer.place(CLI, SRV, ack(43000, 5201)).index == 0          # opened before we started
    assert join(placer, 41001, 20012) == 1  # the connection's own joins are not disturbed


def test_connections_are_told_apart_by_token():
    placer = SubflowPlacer()
    open_connection(placer, 40000)
    other = bytes.fromhex("99887766554433ff")
    placer.place(CLI, SRV, syn(40001, 5201, "capable-syn"))
    placer.place(SRV, CLI, synack(5201, 40001, key=other))
    assert join(placer, 41000, 20011, key=other) == 1
    assert join(placer, 41001, 20011) == 1
    assert join(placer, 41002, 20012, key=other) == 2

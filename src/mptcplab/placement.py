"""Which path each MPTCP subflow takes: the POX component's decision, without POX.

A reactive controller places a subflow when its SYN reaches the controller: an MP_CAPABLE SYN
starts a connection on path 0, the SYN/ACK's key names the connection (its token), and each
MP_JOIN SYN carrying that token takes the connection's next path.

Why a placement is kept per 5-tuple: the controller sees the *same* SYN more than once. Its rules
go to every switch of the path at once, but the SYN it forwards can reach the next switch before
that switch's rule does, and comes back from there; a lost SYN is retransmitted. Taking the next
path again for such a copy would move the subflow to another path and shift every later subflow
by one (seen with POX: a subflow that carried 1 kB on path 1, the next one on path 3). So a SYN
whose 5-tuple was placed less than ``hold`` seconds ago keeps its placement; after that (the
rules have idled out) the 5-tuple is a new subflow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .mptcp_options import MpCapable, MpJoin, TcpSegment, mptcp_option

log = logging.getLogger(__name__)

FlowKey = tuple[str, int, str, int]  # (src, sport, dst, dport) in the direction of the SYN


class Connection:
    """One MPTCP connection: hands out the path index of its next subflow."""

    def __init__(self) -> None:
        self.subflows = 1  # the first subflow (MP_CAPABLE) is on path 0

    def next_index(self) -> int:
        index = self.subflows
        self.subflows += 1
        return index


@dataclass
class Flow:
    index: int
    connection: Connection | None
    placed_at: float


@dataclass(frozen=True)
class Placement:
    """Install the rules of ``key`` (the SYN's direction) for path ``index``: for the SYN's
    direction when ``forward``, for the answer's direction otherwise."""

    key: FlowKey
    index: int
    forward: bool


class SubflowPlacer:
    """Decides the path index of every TCP segment a switch sent to the controller."""

    def __init__(self, hold: float = 120.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.hold = hold
        self.clock = clock
        self.flows: dict[FlowKey, Flow] = {}
        self.tokens: dict[int, Connection] = {}  # server token -> connection

    def place(self, src: str, dst: str, seg: TcpSegment) -> Placement:
        key: FlowKey = (src, seg.sport, dst, seg.dport)
        rkey: FlowKey = (dst, seg.dport, src, seg.sport)
        now = self.clock()
        opt = mptcp_option(seg)
        if seg.syn:
            known = self.flows.get(key)
            if known is not None and now - known.placed_at < self.hold:
                return Placement(key, known.index, True)  # the same SYN again
            conn: Connection | None = None
            if isinstance(opt, MpJoin) and opt.token in self.tokens:
                conn = self.tokens[opt.token]
                index = conn.next_index()
            elif isinstance(opt, MpJoin):
                log.warning("MP_JOIN with unknown token %s: path 0", opt.token)
                index = 0
            else:
                index = 0
                conn = Connection() if isinstance(opt, MpCapable) else None
            self.flows[key] = Flow(index, conn, now)
            return Placement(key, index, True)
        if rkey in self.flows:  # the answer (SYN/ACK) to a SYN we placed
            flow = self.flows[rkey]
            if seg.synack and isinstance(opt, MpCapable) and opt.sender_token is not None \
                    and flow.connection is not None:
                self.tokens[opt.sender_token] = flow.connection
            return Placement(rkey, flow.index, False)
        if key in self.flows:  # a later packet racing its rule to a switch
            return Placement(key, self.flows[key].index, True)
        self.flows[key] = Flow(0, None, now)  # a connection we never saw open: path 0
        return Placement(key, 0, True)

"""The client's routes to the server through a plan, and what the spec implies for each. Pure.

A route starts at one client interface and ends at the server interface on the same layer-2
segment (the per-address routing tables send a subflow bound to an address out of its own
interface), crossing switches on the shortest way -- or, with routers, at each server interface
the client interface's table routes to, router by router as the plan's routes say. Each link is crossed in a known direction, so
the link model gives what the route should show: RTT, bottleneck rate, loss. The self-check holds
the network to these numbers; the traffic stage derives its time limits from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import networkx as nx

from .linkmodel import Direction
from .plan import Plan, PlanIntf, PlanLink

PING_FRAME_BYTES = 98       # 56 bytes of ICMP payload + 8 ICMP + 20 IP + 14 Ethernet
MSS_BYTES = 1448
#: The longest test mptcplab agrees to start: a transfer expected to outlast it is refused.
MAX_TEST_SECONDS = 4 * 3600
#: The self-check's pings: at least this many answers to take a median of.
MIN_ANSWERS = 5
#: The check fails only when fewer pings come back than the route's loss explains at this level.
FALSE_ALARM = 1e-3
#: More pings than this per route and the self-check cannot tell the route from its loss.
MAX_PINGS = 2000
#: z for a two-sided 99.9% band, and the median's standard error in standard deviations * sqrt(n)
Z_999 = 3.29
MEDIAN_SE = 1.2533


@dataclass(frozen=True)
class Route:
    """One client interface to one server interface, with each link and the direction it is
    crossed in (True: from the link's endpoints[0] to endpoints[1])."""

    name: str
    client: PlanIntf
    server: PlanIntf
    hops: tuple[tuple[PlanLink, bool], ...]

    def _crossing(self, forward: bool) -> list[Direction]:
        return [link.up if along == forward else link.down for link, along in self.hops]

    def forward(self) -> list[Direction]:
        """Client -> server, link by link."""
        return self._crossing(True)

    def backward(self) -> list[Direction]:
        return self._crossing(False)

    def expected_rtt_ms(self, frame_bytes: int = PING_FRAME_BYTES) -> float:
        """Mean delays both ways plus one frame's serialization at each link's rate."""
        return sum(d.mean_delay_ms() + d.serialization_ms(frame_bytes) for d in self.forward() + self.backward())

    def rtt_sd_ms(self) -> float:
        """Standard deviation of one RTT from the links' jitter (crossings independent)."""
        return math.sqrt(sum(d.delay_variance_ms2() for d in self.forward() + self.backward()))

    def max_rtt_ms(self) -> float:
        """The longest RTT a frame can see: every delay at its jitter's upper edge."""
        return sum(d.delay + d.jitter + d.serialization_ms(PING_FRAME_BYTES)
                   for d in self.forward() + self.backward())

    def bottleneck_mbps(self) -> float | None:
        rates = [d.bw for d in self.forward() if d.bw]
        return min(rates) if rates else None

    def loss_fraction(self) -> float:
        """Client -> server."""
        keep = 1.0
        for d in self.forward():
            keep *= 1 - d.loss_fraction()
        return 1 - keep

    def round_trip_loss(self) -> float:
        """A ping and its answer both arrive."""
        keep = 1.0
        for d in self.forward() + self.backward():
            keep *= 1 - d.loss_fraction()
        return 1 - keep

    def tcp_rate_floor_mbps(self, unshaped_mbps: float = 100.0) -> float:
        """A low estimate of what one TCP flow gets here: the bottleneck, or the loss-limited
        rate of Mathis et al. (MSS / RTT * 1.22 / sqrt(p)) when that is lower -- the basis of a
        byte-count test's time limit."""
        rate = self.bottleneck_mbps() or unshaped_mbps
        p = self.loss_fraction()  # data loss costs rate; a lost ACK is covered by the next one
        rtt_s = max(self.max_rtt_ms(), 1.0) / 1e3
        if p > 0:
            rate = min(rate, MSS_BYTES * 8 / rtt_s * 1.22 / math.sqrt(p) / 1e6)
        return rate


def routes(plan: Plan) -> list[Route]:
    """Routes from every source to its destination (the client and server, or every flow's and
    probe's hosts): on each segment they share, shortest through the switches; and from each
    source interface to each destination interface its routing table leads to through routers
    (mptcplab.forwarding), router by router."""
    g = nx.MultiGraph()
    for link in plan.links:
        g.add_edge(link.intf1.node, link.intf2.node, key=link.index, link=link)
    switches = g.subgraph(s.name for s in plan.switches if s.name in g)
    out = []
    for src, dst in plan.pairs():
        out += _pair_routes(plan, g, switches, plan.host(src), plan.host(dst))
    return out


Hops = list[tuple[PlanLink, bool]]


def _l2_hops(plan: Plan, g: nx.MultiGraph, switches: nx.Graph, a: PlanIntf, b: PlanIntf) -> Hops | None:
    """The links from interface ``a`` to interface ``b`` on the same segment: their cable, or
    shortest through the switches; None when the switches do not join them."""
    first, last = plan.links[a.link], plan.links[b.link]
    if first.index == last.index:  # a direct cable
        return [(first, first.intf1.node == a.node)]
    u = first.intf2.node if first.intf1.node == a.node else first.intf1.node
    v = last.intf2.node if last.intf1.node == b.node else last.intf1.node
    try:
        nodes = nx.shortest_path(switches, u, v)
    except (nx.NetworkXNoPath, nx.NodeNotFound):
        return None
    hops = [(first, first.intf1.node == a.node)]
    for x, y in zip(nodes, nodes[1:]):
        link = min((d["link"] for d in g.get_edge_data(x, y).values()), key=lambda l: l.index)
        hops.append((link, link.intf1.node == x))
    hops.append((last, last.intf1.node == v))
    return hops


def _routed_hops(plan: Plan, g: nx.MultiGraph, switches: nx.Graph, ci: PlanIntf, si: PlanIntf,
                 client_routes: Any) -> Hops | None:
    """Client interface to server interface through routers, as the tables route it: from
    ci's own table (the per-address rule) to the first router, then each router's main table."""
    from .forwarding import lookup

    by_ip = {i.ip: i for r in plan.routers for i in r.intfs}
    route = lookup(client_routes, si.subnet or "", ci.table)
    here, hops = ci, []
    for _ in range(len(plan.routers) + 1):
        if route is None or route.via not in by_ip:
            return None
        nxt = by_ip[route.via]
        step = _l2_hops(plan, g, switches, here, nxt)
        if step is None:
            return None
        hops += step
        router = plan.router(nxt.node)
        out = next((i for i in router.intfs if i.segment == si.segment), None)
        if out is not None:
            last = _l2_hops(plan, g, switches, out, si)
            return None if last is None else hops + last
        route = lookup(router.routes, si.subnet or "", None)
        here = next((i for i in router.intfs if route is not None and i.name == route.dev), nxt)
    return None


def _pair_routes(plan: Plan, g: nx.MultiGraph, switches: nx.Graph, client: Any, server: Any) -> list[Route]:
    out = []
    for ci in client.intfs:
        for si in server.intfs:
            if si.segment == ci.segment:
                hops = _l2_hops(plan, g, switches, ci, si)
            elif plan.routers:
                hops = _routed_hops(plan, g, switches, ci, si, client.routes)
            else:
                continue
            if hops is not None:
                out.append(Route(f"{ci.name}->{si.name}", ci, si, tuple(hops)))
    return out


def expected_seconds(plan: Plan, duration: float | None, nbytes: int | None,
                     rs: list[Route] | None = None) -> float:
    """How long one test should take: its duration, or its bytes at the slowest route's TCP rate
    floor (a plain TCP test uses the initial route only; MPTCP is at least as fast)."""
    if duration:
        return float(duration)
    rs = routes(plan) if rs is None else rs
    rate = min((r.tcp_rate_floor_mbps() for r in rs), default=100.0)
    rtt = max((r.max_rtt_ms() for r in rs), default=1.0) / 1e3
    # slow start and connection set-up: a few dozen RTTs, generously
    return (nbytes or 0) * 8 / (rate * 1e6) + 40 * rtt


def time_limit(plan: Plan, duration: float | None, nbytes: int | None, margin: float) -> float:
    """When a test is abandoned: what it should take, half again for bytes tests, plus margin
    and the connection timeouts of long paths."""
    rs = routes(plan)
    expected = expected_seconds(plan, duration, nbytes, rs)
    rtt = max((r.max_rtt_ms() for r in rs), default=1.0) / 1e3
    return (expected if duration else expected * 1.5) + margin + 10 * rtt


def flow_bottlenecks(plan: Plan, flows: Any) -> list[str] | None:
    """Each flow's bottleneck link ("LINK up|down") when every flow takes its shortest route (no
    ECMP): the link that holds it in the max-min fair allocation of all the flows. None when a
    flow has no route here."""
    from .optimum import max_min_fair
    from .paths import UNSHAPED

    by_pair = {}
    for r in routes(plan):
        by_pair.setdefault((r.client.node, r.server.node, r.server.ip), r)
    chosen, capacity = [], {}
    for f in flows:
        r = by_pair.get((f.src, f.dst, f.dst_address))
        if r is None:
            return None
        keys = []
        for link, along in r.hops:
            key = f"{link.name} {'up' if along else 'down'}"
            capacity[key] = (link.up if along else link.down).bw or UNSHAPED
            keys.append(key)
        chosen.append(keys)
    out: list[Any] = []
    max_min_fair(chosen, capacity, out)
    return out


def flows_time_limit(plan: Plan, flows: Any, margin: float, rates_mbps: list[float] | None = None) -> float:
    """When a multi-flow test is abandoned: the latest flow's start plus its own time limit. A
    byte-count flow shares the network with the others: it is given its bytes at its rate in the
    optimum (``rates_mbps``) when known, else at a fair share of the slowest route's rate floor
    among all the flows -- never what it would get alone (an incast would then be abandoned)."""
    rs = routes(plan)
    rtt = max((r.max_rtt_ms() for r in rs), default=1.0) / 1e3
    floor = min((r.tcp_rate_floor_mbps() for r in rs), default=100.0)
    limits = []
    for k, f in enumerate(flows):
        if f.bytes is None:
            expected = float(f.duration_s or 0)
        else:
            rate = min(rates_mbps[k], floor) if rates_mbps else floor / len(flows)
            expected = 1.5 * (f.bytes * 8 / (rate * 1e6) + 40 * rtt)
        limits.append(f.start_s + expected + margin + 10 * rtt)
    return max(limits)


def connect_timeout_ms(plan: Plan) -> int:
    """iperf3's --connect-timeout: 5 s, plus four of the longest RTT (a SYN and its retries)."""
    return int(5000 + 4 * max((r.max_rtt_ms() for r in routes(plan)), default=0.0))


# --------------------------------------------------------------------------- the self-check's pings


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p) (terms in logs: n reaches thousands)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0:
        return 1.0
    if p >= 1:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    lnf = math.lgamma(n + 1)
    return min(1.0, sum(math.exp(lnf - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq)
                        for i in range(k + 1)))


def pings_needed(round_trip_loss: float, answers: int = MIN_ANSWERS, false_alarm: float = FALSE_ALARM) -> int | None:
    """Pings to send so that ``answers`` come back with probability 1 - false_alarm when each is
    lost (either way) with the given probability; None above MAX_PINGS."""
    q = 1 - round_trip_loss
    if q <= 0:
        return None
    n = max(10, answers)
    while _binom_cdf(answers - 1, n, q) > false_alarm:
        n = int(n * 1.25) + 1
        if n > MAX_PINGS:
            return None
    return n


def pings_for_jitter(rtt_sd_ms: float, tolerance_ms: float) -> int:
    """Pings whose median lands within tolerance of the expected RTT despite the links' jitter
    (99.9% of the time): the median's standard error must fit the tolerance."""
    if rtt_sd_ms <= 0:
        return 0
    return min(MAX_PINGS, math.ceil((Z_999 * MEDIAN_SE * rtt_sd_ms / tolerance_ms) ** 2))


def rtt_tolerance_ms(route: Route, answers: int, pct: float, per_link_ms: float) -> float:
    """How far the measured median RTT may be from the expected one: the spec's tolerance
    (percent, plus forwarding cost per link), plus the median's sampling error under jitter."""
    tol = route.expected_rtt_ms() * pct / 100 + per_link_ms * len(route.hops)
    if answers:
        tol += Z_999 * MEDIAN_SE * route.rtt_sd_ms() / math.sqrt(answers)
    return tol


def min_answers(n: int, round_trip_loss: float, false_alarm: float = FALSE_ALARM) -> int:
    """The fewest answers out of n that the route's loss still explains (lower binomial bound)."""
    q = 1 - round_trip_loss
    k = 0
    while k < n and _binom_cdf(k, n, q) < false_alarm:
        k += 1
    return max(k, 1)

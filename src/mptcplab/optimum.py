"""The optimum several concurrent flows could reach on a topology, and how close a test came. Pure.

A single flow's known answer is its max-flow (:func:`mptcplab.paths.max_flow`). With several
flows at once the answer is the *max concurrent flow*: the largest fraction ``rate`` of every
flow's demand that the network can carry at the same time (a multi-commodity flow, solved as a
small linear program with scipy's HiGHS). Measured goodputs are then judged against it:
:func:`fraction_of_optimal` (how much of the optimal total was carried) and
:func:`normalized_jain` (how fairly, relative to each flow's optimal share).

The model is the emulated network's:

- every link is full duplex: its rate (Mbit/s; unshaped links :data:`~mptcplab.paths.UNSHAPED`)
  is available in each direction independently, and parallel links add up;
- hosts do not forward: a flow enters and leaves hosts only at its own two ends;
- a flow may be split over any number of paths (MPTCP subflows), in any proportion.

This module imports no network code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import networkx as nx
import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from .paths import ControllerTopology

Pair = tuple[str, str]


def jain(values: Sequence[float | None]) -> float | None:
    """Jain's fairness index (sum x)^2 / (n * sum x^2): 1 when all are equal, 1/n when one flow
    has everything.

    None when there is nothing to judge: no values, all zero, or a value missing (None/NaN -- a
    test where a flow failed has no fairness index, rather than one that counts it as 0).
    """
    if not values or any(_missing(v) for v in values):
        return None
    xs = [float(v) for v in values]  # type: ignore[arg-type]
    squares = sum(x * x for x in xs)
    if squares == 0:
        return None
    return sum(xs) ** 2 / (len(xs) * squares)


def _missing(v: float | None) -> bool:
    return v is None or math.isnan(v)


@dataclass(frozen=True)
class Optimum:
    """The max concurrent flow of a set of flows.

    ``rate`` (lambda) is the largest fraction of every demand routable at once, at most 1 (a flow
    never needs more than its demand); ``per_flow_mbps[i] = rate * demands_mbps[i]`` is what flow
    i gets at that optimum.
    """

    rate: float
    demands_mbps: tuple[float, ...]
    per_flow_mbps: tuple[float, ...]

    @property
    def total_mbps(self) -> float:
        return sum(self.per_flow_mbps)

    def to_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "demands_mbps": list(self.demands_mbps),
                "per_flow_mbps": list(self.per_flow_mbps), "total_mbps": self.total_mbps}


@dataclass(frozen=True)
class _Arcs:
    """The network as directed arcs: each link gives one arc per direction, with the link's full
    rate (full duplex). Node i is ``nodes[i]``; arc j runs ``tail[j] -> head[j]``."""

    nodes: tuple[str, ...]
    is_host: np.ndarray  # per node
    tail: np.ndarray
    head: np.ndarray
    cap: np.ndarray      # Mbit/s

    @classmethod
    def of(cls, topo: ControllerTopology) -> "_Arcs":
        nodes = tuple(sorted(topo.hosts)) + tuple(sorted(set(topo.switches) - set(topo.hosts)))
        index = {n: i for i, n in enumerate(nodes)}
        tail = [index[l.a] for l in topo.links] + [index[l.b] for l in topo.links]
        head = [index[l.b] for l in topo.links] + [index[l.a] for l in topo.links]
        cap = [l.rate(l.a) for l in topo.links] + [l.rate(l.b) for l in topo.links]  # each direction its own
        return cls(nodes, np.array([n in topo.hosts for n in nodes]), np.array(tail, dtype=np.int64),
                   np.array(head, dtype=np.int64), np.array(cap, dtype=float))

    def usable(self, src: int, dst: int) -> np.ndarray:
        """The arcs a flow src -> dst may use: none through another host (hosts do not forward),
        none back into its source or out of its destination (they could only carry cycles)."""
        host_tail, host_head = self.is_host[self.tail], self.is_host[self.head]
        return np.nonzero((~host_tail | (self.tail == src)) & (~host_head | (self.head == dst))
                          & (self.tail != dst) & (self.head != src))[0]


def alone_mbps(topo: ControllerTopology, src: str, dst: str) -> float:
    """What one flow src -> dst gets alone on the network: its max-flow in this module's model.

    The same as :func:`mptcplab.paths.max_flow` except where two links join the same two nodes:
    that one keeps only the lowest-numbered link (the one the path core routes over), this one
    adds them up, as the concurrent-flow LP does.
    """
    return _alone(_Arcs.of(topo), *_checked_pair(topo, (src, dst)))


def _alone(arcs: _Arcs, src: str, dst: str) -> float:
    index = {n: i for i, n in enumerate(arcs.nodes)}
    g = nx.DiGraph()
    g.add_nodes_from((index[src], index[dst]))
    for j in arcs.usable(index[src], index[dst]):
        u, v = int(arcs.tail[j]), int(arcs.head[j])
        prev = g.edges[u, v]["capacity"] if g.has_edge(u, v) else 0.0
        g.add_edge(u, v, capacity=prev + float(arcs.cap[j]))
    return float(nx.maximum_flow_value(g, index[src], index[dst]))


def _checked_pair(topo: ControllerTopology, pair: Pair) -> Pair:
    src, dst = pair
    for name in (src, dst):
        if name not in topo.hosts:
            raise ValueError(f"flow {src} -> {dst}: {name!r} is not a host of the topology "
                             f"(hosts: {', '.join(sorted(topo.hosts))})")
    if src == dst:
        raise ValueError(f"flow {src} -> {dst}: source and destination are the same host")
    return src, dst


def _demands(arcs: _Arcs, pairs: Sequence[Pair], demands: Sequence[float] | None) -> tuple[float, ...]:
    """The given demands, checked, or each flow's max-flow alone: a flow's demand is what it could
    get by itself, not the nominal rate of an unshaped link."""
    if demands is not None:
        if len(demands) != len(pairs):
            raise ValueError(f"{len(demands)} demands for {len(pairs)} flows")
        for (src, dst), d in zip(pairs, demands):
            if not (d > 0 and math.isfinite(d)):
                raise ValueError(f"flow {src} -> {dst}: demand {d!r} Mbit/s is not a positive number")
    alone = {pair: _alone(arcs, *pair) for pair in dict.fromkeys(pairs)}
    for (src, dst), mbps in alone.items():
        if mbps <= 0:
            raise ValueError(f"flow {src} -> {dst}: no path from {src} to {dst} (hosts do not forward)")
    return tuple(float(d) for d in demands) if demands is not None else tuple(alone[p] for p in pairs)


def max_concurrent_flow(topo: ControllerTopology, pairs: Sequence[Pair],
                        demands: Sequence[float] | None = None) -> Optimum:
    """The max concurrent flow of ``pairs`` (src, dst hosts; several may share an end).

    Maximize lambda such that, for every flow i at once, lambda * demand_i can be routed from its
    source to its destination, with every directed arc carrying at most its capacity in total.
    ``demands`` default to each flow's max-flow alone (:func:`alone_mbps`), so lambda <= 1 and
    lambda = 1 means no flow is slowed by the others. Given demands may be below that; lambda is
    then still capped at 1, since a flow never needs more than its demand.
    """
    if not pairs:
        raise ValueError("no flows: max_concurrent_flow needs at least one (src, dst) pair")
    pairs = [_checked_pair(topo, p) for p in pairs]
    arcs = _Arcs.of(topo)
    d = _demands(arcs, pairs, demands)
    rate = _solve(arcs, pairs, d)
    return Optimum(rate=rate, demands_mbps=d, per_flow_mbps=tuple(rate * x for x in d))


def _solve(arcs: _Arcs, pairs: Sequence[Pair], demands: Sequence[float]) -> float:
    """The LP, sparse: one variable per (flow, usable arc) plus lambda (the last column).

    Conservation, per flow and node: out - in = lambda*d at the source, -lambda*d at the
    destination, 0 elsewhere. Capacity, per directed arc: the flows on it sum to at most its rate.
    """
    index = {n: i for i, n in enumerate(arcs.nodes)}
    n_nodes = len(arcs.nodes)
    cols, eq_rows, eq_vals, arc_of_col = [], [], [], []
    lam_rows: list[int] = []
    lam_vals: list[float] = []
    offset = 0
    for i, ((src, dst), d) in enumerate(zip(pairs, demands)):
        s, t = index[src], index[dst]
        use = arcs.usable(s, t)
        col = np.arange(offset, offset + len(use))
        offset += len(use)
        base = i * n_nodes
        cols += [col, col]
        eq_rows += [base + arcs.tail[use], base + arcs.head[use]]
        eq_vals += [np.ones(len(use)), -np.ones(len(use))]
        arc_of_col.append(use)
        lam_rows += [base + s, base + t]
        lam_vals += [-d, d]
    n_vars = offset + 1
    rows = np.concatenate(eq_rows + [np.array(lam_rows)])
    kept, rows = np.unique(rows, return_inverse=True)  # drop the empty rows (other hosts)
    a_eq = sp.csr_matrix((np.concatenate(eq_vals + [np.array(lam_vals)]),
                          (rows, np.concatenate(cols + [np.full(len(lam_rows), offset)]))),
                         shape=(len(kept), n_vars))
    arc_col = np.concatenate(arc_of_col)
    a_ub = sp.csr_matrix((np.ones(offset), (arc_col, np.arange(offset))), shape=(len(arcs.cap), n_vars))
    c = np.zeros(n_vars)
    c[-1] = -1.0  # maximize lambda
    res = linprog(c, A_ub=a_ub, b_ub=arcs.cap, A_eq=a_eq, b_eq=np.zeros(len(kept)),
                  bounds=[(0, None)] * offset + [(0, 1.0)], method="highs")
    if res.status != 0:
        raise RuntimeError(f"max concurrent flow LP: {res.message}")
    return float(min(max(res.x[-1], 0.0), 1.0))


def _per_flow(goodputs: Sequence[float | None], optimum: Optimum) -> None:
    if len(goodputs) != len(optimum.per_flow_mbps):
        raise ValueError(f"{len(goodputs)} goodputs for {len(optimum.per_flow_mbps)} flows")


def fraction_of_optimal(goodputs: Sequence[float | None], optimum: Optimum) -> float | None:
    """The total goodput as a fraction of the optimal total: how much of what the network could
    carry at once was carried. None if a flow has no goodput (it failed) or the optimum is 0."""
    _per_flow(goodputs, optimum)
    if any(_missing(g) for g in goodputs) or optimum.total_mbps <= 0:
        return None
    return sum(goodputs) / optimum.total_mbps  # type: ignore[arg-type]


def normalized_jain(goodputs: Sequence[float | None], optimum: Optimum) -> float | None:
    """Jain's index over goodput_i / optimal share_i: fairness relative to what each flow gets at
    the optimum, so flows that cannot have equal shares (an incast next to a free path) are not
    called unfair for it. With equal optimal shares it is jain(goodputs)."""
    _per_flow(goodputs, optimum)
    if any(_missing(g) for g in goodputs) or any(p <= 0 for p in optimum.per_flow_mbps):
        return None
    return jain([g / p for g, p in zip(goodputs, optimum.per_flow_mbps)])  # type: ignore[operator]


# --------------------------------------------------------------------------- a fluid model of ECMP


def max_min_fair(routes: Sequence[Sequence[Any]], capacity: dict[Any, float],
                 bottleneck: list[Any] | None = None) -> list[float]:
    """Max-min fair rates of flows on fixed routes (progressive filling): every unfrozen flow
    grows at the same pace; when a link fills, the flows crossing it freeze. The fluid model of
    long-lived TCP flows sharing links fairly per flow -- and of uncoupled MPTCP, whose every
    subflow is such a flow (upstream Linux runs one congestion control per subflow).
    ``routes[i]`` is the links flow i crosses (keys of ``capacity``, Mbit/s); ``bottleneck``,
    when given, receives for each flow the link that froze it (its bottleneck)."""
    if bottleneck is not None:
        bottleneck[:] = [None] * len(routes)
    rates = [0.0] * len(routes)
    left = dict(capacity)
    active = {i for i, r in enumerate(routes) if r}
    while active:
        users: dict[Any, int] = {}
        for i in active:
            for link in routes[i]:
                users[link] = users.get(link, 0) + 1
        step = min(left[link] / n for link, n in users.items())
        for i in active:
            rates[i] += step
        for link, n in users.items():
            left[link] -= step * n
        full = {link for link in users if left[link] <= 1e-9 * max(capacity[link], 1.0)}
        frozen = {i for i in active if full.intersection(routes[i])}
        if bottleneck is not None:
            for i in frozen:
                bottleneck[i] = min(full.intersection(routes[i]), key=str)
        active -= frozen
    return rates


def bottleneck_groups(routes: Sequence[Sequence[Any]], capacity: dict[Any, float]) -> list[Any]:
    """Each flow's bottleneck link in the max-min fair allocation: flows with the same one share
    a bottleneck, and their fairness is judged among themselves (Jain's index per group)."""
    out: list[Any] = []
    max_min_fair(routes, capacity, out)
    return out


def ecmp_route(topo: ControllerTopology, next_hops: dict[tuple[str, str], tuple[int, ...]], src: str, dst: str,
               pick: Any) -> list[tuple[str, str]]:
    """The directed links a packet from host src to host dst crosses when every switch picks one
    of its equal-cost next hops with ``pick(switch, ports)`` (a hash, or a random draw)."""
    neighbour = {(l.a, l.a_port): l.b for l in topo.links} | {(l.b, l.b_port): l.a for l in topo.links}
    address = topo.hosts[dst][0]["ip"]
    here = topo.hosts[src][0]["switch"]
    route = [(src, here)]
    while here != dst:
        nxt = neighbour[(here, pick(here, next_hops[(here, address)]))]
        route.append((here, nxt))
        here = nxt
    return route


def ecmp_fluid_fraction(topo: ControllerTopology, pairs: Sequence[Pair], subflows: int, draws: int = 20,
                        seed: int = 1) -> float:
    """What ECMP leaves of the optimum in the fluid model: each flow's ``subflows`` hashed onto
    random equal-cost routes, all subflows max-min fair (uncoupled congestion control), the
    total as a fraction of the max concurrent flow; the mean over ``draws`` hash draws. ACKs and
    TCP's own dynamics (losses, timeouts, slow start) are not in the model: it is the shape a
    measurement is read against (Raiciu et al. 2011 report the same shape from their simulator)."""
    import random

    from .paths import ecmp_next_hops

    hops = ecmp_next_hops(topo)
    optimum = max_concurrent_flow(topo, pairs).total_mbps
    capacity = {}
    for l in topo.links:
        capacity[(l.a, l.b)], capacity[(l.b, l.a)] = l.rate(l.a), l.rate(l.b)
    rng = random.Random(seed)
    total = 0.0
    for _ in range(draws):
        routes = [ecmp_route(topo, hops, a, b, lambda _sw, ports: rng.choice(ports))
                  for a, b in pairs for _ in range(subflows)]
        total += sum(max_min_fair(routes, capacity)) / optimum
    return total / draws

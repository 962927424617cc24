"""IP forwarding through routers: which next hop every host and router uses for each segment. Pure.

A router joins layer-2 segments; each segment has one /24 (plan.py). The layer-3 graph has a
node per segment and per router, an edge where a router has an interface on a segment; one hop
is one router crossed. For every segment a node is not on, the route goes to the neighbour
router (on a segment the node shares with it) that is nearest to the destination -- ties broken
by segment number, then by router name, so a plan is the same every time.

Hosts keep their per-address tables (a subflow bound to an address leaves through its own
interface): table ``100 + k`` gets routes through the routers on interface k's segment only, the
main table (unbound sockets, the host's own pings) through the nearest router on any of its
segments. A host whose segments have no router keeps only its connected routes, as before.
Replies take the reverse of these choices; with hop counts and the same tie-break that is the
same path on the chains and trees mptcplab is used with (meshes may route asymmetrically).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from .plan import PlanIntf

#: Routers take addresses from the top of each segment's /24 (.254, .253, ...); hosts from .1 up.
ROUTER_HOST_NUMBER = 254


@dataclass(frozen=True)
class PlanRoute:
    """``dst`` via ``via`` out of ``dev``, in routing table ``table`` (None: the main table).
    ``routers``: routers crossed to reach ``dst``, the next hop included."""

    dst: str
    via: str
    dev: str
    table: int | None
    routers: int


@dataclass(frozen=True)
class PlanRouter:
    """A router: its interfaces (each with an address on its segment) and its routes (main
    table) to every segment it is not on."""

    name: str
    intfs: tuple["PlanIntf", ...]
    routes: tuple[PlanRoute, ...]


def _graph(router_intfs: Iterable["PlanIntf"]) -> Any:
    import networkx as nx  # only plans with routers need it

    g = nx.Graph()
    for i in router_intfs:
        g.add_edge(("r", i.node), ("s", i.segment))
    return g


def _best(candidates: list[tuple[int, int, str, "PlanIntf", "PlanIntf"]]) -> tuple[int, "PlanIntf", "PlanIntf"] | None:
    """(distance, segment, router name, out interface, next hop's interface) -> the nearest."""
    if not candidates:
        return None
    d, _, _, out, nxt = min(candidates, key=lambda c: c[:3])
    return d, out, nxt


def compute(host_intfs: dict[str, list["PlanIntf"]], router_intfs: dict[str, list["PlanIntf"]],
            subnets: list[str]) -> tuple[dict[str, tuple[PlanRoute, ...]], dict[str, tuple[PlanRoute, ...]]]:
    """Routes of every host (per-address tables and main) and every router (main), given every
    interface with its segment and address, and each segment's subnet by its number."""
    all_router_intfs = [i for intfs in router_intfs.values() for i in intfs]
    g = _graph(all_router_intfs)
    on_segment: dict[int, list["PlanIntf"]] = {}
    for i in all_router_intfs:
        on_segment.setdefault(i.segment, []).append(i)
    import networkx as nx

    dist = {seg: nx.single_source_shortest_path_length(g, ("s", seg)) for seg in sorted(on_segment)}

    def via(out: "PlanIntf", seg: int, me: str) -> list[tuple[int, int, str, "PlanIntf", "PlanIntf"]]:
        """Routers next to ``out`` (on its segment, not ``me``) that reach segment ``seg``."""
        found = []
        for nxt in on_segment.get(out.segment, []):
            d = dist[seg].get(("r", nxt.node))
            if nxt.node != me and d is not None:
                found.append(((d + 1) // 2, out.segment, nxt.node, out, nxt))
        return found

    def route(best: tuple[int, "PlanIntf", "PlanIntf"] | None, seg: int, table: int | None) -> list[PlanRoute]:
        if best is None:
            return []
        d, out, nxt = best
        return [PlanRoute(dst=subnets[seg], via=nxt.ip or "", dev=out.name, table=table, routers=d)]

    hosts: dict[str, tuple[PlanRoute, ...]] = {}
    for h, intfs in host_intfs.items():
        intfs = sorted(intfs, key=lambda x: x.port)
        own = {i.segment for i in intfs}
        out: list[PlanRoute] = []
        for i in intfs:
            for seg in dist:
                if seg != i.segment:
                    out += route(_best(via(i, seg, h)), seg, i.table)
        for seg in dist:
            if seg not in own:
                out += route(_best([c for i in intfs for c in via(i, seg, h)]), seg, None)
        hosts[h] = tuple(out)
    routers: dict[str, tuple[PlanRoute, ...]] = {}
    for r, intfs in router_intfs.items():
        own = {i.segment for i in intfs}
        routers[r] = tuple(p for seg in dist if seg not in own
                           for p in route(_best([c for i in intfs for c in via(i, seg, r)]), seg, None))
    return hosts, routers


def lookup(routes: Iterable[PlanRoute], subnet: str, table: int | None) -> PlanRoute | None:
    """The route to ``subnet`` in ``table`` (segments are whole /24s: an exact match)."""
    return next((r for r in routes if r.dst == subnet and r.table == table), None)

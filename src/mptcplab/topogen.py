"""Generated topologies: a FatTree or a dumbbell described by a few numbers. Pure.

A spec may write ``topology: {generate: {kind: fattree, k: 4, links: {...}}}`` instead of listing
hosts, switches and links; :func:`generate` expands it, deterministically, into that same form
(hosts, switches, links with their parameters), so everything downstream -- plan, network,
results -- sees an ordinary topology, and the expansion is recorded in spec.yaml and plan.json.

FatTree(k) (Al-Fares et al., SIGCOMM 2008): k pods, each with k/2 edge and k/2 aggregation
switches; (k/2)^2 core switches; each edge switch serves k/2 hosts. Aggregation switch j of
every pod connects to core switches j*k/2 ... j*k/2 + k/2 - 1, so between hosts of different
pods there are (k/2)^2 equal-cost shortest paths, one per core switch.

Dumbbell(n): n senders l1..ln on switch sl, n receivers r1..rn on switch sr, one bottleneck
link sl - sr.
"""

from __future__ import annotations

from typing import Any

#: The link layers each kind takes parameters for.
LAYERS = {"fattree": ("edge", "aggregation", "core"), "dumbbell": ("access", "bottleneck")}


def fattree(k: int, links: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Hosts h1..h(k^3/4), edge e1.., aggregation a1.., core c1.. switches, and the links of
    each layer with that layer's parameters (``links[layer]``: bw, delay, queue, ...)."""
    half = k // 2
    hosts: dict[str, Any] = {}
    edges = [f"e{i + 1}" for i in range(k * half)]
    aggs = [f"a{i + 1}" for i in range(k * half)]
    cores = [f"c{i + 1}" for i in range(half * half)]
    out_links: list[dict[str, Any]] = []

    def link(a: str, b: str, layer: str) -> None:
        out_links.append({"endpoints": [a, b], **links.get(layer, {})})

    for pod in range(k):
        for e in range(half):
            edge = edges[pod * half + e]
            for h in range(half):
                host = f"h{(pod * half + e) * half + h + 1}"
                hosts[host] = {"interfaces": 1}
                link(host, edge, "edge")
        for e in range(half):
            for a in range(half):
                link(edges[pod * half + e], aggs[pod * half + a], "aggregation")
        for a in range(half):
            for c in range(half):
                link(aggs[pod * half + a], cores[a * half + c], "core")
    return {"hosts": hosts, "switches": edges + aggs + cores, "links": out_links}


def dumbbell(pairs: int, links: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Senders l1..ln on sl, receivers r1..rn on sr, one bottleneck sl - sr."""
    hosts = {f"{side}{i + 1}": {"interfaces": 1} for side in ("l", "r") for i in range(pairs)}
    out = [{"endpoints": [f"l{i + 1}", "sl"], **links.get("access", {})} for i in range(pairs)]
    out.append({"endpoints": ["sl", "sr"], **links.get("bottleneck", {})})
    out += [{"endpoints": ["sr", f"r{i + 1}"], **links.get("access", {})} for i in range(pairs)]
    return {"hosts": hosts, "switches": ["sl", "sr"], "links": out}


def generate(kind: str, *, k: int = 4, pairs: int = 1, links: dict[str, dict[str, Any]] | None = None
             ) -> dict[str, Any]:
    """The topology ``kind`` describes, as a spec's hosts/switches/links."""
    links = links or {}
    if kind == "fattree":
        return fattree(k, links)
    if kind == "dumbbell":
        return dumbbell(pairs, links)
    raise ValueError(f"{kind!r} is not a generated topology ({', '.join(LAYERS)})")

"""The path core: which path each MPTCP subflow takes. Plain networkx -- no POX, no Mininet.

Used by the POX component (controllers/mptcp_paths.py), by the ``static`` controller (the same
rules through ovs-ofctl) and by the results (max-flow, the known answer).

Vocabulary:
- a *path* is a list of node names from one host to another (hosts at both ends);
- *link-independent* paths share no link (edge-disjoint; capacity-aware: found by max-flow);
- *link-dependent* paths share at least one link with a path already in the set;
- a *policy* turns the paths between two hosts into an ordered *path set*; subflow i of a
  connection takes ``path_set[i % len(path_set)]``:
    independent: the link-independent paths only;
    dependent:   the shortest path, then the paths sharing most links with it;
    mixed:       the link-independent paths, then the dependent ones;
    shortest:    the shortest path only.
Everything is deterministic: ties break on length, then on node names.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path as FsPath
from typing import Any, Iterable

import networkx as nx

POLICIES = ("independent", "dependent", "mixed", "shortest")
#: Not a path set: every switch spreads the 5-tuples toward a host over all its shortest next hops.
ECMP = "ecmp"
UNSHAPED = 1e6  # Mbit/s given to links without a rate (faster than any shaped link)


@dataclass(frozen=True)
class TopoLink:
    a: str
    a_port: int
    b: str
    b_port: int
    bw: float | None = None  # Mbit/s, the link's own (both directions unless overridden)
    bw_ab: float | None = None  # Mbit/s from a to b where the link's `up` sets its own
    bw_ba: float | None = None  # Mbit/s from b to a where the link's `down` sets its own

    def rate(self, src: str) -> float:
        """Mbit/s leaving from ``src`` (one end) toward the other: the direction's own rate, else
        the link's; UNSHAPED when it has none."""
        own = self.bw_ab if src == self.a else self.bw_ba
        return own or self.bw or UNSHAPED

    @property
    def key(self) -> tuple[str, str]:
        return tuple(sorted((self.a, self.b)))  # type: ignore[return-value]


@dataclass
class ControllerTopology:
    """What the controller needs: nodes, ports and rates. Written by the harness as JSON."""

    hosts: dict[str, list[dict[str, Any]]]  # host -> [{name, ip, switch, switch_port}]
    switches: dict[str, str]                # switch -> dpid (16 hex digits)
    links: list[TopoLink]
    client: str = ""
    server: str = ""
    port_subflow: dict[int, int] = field(default_factory=dict)  # server port -> subflow index
    policy: str = "mixed"

    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "ControllerTopology":
        d = json.loads(text)
        d["links"] = [TopoLink(**l) for l in d["links"]]
        d["port_subflow"] = {int(k): v for k, v in d.get("port_subflow", {}).items()}
        return cls(**d)

    @classmethod
    def load(cls, path: str | FsPath) -> "ControllerTopology":
        return cls.from_json(FsPath(path).read_text())

    def graph(self) -> nx.MultiGraph:
        g = nx.MultiGraph()
        for n in sorted(self.hosts):
            g.add_node(n, kind="host")
        for n in sorted(self.switches):
            g.add_node(n, kind="switch")
        for i, l in enumerate(self.links):
            g.add_edge(l.a, l.b, key=i, capacity=l.bw or UNSHAPED, link=l)
        return g

    def dpid_of(self, switch: str) -> int:
        return int(self.switches[switch], 16)

    def switch_of_dpid(self, dpid: int) -> str:
        return next(s for s, d in self.switches.items() if int(d, 16) == dpid)


def _simple(g: nx.MultiGraph) -> nx.Graph:
    """One edge per node pair (the lowest-index link), capacities kept; for path search."""
    s = nx.Graph()
    s.add_nodes_from(g.nodes(data=True))
    for u, v, k, d in sorted(g.edges(keys=True, data=True), key=lambda e: e[2]):
        if not s.has_edge(u, v):
            s.add_edge(u, v, capacity=d["capacity"], key=k)
    return s


def _hosts_as_ends(g: nx.Graph, src: str, dst: str) -> nx.Graph:
    """Hosts do not forward: drop every host but the two ends."""
    keep = [n for n, d in g.nodes(data=True) if d.get("kind") != "host" or n in (src, dst)]
    return g.subgraph(keep).copy()


def edges_of(path: list[str]) -> set[tuple[str, str]]:
    return {tuple(sorted(e)) for e in zip(path, path[1:])}  # type: ignore[misc]


def _order(paths: Iterable[list[str]]) -> list[list[str]]:
    return sorted(paths, key=lambda p: (len(p), p))


def independent_paths(topo: ControllerTopology, src: str, dst: str) -> list[list[str]]:
    """Edge-disjoint paths, as many as the max-flow with unit capacities allows.

    Among several such sets the one with the most capacity wins (each path's bottleneck summed),
    then the shortest; the paths come out shortest first.
    """
    g = _hosts_as_ends(_simple(topo.graph()), src, dst)
    # A single-homed host's access link is shared by every path from it: contract it (its switch
    # becomes the end), so disjointness is judged on the network, not on the host's one cable.
    inner = g.copy()
    a = src if g.degree(src) > 1 else _attach(g, src)
    b = dst if g.degree(dst) > 1 else _attach(g, dst)
    inner.remove_nodes_from([n for n, e in ((src, a), (dst, b)) if n != e])
    head = [src] if a != src else []
    tail = [dst] if b != dst else []
    if a == b:
        return [[*head, a, *tail]]
    candidates = []
    k = nx.edge_connectivity(inner, a, b) if nx.has_path(inner, a, b) else 0
    if k == 0:
        return []
    # All sets of k edge-disjoint simple paths among the shortest ones; pick by capacity, length.
    simple = list(itertools.islice(nx.shortest_simple_paths(inner, a, b), 24))
    for combo in itertools.combinations(simple, k):
        used: set[tuple[str, str]] = set()
        ok = True
        for p in combo:
            e = edges_of(p)
            if e & used:
                ok = False
                break
            used |= e
        if ok:
            cap = sum(min(inner[u][v]["capacity"] for u, v in zip(p, p[1:])) for p in combo)
            candidates.append((-cap, sum(len(p) for p in combo), sorted(combo), combo))
    if not candidates:
        best = [list(p) for p in nx.edge_disjoint_paths(inner, a, b)]
    else:
        best = [list(p) for p in min(candidates, key=lambda c: (c[0], c[1], c[2]))[3]]
    return [[*head, *p, *tail] for p in _order(best)]


def _attach(g: nx.Graph, host: str) -> str:
    """The switch a single-homed host hangs off (the first by name if it has several)."""
    return sorted(g.neighbors(host))[0]


def shortest_paths(topo: ControllerTopology, src: str, dst: str, k: int = 16) -> list[list[str]]:
    g = _hosts_as_ends(_simple(topo.graph()), src, dst)
    return [list(p) for p in itertools.islice(nx.shortest_simple_paths(g, src, dst), k)]


def dependent_paths(topo: ControllerTopology, src: str, dst: str, k: int = 16) -> list[list[str]]:
    """The shortest path, then the others ranked by links shared with the set so far (most
    first), then by length."""
    pool = shortest_paths(topo, src, dst, k)
    if not pool:
        return []
    chosen = [pool.pop(0)]
    while pool:
        used = set().union(*(edges_of(p) for p in chosen))
        pool.sort(key=lambda p: (-len(edges_of(p) & used), len(p), p))
        chosen.append(pool.pop(0))
    return chosen


def path_set(topo: ControllerTopology, src: str, dst: str, policy: str) -> list[list[str]]:
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}: one of {', '.join(POLICIES)}")
    if policy == "shortest":
        return shortest_paths(topo, src, dst, 1)
    if policy == "independent":
        return independent_paths(topo, src, dst)
    if policy == "dependent":
        return dependent_paths(topo, src, dst)
    indep = independent_paths(topo, src, dst)
    rest = [p for p in dependent_paths(topo, src, dst) if p not in indep]
    used = set().union(*(edges_of(p) for p in indep)) if indep else set()
    rest.sort(key=lambda p: (-len(edges_of(p) & used), len(p), p))
    return indep + rest


def shared_links(paths: list[list[str]]) -> dict[tuple[str, str], int]:
    """How many paths of the set cross each link (links crossed by one path left out)."""
    count: dict[tuple[str, str], int] = {}
    for p in paths:
        for e in edges_of(p):
            count[e] = count.get(e, 0) + 1
    return {e: n for e, n in sorted(count.items()) if n > 1}


def max_flow(topo: ControllerTopology, src: str, dst: str) -> float:
    """The known answer: h1 -> h2 max-flow in Mbit/s over the links' rates (both directions)."""
    g = _hosts_as_ends(_simple(topo.graph()), src, dst)
    d = nx.DiGraph()
    for u, v, data in g.edges(data=True):
        d.add_edge(u, v, capacity=data["capacity"])
        d.add_edge(v, u, capacity=data["capacity"])
    return float(nx.maximum_flow_value(d, src, dst))


def remaining_max_flow(topo: ControllerTopology, src: str, dst: str, lost: int) -> float:
    """The max-flow once link ``lost`` (its index) is gone: what a failure leaves to recover to."""
    rest = replace(topo, links=[l for i, l in enumerate(topo.links) if i != lost])
    try:
        return max_flow(rest, src, dst)
    except nx.NetworkXError:  # the failure cut src off entirely
        return 0.0


# --------------------------------------------------------------------------- flow rules


@dataclass(frozen=True)
class Rule:
    """One OpenFlow rule, in terms both POX and ovs-ofctl can render."""

    switch: str
    priority: int
    match: tuple[tuple[str, Any], ...]  # (field, value): dl_type, nw_proto, nw_src, nw_dst, tp_src, tp_dst, arp_tpa
    out_port: int
    cookie: int = 0
    group: int | None = None  # output to this select group instead of out_port (ECMP)

    def match_dict(self) -> dict[str, Any]:
        return dict(self.match)

    def ofctl(self) -> str:
        """ovs-ofctl add-flow syntax (OpenFlow 1.0 fields; a group action needs OpenFlow 1.1+)."""
        names = {"dl_type": "dl_type", "nw_proto": "nw_proto", "nw_src": "nw_src", "nw_dst": "nw_dst",
                 "tp_src": "tp_src", "tp_dst": "tp_dst"}
        parts = [f"cookie={self.cookie:#x}", f"priority={self.priority}"]
        for k, v in self.match:
            parts.append(f"{names[k]}={v:#06x}" if k == "dl_type" else f"{names[k]}={v}")
        action = f"group:{self.group}" if self.group is not None else f"output:{self.out_port}"
        return ",".join(parts) + f",actions={action}"


#: What a select group hashes: the TCP 5-tuple (the protocol is implied by the rule's match),
#: so every subflow of an MPTCP connection -- its own source port -- is hashed on its own.
ECMP_HASH_FIELDS = ("ip_src", "ip_dst", "tcp_src", "tcp_dst")


@dataclass(frozen=True)
class Group:
    """An OpenFlow select group: one bucket per equal-cost next hop; OVS picks the bucket by a
    hash of ECMP_HASH_FIELDS, as a datacenter switch's ECMP does.

    ``basis`` seeds the hash, one per switch, as real switches seed theirs: OVS chooses a bucket
    by rendezvous hashing of the flow's hash with the bucket ids, so with one basis everywhere an
    edge switch that sends a flow to its first uplink makes every switch after it pick its first
    uplink too (ECMP polarization) -- measured: 8 subflows h1 -> h16 on FatTree k=4 crossed 2 of
    the 4 core switches."""

    switch: str
    group_id: int
    ports: tuple[int, ...]
    basis: int = 0

    def ofctl(self) -> str:
        """ovs-ofctl add-group syntax (OpenFlow 1.5: selection_method is an OF1.5 group property)."""
        buckets = ",".join(f"bucket=output:{p}" for p in self.ports)
        return (f"group_id={self.group_id},type=select,selection_method=hash,selection_method_param={self.basis},"
                f"fields({','.join(ECMP_HASH_FIELDS)}),{buckets}")


def hash_basis(switch: str) -> int:
    """A switch's own ECMP hash seed: a 32-bit hash of its name (deterministic, different per switch)."""
    return zlib.crc32(switch.encode())


ARP, IPV4, TCP = 0x0806, 0x0800, 6
PRIO_SUBFLOW, PRIO_PAIR, PRIO_DEFAULT = 300, 200, 100
#: cookie = COOKIE_FWD + i for subflow i from client to server, COOKIE_REV + i back.
COOKIE_FWD, COOKIE_REV, COOKIE_DEFAULT = 0x100, 0x200, 0x1
#: cookie of the ECMP rules that point at a select group
COOKIE_ECMP = 0x2


def hop_ports(topo: ControllerTopology, path: list[str]) -> list[tuple[str, int, int]]:
    """(switch, in_port, out_port) for every switch on a path."""
    g = topo.graph()
    out = []
    for prev, sw, nxt in zip(path, path[1:], path[2:]):
        def port_to(u: str, v: str) -> int:
            k = min(g.get_edge_data(u, v))  # lowest-index link between them
            l: TopoLink = g.edges[u, v, k]["link"]
            return l.a_port if l.a == u else l.b_port
        out.append((sw, port_to(sw, prev), port_to(sw, nxt)))
    return out


def host_ips(topo: ControllerTopology, host: str) -> list[str]:
    return [i["ip"] for i in topo.hosts[host] if i.get("ip")]


def default_rules(topo: ControllerTopology) -> list[Rule]:
    """ARP and IP delivery to every host address along a shortest-path tree toward it: no
    flooding, so meshed topologies have no loops."""
    rules = []
    g = _simple(topo.graph())
    for host in sorted(topo.hosts):
        for intf in topo.hosts[host]:
            ip, sw = intf.get("ip"), intf["switch"]
            if not ip:
                continue
            sub = g.subgraph([n for n, d in g.nodes(data=True) if d.get("kind") == "switch"])
            dist = nx.shortest_path(sub, target=sw) if sw in sub else {}
            for s in sorted(dist):
                p = dist[s]
                port = intf["switch_port"] if len(p) == 1 else _port(topo, p[0], p[1])
                for dl in (ARP, IPV4):  # for ARP, OpenFlow 1.0's nw_dst is the target address
                    rules.append(Rule(s, PRIO_DEFAULT, (("dl_type", dl), ("nw_dst", ip)), port, COOKIE_DEFAULT))
    return rules


def _port(topo: ControllerTopology, u: str, v: str) -> int:
    g = topo.graph()
    k = min(g.get_edge_data(u, v))
    l: TopoLink = g.edges[u, v, k]["link"]
    return l.a_port if l.a == u else l.b_port


def subflow_rules(topo: ControllerTopology, paths: list[list[str]], client_ip: str, server_ip: str,
                  port_subflow: dict[int, int]) -> list[Rule]:
    """Subflow i (to a server port mapped to i) along paths[i % len(paths)], both directions."""
    rules = []
    for port, i in sorted(port_subflow.items()):
        path = paths[i % len(paths)]
        for sw, in_port, out_port in hop_ports(topo, path):
            fwd = (("dl_type", IPV4), ("nw_proto", TCP), ("nw_src", client_ip), ("nw_dst", server_ip), ("tp_dst", port))
            rev = (("dl_type", IPV4), ("nw_proto", TCP), ("nw_src", server_ip), ("nw_dst", client_ip), ("tp_src", port))
            rules.append(Rule(sw, PRIO_SUBFLOW, fwd, out_port, COOKIE_FWD + i))
            rules.append(Rule(sw, PRIO_SUBFLOW, rev, in_port, COOKIE_REV + i))
    return rules


def pair_rules(topo: ControllerTopology, paths: list[list[str]], pairs: list[tuple[str, str]]) -> list[Rule]:
    """Address pair k pinned (all IP traffic, both ways) to paths[k % len(paths)]."""
    rules = []
    for k, (cip, sip) in enumerate(pairs):
        path = paths[k % len(paths)]
        for sw, in_port, out_port in hop_ports(topo, path):
            rules.append(Rule(sw, PRIO_PAIR, (("dl_type", IPV4), ("nw_src", cip), ("nw_dst", sip)), out_port, COOKIE_FWD + k))
            rules.append(Rule(sw, PRIO_PAIR, (("dl_type", IPV4), ("nw_src", sip), ("nw_dst", cip)), in_port, COOKIE_REV + k))
    return rules


def proactive_rules(topo: ControllerTopology) -> tuple[list[Rule], list[list[str]]]:
    """Every rule the static controller installs, and the path set they use.

    Per host interface the path set runs between the two interfaces' switches; single-homed
    client and server get one rule set per server port; multi-homed ones are pinned per address
    pair.
    """
    paths = path_set(topo, topo.client, topo.server, topo.policy)
    rules = default_rules(topo)
    cips, sips = host_ips(topo, topo.client), host_ips(topo, topo.server)
    if len(cips) > 1 and len(sips) > 1:
        rules += pair_rules(topo, paths, list(zip(cips, sips)))
    else:
        rules += subflow_rules(topo, paths, cips[0], sips[0], topo.port_subflow)
    return rules, paths


def ecmp_next_hops(topo: ControllerTopology) -> dict[tuple[str, str], tuple[int, ...]]:
    """(switch, host address) -> the ports of every next hop on a shortest path toward it
    (one port per parallel link), sorted: the equal-cost set ECMP chooses from."""
    g = topo.graph()
    switches = g.subgraph([n for n, d in g.nodes(data=True) if d.get("kind") == "switch"])
    out: dict[tuple[str, str], tuple[int, ...]] = {}
    for host in sorted(topo.hosts):
        for intf in topo.hosts[host]:
            ip, sw = intf.get("ip"), intf["switch"]
            if not ip or sw not in switches:
                continue
            dist = nx.single_source_shortest_path_length(switches, sw)
            for s, d in dist.items():
                if s == sw:
                    out[(s, ip)] = (intf["switch_port"],)
                    continue
                ports = []
                for _, n, data in switches.edges(s, data=True):
                    if dist.get(n) == d - 1:
                        l: TopoLink = data["link"]
                        ports.append(l.a_port if l.a == s else l.b_port)
                out[(s, ip)] = tuple(sorted(ports))
    return out


def ecmp_rules(topo: ControllerTopology) -> tuple[list[Rule], list[Group]]:
    """ECMP: ARP along the shortest-path tree toward each address (default_rules' ARP half);
    IP toward each address through a select group of its equal-cost next hops (a plain output
    where there is one). Groups are shared by destinations with the same next-hop set."""
    rules = [r for r in default_rules(topo) if r.match_dict().get("dl_type") == ARP]
    groups: dict[tuple[str, tuple[int, ...]], Group] = {}
    per_switch: dict[str, int] = {}
    for (sw, ip), ports in sorted(ecmp_next_hops(topo).items()):
        match = (("dl_type", IPV4), ("nw_dst", ip))
        if len(ports) == 1:
            rules.append(Rule(sw, PRIO_DEFAULT, match, ports[0], COOKIE_DEFAULT))
            continue
        key = (sw, ports)
        if key not in groups:
            per_switch[sw] = per_switch.get(sw, 0) + 1
            groups[key] = Group(sw, per_switch[sw], ports, hash_basis(sw))
        rules.append(Rule(sw, PRIO_DEFAULT, match, ports[0], COOKIE_ECMP, group=groups[key].group_id))
    return rules, list(groups.values())


def ecmp_choice(ports: tuple[int, ...], five_tuple: tuple[str, int, str, int], basis: int) -> int:
    """The port a hashing switch picks for one TCP 5-tuple (src, sport, dst, dport) among its
    equal-cost ``ports``: BLAKE2s of the tuple keyed with the switch's basis, modulo the number
    of ports. What a reactive controller (POX, OpenFlow 1.0: no select groups) computes per
    switch to do ECMP as a hash would; deterministic, so each switch keeps a 5-tuple on one port.
    (Not CRC-32 with the basis as its seed: CRC is linear, so two seeds differ by a constant and
    every switch would make the same choice modulo 2 -- polarization again.)"""
    src, sport, dst, dport = five_tuple
    digest = hashlib.blake2s(f"{src}|{sport}|{dst}|{dport}".encode(), digest_size=8,
                             key=(basis & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")).digest()
    return ports[int.from_bytes(digest, "big") % len(ports)]

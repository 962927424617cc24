"""The path core on known graphs: no POX, no Mininet, no root."""

import itertools
import random

import networkx as nx
import pytest

from mptcplab.paths import (
    COOKIE_FWD, COOKIE_REV, POLICIES, TopoLink, ControllerTopology, dependent_paths, edges_of, independent_paths,
    max_flow, path_set, proactive_rules, shared_links,
)


def topo_from(edges, bw=5.0, hosts=("h1", "h2"), attach=None) -> ControllerTopology:
    """Hosts h1/h2 hang off attach[0]/attach[1] (unshaped); switch edges get `bw`."""
    switches = sorted({n for e in edges for n in e})
    attach = attach or (switches[0], switches[-1])
    port = {n: 1 for n in switches}
    links, host_info = [], {}
    for h, sw in zip(hosts, attach):
        links.append(TopoLink(h, 0, sw, port[sw]))
        host_info[h] = [{"name": f"{h}-eth0", "ip": f"10.0.1.{len(host_info) + 1}", "switch": sw,
                         "switch_port": port[sw]}]
        port[sw] += 1
    for a, b in edges:
        links.append(TopoLink(a, port[a], b, port[b], bw))
        port[a] += 1
        port[b] += 1
    return ControllerTopology(hosts=host_info, switches={s: f"{i + 1:016x}" for i, s in enumerate(switches)},
                    links=links, client=hosts[0], server=hosts[1], port_subflow={5201: 0, 20011: 1, 20012: 2})


THREE_PATH = [("s1", "s2"), ("s1", "s3"), ("s2", "s3"), ("s2", "s4"), ("s3", "s4")]


def test_three_path_sets():
    t = topo_from(THREE_PATH)
    a, b, c = ["h1", "s1", "s2", "s4", "h2"], ["h1", "s1", "s3", "s4", "h2"], ["h1", "s1", "s2", "s3", "s4", "h2"]
    assert independent_paths(t, "h1", "h2") == [a, b]
    assert path_set(t, "h1", "h2", "mixed")[:3] == [a, b, c]
    assert path_set(t, "h1", "h2", "shortest") == [a]
    dep = dependent_paths(t, "h1", "h2")
    assert dep[0] == a and len(edges_of(dep[1]) & edges_of(a)) >= 2  # shares host link and s1-s2
    # C shares one bottleneck with A (s1-s2) and one with B (s3-s4)
    assert shared_links([a, c]) == {("h1", "s1"): 2, ("h2", "s4"): 2, ("s1", "s2"): 2}
    assert shared_links([b, c]) == {("h1", "s1"): 2, ("h2", "s4"): 2, ("s3", "s4"): 2}
    assert max_flow(t, "h1", "h2") == 10.0


@pytest.mark.parametrize("seed", range(12))
def test_disjoint_paths_equal_unit_max_flow(seed):
    rng = random.Random(seed)
    g = nx.gnm_random_graph(8, rng.randint(9, 18), seed=seed)
    while not nx.is_connected(g):  # draw again from the same seeded stream: every seed tests a graph
        g = nx.gnm_random_graph(8, rng.randint(9, 18), seed=rng.randrange(1 << 30))
    names = {n: f"s{n}" for n in g.nodes}
    edges = [(names[u], names[v]) for u, v in g.edges]
    t = topo_from(edges, bw=1.0, attach=("s0", "s7"))
    paths = independent_paths(t, "h1", "h2")
    inner = nx.Graph(edges)
    assert len(paths) == nx.edge_connectivity(inner, "s0", "s7")  # = unit-capacity max-flow
    for p, q in itertools.combinations(paths, 2):
        inner_edges = lambda x: edges_of(x[1:-1])  # noqa: E731  (the shared host links excluded)
        assert not inner_edges(p) & inner_edges(q)
    assert max_flow(t, "h1", "h2") == pytest.approx(len(paths) * 1.0)


def test_capacity_aware_choice():
    # two disjoint routes s1-s2-s4 (5 Mbit/s) and s1-s3-s4 (5), and a direct fat s1-s4 (100)
    t = topo_from([("s1", "s2"), ("s2", "s4"), ("s1", "s3"), ("s3", "s4")], bw=5.0)
    t.links.append(TopoLink("s1", 9, "s4", 9, 100.0))
    paths = independent_paths(t, "h1", "h2")
    assert ["h1", "s1", "s4", "h2"] in paths and len(paths) == 3


@pytest.mark.parametrize("policy", POLICIES)
def test_deterministic(policy):
    runs = {tuple(map(tuple, path_set(topo_from(THREE_PATH), "h1", "h2", policy))) for _ in range(5)}
    assert len(runs) == 1


def test_static_rules_follow_the_paths():
    t = topo_from(THREE_PATH)
    rules, paths = proactive_rules(t)
    for subflow, path in enumerate(paths[:3]):
        fwd = {r.switch for r in rules if r.cookie == COOKIE_FWD + subflow}
        rev = {r.switch for r in rules if r.cookie == COOKIE_REV + subflow}
        assert fwd == rev == set(path[1:-1])
    text = rules[0].ofctl()
    assert text.startswith("cookie=0x1,priority=100,dl_type=0x0806,nw_dst=") and "actions=output:" in text


def test_unknown_policy():
    with pytest.raises(ValueError, match="unknown policy"):
        path_set(topo_from(THREE_PATH), "h1", "h2", "fastest")


def test_topology_json_round_trip():
    t = topo_from(THREE_PATH)
    assert ControllerTopology.from_json(t.to_json()) == t

"""Generated topologies: FatTree(k) and dumbbell, expanded into ordinary specs (pure), and a
dumbbell on a real network (root)."""

import itertools
import json

import networkx as nx
import pandas as pd
import pytest
import yaml

from helpers import REPO, cli, write_spec
from mptcplab.errors import SpecError
from mptcplab.plan import make_plan
from mptcplab.spec import parse_spec


def spec_with(topology: dict, client: str, server: str, **extra) -> dict:
    return {"name": "gen", "topology": topology, "traffic": {"client": client, "server": server}, **extra}


@pytest.mark.parametrize("k", [2, 4, 6, 8])
def test_fattree_counts(k):
    exp = parse_spec(spec_with({"generate": {"kind": "fattree", "k": k}}, "h1", f"h{k ** 3 // 4}",
                               controller={"kind": "static"}))
    topo = exp.topology
    assert len(topo.hosts) == k ** 3 // 4
    assert len(topo.switches) == 5 * k * k // 4          # k^2/2 edge + k^2/2 aggregation + k^2/4 core
    assert len(topo.links) == 3 * k ** 3 // 4            # one layer of k^3/4 links per level
    assert topo.generated_from.kind == "fattree" and topo.generated_from.k == k


def test_fattree_k4_paths_between_pods_are_one_per_core_switch():
    topo = yaml.safe_load((REPO / "topologies/fattree-k4.yaml").read_text())
    exp = parse_spec(spec_with(topo, "h1", "h16", controller={"kind": "static"}))
    g = nx.Graph([tuple(link.endpoints) for link in exp.topology.links])
    pods = {f"h{i + 1}": i // 4 for i in range(16)}
    for a, b in itertools.combinations(sorted(pods), 2):
        paths = list(nx.all_shortest_paths(g, a, b))
        if pods[a] != pods[b]:
            assert len(paths) == 4 and len({p[3] for p in paths}) == 4, (a, b)  # (k/2)^2, via distinct cores
        else:
            assert len(paths) in (1, 2)                   # same edge switch, or via the pod's 2 aggs
    assert {link.bw for link in exp.topology.links} == {10}
    plan = make_plan(exp)
    assert plan.server_address == "10.0.1.16" and len(plan.links) == 48


def test_fattree_without_controller_is_refused_for_its_loops():
    from mptcplab.plan import PlanError

    exp = parse_spec(spec_with({"generate": {"kind": "fattree", "k": 4}}, "h1", "h16"))
    with pytest.raises(PlanError) as e:
        make_plan(exp)
    assert "the switches form a loop" in e.value.problems[0]


def test_dumbbell_and_the_recorded_expansion_roundtrips():
    topo = yaml.safe_load((REPO / "topologies/dumbbell.yaml").read_text())
    exp = parse_spec(spec_with(topo, "l1", "r2"))
    assert sorted(exp.topology.hosts) == ["l1", "l2", "r1", "r2"] and exp.topology.switches == ["sl", "sr"]
    bottleneck = [link for link in exp.topology.links if set(link.endpoints) == {"sl", "sr"}]
    assert len(bottleneck) == 1 and (bottleneck[0].bw, bottleneck[0].delay) == (10, 20)
    again = parse_spec(exp.model_dump(mode="json"))  # what spec.yaml records reads back the same
    assert again == exp


@pytest.mark.parametrize("gen,message", [
    ({"kind": "fattree", "k": 5}, "generate: k: 5: a FatTree needs an even k from 2 to 8"),
    ({"kind": "ring"}, "generate.kind: 'ring' is not allowed"),
    ({"kind": "dumbbell", "links": {"core": {"bw": 1}}}, "generate: links: core: not a layer of a dumbbell"),
    ({"kind": "dumbbell", "links": {"access": {"loss": 200}}}, "generate.links.access.loss: 200 is not between"),
])
def test_bad_generators_name_the_field(gen, message):
    with pytest.raises(SpecError) as e:
        parse_spec(spec_with({"generate": gen}, "l1", "r1"))
    assert any(message in p for p in e.value.problems), e.value.problems


def test_generate_and_a_listed_topology_are_not_mixed():
    with pytest.raises(SpecError) as e:
        parse_spec(spec_with({"generate": {"kind": "dumbbell"}, "switches": ["s1"]}, "l1", "r1"))
    assert "give either generate or hosts/switches/links" in e.value.problems[0]


@pytest.mark.root
def test_dumbbell_runs_on_a_real_network(tmp_path, no_leftovers):
    """TCP from l1 to r1 through the 10 Mbit/s bottleneck of topologies/dumbbell.yaml."""
    def mutate(spec):
        spec["topology"] = str(REPO / "topologies/dumbbell.yaml")
        spec["traffic"].update(client="l1", server="r1", protocols=["tcp"])
        spec["mptcp"] = {"enabled": False}
        spec["outputs"]["formats"] = ["png"]

    out = tmp_path / "run"
    r = cli("run-experiment", str(write_spec(tmp_path, traffic={"duration": 3, "repetitions": 1}, mutate=mutate)),
            "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    df = pd.read_csv(out / "summary.csv")
    assert df["goodput_mbps"].between(0.8 * 10 * 1448 / 1514, 10 * 1448 / 1514 * 1.01).all(), df["goodput_mbps"]
    check = json.loads((out / "selfcheck.json").read_text())
    assert check["ok"] and round(check["paths"][0]["measured_rtt_ms"]) in range(40, 44)
    recorded = yaml.safe_load((out / "spec.yaml").read_text())["topology"]
    assert recorded["generated_from"]["kind"] == "dumbbell" and len(recorded["links"]) == 5

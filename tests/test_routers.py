"""Routers (an L3 node kind): the spec's checks, the plan's addresses and routes (pure), and a real
MPTCP run through two routers with the self-check passing through them (root)."""

import json

import pandas as pd
import pytest
import yaml

from helpers import REPO, cli
from test_events import problems
from mptcplab.errors import PlanError
from mptcplab.plan import make_plan
from mptcplab.routes import routes
from mptcplab.spec import load_spec, parse_spec


def chain(routers=("r1", "r2"), left_switch=False, **extra) -> dict:
    """h1 - [s1 -] r1 - ... - rN - h2, one link per segment, 10 Mbit/s, 2 ms."""
    nodes = ["h1", *(["s1"] if left_switch else []), *routers, "h2"]
    links = [{"endpoints": [a, b], "bw": 10, "delay": 2, "queue": 100} for a, b in zip(nodes, nodes[1:])]
    topo = {"hosts": {"h1": 1, "h2": 1}, "routers": list(routers), "links": links,
            **({"switches": ["s1"]} if left_switch else {})}
    spec = {"name": "routed", "topology": topo, "traffic": {"client": "h1", "server": "h2", "duration": 2,
                                                             "repetitions": 1, "protocols": ["mptcp"]},
            "mptcp": {"limits": {"subflows": 2, "add_addr_accepted": 2}}}
    spec.update(extra)
    return spec


def test_a_router_needs_two_links_and_a_name_of_its_own():
    spec = chain()
    spec["topology"]["routers"].append("r9")
    assert any("routers: r9 has 0 link(s); a router joins segments and needs at least 2" in p
               for p in problems(spec)), problems(spec)
    spec = chain()
    spec["topology"]["routers"].append("h1")
    assert any("routers: 'h1' is also a host" in p for p in problems(spec)), problems(spec)
    spec = chain()
    spec["topology"]["routers"] = ["r1", "r2", "bad-name"]
    assert any("topology.routers[2]: 'bad-name' is not a valid node name" in p for p in problems(spec))
    spec = chain()
    spec["topology"]["links"][0]["endpoints"] = ["h1", "r7"]
    assert any("'r7' is neither a host nor a switch nor a router" in p for p in problems(spec))


def test_routers_split_segments_and_take_the_top_addresses():
    plan = make_plan(parse_spec(chain(left_switch=True)))
    assert plan.segments == ("10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24")
    h1, h2 = plan.hosts
    assert [i.address for i in h1.intfs + h2.intfs] == ["10.0.1.1/24", "10.0.3.1/24"]
    r1, r2 = plan.routers
    assert [(i.name, i.address) for i in r1.intfs] == [("r1-eth0", "10.0.1.254/24"), ("r1-eth1", "10.0.2.254/24")]
    assert [(i.name, i.address) for i in r2.intfs] == [("r2-eth0", "10.0.2.253/24"), ("r2-eth1", "10.0.3.254/24")]
    assert plan.server_address == "10.0.3.1"   # no shared segment: the routed address


def test_every_node_gets_a_route_to_every_segment_it_is_not_on():
    plan = make_plan(parse_spec(chain(("r1", "r2", "r3"))))
    h1 = plan.host("h1")
    # h1's own table (100, for its address) and its main table, both via r1
    assert {(r.table, r.dst, r.via, r.dev, r.routers) for r in h1.routes} == {
        (t, f"10.0.{k}.0/24", "10.0.1.254", "h1-eth0", k - 1) for t in (100, None) for k in (2, 3, 4)}
    r2 = plan.router("r2")
    assert [(r.dst, r.via, r.dev) for r in r2.routes] == [
        ("10.0.1.0/24", "10.0.2.254", "r2-eth0"), ("10.0.4.0/24", "10.0.3.253", "r2-eth1")]
    # the self-check's route crosses every link, router by router
    (route,) = routes(plan)
    assert [(l.name, along) for l, along in route.hops] == [
        ("h1-r1", True), ("r1-r2", True), ("r2-r3", True), ("r3-h2", True)]
    assert route.expected_rtt_ms() == pytest.approx(8 * 2 + 8 * 98 * 8 / 10e3, abs=0.01)
    assert plan.to_dict()["routers"][1]["routes"][0]["via"] == "10.0.2.254"   # in plan.json


def test_shortest_next_hop_with_a_deterministic_tie_break():
    """A ring of four routers: from r1 the segment between r3 and r4 is two routers away either
    way; the lower segment number wins, every time."""
    links = [{"endpoints": [a, b]} for a, b in (("h1", "r1"), ("r1", "r2"), ("r2", "r3"), ("r3", "r4"),
                                                 ("r4", "r1"), ("r3", "h2"))]
    spec = chain()
    spec["topology"] = {"hosts": {"h1": 1, "h2": 1}, "routers": ["r1", "r2", "r3", "r4"], "links": links}
    plan = make_plan(parse_spec(spec))
    to_h2 = next(r for r in plan.router("r1").routes if r.dst == plan.host("h2").intfs[0].subnet)
    assert (to_h2.dev, to_h2.routers) == ("r1-eth1", 2)    # via r2 (segment 1) rather than r4 (segment 4)
    assert make_plan(parse_spec(spec)).to_dict() == plan.to_dict()


def test_hosts_without_a_router_keep_their_routes():
    plan = make_plan(load_spec(REPO / "experiments/dual-path.yaml"))
    assert plan.routers == () and all(h.routes == () for h in plan.hosts)


def test_routed_plans_refuse_what_they_cannot_do():
    spec = chain()
    spec["topology"]["hosts"]["h1"] = {"addresses": ["192.168.7.1/24"]}
    with pytest.raises(PlanError, match=r"topology.hosts.h1.addresses: explicit addresses are not supported"):
        make_plan(parse_spec(spec))
    spec = chain(left_switch=True, controller={"kind": "static", "policy": "shortest"})
    with pytest.raises(PlanError, match="controller.kind: static .* use controller: {kind: none}"):
        make_plan(parse_spec(spec))


def test_the_routed_chain_experiment_plans_and_dry_runs():
    plan = make_plan(load_spec(REPO / "experiments/routed-chain.yaml"))
    assert [r.name for r in plan.routers] == ["r1", "r2", "r3"] and plan.server_address == "10.0.4.1"
    r = cli("run-experiment", "routed-chain", "--dry-run")
    assert "routes through routers" in r.stderr and "10.0.3.254" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.root
def test_mptcp_through_two_routers_with_the_self_check_passing(tmp_path, no_leftovers):
    """h1 - s1 - r1 - r2 - h2: the self-check's pings cross both routers at the RTT the links add
    up to, and an MPTCP iperf3 test completes at the path's rate."""
    spec = chain(left_switch=True, outputs={"dir": str(tmp_path / "results"), "formats": ["png"]})
    path = tmp_path / "routed.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    r = cli("run-experiment", str(path), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    check = json.loads((out / "selfcheck.json").read_text())
    assert check["ok"] and [p["path"] for p in check["paths"]] == ["h1-eth0->h2-eth0"], check
    (row,) = pd.read_csv(out / "summary.csv").to_dict("records")
    assert row["protocol"] == "mptcp" and row["goodput_mbps"] > 0.8 * 10 * 1448 / 1514, row
    meta = json.loads((out / "metadata.json").read_text())
    r1 = meta["network"]["routers"]["r1"]
    assert r1["sysctls"]["net.ipv4.ip_forward"] == "1" and r1["sysctls"]["net.ipv4.icmp_ratelimit"] == "0", r1
    assert any(x.get("dst") == "10.0.3.0/24" and x.get("gateway") == "10.0.2.253" for x in r1["routes"]), r1

"""The plan: deterministic names, addresses, tables, endpoints and test order -- no root."""

from pathlib import Path

import pytest
import yaml

from mptcplab.plan import PlanError, PlanMptcp, PlanEndpoint, expected_subflows, make_plan
from mptcplab.spec import load_spec, parse_spec

REPO = Path(__file__).resolve().parent.parent


def dual():
    return make_plan(load_spec(REPO / "experiments/dual-path.yaml"))


def test_dual_path_layout():
    p = dual()
    h1, h2 = p.hosts
    assert [(i.name, i.address, i.table, i.rule_priority) for i in h1.intfs] == [
        ("h1-eth0", "10.0.1.1/24", 100, 1000), ("h1-eth1", "10.0.2.1/24", 101, 1001)]
    assert [(i.name, i.address) for i in h2.intfs] == [("h2-eth0", "10.0.1.2/24"), ("h2-eth1", "10.0.2.2/24")]
    assert [(l.intf1.name, l.intf2.name) for l in p.links] == [
        ("h1-eth0", "s1-eth1"), ("h1-eth1", "s2-eth1"), ("s1-eth2", "h2-eth0"), ("s2-eth2", "h2-eth1")]
    assert p.server_address == "10.0.1.2"
    assert p.segments == ("10.0.1.0/24", "10.0.2.0/24")
    # the server signals its second address; the client opens one subflow to it
    assert [(e.interface, e.address, e.flags) for e in h2.mptcp.endpoints] == [("h2-eth1", "10.0.2.2", ("signal",))]
    assert h1.mptcp.endpoints == ()
    assert p.expected_subflows == 2
    assert [s.dpid for s in p.switches] == ["0000000000000001", "0000000000000002"]


def test_tests_interleave_protocols():
    assert [t.label for t in dual().tests] == [
        "001-mptcp-r1", "002-tcp-r1", "003-mptcp-r2", "004-tcp-r2", "005-mptcp-r3", "006-tcp-r3"]


def test_deterministic():
    assert dual().to_dict() == dual().to_dict()


def _pm(endpoints=(), subflows=8, accepted=8, enabled=True):
    eps = tuple(PlanEndpoint(interface=f"x-eth{i}", address=f"10.0.{i}.1", flags=tuple(f), id=i + 1)
                for i, f in enumerate(endpoints))
    return PlanMptcp(enabled, eps, subflows, accepted, "default", None)


@pytest.mark.parametrize("client,server,want", [
    (_pm(), _pm([["signal"]]), 2),
    (_pm(), _pm([["signal"], ["signal"]]), 3),
    (_pm(accepted=1), _pm([["signal"], ["signal"]]), 2),
    (_pm(subflows=0), _pm([["signal"]]), 1),
    (_pm([["subflow"]]), _pm(), 2),
    (_pm([["subflow", "fullmesh"], ["subflow", "fullmesh"]]), _pm([["signal"]]), 3),
    (_pm(enabled=False), _pm([["signal"]]), 1),
])
def test_expected_subflows(client, server, want):
    assert expected_subflows(client, server) == want


def test_switch_chain_is_one_segment_and_explicit_addresses():
    spec = {
        "name": "chain",
        "topology": {
            "hosts": {"a": {"addresses": ["192.168.7.1/24"]}, "b": 1},
            "switches": ["s1", "s2"],
            "links": [{"endpoints": ["a", "s1"]}, {"endpoints": ["s1", "s2"]}, {"endpoints": ["s2", "b"]}],
        },
        "traffic": {"client": "a", "server": "b"},
    }
    p = make_plan(parse_spec(spec))
    assert p.host("a").intfs[0].address == "192.168.7.1/24"
    assert p.host("b").intfs[0].address == "10.0.1.1/24"  # first automatic address on segment 0
    assert p.links[1].intf1.name == "s1-eth2" and p.links[1].intf2.name == "s2-eth1"
    assert len(p.segments) == 1


def test_client_without_path_to_server():
    spec = {
        "name": "split",
        "topology": {
            "hosts": {"a": 1, "b": 1},
            "switches": ["s1", "s2"],
            "links": [{"endpoints": ["a", "s1"]}, {"endpoints": ["s2", "b"]}],
        },
        "traffic": {"client": "a", "server": "b"},
    }
    with pytest.raises(PlanError) as e:
        make_plan(parse_spec(spec))
    assert "shares no layer-2 segment" in e.value.problems[0]


def test_duplicate_explicit_addresses():
    topo = yaml.safe_load((REPO / "topologies/dual-path.yaml").read_text())
    topo["hosts"]["h1"] = {"addresses": ["10.0.1.1/24", "10.0.2.1/24"]}
    topo["hosts"]["h2"] = {"addresses": ["10.0.1.1/24", "10.0.2.2/24"]}
    with pytest.raises(PlanError) as e:
        make_plan(parse_spec({"name": "d", "topology": topo, "traffic": {"client": "h1", "server": "h2"}}))
    assert "address 10.0.1.1 is also used by h1-eth0" in e.value.problems[0]


def test_dpids_are_unique_per_run():
    exp = load_spec(REPO / "experiments/dual-path.yaml")
    a, b = make_plan(exp, "20261127-101500-abcd"), make_plan(exp, "20261127-101500-abce")
    da, db = [s.dpid for s in a.switches], [s.dpid for s in b.switches]
    assert len(set(da)) == 2 and not set(da) & set(db)
    assert all(len(d) == 16 and int(d, 16) for d in da + db)


def test_directions_are_resolved_and_typed():
    topo = yaml.safe_load((REPO / "topologies/dual-path.yaml").read_text())
    topo["links"][0].update(bw=10, delay=5, up={"delay": 30}, down={"bw": 2})
    p = make_plan(parse_spec({"name": "d", "topology": topo, "traffic": {"client": "h1", "server": "h2"}}))
    link = p.links[0]
    assert (link.up.bw, link.up.delay, link.down.bw, link.down.delay) == (10, 30, 2, 5)
    assert (link.base.bw, link.base.delay) == (10, 5)


def test_more_endpoints_than_the_kernel_keeps_is_refused():
    """The in-kernel path manager keeps 8 endpoints per namespace (ERANGE beyond): a variant whose
    extra subflows push the server past that is refused at plan time, not mid-run."""
    data = yaml.safe_load((REPO / "experiments/dual-path.yaml").read_text())
    data["topology"] = yaml.safe_load((REPO / "topologies/dual-path.yaml").read_text())
    data["mptcp"]["limits"] = {"subflows": 8, "add_addr_accepted": 8}
    data["variants"] = [{"name": "many", "extra_subflows": 7}, {"name": "fine", "extra_subflows": 6}]
    data["mptcp"]["hosts"] = {"h2": {"endpoints": {"h2-eth0": ["signal"], "h2-eth1": ["signal"]}}}
    with pytest.raises(PlanError) as e:
        make_plan(parse_spec(data))
    assert "mptcp.hosts.h2: 9 MPTCP endpoints" in e.value.problems[0] and "at most 8" in e.value.problems[0]
    data["variants"] = data["variants"][1:]
    assert make_plan(parse_spec(data)).tests[0].expected_subflows > 1


def test_the_least_rto_reaches_every_host_and_is_bounded():
    """mptcp.rto_min_ms (net.ipv4.tcp_rto_min_us in each host's namespace): how soon a subflow on
    a failed path times out -- the knob recovery after a cut depends on (bench/events.py)."""
    data = yaml.safe_load((REPO / "experiments/dual-path.yaml").read_text())
    data["topology"] = yaml.safe_load((REPO / "topologies/dual-path.yaml").read_text())
    data["mptcp"]["rto_min_ms"] = 50
    plan = make_plan(parse_spec(data))
    assert [h.mptcp.rto_min_ms for h in plan.hosts] == [50, 50]
    assert [h.mptcp.rto_min_ms for h in dual().hosts] == [None, None]  # the kernel's default, recorded
    for bad in (0, 5000):
        data["mptcp"]["rto_min_ms"] = bad
        with pytest.raises(Exception, match="rto_min_ms"):
            parse_spec(data)

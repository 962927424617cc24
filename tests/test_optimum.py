"""The optimum of concurrent flows (max concurrent flow LP) and the fairness measures, on small
topologies whose answer is known by hand. Pure: no network, no root."""

import math
import time

import pytest

from mptcplab.optimum import (
    Optimum, alone_mbps, ecmp_fluid_fraction, fraction_of_optimal, jain, max_concurrent_flow, max_min_fair, normalized_jain,
)
from mptcplab.paths import ControllerTopology, TopoLink, max_flow
from mptcplab.plan import controller_topology, make_plan
from mptcplab.spec import parse_spec
from test_pure_stages import run_blocked

TEN = {"bw": 10}


def generated(kind: str, client: str, server: str, **generate) -> ControllerTopology:
    """A generated topology as the controller sees it: spec -> plan -> controller topology."""
    exp = parse_spec({"name": "optimum", "topology": {"generate": {"kind": kind, **generate}},
                      "traffic": {"client": client, "server": server}, "controller": {"kind": "static"}})
    return controller_topology(make_plan(exp), 5201)


def dumbbell(pairs: int) -> ControllerTopology:
    """l1..ln -> sl =10 Mbit/s= sr -> r1..rn, access links 100 Mbit/s."""
    return generated("dumbbell", "l1", "r1", pairs=pairs, links={"access": {"bw": 100}, "bottleneck": TEN})


def fattree4() -> ControllerTopology:
    """FatTree k=4, 10 Mbit/s everywhere; pod p holds h(4p+1)..h(4p+4)."""
    return generated("fattree", "h1", "h16", k=4, links={"edge": TEN, "aggregation": TEN, "core": TEN})


def hand(links: list[tuple[str, str, float | None]]) -> ControllerTopology:
    """A topology from (a, b, Mbit/s) links; nodes named h* are hosts, the others switches.
    Two entries for the same two nodes are two parallel links."""
    port: dict[str, int] = {}
    topo_links, hosts = [], {}
    for a, b, bw in links:
        pa, pb = port.get(a, 0) + 1, port.get(b, 0) + 1
        port[a], port[b] = pa, pb
        topo_links.append(TopoLink(a, pa, b, pb, bw))
        for me, other, other_port in ((a, b, pb), (b, a, pa)):
            if me.startswith("h"):
                hosts.setdefault(me, []).append({"name": f"{me}-eth{len(hosts.get(me, []))}", "ip": "",
                                                 "switch": other, "switch_port": other_port})
    switches = sorted(n for n in port if not n.startswith("h"))
    return ControllerTopology(hosts=hosts, switches={s: f"{i + 1:016x}" for i, s in enumerate(switches)},
                              links=topo_links)


# --------------------------------------------------------------------------- Jain's index


@pytest.mark.parametrize("values, index", [
    ([7.0, 7.0, 7.0], 1.0),
    ([3.0], 1.0),
    ([1.0, 0.0], 0.5),
    ([9.0, 0.0, 0.0, 0.0], 0.25),  # one of n flows gets everything: 1/n
    ([1.0, 3.0], 16 / 20),
])
def test_jain(values, index):
    assert jain(values) == pytest.approx(index)


@pytest.mark.parametrize("values", [[], [0.0, 0.0], [5.0, None], [5.0, math.nan]])
def test_jain_has_no_index_without_values(values):
    assert jain(values) is None


# --------------------------------------------------------------------------- max concurrent flow


def test_two_flows_share_a_dumbbell_bottleneck():
    opt = max_concurrent_flow(dumbbell(2), [("l1", "r1"), ("l2", "r2")])
    assert opt.demands_mbps == pytest.approx((10, 10))  # alone: the bottleneck, not the 100 Mbit/s access
    assert opt.rate == pytest.approx(0.5)
    assert opt.per_flow_mbps == pytest.approx((5, 5))
    assert opt.total_mbps == pytest.approx(10)


def test_three_flows_share_a_dumbbell_bottleneck():
    opt = max_concurrent_flow(dumbbell(3), [("l1", "r1"), ("l2", "r2"), ("l3", "r3")])
    assert opt.per_flow_mbps == pytest.approx((10 / 3,) * 3)
    assert opt.total_mbps == pytest.approx(10)


def test_opposite_directions_do_not_compete_full_duplex():
    opt = max_concurrent_flow(dumbbell(2), [("l1", "r1"), ("r2", "l2")])
    assert opt.rate == pytest.approx(1.0)
    assert opt.per_flow_mbps == pytest.approx((10, 10))


def test_fattree_has_full_bisection_bandwidth():
    pairs = [(f"h{i + 1}", f"h{(i + 8) % 16 + 1}") for i in range(16)]  # every pair across pods
    opt = max_concurrent_flow(fattree4(), pairs)
    assert opt.rate == pytest.approx(1.0)
    assert opt.per_flow_mbps == pytest.approx((10,) * 16)
    assert opt.total_mbps == pytest.approx(160)


def test_fattree_incast_is_held_by_the_destination_access_link():
    opt = max_concurrent_flow(fattree4(), [("h2", "h1"), ("h5", "h1"), ("h9", "h1"), ("h13", "h1")])
    assert opt.rate == pytest.approx(0.25)
    assert opt.per_flow_mbps == pytest.approx((2.5,) * 4)


def test_fattree_16_flows_solve_well_under_a_second():
    pairs = [(f"h{i + 1}", f"h{(5 * i + 3) % 16 + 1}") for i in range(16)]
    topo = fattree4()
    start = time.perf_counter()
    max_concurrent_flow(topo, pairs)
    assert time.perf_counter() - start < 1.0


SQUARE = [("h1", "s1", 100), ("h3", "s1", 100), ("s1", "s2", 10), ("s2", "s4", 10), ("s1", "s3", 10),
          ("s3", "s4", 10), ("s4", "h2", 100), ("s4", "h4", 100)]


def test_one_flow_uses_both_sides_of_a_square():
    opt = max_concurrent_flow(hand(SQUARE), [("h1", "h2")])
    assert opt.demands_mbps == pytest.approx((20,))
    assert opt.rate == pytest.approx(1.0) and opt.total_mbps == pytest.approx(20)


def test_two_flows_split_a_square():
    opt = max_concurrent_flow(hand(SQUARE), [("h1", "h2"), ("h3", "h4")])
    assert opt.rate == pytest.approx(0.5)
    assert opt.per_flow_mbps == pytest.approx((10, 10))


def test_parallel_links_add_up():
    topo = hand([("h1", "s1", 100), ("s1", "s2", 10), ("s1", "s2", 10), ("s2", "h2", 100)])
    opt = max_concurrent_flow(topo, [("h1", "h2")])
    assert opt.demands_mbps == pytest.approx((20,)) and opt.total_mbps == pytest.approx(20)
    # paths.max_flow keeps only the lowest-numbered of parallel links (the one the path core routes on)
    assert max_flow(topo, "h1", "h2") == pytest.approx(10)


def test_alone_is_paths_max_flow_without_parallel_links():
    topo = fattree4()
    for src, dst in [("h1", "h2"), ("h1", "h3"), ("h1", "h16"), ("h7", "h10")]:
        assert alone_mbps(topo, src, dst) == pytest.approx(max_flow(topo, src, dst)) == pytest.approx(10)
    assert alone_mbps(hand(SQUARE), "h1", "h2") == pytest.approx(max_flow(hand(SQUARE), "h1", "h2"))


# h3 has one interface on each switch: through it, h1 -> h2 would have 100 Mbit/s more
BRIDGE = [("h1", "s1", 100), ("s1", "s2", 10), ("s2", "h2", 100), ("h3", "s1", 100), ("h3", "s2", 100)]


def test_hosts_do_not_forward():
    topo = hand(BRIDGE)
    assert max_concurrent_flow(topo, [("h1", "h2")]).demands_mbps == pytest.approx((10,))
    asked = max_concurrent_flow(topo, [("h1", "h2")], demands=[20])
    assert asked.rate == pytest.approx(0.5) and asked.per_flow_mbps == pytest.approx((10,))


def test_a_multihomed_end_uses_all_its_interfaces():
    two_legs = hand([("h5", "s1", 10), ("h5", "s2", 10), ("s1", "s2", 100), ("s2", "h6", 100)])
    assert alone_mbps(two_legs, "h5", "h6") == pytest.approx(20)
    opt = max_concurrent_flow(hand(BRIDGE), [("h3", "h2"), ("h1", "h2")])
    # h2's 100 Mbit/s access link is shared by demands 100 and 10: lambda = 100 / 110
    assert opt.rate == pytest.approx(100 / 110)


def test_given_demands_scale_and_lambda_stops_at_one():
    topo = dumbbell(2)
    small = max_concurrent_flow(topo, [("l1", "r1"), ("l2", "r2")], demands=[2, 3])
    assert small.rate == 1.0 and small.per_flow_mbps == pytest.approx((2, 3))
    big = max_concurrent_flow(topo, [("l1", "r1"), ("l2", "r2")], demands=[10, 30])
    assert big.rate == pytest.approx(0.25) and big.per_flow_mbps == pytest.approx((2.5, 7.5))


def test_flows_may_share_ends():
    opt = max_concurrent_flow(dumbbell(2), [("l1", "r1"), ("l1", "r2"), ("l2", "r1")])
    assert opt.per_flow_mbps == pytest.approx((10 / 3,) * 3)


@pytest.mark.parametrize("pairs, demands, message", [
    ([], None, "no flows"),
    ([("l1", "nope")], None, "'nope' is not a host"),
    ([("sl", "r1")], None, "'sl' is not a host"),
    ([("l1", "r1"), ("l2", "l2")], None, "flow l2 -> l2: source and destination are the same host"),
    ([("l1", "r1")], [10, 10], "2 demands for 1 flows"),
    ([("l1", "r1"), ("l2", "r2")], [10, 0], "flow l2 -> r2: demand 0"),
])
def test_bad_flows_are_refused_by_name(pairs, demands, message):
    with pytest.raises(ValueError, match=message):
        max_concurrent_flow(dumbbell(2), pairs, demands)


def test_a_flow_without_a_path_is_refused_by_name():
    topo = hand([("h1", "s1", 10), ("h2", "s2", 10)])
    with pytest.raises(ValueError, match="flow h1 -> h2: no path"):
        max_concurrent_flow(topo, [("h1", "h2")])


def test_optimum_to_dict():
    opt = Optimum(rate=0.5, demands_mbps=(10.0, 20.0), per_flow_mbps=(5.0, 10.0))
    assert opt.to_dict() == {"rate": 0.5, "demands_mbps": [10.0, 20.0], "per_flow_mbps": [5.0, 10.0],
                             "total_mbps": 15.0}


# --------------------------------------------------------------------------- judging goodputs

HALF = Optimum(rate=0.5, demands_mbps=(10.0, 10.0), per_flow_mbps=(5.0, 5.0))
UNEQUAL = Optimum(rate=0.25, demands_mbps=(10.0, 30.0), per_flow_mbps=(2.5, 7.5))


def test_fraction_of_optimal():
    assert fraction_of_optimal([4.0, 5.0], HALF) == pytest.approx(0.9)
    assert fraction_of_optimal([2.5, 7.5], UNEQUAL) == pytest.approx(1.0)
    assert fraction_of_optimal([None, 5.0], HALF) is None
    assert fraction_of_optimal([1.0], Optimum(0.0, (10.0,), (0.0,))) is None
    with pytest.raises(ValueError, match="1 goodputs for 2 flows"):
        fraction_of_optimal([5.0], HALF)


def test_normalized_jain_judges_each_flow_against_its_share():
    assert jain([2.5, 7.5]) == pytest.approx(0.8)
    assert normalized_jain([2.5, 7.5], UNEQUAL) == pytest.approx(1.0)  # each got exactly its share
    assert normalized_jain([5.0, 5.0], UNEQUAL) == pytest.approx(jain([2.0, 2 / 3]))
    assert normalized_jain([4.0, 1.0], HALF) == pytest.approx(jain([4.0, 1.0]))  # equal shares
    assert normalized_jain([4.0, None], HALF) is None


def test_optimum_imports_no_network_code():
    r = run_blocked("""
        import mptcplab.optimum
        assert not any(k.split(".")[0] in ("mininet", "pyroute2") for k in sys.modules)
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_each_direction_has_its_own_rate():
    """A link whose two directions differ (spec `up`/`down`): each flow gets its direction's."""
    topo = ControllerTopology(hosts={"a": [{"name": "a-eth0", "ip": "10.0.0.1", "switch": "s1", "switch_port": 1}],
                                     "b": [{"name": "b-eth0", "ip": "10.0.0.2", "switch": "s2", "switch_port": 1}]},
                              switches={"s1": "0000000000000001", "s2": "0000000000000002"},
                              links=[TopoLink("a", 0, "s1", 1), TopoLink("s1", 2, "s2", 2, 10.0, None, 2.0),
                                     TopoLink("s2", 1, "b", 0)])
    assert max_concurrent_flow(topo, [("a", "b")]).per_flow_mbps == pytest.approx((10.0,))
    assert max_concurrent_flow(topo, [("b", "a")]).per_flow_mbps == pytest.approx((2.0,))


def test_max_min_fair_on_known_cases():
    cap = {"x": 10.0, "y": 4.0}
    assert max_min_fair([["x"], ["x"]], cap) == pytest.approx([5, 5])
    # the flow on y is held at 4; the one on x alone takes the rest of x
    assert max_min_fair([["x", "y"], ["x"]], cap) == pytest.approx([4, 6])
    assert max_min_fair([["y"], ["y"], ["x"]], cap) == pytest.approx([2, 2, 10])


def test_ecmp_fluid_model_has_the_datacenter_shape():
    """FatTree k=4, a permutation: more subflows per connection, closer to the optimum (the
    shape of Raiciu et al. 2011, fig. 2), and one subflow -- TCP -- well short of it."""
    from mptcplab.flows import permutation
    import random

    plan = make_plan(parse_spec({"name": "ft", "topology": {"generate": {"kind": "fattree", "k": 4, "links": {
        layer: {"bw": 10} for layer in ("edge", "aggregation", "core")}}},
        "controller": {"kind": "static", "policy": "ecmp"}, "matrix": {"kind": "permutation"}}))
    topo = controller_topology(plan, 5201)
    pairs = permutation([f"h{i}" for i in range(1, 17)], random.Random(1))
    one, eight = (ecmp_fluid_fraction(topo, pairs, n, draws=10) for n in (1, 8))
    assert 0.4 < one < 0.75 and 0.85 < eight <= 1.0 and eight > one + 0.2


def test_bottleneck_groups():
    """Two flows through x (10) and one through y (4) alone: the first two share x, the third is
    held by y; a flow crossing both is held by the tighter one."""
    from mptcplab.optimum import bottleneck_groups

    cap = {"x": 10.0, "y": 4.0}
    assert bottleneck_groups([["x"], ["x"], ["y"]], cap) == ["x", "x", "y"]
    assert bottleneck_groups([["x", "y"], ["y"], ["x"]], cap) == ["y", "y", "x"]

"""Several flows per test, pure parts: flows and traffic matrices expanded, variants applied,
the plan of a multi-flow test, ECMP rules, flow rows; and the launcher that starts flows on one
clock (a real process, no network)."""

import random
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from mptcplab import flows as fl
from mptcplab.errors import PlanError, SpecError
from mptcplab.optimum import Optimum
from mptcplab.paths import ECMP_HASH_FIELDS, ecmp_choice, ecmp_next_hops, ecmp_rules, hash_basis
from mptcplab.plan import controller_topology, make_plan
from mptcplab import traffic as tr
from mptcplab.rows import completion_s, flow_rows, multi_flow_summary
from mptcplab.spec import parse_spec
from mptcplab.traffic import STARTAT, FlowOutcome, FlowsOutcome, at_instant, parse_ping, started_at

HOSTS = [f"h{i}" for i in range(1, 17)]


def fattree(**extra) -> dict:
    return {"name": "ft", "topology": {"generate": {"kind": "fattree", "k": 4, "links": {
        "edge": {"bw": 10}, "aggregation": {"bw": 10}, "core": {"bw": 10}}}},
        "controller": {"kind": "static", "policy": "ecmp"}, **extra}


def dumbbell(**extra) -> dict:
    return {"name": "db", "topology": {"generate": {"kind": "dumbbell", "pairs": 2,
                                                    "links": {"bottleneck": {"bw": 10, "delay": 20}}}}, **extra}


def problems(d: dict) -> list[str]:
    with pytest.raises(SpecError) as e:
        parse_spec(d)
    return e.value.problems


# --------------------------------------------------------------------------- traffic matrices


@pytest.mark.parametrize("seed", range(20))
def test_permutation_is_a_derangement(seed):
    pairs = fl.permutation(HOSTS, random.Random(seed))
    assert [a for a, _ in pairs] == HOSTS                      # every host sends once
    assert sorted(b for _, b in pairs) == sorted(HOSTS)        # and receives once
    assert all(a != b for a, b in pairs)                       # never to itself


def test_matrices_reproduce_for_a_seed_and_differ_between_seeds():
    m = lambda seed, kind="permutation": SimpleNamespace(kind=kind, hosts=None, seed=seed, target=None,  # noqa: E731
                                                         senders=None, per_host=2)
    assert fl.matrix_pairs(m(7), HOSTS) == fl.matrix_pairs(m(7), HOSTS)
    assert fl.matrix_pairs(m(7), HOSTS) != fl.matrix_pairs(m(8), HOSTS)
    assert fl.matrix_pairs(m(3, "random"), HOSTS) == fl.matrix_pairs(m(3, "random"), HOSTS)
    # the draw depends on the seed only: the expansion recorded in a run is the one rerun later
    a = parse_spec(fattree(matrix={"kind": "permutation", "seed": 5}))
    assert [(f.src, f.dst) for f in fl.expand(a)] == fl.permutation(HOSTS, random.Random(5))


def test_random_incast_all_to_all():
    rng = random.Random(1)
    pairs = fl.random_pairs(HOSTS, 3, rng)
    assert len(pairs) == 48 and all(a != b for a, b in pairs)
    assert all(len({b for a, b in pairs if a == h}) == 3 for h in HOSTS)
    assert fl.incast(HOSTS[:5], "h3", None) == [("h4", "h3"), ("h5", "h3"), ("h1", "h3"), ("h2", "h3")]
    assert fl.incast(HOSTS[:5], None, 2) == [("h2", "h1"), ("h3", "h1")]
    assert len(fl.all_to_all(HOSTS[:4])) == 12
    with pytest.raises(ValueError, match="senders: 9"):
        fl.incast(HOSTS[:5], "h1", 9)
    with pytest.raises(ValueError, match="per_host"):
        fl.random_pairs(HOSTS[:3], 3, rng)


def test_expand_labels_lengths_and_variants():
    exp = parse_spec(dumbbell(
        flows=[{"src": "l1", "dst": "r1", "extra_subflows": 1}, {"src": "l1", "dst": "r1", "protocol": "tcp",
                                                                 "start": 2.5, "bytes": 1000000},
               {"label": "b", "src": "l2", "dst": "r2", "protocol": "tcp", "duration": 4}],
        traffic={"duration": 7}))
    flows = fl.expand(exp)
    assert [f.label for f in flows] == ["l1-r1", "l1-r1-2", "b"]
    assert (flows[0].duration_s, flows[1].bytes, flows[1].duration_s, flows[2].duration_s) == (7.0, 1000000, None, 4.0)
    assert fl.schedule_length_s(flows) == 7.0
    v = SimpleNamespace(name="v", protocol="mptcp", extra_subflows=None,
                        flows={"*": SimpleNamespace(model_dump=lambda exclude_none: {"extra_subflows": 3}),
                               "b": SimpleNamespace(model_dump=lambda exclude_none: {"protocol": "tcp"})})
    out = fl.for_variant(flows, v)
    assert [(f.protocol, f.extra_subflows) for f in out] == [("mptcp", 3), ("mptcp", 3), ("tcp", 0)]  # TCP: one path
    with pytest.raises(PlanError, match="variants.w.flows: nope: no such flow"):
        fl.for_variant(flows, SimpleNamespace(name="w", protocol=None, extra_subflows=None, flows={"nope": None}))



def test_a_byte_count_flow_is_one_transferred_connection_timed_at_the_receiver():
    """A byte-count flow is sent by the transfer tool (iperf3 -n stops its receiver's count when
    the sender has written the last byte); parallel streams with a byte count are refused."""
    exp = parse_spec(dumbbell(flows=[{"label": "d", "src": "l1", "dst": "r1", "duration": 3},
                                     {"label": "n", "src": "l2", "dst": "r2", "bytes": 10**6}]))
    plan = make_plan(exp)
    d, n = plan.tests[0].flows
    assert (tr.flow_tool(d), tr.flow_tool(n)) == ("iperf3", "transfer")
    client = tr.flow_argv("client", n, "mptcpize")
    assert client[:2] == [sys.executable, "-I"] and client[client.index("--bytes") + 1] == "1000000"
    assert "--mptcp" in client and "mptcpize" not in client and n.dst_address in client
    assert "--interval" in tr.flow_argv("server", n, "mptcpize")
    assert "iperf3" in " ".join(tr.flow_argv("client", d, "mptcpize"))
    with pytest.raises(PlanError, match="flow p: parallel: 2 with bytes"):
        fl.expand(parse_spec(dumbbell(flows=[{"label": "p", "src": "l1", "dst": "r1", "bytes": 10**6,
                                              "parallel": 2}])))
    with pytest.raises(PlanError, match="flow l1-r1: parallel: 3 with bytes"):  # the length from traffic
        fl.expand(parse_spec(dumbbell(flows=[{"src": "l1", "dst": "r1", "parallel": 3}], traffic={"bytes": 10**6})))


@pytest.mark.parametrize("report, error, fct", [
    ({"bytes_sent": 10**6, "bytes_received": 10**6, "completion_s": 1.23456}, None, 1.2346),
    ({"bytes_sent": 10**6, "bytes_received": 999_000, "completion_s": 1.2}, None, None),  # short: not complete
    ({"bytes_sent": 10**6, "bytes_received": 10**6, "completion_s": 1.2}, "reset", None),
    ({"bytes_sent": 10**6, "bytes_received": 10**6, "completion_s": None}, None, None),
])
def test_completion_time_only_of_a_whole_delivery(report, error, fct):
    flow = SimpleNamespace(bytes=10**6)
    assert completion_s(SimpleNamespace(flow=flow, error=error, client_json={"transfer": report})) == fct
    assert completion_s(SimpleNamespace(flow=SimpleNamespace(bytes=None), error=None,
                                        client_json={"transfer": report})) is None


# --------------------------------------------------------------------------- spec and plan


def test_spec_one_client_server_or_flows_never_both():
    assert "traffic.client: with flows/matrix each flow names its hosts; remove traffic.client" in problems(
        dumbbell(flows=[{"src": "l1", "dst": "r1"}], traffic={"client": "l1", "server": "r1"}))
    assert "traffic.client: required field is missing (or give flows: / matrix:)" in problems(
        dumbbell(traffic={"duration": 3}))
    assert "flows[0]: src and dst must be different hosts" in problems(dumbbell(flows=[{"src": "l1", "dst": "l1"}]))
    assert any(p.startswith("flows[0].dst: 'zz' is not a host") for p in problems(
        dumbbell(flows=[{"src": "l1", "dst": "zz"}])))
    assert any("policy: ecmp needs a controller" in p for p in problems(
        {**fattree(matrix={"kind": "permutation"}), "controller": {"kind": "none", "policy": "ecmp"}}))
    assert any("duration: 1.5 s is not a whole number" in p for p in problems(
        dumbbell(flows=[{"src": "l1", "dst": "r1", "duration": 1.5}])))


def test_multi_flow_plan_ports_announcements_limits_and_expected_subflows():
    exp = parse_spec(fattree(matrix={"kind": "permutation", "seed": 2},
                             variants=[{"name": "tcp", "protocol": "tcp"},
                                       {"name": "mp8", "protocol": "mptcp", "extra_subflows": 7}],
                             traffic={"duration": 5, "repetitions": 1}))
    plan = make_plan(exp, "run")
    tcp, mp8 = plan.tests
    assert plan.multi_flow and len(mp8.flows) == 16
    assert sorted(f.port for f in mp8.flows) == list(range(5201, 5217))
    assert all(f.protocol == "tcp" and f.expected_subflows == 1 for f in tcp.flows)
    assert tcp.host_signal_ports == () and tcp.host_limits == ()
    assert all(f.expected_subflows == 8 for f in mp8.flows)
    announced = dict(mp8.host_signal_ports)
    assert sorted(announced) == sorted(HOSTS) and all(len(p) == 7 for p in announced.values())
    assert dict(mp8.host_limits) == dict.fromkeys(HOSTS, 7)
    assert plan.client == mp8.flows[0].src and len(plan.pairs()) == 16
    # every flow's destination address is its destination host's
    addr = {h.name: h.intfs[0].ip for h in plan.hosts}
    assert all(f.dst_address == addr[f.dst] for f in mp8.flows)


def test_one_flow_fields_a_multi_flow_spec_would_ignore_are_refused():
    flows = [{"src": "l1", "dst": "r1"}]
    cases = [
        ({"mptcp": {"hosts": {"r1": {"signal_ports": [30001]}}}}, "mptcp.hosts.r1.signal_ports: with flows"),
        ({"traffic": {"parallel": 4}}, "traffic.parallel: with flows give each flow its own parallel"),
        ({"traffic": {"expect_subflows": 2}}, "traffic.expect_subflows: with flows"),
        ({"variants": [{"name": "v", "expect_subflows": 2}]}, "variants[0].expect_subflows: with flows"),
        ({"controller": {"kind": "static"}}, "controller.policy: mixed places the subflows of one client/server"),
        ({"flows": [{"src": "l1", "dst": "r1", "label": "nan"}]}, "reads back from a CSV table as a value"),
    ]
    for extra, message in cases:
        assert any(message in p for p in problems(dumbbell(**{"flows": flows, **extra}))), (extra, message)
    assert any("probes: run while the flows of a multi-flow test do" in p for p in problems(
        dumbbell(traffic={"client": "l1", "server": "r1"}, probes=[{"src": "l1", "dst": "r1"}])))


def test_multi_homed_flows_keep_their_interfaces_subflows():
    """dual-path hosts have two interfaces; a flow there gets the subflow over the second one
    (the server signals it) and, with extra_subflows, one more per announced port."""
    topo = {"hosts": {"h1": 2, "h2": 2}, "switches": ["s1", "s2"],
            "links": [{"endpoints": ["h1", "s1"]}, {"endpoints": ["s1", "h2"]},
                      {"endpoints": ["h1", "s2"]}, {"endpoints": ["s2", "h2"]}]}
    plan = make_plan(parse_spec({"name": "dp", "topology": topo,
                                 "flows": [{"src": "h1", "dst": "h2"}],
                                 "variants": [{"name": "one"}, {"name": "two", "extra_subflows": 1}],
                                 "traffic": {"repetitions": 1}}))
    one, two = plan.tests
    assert one.flows[0].expected_subflows == 2 and dict(one.host_limits) == {"h1": 1, "h2": 1}
    assert two.flows[0].expected_subflows == 3 and dict(two.host_limits) == {"h1": 2, "h2": 2}


def test_probes_are_planned_with_the_destination_address():
    plan = make_plan(parse_spec(dumbbell(flows=[{"src": "l1", "dst": "r1"}],
                                         probes=[{"src": "l2", "dst": "r2", "interval": 0.2},
                                                 {"src": "l2", "dst": "r2"}])))
    p, again = plan.probes
    assert (p.label, p.interval_s, p.dst_address) == ("l2-r2", 0.2, plan.host("r2").intfs[0].ip)
    assert again.label == "l2-r2-2"  # two probes between one pair keep their own answers
    assert ("l2", "r2") in plan.pairs()
    with pytest.raises(PlanError, match=r"probes\[1\].label: x is used twice"):
        make_plan(parse_spec(dumbbell(flows=[{"src": "l1", "dst": "r1"}],
                                      probes=[{"src": "l2", "dst": "r2", "label": "x"},
                                              {"src": "l1", "dst": "r1", "label": "x"}])))


# --------------------------------------------------------------------------- ECMP


def test_ecmp_spreads_over_every_equal_cost_next_hop_of_a_fattree():
    plan = make_plan(parse_spec(fattree(matrix={"kind": "permutation"})), "run")
    topo = controller_topology(plan, 5201)
    hops = ecmp_next_hops(topo)
    h16 = plan.host("h16").intfs[0].ip
    assert len(hops[("e1", h16)]) == 2      # up to both aggregation switches of pod 1
    assert len(hops[("a1", h16)]) == 2      # up to both of its core switches
    assert len(hops[("c1", h16)]) == 1      # down: one way into pod 4
    assert len(hops[("e8", h16)]) == 1      # the edge switch of h16: its port
    rules, groups = ecmp_rules(topo)
    assert {g.switch for g in groups} == {f"e{i}" for i in range(1, 9)} | {f"a{i}" for i in range(1, 9)}
    assert len({g.basis for g in groups}) == len({g.switch for g in groups})  # a hash seed per switch
    assert all(len(g.ports) == 2 for g in groups)
    text = groups[0].ofctl()
    assert "type=select,selection_method=hash" in text and f"fields({','.join(ECMP_HASH_FIELDS)})" in text
    ip_to_group = [r for r in rules if r.group is not None]
    assert ip_to_group and all(r.ofctl().endswith(f"actions=group:{r.group}") for r in ip_to_group)
    assert any(r.match_dict()["dl_type"] == 0x0806 for r in rules)  # ARP along the tree


def test_reactive_ecmp_choice_is_a_hash_per_switch():
    """What the POX component computes per switch: the same 5-tuple always on the same port, the
    5-tuples spread evenly, and two switches not making the same choices (their own seeds)."""
    tuples = [("10.0.1.1", 30000 + i, "10.0.1.16", 5201) for i in range(2000)]
    a = [ecmp_choice((1, 2), t, hash_basis("e1")) for t in tuples]
    b = [ecmp_choice((1, 2), t, hash_basis("a1")) for t in tuples]
    assert a == [ecmp_choice((1, 2), t, hash_basis("e1")) for t in tuples]
    assert 900 <= a.count(1) <= 1100                      # binomial(2000, 1/2): +-4.5 sigma
    same = sum(x == y for x, y in zip(a, b))
    assert 900 <= same <= 1100                            # independent, not polarized
    four = [ecmp_choice((1, 2, 3, 4), t, 7) for t in tuples]
    assert all(400 <= four.count(p) <= 600 for p in (1, 2, 3, 4))


# --------------------------------------------------------------------------- rows


def _outcome(goodputs, protocols, launches=(0.0, 0.0)):
    outs = []
    for i, (g, p, s) in enumerate(zip(goodputs, protocols, launches)):
        flow = SimpleNamespace(label=f"f{i}", src=f"l{i + 1}", dst=f"r{i + 1}", protocol=p, congestion_control="cubic",
                               parallel=1, extra_subflows=0, expected_subflows=1, start_s=0.0, bytes=None)
        server = {"end": {"sum_received": {"bits_per_second": g * 1e6, "bytes": int(g * 1e6 / 8 * 10), "seconds": 10}},
                  "intervals": [{"sum": {"end": 0.1 * k, "bytes": 1000, "bits_per_second": g * 1e6}}
                                for k in range(1, 4)]}
        client = {"start": {"connected": [{"local_host": f"10.0.1.{i + 1}", "local_port": 40000}]},
                  "end": {"sum_sent": {"retransmits": 3}, "sender_tcp_congestion": "cubic"}}
        outs.append(FlowOutcome(flow, client, server, launched_s=s))
    return FlowsOutcome(outs)


def test_flow_rows_shares_jain_ratio_and_offsets():
    test = SimpleNamespace(label="001-x-r1", variant="x", protocol="mixed", repetition=1, expected_subflows=1)
    outcome = _outcome([6.0, 3.0], ["mptcp", "tcp"], launches=(0.002, 0.0045))
    optimum = Optimum(rate=0.5, demands_mbps=(10.0, 10.0), per_flow_mbps=(5.0, 5.0))
    rows, subs, series = flow_rows("e", test, outcome, optimum)
    assert [round(r["share"], 3) for r in rows] == [0.667, 0.333]
    assert [r["fraction_of_optimum"] for r in rows] == [1.2, 0.6]
    assert [r["launch_offset_ms"] for r in rows] == [2.0, 4.5]
    # the receiver's intervals placed after the flow's launch (iperf3's set-up not included)
    assert [x["t"] for x in series[:3]] == [0.102, 0.202, 0.302]
    plan = make_plan(parse_spec(dumbbell(flows=[{"src": "l1", "dst": "r1"}])))
    counters = {"l1": {"TcpRetransSegs": 4}, "l2": {"TcpRetransSegs": 5}, "r1": {"TcpRetransSegs": 100}}
    row = multi_flow_summary("e", plan, test, outcome, rows, set(), optimum, counters)
    assert row["goodput_mbps"] == 9.0 and row["optimum_mbps"] == 10.0 and row["fraction_of_optimal"] == 0.9
    assert row["jain"] == pytest.approx(81 / (2 * 45))            # (6+3)^2 / (2 (36+9))
    assert row["mptcp_tcp_ratio"] == 2.0 and row["max_launch_offset_ms"] == 4.5
    assert row["retransmits"] == 9 and row["iperf3_retransmits"] == 6  # the senders' kernels; iperf3's own
    assert flow_rows("e", test, outcome, None)[0][0]["optimum_mbps"] is None
    assert multi_flow_summary("e", plan, test, outcome, rows, set(), None, {})["fraction_of_optimal"] is None


def test_parse_ping_on_the_tests_clock():
    text = ("PING 10.0.1.3 (10.0.1.3) 56(84) bytes of data.\n"
            "[1000.500000] 64 bytes from 10.0.1.3: icmp_seq=1 ttl=64 time=40.2 ms\n"
            "[1000.600000] 64 bytes from 10.0.1.3: icmp_seq=2 ttl=64 time=41 ms\n")
    assert parse_ping(text, 1000.0) == [{"t": 0.5, "seq": 1, "rtt_ms": 40.2}, {"t": 0.6, "seq": 2, "rtt_ms": 41.0}]


# --------------------------------------------------------------------------- the launcher


def test_launcher_starts_a_command_at_its_instant_and_says_when():
    deadline = time.monotonic_ns() + 300_000_000
    p = subprocess.run(at_instant(deadline, [sys.executable, "-c", "import sys; sys.stderr.write('hi')"]),
                       capture_output=True, text=True, timeout=10)
    ns, rest = started_at(p.stderr)
    assert p.returncode == 0 and rest == "hi"
    assert 0 <= ns - deadline < 5_000_000   # within 5 ms of the instant, never early
    bad = subprocess.run([sys.executable, "-I", "-S", str(STARTAT), "soon", "--", "true"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr


def test_too_many_flows_are_refused_up_front():
    d = fattree(matrix={"kind": "all-to-all"})
    d["topology"]["generate"]["k"] = 8  # 128 hosts: 16256 flows
    with pytest.raises(PlanError) as e:
        make_plan(parse_spec(d))
    assert any(p.startswith("flows: 16256 flows in one test") for p in e.value.problems)


def test_resume_keeps_the_flow_tables_of_finished_points_only(tmp_path):
    """--resume rereads flows.csv, flow-goodput.csv and rtt.csv and keeps the rows of points
    marked done: a point killed half-way runs again, and its rows are not kept twice."""
    from mptcplab.ids import new_run_id
    from mptcplab.results import FLOW_GOODPUT, FLOWS, RTT, RunDir, read_tables

    with RunDir.create("x", root=tmp_path, run_id=new_run_id()) as rd:
        rd.write_table(FLOWS, [{"point": "p001", "flow": "a", "goodput_mbps": 1.0},
                               {"point": "p002", "flow": "a", "goodput_mbps": 2.0}])
        rd.write_table(FLOW_GOODPUT, [{"point": "p002", "flow": "a", "t": 0.1, "goodput_mbps": 2.0}])
        tables = read_tables(rd, {"p001"})
    assert tables[FLOWS] == [{"point": "p001", "flow": "a", "goodput_mbps": 1.0}]
    assert tables[FLOW_GOODPUT] == [] and tables[RTT] == []


def test_flows_grouped_by_their_bottleneck():
    """On the dumbbell two flows left to right share the bottleneck's up direction; a flow right
    to left is held by its down direction, a group of its own (full duplex); Jain's index is
    taken within each shared bottleneck."""
    from mptcplab.routes import flow_bottlenecks
    from mptcplab.rows import _jain_per_bottleneck

    plan = make_plan(parse_spec(dumbbell(flows=[{"src": "l1", "dst": "r1"}, {"src": "l2", "dst": "r2"},
                                                {"src": "r1", "dst": "l2"}])))
    assert flow_bottlenecks(plan, plan.tests[0].flows) == ["sl-sr up", "sl-sr up", "sl-sr down"]
    rows = [{"bottleneck": "sl-sr up", "goodput_mbps": 6.0}, {"bottleneck": "sl-sr up", "goodput_mbps": 3.0},
            {"bottleneck": "sl-sr down", "goodput_mbps": 9.0}]
    assert _jain_per_bottleneck(rows) == pytest.approx(81 / 90)   # the two that share, not all three
    assert _jain_per_bottleneck([{**r, "bottleneck": None} for r in rows]) is None

"""Several flows at once on real networks: two TCP flows share one bottleneck fairly, and ECMP
spreads the subflows of one MPTCP connection over a FatTree's core (root)."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers import cli, write_spec
from mptcplab.paths import ecmp_choice, ecmp_next_hops, hash_basis
from mptcplab.plan import controller_topology, make_plan
from mptcplab.spec import parse_spec

#: TCP payload per Ethernet frame on the wire as the shapers count it: MSS 1448 (1500 - 20 IP -
#: 20 TCP - 12 timestamps) in 1514 bytes (+ 14 Ethernet): a 10 Mbit/s link carries 9.56 Mbit/s
#: of goodput at most.
PAYLOAD_PER_FRAME = 1448 / 1514


@pytest.mark.root
def test_two_tcp_flows_share_a_10_mbit_bottleneck(tmp_path, no_leftovers):
    """Two TCP flows (l1 -> r1, l2 -> r2) through the dumbbell's one 10 Mbit/s link, started on one
    clock: together they fill it (within 5% of its goodput capacity) and split it fairly
    (Jain's index >= 0.9); the schedule was kept (both started within 10 ms) and the receivers'
    goodput series and the RTT probes were recorded."""
    def mutate(spec):
        spec["flows"] = [{"label": "a", "src": "l1", "dst": "r1", "protocol": "tcp"},
                         {"label": "b", "src": "l2", "dst": "r2", "protocol": "tcp"}]
        spec["variants"] = None
        spec["outputs"]["formats"] = ["png"]

    out = tmp_path / "run"
    r = cli("run-experiment", str(write_spec(tmp_path, "shared-bottleneck", traffic={"duration": 15, "repetitions": 1},
                                             mutate=mutate)), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    summary, flows = pd.read_csv(out / "summary.csv"), pd.read_csv(out / "flows.csv")
    (row,) = summary.to_dict("records")
    capacity = 10 * PAYLOAD_PER_FRAME
    assert abs(row["goodput_mbps"] - capacity) <= 0.05 * capacity, row
    # fairly, not equally: two CUBIC flows through one drop-tail queue do not always converge in
    # 15 s (measured Jain 0.92-0.99 over runs; one run 0.9499 at 5.85/3.67 Mbit/s, drifting
    # apart); a starved flow (8:2 is 0.735) still fails
    assert row["jain"] >= 0.9, flows[["flow", "goodput_mbps"]]
    assert list(flows.bottleneck) == ["sl-sr up", "sl-sr up"] and row["jain_bottleneck"] == pytest.approx(row["jain"])
    assert list(flows.flow) == ["a", "b"] and flows.goodput_mbps.sum() == pytest.approx(row["goodput_mbps"])
    assert flows.launch_offset_ms.abs().max() <= 10, flows.launch_offset_ms
    series = pd.read_csv(out / "flow-goodput.csv")
    assert set(series.flow) == {"a", "b"} and series.groupby("flow").size().min() >= 100  # 0.1 s for 15 s
    rtt = pd.read_csv(out / "rtt.csv")
    assert len(rtt) >= 100 and rtt.rtt_ms.min() >= 40  # the probe crosses the 20 ms bottleneck both ways
    for figure in ("flow-goodput-time", "fairness", "rtt-cdf"):
        assert (out / "figures" / f"{figure}.png").stat().st_size > 0


@pytest.mark.root
def test_a_permutation_matrix_runs_every_host_at_once(tmp_path, no_leftovers):
    """matrix: {kind: permutation} over the dumbbell's 4 hosts: 4 concurrent TCP flows, each host
    sending once and receiving once, none to itself -- the drawn matrix is the one recorded in
    plan.json, and every flow delivered data."""
    def mutate(spec):
        spec.pop("flows")
        spec["matrix"] = {"kind": "permutation", "seed": 4, "protocol": "tcp"}
        spec["variants"] = None
        spec["probes"] = []
        spec["outputs"]["formats"] = ["png"]

    out = tmp_path / "run"
    r = cli("run-experiment", str(write_spec(tmp_path, "shared-bottleneck", traffic={"duration": 3, "repetitions": 1},
                                             mutate=mutate)), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    flows = pd.read_csv(out / "flows.csv")
    assert sorted(flows.src) == sorted(flows.dst) == ["l1", "l2", "r1", "r2"]
    assert (flows.src != flows.dst).all() and (flows.goodput_mbps > 0.5).all()
    planned = json.loads((out / "plan.json").read_text())["tests"][0]["flows"]
    assert [(f["src"], f["dst"]) for f in planned] == list(zip(flows.src, flows.dst))


POX_HOME = os.environ.get("POX_HOME")
needs_pox = pytest.mark.skipif(not (POX_HOME and Path(POX_HOME, "pox.py").exists()),
                               reason="POX_HOME does not point at a POX checkout (git clone -b halosaur "
                               "https://github.com/noxrepo/pox); the static controller's ECMP covers the "
                               "same spreading, and test_flows the POX component's hash")


@pytest.mark.root
@pytest.mark.parametrize("kind", ["static", pytest.param("pox", marks=needs_pox)])
def test_ecmp_spreads_the_subflows_of_one_connection_over_the_core(tmp_path, no_leftovers, kind):
    """FatTree k=4 with ECMP -- OpenFlow select groups (static) or a hash per switch computed by
    the POX component: the 16 subflows of two MPTCP connections from h1 (pod 1) to h16 (pod 4)
    (8 each, the kernel's most) are hashed onto the 4 core switches; the switches' own port
    counters show data toward pod 4 leaving at least 3 of them. (With 16 subflows hashed
    uniformly, all land on 2 or fewer cores with probability 6 * (1/2)^16 - 4 * (1/4)^16, about
    1e-4; with 8 it was 2.3%, and CI once drew it: {c1, c4} carried all the data.) With POX the
    hash is mptcplab's own: the cores each subflow's 5-tuple hashes to are worked out and must
    be exactly the cores the counters saw."""
    def mutate(spec):
        spec["controller"]["kind"] = kind
        spec["matrix"] = None
        spec["sweep"] = None
        spec["flows"] = [{"label": f"mp8{i}", "src": "h1", "dst": "h16", "protocol": "mptcp", "extra_subflows": 7}
                         for i in "ab"]
        spec["variants"] = None
        spec["outputs"]["formats"] = ["png"]

    out = tmp_path / "run"
    r = cli("run-experiment", str(write_spec(tmp_path, "fattree-permutation", traffic={"duration": 5},
                                             mutate=mutate)), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    plan = json.loads((out / "plan.json").read_text())
    pod4 = {"a7", "a8"}
    toward_pod4 = {}  # core switch -> its port to pod 4's aggregation switch
    for link in plan["links"]:
        ends = {link["intf1"]["node"]: link["intf1"]["port"], link["intf2"]["node"]: link["intf2"]["port"]}
        core = [n for n in ends if n.startswith("c")]
        if core and set(ends) & pod4:
            toward_pod4[core[0]] = str(ends[core[0]])
    assert sorted(toward_pod4) == ["c1", "c2", "c3", "c4"]
    (ports_file,) = (out / "raw").glob("*-ports.json")
    ports = json.loads(ports_file.read_text())
    sent = {c: ports["after"][c][p]["tx_bytes"] - ports["before"][c][p]["tx_bytes"] for c, p in toward_pod4.items()}
    flows = pd.read_csv(out / "flows.csv")
    assert len(flows) == 2 and (flows.bytes > 0).all()
    total = int(flows.bytes.sum())
    used = [c for c, b in sent.items() if b >= 0.01 * total]
    assert len(used) >= 3, (sent, total)
    assert sum(sent.values()) >= 0.9 * total  # and the counters saw the flows' data
    if kind == "pox":  # the component's hash is ours: each subflow's core is known, and must match
        subflows = pd.read_csv(out / "subflows.csv")
        predicted = {core_of(out, local, remote) for local, remote in zip(subflows.local, subflows.remote)}
        assert predicted == set(used), (predicted, sent)


def core_of(run_dir, local: str, remote: str) -> str:
    """The core switch the POX component's hash sends a subflow (h1 -> h16) through: from h1's
    edge switch up, one hashed choice per switch, as mptcp_paths.Ecmp makes it."""
    exp = parse_spec(yaml.safe_load((run_dir / "spec.yaml").read_text()))
    topo = controller_topology(make_plan(exp), exp.traffic.port)
    hops = ecmp_next_hops(topo)
    (src, sport), (dst, dport) = [(a, int(p)) for a, p in (x.rsplit(":", 1) for x in (local, remote))]
    neighbour = {(l.a, l.a_port): l.b for l in topo.links} | {(l.b, l.b_port): l.a for l in topo.links}
    switch = topo.hosts["h1"][0]["switch"]
    while not switch.startswith("c"):
        switch = neighbour[(switch, ecmp_choice(hops[(switch, dst)], (src, sport, dst, dport), hash_basis(switch)))]
    return switch


@pytest.mark.root
def test_laminar_endpoint_is_used_and_read_back(tmp_path, no_leftovers):
    """dual-path with the client's second interface as a `laminar` endpoint (Linux 6.18+): the
    subflow to the address the server announces leaves from it; the kernel's copy of the endpoint
    keeps the flag, and the run records it. On a kernel without laminar the run stops before
    measuring, naming the flag (the read-back check), so this test says which kernel it needs."""
    def mutate(spec):
        spec["mptcp"]["hosts"] = {"h1": {"endpoints": {"h1-eth1": ["laminar"]}}}
        spec["traffic"]["protocols"] = ["mptcp"]
        spec["outputs"]["formats"] = ["png"]

    out = tmp_path / "run"
    r = cli("run-experiment", str(write_spec(tmp_path, traffic={"duration": 2, "repetitions": 1}, mutate=mutate)),
            "--out", str(out))
    if "dropped the flag(s) laminar" in r.stderr:
        pytest.skip("this kernel has no laminar endpoints (Linux 6.18+); the read-back check refused the run")
    assert r.returncode == 0, r.stderr[-3000:]
    (row,) = pd.read_csv(out / "summary.csv").to_dict("records")
    assert row["subflows"] == 2
    meta = json.loads((out / "metadata.json").read_text())
    (ep,) = meta["network"]["hosts"]["h1"]["endpoints"]
    assert ep["flag_names"] == ["laminar"]
    subflows = pd.read_csv(out / "subflows.csv")
    h1_eth1 = json.loads((out / "plan.json").read_text())["hosts"][0]["intfs"][1]["address"].split("/")[0]
    assert any(s.startswith(h1_eth1 + ":") for s in subflows.local), subflows.local



@pytest.mark.root
def test_byte_count_flow_started_late(tmp_path, no_leftovers):
    """A 2 MB flow launched 1 s after a 4 s flow: it is launched on schedule (within 10 ms of
    t = 1 s), completes, and its transfer time is recorded; its goodput series starts after 1 s."""
    def mutate(spec):
        spec["flows"] = [{"label": "long", "src": "l1", "dst": "r1", "protocol": "tcp", "duration": 4},
                         {"label": "late", "src": "l2", "dst": "r2", "protocol": "mptcp", "start": 1,
                          "bytes": 2_000_000}]
        spec["variants"] = None
        spec["probes"] = []
        spec["outputs"]["formats"] = ["png"]

    out = tmp_path / "run"
    r = cli("run-experiment", str(write_spec(tmp_path, "shared-bottleneck", traffic={"repetitions": 1},
                                             mutate=mutate)), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    flows = pd.read_csv(out / "flows.csv").set_index("flow")
    late = flows.loc["late"]
    assert late.scheduled_start_s == 1 and abs(late.launch_offset_ms) <= 10
    # the transfer tool sends it: the receiver reads every byte, checked against the sender's
    # digest; 2 MB through 10 Mbit/s of frames takes 1.67 s at best (PAYLOAD_PER_FRAME)
    assert late.bytes == 2_000_000 and late.data_intact, late
    assert 2e6 * 8 / (10e6 * PAYLOAD_PER_FRAME) <= late.fct_s <= 10, late
    assert pd.isna(flows.loc["long"].fct_s)  # a duration flow has none
    series = pd.read_csv(out / "flow-goodput.csv")
    assert series[series.flow == "late"].t.min() > 1.0
    (row,) = pd.read_csv(out / "summary.csv").to_dict("records")
    assert pd.isna(row["fraction_of_optimal"])  # flows apart in time share no optimum
    # the path manager of the MPTCP flow's source (only), on the flows' clock: its connections
    # (iperf3's control and data) created once it launched
    pm = pd.read_csv(out / "pm-events.csv")
    assert set(pm.host) == {"l2"} and {"created", "established"} <= set(pm.event), pm
    assert pm[pm.event == "created"].t.min() > 1.0, pm

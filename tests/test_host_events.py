"""Events on a host's interfaces (issue 13): checked in the spec and the plan, expanded with the
rest of the timeline, swept like any field; their aftermath measured per event on known series
(pure); and on real networks: a handover (the client's address removed mid-test) and a backup
path made active (MP_PRIO) while MPTCP runs (root)."""

import json

import pandas as pd
import pytest

from helpers import cli, write_spec
from mptcplab.errors import PlanError, SpecError
from mptcplab.events import timeline
from mptcplab.plan import controller_topology, make_plan
from mptcplab.recovery import after_event, per_event, summary_of, total_series
from mptcplab.spec import load_spec, parse_spec
from test_events import dual, problems


def flat(a: int, b: int, g: float) -> list[tuple[float, float]]:
    """0.1 s intervals a..b-1 (ends at k/10 s) at ``g`` Mbit/s."""
    return [(round(0.1 * k, 1), g) for k in range(a, b)]


def test_interface_events_are_checked_against_the_hosts():
    assert any("events.at[0].interface: 'h1-eth7' is not an interface of a host (interfaces: h1-eth0, h1-eth1, "
               "h2-eth0, h2-eth1)" in p
               for p in problems(dual({"at": [{"at": 1, "interface": "h1-eth7", "action": "down"}]})))
    assert any("give either link: (a link of the topology) or interface:" in p for p in problems(
        dual({"at": [{"at": 1, "interface": "h1-eth0", "link": "h1-s1", "action": "down"}]})))
    assert any("action: address-del acts on a host's interface: give interface:" in p for p in problems(
        dual({"at": [{"at": 1, "link": "h1-s1", "action": "address-del"}]})))
    assert any("action: set changes a link's parameters: give link:" in p for p in problems(
        dual({"at": [{"at": 1, "interface": "h1-eth0", "action": "set", "params": {"bw": 1}}]})))
    bad_variant = dual({})
    bad_variant["variants"] = [{"name": "b", "backup": ["h3-eth0"]}]
    assert any("variants.b.backup[0]: 'h3-eth0' is not an interface of a host" in p for p in problems(bad_variant))


def test_endpoint_events_and_backups_need_an_endpoint_and_are_planned():
    """dual-path's endpoints are automatic: h2 signals h2-eth1, h1 has none."""
    spec = dual({"at": [{"at": 1, "interface": "h1-eth0", "action": "backup"},
                        {"at": 2, "interface": "h1-eth0", "action": "address-del"}]})
    spec["variants"] = [{"name": "bk", "backup": ["h1-eth1"]}]
    with pytest.raises(PlanError) as e:
        make_plan(parse_spec(spec))
    assert e.value.problems == [
        "events.at[0].interface: h1-eth0 has no MPTCP endpoint (this plan gives h2-eth1); give it one in "
        "mptcp.hosts.h1.endpoints",
        "variants.bk.backup[0]: h1-eth1 has no MPTCP endpoint (this plan gives h2-eth1); give it one in "
        "mptcp.hosts.h1.endpoints"]   # address-del needs no endpoint: not a problem
    spec = dual({"at": [{"at": 1, "interface": "h2-eth1", "action": "active"},
                        {"at": 2, "interface": "h1-eth0", "action": "address-del"}]})
    spec["variants"] = [{"name": "bk", "backup": ["h2-eth1"]}, {"name": "tcp", "protocol": "tcp",
                                                                 "backup": ["h2-eth1"]}]
    plan = make_plan(parse_spec(spec))
    assert [(s.at_s, s.target, s.link, s.action) for s in plan.events] == [
        (1.0, "h2-eth1", None, "active"), (2.0, "h1-eth0", None, "address-del")]
    assert [(t.variant, t.backup) for t in plan.tests] == [("bk", ("h2-eth1",)), ("tcp", ())] * 3
    assert json.dumps(plan.to_dict()["events"][0]["interface"]) == '"h2-eth1"'  # recorded in plan.json


def test_the_handover_experiment_and_its_remaining_capacity():
    """Wi-Fi (10 Mbit/s) fails: the max-flow left is cellular's 5 Mbit/s; a backup flag takes
    nothing away."""
    from mptcplab.runner import remaining_capacity

    exp = load_spec("experiments/handover.yaml")
    plan = make_plan(exp)
    topo = controller_topology(plan, exp.traffic.port)
    assert remaining_capacity(plan, topo) == {"h1-s1": 5.0}
    spec = exp.model_dump(mode="json")
    spec["events"] = {"at": [{"at": 5, "interface": "h1-eth1", "action": "address-del"},
                             {"at": 6, "interface": "h2-eth1", "action": "backup"}]}
    plan = make_plan(parse_spec(spec))
    assert remaining_capacity(plan, topo) == {"h1-eth1": 10.0, "h2-eth1": 15.0}


def test_a_sweep_moves_a_flap_schedule_and_keeps_the_network():
    from mptcplab.sweep import apply, link_only_change, points

    exp = load_spec("experiments/flaps.yaml")
    pts = points(exp)
    # every flap period (with its count) at each loss of the Wi-Fi link: a product, 8 points
    assert [dict(p.values) for p in pts] == [
        {"links.h1-s1.loss": loss, "events.flaps[0].period": p, "events.flaps[0].count": c}
        for loss in (0, 1) for p, c in ((1, 17), (2, 9), (4, 5), (8, 3))]
    at = [apply(exp, p) for p in pts]
    assert [len(timeline(e.events)) for e in at] == [34, 18, 10, 6] * 2
    assert max(s.at_s for e in at for s in timeline(e.events)) == 18.5 < exp.traffic.duration
    assert [next(l.base.loss for l in make_plan(e).links if l.name == "h1-s1") for e in (at[0], at[4])] == [0.0, 1.0]
    a, b = (e.model_dump(mode="json") for e in at[:2])
    assert link_only_change(a, b)                       # events differ: the network is kept
    assert all(link_only_change(x.model_dump(mode="json"), y.model_dump(mode="json"))  # loss too
               for x, y in zip(at, at[1:]))
    b["mptcp"]["scheduler"] = "other"
    assert not link_only_change(a, b)
    from mptcplab.sweep import Point

    with pytest.raises(SpecError, match=r"events.flaps\[3\].period: flaps has 1 item\(s\), no \[3\]"):
        apply(exp, Point(1, (("events.flaps[3].period", 2),)))


def test_recovery_to_what_the_network_still_offers():
    """15 Mbit/s before a cut at 2 s; 1 s of nothing; then 2.5 Mbit/s for 2 s and 5 Mbit/s (the
    remaining capacity) after: back to the level before never, to 90% of what remains 3 s after."""
    series = flat(1, 21, 15.0) + flat(21, 31, 0.0) + flat(31, 51, 2.5) + flat(51, 81, 5.0)
    r = after_event(series, 2.0, remaining_mbps=5.0)
    assert (r.before_mbps, r.outage_s, r.recovery_s, r.recovery_remaining_s) == (15.0, 1.0, None, 3.0)
    assert r.delivered_mb == pytest.approx((2 * 2.5 + 3 * 5.0) / 8)          # to the end: never recovered
    assert after_event(series, 2.0).recovery_remaining_s is None            # not asked
    assert after_event(series, 2.0, remaining_mbps=0.0).recovery_remaining_s is None  # nothing left
    # a level given (the one before the first of several cuts) replaces the mean before
    assert after_event(series, 2.0, level_mbps=2.5).recovery_s == 1.0


def test_what_was_in_flight_when_the_cut_struck_is_not_survival():
    """Data delivered in the 0.2 s after the cut (in flight when it struck), then nothing: the
    connection did not survive; one never interrupted did."""
    stalled = after_event(flat(1, 21, 5.0) + flat(21, 23, 4.0) + flat(23, 61, 0.0), 2.0)
    assert (stalled.outage_s, stalled.survived) == (3.8, False)
    assert after_event(flat(1, 61, 5.0), 2.0).survived
    assert after_event(flat(1, 61, 5.0), 2.0).outage_s == 0.0


def test_every_cut_measured_until_the_next_and_summarized():
    """Cuts at 2 s and 4 s (with an up between, not a cut): the first's outage lasts 0.5 s and
    it recovers by 3 s; the second never delivers again. The summary takes the first cut's
    fields, the last one's fate, and counts both."""
    series = flat(1, 21, 8.0) + flat(21, 26, 0.0) + flat(26, 41, 8.0) + flat(41, 61, 0.0)
    events = [{"action": "down", "link": "h1-s1", "interface": None, "applied_s": 2.0},
              {"action": "up", "link": "h1-s1", "interface": None, "applied_s": 3.0},
              {"action": "address-del", "link": None, "interface": "h1-eth0", "applied_s": 4.0},
              {"action": "backup", "link": None, "interface": "h2-eth1", "applied_s": None}]  # never applied
    pm = [{"t": 2.5, "event": "sf_closed"}, {"t": 2.7, "event": "sf_established"}, {"t": 4.2, "event": "sf_closed"}]
    rows = per_event(events, series, pm, {"h1-s1": 4.0, "h1-eth0": 4.0})
    assert [r.get("outage_s") for r in rows] == [0.5, None, 2.0, None]
    first, _, second, _ = rows
    assert (first["recovery_s"], first["recovery_remaining_s"], first["fate"]) == (0.5, 0.5, "survived")
    assert (first["subflows_closed"], first["subflows_established"]) == (1, 1)   # until the next cut
    assert (second["before_mbps"], second["recovery_s"], second["fate"], second["subflows_closed"]) == \
        (8.0, None, "stalled", 1)
    s = summary_of(rows)
    assert (s["event_s"], s["event_link"], s["outage_s"], s["fate"], s["survived"], s["cuts"],
            s["outage_mean_s"], s["outage_max_s"]) == (2.0, "h1-s1", 0.5, "stalled", False, 2, 1.25, 2.0)
    assert summary_of(rows[1:2]) == {}
    assert per_event(events[:1], series, error="iperf3: Connection reset by peer")[0]["fate"] == "reset"
    # a level before above what the network can carry (bursts) is capped at its max-flow
    capped = per_event(events[:1], series, capacity_mbps=6.0)[0]
    assert capped["before_mbps"] == 6.0 and capped["recovery_s"] == 0.5


def test_the_fate_of_a_cut_connection_stalled_reset_survived_or_failed():
    """A TCP flow whose path was cut and whose client the runner abandoned at its time limit (the
    runner's own words for it) stalled; a reset (or refused) connection was reset, even after
    data flowed again; one that delivered again survived; an error with nothing delivered before
    the cut either (the test never ran) failed. Only the last cut reads the test's error."""
    from mptcplab.recovery import fate
    from mptcplab.traffic import not_finished

    timed_out = not_finished("iperf3", 31)
    assert timed_out == "iperf3 client did not finish within 31 s"      # what the runner reports
    dead = after_event(flat(1, 21, 5.0) + flat(21, 61, 0.0), 2.0)       # nothing after the cut
    back = after_event(flat(1, 21, 5.0) + flat(21, 31, 0.0) + flat(31, 61, 5.0), 2.0)
    never = after_event(flat(1, 61, 0.0), 2.0)                          # nothing before either
    assert fate(dead, timed_out) == "stalled"
    assert fate(dead, f"1 of 2 flow(s) failed: h1-h2: {timed_out}") == "stalled"  # a multi-flow test's
    assert fate(dead, None) == "stalled"
    assert fate(dead, "iperf3: error - control socket has closed unexpectedly") == "stalled"
    assert fate(dead, "iperf3: Connection reset by peer") == "reset"
    assert fate(back, "iperf3: error - unable to connect to server: Connection refused") == "reset"
    assert fate(back, None) == fate(back, timed_out) == "survived"
    assert fate(never, "iperf3 server did not start listening on port 5201: ") == "failed"
    assert fate(never, timed_out) == "stalled"
    # per cut: the error is the last cut's; an earlier one survived whatever it says
    series = flat(1, 21, 8.0) + flat(21, 26, 0.0) + flat(26, 41, 8.0) + flat(41, 61, 0.0)
    events = [{"action": "down", "link": "h1-s1", "interface": None, "applied_s": 2.0},
              {"action": "down", "link": "h1-s1", "interface": None, "applied_s": 4.0}]
    rows = per_event(events, series, error="iperf3: Connection reset by peer")
    assert [(r["fate"], r["survived"]) for r in rows] == [("survived", True), ("reset", False)]
    rows = per_event(events, series, error=timed_out)
    assert [r["fate"] for r in rows] == ["survived", "stalled"] and summary_of(rows)["fate"] == "stalled"
    # survived agrees with the fate: a reset after data flowed again did not survive
    reset = per_event(events[:1], series, error="iperf3: Connection reset by peer")[0]
    assert (reset["fate"], reset["survived"]) == ("reset", False)


def test_several_flows_as_one_series():
    rows = [{"flow": "a", "t": 0.1, "goodput_mbps": 1.0}, {"flow": "b", "t": 0.1004, "goodput_mbps": 2.0},
            {"flow": "a", "t": 0.2, "goodput_mbps": 1.5}, {"flow": "b", "t": 0.2, "goodput_mbps": None}]
    assert total_series(rows) == [(0.1, 3.0), (0.2, 1.5)]


# --------------------------------------------------------------------------- real networks


def _subflow_bytes(samples: pd.DataFrame, local_prefix: str, until: float) -> float:
    """Bytes acked on the data connection's subflow from this address, up to ``until`` s."""
    tcp = samples[(samples.kind == "tcp") & samples.token.notna() & samples.bytes_acked.notna()]
    token = tcp.groupby("token")["bytes_acked"].max().idxmax()
    sub = tcp[(tcp.token == token) & tcp.local.str.startswith(local_prefix) & (tcp.t <= until)]
    return float(sub.bytes_acked.max()) if not sub.empty else 0.0


@pytest.mark.root
def test_a_handover_mptcp_moves_to_the_other_address_tcp_loses_its_own(tmp_path, no_leftovers):
    """dual-path, 6 s tests, MPTCP then TCP: h1's first address (the initial subflow's, and
    TCP's) is removed at t = 2 s and never given back during the test. MPTCP goes on over the
    second path; TCP delivers nothing more (its fate is recorded). The address is put back after
    each test: the TCP test, after MPTCP's, delivers at full rate until its own removal."""
    def mutate(spec):
        spec["events"] = {"at": [{"at": 2, "interface": "h1-eth0", "action": "address-del"}]}
        spec["outputs"]["formats"] = ["png"]

    out = tmp_path / "run"
    cli("run-experiment", str(write_spec(tmp_path, traffic={"duration": 6, "repetitions": 1}, mutate=mutate)),
        "--out", str(out))
    events = pd.read_csv(out / "events.csv").set_index("test")
    assert list(events.interface) == ["h1-eth0", "h1-eth0"] and events.error.isna().all(), events
    assert (events.offset_ms.abs() <= 10).all(), events
    summary = pd.read_csv(out / "summary.csv").set_index("protocol")
    mp, tcp = summary.loc["mptcp"], summary.loc["tcp"]
    assert mp["fate"] == "survived" and mp["event_link"] == "h1-eth0", mp
    assert tcp["fate"] in ("stalled", "reset") and not tcp["survived"], tcp
    # restored after the MPTCP test: TCP ran (not restored, it would get nothing). The level of the
    # first 2 s includes iperf3's start and slow start's overshoot: CI once measured 3.65 Mbit/s
    # with a 0.3 s stall at 0.6 s (a burst of queue drops), 4.75 after it
    assert tcp["before_mbps"] > 0.5 * 5, tcp
    series = pd.read_csv(out / "flow-goodput.csv")
    # the other path carries it: in bursts -- the data stranded on the dead subflow holds the
    # connection's window until it is sent again (measured 0.95 and 1.5 MB of at most 2.1)
    after = series[(series.test.str.contains("mptcp")) & (series.t > 3)]
    assert after.goodput_mbps.sum() * 0.1 / 8 > 0.4, after.goodput_mbps.describe()
    samples = pd.read_csv(next((out / "raw").glob("*-mptcp-r1-samples.csv")))
    assert _subflow_bytes(samples, "10.0.2.", 6) > 1e6        # over the second address


@pytest.mark.root
def test_a_backup_path_made_active_sends_mp_prio(tmp_path, no_leftovers):
    """dual-path, one 6 s MPTCP test whose variant makes h2's second endpoint a backup: its
    subflow is established but carries (almost) nothing; at t = 2 s the endpoint is made active
    -- the client's path manager reports the MP_PRIO (sf_prio), and the second path carries
    data from then on."""
    def mutate(spec):
        spec["variants"] = [{"name": "backup-then-active", "protocol": "mptcp", "backup": ["h2-eth1"]}]
        spec["events"] = {"at": [{"at": 2, "interface": "h2-eth1", "action": "active"}]}
        spec["outputs"]["formats"] = ["png"]

    out = tmp_path / "run"
    r = cli("run-experiment", str(write_spec(tmp_path, traffic={"duration": 6, "repetitions": 1}, mutate=mutate)),
            "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    ev = pd.read_csv(out / "events.csv")
    assert list(ev.action) == ["active"] and abs(ev.offset_ms.iloc[0]) <= 10, ev
    pm = pd.read_csv(out / "pm-events.csv")
    prio = pm[pm.event == "sf_prio"]
    assert not prio.empty and prio.t.between(2, 3).all(), pm[["t", "event"]]
    samples = pd.read_csv(next((out / "raw").glob("*-samples.csv")))
    before, total = _subflow_bytes(samples, "10.0.2.", 2), _subflow_bytes(samples, "10.0.2.", 6)
    first = _subflow_bytes(samples, "10.0.1.", 2)
    assert before < 0.05 * first, (before, first)              # a backup: no data while the other works
    assert total - before > 1e6, (before, total)               # active: the second path carries data


def test_a_failed_event_is_not_a_cut_and_recovery_is_never_before_the_event():
    series = flat(1, 21, 8.0) + flat(21, 26, 0.0) + flat(26, 61, 8.0)
    failed = {"action": "down", "link": "h1-s1", "interface": None, "applied_s": 2.0, "error": "KeyError: x"}
    assert "outage_s" not in per_event([failed], series)[0] and summary_of(per_event([failed], series)) == {}
    # goodput never dipped: recovered at once, not 0.05 s before the cut
    r = after_event(flat(1, 61, 8.0), 2.05)
    assert r.recovery_s == 0.0 and r.outage_s == 0.0


def test_every_touched_link_is_put_back_even_when_one_fails():
    """Timeline.stop restores each link on its own and raises after all of them (a stand-in
    network: the restore logic, not a network, is under test)."""
    from types import SimpleNamespace

    from mptcplab.events import Step
    from mptcplab.timeline import Timeline

    restored = []

    class Link:
        def __init__(self, name):
            self.name, self.up, self.down = name, "u", "d"

        def set_down(self, down):
            if self.name == "bad":
                raise OSError("gone")
            restored.append((self.name, down))

    links = {n: Link(n) for n in ("a-b", "bad", "c-d")}
    plan = SimpleNamespace(links=[SimpleNamespace(name=n, up="u", down="d") for n in links])
    tl = Timeline(SimpleNamespace(plan=plan, link=links.__getitem__), [])
    tl._touched = set(links)
    with pytest.raises(RuntimeError, match="link bad: OSError: gone"):
        tl.stop()
    assert restored == [("a-b", False), ("c-d", False)]
    assert Step(1.0, "a-b", "down").target == "a-b"

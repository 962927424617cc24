"""Networks that change during a test (issue 13, first step): the events timeline -- validated
in the spec, expanded deterministically (pure) -- and a link cut while MPTCP and TCP run (root)."""

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from helpers import cli, write_spec
from mptcplab.errors import SpecError
from mptcplab.events import flap_steps, random_steps, timeline
from mptcplab.plan import make_plan
from mptcplab.recovery import SubflowAfterCut, subflows_after_cut
from mptcplab.spec import load_spec, parse_spec, Events

DUAL = "experiments/dual-path.yaml"


def dual(events: dict, **traffic) -> dict:
    from helpers import REPO
    import yaml

    spec = yaml.safe_load((REPO / DUAL).read_text())
    spec["topology"] = yaml.safe_load((REPO / "topologies/dual-path.yaml").read_text())
    spec["traffic"].update(traffic)
    spec["events"] = events
    return spec


def problems(d: dict) -> list[str]:
    with pytest.raises(SpecError) as e:
        parse_spec(d)
    return e.value.problems


#: Bytes a subflow whose path is cut may still get acked after the cut + 1 s (an ACK that was
#: already on its way): about 5 segments. A live 5 Mbit/s subflow gets that in 13 ms.
SILENT_BYTES = 8_000


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))  # text cells: a token such as 2e761670 stays a token


def _host(endpoint: str) -> str:
    return endpoint.rpartition(":")[0].strip("[]")


def subflows_by_path(run: Path, test: str, link: str, cut_s: float, until_s: float = float("inf")
                     ) -> tuple[list[SubflowAfterCut], list[SubflowAfterCut]]:
    """The data connection's subflows of ``test`` as subflows.csv lists them, split into those
    with an end on ``link``'s host interface (its address in plan.json: they cross the link) and
    the others, each measured around the cut by recovery.subflows_after_cut on the test's raw
    ss samples and pm-events.csv. Asserts that subflows.csv has the test and that every subflow
    it lists was sampled."""
    plan = json.loads((run / "plan.json").read_text())
    (cut_link,) = [l for l in plan["links"] if l["name"] == link]
    on_link = {i["address"].split("/")[0] for i in (cut_link["intf1"], cut_link["intf2"]) if i["address"]}
    listed = [r for r in _rows(run / "subflows.csv") if r["test"] == test]
    assert listed and len({r["token"] for r in listed}) == 1, listed
    token = listed[0]["token"]
    measured = {(m.local, m.remote): m for m in subflows_after_cut(
        _rows(run / "raw" / f"{test}-samples.csv"), token, cut_s, settle_s=1.0, until_s=until_s,
        pm_events=[r for r in _rows(run / "pm-events.csv") if r["test"] == test])}
    assert all((r["local"], r["remote"]) in measured for r in listed), (listed, measured)
    cut = [measured[r["local"], r["remote"]] for r in listed if {_host(r["local"]), _host(r["remote"])} & on_link]
    other = [measured[r["local"], r["remote"]] for r in listed if not {_host(r["local"]), _host(r["remote"])} & on_link]
    return cut, other


def test_events_are_checked_against_the_topology_and_the_test():
    assert any("events.at[0].link: 'h9-s1' is not a link of the topology" in p
               for p in problems(dual({"at": [{"at": 1, "link": "h9-s1", "action": "down"}]})))
    assert any("events.at[0]: ends at 12 s, not inside the 10 s test" in p
               for p in problems(dual({"at": [{"at": 12, "link": "h1-s1", "action": "down"}]})))
    assert any("params: give them with action: set" in p
               for p in problems(dual({"at": [{"at": 1, "link": "h1-s1", "action": "set"}]})))
    assert any("down_for: 2 s is not shorter than the period 2 s" in p
               for p in problems(dual({"flaps": [{"link": "h1-s1", "period": 2, "down_for": 2}]})))
    assert any("events.flaps[0]: ends at 10.5 s" in p for p in problems(
        dual({"flaps": [{"link": "h1-s1", "start": 2, "period": 2, "down_for": 0.5, "count": 5}]})))


def flows_spec(events: dict, flows: list[dict], **traffic) -> dict:
    """dual-path with ``flows:`` instead of traffic's one client/server."""
    spec = dual(events, **traffic)
    for role in ("client", "server", "protocols"):
        spec["traffic"].pop(role, None)
    spec["flows"] = flows
    return spec


def test_events_of_a_multi_flow_spec_fall_inside_its_flows():
    """A multi-flow test lasts until its last flow is due to end (start + its duration, or
    traffic.duration): an event at 3000 s of 20 s flows is refused (exit 2) naming the event and
    the flow that sets the length; one inside is accepted; byte-count flows leave the length
    unknown, so nothing is refused for it."""
    at = lambda t: {"at": [{"at": t, "link": "s1-h2", "action": "down"}]}  # noqa: E731
    flows = [{"src": "h1", "dst": "h2", "duration": 20}, {"src": "h2", "dst": "h1", "start": 2, "duration": 10}]
    with pytest.raises(SpecError) as e:
        parse_spec(flows_spec(at(3000), flows))
    assert e.value.exit_code == 2
    assert any(p.startswith("events.at[0]: ends at 3000 s, not inside the 20 s test") and "flows[0].duration" in p
               for p in e.value.problems), e.value.problems
    assert parse_spec(flows_spec(at(19), flows)).events.at[0].at == 19
    # the last to end sets it: a later start with traffic.duration (10 s) ends at 25 s
    later = [*flows, {"src": "h1", "dst": "h2", "start": 15}]
    assert any("not inside the 25 s test (flows[2].start 15 s + traffic.duration 10 s" in p
               for p in problems(flows_spec(at(26), later)))
    assert parse_spec(flows_spec(at(24), later))
    # a matrix's flows: its start and duration
    matrix = flows_spec({"flaps": [{"link": "s1-h2", "start": 1, "period": 2, "down_for": 0.5, "count": 5}]}, [],
                        duration=8)
    matrix.pop("flows")
    matrix["matrix"] = {"kind": "permutation", "start": 1}
    assert any(p.startswith("events.flaps[0]: ends at 9.5 s, not inside the 9 s test (matrix.start 1 s + "
                            "traffic.duration 8 s") for p in problems(matrix))
    # a flow sending a byte count may end at any time: nothing to check against
    assert parse_spec(flows_spec(at(3000), [*flows, {"src": "h1", "dst": "h2", "bytes": 10**6}]))


def test_flaps_and_random_failures_expand_deterministically():
    flap = SimpleNamespace(link="h1-s1", start=1.0, period=2.0, down_for=0.5, count=3)
    assert [(s.at_s, s.action) for s in flap_steps(flap, "flaps[0]")] == [
        (1.0, "down"), (1.5, "up"), (3.0, "down"), (3.5, "up"), (5.0, "down"), (5.5, "up")]
    proc = SimpleNamespace(link="h1-s1", start=0.0, until=60.0, mean_up=2.0, mean_down=0.5, seed=7)
    a, b = random_steps(proc, "random[0]"), random_steps(proc, "random[0]")
    assert a == b and len(a) % 2 == 0 and a                       # a seed is one schedule
    assert [s.action for s in a] == ["down", "up"] * (len(a) // 2)
    assert all(x.at_s < y.at_s for x, y in zip(a, a[1:]))          # down, up, down, ... in order
    downs = [y.at_s - x.at_s for x, y in zip(a[::2], a[1::2])]
    ups = [x.at_s - y.at_s for x, y in zip(a[2::2], a[1::2])]
    assert 0.2 < sum(downs) / len(downs) < 1.0 and 1.0 < sum(ups) / len(ups) < 4.0  # means 0.5 and 2
    assert random_steps(SimpleNamespace(**{**proc.__dict__, "seed": 8}), "r") != a


def test_the_timeline_merges_every_source_in_time_order_and_is_planned():
    events = Events.model_validate({"at": [{"at": 4, "link": "s1-h2", "action": "set", "params": {"bw": 1}}],
                                    "flaps": [{"link": "h1-s1", "start": 1, "period": 2, "down_for": 0.5,
                                               "count": 2}]})
    steps = timeline(events)
    assert [(s.at_s, s.link, s.action, s.origin) for s in steps] == [
        (1.0, "h1-s1", "down", "flaps[0]"), (1.5, "h1-s1", "up", "flaps[0]"), (3.0, "h1-s1", "down", "flaps[0]"),
        (3.5, "h1-s1", "up", "flaps[0]"), (4.0, "s1-h2", "set", "at[0]")]
    assert steps[-1].params == {"bw": 1.0}
    plan = make_plan(parse_spec(dual(events.model_dump())))
    assert list(plan.events) == steps and json.dumps(plan.to_dict()["events"])  # recorded in plan.json
    assert make_plan(load_spec(DUAL)).events == ()


@pytest.mark.root
def test_a_cut_path_mptcp_goes_on_over_the_other_tcp_stalls(tmp_path, no_leftovers):
    """dual-path, 6 s tests: the initial subflow's path (s1-h2) is cut at t = 2 s. MPTCP survives
    and keeps delivering over the second path: the cut path's subflow closes or goes silent (its
    ss samples: nothing acked from 1 s after the cut), the other's bytes grow. TCP, on the cut
    path, stalls and its test says so (its client never finishes, survived is False, its fate is
    stalled). events.csv says the cut was applied within
    10 ms of its schedule for both tests (so the link was back up for the second), and the
    client's path manager events are recorded on the test's clock."""
    def mutate(spec):
        spec["events"] = {"at": [{"at": 2, "link": "s1-h2", "action": "down"}]}
        spec["outputs"]["formats"] = ["png"]

    out = tmp_path / "run"
    r = cli("run-experiment", str(write_spec(tmp_path, traffic={"duration": 6, "repetitions": 1}, mutate=mutate)),
            "--out", str(out))
    # TCP's connection cannot end its test over the cut path: its test is flagged, the run says
    # so (exit 1), and MPTCP's is not
    assert r.returncode == 1 and "flagged 002-tcp-r1: iperf3 client did not finish" in r.stderr, r.stderr[-3000:]
    summary = pd.read_csv(out / "summary.csv").set_index("protocol")
    assert pd.isna(summary.loc["mptcp", "error"]) and summary.loc["mptcp", "subflows"] == 2
    assert "did not finish" in summary.loc["tcp", "error"]
    events = pd.read_csv(out / "events.csv")
    assert list(events.action) == ["down", "down"] and events.error.isna().all()
    assert (events.offset_ms.abs() <= 10).all(), events
    (client,) = (out / "raw").glob("*-mptcp-r1-client.json")
    intervals = json.loads(client.read_text())["intervals"]
    after = sum(i["sum"]["bytes"] for i in intervals if i["sum"]["start"] >= 3)
    assert after > 100_000, after  # data goes on over the second path
    # the outage the cut caused, read from the receiver's 0.1 s series: MPTCP survived it. (Its
    # goodput after the cut stutters: what was in flight on the dead subflow waits for that
    # subflow's RTOs before it is sent again on the other -- measured 0.9 s of outage, then
    # bursts; recovery to 90% is not reached within the test. The bench measures it.)
    mp = summary.loc["mptcp"]
    assert mp["survived"] and mp["event_link"] == "s1-h2" and abs(mp["event_s"] - 2) < 0.01
    assert 0 < mp["outage_s"] < 3.0, mp
    assert summary.loc["tcp", "survived"] == False  # noqa: E712  (numpy bool)
    # TCP's client never finished over the cut path: the flow stalled (not reset, not failed)
    assert summary.loc["tcp", "fate"] == "stalled", summary.loc["tcp"]
    assert events.loc[~events.test.str.contains("mptcp"), "fate"].tolist() == ["stalled"], events
    # the cut path's subflow (the initial one, to h2's address on s1-h2) closes or goes silent
    # once its sender has had an RTO or two (1 s) to notice; the other subflow carries on
    (mp_test,) = [t for t in events.test if "mptcp" in t]
    cut_s = float(events.loc[events.test == mp_test, "applied_s"].iloc[0])
    cut, other = subflows_by_path(out, mp_test, "s1-h2", cut_s)
    assert len(cut) == 1 and len(other) == 1, (cut, other)
    assert cut[0].silent(SILENT_BYTES), cut
    assert other[0].acked_after > 100_000, other
    # the client's path manager: the connection and its second subflow established, on the test's clock
    pm = pd.read_csv(out / "pm-events.csv")
    assert {"created", "established", "sf_established"} <= set(pm.event), set(pm.event)
    assert pm.t.between(-1, 10).all()
    mib = pd.read_csv(out / "mptcp-mib.csv")
    joins = mib[(mib.test.str.contains("mptcp")) & (mib.counter == "MPTcpExtMPJoinSynAckRx")]
    assert list(joins.host) == ["client"] and joins.delta.iloc[0] >= 1  # the client joined the second path


def test_the_cut_paths_subflow_goes_silent_the_other_carries_on_in_a_recorded_handover():
    """tests/data/handover-run (Wi-Fi, h1-s1, down at 5 s and up at 15 s): in both MPTCP tests
    the Wi-Fi subflow (h1's 10.0.1.1) gets nothing acked from 1 s after the cut until Wi-Fi
    returns, while the cellular one carries megabytes. Measured to the end instead, Wi-Fi carried
    again after 15 s: not silent -- the check can fail. An sf_closed counts for its own subflow
    (token and 4-tuple; ports as text or pandas floats), not for another connection's."""
    from helpers import REPO

    run = REPO / "tests/data/handover-run"
    events = _rows(run / "events.csv")
    for test in ("002-mptcp-r1", "003-mptcp-backup-r1"):
        down, up = (float(e["applied_s"]) for e in events if e["test"] == test)
        cut, other = subflows_by_path(run, test, "h1-s1", down, until_s=up)
        assert [_host(s.local) for s in cut] == ["10.0.1.1"] and [_host(s.local) for s in other] == ["10.0.2.1"]
        assert cut[0].acked_after == 0 and cut[0].closed_s is None and cut[0].silent(SILENT_BYTES), cut
        assert other[0].acked_after > 1_000_000 and not other[0].silent(SILENT_BYTES), other
    cut, _ = subflows_by_path(run, "002-mptcp-r1", "h1-s1", down)
    assert cut[0].acked_after > 1_000_000 and not cut[0].silent(SILENT_BYTES)
    # closes: matched on the data connection's token and the subflow's 4-tuple, after the cut
    samples = _rows(run / "raw/002-mptcp-r1-samples.csv")
    closed = {"event": "sf_closed", "token": "29e7f530", "saddr4": "10.0.1.1", "daddr4": "10.0.1.2",
              "sport": 48134.0, "dport": "5201", "saddr6": float("nan"), "t": 5.6}
    control = {**closed, "token": "a8c85dc2", "sport": "48118", "t": 5.5}      # iperf3's control connection
    early = {**closed, "t": 4.0}                                               # before the cut
    got = subflows_after_cut(samples, "29e7f530", 5.0, pm_events=[early, control, closed])
    assert [(s.local, s.closed_s) for s in got] == [("10.0.1.1:48134", 5.6), ("10.0.2.1:46293", None)]
    assert got[0].silent(SILENT_BYTES) and not got[1].silent(SILENT_BYTES)
    assert subflows_after_cut(samples, "29e7f530", 5.0, pm_events=[control])[0].closed_s is None


def test_outage_and_recovery_on_known_series():
    from mptcplab.recovery import after_event

    up = lambda a, b, g: [(round(0.1 * k, 1), g) for k in range(a, b)]  # noqa: E731
    series = up(1, 21, 5.0) + up(21, 31, 0.0) + up(31, 61, 5.0)       # 1 s of nothing after t = 2
    r = after_event(series, 2.0)
    assert (r.before_mbps, r.outage_s, r.recovery_s, r.survived) == (5.0, 1.0, 1.0, True)
    dead = after_event(up(1, 21, 5.0) + up(21, 61, 0.0), 2.0)
    assert (dead.outage_s, dead.recovery_s, dead.survived) == (4.0, None, False)
    slow = after_event(up(1, 21, 4.0) + up(21, 26, 0.0) + up(26, 41, 2.0) + up(41, 61, 4.0), 2.0)
    assert (slow.outage_s, slow.recovery_s) == (0.5, 2.0)              # half rate until t = 4


def test_pm_events_on_the_tests_clock():
    from datetime import datetime

    from mptcplab.measurements import parse_pm_events

    t0 = datetime.fromisoformat("2026-11-27T14:05:58.800000").timestamp()
    text = ("[2026-11-27T14:05:58.817544] [       CREATED] token=2c0b065d remid=0 locid=0 saddr4=10.0.1.1 sport=1\n"
            "[2026-11-27T14:05:59.900000] [SF_ESTABLISHED] token=2c0b065d remid=1 locid=2 saddr4=10.0.2.1\n"
            "[2026-11-27T14:06:00.000000] [UNKNOWN 15]\n")
    rows = parse_pm_events(text, t0)
    assert [(r["event"], round(r["t"], 6)) for r in rows] == [("created", 0.017544), ("sf_established", 1.1),
                                                             ("unknown 15", 1.2)]
    assert rows[1]["saddr4"] == "10.0.2.1" and rows[1]["locid"] == "2"


def test_custom_figures_may_use_the_recovery_columns_of_a_run_with_events():
    from mptcplab.runner import plan_points

    figure = {"figures": [{"x": "protocol", "y": "outage_s", "kind": "bar"}]}
    plan_points(parse_spec({**dual({"at": [{"at": 2, "link": "s1-h2", "action": "down"}]}), **figure}),
                "20261127-000000-abcd")
    with pytest.raises(SpecError, match="outage_s"):
        spec = {**dual({}), **figure}
        spec.pop("events")
        plan_points(parse_spec(spec), "20261127-000000-abcd")


def test_mptcp_mib_rows_keep_only_what_moved_in_mptcp():
    from mptcplab.rows import mib_rows

    assert mib_rows({"server": {"MPTcpExtAddAddr": 1}, "client": {"MPTcpExtMPJoinSynAckRx": 2, "TcpRetransSegs": 3}}) == [
        {"host": "client", "counter": "MPTcpExtMPJoinSynAckRx", "delta": 2},
        {"host": "server", "counter": "MPTcpExtAddAddr", "delta": 1}]

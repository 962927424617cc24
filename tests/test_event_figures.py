"""Figures of networks that change during a test (events.csv, pm-events.csv, flow-goodput.csv),
from saved results alone: tests/data/handover-run -- a real run of experiments/handover.yaml
(tcp, mptcp, mptcp-backup; the Wi-Fi link h1-s1 down from 5 s to 15 s of 20 s), its tables,
JSON files and ss samples without the iperf3 reports -- and a synthetic sweep over a flap
period written through RunDir. Each drawn figure is caught as it is saved and read back."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from helpers import REPO
from mptcplab import eventfigures, figures
from mptcplab.eventfigures import _data_token, _test_events, event_marks, outage_summary, subflow_lifetimes_of
from mptcplab.figures import param_label, render, variant_label
from mptcplab.results import EVENTS, FLOW_GOODPUT, PM_EVENTS, RunDir

HANDOVER = REPO / "tests/data/handover-run"
TODAY = {"goodput", "goodput-cdf", "subflow-share", "subflow-goodput-time"}  # what a run without events gets
EVENT_FIGURES = {"events-goodput-time", "subflow-lifetimes", "outage-table"}


def _names(files: list[Path]) -> set[str]:
    return {f.name.rsplit(".", 1)[0] for f in files}


@pytest.fixture
def drawn(monkeypatch) -> dict[str, plt.Figure]:
    """stem -> the figure render saved under it (kept after it is closed, to be inspected):
    figures' and eventfigures' (which imported it from figures) _save both wrapped."""
    caught: dict[str, plt.Figure] = {}
    save = figures._save

    def keep(fig: plt.Figure, out: RunDir, stem: str, formats: list[str]) -> list[Path]:
        caught[stem] = fig
        return save(fig, out, stem, formats)

    monkeypatch.setattr(figures, "_save", keep)
    monkeypatch.setattr(eventfigures, "_save", keep)
    return caught


def _handover(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(HANDOVER, run)
    return run


def _panels(fig: plt.Figure) -> list[Any]:
    return [ax for ax in fig.axes if ax.get_visible()]


def _spans(ax: Any) -> list[tuple[float, float]]:
    """The x extent of every shaded event span (axvspan rectangles spanning the whole height)."""
    out = []
    for p in ax.patches:
        if p.get_gid() is None and isinstance(p, plt.Rectangle) and p.get_height() == 1:
            out.append((round(p.get_x(), 6), round(p.get_x() + p.get_width(), 6)))
    return out


def test_handover_run_draws_the_event_figures(tmp_path, drawn):
    """Every figure of a single-flow run as before, plus the three event figures (no sweep: no
    recovery-vs); pdf and png of each."""
    files = render(_handover(tmp_path))
    assert _names(files) == TODAY | EVENT_FIGURES
    assert {f.suffix for f in files} == {".pdf", ".png"}
    assert all(f.stat().st_size > 1000 for f in files)


def test_events_goodput_time_one_panel_per_variant_with_the_cut_shaded(tmp_path, drawn):
    """One panel per variant, titled with it; the cut shaded from where h1-s1 went down to where
    it came up (applied_s, not scheduled_s); the receiver's line in each panel and one line per
    subflow of the data connection in the MPTCP ones (TCP's samples have no token)."""
    render(_handover(tmp_path))
    summary = pd.read_csv(HANDOVER / "summary.csv")
    events = pd.read_csv(HANDOVER / "events.csv")
    subflows = pd.read_csv(HANDOVER / "subflows.csv")
    panels = _panels(drawn["events-goodput-time"])
    assert len(panels) == summary["variant"].nunique() == 3
    for ax, r in zip(panels, summary.itertuples()):
        assert ax.get_title().startswith(variant_label(r.variant, 0) + ": " + r.test)
        ev = events[events["test"] == r.test].set_index("action")["applied_s"]
        assert _spans(ax) == [(round(ev["down"], 6), round(ev["up"], 6))]
        assert ev["down"] != 5.0  # applied a little after it was scheduled: the span says when it happened
        assert len(ax.lines) == 1 + int((subflows["test"] == r.test).sum())


def test_subflow_lifetimes_one_bar_per_subflow_of_the_data_connection(tmp_path, drawn):
    """Per MPTCP test, one bar per subflow the path manager reported for the data connection
    (the token subflows.csv names; iperf3's control connection left out), starting where pm-events
    says it was established; the backup variant's join hatched (sf_established backup=1)."""
    render(_handover(tmp_path))
    pm = pd.read_csv(HANDOVER / "pm-events.csv", dtype={"token": str})
    tokens = pd.read_csv(HANDOVER / "subflows.csv", dtype={"token": str}).groupby("test")["token"].first()
    panels = _panels(drawn["subflow-lifetimes"])
    assert len(panels) == len(tokens) == 2
    for ax, (test, token) in zip(panels, tokens.items()):
        rows = pm[(pm["test"] == test) & (pm["token"] == token) & pm["event"].isin(["established", "sf_established"])]
        assert pm.loc[(pm["test"] == test) & (pm["event"] == "created"), "token"].nunique() == 2  # control + data
        bars = [p for p in ax.patches if (p.get_gid() or "").startswith("subflow-")]
        assert len({p.get_gid() for p in bars}) == len(rows) == 2
        assert sorted(round(p.get_x(), 6) for p in bars) == sorted(rows["t"].round(6))
        assert ax.get_title().endswith(f"token {token}")
        hatched = [p for p in bars if p.get_hatch()]
        assert len(hatched) == int((rows["backup"] == 1).sum())
    assert sum(1 for p in panels[1].patches if p.get_hatch()) == 1  # mptcp-backup: its join is the backup


def test_data_connection_without_samples_is_the_later_created(tmp_path):
    pm = pd.read_csv(HANDOVER / "pm-events.csv")
    one = pm[pm["test"] == "002-mptcp-r1"]
    samples = pd.read_csv(HANDOVER / "raw/002-mptcp-r1-samples.csv")
    assert _data_token(samples, one) == "29e7f530" == _data_token(None, one)
    assert _data_token(None, one[one["token"] == "a8c85dc2"]) == "a8c85dc2"
    life = subflow_lifetimes_of(one, "29e7f530", 20.0)
    assert list(life["subflow"]) == ["10.0.1.1 → 10.0.1.2", "10.0.2.1 → 10.0.2.2"]
    assert list(life["stop"]) == [20.0, 20.0] and not life["closed"].any()  # no sf_closed, no closed: to the end


def test_lifetimes_follow_closes_and_priority_changes(tmp_path):
    """A handover as the path manager reports it: the Wi-Fi subflow closes, a new one on the
    same address pair (another port) is established later, the cellular one turns backup and
    back; the connection's close ends what is left. A token that looks like a number is still
    found: pm-events.csv is written and read back through RunDir, which keeps tokens text."""
    rows = [(0.1, "established", "10.0.1.1", 40000, 0), (0.2, "sf_established", "10.0.2.1", 40001, 0),
            (5.0, "sf_closed", "10.0.1.1", 40000, None), (6.0, "sf_prio", "10.0.2.1", 40001, 1),
            (9.0, "sf_established", "10.0.1.1", 40002, 0), (9.5, "sf_prio", "10.0.2.1", 40001, 0),
            (12.0, "closed", "", None, None)]
    rd = RunDir.create("handover", out=tmp_path / "run")
    rd.write_table(PM_EVENTS, [{"t": t, "event": e, "token": "00120000", "saddr4": s,
                                "daddr4": s[:-1] + "2" if s else "", "sport": sp, "dport": 5201 if sp else None,
                                "backup": b} for t, e, s, sp, b in rows])
    life = subflow_lifetimes_of(rd.read_table(PM_EVENTS), "00120000", 15.0)
    assert list(life["subflow"]) == ["10.0.1.1:40000 → 10.0.1.2:5201", "10.0.2.1 → 10.0.2.2",
                                     "10.0.1.1:40002 → 10.0.1.2:5201"]
    assert list(life["start"]) == [0.1, 0.2, 9.0]
    assert list(life["stop"]) == [5.0, 12.0, 12.0] and life["closed"].all()
    assert life["backup"].iloc[1] == [(0.2, False), (6.0, True), (9.5, False)]


def test_event_marks_pair_cuts_with_what_undoes_them():
    events = pd.DataFrame([
        {"test": "t", "link": "h1-s1", "interface": None, "action": "down", "scheduled_s": 1.0, "applied_s": 1.01},
        {"test": "t", "link": "h1-s2", "interface": None, "action": "set", "scheduled_s": 2.0, "applied_s": 2.0},
        {"test": "t", "link": "h1-s1", "interface": None, "action": "up", "scheduled_s": 3.0, "applied_s": None},
        {"test": "t", "link": None, "interface": "h1-eth1", "action": "address-del", "scheduled_s": 4.0,
         "applied_s": 4.0},
        {"test": "t", "link": "h1-s1", "interface": None, "action": "down", "scheduled_s": 6.0, "applied_s": 6.0},
        {"test": "t", "link": None, "interface": "h1-eth1", "action": "address-add", "scheduled_s": 7.0,
         "applied_s": 7.0, "error": None},
        {"test": "t", "link": "h1-s2", "interface": None, "action": "down", "scheduled_s": 7.5, "applied_s": None,
         "error": "no such link"},
        {"test": "u", "link": "h1-s1", "interface": None, "action": "down", "scheduled_s": 1.0, "applied_s": 1.0},
    ])
    marks = event_marks(_test_events(events, "t"), end=10.0)
    assert [(m.start, m.stop, m.name) for m in marks] == [
        (1.01, 3.0, "h1-s1 down"),          # up: no applied time recorded -> its scheduled time
        (2.0, None, "h1-s2 set"),            # not a cut: a line
        (4.0, 7.0, "h1-eth1 address-del"),   # an interface's address, given back
        (6.0, 10.0, "h1-s1 down"),           # never brought up: to the end
    ]                                        # the failed down on h1-s2 did not happen: not drawn


def _summary_with_repetitions() -> pd.DataFrame:
    """The handover summary as three repetitions with different numbers: the second TCP test
    never recovered and was reset; recovery_remaining_s and fate as newer runs record them."""
    base = pd.read_csv(HANDOVER / "summary.csv")
    reps = []
    for rep in (1, 2, 3):
        r = base.assign(repetition=rep, test=base["test"].str.replace("-r1", f"-r{rep}"))
        r["outage_s"] = r["outage_s"] + 0.1 * rep
        r["delivered_mb"] = r["delivered_mb"] * rep
        r["recovery_remaining_s"] = [None, 1.0 + rep, 0.5 * rep]
        r["fate"] = "survived"
        reps.append(r)
    s = pd.concat(reps, ignore_index=True)
    bad = s["test"] == "001-tcp-r2"
    s.loc[bad, ["recovery_s", "fate", "survived"]] = [None, "reset", False]
    return s


def _cells(fig: plt.Figure) -> dict[str, dict[str, str]]:
    """outage-table's cells: variant label -> column head (one line) -> text."""
    table = fig.axes[0].tables[0]
    cells = table.get_celld()
    ncols = 1 + max(c for _, c in cells)
    nrows = 1 + max(r for r, _ in cells)
    heads = [cells[0, c].get_text().get_text().replace("\n", " ") for c in range(ncols)]
    return {cells[r, 0].get_text().get_text(): {heads[c]: cells[r, c].get_text().get_text() for c in range(1, ncols)}
            for r in range(1, nrows)}


def test_outage_table_shows_the_summary_means(tmp_path, drawn):
    """Each number in the table is its variant's mean over the tests in summary.csv, to two
    decimals; a mean over fewer tests than the variant has is starred; survival counted with
    the other fates; a column the summary lacks is not drawn."""
    run = _handover(tmp_path)
    summary = _summary_with_repetitions()
    summary.to_csv(run / "summary.csv", index=False)
    render(run)
    cells = _cells(drawn["outage-table"])
    assert list(cells) == ["TCP", "MPTCP", "MPTCP backup"]
    means = summary.groupby("variant").mean(numeric_only=True)
    heads = {"outage_s": "Outage (s)", "recovery_s": "Recovery (s)", "recovery_remaining_s": "Adapted (s)",
             "delivered_mb": "Delivered (MB)"}
    for variant, row in cells.items():
        v = {"TCP": "tcp", "MPTCP": "mptcp", "MPTCP backup": "mptcp-backup"}[variant]
        assert row["Tests"] == "3"
        for col, head in heads.items():
            if pd.isna(means.loc[v, col]):
                assert row[head] == "–"
            else:
                assert float(row[head].rstrip("*")) == pytest.approx(round(means.loc[v, col], 2), abs=1e-9)
    assert cells["TCP"]["Recovery (s)"].endswith("*") and not cells["MPTCP"]["Recovery (s)"].endswith("*")
    assert cells["TCP"]["Survived"] == "2/3\n1 reset" and cells["MPTCP backup"]["Survived"] == "3/3"
    table = outage_summary(summary)
    assert table.loc["tcp", "recovery_s_n"] == 2 and table.loc["tcp", "fates"] == {"survived": 2, "reset": 1}
    assert outage_summary(summary.drop(columns=["outage_s"])).empty


def test_run_without_events_draws_none_of_the_event_figures(tmp_path, drawn):
    """Without events.csv, or with one that has no rows, a run draws exactly what it drew before."""
    run = _handover(tmp_path)
    (run / "events.csv").unlink()
    assert _names(render(run, ["png"])) == TODAY
    header = (HANDOVER / "events.csv").read_text().splitlines()[0]
    (run / "events.csv").write_text(header + "\n")
    assert _names(render(run, ["png"])) == TODAY
    assert not set(drawn) & (EVENT_FIGURES | {"recovery-vs-events-flaps-0-period"})


def test_event_figures_without_their_data_are_skipped(tmp_path, drawn):
    """No pm-events.csv, no samples: the goodput figure without subflow lines, no lifetimes; no
    flow-goodput.csv either: no goodput figure; no recovery columns: no table. Nothing fails."""
    run = _handover(tmp_path)
    (run / "pm-events.csv").unlink()
    shutil.rmtree(run / "raw")
    names = _names(render(run, ["png"]))
    assert "subflow-lifetimes" not in names and {"events-goodput-time", "outage-table"} <= names
    assert all(len(ax.lines) == 1 for ax in _panels(drawn["events-goodput-time"]))
    (run / "flow-goodput.csv").unlink()
    summary = pd.read_csv(run / "summary.csv").drop(columns=["outage_s", "recovery_s", "delivered_mb"])
    summary.to_csv(run / "summary.csv", index=False)
    shutil.rmtree(run / "figures")
    assert not _names(render(run, ["png"])) & EVENT_FIGURES


def _flap_sweep(tmp_path: Path) -> RunDir:
    """A sweep over events.flaps[0].period (1, 2, 4 s), variants tcp and mptcp, 2 repetitions:
    h1-s1 down for 0.5 s every period; MPTCP's outage grows with the period, TCP's recovery is
    missing once (it never recovered)."""
    rd = RunDir.create("flaps", out=tmp_path / "run")
    summary, events, series = [], [], []
    k = 0
    for period in (1.0, 2.0, 4.0):
        k += 1
        point = f"p{k:03d}"
        for rep in (1, 2):
            for i, (variant, outage) in enumerate((("tcp", 0.5 + 0.3 * period), ("mptcp", 0.1 * period))):
                test = f"{point}-{i + 1:03d}-{variant}-r{rep}"
                base = {"experiment": "flaps", "point": point, "events.flaps[0].period": period, "test": test,
                        "variant": variant}
                never = variant == "tcp" and period == 4.0 and rep == 2
                summary.append({**base, "protocol": variant, "repetition": rep, "goodput_mbps": 5.0 + rep,
                                "error": None, "duration_s": 8.0, "event_s": 1.0, "event_link": "h1-s1",
                                "before_mbps": 9.0, "outage_s": outage + 0.01 * rep,
                                "recovery_s": None if never else outage + 1.0 + 0.1 * rep, "delivered_mb": 1.0,
                                "survived": True})
                t = 1.0
                while t < 8.0:
                    for action, at in (("down", t), ("up", t + 0.5)):
                        events.append({**base, "event": "flaps[0]", "link": "h1-s1", "interface": None,
                                       "action": action, "scheduled_s": at, "applied_s": at + 0.001})
                    t += period
                series += [{**base, "flow": "h1-h2", "t": round(0.1 * j, 1), "goodput_mbps": 6.0}
                           for j in range(1, 81)]
    rd.write_summary(summary)
    rd.write_table(EVENTS, events)
    rd.write_table(FLOW_GOODPUT, series)
    rd.write_metadata({"experiment": "flaps", "formats": ["png"], "swept": ["events.flaps[0].period"]})
    return rd


def test_recovery_against_a_swept_flap_period(tmp_path, drawn):
    """A sweep over the flap period: outage and recovery against it, one line per variant at
    the variant's means, the axis named 'flap period (s)'; the panel counts the test that never
    recovered. Over time, the first point's tests only, said in the titles."""
    rd = _flap_sweep(tmp_path)
    names = _names(render(rd.path))
    assert {"recovery-vs-events-flaps-0-period", "events-goodput-time", "outage-table"} <= names
    assert "subflow-lifetimes" not in names  # no pm-events.csv
    fig = drawn["recovery-vs-events-flaps-0-period"]
    outage, recovery = _panels(fig)
    assert recovery.get_xlabel() == "flap period (s)" == param_label("events.flaps[0].period")
    assert (outage.get_ylabel(), recovery.get_ylabel()) == ("Outage (s)", "Recovery (s)")
    summary = rd.read_summary()
    for ax, col in ((outage, "outage_s"), (recovery, "recovery_s")):
        means = summary.groupby(["variant", "events.flaps[0].period"])[col].mean()
        lines = [list(line.get_ydata()) for line in ax.lines if list(line.get_xdata()) == [1.0, 2.0, 4.0]]
        for variant in ("tcp", "mptcp"):
            assert list(means[variant].to_numpy()) in [pytest.approx(y) for y in lines]
    assert recovery.get_title(loc="right") == "1 of 12 tests never recovered"
    assert outage.get_title(loc="right") == ""
    titles = [ax.get_title() for ax in _panels(drawn["events-goodput-time"])]
    assert titles == ["TCP: p001-001-tcp-r1 (flap period = 1 s)", "MPTCP: p001-002-mptcp-r1 (flap period = 1 s)"]
    assert len(_spans(_panels(drawn["events-goodput-time"])[0])) == 7  # a flap every second from 1 s to 7 s
    assert drawn["outage-table"].axes[0].get_title().endswith("at every point")


def test_event_fields_are_named_for_a_reader():
    assert param_label("events.flaps[0].period") == "flap period (s)"
    assert param_label("events.flaps[1].down_for") == "flap down time, flaps[1] (s)"
    assert param_label("events.at[1].at") == "at[1] time (s)"
    assert param_label("events.at[2].params.bw") == "bw set by at[2] (Mbit/s)"
    assert param_label("events.random[0].seed") == "failure seed"
    assert param_label("links.h1-s2.loss") == "loss h1-s2 (%)"  # unchanged


def test_multi_flow_run_with_events_draws_the_flows_sum(tmp_path, drawn):
    """A multi-flow run (tests/data/multiflow-run) given a cut: its own figures as before, and
    over time the flows' sum only -- one connection's subflows under it would mislead."""
    run = tmp_path / "run"
    shutil.copytree(REPO / "tests/data/multiflow-run", run)
    summary = pd.read_csv(run / "summary.csv")
    rows = [{"experiment": "shared-bottleneck", "test": t, "variant": v, "event": f"at[{i}]", "link": "s1-s2",
             "interface": None, "action": a, "scheduled_s": at, "applied_s": at + 0.002, "error": None}
            for t, v in zip(summary["test"], summary["variant"]) for i, (a, at) in enumerate((("down", 2.0), ("up", 3.0)))]
    pd.DataFrame(rows).to_csv(run / "events.csv", index=False)
    names = _names(render(run, ["png"]))
    assert names == {"flow-goodput-time", "fairness", "fraction-of-optimal", "flow-throughput-ranked", "rtt-cdf",
                     "subflow-share", "events-goodput-time"}  # no pm-events, no outage columns
    panels = _panels(drawn["events-goodput-time"])
    assert len(panels) == summary["variant"].nunique()
    assert all(len(ax.lines) == 1 and _spans(ax) == [(2.002, 3.002)] for ax in panels)
    series = pd.read_csv(run / "flow-goodput.csv")
    first = series[series["test"] == summary["test"].iloc[0]]
    per_flow = first.groupby("flow")["goodput_mbps"].mean()
    assert len(per_flow) == 2  # the line is their sum (smoothed: compared on the mean)
    assert panels[0].lines[0].get_ydata().mean() == pytest.approx(per_flow.sum(), rel=0.03)

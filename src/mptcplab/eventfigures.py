"""Figures of runs whose tests had events (events.csv): what a network that changes during a test
did to the traffic.

- ``events-goodput-time``: the receiver's and each subflow's goodput around the events, one panel
  per variant (its median test), cuts shaded until undone;
- ``subflow-lifetimes``: when each subflow of the data connection lived (pm-events.csv), and while
  it was a backup;
- ``recovery-vs-<param>``: outage and recovery after the first cut against a swept parameter;
- ``outage-table``: the first cut's outage, recovery, data delivered and survival per variant.

Times are on each test's clock (seconds after the client started), as in events.csv,
pm-events.csv and flow-goodput.csv. Each figure returns [] when the data it needs are missing.

A module apart from :mod:`mptcplab.figures` because these figures read tables only runs with
events have and share little with the steady-state ones beyond style and small helpers; kept in
one file, figures.py had grown past 1500 lines. Imports go one way: this module takes the paper
style's sizes, palettes, labels and ``_save`` from :mod:`mptcplab.figures`, and
``figures.render`` imports :func:`event_figures` inside the function (a top-level import there
would be circular). Like figures, it reads and writes only through :mod:`mptcplab.results`.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import seaborn as sns  # noqa: E402

from .figures import (CI95, COLUMN_WIDTH_IN, _aggregate, _is_seed, _median_test, _safe, _save,  # noqa: E402
                      _smoothed, _variant_palette, _variants, factors, moves_with, param_label, variant_label)
from .results import FLOW_GOODPUT, PM_EVENTS, RunDir  # noqa: E402

#: An action that takes something away -> the one that gives it back: drawn as a span between them.
EVENT_SPANS = {"down": "up", "address-del": "address-add", "endpoint-del": "endpoint-add"}
#: The summary's columns of the first cut (mptcplab.recovery) that outage-table averages.
OUTAGE_COLUMNS = {"outage_s": "Outage\n(s)", "recovery_s": "Recovery\n(s)", "recovery_remaining_s": "Adapted\n(s)",
                  "delivered_mb": "Delivered\n(MB)"}
#: outage-table's footnotes on its columns (mptcplab.recovery's definitions).
OUTAGE_NOTES = {"outage_s": "Outage: the first stretch without goodput after the cut (0.1 s intervals).",
                "recovery_s": "Recovery: until goodput held 90% of its level before the cut for 0.5 s.",
                "recovery_remaining_s": "Adapted: until it held 90% of what the network offers without the cut path.",
                "delivered_mb": "Delivered: from the cut until the recovery."}
#: What recovery-vs-<param> draws, one panel each (those the summary has).
RECOVERY_LABELS = {"outage_s": "Outage (s)", "recovery_s": "Recovery (s)",
                   "recovery_remaining_s": "Recovery to what\nremains (s)"}
#: Not in RECOVERY_LABELS' order of columns: drawn only when a test has several cuts.
RECOVERY_LABELS_MORE = {"outage_mean_s": "Mean outage,\nevery cut (s)"}
RECEIVED_COLOUR = "0.1"


@dataclass(frozen=True)
class EventMark:
    """An event as drawn: a span from `start` to `stop` (a cut and what undid it, or the end of
    the test), or a line at `start` (`stop` None) for an event that is not a cut."""

    start: float
    stop: float | None
    target: str
    action: str

    @property
    def name(self) -> str:
        return f"{self.target} {self.action}".strip()


@dataclass(frozen=True)
class EventData:
    """What the event figures read, once: the summary (a variant on every row), the tables, the
    tests shown over time ((variant, test), one per variant) and a note naming their sweep point."""

    summary: pd.DataFrame
    events: pd.DataFrame
    series: pd.DataFrame | None
    pm: pd.DataFrame | None
    samples: dict[str, pd.DataFrame | None]
    chosen: list[tuple[str, str]]
    note: str


def _text(v: Any) -> str:
    """A CSV cell as text: '' for a missing one, '5201' for 5201.0 (read_csv makes floats of
    integer columns with gaps)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _flag(v: Any) -> bool:
    return _text(v) in {"1", "True", "true"}


def _test_events(events: pd.DataFrame, test: str) -> pd.DataFrame:
    """The events of `test` by time, with `at` (applied_s; scheduled_s when no applied time was
    recorded) and `target` (the link, else the host interface). Events that failed (error set)
    are left out: they did not happen."""
    ev = events[events["test"].astype(str) == test]
    if "error" in ev:
        ev = ev[ev["error"].isna()]
    at = ev["applied_s"] if "applied_s" in ev else pd.Series(float("nan"), index=ev.index)
    if "scheduled_s" in ev:
        at = at.fillna(ev["scheduled_s"])
    link, intf = (ev[c].map(_text) if c in ev else pd.Series("", index=ev.index) for c in ("link", "interface"))
    ev = ev.assign(at=at, target=link.where(link != "", intf), action=ev["action"].map(_text))
    return ev.dropna(subset=["at"]).sort_values("at", kind="stable")


def event_marks(ev: pd.DataFrame, end: float) -> list[EventMark]:
    """_test_events' rows as drawn: each cut (down, address-del, endpoint-del) a span to the
    first event after it that undoes it on the same target (up, address-add, endpoint-add), or
    to `end`; every other event a line."""
    marks: list[EventMark] = []
    cut: dict[tuple[str, str], float] = {}
    undoes = {v: k for k, v in EVENT_SPANS.items()}
    for r in ev.itertuples():
        target, action, at = str(r.target), str(r.action), float(r.at)
        if action in EVENT_SPANS:
            cut.setdefault((target, action), at)  # a second cut of what is cut already changes nothing
        elif (target, undoes.get(action)) in cut:
            marks.append(EventMark(cut.pop((target, undoes[action])), at, target, undoes[action]))
        else:
            marks.append(EventMark(at, None, target, action))
    marks += [EventMark(start, max(end, start), target, action) for (target, action), start in cut.items()]
    return sorted(marks, key=lambda m: m.start)


def _event_colours(marks: list[EventMark]) -> dict[str, Any]:
    """One colour per event target: grey when there is one (the common case: it stays behind
    the data), else a dark palette."""
    targets = list(dict.fromkeys(m.target for m in marks))
    return dict(zip(targets, ["0.45"] if len(targets) == 1 else sns.color_palette("dark", len(targets))))


def _draw_events(ax: plt.Axes, marks: list[EventMark], colours: dict[str, Any]) -> None:
    for m in marks:
        if m.stop is None:
            ax.axvline(m.start, color=colours[m.target], linestyle="--", linewidth=0.8, zorder=1)
        else:
            ax.axvspan(m.start, m.stop, facecolor=colours[m.target], alpha=0.18, linewidth=0, zorder=0)


def _event_legend(marks: list[EventMark], colours: dict[str, Any]) -> tuple[list[Any], list[str]]:
    """One entry per distinct event ('h1-s1 down': a patch for a span, a dashed line else)."""
    seen: dict[tuple[str, bool], Any] = {}
    for m in marks:
        key = (m.name, m.stop is None)
        if key not in seen:
            seen[key] = (plt.Line2D([], [], color=colours[m.target], linestyle="--", linewidth=0.8) if m.stop is None
                         else plt.Rectangle((0, 0), 1, 1, facecolor=colours[m.target], alpha=0.18, linewidth=0))
    return list(seen.values()), [name for name, _ in seen]


def _event_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with a variant on every row (the protocol where there is none)."""
    proto = summary["protocol"].astype(str)
    return summary.assign(variant=(summary["variant"].fillna(proto) if "variant" in summary else proto).astype(str))


def _param_value(path: str, value: Any) -> str:
    """'flap period = 2 s': a swept parameter's label with its value (the unit after it)."""
    name, unit = re.fullmatch(r"(.*?)(?: \(([^()]*)\))?", param_label(path)).groups()
    return f"{name} = {_text(value)}" + (f" {unit}" if unit else "")


def _event_tests(summary: pd.DataFrame, swept: list[str]) -> tuple[list[tuple[str, str]], str]:
    """(variant, test) for each variant -- its median test by goodput -- and a note naming the
    sweep point they come from: of a sweep, the first point only (the events, a flap period say,
    differ from point to point, and a median across them would pick a condition at random)."""
    note = ""
    if "point" in summary and summary["point"].nunique() > 1:
        moved = factors(summary, swept)
        summary = summary[summary["point"] == summary["point"].iloc[0]]
        row = summary.iloc[0]
        note = ", ".join(_param_value(c, row[c]) for c in moved) or str(row["point"])
    chosen = [(v, t) for v in _variants(summary) if (t := _median_test(summary, v)) is not None]
    return chosen, note


def _received(series: pd.DataFrame | None, test: str) -> pd.DataFrame:
    """The receiver's goodput of `test` over time (t, goodput_mbps), several flows summed on
    their sampling grid; empty when flow-goodput.csv has none."""
    if series is None or not {"test", "t", "goodput_mbps"} <= set(series):
        return pd.DataFrame(columns=["t", "goodput_mbps"])
    g = series[series["test"].astype(str) == test]
    if "flow" in g and g["flow"].nunique() > 1:
        g = _aggregate(g)
    return g[["t", "goodput_mbps"]].dropna().sort_values("t")


def _flow_count(series: pd.DataFrame | None, test: str) -> int:
    if series is None or "test" not in series:
        return 0
    g = series[series["test"].astype(str) == test]
    return int(g["flow"].nunique()) if "flow" in g else int(not g.empty)


def _test_end(data: EventData, test: str) -> float:
    """Where a test's time axis ends: its last goodput sample, else its duration, else its last
    path-manager event (0 when none of them is known)."""
    rec = _received(data.series, test)
    if not rec.empty:
        return float(rec["t"].max())
    row = data.summary[data.summary["test"].astype(str) == test]
    if "duration_s" in row and row["duration_s"].notna().any():
        return float(row["duration_s"].dropna().iloc[0])
    pm = _test_pm(data.pm, test)
    return float(pm["t"].max()) if not pm.empty else 0.0


def _test_pm(pm: pd.DataFrame | None, test: str) -> pd.DataFrame:
    if pm is None or not {"test", "t", "event", "token"} <= set(pm):
        return pd.DataFrame(columns=["test", "t", "event", "token"])
    return pm[pm["test"].astype(str) == test]


def _sampled_subflows(samples: pd.DataFrame | None) -> pd.DataFrame:
    """The MPTCP subflows' rows of a test's ss samples (kind tcp with a token; tokens are text,
    as RunDir reads them)."""
    if samples is None or not {"kind", "token", "local", "remote", "t", "bytes_acked"} <= set(samples):
        return pd.DataFrame()
    return samples[(samples["kind"] == "tcp") & samples["token"].notna() & samples["bytes_acked"].notna()]


def _data_token(samples: pd.DataFrame | None, pm: pd.DataFrame) -> str | None:
    """The test's data connection. iperf3 opens two MPTCP connections, a control one and the
    data one: the data one is that whose subflows carried the most bytes (samples), else the one
    created last (pm-events); None when neither says."""
    created = pm.loc[pm["event"] == "created", "token"] if "created" in set(pm["event"]) else pm["token"]
    order = list(dict.fromkeys(created.dropna()))
    tcp = _sampled_subflows(samples)
    if not tcp.empty:
        carried = tcp.groupby(["token", "local", "remote"])["bytes_acked"].max().groupby(level="token").sum()
        best = str(carried.idxmax())
        if not order or best in order:
            return best
    return order[-1] if order else None


def _endpoint(addr: str) -> tuple[str, str]:
    """'10.0.1.1:48134' -> ('10.0.1.1', '48134'); '[fd00::1]:80' -> ('fd00::1', '80')."""
    host, _, port = str(addr).rpartition(":")
    return host.strip("[]"), port


def _subflow_labels(keys: list[tuple[str, str, str, str]]) -> list[str]:
    """'10.0.1.1 → 10.0.1.2' per subflow (src, sport, dst, dport), with the ports where two
    subflows share an address pair (one re-established after a handover, say)."""
    pairs = [f"{s} → {d}" for s, _, d, _ in keys]
    return [p if pairs.count(p) == 1 else f"{s}:{sp} → {d}:{dp}" for p, (s, sp, d, dp) in zip(pairs, keys)]


def _subflow_rates(tcp: pd.DataFrame, token: str) -> pd.DataFrame:
    """Each subflow of connection `token`: its goodput over time (bytes acked per sampling
    interval, as subflow-goodput-time computes it), named by _subflow_labels."""
    conn = tcp[tcp["token"] == token]
    if conn.empty:
        return pd.DataFrame(columns=["t", "goodput_mbps", "subflow"])
    groups = list(conn.groupby(["local", "remote"], sort=False))
    names = _subflow_labels([(*_endpoint(local), *_endpoint(remote)) for (local, remote), _ in groups])
    parts = []
    for (_, g), name in zip(groups, names):
        g = g.sort_values("t")
        parts.append(pd.DataFrame({"t": g["t"], "subflow": name,
                                   "goodput_mbps": g["bytes_acked"].diff() * 8 / g["t"].diff() / 1e6}))
    ts = pd.concat(parts).dropna()
    return ts[ts["goodput_mbps"] >= 0]


def _subflow_colours(names: list[str]) -> dict[str, Any]:
    """One colour per subflow label, sorted: the same subflow in the same colour in both figures."""
    order = sorted(set(names))
    return dict(zip(order, sns.color_palette("colorblind", len(order))))


def _panel_title(data: EventData, variant: str, test: str) -> str:
    return f"{variant_label(variant, 0)}: {test}" + (f" ({data.note})" if data.note else "")


def events_goodput_time(data: EventData, out: RunDir, formats: list[str]) -> list[Path]:
    """The receiver's goodput over time around the events, one panel per variant (its median
    test), each subflow's goodput (bytes the sender saw acked, ss samples) thinner beneath it;
    each cut shaded until it was undone, other events as dashed lines. Shows what the summary's
    outage and recovery numbers condense: whether the other subflow took over, and how soon.
    Both smoothed over SMOOTH_SAMPLES intervals (0.5 s), as flow-goodput-time: at 0.1 s the
    receiver's series jumps to several times the link rate whenever a hole is filled, and the
    spikes would flatten everything else."""
    panels = [(v, t) for v, t in data.chosen if not _received(data.series, t).empty]
    if not panels:
        return []
    rates = {}
    for _, t in panels:  # subflows of a single flow only: under several flows' sum they would mislead
        tcp = _sampled_subflows(data.samples.get(t)) if _flow_count(data.series, t) == 1 else pd.DataFrame()
        token = _data_token(data.samples.get(t), _test_pm(data.pm, t)) if not tcp.empty else None
        rates[t] = _subflow_rates(tcp, token) if token else pd.DataFrame(columns=["t", "goodput_mbps", "subflow"])
    colours = _subflow_colours([n for r in rates.values() for n in r["subflow"]])
    marks = {t: event_marks(_test_events(data.events, t), _test_end(data, t)) for _, t in panels}
    every = [m for t in marks for m in marks[t]]
    ev_colours = _event_colours(every)
    ncols = 1 if len(panels) <= 3 else 2
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(COLUMN_WIDTH_IN, 0.75 + 1.05 * nrows), sharex=True,
                             sharey=True, squeeze=False, layout="constrained")
    for ax, (variant, test) in zip(axes.flat, panels):
        _draw_events(ax, marks[test], ev_colours)
        for name, g in rates[test].groupby("subflow", sort=False):
            g = _smoothed(g)
            ax.plot(g["t"], g["smooth"], color=colours[name], linewidth=0.7, zorder=2)
        rec = _smoothed(_received(data.series, test))
        ax.plot(rec["t"], rec["smooth"], color=RECEIVED_COLOUR, linewidth=1.0, zorder=3)
        ax.set_title(_panel_title(data, variant, test), fontsize=7, pad=2)
        ax.xaxis.set_major_locator(MaxNLocator(6, steps=[1, 2, 5, 10]))
    _time_axes(fig, axes, len(panels), "Goodput (Mbit/s)")
    handles = [plt.Line2D([], [], color=RECEIVED_COLOUR, linewidth=1.0)]
    labels = ["received (all flows)" if any(_flow_count(data.series, t) > 1 for _, t in panels)
              else "received (all subflows)"]
    handles += [plt.Line2D([], [], color=c, linewidth=0.7) for c in colours.values()]
    labels += [f"subflow {n}" for n in colours]
    eh, el = _event_legend(every, ev_colours)
    fig.legend(handles + eh, labels + el, loc="outside upper center", ncol=2, frameon=False, fontsize=6)
    return _save(fig, out, "events-goodput-time", formats)


def _time_axes(fig: plt.Figure, axes: Any, used: int, ylabel: str) -> None:
    """Panels over time: y from 0, x labelled under each column's lowest panel, spare ones hidden."""
    axes.flat[0].set_ylim(bottom=0)
    axes.flat[0].set_xlim(left=0)
    ncols = axes.shape[1]
    for k, ax in enumerate(axes.flat):
        if k >= used:
            ax.set_visible(False)
        elif k + ncols >= used:
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel("Time (s)")
    fig.supylabel(ylabel, fontsize=8)


def subflow_lifetimes_of(pm: pd.DataFrame, token: str, end: float) -> pd.DataFrame:
    """The subflows of MPTCP connection `token` as the client's path manager reported them (one
    test's pm-events rows): one row per subflow established -- the initial one at `established`,
    the others at `sf_established` -- with `start`, `stop` (its sf_closed, else the connection's
    closed, else `end`), `closed` (seen to close), `backup` ([(t, flag)]: its backup flag when
    established and at each sf_prio) and `subflow` (a _subflow_labels label)."""
    rows: list[dict[str, Any]] = []
    live: dict[tuple[str, ...], int] = {}
    conn = pm[pm["token"] == token].sort_values("t", kind="stable")
    for r in conn.to_dict("records"):
        t, event = float(r["t"]), str(r["event"])
        key = tuple(_text(r.get(f"{k}4")) or _text(r.get(f"{k}6")) if k.endswith("addr") else _text(r.get(k))
                    for k in ("saddr", "sport", "daddr", "dport"))
        if event in ("established", "sf_established"):
            live[key] = len(rows)
            rows.append({"key": key, "start": t, "stop": max(end, t), "closed": False,
                         "backup": [(t, _flag(r.get("backup")))]})
        elif event == "sf_prio" and key in live:
            rows[live[key]]["backup"].append((t, _flag(r.get("backup"))))
        elif event == "sf_closed" and key in live:
            rows[live.pop(key)].update(stop=t, closed=True)
        elif event == "closed":
            for i in live.values():
                rows[i].update(stop=t, closed=True)
            live.clear()
    life = pd.DataFrame(rows, columns=["key", "start", "stop", "closed", "backup"])
    return life.assign(subflow=_subflow_labels(list(life["key"])))


def _lifetime_panels(data: EventData) -> list[tuple[str, str, str, pd.DataFrame, float]]:
    """(variant, test, token, lifetimes, end) of each MPTCP test shown over time."""
    panels = []
    protocols = dict(zip(data.summary["test"].astype(str), data.summary["protocol"].astype(str)))
    for variant, test in data.chosen:
        pm = _test_pm(data.pm, test)
        if protocols.get(test) != "mptcp" or pm.empty:
            continue
        token = _data_token(data.samples.get(test), pm)
        end = _test_end(data, test)
        life = subflow_lifetimes_of(pm, token, end) if token else pd.DataFrame()
        if not life.empty:
            panels.append((variant, test, token, life, end))
    return panels


def _draw_lifetime(ax: plt.Axes, y: int, row: Any, colour: Any) -> tuple[bool, bool]:
    """One subflow's bar: solid while active, hatched while backup, a diamond at each change of
    priority (MP_PRIO, pm-events sf_prio), a bar end where it was seen to close. Returns
    (drew a backup stretch, drew a priority change)."""
    flags = row.backup + [(row.stop, None)]
    backup = False
    for (t0, flag), (t1, _) in zip(flags, flags[1:]):
        backup |= flag
        ax.barh(y, max(t1 - t0, 0), left=t0, height=0.55, gid=f"subflow-{y}", linewidth=0.6, edgecolor=colour,
                facecolor="white" if flag else colour, hatch="/////" if flag else None, zorder=2)
    for t, _ in row.backup[1:]:
        ax.plot(t, y, marker="D", color="0.1", markersize=3.5, zorder=4, linestyle="none")
    if row.closed:
        ax.plot(row.stop, y, marker="|", color="0.1", markersize=8, markeredgewidth=1.2, zorder=4)
    return backup, len(row.backup) > 1


def subflow_lifetimes(data: EventData, out: RunDir, formats: list[str]) -> list[Path]:
    """When each subflow of the data connection lived, per MPTCP test shown over time: a bar
    from its establishment to its close (or the end of the test), hatched while it was a backup,
    the events behind. Shows whether the path manager closed a subflow on a cut, opened a new one
    after it, or let the old one wait -- what goodput alone cannot tell."""
    panels = _lifetime_panels(data)
    if not panels:
        return []
    colours = _subflow_colours([n for p in panels for n in p[3]["subflow"]])
    sizes = [len(p[3]) + 0.6 for p in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(COLUMN_WIDTH_IN, 0.75 + 0.3 * sum(sizes)), sharex=True,
                             squeeze=False, layout="constrained", gridspec_kw={"height_ratios": sizes})
    marks = {p[1]: event_marks(_test_events(data.events, p[1]), p[4]) for p in panels}
    every = [m for t in marks for m in marks[t]]
    ev_colours = _event_colours(every)
    backup = priority = closed = False
    for ax, (variant, test, token, life, end) in zip(axes[:, 0], panels):
        _draw_events(ax, marks[test], ev_colours)
        for y, row in enumerate(life.itertuples()):
            b, p = _draw_lifetime(ax, y, row, colours[row.subflow])
            backup, priority, closed = backup or b, priority or p, closed or bool(row.closed)
        ax.set_yticks(range(len(life)), list(life["subflow"]), fontsize=6)
        ax.set_ylim(len(life) - 0.4, -0.6)
        ax.grid(axis="y", visible=False)
        ax.set_title(_panel_title(data, variant, test) + f", token {token}", fontsize=7, pad=2)
    axes[0, 0].set_xlim(left=0)
    axes[-1, 0].set_xlabel("Time (s)")
    handles, labels = _lifetime_legend(backup, priority, closed)
    eh, el = _event_legend(every, ev_colours)
    fig.legend(handles + eh, labels + el, loc="outside upper center", ncol=3, frameon=False, fontsize=6)
    return _save(fig, out, "subflow-lifetimes", formats)


def _lifetime_legend(backup: bool, priority: bool, closed: bool) -> tuple[list[Any], list[str]]:
    line = plt.Line2D
    handles: list[Any] = [plt.Rectangle((0, 0), 1, 1, facecolor="0.55", edgecolor="0.55")]
    labels = ["active"]
    if backup:
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="0.55", hatch="/////"))
        labels.append("backup")
    if priority:
        handles.append(line([], [], marker="D", color="0.1", markersize=3.5, linestyle="none"))
        labels.append("priority change")
    if closed:
        handles.append(line([], [], marker="|", color="0.1", markersize=8, markeredgewidth=1.2, linestyle="none"))
        labels.append("closed")
    return handles, labels


def recovery_vs(summary: pd.DataFrame, x: str, out: RunDir, formats: list[str], swept: list[str]) -> list[Path]:
    """Outage and recovery time after the first cut (and, when tests have several cuts, the mean
    outage over all of them) against one swept parameter (a flap period, a rate), one line per
    variant, 95% CI over repetitions: how the interruption each
    protocol suffers moves with the condition. A test that never recovered has no recovery time;
    the panel says how many."""
    cols = [c for c in RECOVERY_LABELS if c in summary and summary[c].notna().any()]
    if "cuts" in summary and summary["cuts"].max() > 1 and "outage_mean_s" in summary:
        cols.insert(1, "outage_mean_s")  # a series of cuts (flaps): every cut's outage, not only the first's
    ok = summary[summary["outage_s"].notna()] if "outage_s" in summary else pd.DataFrame()
    if not cols or ok.empty or x not in ok or ok[x].nunique() < 2:
        return []
    order = _variants(ok)
    fig, axes = plt.subplots(len(cols), 1, figsize=(COLUMN_WIDTH_IN, 0.6 + 1.15 * len(cols)), sharex=True,
                             squeeze=False, layout="constrained")
    for k, (ax, col) in enumerate(zip(axes[:, 0], cols)):
        sns.lineplot(data=ok, x=x, y=col, hue="variant", hue_order=order, palette=_variant_palette(order),
                     style="variant", style_order=order, markers=True, dashes=False, errorbar=CI95,
                     err_style="bars", err_kws={"capsize": 2, "linewidth": 0.8}, linewidth=1.0, markersize=4,
                     ax=ax, legend=k == 0)
        ax.set_ylabel({**RECOVERY_LABELS, **RECOVERY_LABELS_MORE}[col])
        ax.set_ylim(bottom=0)
        missing = int(ok[col].isna().sum())
        if missing:  # above the panel: inside, it would cover a line
            ax.set_title(f"{missing} of {len(ok)} tests never recovered", loc="right", fontsize=6, pad=2)
    axes[-1, 0].set_xlabel(param_label(x, moves_with(summary, swept, x), summary))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    axes[0, 0].get_legend().remove()
    fig.legend(handles, [variant_label(v, 0) for v in labels], loc="outside upper center", ncol=min(len(labels), 4),
               frameon=False, fontsize=6)
    return _save(fig, out, f"recovery-vs-{_safe(x)}", formats)


def outage_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """Per variant, over its tests in which the first cut was measured (outage_s set; failed
    tests too -- a cut that killed the connection is the point): `tests`, the mean of each
    OUTAGE_COLUMNS column the summary has and, as `<column>_n`, how many tests had a value
    (recovery is empty where goodput never came back), `survived` (the fraction that did) and
    `fates` (fate -> tests). Empty without outage_s."""
    if "outage_s" not in summary:
        return pd.DataFrame()
    ok = summary[summary["outage_s"].notna()]
    rows = []
    for variant, g in ok.groupby("variant", sort=False):
        row: dict[str, Any] = {"variant": variant, "tests": len(g)}
        for col in [c for c in OUTAGE_COLUMNS if c in g]:
            row[col], row[f"{col}_n"] = g[col].mean(), int(g[col].notna().sum())
        if "fate" in g and g["fate"].notna().any():
            row["fates"] = g["fate"].dropna().astype(str).value_counts(sort=False).to_dict()
        if "survived" in g and g["survived"].notna().any():
            row["survived"] = g["survived"].dropna().map(_flag).mean()
        elif "fates" in row:
            row["survived"] = row["fates"].get("survived", 0) / sum(row["fates"].values())
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant") if rows else pd.DataFrame()


def _outage_cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]], bool]:
    """outage-table's column heads and cells: means to 2 decimals ('*': not every test had a
    value; '–': none had), survival as 'k/n' with the other fates counted. Also whether a '*'
    was written."""
    cols = [c for c in OUTAGE_COLUMNS if c in table]
    heads = ["Tests", *(OUTAGE_COLUMNS[c] for c in cols)] + (["Survived"] if "survived" in table else [])
    cells, starred = [], False
    for _, r in table.iterrows():
        n = int(r["tests"])
        row = [str(n)]
        for c in cols:
            have = int(r[f"{c}_n"])
            row.append("–" if have == 0 else f"{r[c]:.2f}" + ("*" if have < n else ""))
            starred |= 0 < have < n
        if "survived" in table:
            fates = r.get("fates") if isinstance(r.get("fates"), dict) else {}
            others = ", ".join(f"{k} {f}" for f, k in fates.items() if f != "survived")
            row.append(f"{round(r['survived'] * n)}/{n}" + (f"\n{others}" if others else ""))
        cells.append(row)
    return heads, cells, starred


def _first_cut_title(summary: pd.DataFrame, events: pd.DataFrame) -> str:
    """'after h1-s1 down at 5.0 s': the first cut as the summary records it (event_link,
    event_s), its action from events.csv."""
    if "event_link" not in summary or summary["event_link"].dropna().empty:
        return "after the first cut"
    target = str(summary["event_link"].dropna().mode().iloc[0])
    ev = events.assign(target=events["link"].map(_text) if "link" in events else "")
    if "interface" in events:
        ev["target"] = ev["target"].where(ev["target"] != "", events["interface"].map(_text))
    acts = ev.loc[(ev["target"] == target) & ev["action"].isin(EVENT_SPANS.keys() | {"backup"}), "action"]
    when = summary["event_s"].dropna() if "event_s" in summary else pd.Series(dtype=float)
    at = f" at {when.mean():.1f} s" if len(when) and when.max() - when.min() < 0.05 else ""
    return f"after {target} {acts.iloc[0] if len(acts) else 'cut'}{at}"


def outage_table(summary: pd.DataFrame, events: pd.DataFrame, out: RunDir, formats: list[str],
                 sweep: bool = False) -> list[Path]:
    """The first cut's aftermath per variant as a table: mean outage, recovery (to the level
    before; to what the rest of the network offers where recorded), data delivered meanwhile,
    and how many tests survived -- the numbers a paper quotes, averaged over repetitions (and,
    in a sweep, over every point: recovery-vs-<param> separates them)."""
    table = outage_summary(summary)
    if table.empty:
        return []
    heads, cells, starred = _outage_cells(table)
    rows = [[variant_label(v, 0), *row] for v, row in zip(table.index, cells)]
    lines = [2] + [max(c.count("\n") + 1 for c in row) for row in rows]  # text lines per row, the heads' first
    notes = [n for c, n in OUTAGE_NOTES.items() if c in table]
    notes += ["* Mean over the tests that recovered; the others never did."] if starred else []
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 0.3 + 0.15 * sum(lines) + 0.12 * len(notes)))
    ax.axis("off")
    chars = [max(len(line) for text in col for line in text.split("\n")) + 2 for col in zip(["", *heads], *rows)]
    widths = [c / sum(chars) for c in chars]  # as wide as the longest line in each column
    fig.subplots_adjust(left=0.01, right=0.99)  # the whole column: the heads need it
    tab = ax.table(cellText=rows, colLabels=["", *heads], colWidths=widths, cellLoc="center", bbox=[0, 0, 1, 1],
                   edges="open")
    tab.auto_set_font_size(False)
    tab.set_fontsize(6.5)
    for (r, c), cell in tab.get_celld().items():
        cell.set_height(lines[r])  # relative: the bbox scales the rows to fit
        if c == 0:
            cell.set_text_props(ha="left")
            cell.PAD = 0.02
        if r == 0:
            cell.visible_edges = "B"
            cell.set_linewidth(0.6)
    title = _first_cut_title(summary, events).capitalize() + (", mean over each variant's tests"
                                                             + (" at every point" if sweep else ""))
    ax.set_title(title, fontsize=7, pad=3)
    ax.text(0, -0.04, "\n".join(notes), transform=ax.transAxes, fontsize=6, va="top", linespacing=1.3)
    return _save(fig, out, "outage-table", formats)


def event_figures(rd: RunDir, summary: pd.DataFrame, events: pd.DataFrame, formats: list[str]) -> list[Path]:
    """Every figure of a run whose tests had events: goodput around them, subflow lifetimes,
    recovery against each swept parameter, and the outage table."""
    summary = _event_summary(summary)
    every = [c for c in rd.meta.swept if c in summary]
    chosen, note = _event_tests(summary, every)
    data = EventData(summary, events, rd.read_table(FLOW_GOODPUT), rd.read_table(PM_EVENTS),
                     {t: rd.read_samples(t) for _, t in chosen}, chosen, note)
    paths = events_goodput_time(data, rd, formats)
    paths += subflow_lifetimes(data, rd, formats)
    for x in [c for c in factors(summary, every) if not _is_seed(c)]:
        paths += recovery_vs(summary, x, rd, formats, every)
    paths += outage_table(summary, events, rd, formats, sweep="point" in summary and summary["point"].nunique() > 1)
    return paths

"""Figures: seaborn from results/ alone, sized and styled for a two-column paper.

Style: serif text at 8 pt, one column wide (3.4 in), colour-blind palette, TrueType fonts in
PDFs (publishers reject Type 3). Error bars are 95% confidence intervals over repetitions.

Every file is read and written through :mod:`mptcplab.results` (a :class:`RunDir`): figures are
drawn in memory and handed to ``RunDir.write_figure``, which creates them without following links
and owned like the rest of the run -- so ``mptcplab plot`` works as the run directory's owner.
"""

from __future__ import annotations

import io
import math
import numbers
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter  # noqa: E402
import seaborn as sns  # noqa: E402

from .results import EVENTS, FLOW_GOODPUT, FLOWS, PM_EVENTS, RTT, RunDir  # noqa: E402

COLUMN_WIDTH_IN = 3.4
PROTOCOL_LABELS = {"mptcp": "MPTCP", "tcp": "TCP"}
PROTOCOL_ORDER = ["mptcp", "tcp"]


def label(name: str) -> str:
    """Axis label of a protocol or variant: 'mptcp-independent' -> 'MPTCP\nindependent'."""
    if name in PROTOCOL_LABELS:
        return PROTOCOL_LABELS[name]
    head, sep, tail = name.partition("-")
    return f"{PROTOCOL_LABELS.get(head, head)}\n{tail}" if sep else name


def paper_style() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font="serif",
                  rc={
                      "font.size": 8, "axes.labelsize": 8, "axes.titlesize": 8,
                      "xtick.labelsize": 7, "ytick.labelsize": 7, "legend.fontsize": 7,
                      "pdf.fonttype": 42, "ps.fonttype": 42, "savefig.bbox": "tight",
                      "savefig.pad_inches": 0.02, "figure.dpi": 150, "savefig.dpi": 300,
                      "axes.linewidth": 0.6, "grid.linewidth": 0.4,
                  })


def _save(fig: plt.Figure, out: RunDir, stem: str, formats: list[str]) -> list[Path]:
    """Draw `fig` in each format in memory and write it to the run's figures/ through the RunDir."""
    paths = []
    try:
        for fmt in formats:
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt)
            paths.append(out.write_figure(f"{stem}.{fmt}", buf.getvalue()))
    finally:
        plt.close(fig)
    return paths


def goodput_by_variant(df: pd.DataFrame, out: RunDir, formats: list[str],
                       link_rate: float | None = None, maxflow: float | None = None) -> list[Path]:
    """Goodput per variant (MPTCP vs TCP when there are no variants): mean with 95% CI, every
    repetition as a dot; dashed lines for one path's rate and for the max-flow."""
    ok = df[df["error"].isna()] if "error" in df else df
    col = "variant" if "variant" in ok and ok["variant"].notna().all() else "protocol"
    seen = list(dict.fromkeys(ok[col]))
    order = [p for p in PROTOCOL_ORDER if p in seen] + [v for v in seen if v not in PROTOCOL_ORDER]
    labels = [label(p) for p in order]
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.1))
    sns.barplot(data=ok, x=col, y="goodput_mbps", order=order, hue=col, hue_order=order,
                errorbar=("ci", 95), capsize=0.15, err_kws={"linewidth": 0.8}, width=0.55, ax=ax,
                legend=False)
    sns.stripplot(data=ok, x=col, y="goodput_mbps", order=order, color="0.15", size=2.5, jitter=0.12, ax=ax)
    ax.set_xticks(range(len(order)), labels)
    ax.set_xlabel("")
    ax.set_ylabel("Goodput (Mbit/s)")
    for value, text in ((link_rate, "one path"), (maxflow, "max-flow")):
        if value:
            ax.axhline(value, color="0.4", linestyle="--", linewidth=0.7)
            ax.annotate(text, (len(order) - 0.5, value), ha="right", va="bottom", fontsize=6, color="0.3")
    n = ok.groupby(col).size()
    reps = int(n.min()) if len(n) else 0
    ax.set_title(f"{df['experiment'].iloc[0]} ({reps} repetitions, 95% CI)", fontsize=7)
    ax.set_ylim(bottom=0, top=max(ok["goodput_mbps"].max(), maxflow or 0, link_rate or 0) * 1.12)
    return _save(fig, out, "goodput", formats)


UNITS = {"bw": "Mbit/s", "delay": "ms", "jitter": "ms", "loss": "%", "queue": "packets",
         "queue_bytes": "bytes", "duration": "s"}


def _link_field(path: str) -> tuple[str, str] | None:
    """'links.h1-s2.loss' -> ('loss', 'h1-s2'); None for a path outside links."""
    parts = path.replace("[", ".[").split(".")
    if parts[0] != "links":
        return None
    where = " ".join(f"link {p[1:-1]}" if p.startswith("[") else ("all links" if p == "*" else p)
                     for p in parts[1:-1] if p)
    return parts[-1], where


#: Swept fields of an events: block, named for an axis ((kind, field) -> name; seconds unless in
#: EVENT_COUNTS): the spec's paths ('events.flaps[0].period') mean little to a reader.
EVENT_FIELDS = {("flaps", "period"): "flap period", ("flaps", "down_for"): "flap down time",
                ("flaps", "start"): "first flap", ("flaps", "count"): "flaps", ("random", "mean_up"): "mean up time",
                ("random", "mean_down"): "mean down time", ("random", "until"): "failures until",
                ("random", "start"): "failures from", ("random", "seed"): "failure seed", ("at", "at"): "time"}
EVENT_COUNTS = {"count", "seed"}


def _event_label(path: str) -> str | None:
    """'events.flaps[0].period' -> 'flap period (s)', 'events.flaps[1].period' -> 'flap period,
    flaps[1] (s)', 'events.at[1].at' -> 'at[1] time (s)', 'events.at[2].params.bw' -> 'bw set by
    at[2] (Mbit/s)'; None for a path outside events."""
    m = re.fullmatch(r"events\.(at|flaps|random)\[(\d+)\]\.(.+)", path)
    if not m:
        return None
    kind, index, field = m.group(1), int(m.group(2)), m.group(3)
    entry = f"{kind}[{index}]"
    name = EVENT_FIELDS.get((kind, field))
    if name is None:  # a parameter the event sets
        field = field.split(".")[-1]
        unit = UNITS.get(field)
        text = f"{field} set by {entry}"
    else:
        unit = None if field in EVENT_COUNTS else "s"
        text = f"{entry} {name}" if kind == "at" else (name if index == 0 else f"{name}, {entry}")
    return f"{text} ({unit})" if unit else text


def param_label(path: str, moves_with: list[str] | None = None, df: pd.DataFrame | None = None) -> str:
    """'links.h1-s2.loss' -> 'loss h1-s2 (%)'; 'events.flaps[0].period' -> 'flap period (s)';
    other field paths keep their name. Parameters zipped with it (``moves_with``) are named too:
    'bw h1-s2, s2-h2 (Mbit/s)' when they are the same field with the same values, else '...;
    with <their labels>'."""
    event = _event_label(path)
    if event:
        others = [param_label(c) for c in moves_with or []]
        return event + ("; with " + ", ".join(others) if others else "")
    link = _link_field(path)
    field = link[0] if link else path.split(".")[-1]
    unit = UNITS.get(field)
    wheres = [link[1]] if link else []
    others = []
    for c in moves_with or []:
        lc = _link_field(c)
        same = df is not None and c in df and path in df and df[c].equals(df[path])
        if link and lc and lc[0] == field and same:
            wheres.append(lc[1])
        else:
            others.append(param_label(c))
    text = f"{field} {', '.join(w for w in wheres if w)}".strip() if link else path
    text = f"{text} ({unit})" if unit else text
    return text + ("; with " + ", ".join(others) if others else "")


def moves_with(df: pd.DataFrame, swept: list[str], x: str) -> list[str]:
    """The swept columns that change together with x (its zip group), x excluded."""
    return [c for c in swept if c != x and c in df and x in df and df[c].nunique() > 1
            and df.groupby(x)[c].nunique().max() == 1 and df.groupby(c)[x].nunique().max() == 1]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")


def factors(df: pd.DataFrame, swept: list[str]) -> list[str]:
    """The independent swept parameters: of columns that move together (a zip group) keep the first."""
    out: list[str] = []
    for col in swept:
        if col not in df or df[col].nunique() < 2:
            continue
        if any(df.groupby(f)[col].nunique().max() == 1 and df.groupby(col)[f].nunique().max() == 1 for f in out):
            continue
        out.append(col)
    return out


def _hue(ok: pd.DataFrame) -> str:
    return "variant" if "variant" in ok and ok["variant"].nunique() > 1 else "protocol"


def goodput_vs(df: pd.DataFrame, x: str, out: RunDir, formats: list[str],
               swept: list[str] | None = None) -> list[Path]:
    """Goodput against one swept parameter, one line per protocol/variant, 95% CIs."""
    ok = df[df["error"].isna()]
    hue = _hue(ok)
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.2))
    sns.lineplot(data=ok, x=x, y="goodput_mbps", hue=hue, style=hue, markers=True, dashes=False,
                 errorbar=("ci", 95), err_style="bars", err_kws={"capsize": 2, "linewidth": 0.8},
                 linewidth=1.0, markersize=4, ax=ax)
    ax.set_xlabel(param_label(x, moves_with(df, swept or [], x), df))
    ax.set_ylabel("Goodput (Mbit/s)")
    ax.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, [label(l).replace("\n", " ") for l in labels], title=None, frameon=False)
    return _save(fig, out, f"goodput-vs-{_safe(x)}", formats)


def gain_heatmap(df: pd.DataFrame, x: str, y: str, out: RunDir, formats: list[str],
                 others: list[str] | None = None, swept: list[str] | None = None) -> list[Path]:
    """MPTCP's gain (mean MPTCP goodput / mean TCP goodput) over two swept parameters (averaged
    over any others, which the title names)."""
    ok = df[df["error"].isna()]
    means = ok.groupby([y, x, "protocol"])["goodput_mbps"].mean().unstack("protocol")
    gain = (means["mptcp"] / means["tcp"]).unstack(x)
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.4))
    sns.heatmap(gain, annot=True, fmt=".2f", cmap="viridis", cbar_kws={"label": "MPTCP / TCP goodput"},
                annot_kws={"fontsize": 6}, ax=ax)
    ax.invert_yaxis()
    ax.set_xlabel(param_label(x, moves_with(df, swept or [], x), df))
    ax.set_ylabel(param_label(y, moves_with(df, swept or [], y), df))
    if others:
        ax.set_title("mean over " + ", ".join(param_label(o) for o in others), fontsize=6)
    return _save(fig, out, "mptcp-gain-heatmap", formats)


def _name_subflows(sub: pd.DataFrame, by: list[str] | None = None, ranked: bool = False) -> pd.DataFrame:
    """A `subflow` column: the address pair when each subflow has its own, else 'subflow k' with
    the initial subflow first and the others by the server port they joined. Numbered within
    each group of `by` (the test; test and flow in a multi-flow run, where one test holds several
    connections); `ranked` numbers them even when the address pairs differ (they differ from one
    flow to the next, and could not be averaged)."""
    parts = []
    for _, g in sub.groupby(by or ["test"], sort=False):
        g = g.copy()
        pairs = g["local"].str.rsplit(":", n=1).str[0] + " → " + g["remote"].str.rsplit(":", n=1).str[0]
        if pairs.is_unique and not ranked:
            g["subflow"] = pairs
        else:
            g["_initial"] = g["local"] != g["connection"]
            g["_port"] = g["remote"].str.rsplit(":", n=1).str[1].astype(int)
            g = g.sort_values(["_initial", "_port"])
            g["subflow"] = [f"subflow {k + 1}" for k in range(len(g))]
        parts.append(g)
    return pd.concat(parts)


def _test_groups(summary: pd.DataFrame | None) -> dict[str, tuple[str, int]]:
    """test -> (variant or protocol, repetition), from the summary, for grouped x labels."""
    if summary is None or "test" not in summary or "repetition" not in summary:
        return {}
    key = "variant" if "variant" in summary and summary["variant"].notna().any() else "protocol"
    return {str(r["test"]): (str(r[key]), int(r["repetition"]))
            for _, r in summary.iterrows() if pd.notna(r.get(key)) and pd.notna(r["repetition"])}


def subflow_share(sub: pd.DataFrame, out: RunDir, formats: list[str], by: str,
                  summary: pd.DataFrame | None = None) -> list[Path]:
    """Share of each MPTCP connection's bytes carried by each subflow, one bar per test (or
    sweep point). Tests are grouped by variant with the repetitions as ticks, rather than their
    long names rotated; the legend sits above the axes, off the bars."""
    sub = _name_subflows(sub)
    table = sub.groupby([by, "subflow"], sort=False)["share"].mean().unstack("subflow").fillna(0)
    groups = _test_groups(summary) if by == "test" else {}
    grouped = bool(groups) and all(str(x) in groups for x in table.index)
    if grouped:
        order = {g: i for i, g in enumerate(dict.fromkeys(groups[str(x)][0] for x in table.index))}
        table = table.loc[sorted(table.index, key=lambda x: (order[groups[str(x)][0]], groups[str(x)][1]))]
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.2))
    table.plot(kind="bar", stacked=True, ax=ax, width=0.7, color=sns.color_palette("colorblind"),
               edgecolor="none", legend=True)
    ax.set_ylabel("Share of bytes")
    ax.set_ylim(0, 1)
    names = [str(c) for c in table.columns]
    ncol = len(names) if max(map(len, names)) <= 10 else min(2, len(names))
    ax.legend(title=None, frameon=False, fontsize=6, ncol=ncol, loc="lower left",
              bbox_to_anchor=(0, 1.02), borderaxespad=0)
    if grouped:
        keys = [groups[str(x)] for x in table.index]
        ax.set_xticks(range(len(keys)), [f"r{rep}" for _, rep in keys], rotation=0)
        ax.set_xlabel("")
        for g in order:
            at = [i for i, (name, _) in enumerate(keys) if name == g]
            ax.text(sum(at) / len(at), -0.16, label(g).replace("\n", " "), ha="center", va="top",
                    fontsize=7, transform=ax.get_xaxis_transform())
        for i in range(1, len(keys)):  # a rule between groups
            if keys[i][0] != keys[i - 1][0]:
                ax.axvline(i - 0.5, color="0.6", linewidth=0.5)
    else:
        ax.set_xlabel(by)
        short = all(len(str(x)) <= 6 for x in table.index)
        ax.tick_params(axis="x", rotation=0 if short else 45)
    return _save(fig, out, "subflow-share", formats)


def subflow_goodput_time(samples: pd.DataFrame, title: str, out: RunDir, formats: list[str],
                         local: set[str] | None = None) -> list[Path]:
    """Per-subflow goodput over time (bytes acked per sampling interval) of one MPTCP test,
    with a tick under the curve wherever the subflow retransmitted. Why the ticks: during loss
    recovery the cumulative ACK stands still until the hole is filled and then jumps over the
    SACKed data, so each recovery shows as a dip followed by a spike above the link rate; the
    ticks tell that apart from a stalled link."""
    tcp = samples[(samples["kind"] == "tcp") & samples["token"].notna() & samples["bytes_acked"].notna()].copy()
    if local:  # the connection one of whose subflows has one of these local addresses (one flow's)
        tcp = tcp[tcp["token"].isin(tcp.loc[tcp["local"].isin(local), "token"])]
    if tcp.empty:
        return []
    token = tcp.groupby("token")["bytes_acked"].max().idxmax()  # the data connection
    tcp = tcp[tcp["token"] == token].sort_values("t")
    tcp["subflow"] = tcp["local"].str.rsplit(":", n=1).str[0] + " → " + tcp["remote"]
    rows, events = [], []
    for name, g in tcp.groupby("subflow"):
        dt, db = g["t"].diff(), g["bytes_acked"].diff()
        rows.append(pd.DataFrame({"t": g["t"], "goodput_mbps": db * 8 / dt / 1e6, "subflow": name}))
        if "retrans_total" in g:
            grew = g["retrans_total"].ffill().fillna(0).diff() > 0
            events.append(pd.DataFrame({"t": g.loc[grew, "t"], "subflow": name}))
    ts = pd.concat(rows).dropna()
    ts = ts[ts["goodput_mbps"] >= 0]
    order = sorted(ts["subflow"].unique())
    palette = dict(zip(order, sns.color_palette("colorblind", len(order))))
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.0))
    sns.lineplot(data=ts, x="t", y="goodput_mbps", hue="subflow", hue_order=order, palette=palette,
                 linewidth=0.8, ax=ax)
    ev = pd.concat(events) if events else pd.DataFrame(columns=["t", "subflow"])
    if not ev.empty:
        sns.rugplot(data=ev, x="t", hue="subflow", hue_order=order, palette=palette, height=0.04,
                    linewidth=0.8, ax=ax, legend=False)
    ax.set_xlabel("Time (s)")
    ax.set_ylabel("Goodput (Mbit/s)")
    ax.set_title(title, fontsize=7)
    handles, labels = ax.get_legend_handles_labels()
    if not ev.empty:
        handles.append(plt.Line2D([], [], color="0.3", marker="|", linestyle="none", markersize=5))
        labels.append("retransmission")
    # below the axes: inside, it covers the curves wherever it goes
    ax.legend(handles, labels, title=None, frameon=False, fontsize=6, ncol=2, loc="upper center",
              bbox_to_anchor=(0.5, -0.28), borderaxespad=0)
    ax.set_ylim(bottom=0)
    return _save(fig, out, "subflow-goodput-time", formats)


def goodput_cdf(df: pd.DataFrame, out: RunDir, formats: list[str]) -> list[Path]:
    """Distribution of goodput across repetitions (and points), per protocol/variant."""
    ok = df[df["error"].isna()]
    hue = _hue(ok)
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.0))
    sns.ecdfplot(data=ok, x="goodput_mbps", hue=hue, ax=ax, linewidth=1.0)
    ax.set_xlabel("Goodput (Mbit/s)")
    ax.set_ylabel("CDF")
    return _save(fig, out, "goodput-cdf", formats)


def custom(df: pd.DataFrame, fig_spec: dict[str, Any], index: int, out: RunDir, formats: list[str]) -> list[Path]:
    """A plot the spec's `figures:` block asks for: x, y, hue, col, kind (line, bar, box, point)."""
    ok = df[df["error"].isna()]
    kind = fig_spec.get("kind", "line")
    kw = dict(data=ok, x=fig_spec["x"], y=fig_spec.get("y", "goodput_mbps"), hue=fig_spec.get("hue"),
              col=fig_spec.get("col"), height=2.0, aspect=COLUMN_WIDTH_IN / 2.0)
    if kind == "line":
        g = sns.relplot(kind="line", errorbar=("ci", 95), marker="o", **kw)
    else:
        g = sns.catplot(kind=kind, **kw)
    name = fig_spec.get("name") or f"custom-{index + 1}"
    return _save(g.figure, out, _safe(name), formats)


# --------------------------------------------------------------------------- multi-flow runs
#
# A multi-flow test's summary row is an aggregate over flows whose protocols may differ
# ("mixed"), so the single-flow figures (goodput by protocol, its CDF) mislead there. These
# figures read flows.csv, flow-goodput.csv and rtt.csv instead; each returns [] when the columns
# it needs are absent or empty.

#: More flows than this in one test: flow-goodput-time draws no per-flow legend but the aggregate.
MAX_LEGEND_FLOWS = 8
#: flow-goodput-time's rolling mean, in samples (5 x 0.1 s): iperf3's 0.1 s intervals are noisy.
SMOOTH_SAMPLES = 5
CI95 = ("ci", 95)
PROTOCOL_STYLES = {"mptcp": "-", "tcp": "--"}
PROTOCOL_MARKERS = {"mptcp": "o", "tcp": "s"}


def variant_label(name: str, width: int = 12) -> str:
    """A multi-flow variant's label: 'mptcp-vs-tcp' -> 'MPTCP vs TCP', 'mptcp-2' -> 'MPTCP-2',
    wrapped at `width` characters (0: one line). Their names hold several protocols, which
    label()'s head/tail split would leave half in lower case."""
    words: list[str] = []
    for tok in str(name).split("-"):
        tok = PROTOCOL_LABELS.get(tok.lower(), tok)
        if words and tok.isdigit():
            words[-1] += f"-{tok}"
        else:
            words.append(tok)
    text = " ".join(words)
    return textwrap.fill(text, width) if width else text


def _variants(*frames: pd.DataFrame | None) -> list[str]:
    """Variants in the order they first appear (the spec's order): every figure lists them so."""
    seen: list[str] = []
    for f in frames:
        if f is not None and "variant" in f:
            seen += [str(v) for v in f["variant"].dropna()]
    return list(dict.fromkeys(seen))


def _variant_palette(order: list[str]) -> dict[str, Any]:
    """One colour per variant, the same in every multi-flow figure."""
    return dict(zip(order, sns.color_palette("colorblind", len(order))))


def _usable(df: pd.DataFrame | None, col: str) -> pd.DataFrame:
    """Rows without an error that have `col` (empty when the table or the column is missing)."""
    if df is None or col not in df or "variant" not in df:
        return pd.DataFrame()
    ok = df[df[col].notna()]
    if "error" in ok:
        ok = ok[ok["error"].isna()]
    return ok.assign(variant=ok["variant"].astype(str))


def _ci_title(ok: pd.DataFrame) -> str:
    """'<experiment> (n tests per variant, 95% CI)': what the error bars are taken over."""
    n = ok.groupby("variant").size()
    lo, hi = (int(n.min()), int(n.max())) if len(n) else (0, 0)
    what = (f"{lo}" if lo == hi else f"{lo}–{hi}") + f" test{'s' if hi != 1 else ''} per variant"
    what += ", 95% CI" if hi > 1 else ""
    exp = ok["experiment"].iloc[0] if "experiment" in ok and len(ok) else ""
    return f"{exp} ({what})" if exp else what


def _variant_ticks(ax: plt.Axes, order: list[str]) -> None:
    """Variant names under categorical bars, wrapped to the room each has (about 48 characters
    at 7 pt across one column), slanted when there are too many to wrap."""
    n = max(len(order), 1)
    slanted = n > 8
    ax.set_xticks(range(len(order)), [variant_label(v, 0 if slanted else max(5, 48 // n)) for v in order],
                  rotation=30 if slanted else 0, ha="right" if slanted else "center")
    ax.set_xlabel("")


def _is_seed(col: str) -> bool:
    """A swept seed (matrix.seed, ...): its points are samples of one condition, pooled."""
    return col.split(".")[-1].lower().endswith("seed")


def _median_test(summary: pd.DataFrame, variant: str) -> str | None:
    """The test of `variant` with the median aggregate goodput (the lower of two middles): a
    typical test to show over time, where the first repetition might be an outlier."""
    tests = summary[summary["variant"].astype(str) == variant]
    ok = tests[tests["error"].isna() & tests["goodput_mbps"].notna()].sort_values("goodput_mbps", kind="stable")
    if ok.empty:
        return str(tests["test"].iloc[0]) if len(tests) else None
    return str(ok["test"].iloc[(len(ok) - 1) // 2])


def _smoothed(g: pd.DataFrame) -> pd.DataFrame:
    """One flow's series sorted by time with a centred rolling mean over SMOOTH_SAMPLES."""
    g = g.sort_values("t")
    return g.assign(smooth=g["goodput_mbps"].rolling(SMOOTH_SAMPLES, center=True, min_periods=1).mean())


def _aggregate(series: pd.DataFrame) -> pd.DataFrame:
    """The flows' goodput summed on the sampling grid (flows' sample times differ by a few ms)."""
    step = float(series.groupby("flow")["t"].diff().median() or 0.1)
    binned = series.assign(t=(series["t"] / step).round() * step)
    total = binned.groupby("t", as_index=False)["goodput_mbps"].sum()
    return _smoothed(total.assign(flow="aggregate"))


def _flow_protocols(flows: pd.DataFrame | None) -> dict[tuple[str, str], str]:
    """(test, flow) -> protocol, from flows.csv."""
    if flows is None or not {"test", "flow", "protocol"} <= set(flows):
        return {}
    return {(str(r.test), str(r.flow)): str(r.protocol) for r in flows.itertuples()}


def flow_goodput_time(summary: pd.DataFrame, series: pd.DataFrame, flows: pd.DataFrame | None,
                      out: RunDir, formats: list[str]) -> list[Path]:
    """Each flow's receiver goodput over time, one panel per variant (its median test), lightly
    smoothed: shows convergence and who yields to whom, which the means in flows.csv hide.
    Colour = flow, line style = protocol; beyond MAX_LEGEND_FLOWS flows the lines are thin and
    unlabelled and the aggregate is drawn bold, on a right-hand axis of its own (on the flows'
    axis it would squash them to the bottom)."""
    if series is None or series.empty or not {"test", "flow", "t", "goodput_mbps"} <= set(series):
        return []
    series = series.assign(test=series["test"].astype(str), flow=series["flow"].astype(str))
    chosen = [(v, t) for v in _variants(summary) if (t := _median_test(summary, v)) in set(series["test"])]
    if not chosen:
        return []
    shown = series[series["test"].isin([t for _, t in chosen])]
    names = list(dict.fromkeys(shown["flow"]))
    many = shown.groupby("test")["flow"].nunique().max() > MAX_LEGEND_FLOWS
    colours = dict(zip(names, sns.color_palette("colorblind" if not many else "husl", len(names))))
    protocols = _flow_protocols(flows)
    ncols = 1 if len(chosen) <= 3 else 2
    nrows = math.ceil(len(chosen) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(COLUMN_WIDTH_IN, 0.35 + 1.1 * nrows), sharex=True,
                             sharey=True, squeeze=False, layout="constrained")
    aggregates = {t: _aggregate(shown[shown["test"] == t]) for _, t in chosen} if many else {}
    agg_top = max((a["smooth"].max() for a in aggregates.values()), default=0) * 1.08
    for k, (ax, (variant, test)) in enumerate(zip(axes.flat, chosen)):
        g = shown[shown["test"] == test]
        for name, f in g.groupby("flow", sort=False):
            f = _smoothed(f)
            style = PROTOCOL_STYLES.get(protocols.get((test, str(name)), ""), "-")
            ax.plot(f["t"], f["smooth"], color=colours[str(name)], linestyle=style,
                    linewidth=0.5 if many else 0.9, alpha=0.7 if many else 1.0)
        if many:
            right = ax.twinx()
            right.plot(aggregates[test]["t"], aggregates[test]["smooth"], color="0.1", linewidth=1.4)
            right.set_ylim(0, agg_top)
            right.grid(False)
            if k == (nrows // 2) * ncols + ncols - 1:
                right.set_ylabel("Aggregate (Mbit/s)")
        n = int((summary["variant"].astype(str) == variant).sum())
        ax.set_title(variant_label(variant, 0) + (f" (median of {n} tests)" if n > 1 else ""), fontsize=7, pad=2)
        ax.xaxis.set_major_locator(MaxNLocator(6, steps=[1, 2, 5, 10]))
    axes[0, 0].set_ylim(bottom=0)  # after every line: the axes share y, and set_ylim freezes the top
    for k, ax in enumerate(axes.flat):
        if k >= len(chosen):
            ax.set_visible(False)
        elif k + ncols >= len(chosen):  # the lowest panel of its column
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel("Time (s)")
    fig.supylabel("Goodput (Mbit/s)", fontsize=8)
    handles, labels = _time_legend(names, colours, many, {p for (t, _), p in protocols.items()
                                                          if t in set(shown["test"])})
    if handles:
        fig.legend(handles, labels, loc="outside upper center", ncol=min(len(labels), 4), frameon=False,
                   fontsize=6)
    return _save(fig, out, "flow-goodput-time", formats)


def _time_legend(names: list[str], colours: dict[str, Any], many: bool, protocols: set[str]
                 ) -> tuple[list[Any], list[str]]:
    """flow-goodput-time's legend: the flows by colour (or the aggregate when there are many),
    then the protocols by line style when both appear."""
    line = plt.Line2D
    if many:
        handles = [line([], [], color="0.1", linewidth=1.4), line([], [], color="0.6", linewidth=0.5)]
        labels = ["aggregate (right axis)", f"{len(names)} flows"]
    else:
        handles = [line([], [], color=colours[n], linewidth=0.9) for n in names]
        labels = [f"flow {n}" for n in names]
    if len(protocols & set(PROTOCOL_STYLES)) > 1:
        for p in PROTOCOL_ORDER:
            handles.append(line([], [], color="0.3", linestyle=PROTOCOL_STYLES[p], linewidth=0.9))
            labels.append(PROTOCOL_LABELS[p])
    return handles, labels


def fairness(summary: pd.DataFrame, flows: pd.DataFrame | None, out: RunDir, formats: list[str]) -> list[Path]:
    """Jain's fairness index per variant (mean, 95% CI, each test a dot) and, below, each flow's
    share of the aggregate: an index of 0.97 says the split is close to even but not who got
    the larger part, which the shares show."""
    ok = _usable(summary, "jain")
    if ok.empty:
        return []
    order = [v for v in _variants(summary) if v in set(ok["variant"])]
    shares = _usable(flows, "share")
    shares = shares[shares["variant"].isin(order)] if not shares.empty else shares
    two = not shares.empty
    fig, axes = plt.subplots(2 if two else 1, 1, figsize=(COLUMN_WIDTH_IN, 3.2 if two else 2.0), sharex=True,
                             squeeze=False, layout="constrained")
    ax = axes[0, 0]
    sns.barplot(data=ok, x="variant", y="jain", order=order, color="0.75", errorbar=CI95, capsize=0.15,
                err_kws={"linewidth": 0.8}, width=0.55, ax=ax)
    sns.stripplot(data=ok, x="variant", y="jain", order=order, color="0.15", size=2.5, jitter=0.12, ax=ax)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("Jain's fairness index")
    ax.set_title(_ci_title(ok), fontsize=7)
    if two:
        _share_panel(shares, order, axes[1, 0], fig)
    _variant_ticks(axes[-1, 0], order)
    return _save(fig, out, "fairness", formats)


def _share_panel(shares: pd.DataFrame, order: list[str], ax: plt.Axes, fig: plt.Figure) -> None:
    """Each flow's mean share per variant, stacked and named by protocol; with many flows (whose
    labels mean little), every flow's share as a dot, coloured by protocol, against 1/n."""
    shares = shares.assign(flow=shares["flow"].astype(str))
    names = list(dict.fromkeys(shares["flow"]))
    if len(names) > MAX_LEGEND_FLOWS:
        palette = dict(zip(PROTOCOL_ORDER, sns.color_palette("colorblind", 2)))
        hue_order = [p for p in PROTOCOL_ORDER if p in set(shares["protocol"])]
        sns.stripplot(data=shares, x="variant", y="share", order=order, hue="protocol", hue_order=hue_order,
                      palette=palette, size=2, jitter=0.25, alpha=0.7, ax=ax, legend=False)
        for i, v in enumerate(order):
            n = shares[shares["variant"] == v].groupby("test").size().median()
            ax.plot([i - 0.35, i + 0.35], [1 / n, 1 / n], color="0.2", linewidth=0.8, linestyle="--")
        handles = [plt.Line2D([], [], color=palette[p], marker="o", linestyle="none", markersize=3)
                   for p in hue_order] + [plt.Line2D([], [], color="0.2", linestyle="--", linewidth=0.8)]
        labels = [PROTOCOL_LABELS.get(p, p) for p in hue_order] + ["equal share"]
        ax.set_ylim(bottom=0)
    else:
        table = shares.groupby(["variant", "flow"])["share"].mean().unstack("flow").reindex(order)[names].fillna(0)
        proto = shares.groupby(["variant", "flow"])["protocol"].agg(lambda s: s.mode().iloc[0])
        colours = dict(zip(names, sns.color_palette("colorblind", len(names))))
        bottom = pd.Series(0.0, index=table.index)
        for name in names:
            ax.bar(range(len(order)), table[name], bottom=bottom, width=0.55, color=colours[name], edgecolor="white",
                   linewidth=0.4)
            for i, v in enumerate(order):
                h = table.loc[v, name]
                if h >= 0.12 and len(order) <= 4:  # wider bars: the name fits inside
                    ax.text(i, bottom[v] + h / 2, PROTOCOL_LABELS.get(proto.get((v, name), ""), ""), ha="center",
                            va="center", fontsize=6, color="white")
            bottom += table[name]
        ax.axhline(0.5 if len(names) == 2 else 1 / len(names), color="0.3", linewidth=0.5, linestyle=":")
        handles = [plt.Rectangle((0, 0), 1, 1, color=colours[n]) for n in names]
        labels = [_flow_name(shares, n) for n in names]
        ax.set_ylim(0, 1)
    ax.set_ylabel("Share of goodput")
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), frameon=False, fontsize=6)


def _flow_name(flows: pd.DataFrame, name: str) -> str:
    """'flow a (l1→r1)' when the flow always runs between the same hosts, else 'flow a'."""
    f = flows[flows["flow"].astype(str) == name]
    if {"src", "dst"} <= set(f) and f["src"].nunique() == 1 and f["dst"].nunique() == 1:
        return f"flow {name} ({f['src'].iloc[0]}→{f['dst'].iloc[0]})"
    return f"flow {name}"


def subflow_axis(flows: pd.DataFrame | None) -> dict[str, tuple[str, int]] | None:
    """variant -> (protocol, subflows per connection) when the variants are 'TCP, MPTCP with 1,
    2, ... subflows' (every variant one protocol and one subflow count, the pairs distinct, some
    MPTCP): fraction-of-optimal is then drawn against the subflow count. Else None."""
    if flows is None or not {"variant", "protocol", "expected_subflows"} <= set(flows):
        return None
    axis: dict[str, tuple[str, int]] = {}
    for variant, g in flows.groupby(flows["variant"].astype(str), sort=False):
        protos = set(g["protocol"].dropna().astype(str))
        if len(protos) != 1 or not protos <= set(PROTOCOL_ORDER):
            return None
        proto = protos.pop()
        counts = set(g["expected_subflows"].dropna().astype(int)) if proto == "mptcp" else {1}
        if len(counts) != 1:
            return None
        axis[str(variant)] = (proto, counts.pop())
    pairs = list(axis.values())
    if len(pairs) < 2 or len(set(pairs)) != len(pairs) or not any(p == "mptcp" for p, _ in pairs):
        return None
    return axis


def _percent_axis(ax: plt.Axes, top: float) -> None:
    """y from 0 to `top` (at least 105%) in percent, with a dashed line at 100%."""
    ax.set_ylim(0, max(1.05, top * 1.08))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.axhline(1.0, color="0.4", linestyle="--", linewidth=0.7)


def fraction_of_optimal(summary: pd.DataFrame, flows: pd.DataFrame | None, out: RunDir,
                        formats: list[str]) -> list[Path]:
    """The aggregate's fraction of the optimum (the max concurrent flow: the largest share of
    every flow's demand the network could carry at once) per variant, 95% CI over repetitions
    and seeds: how much of the network each protocol uses.
    For 'TCP, MPTCP-1, MPTCP-2, ...' variants it is drawn against the subflow count, as in Raiciu
    et al., SIGCOMM 2011 (their Fig. 2)."""
    ok = _usable(summary, "fraction_of_optimal")
    if ok.empty:
        return []
    order = [v for v in _variants(summary) if v in set(ok["variant"])]
    axis = subflow_axis(flows[flows["variant"].astype(str).isin(order)] if flows is not None else None)
    if axis:
        return _fraction_vs_subflows(ok, axis, out, formats)
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.1))
    palette = _variant_palette(order)
    sns.barplot(data=ok, x="variant", y="fraction_of_optimal", order=order, hue="variant", hue_order=order,
                palette=palette, errorbar=CI95, capsize=0.15, err_kws={"linewidth": 0.8}, width=0.55, ax=ax,
                legend=False)
    sns.stripplot(data=ok, x="variant", y="fraction_of_optimal", order=order, color="0.15", size=2.5,
                  jitter=0.12, ax=ax)
    _variant_ticks(ax, order)
    _percent_axis(ax, ok["fraction_of_optimal"].max())
    ax.set_ylabel("Throughput (% of optimal)")
    ax.set_title(_ci_title(ok), fontsize=7)
    return _save(fig, out, "fraction-of-optimal", formats)


def _fraction_vs_subflows(ok: pd.DataFrame, axis: dict[str, tuple[str, int]], out: RunDir,
                          formats: list[str]) -> list[Path]:
    """fraction-of-optimal against subflows per MPTCP connection; TCP a marker of its own at 1;
    with ECMP, the fluid model's expectation dotted (what the hashing alone leaves)."""
    d = ok.assign(protocol=ok["variant"].map(lambda v: axis[v][0]),
                  subflows=ok["variant"].map(lambda v: axis[v][1]))
    hue_order = [p for p in PROTOCOL_ORDER if p in set(d["protocol"])]
    palette = dict(zip(PROTOCOL_ORDER, sns.color_palette("colorblind", 2)))
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.1))
    sns.lineplot(data=d, x="subflows", y="fraction_of_optimal", hue="protocol", hue_order=hue_order,
                 palette=palette, style="protocol", markers=PROTOCOL_MARKERS, dashes=False, errorbar=CI95,
                 err_style="bars", err_kws={"capsize": 2, "linewidth": 0.8}, linewidth=1.0, markersize=4, ax=ax)
    if "ecmp_model_fraction" in d and d["ecmp_model_fraction"].notna().any():
        # the fluid model's expectation (mptcplab.optimum.ecmp_fluid_fraction), to read against
        model = d[d["protocol"] == "mptcp"].groupby("subflows")["ecmp_model_fraction"].mean()
        ax.plot(model.index, model.values, color="0.45", linestyle=":", linewidth=1.0, marker=".",
                label="fluid model")
    ticks = sorted(set(d["subflows"]))
    ax.set_xticks(ticks)
    ax.set_xlim(min(ticks) - 0.5, max(ticks) + 0.5)
    ax.set_xlabel("Subflows per MPTCP connection")
    ax.set_ylabel("Throughput (% of optimal)")
    _percent_axis(ax, d["fraction_of_optimal"].max())
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, [PROTOCOL_LABELS.get(x, x) for x in labels], title=None, frameon=False, loc="best")
    ax.set_title(_ci_title(ok), fontsize=7)
    return _save(fig, out, "fraction-of-optimal", formats)


def flow_throughput_ranked(flows: pd.DataFrame | None, out: RunDir, formats: list[str]) -> list[Path]:
    """Each flow's goodput as a fraction of its optimum, sorted ascending, one line per variant
    (all tests of a variant pooled, ranks scaled to one test's flow count): the spread the
    aggregate hides -- whether a protocol starves some flows (Raiciu et al., Fig. 3)."""
    ok = _usable(flows, "fraction_of_optimum")
    if ok.empty:
        return []
    order = [v for v in _variants(flows) if v in set(ok["variant"])]
    palette = _variant_palette(order)
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.1))
    for v in order:
        g = ok[ok["variant"] == v]
        values = g["fraction_of_optimum"].sort_values().to_numpy()
        per_test = float(g.groupby("test").size().median())
        ranks = [(i + 1) * per_test / len(values) for i in range(len(values))]
        ax.plot(ranks, values, color=palette[v], linewidth=1.0, marker="o" if len(values) <= 20 else None,
                markersize=3, label=variant_label(v, 0))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Flow rank")
    ax.set_ylabel("Throughput (% of optimum)")
    _percent_axis(ax, ok["fraction_of_optimum"].max())
    ax.legend(title=None, frameon=False, loc="best")
    return _save(fig, out, "flow-throughput-ranked", formats)


def _variant_cdf(ok: pd.DataFrame, col: str, xlabel: str, stem: str, out: RunDir, formats: list[str],
                 title: str | None = None) -> list[Path]:
    """An empirical CDF of `col`, one line per variant (colours as elsewhere); log x when the
    values span more than 20x."""
    order = [v for v in _variants(ok) if v in set(ok["variant"])]
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.0))
    sns.ecdfplot(data=ok, x=col, hue="variant", hue_order=order, palette=_variant_palette(order), linewidth=1.0,
                 ax=ax)
    lo, hi = ok[col].min(), ok[col].max()
    if lo > 0 and hi / lo > 20:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("CDF")
    ax.set_ylim(0, 1.02)
    if ax.get_legend():  # "best": off the curves, wherever the distribution leaves room
        sns.move_legend(ax, "best", title=None, frameon=False, labels=[variant_label(v, 0) for v in order])
    if title:
        ax.set_title(title, fontsize=7)
    return _save(fig, out, stem, formats)


def rtt_cdf(rtt: pd.DataFrame | None, summary: pd.DataFrame, out: RunDir, formats: list[str]) -> list[Path]:
    """RTT under load (the spec's ping probes during every test), its CDF per variant: the
    queueing delay each protocol mix builds, which goodput alone does not show."""
    if rtt is None or rtt.empty or "rtt_ms" not in rtt:
        return []
    if "variant" not in rtt:
        rtt = rtt.assign(variant=rtt["test"].map(dict(zip(summary["test"], summary["variant"]))))
    ok = _usable(rtt, "rtt_ms")
    if ok.empty:
        return []
    probes = ok["probe"].nunique() if "probe" in ok else 1
    title = f"{probes} probes pooled" if probes > 1 else None
    return _variant_cdf(ok, "rtt_ms", "RTT under load (ms)", "rtt-cdf", out, formats, title)


def flow_completion(flows: pd.DataFrame | None, out: RunDir, formats: list[str]) -> list[Path]:
    """Flow completion times of byte-count flows, their CDF per variant (flows of fixed duration
    have none)."""
    ok = _usable(flows, "fct_s")
    if ok.empty:
        return []
    return _variant_cdf(ok, "fct_s", "Flow completion time (s)", "flow-completion", out, formats)


def multi_flow_vs(summary: pd.DataFrame, x: str, y: str, ylabel: str, stem: str, out: RunDir,
                  formats: list[str], swept: list[str]) -> list[Path]:
    """A multi-flow metric (Jain's index, fraction of optimal) against one swept parameter, one
    line per variant, 95% CI over repetitions and the other points: the per-variant figures pool
    every point, which mixes conditions when a parameter other than a seed is swept."""
    ok = _usable(summary, y)
    if ok.empty or x not in ok or ok[x].nunique() < 2:
        return []
    order = [v for v in _variants(summary) if v in set(ok["variant"])]
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.2))
    sns.lineplot(data=ok, x=x, y=y, hue="variant", hue_order=order, palette=_variant_palette(order), style="variant",
                 style_order=order, markers=True, dashes=False, errorbar=CI95, err_style="bars",
                 err_kws={"capsize": 2, "linewidth": 0.8}, linewidth=1.0, markersize=4, ax=ax)
    ax.set_xlabel(param_label(x, moves_with(summary, swept, x), summary))
    ax.set_ylabel(ylabel)
    if y == "jain":
        ax.set_ylim(0, 1.05)
    else:
        _percent_axis(ax, ok[y].max())
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, [variant_label(v, 0) for v in labels], title=None, frameon=False, loc="lower left")
    return _save(fig, out, f"{stem}-vs-{_safe(x)}", formats)


def connection_subflow_share(sub: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """variant x 'subflow k': the mean share of an MPTCP connection's bytes its k-th subflow
    carried (the initial one first, then in the order they joined; a connection without a k-th
    counts 0), over the variant's connections (test, flow). Rows sum to 1. Empty when
    subflows.csv lacks the columns."""
    if not {"test", "flow", "local", "remote", "connection", "share"} <= set(sub):
        return pd.DataFrame()
    variants = dict(zip(summary["test"].astype(str), summary["variant"].astype(str)))
    sub = _name_subflows(sub.assign(test=sub["test"].astype(str)), by=["test", "flow"], ranked=True)
    sub = sub.assign(variant=sub["test"].map(variants)).dropna(subset=["variant"])
    if sub.empty:
        return pd.DataFrame()
    per_conn = sub.pivot_table(index=["variant", "test", "flow"], columns="subflow", values="share",
                               aggfunc="sum").fillna(0)
    order = [v for v in _variants(summary) if v in set(sub["variant"])]
    table = per_conn.groupby(level="variant").mean().reindex(order)
    return table[sorted(table.columns, key=lambda c: int(str(c).split()[-1]))]


def flow_subflow_share(sub: pd.DataFrame, summary: pd.DataFrame, out: RunDir, formats: list[str]) -> list[Path]:
    """subflow-share of a multi-flow run: connection_subflow_share stacked, one bar per variant.
    A multi-flow test holds several connections, so the single-flow figure's one stack per test
    would add their shares up past 1."""
    table = connection_subflow_share(sub, summary)
    if table.empty:
        return []
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.1), layout="constrained")
    table.plot(kind="bar", stacked=True, ax=ax, width=0.55, color=sns.color_palette("colorblind", len(table.columns)),
               edgecolor="none", legend=False)
    _variant_ticks(ax, list(table.index))
    ax.tick_params(axis="x", rotation=0)
    ax.set_ylabel("Share of connection's bytes")
    ax.set_ylim(0, 1)
    ax.set_title("mean over each variant's MPTCP connections", fontsize=7)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=min(len(table.columns), 4),
               frameon=False, fontsize=6)
    return _save(fig, out, "subflow-share", formats)


def _with_variants(summary: pd.DataFrame, flows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables with a `variant` on every row: the protocol where the summary has none (as
    the runner names a test without variants), the summary's test's variant in flows.csv."""
    proto = summary["protocol"].astype(str)
    summary = summary.assign(variant=summary["variant"].fillna(proto) if "variant" in summary else proto)
    by_test = dict(zip(summary["test"].astype(str), summary["variant"].astype(str)))
    from_summary = flows["test"].astype(str).map(by_test)
    flows = flows.assign(variant=flows["variant"].fillna(from_summary) if "variant" in flows else from_summary)
    return summary, flows


def multi_flow(rd: RunDir, summary: pd.DataFrame, flows: pd.DataFrame, formats: list[str]) -> list[Path]:
    """The figures of a multi-flow run (one with flows.csv), instead of goodput and goodput-cdf."""
    summary, flows = _with_variants(summary, flows)
    series = rd.read_table(FLOW_GOODPUT)
    paths = flow_goodput_time(summary, series, flows, rd, formats) if series is not None else []
    paths += fairness(summary, flows, rd, formats)
    paths += fraction_of_optimal(summary, flows, rd, formats)
    paths += flow_throughput_ranked(flows, rd, formats)
    paths += rtt_cdf(rd.read_table(RTT), summary, rd, formats)
    paths += flow_completion(flows, rd, formats)
    every = [c for c in rd.meta.swept if c in summary]
    for x in [c for c in factors(summary, every) if not _is_seed(c)]:
        paths += multi_flow_vs(summary, x, "fraction_of_optimal", "Throughput (% of optimal)", "fraction-of-optimal",
                               rd, formats, every)
        paths += multi_flow_vs(summary, x, "jain", "Jain's fairness index", "fairness", rd, formats, every)
    return paths


def _mptcp_flow(flows: pd.DataFrame, sub: pd.DataFrame | None) -> tuple[str, str, set[str]] | None:
    """(test, flow, its subflows' local addresses) of the first MPTCP flow that ran: the
    connection whose subflows subflow-goodput-time draws."""
    if sub is None or sub.empty or not {"test", "flow", "local"} <= set(sub):
        return None
    ok = flows[(flows["protocol"] == "mptcp") & flows["error"].isna()] if "error" in flows else flows
    for r in ok.itertuples():
        local = set(sub.loc[(sub["test"].astype(str) == str(r.test)) & (sub["flow"].astype(str) == str(r.flow)),
                            "local"])
        if local:
            return str(r.test), str(r.flow), local
    return None


def render(run_dir: str | Path | RunDir, formats: list[str] | None = None) -> list[Path]:
    """Render every figure a run's results support; returns the files written. A path is opened
    with RunDir.open_existing (metadata validated; RunDirError on a damaged directory). A
    multi-flow run (one with flows.csv) gets the per-flow figures instead of goodput and
    goodput-cdf, which would show an aggregate of mixed protocols as one protocol's."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir.open_existing(run_dir)
    df = rd.read_summary()
    meta = rd.meta
    formats = formats or meta.formats or ["pdf", "png"]
    paper_style()
    paths: list[Path] = []
    flows = rd.read_table(FLOWS)
    multi = flows is not None and not flows.empty
    ok = df[df["error"].isna() & df["goodput_mbps"].notna()]
    if ok.empty and not (multi and "goodput_mbps" in flows and flows["goodput_mbps"].notna().any()):
        return paths  # every test failed: nothing to draw
    if multi:
        paths += multi_flow(rd, df, flows, formats)
    else:
        paths += single_flow(rd, df, ok, formats)
    sub = rd.read_subflows()
    if sub is not None and not sub.empty:
        if multi:
            paths += flow_subflow_share(sub, _with_variants(df, flows)[0], rd, formats)
        else:
            by = "point" if "point" in sub and sub["point"].nunique() > 1 else "test"
            paths += subflow_share(sub, rd, formats, by, df)
    if multi:
        first = _mptcp_flow(flows, sub)
        samples = rd.read_samples(first[0]) if first else None
        if first and samples is not None:
            paths += subflow_goodput_time(samples, f"{first[0]}, flow {first[1]}", rd, formats, first[2])
    else:
        mptcp = df[(df["protocol"] == "mptcp") & df["error"].isna()]
        if not mptcp.empty:
            test = str(mptcp.iloc[0]["test"])
            samples = rd.read_samples(test)
            if samples is not None:
                paths += subflow_goodput_time(samples, test, rd, formats)
    events = rd.read_table(EVENTS)
    if events is not None and not events.empty and {"test", "action"} <= set(events):
        paths += event_figures(rd, df, events, formats)
    for i, fs in enumerate(rd.figure_specs()):
        paths += custom(df, fs.model_dump(), i, rd, formats)
    return paths


def single_flow(rd: RunDir, df: pd.DataFrame, ok: pd.DataFrame, formats: list[str]) -> list[Path]:
    """The goodput figures of a run of one flow per test: by variant (or against each swept
    parameter, with MPTCP's gain over two of them) and the CDF."""
    meta = rd.meta
    rates = df["bw_mbps"].dropna() if "bw_mbps" in df else pd.Series(dtype=float)
    link_rate = float(rates.iloc[0]) if len(rates) and rates.nunique() == 1 else None
    maxflow = meta.maxflow_mbps
    if link_rate and maxflow and abs(maxflow - link_rate) < 1e-9:
        maxflow = None
    paths: list[Path] = []
    every = [c for c in meta.swept if c in df]
    swept = factors(df, every)
    if not swept:
        paths += goodput_by_variant(df, rd, formats, link_rate, maxflow)
    for x in swept:
        paths += goodput_vs(df, x, rd, formats, every)
    if len(swept) >= 2 and {"mptcp", "tcp"} <= set(ok["protocol"]):
        paths += gain_heatmap(df, swept[0], swept[1], rd, formats, swept[2:], every)
    paths += goodput_cdf(df, rd, formats)
    return paths


# --------------------------------------------------------------------------- networks that change during a test
#
# A run with events (events.csv) also gets figures of what they did: the goodput around them, the
# subflows' lives, outage and recovery per variant and against a swept parameter. Times are on
# each test's clock (seconds after the client started), as in events.csv, pm-events.csv and
# flow-goodput.csv. Each figure returns [] when the data it needs are missing.

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


def _tokens(col: pd.Series) -> pd.Series:
    """MPTCP tokens as their 8 hex digits: read_csv makes '00120000' the number 120000."""
    return col.map(lambda v: _text(v).zfill(8) if isinstance(v, numbers.Real) and _text(v).isdigit() else _text(v))


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
    """The MPTCP subflows' rows of a test's ss samples (kind tcp with a token), tokens as text."""
    if samples is None or not {"kind", "token", "local", "remote", "t", "bytes_acked"} <= set(samples):
        return pd.DataFrame()
    tcp = samples[(samples["kind"] == "tcp") & samples["token"].notna() & samples["bytes_acked"].notna()]
    return tcp.assign(token=_tokens(tcp["token"]))


def _data_token(samples: pd.DataFrame | None, pm: pd.DataFrame) -> str | None:
    """The test's data connection. iperf3 opens two MPTCP connections, a control one and the
    data one: the data one is that whose subflows carried the most bytes (samples), else the one
    created last (pm-events); None when neither says."""
    created = pm.loc[pm["event"] == "created", "token"] if "created" in set(pm["event"]) else pm["token"]
    order = list(dict.fromkeys(t for t in _tokens(created) if t))
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
    conn = pm[_tokens(pm["token"]) == token].sort_values("t", kind="stable")
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
    """Outage and recovery time after the first cut against one swept parameter (a flap
    period, a rate), one line per variant, 95% CI over repetitions: how the interruption each
    protocol suffers moves with the condition. A test that never recovered has no recovery time;
    the panel says how many."""
    cols = [c for c in RECOVERY_LABELS if c in summary and summary[c].notna().any()]
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
        ax.set_ylabel(RECOVERY_LABELS[col])
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

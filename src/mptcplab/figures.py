"""Figures: seaborn from results/ alone, sized and styled for a two-column paper.

Style: serif text at 8 pt, one column wide (3.4 in), colour-blind palette, TrueType fonts in
PDFs (publishers reject Type 3). Error bars are 95% confidence intervals over repetitions.

Every file is read and written through :mod:`mptcplab.results` (a :class:`RunDir`): figures are
drawn in memory and handed to ``RunDir.write_figure``, which creates them without following links
and owned like the rest of the run -- so ``mptcplab plot`` works as the run directory's owner.

The figures of runs whose tests had events (events.csv) are drawn by :mod:`mptcplab.eventfigures`,
which :func:`render` calls.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter  # noqa: E402
import seaborn as sns  # noqa: E402

from .results import EVENTS, FLOW_GOODPUT, FLOWS, OPTIONS, RTT, RunDir  # noqa: E402

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
                ("flaps", "start"): "first flap", ("flaps", "count"): "flap count", ("random", "mean_up"): "mean up time",
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


#: How the option census is drawn: the signalling options of each kind (the handshakes'
#: forms summed) stacked per test, and beside them the DSS options, which outnumber them by
#: orders of magnitude (one per data segment) and would flatten the stack.
CENSUS_GROUPS = {"MP_CAPABLE": ("MP_CAPABLE_SYN", "MP_CAPABLE_SYNACK", "MP_CAPABLE_ACK", "MP_CAPABLE_DATA"),
                 "MP_JOIN": ("MP_JOIN_SYN", "MP_JOIN_SYNACK", "MP_JOIN_ACK"),
                 "ADD_ADDR": ("ADD_ADDR", "ADD_ADDR_ECHO"), "REMOVE_ADDR": ("REMOVE_ADDR",),
                 "MP_PRIO": ("MP_PRIO",), "MP_FAIL": ("MP_FAIL",), "MP_FASTCLOSE": ("MP_FASTCLOSE",),
                 "MP_TCPRST": ("MP_TCPRST",)}


def census_by_test(options: pd.DataFrame) -> pd.DataFrame:
    """Per test (rows, in run order): the census groups summed over its connections and subflows,
    and DSS."""
    cols = {g: [c for c in kinds if c in options] for g, kinds in CENSUS_GROUPS.items()}
    out = pd.DataFrame({g: options[c].fillna(0).sum(axis=1) if c else 0 for g, c in cols.items()})
    out["DSS"] = options["DSS"].fillna(0) if "DSS" in options else 0
    out["test"] = options["test"].astype(str)
    return out.groupby("test", sort=False).sum()


def option_census(options: pd.DataFrame, out: RunDir, formats: list[str]) -> list[Path]:
    """options-census: the MPTCP options each test's captures carried -- signalling options
    stacked by kind (a TCP test has none), and the DSS count on a log scale."""
    per = census_by_test(options)
    if per.empty:
        return []
    kinds = [g for g in CENSUS_GROUPS if per[g].sum() > 0]
    height = max(1.6, 0.22 * len(per) + 0.9)
    fig, (ax, ax_dss) = plt.subplots(1, 2, figsize=(COLUMN_WIDTH_IN * 1.6, height), sharey=True,
                                     gridspec_kw={"width_ratios": [3, 1.2]})
    colours = dict(zip(CENSUS_GROUPS, sns.color_palette("colorblind", len(CENSUS_GROUPS))))
    y = list(range(len(per)))
    left = pd.Series(0.0, index=per.index)
    for g in kinds:
        ax.barh(y, per[g], left=left, color=colours[g], label=g, height=0.7)
        left += per[g]
    ax.set_yticks(y, list(per.index), fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("Signalling options (count)")
    if kinds:
        ax.legend(frameon=False, fontsize=6, ncol=min(4, len(kinds)), loc="upper center",
                  bbox_to_anchor=(0.5, -0.25 if len(per) < 6 else -0.12))
    ax_dss.barh(y, per["DSS"].where(per["DSS"] > 0), color="0.5", height=0.7)  # none: no bar
    ax_dss.set_xscale("log")
    ax_dss.set_xlabel("DSS (count)")
    return _save(fig, out, "options-census", formats)


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
    options = rd.read_table(OPTIONS)
    if options is not None and not options.empty:
        paths += option_census(options, rd, formats)
    events = rd.read_table(EVENTS)
    if events is not None and not events.empty and {"test", "action"} <= set(events):
        from .eventfigures import event_figures  # here: eventfigures imports this module

        paths += event_figures(rd, df, events, formats)
    from .outcomes import outcome_figures  # here: outcomes imports this module

    paths += outcome_figures(rd, df, formats)
    hosts = meta.point_hosts()  # a local run's points all ran where it started
    if hosts and "point" in df:
        by_host = df.assign(host=df["point"].map(hosts))
    else:  # no sweep: one point, wherever it ran
        by_host = df.assign(host=next(iter(hosts.values())) if len(set(hosts.values())) == 1 else meta.run_host())
    if not multi and hosts and len(set(hosts.values())) > 1:
        paths += goodput_by_host(by_host, rd, formats, [c for c in meta.swept if c in df])
    for i, fs in enumerate(rd.figure_specs()):  # a distributed run's `host` column is theirs too
        paths += custom(by_host, fs.model_dump(), i, rd, formats)
    return paths


def goodput_by_host(df: pd.DataFrame, out: RunDir, formats: list[str], swept: list[str]) -> list[Path]:
    """A distributed sweep's check by host: goodput against the first swept parameter, one
    colour per protocol/variant and one marker per host that ran the point -- a slower or
    differently configured machine shows as its markers below the others'."""
    ok = df[df["error"].isna() & df["goodput_mbps"].notna() & df["host"].notna()]
    xs = factors(ok, swept)
    if ok.empty or not xs:
        return []
    hue = _hue(ok)
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.4))
    sns.scatterplot(data=ok, x=xs[0], y="goodput_mbps", hue=hue, style="host", s=22, ax=ax)
    ax.set_xlabel(param_label(xs[0], moves_with(df, swept, xs[0]), df))
    ax.set_ylabel("Goodput (Mbit/s)")
    ax.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, [label(l).replace("\n", " ") if l in set(ok[hue]) else l for l in labels],
              title=None, frameon=False, fontsize="small")
    return _save(fig, out, "goodput-by-host", formats)


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

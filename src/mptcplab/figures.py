"""Figures: seaborn from results/ alone, sized and styled for a two-column paper.

Style: serif text at 8 pt, one column wide (3.4 in), colour-blind palette, TrueType fonts in
PDFs (publishers reject Type 3). Error bars are 95% confidence intervals over repetitions.

Every file is read and written through :mod:`mptcplab.results` (a :class:`RunDir`): figures are
drawn in memory and handed to ``RunDir.write_figure``, which creates them without following links
and owned like the rest of the run -- so ``mptcplab plot`` works as the run directory's owner.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .results import RunDir  # noqa: E402

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


def param_label(path: str, moves_with: list[str] | None = None, df: pd.DataFrame | None = None) -> str:
    """'links.h1-s2.loss' -> 'loss h1-s2 (%)'; other field paths keep their name. Parameters
    zipped with it (``moves_with``) are named too: 'bw h1-s2, s2-h2 (Mbit/s)' when they are the
    same field with the same values, else '...; with <their labels>'."""
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


def _name_subflows(sub: pd.DataFrame) -> pd.DataFrame:
    """A `subflow` column: the address pair when each subflow has its own, else 'subflow k' with
    the initial subflow first and the others by the server port they joined."""
    parts = []
    for _, g in sub.groupby("test", sort=False):
        g = g.copy()
        pairs = g["local"].str.rsplit(":", n=1).str[0] + " → " + g["remote"].str.rsplit(":", n=1).str[0]
        if pairs.is_unique:
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


def subflow_goodput_time(samples: pd.DataFrame, title: str, out: RunDir, formats: list[str]) -> list[Path]:
    """Per-subflow goodput over time (bytes acked per sampling interval) of one MPTCP test,
    with a tick under the curve wherever the subflow retransmitted. Why the ticks: during loss
    recovery the cumulative ACK stands still until the hole is filled and then jumps over the
    SACKed data, so each recovery shows as a dip followed by a spike above the link rate; the
    ticks tell that apart from a stalled link."""
    tcp = samples[(samples["kind"] == "tcp") & samples["token"].notna() & samples["bytes_acked"].notna()].copy()
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


def render(run_dir: str | Path | RunDir, formats: list[str] | None = None) -> list[Path]:
    """Render every figure a run's results support; returns the files written. A path is opened
    with RunDir.open_existing (metadata validated; RunDirError on a damaged directory)."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir.open_existing(run_dir)
    df = rd.read_summary()
    meta = rd.meta
    formats = formats or meta.formats or ["pdf", "png"]
    paper_style()
    rates = df["bw_mbps"].dropna() if "bw_mbps" in df else pd.Series(dtype=float)
    link_rate = float(rates.iloc[0]) if len(rates) and rates.nunique() == 1 else None
    maxflow = meta.maxflow_mbps
    if link_rate and maxflow and abs(maxflow - link_rate) < 1e-9:
        maxflow = None
    paths: list[Path] = []
    ok = df[df["error"].isna() & df["goodput_mbps"].notna()]
    if ok.empty:  # every test failed: nothing to draw
        return paths
    every = [c for c in meta.swept if c in df]
    swept = factors(df, every)
    if not swept:
        paths += goodput_by_variant(df, rd, formats, link_rate, maxflow)
    for x in swept:
        paths += goodput_vs(df, x, rd, formats, every)
    if len(swept) >= 2 and {"mptcp", "tcp"} <= set(ok["protocol"]):
        paths += gain_heatmap(df, swept[0], swept[1], rd, formats, swept[2:], every)
    paths += goodput_cdf(df, rd, formats)
    sub = rd.read_subflows()
    if sub is not None and not sub.empty:
        by = "point" if "point" in sub and sub["point"].nunique() > 1 else "test"
        paths += subflow_share(sub, rd, formats, by, df)
    mptcp = df[(df["protocol"] == "mptcp") & df["error"].isna()]
    if not mptcp.empty:
        test = str(mptcp.iloc[0]["test"])
        samples = rd.read_samples(test)
        if samples is not None:
            paths += subflow_goodput_time(samples, test, rd, formats)
    for i, fs in enumerate(rd.figure_specs()):
        paths += custom(df, fs.model_dump(), i, rd, formats)
    return paths

"""Figures: seaborn from results/ alone, sized and styled for a two-column paper.

Style: serif text at 8 pt, one column wide (3.4 in), colour-blind palette, TrueType fonts in
PDFs (publishers reject Type 3). Error bars are 95% confidence intervals over repetitions.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .results import read_metadata, read_summary  # noqa: E402

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


def _save(fig: plt.Figure, out_dir: Path, stem: str, formats: list[str]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        p = out_dir / f"{stem}.{fmt}"
        tmp = out_dir / f".{stem}.tmp.{fmt}"
        fig.savefig(tmp, format=fmt)
        tmp.replace(p)
        paths.append(p)
    plt.close(fig)
    return paths


def goodput_by_variant(df: pd.DataFrame, out_dir: Path, formats: list[str],
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
    return _save(fig, out_dir, "goodput", formats)


def render(run_dir: str | Path, formats: list[str] | None = None) -> list[Path]:
    """Render every figure a run's results support; returns the files written."""
    run_dir = Path(run_dir)
    df = read_summary(run_dir)
    meta = read_metadata(run_dir)
    formats = formats or meta.get("formats") or ["pdf", "png"]
    paper_style()
    rates = df["bw_mbps"].dropna() if "bw_mbps" in df else pd.Series(dtype=float)
    link_rate = float(rates.iloc[0]) if len(rates) and rates.nunique() == 1 else None
    maxflow = meta.get("maxflow_mbps")
    if link_rate and maxflow and abs(maxflow - link_rate) < 1e-9:
        maxflow = None
    return goodput_by_variant(df, run_dir / "figures", formats, link_rate, maxflow)

"""Outcomes: what became of each test's connection, as RFC 8684 names the cases -- MPTCP on
every subflow, MPTCP on fewer, a subflow reset after MP_FAIL, fallback to TCP, data corrupted,
cut short, failed -- and the table "which middlebox MPTCP survives, and how" drawn from them.

A test's outcome is read from its summary row (error, data_intact and byte counts of the
transfer tool, subflows, mptcp_fallback) and the MPTCP MIB deltas of its hosts
(mptcp-mib.csv): the kernel's own counts of checksum failures, MP_FAIL, infinite mappings and
fallbacks say which of RFC 8684's reactions happened. Classification is pure; the figure
``middlebox-outcomes`` lays the outcomes out with the swept middleboxes as rows and the other
swept parameters (DSS checksums off/on) as columns, one coloured cell each.

The figure imports the paper style's helpers from :mod:`mptcplab.figures`, and
``figures.render`` imports :func:`outcome_figures` inside the function, as with eventfigures.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .figures import COLUMN_WIDTH_IN, _save  # noqa: E402
from .recovery import cell_number  # noqa: E402
from .results import MPTCP_MIB, RunDir  # noqa: E402
from .rows import FALLBACK_COUNTERS as ROW_FALLBACK_COUNTERS, mib_by_test  # noqa: E402

#: Outcomes from best to worst, with the cell colour of each.
KINDS = {"mptcp": "#d9f0d3", "fewer-subflows": "#f4f8c8", "subflow-reset": "#f4f8c8", "fallback": "#fee8c8",
         "failed": "#d9d9d9", "cut-short": "#fcbba1", "corrupted": "#fcbba1"}
#: MIB counters (summed over the test's hosts) that tell RFC 8684's reactions apart: a fallback
#: (the summary's own, and the server's view of it), MP_FAIL, a failed DSS checksum, a subflow
#: reset, a subflow reset because its mapping was unusable.
FALLBACK_COUNTERS = (*ROW_FALLBACK_COUNTERS, "MPTcpExtMPCapableSYNTXDisabled", "MPTcpExtDSSCorruptionFallback")
MP_FAIL_COUNTERS = ("MPTcpExtMPFailTx", "MPTcpExtMPFailRx")
CHECKSUM_COUNTER = "MPTcpExtDataCsumErr"
RESET_COUNTERS = ("MPTcpExtMPRstTx", "MPTcpExtMPRstRx")
BAD_MAPPING_COUNTER = "MPTcpExtDSSCorruptionReset"
#: A swept middlebox: links.NAME[.up|.down].middlebox (see mptcplab.sweep)
_BOX = re.compile(r"links\.(?P<a>[A-Za-z0-9_]+)-(?P<b>[A-Za-z0-9_]+)(?:\.(?P<dir>up|down))?\.middlebox")


@dataclass(frozen=True)
class Outcome:
    kind: str                  # a key of KINDS
    text: str                  # what a table cell says
    mp_fail: bool = False      # MP_FAIL was sent or received


def _num(row: Mapping[str, Any], key: str) -> float | None:
    return cell_number(row.get(key))


def _flag(v: Any) -> bool | None:
    if isinstance(v, str):
        return {"true": True, "false": False}.get(v.strip().lower())
    if v is None or (isinstance(v, float) and v != v):
        return None
    return bool(v)


def outcome_of(row: Mapping[str, Any], mib: Mapping[str, int]) -> Outcome:
    """One test's outcome from its summary row and its hosts' MIB deltas (counter -> sum)."""
    count = lambda names: sum(int(mib.get(n, 0)) for n in names)  # noqa: E731
    mp_fail = count(MP_FAIL_COUNTERS) > 0
    fail_note = " (MP_FAIL)" if mp_fail else ""
    intact = _flag(row.get("data_intact"))
    sent, got = _num(row, "bytes_sent"), _num(row, "bytes_received")
    error = row.get("error")
    has_error = isinstance(error, str) and error.strip() != ""
    if intact is False:
        if got is not None and sent is not None and got == sent and got > 0:
            return Outcome("corrupted", "data corrupted" + fail_note, mp_fail)
        if not got:
            return Outcome("failed", "failed: " + _short(error) if has_error else "nothing delivered", mp_fail)
        return Outcome("cut-short", f"cut short ({got / sent:.0%})" if sent else "cut short", mp_fail)
    if has_error and (intact is None and _num(row, "goodput_mbps") is None):
        return Outcome("failed", "failed: " + _short(error), mp_fail)
    if count(FALLBACK_COUNTERS) > 0 or (_num(row, "mptcp_fallback") or 0) > 0:
        return Outcome("fallback", "fell back to TCP" + fail_note, mp_fail)
    subflows, expected = _num(row, "subflows"), _num(row, "expected_subflows")
    if row.get("protocol") != "mptcp":
        return Outcome("mptcp", "TCP", mp_fail)
    if (mp_fail or count((CHECKSUM_COUNTER,)) > 0) and count(RESET_COUNTERS) > 0:
        return Outcome("subflow-reset", "subflow reset" + fail_note, mp_fail)
    if count((BAD_MAPPING_COUNTER,)) > 0:
        return Outcome("subflow-reset", "subflow reset (bad mapping)", mp_fail)
    if subflows is not None and expected is not None and subflows < expected:
        return Outcome("fewer-subflows", f"MPTCP, {subflows:.0f} of {expected:.0f} subflows", mp_fail)
    return Outcome("mptcp", f"MPTCP, {subflows:.0f} subflows" if subflows is not None else "MPTCP", mp_fail)


def _short(error: Any) -> str:
    text = str(error or "").strip().split(";")[0]
    return text if len(text) <= 40 else text[:39] + "…"


def box_label(column: str) -> str:
    """'links.h1-s1.up.middlebox' -> 'h1→s1', '...h1-s1.down...' -> 's1→h1', no direction 'h1↔s1'."""
    m = _BOX.fullmatch(column)
    if not m:
        return column
    a, b = m["a"], m["b"]
    return {"up": f"{a}→{b}", "down": f"{b}→{a}"}.get(m["dir"] or "", f"{a}↔{b}")


def box_columns(summary: pd.DataFrame, swept: list[str]) -> list[str]:
    return [c for c in swept if c in summary and _BOX.fullmatch(c)]


def outcome_table(summary: pd.DataFrame, mib: dict[str, dict[str, int]], swept: list[str]
                  ) -> tuple[list[str], list[str], list[list[Outcome]]]:
    """Row labels (the middleboxes of each point: 'h1→s1: strip-syn', 'none'), column labels
    (the other swept parameters' values; one column without any) and the cells: per row and
    column the outcome of its tests (each with its count, the worst first, when they differ)."""
    boxes = box_columns(summary, swept)
    others = [c for c in swept if c in summary and c not in boxes]
    df = summary.copy()
    df["_row"] = df.apply(lambda r: ", ".join(f"{box_label(c)}: {r[c]}" for c in boxes
                                               if str(r[c]) not in ("none", "nan", "None")) or "none", axis=1)
    df["_col"] = df.apply(lambda r: ", ".join(_col_label(c, r[c]) for c in others) or "outcome", axis=1)
    rows = list(dict.fromkeys(df["_row"]))
    cols = list(dict.fromkeys(df["_col"]))
    cells = []
    for r in rows:
        line = []
        for c in cols:
            tests = df[(df["_row"] == r) & (df["_col"] == c)]
            found = [outcome_of(t, mib.get(str(t["test"]), {})) for t in tests.to_dict("records")]
            line.append(_agree(found))
        cells.append(line)
    return rows, cols, cells


def _col_label(column: str, value: Any) -> str:
    if column == "mptcp.checksum":
        return "DSS checksum " + ("on" if _flag(value) else "off")
    return f"{column.split('.')[-1]}={value}"


def _agree(found: list[Outcome]) -> Outcome:
    """One cell for a group of tests: their outcome when they agree; else each outcome with its
    count, the worst first, coloured as the worst -- one corrupted transfer in ten is the news."""
    if not found:
        return Outcome("failed", "–")
    counts = Counter(found)
    if len(counts) == 1:
        return found[0]
    rank = list(KINDS)
    ordered = sorted(counts, key=lambda o: (-rank.index(o.kind), -counts[o]))
    text = "\n".join(f"{o.text} ({counts[o]}/{len(found)})" for o in ordered)
    return Outcome(ordered[0].kind, text, any(o.mp_fail for o in ordered))


def middlebox_outcomes(summary: pd.DataFrame, mib: dict[str, dict[str, int]], swept: list[str], out: RunDir,
                       formats: list[str]) -> list[Path]:
    """The table 'which middlebox MPTCP survives, and how': one row per swept middlebox
    setting, one column per value of the other swept parameters, each cell the outcome of its
    tests, coloured from intact MPTCP (green) to corrupted data (red)."""
    rows, cols, cells = outcome_table(summary, mib, swept)
    texts = [[o.text for o in line] for line in cells]
    lines = [1] + [max(t.count("\n") + 1 for t in line) for line in texts]  # per table row, the heads' first
    longest = lambda text: max(len(part) for part in text.split("\n"))  # noqa: E731
    chars = [max(len("Middlebox"), *map(len, rows)) + 2,
             *(max(len(c), *(longest(t[j]) for t in texts)) + 2 for j, c in enumerate(cols))]
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN * (2 if len(cols) > 1 else 1.4), 0.35 + 0.2 * sum(lines)))
    ax.axis("off")
    tab = ax.table(cellText=[[r, *t] for r, t in zip(rows, texts)], colLabels=["Middlebox", *cols], cellLoc="center",
                   bbox=[0, 0, 1, 1], colWidths=[c / sum(chars) for c in chars])
    tab.auto_set_font_size(False)
    tab.set_fontsize(6.5)
    for (r, c), cell in tab.get_celld().items():
        cell.set_height(lines[r])  # relative: the bbox scales the rows to fit
        cell.set_linewidth(0.4)
        cell.set_edgecolor("0.7")
        if r == 0:
            cell.set_text_props(weight="bold")
        elif c == 0:
            cell.set_text_props(ha="left")
            cell.PAD = 0.03
        else:
            cell.set_facecolor(KINDS.get(cells[r - 1][c - 1].kind, "white"))
    ax.set_title("What became of each connection (tests that differ: each outcome, the worst first)", fontsize=7, pad=3)
    return _save(fig, out, "middlebox-outcomes", formats)


def outcome_figures(rd: RunDir, summary: pd.DataFrame, formats: list[str]) -> list[Path]:
    """middlebox-outcomes when the run swept a middlebox; nothing otherwise."""
    swept = [c for c in rd.meta.swept if c in summary]
    if not box_columns(summary, swept):
        return []
    return middlebox_outcomes(summary, mib_by_test(rd.read_table(MPTCP_MIB)), swept, rd, formats)

"""Evidence from a run's saved results alone: the MPTCP option census of its packet captures
(options.csv) and the verdicts of its expectations (expect.csv, and in metadata.json).

Checking is separate from running (as in Flent): a run ends with this analysis, and
``mptcplab analyze RUN_DIR`` redoes it at any time from the run directory -- the captures in
raw/, summary.csv, mptcp-mib.csv and the spec recorded there; nothing of the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from . import census, expect, results, tshark
from .errors import RunDirError
from .results import RunDir
from .rows import mib_by_test

#: Census counts a test's summary row gets as options_<KIND> (the expectations' options.KIND).
OPTION_COLUMNS = tuple(f"options_{k}" for k in census.COUNTERS) + (
    "options_fallback", "options_joins", "options_connections", "options_mptcp_connections",
    "options_wire_subflows", "options_ss_subflows", "options_ss_not_on_wire", "options_wire_not_in_ss",
    "options_complete")


@dataclass
class Evidence:
    census: list[dict[str, Any]] = field(default_factory=list)   # options.csv rows
    per_test: dict[str, dict[str, Any]] = field(default_factory=dict)  # test -> options_* totals
    verdicts: list[expect.Verdict] = field(default_factory=list)

    @property
    def failed(self) -> list[expect.Verdict]:
        return [v for v in self.verdicts if not v.passed]


def take_census(rd: RunDir, tests: list[str]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """options.csv rows of every capture of these tests in raw/ (tshark on each file, the
    census over a test's files together: a segment seen on two interfaces counts once), and
    each test's totals as options_<KIND> columns (options_fallback: a connection fell back)."""
    files: dict[str, dict[str, Path]] = {}
    for path in rd.captures():
        m = tshark.CAPTURE_NAME.match(path.name)
        if m and m["test"] in tests:
            files.setdefault(m["test"], {})[m["interface"]] = path
    sub = rd.read_subflows()
    incomplete = _incomplete_captures(rd)
    rows: list[dict[str, Any]] = []
    totals: dict[str, dict[str, Any]] = {}
    for test in tests:
        if test not in files:
            continue
        read = {name: _fields(rd, p) for name, p in sorted(files[test].items())}
        test_rows = census.census(test, {name: r.rows for name, r in read.items()})
        rows += test_rows
        if test in incomplete or any(r.truncated for r in read.values()):
            # counts of a partial capture are no evidence: the expectations on them fail ("no value")
            totals[test] = {**dict.fromkeys(OPTION_COLUMNS), "options_complete": False}
            continue
        (t,) = census.totals(test_rows) or [{**dict.fromkeys(census.COUNTERS, 0), "fallbacks": 0, "joins": 0,
                                            "connections": 0, "mptcp_connections": 0}]
        totals[test] = {"options_complete": True, **{f"options_{k}": t[k] for k in census.COUNTERS},
                        "options_fallback": t["fallbacks"] > 0, "options_joins": t["joins"],
                        "options_connections": t["connections"], "options_mptcp_connections": t["mptcp_connections"],
                        **_against_ss(test_rows, sub[sub["test"].astype(str) == test] if sub is not None else None)}
    return rows, totals


def _fields(rd: RunDir, path: Path) -> tshark.FieldRows:
    """tshark's rows of one capture, read through the file the run directory opened."""
    with rd.open_capture(path.name) as fd_path:
        return tshark.read_fields(fd_path, pass_fds=(int(fd_path.name),))


def _incomplete_captures(rd: RunDir) -> set[str]:
    """Tests one of whose captures dropped packets, wrapped its ring or failed (captures.csv)."""
    caps = rd.read_table(results.CAPTURES)
    if caps is None or caps.empty:
        return set()
    bad = (caps["dropped"].fillna(0) > 0) | caps["wrapped"].astype(str).str.lower().eq("true") | caps["error"].notna()
    return set(caps.loc[bad, "test"].astype(str))


def _against_ss(rows: list[dict[str, Any]], ss: pd.DataFrame | None) -> dict[str, Any]:
    """The subflows on the wire against those ss reported for the test (subflows.csv, the data
    connection: iperf3's control connection is left out): how many ss saw, how many of those the
    wire did not show, how many the wire showed that ss did not."""
    if ss is None or ss.empty:
        return {}
    check = census.compare_subflows(rows, list(zip(ss["local"].astype(str), ss["remote"].astype(str))),
                                    set(ss["connection"].astype(str)))
    return {"options_wire_subflows": len(check.seen) + len(check.unexpected), "options_ss_subflows": len(ss),
            "options_ss_not_on_wire": len(check.missing), "options_wire_not_in_ss": len(check.unexpected)}


def resolver(mib: dict[str, dict[str, int]]) -> expect.Resolver:
    """A summary column; options.KIND from the census totals merged into the row; mib.COUNTER
    from the test's MIB deltas -- 0 for a counter that did not move (mptcp-mib.csv lists only
    those that did)."""
    def resolve(row: Any, name: str) -> Any:
        if name.startswith("mib."):
            return mib.get(str(row.get("test")), {}).get(name[4:], 0)
        return expect.resolve_column(row, name)

    return resolve


def judge(rd: RunDir, summary: pd.DataFrame, texts: list[str], per_test: dict[str, dict[str, Any]]
          ) -> list[expect.Verdict]:
    """The expectations over the summary's rows (each with its census totals)."""
    if not texts:
        return []
    rows = [{**r, **per_test.get(str(r.get("test")), {})} for r in summary.to_dict("records")]
    return expect.evaluate(expect.parse_all(texts), rows, resolver(mib_by_test(rd.read_table(results.MPTCP_MIB))))


def analyze(rd: RunDir, texts: list[str]) -> Evidence:
    """Census and verdicts, written to options.csv and expect.csv (replacing earlier ones)."""
    try:
        summary = rd.read_summary()
    except RunDirError:  # no test finished: nothing to count, and every expectation fails
        summary = pd.DataFrame(columns=["test"])
    rows, per_test = take_census(rd, [str(t) for t in summary["test"]])
    if rows:
        rd.write_table(results.OPTIONS, rows)
    verdicts = judge(rd, summary, texts, per_test)
    if verdicts:
        rd.write_table(results.EXPECT, [v.row() for v in verdicts])
    return Evidence(rows, per_test, verdicts)

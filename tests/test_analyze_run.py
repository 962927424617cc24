"""`mptcplab analyze RUN_DIR` on a captured run, without a network: the real trimmed captures of
tests/data/pcaps laid out as the run directory the runner leaves (through RunDir, with its
file names), then analysed by the command a user types. The census it writes (options.csv) and
the per-test totals its expectations read (options.*) must be the counts tests/test_census.py
reads off those packets; analysing again changes nothing; a failing expectation exits 4."""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from helpers import cli, write_spec
from mptcplab import census as C
from mptcplab import results
from mptcplab import tshark as T
from mptcplab.figures import census_by_test, option_census
from mptcplab.plan import make_plan
from mptcplab.results import RunDir
from mptcplab.spec import load_spec
from test_census import DUAL_SS, PCAPS, THREE_SS, needs_tshark, real_census

pytestmark = needs_tshark


@dataclass(frozen=True)
class Recorded:
    """A run the trimmed captures come from (tests/data/pcaps/README.md): its experiment, the
    sweep point its tests ran at (empty: no sweep), the tests whose captures were kept, and
    what ss recorded of each MPTCP test's data connection: (connection, token, subflows)."""

    experiment: str
    tests: tuple[str, ...]
    ss: dict[str, tuple[str, str, list[tuple[str, str]]]]
    point: dict[str, Any] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        """A sweep point's tests are labelled p001-<test> (runner.run_one_test)."""
        return "p001-" if self.point else ""


DUAL = Recorded("dual-path", ("001-mptcp-r1", "002-tcp-r1"),
                {"001-mptcp-r1": ("10.0.1.1:37058", "b1af3a06", DUAL_SS)})
# The three-path captures come from a sweep point whose values the README does not keep; one
# loss value stands for them (the census does not read it).
THREE = Recorded("three-path", ("003-mptcp-dependent-r1",),
                 {"003-mptcp-dependent-r1": ("10.0.1.1:60078", "dc4126b7", THREE_SS)}, {"links.*.loss": 0})

ZERO = dict.fromkeys(C.COUNTERS, 0)
MPC = ("MP_CAPABLE_SYN", "MP_CAPABLE_SYNACK", "MP_CAPABLE_ACK", "MP_CAPABLE_DATA")
JOINS = ("MP_JOIN_SYN", "MP_JOIN_SYNACK", "MP_JOIN_ACK")
# Per test, the sums of test_census.py's per-subflow counts (test_real_dual_path_mptcp,
# test_real_three_path_joins_to_announced_ports, test_real_tcp_has_no_mptcp_option) and the
# wire against ss: every subflow ss recorded is on the wire and no other of that connection.
TOTALS: dict[str, dict[str, Any]] = {
    "001-mptcp-r1": {**ZERO, **dict.fromkeys(MPC, 2), **dict.fromkeys(JOINS, 2), "DSS": 22 + 7 + 78,
                     "DSS_MAPPING": 13 + 3 + 56, "DSS_DATA_ACK": 22 + 7 + 78, "ADD_ADDR": 2, "ADD_ADDR_ECHO": 2,
                     "joins": 2, "connections": 2, "mptcp_connections": 2, "fallback": False, "complete": True,
                     "wire_subflows": 2, "ss_subflows": 2, "ss_not_on_wire": 0, "wire_not_in_ss": 0},
    "002-tcp-r1": {**ZERO, "joins": 0, "connections": 2, "mptcp_connections": 0, "fallback": False,
                   "complete": True},
    "p001-003-mptcp-dependent-r1": {
        **ZERO, **dict.fromkeys(MPC, 2), **dict.fromkeys(JOINS, 4), "DSS": 12 + 4 + 3 + 19 + 2 + 7,
        "DSS_MAPPING": 7 + 2 + 1 + 15 + 1 + 3, "DSS_DATA_ACK": 12 + 4 + 3 + 19 + 2 + 7, "ADD_ADDR": 4,
        "ADD_ADDR_ECHO": 4, "joins": 4, "connections": 2, "mptcp_connections": 2, "fallback": False,
        "complete": True, "wire_subflows": 3, "ss_subflows": 3, "ss_not_on_wire": 0, "wire_not_in_ss": 0},
}


def total_expectations(test: str) -> list[str]:
    """One expectation per options.* total of a test, pinned to its value: the totals are
    checked as a user's expect: reads them."""
    def lit(v: Any) -> str:
        return str(v).lower() if isinstance(v, bool) else str(v)

    return [f"test='{test}': options.{k} == {lit(v)}" for k, v in TOTALS[test].items()]


def lay_out(tmp: Path, rec: Recorded, expectations: list[str]) -> Path:
    """The run directory the runner would have left for these tests, written through RunDir:
    spec.yaml (the experiment, captured, with these expectations), plan.json, metadata.json,
    points.json, summary.csv, subflows.csv, captures.csv and raw/<test>-<interface>.pcapng.gz.
    Only what the captures tell is filled in: goodput is unknown (the analysis does not read it)."""
    def mutate(spec: dict[str, Any]) -> None:
        spec.update(capture={}, expect=expectations)
        spec["outputs"]["formats"] = ["png"]
        if rec.point:
            spec["sweep"] = {"parameters": {k: [v] for k, v in rec.point.items()}}

    spec_file = write_spec(tmp, rec.experiment, traffic={"repetitions": 1}, mutate=mutate)
    exp = load_spec(spec_file)
    plan = make_plan(exp)
    tests = [t for t in plan.tests if t.label in rec.tests]
    assert [t.label for t in tests] == list(rec.tests), "the plan no longer has the recorded tests"
    head = {"point": "p001", **rec.point} if rec.point else {}
    summary, subflows, captures = [], [], []
    rd = RunDir.create(exp.name, out=tmp / "run")
    with rd:
        rd.write_spec(exp.model_dump(mode="json"))
        rd.write_plan(plan.to_dict())
        rd.write_json(results.POINTS, [{"id": "p001", "values": rec.point, "status": "done", "error": None}])
        for t in tests:
            label = rec.prefix + t.label
            conn, token, ss = rec.ss.get(t.label, ("", "", []))
            subs = len(ss) if t.protocol == "mptcp" else 1
            summary.append({**head, "experiment": exp.name, "test": label, "variant": t.variant or t.protocol,
                            "protocol": t.protocol, "repetition": t.repetition, "goodput_mbps": None,
                            "subflows": subs, "expected_subflows": t.expected_subflows,
                            "subflows_ok": subs >= t.expected_subflows, "error": None})
            subflows += [{**head, "experiment": exp.name, "test": label, "repetition": t.repetition,
                          "connection": conn, "token": token, "local": local, "remote": remote}
                         for local, remote in ss]
            captures += [{**head, "experiment": exp.name, "test": label, "variant": t.variant or t.protocol, **c}
                         for c in write_captures(rd, label, tmp / "ring")]
        rd.write_summary(summary)
        rd.write_subflows(subflows)
        rd.write_table(results.CAPTURES, captures)
        rd.write_metadata({"run_id": rd.run_id, "experiment": exp.name, "spec_file": str(spec_file),
                           "formats": ["png"], "swept": list(rec.point),
                           "expected_subflows": plan.expected_subflows, "status": "done"})
    return rd.path


def write_captures(rd: RunDir, label: str, ring: Path) -> list[dict[str, Any]]:
    """A test's kept captures written as the runner writes dumpcap's ring files (write_capture:
    raw/<test>-<interface>.pcapng.gz), and their captures.csv rows: nothing dropped or wrapped."""
    rows = []
    ring.mkdir(exist_ok=True)
    for src in sorted(PCAPS.glob(f"{label}-*{results.CAPTURE_SUFFIX}")):
        m = T.CAPTURE_NAME.match(src.name)
        assert m and m["test"] == label, src.name
        part = ring / f"{m['interface']}_00001.pcapng"
        part.write_bytes(gzip.decompress(src.read_bytes()))
        written = rd.write_capture(label, m["interface"], [part])
        assert written.name == src.name
        rows.append({"host": m["interface"].split("-")[0], "interface": m["interface"],
                     "packets": len(T.read_fields(src).rows), "dropped": 0, "wrapped": False, "error": None})
    assert rows, f"no kept capture of {label} in {PCAPS}"
    return rows


def analyze(run: Path) -> Any:
    return cli("mptcplab", "analyze", str(run))


@pytest.mark.parametrize("rec", [DUAL, THREE], ids=["dual-path", "three-path"])
def test_analyze_redoes_the_census_of_a_captured_run(tmp_path, rec):
    tests = [rec.prefix + t for t in rec.tests]
    expect = [e for t in tests for e in total_expectations(t)] + [
        # the subflows on the wire (of the data connection ss recorded) against the plan's
        "protocol=mptcp: options.wire_subflows >= expected_subflows", "options.fallback == false"]
    run = lay_out(tmp_path, rec, expect)
    r = analyze(run)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "MPTCP options on the wire" in r.stderr, r.stderr[-3000:]
    assert not [line for line in r.stderr.splitlines() if line.startswith("FAIL")], r.stderr[-3000:]

    # options.csv: one row per subflow, as the census of these packets reads them (pinned to
    # the counts by tests/test_census.py)
    options = pd.read_csv(run / results.OPTIONS, dtype=dict.fromkeys(results.TEXT_COLUMNS, str))
    assert list(options.columns) == list(C.COLUMNS)
    keys = ["test", "connection", "role", "local", "remote", "packets", *C.COUNTERS, "fallback"]
    for test in tests:
        want = [{k: row[k] for k in keys} for row in real_census(run, test)]
        assert options.loc[options.test == test, keys].to_dict("records") == want, test

    # the totals as expectations read them: every one held
    verdicts = pd.read_csv(run / results.EXPECT)
    assert verdicts.passed.all() and list(verdicts.expectation) == expect, verdicts[~verdicts.passed]
    meta = json.loads((run / results.METADATA).read_text())
    assert meta["expectations"]["passed"] == len(expect) and meta["expectations"]["failed"] == 0

    # from the run directory alone, again: the same census, the same verdicts
    before = {name: (run / name).read_bytes() for name in (results.OPTIONS, results.EXPECT)}
    r = analyze(run)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {name: (run / name).read_bytes() for name in before} == before


def test_analyze_exits_4_when_an_options_expectation_fails(tmp_path):
    """One expectation holds, one does not: exit 4, the failing one named with the value
    observed, both verdicts in expect.csv and metadata.json."""
    run = lay_out(tmp_path, DUAL, ["protocol=mptcp: options.MP_JOIN_SYN == 2",
                                   "protocol=mptcp: options.MP_JOIN_SYN >= 3"])
    r = analyze(run)
    assert r.returncode == 4, r.stderr[-3000:]
    text = " ".join(r.stderr.split())
    assert "PASS protocol=mptcp: options.MP_JOIN_SYN == 2 (1 test)" in text, text[-2000:]
    assert "FAIL protocol=mptcp: options.MP_JOIN_SYN >= 3 (1 of 1 test): 001-mptcp-r1 2" in text, text[-2000:]
    verdicts = pd.read_csv(run / results.EXPECT)
    assert list(verdicts.passed) == [True, False] and verdicts.observed[1] == "001-mptcp-r1 2"
    assert json.loads((run / results.METADATA).read_text())["expectations"] | {"verdicts": None} == {
        "passed": 1, "failed": 1, "verdicts": None}
    assert (run / results.OPTIONS).exists()  # the census stands whatever the verdicts


def test_options_census_figure_from_the_real_captures(tmp_path):
    """The options-census figure drawn from the census of the kept captures: each test's
    signalling options stacked (the TCP test has none), DSS beside them."""
    raw = tmp_path / "captured"
    shutil.copytree(PCAPS, raw / "raw")
    rows = [r for t in TOTALS for r in real_census(raw, t)]
    per = census_by_test(pd.DataFrame(rows))
    assert per.loc["001-mptcp-r1", ["MP_CAPABLE", "MP_JOIN", "ADD_ADDR", "DSS"]].tolist() == [8, 6, 4, 107]
    assert per.loc["002-tcp-r1"].sum() == 0
    assert per.loc["p001-003-mptcp-dependent-r1", ["MP_CAPABLE", "MP_JOIN", "ADD_ADDR", "DSS"]].tolist() == [
        8, 12, 8, 47]
    with RunDir.create("census", out=tmp_path / "run") as rd:
        (png,) = option_census(pd.DataFrame(rows), rd, ["png"])
    assert png == tmp_path / "run" / "figures" / "options-census.png"
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 1000

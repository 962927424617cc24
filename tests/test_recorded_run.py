"""A real run directory, recorded by the tool (tests/data/recorded-run: a 2 x 2 sweep of dual-path,
MPTCP and TCP, 2 s tests, made with `run-experiment` on this project's CI machine), read back
without root: rows rebuilt from its raw files, the summary, resume state, and every figure.

To record it again: the spec is its spec.yaml; run `sudo .venv/bin/run-experiment SPEC --out DIR`
and copy DIR here without figures/ and .lock.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from rich.console import Console

from helpers import REPO
from mptcplab import sweep
from mptcplab.console import show_summary
from mptcplab.errors import RunDirError
from mptcplab.figures import render
from mptcplab.plan import make_plan
from mptcplab.results import PointState, RunDir, read_rows
from mptcplab.rows import rows_for_test, varying_link_params
from mptcplab.spec import parse_spec

RECORDED = REPO / "tests/data/recorded-run"
FIGURES = {"goodput-vs-links-h1-s2-delay.png", "goodput-vs-links-loss.png", "mptcp-gain-heatmap.png",
           "goodput-cdf.png", "subflow-share.png", "subflow-goodput-time.png", "retransmits.png"}


@pytest.fixture
def run_copy(tmp_path: Path) -> Path:
    """The recorded run, copied: figures and locks are written into it."""
    dst = tmp_path / "run"
    shutil.copytree(RECORDED, dst)
    return dst


def _exp_and_points():
    rd = RunDir.open_existing(RECORDED)
    exp = parse_spec(rd.read_spec())
    return rd, exp, sweep.points(exp)


def _samples(path: Path) -> list[dict]:
    df = pd.read_csv(path, dtype={"token": str, "remote_token": str})
    return [{k: v for k, v in r.items() if not (isinstance(v, float) and math.isnan(v))}
            for r in df.to_dict("records")]


def test_rows_rebuilt_from_the_raw_files_are_the_summary():
    """rows.py turns iperf3's JSON, the kernel's counters and the ss samples into the summary and
    subflow rows: what it builds again from the raw files is what the run wrote."""
    rd, exp, pts = _exp_and_points()
    summary = pd.read_csv(RECORDED / "summary.csv")
    subflows = pd.read_csv(RECORDED / "subflows.csv")
    plans = {p.id: make_plan(sweep.apply(exp, p), rd.run_id) for p in pts}
    per_link = varying_link_params(list(plans.values()))
    checked = 0
    for p in pts:
        plan = plans[p.id]
        for test in plan.tests:
            label = f"{p.id}-{test.label}"
            raw = RECORDED / "raw"
            outcome = SimpleNamespace(client_json=json.loads((raw / f"{label}-client.json").read_text()),
                                      error=None, samples=_samples(raw / f"{label}-samples.csv"), started=0, ended=0)
            counters = json.loads((raw / f"{label}-counters.json").read_text())
            row, subs = rows_for_test(exp.name, plan, test, outcome, counters, per_link)
            got = summary[summary.test == label].iloc[0]
            for col in ("goodput_mbps", "bytes", "retransmits", "subflows", "expected_subflows", "subflows_ok",
                        "bw_mbps", "loss_pct", "links[1].delay_ms"):
                assert row[col] == pytest.approx(got[col]), (label, col, row[col], got[col])
            want = subflows[subflows.test == label]
            assert len(subs) == len(want) == (2 if test.protocol == "mptcp" else 0)
            assert sorted(s["bytes_acked"] for s in subs) == sorted(want["bytes_acked"])
            checked += 1
    assert checked == 8


def test_summary_reads_back_and_prints():
    rd, exp, pts = _exp_and_points()
    rows, subs = read_rows(rd, {p.id for p in pts})
    assert len(rows) == 8 and len(subs) == 8
    assert {r["protocol"] for r in rows} == {"mptcp", "tcp"}
    console = Console(record=True, width=100)
    show_summary(rows, rd.metadata["timings"], [], [], rd.path, console)
    text = console.export_text()
    assert "MPTCP/TCP goodput ratio" in text and "mptcp" in text


def test_resume_state_of_a_finished_run(run_copy):
    rd = RunDir.open_existing(run_copy, resume=True)
    exp = parse_spec(rd.read_spec())
    state = PointState.open(rd, sweep.points(exp))
    assert state.done_ids() == {"p001", "p002", "p003", "p004"}
    rd.close()


def test_resume_with_other_sweep_values_is_refused(run_copy):
    rd = RunDir.open_existing(run_copy, resume=True)
    exp = sweep.with_values(parse_spec(rd.read_spec()), {"sweep.parameters": {"links.*.loss": [0, 2]}}, "test")
    with pytest.raises(RunDirError) as e:
        PointState.open(rd, sweep.points(exp))
    assert "is not in the recorded run" in "\n".join(e.value.problems)
    rd.close()


def test_every_figure_from_the_recorded_results(run_copy):
    paths = render(run_copy, ["png"])
    assert {p.name for p in paths} == FIGURES
    for p in paths:
        assert p.stat().st_size > 5000, p

"""Two runs on one machine (root). A second run started while a first is measuring would share the
CPUs, the OVS datapath and perhaps the bridge names with it, and spoil both: it must be refused
at once -- exit 2, naming the run that holds the machine, creating nothing -- while the first
finishes with correct results. A second `--resume` of a run directory that a first resume is
working in is refused the same way (it would run the same points twice into the same files).
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import Run, dual_channel_spec, dual_path_spec, iperf3_clients, points_done, read_json, snapshot

pytestmark = pytest.mark.root

HOLDS = "holds this machine"


def _wait_for_traffic(run: Run, what: str) -> None:
    """Until an iperf3 client of this run is up: the network is built and measuring."""
    if not run.wait_until(lambda: bool(iperf3_clients(run.pid)), timeout=90, poll=0.05):
        run.finish(60)
        pytest.fail(f"{what} never reached traffic: rc {run.proc.returncode}\n{run.stderr[-3000:]}")


def _stop(*runs: Run) -> None:
    """A test that failed half-way still leaves the machine clean: SIGINT tears a run down."""
    for r in runs:
        if r.proc.poll() is None:
            r.proc.send_signal(signal.SIGINT)
    for r in runs:
        r.finish(120)


def _objects(s) -> dict[str, frozenset[str]]:
    """What a refused run could have created: bridges, interfaces, registry state files. (Not
    processes: the first run starts an iperf3 pair for every test.)"""
    return {"bridges": s.bridges, "links": s.links, "state files": s.states}


def _created_since(held: dict[str, frozenset[str]], who: str) -> list[str]:
    """What appeared since ``held`` was taken (a refused run must create nothing)."""
    after = _objects(snapshot())
    if after == held:
        return []
    return [f"{who} created: { {k: set(after[k] - held[k]) for k in after} }"]


def _refusal_problems(name: str, run: Run, rc: int, first_alive: bool, holder: list[str],
                      out: Path | None, took: float) -> list[str]:
    err = run.stderr
    problems = []
    if rc != 2:
        problems.append(f"{name}: exit {rc}, not 2")
    if not re.search(rf"{HOLDS}|busy", err):
        problems.append(f"{name}: stderr does not say the machine or run directory is held")
    if not any(h in err for h in holder):
        problems.append(f"{name}: stderr names none of {holder} (the holder)")
    if "Traceback" in err:
        problems.append(f"{name}: traceback")
    if not first_alive:
        problems.append(f"{name}: returned only after the holder had finished ({took:.1f} s): not at once")
    if out is not None and out.exists():
        problems.append(f"{name}: created {out}")
    return [f"{p}\n  stderr: {err[-1500:]}" for p in problems[:1]] + problems[1:]


def test_second_run_is_refused_while_a_first_holds_the_machine(tmp_path, no_leftovers):
    first_out = tmp_path / "first"
    first = Run("run-experiment", str(dual_path_spec(tmp_path, "first.yaml", duration=12)),
                "--out", str(first_out))
    seconds: list[Run] = []
    try:
        _wait_for_traffic(first, "the first run")
        run_id = read_json(first_out / "metadata.json")["run_id"]
        held = _objects(snapshot())
        # the same experiment (same bridge names), and one with no switch at all (nothing to clash)
        outs = {"same spec": tmp_path / "second-same", "switchless spec": tmp_path / "second-channel"}
        specs = {"same spec": dual_path_spec(tmp_path, "second.yaml", duration=2),
                 "switchless spec": dual_channel_spec(tmp_path)}
        t0 = time.monotonic()
        seconds = [Run("run-experiment", str(specs[n]), "--out", str(outs[n])) for n in outs]
        problems = []
        for name, run in zip(outs, seconds):
            rc = run.finish(120)
            problems += _refusal_problems(name, run, rc, first.proc.poll() is None, [run_id],
                                          outs[name], time.monotonic() - t0)
        problems += _created_since(held, "the refused runs")
        rc = first.finish(300)
    finally:
        _stop(first, *seconds)
    assert rc == 0, first.stderr[-3000:]
    df = pd.read_csv(first_out / "summary.csv")
    assert len(df) == 2 and df["error"].isna().all() and (df["goodput_mbps"] > 0).all(), df.to_string()
    assert read_json(first_out / "metadata.json")["status"] == "complete"
    assert not problems, "\n".join(problems)


def test_second_resume_of_a_run_dir_being_resumed_is_refused(tmp_path, no_leftovers):
    out = tmp_path / "run"
    spec = dual_path_spec(tmp_path, duration=6, protocols=["mptcp"],
                          sweep={"links.h1-s2.delay": [5, 10, 15]})
    first = Run("run-experiment", str(spec), "--out", str(out))
    resumes: list[Run] = []
    try:
        # an interrupted run with one point done and two to go
        if not first.wait_until(lambda: len(points_done(out)) >= 1, timeout=120, poll=0.05):
            pytest.fail(f"no point finished: rc {first.proc.returncode}\n{first.stderr[-3000:]}")
        first.proc.send_signal(signal.SIGINT)
        assert first.finish(120) == 130, first.stderr[-3000:]
        run_id = read_json(out / "metadata.json")["run_id"]
        a = Run("run-experiment", str(spec), "--resume", str(out))
        resumes.append(a)
        _wait_for_traffic(a, "the first resume")
        held = _objects(snapshot())
        t0 = time.monotonic()
        b = Run("run-experiment", str(spec), "--resume", str(out))
        resumes.append(b)
        rc_b = b.finish(120)
        problems = _refusal_problems("second resume", b, rc_b, a.proc.poll() is None,
                                     [run_id, f"pid {a.pid}"], None, time.monotonic() - t0)
        problems += _created_since(held, "the refused resume")
        rc_a = a.finish(300)
    finally:
        _stop(first, *resumes)
    assert rc_a == 0, a.stderr[-3000:]
    df = pd.read_csv(out / "summary.csv")
    assert sorted(df["point"]) == ["p001", "p002", "p003"] and df["error"].isna().all(), df.to_string()
    assert points_done(out) == {"p001", "p002", "p003"}
    meta = read_json(out / "metadata.json")
    # the refused resume left the run's record alone: one resume recorded, the first's
    assert meta["status"] == "complete" and len(meta["resumed"]) == 1, meta.get("resumed")
    assert not problems, "\n".join(problems)

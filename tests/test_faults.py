"""Fault injection (root): a sweep killed with SIGKILL again and again -- in set-up, in the
self-check, while traffic flows, while results are written, at a random moment -- each time
cleaned with `mptcplab clean` and resumed with `run-experiment --resume`, must end with exactly
the results of an uninterrupted run: every point once, none lost, none repeated, and nothing left
on the machine.

The kill moments come from a seeded random.Random (MPTCPLAB_FAULT_SEED overrides the seed, to
explore other schedules); the figures (kills, points lost, points duplicated, leftovers) are
printed and written to faults.json in the test's tmp dir (and to $MPTCPLAB_FAULTS_JSON if set).
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from helpers import Run, cli, dual_path_spec, iperf3_clients, leftovers, points_done, read_json, snapshot

pytestmark = pytest.mark.root

SEED = int(os.environ.get("MPTCPLAB_FAULT_SEED", "20261127"))
PARAM = "links.h1-s2.delay"
DELAYS = [5, 10, 15, 20, 25, 30, 35, 40]  # 8 points, p001..p008 in this order
EXPECTED = {f"p{i + 1:03d}": v for i, v in enumerate(DELAYS)}
#: Where each kill is aimed, in an order the seed draws. "random" is a plain delay after the run
#: has started. The last kill always lands while the figures are drawn, every point done.
TARGETS = ["set-up", "self-check", "traffic", "writing raw results", "writing summary", "random"]
LAST = "writing figures"
STARTED = r"\d+\s+to\s+run"  # end of the run's first line (wrapped at 80 columns): the run dir,
#                              its metadata and points.json exist
SELF_CHECK = r"^self-check \(\w+\) of"


def _mtimes(paths: list[Path], since: float) -> set[tuple[str, int]]:
    out = set()
    for p in paths:
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        if st.st_mtime >= since:
            out.add((p.name, st.st_mtime_ns))
    return out


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _replaced(run: Run, path: Path, k: int, timeout: float) -> bool:
    """Spin (no sleep: the moment lasts a millisecond or two) until path has been written k
    times; an atomic write renames a new inode into place."""
    deadline = time.monotonic() + timeout
    last, n = _inode(path), 0
    while n < k:
        now = _inode(path)
        if now != last:
            last, n = now, n + 1
        elif run.proc.poll() is not None or time.monotonic() > deadline:
            return False
    return True


def _kill_at(run: Run, out: Path, target: str, k: int, rng: random.Random, since: float) -> dict[str, Any]:
    """Wait for the k-th occurrence of the target moment in this attempt and a random delay, then
    SIGKILL the runner at once. Says what was seen; `reached` False means the run ended first."""
    reached, delay = _wait_for(run, out, target, k, rng, since)
    seen: dict[str, Any] = {"reached": reached, "delay_s": round(delay, 3)}
    if reached and not target.startswith("writing"):  # walking /proc takes ~20 ms: not there
        seen["iperf3_running"] = bool(iperf3_clients(run.pid))
    if reached and run.proc.poll() is None:
        run.proc.kill()
    seen["at_s"] = round(time.monotonic() - run.started, 2)
    seen["last_line"] = run.lines[-1][1] if run.lines else ""
    return seen


def _wait_for(run: Run, out: Path, target: str, k: int, rng: random.Random, since: float) -> tuple[bool, float]:
    """(reached, delay slept): the moment came and the delay passed with the run still alive."""
    if not run.wait_until(lambda: re.search(STARTED, run.stderr) is not None, timeout=120):
        return False, 0.0
    if target == "set-up":
        delay = rng.uniform(0.0, 0.5)
    elif target == "random":
        delay = rng.uniform(0.0, 2.5 * k)
    elif target == "self-check":
        if not run.wait_line(SELF_CHECK, n=k, timeout=120):
            return False, 0.0
        delay = rng.uniform(0.0, 0.2)
    elif target == "traffic":
        seen: set[int] = set()

        def kth_client() -> bool:
            seen.update(iperf3_clients(run.pid))
            return len(seen) >= k

        if not run.wait_until(kth_client, timeout=120, poll=0.01):
            return False, 0.0
        delay = rng.uniform(0.0, 0.8)
    elif target == "writing raw results":
        # a test's raw client file is written once its traffic is over, just before the rows
        if not run.wait_until(lambda: len(_mtimes(list((out / "raw").glob("*-client.json")), since)) >= k,
                              timeout=120, poll=0):
            return False, 0.0
        delay = rng.uniform(0.0, 0.01)
    elif target == "writing summary":
        # the instant summary.csv is replaced: the point's rows are there, is the point done?
        if not _replaced(run, out / "summary.csv", k, timeout=120):
            return False, 0.0
        delay = 0.0
    elif target == LAST:
        if not run.wait_until(lambda: len(points_done(out)) == len(DELAYS), timeout=120, poll=0.01):
            return False, 0.0
        delay = rng.uniform(0.0, 1.5)
    else:
        raise AssertionError(target)
    time.sleep(delay)
    return run.proc.poll() is None, delay


def _summary(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "summary.csv") if (out / "summary.csv").exists() else pd.DataFrame()


def _started_of_done(out: Path) -> dict[str, list[Any]]:
    """The `started` stamps of the rows of every point points.json calls done: a point run again
    gets new ones."""
    df, done = _summary(out), points_done(out)
    if df.empty:
        return {pid: [] for pid in done}
    return {pid: sorted(df[df["point"] == pid]["started"].tolist()) for pid in done}


def test_sweep_killed_again_and_again_ends_with_every_point_once(tmp_path, no_leftovers):
    before = no_leftovers
    rng = random.Random(SEED)
    t0 = time.monotonic()
    spec = dual_path_spec(tmp_path, duration=1, protocols=["mptcp"], sweep={PARAM: DELAYS})
    out = tmp_path / "run"
    order = rng.sample(TARGETS, len(TARGETS)) + [LAST]
    kills: list[dict[str, Any]] = []
    kept: dict[str, list[Any]] = {}  # point -> started stamps, as first seen done after a kill
    figures: dict[str, Any] = {"seed": SEED, "points": len(DELAYS), "kill_log": kills}
    run = Run("run-experiment", str(spec), "--out", str(out))
    final_rc: int | None = None
    try:
        for i, target in enumerate(order):
            remaining = len(DELAYS) - len(points_done(out))
            # k-th point of this attempt; at least one point is left for each later kill
            k = rng.randint(1, max(1, min(3, remaining - (len(order) - i - 1))))
            since = time.time()
            entry: dict[str, Any] = {"target": target, "k": None if target in ("set-up", LAST) else k,
                                     "done_before": len(DELAYS) - remaining}
            entry.update(_kill_at(run, out, target, k, rng, since))
            if not entry.pop("reached") or run.proc.wait(timeout=60) >= 0:  # ended by itself
                entry["ended_by_itself"] = run.finish()
                entry["stderr_tail"] = run.stderr[-1500:]
                kills.append(entry)
                break
            run.kill()
            done = points_done(out)
            df = _summary(out)
            entry["done_after"] = len(done)
            entry["rows_of_unfinished_points"] = 0 if df.empty else int((~df["point"].isin(done)).sum())
            entry["left_after_kill"] = sorted(leftovers(before, snapshot()))
            for pid, started in _started_of_done(out).items():
                kept.setdefault(pid, started)
            c = cli("mptcplab", "clean", timeout=120)
            entry["clean_rc"] = c.returncode
            entry["clean_out"] = c.stdout.strip() + (" | " + c.stderr.strip() if c.returncode else "")
            entry["left_after_clean"] = {k_: sorted(v) for k_, v in leftovers(before, snapshot()).items()}
            kills.append(entry)
            run = Run("run-experiment", str(spec), "--resume", str(out))
        final_rc = run.finish()
        final_err = run.stderr
    finally:
        if run.proc.poll() is None:
            run.kill()
    figures["left_at_end"] = {k_: sorted(v) for k_, v in leftovers(before, snapshot()).items()}
    if figures["left_at_end"]:
        cli("mptcplab", "clean", timeout=120)  # do not leave the machine dirty for the next test

    df = _summary(out)
    pts = read_json(out / "points.json", [])
    meta = read_json(out / "metadata.json", {})
    got = df.groupby("point").size().to_dict() if not df.empty else {}
    rerun = sorted(pid for pid, started in kept.items()
                   if df.empty or sorted(df[df["point"] == pid]["started"].tolist()) != started)
    figures.update(
        kills=sum(1 for e in kills if "ended_by_itself" not in e),
        final_rc=final_rc,
        points_missing=sorted(set(EXPECTED) - set(got)),
        points_unexpected=sorted(set(got) - set(EXPECTED)),
        points_duplicated=sorted(pid for pid, n in got.items() if n > 1),
        points_rerun_after_done=rerun,
        points_not_done=sorted(p["id"] for p in pts if p["status"] != "done"),
        clean_failures=sum(1 for e in kills if e.get("clean_rc") not in (None, 0)),
        left_after_some_clean=[e["left_after_clean"] for e in kills if e.get("left_after_clean")],
        seconds=round(time.monotonic() - t0, 1),
    )
    figures["points_lost"] = sorted(set(figures["points_missing"]) | set(rerun))
    text = json.dumps(figures, indent=1, default=str)
    (tmp_path / "faults.json").write_text(text)
    if os.environ.get("MPTCPLAB_FAULTS_JSON"):
        Path(os.environ["MPTCPLAB_FAULTS_JSON"]).write_text(text)
    print(f"fault injection figures ({tmp_path / 'faults.json'}):\n{text}")
    msg = f"figures: {text}\nlast attempt's stderr:\n{final_err[-3000:] if final_rc is not None else ''}"

    assert figures["kills"] >= 5, msg
    assert final_rc == 0, msg
    assert figures["clean_failures"] == 0 and not figures["left_after_some_clean"], msg
    assert not figures["left_at_end"], msg
    # exactly the points of an uninterrupted run: the spec's product, each point once, each
    # with its own value, no (point, test) row twice, none with an error
    assert not figures["points_missing"] and not figures["points_unexpected"], msg
    assert not figures["points_duplicated"] and not df.duplicated(["point", "test"]).any(), msg
    assert {r["point"]: r[PARAM] for _, r in df.iterrows()} == EXPECTED, msg
    assert df["error"].isna().all(), msg
    # a point completed before a kill is kept as it was, not measured again
    assert not rerun, msg
    assert [(p["id"], p["values"][PARAM], p["status"]) for p in pts] == \
        [(pid, v, "done") for pid, v in EXPECTED.items()], msg
    assert meta.get("status") == "complete" and len(meta.get("resumed", [])) == figures["kills"], msg
    # the per-subflow table has no row twice either, and every row's raw files are whole
    subs = pd.read_csv(out / "subflows.csv")
    assert not subs.duplicated(["point", "test", "local", "remote"]).any(), msg
    assert set(subs["test"]) <= set(df["test"]), msg
    for test in df["test"]:
        assert "end" in read_json(out / "raw" / f"{test}-client.json", {}), (test, msg)
    # the kills really spread over the run: some hit while traffic flowed, some after a point
    # was complete (a kill that finds nothing to resume proves nothing)
    assert any(e.get("iperf3_running") for e in kills), msg
    assert any(e["done_before"] > 0 for e in kills), msg

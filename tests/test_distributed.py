"""Distributed sweeps (mptcplab.distributed) on a LocalCluster of 2 workers, without networks:
a fake point runner (dask_fake.py) stands in for the network, so these run unprivileged. The
network case is tests/test_distributed_e2e.py (root)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("distributed")

from helpers import write_spec  # noqa: E402
from mptcplab import capabilities, distributed as dist, results  # noqa: E402
from mptcplab.lock import MachineLock, NetSlot, slot_prefix  # noqa: E402
from mptcplab.errors import BusyError, PlanError, PreflightError, SpecError  # noqa: E402
from mptcplab.plan import isolate  # noqa: E402
from mptcplab.runner import RunOptions, load, open_run, plan_points  # noqa: E402
from rich.console import Console  # noqa: E402

FAKE = "dask_fake:fake_point"


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("MPTCPLAB_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("MPTCPLAB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent),
                                                      str(Path(dist.__file__).parents[1])]))
    return tmp_path


def sweep_spec(tmp_path: Path, n: int = 6, pin: dict[str, str] | None = None) -> Path:
    def mutate(spec):
        spec["sweep"] = {"parameters": {"links[0].bw": list(range(1, n + 1))}, "pin": pin or {}}
    return write_spec(tmp_path, "dual-path", traffic={"duration": 1, "repetitions": 1}, mutate=mutate)


def run_fake(tmp_path: Path, workers: int = 2, resume: Path | None = None, kill_one: bool = False,
             retries: int = 2, runner: str = FAKE, spec: Path | None = None, kill_after_s: float = 0.5,
             hosts: bool = False):
    """A distributed run in this process (``runner``: the fake by default, or
    mptcplab.distributed's network point); ``kill_one`` SIGKILLs the worker of the first point
    to start ``kill_after_s`` after it started; ``hosts`` names the workers' machines node0,
    node1... (in address order) for sweep.pin, as if each ran on a host of its own."""
    opts = RunOptions(spec=None if resume else (spec or sweep_spec(tmp_path)), out=None if resume else tmp_path / "run",
                      resume=resume, local_workers=workers, retries=retries)
    console = Console(stderr=True, width=150)
    source = load(opts)
    points = plan_points(source.exp, source.run_id)
    with dist.connect(opts, console) as client:
        if kill_one:  # SIGKILL a worker while it runs its first point
            killer = threading.Thread(target=kill_busy_worker, args=(client, kill_after_s), daemon=True)
            killer.start()
        with open_run(source, points, capabilities.probe(), opts, prepare=False) as active:
            active.meta["distributed"] = {"points": {}}
            names = ({a: f"node{k}" for k, a in enumerate(sorted(client.scheduler_info()["workers"]))}
                     if hosts else None)
            dist.run_points(active, points, client, opts, console, runner=runner, hosts=names)
    if source.resume:
        source.resume.close()
    return active


def kill_busy_worker(client, after_s: float = 0.5) -> None:
    procs = client.run(os.getpid)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        started = client.get_events(dist.EVENTS)
        if started:
            time.sleep(after_s)  # mid-point
            os.kill(procs[started[0][1]["worker"]], signal.SIGKILL)
            return
        time.sleep(0.1)


def test_six_points_on_two_workers_each_once(env, monkeypatch):
    monkeypatch.setenv("MPTCPLAB_FAKE_SLEEP", "0.8")
    t0 = time.monotonic()
    active = run_fake(env)
    out = env / "run"
    df = pd.read_csv(out / results.SUMMARY)
    assert sorted(set(df["point"])) == [f"p00{i}" for i in range(1, 7)]
    assert not df.duplicated(["point", "test"]).any() and df.groupby("point").size().nunique() == 1  # each once
    pts = json.loads((out / results.POINTS).read_text())
    assert [p["status"] for p in pts] == ["done"] * 6
    meta = json.loads((out / results.METADATA).read_text())
    where = meta["distributed"]["points"]
    assert sorted(where) == [f"p00{i}" for i in range(1, 7)]
    assert {w["attempts"] for w in where.values()} == {1}
    assert len({w["worker"] for w in where.values()}) == 2  # both workers ran points
    assert all(w["host"] for w in where.values())
    assert {w["slot"] for w in where.values()} == {0, 1}  # two slots: names of their own
    for p in range(1, 7):
        assert (out / "raw" / f"p00{p}-fake-client.json").exists()
    # two at a time: points overlapped, never more than two
    assert len(active.rows) == len(df) and time.monotonic() - t0 < 6 * 0.8 + 30


def test_a_killed_worker_gets_its_point_retried(env, monkeypatch):
    monkeypatch.setenv("MPTCPLAB_FAKE_SLEEP", "3")
    run_fake(env, kill_one=True)
    out = env / "run"
    df = pd.read_csv(out / results.SUMMARY)
    assert sorted(set(df["point"])) == [f"p00{i}" for i in range(1, 7)] and not df.duplicated(["point", "test"]).any()
    meta = json.loads((out / results.METADATA).read_text())
    tries = {p: w["attempts"] for p, w in meta["distributed"]["points"].items()}
    assert max(tries.values()) == 2 and sum(tries.values()) == 7, tries
    # the killed worker's slot record was taken over (or swept at the end): no slot lists a network
    slots = sorted((env / "locks").glob("slot-*.lock"))
    assert slots and all(json.loads(p.read_text())["netids"] == [] for p in slots)


def test_resume_runs_only_what_is_not_done(env, monkeypatch):
    monkeypatch.setenv("MPTCPLAB_FAKE_SLEEP", "0.2")
    run_fake(env)
    out = env / "run"
    pts = json.loads((out / results.POINTS).read_text())
    for p in pts[3:]:
        p["status"] = "pending"
    (out / results.POINTS).write_text(json.dumps(pts))
    before = pd.read_csv(out / results.SUMMARY)
    active = run_fake(env, resume=out)
    after = pd.read_csv(out / results.SUMMARY)
    assert sorted(after["test"]) == sorted(before["test"])
    kept = before[before.point.isin(["p001", "p002", "p003"])].sort_values("point")["started"].tolist()
    assert after[after.point.isin(["p001", "p002", "p003"])].sort_values("point")["started"].tolist() == kept
    assert len(active.rows) == len(before)


def test_slots_share_the_machine_but_exclude_a_local_run(env):
    with NetSlot().acquire("20260101-000000-abcd") as a, NetSlot().acquire("20260101-000000-abcd") as b:
        assert (a.slot, b.slot) == (0, 1) and (a.prefix, b.prefix) == ("mw00s", "mw01s")
        with pytest.raises(BusyError, match="slot 00"):
            MachineLock().acquire("20260101-000000-abce")
        a.record("20260101-000001-0001")
    with MachineLock().acquire("20260101-000000-abce"):  # free again
        with pytest.raises(BusyError):
            NetSlot().acquire("20260101-000000-abcd")
    again = NetSlot().acquire("20260101-000000-abcd")
    try:  # the slot's last holder's networks are handed to the next
        assert again.slot == 0 and again.previous == ["20260101-000001-0001"]
    finally:
        again.release()


def test_isolated_plan_names(tmp_path):
    source = load(RunOptions(spec=sweep_spec(tmp_path, 1)))
    pp = plan_points(source.exp, source.run_id)[0]
    plan, names = isolate(pp.plan, slot_prefix(7), "20260101-000000-abcd")
    assert set(names.values()) == {f"mw07s{k}" for k in range(len(pp.plan.switches))}
    for link, old in zip(plan.links, pp.plan.links):
        assert link.name == old.name
        for i in (link.intf1, link.intf2):
            assert len(i.name) <= 15
            assert i.name.startswith("mw07s") or i.node in {h.name for h in plan.hosts}
    assert plan.hosts == pp.plan.hosts and plan.tests == pp.plan.tests
    assert {s.dpid for s in plan.switches}.isdisjoint({s.dpid for s in pp.plan.switches})
    with pytest.raises(ValueError):
        slot_prefix(100)
    with pytest.raises(PlanError):
        isolate(pp.plan, "s", "20260101-000000-abcd")


def test_slots_a_dead_worker_left_are_reclaimed_at_the_end(env):
    """A slot whose holder died with a network recorded, and which no later point took: the
    end-of-run sweep on each worker takes it and removes what is recorded (here: a network whose
    state file is already gone), leaving held slots alone."""
    run_id = "20260101-000000-abcd"
    dead = NetSlot().acquire(run_id)
    dead.record("20260101-000001-0001")
    dead.release()  # as the kernel drops a killed worker's flock: the record stays
    with NetSlot().acquire(run_id) as busy:
        assert busy.slot == 0 and busy.previous == ["20260101-000001-0001"]
        busy.record("20260101-000002-0002")
        assert dist.reclaim_slots(run_id) == []  # slot 0 held: left alone
        with NetSlot().acquire(run_id, slots=[1]) as other:
            assert other.slot == 1
    assert dist.reclaim_slots(run_id) == []
    with NetSlot().acquire(run_id) as again:
        assert again.slot == 0 and again.previous == []
    # another run's dead worker: neither cleaned nor relabelled as this run's
    other_run = "20260101-000000-ffff"
    theirs = NetSlot().acquire(other_run)
    theirs.record("20260101-000003-0003")
    theirs.release()
    snapshot = {p.name: p.read_text() for p in sorted((env / "locks").glob("slot-*.lock"))}
    assert dist.reclaim_slots(run_id) == []
    assert {p.name: p.read_text() for p in sorted((env / "locks").glob("slot-*.lock"))} == snapshot
    assert any("20260101-000003-0003" in t and other_run in t for t in snapshot.values()), snapshot


def test_pinned_points_run_on_their_host_and_a_pin_to_no_host_is_refused(env, monkeypatch):
    """sweep.pin sends p001..p003 to node0's worker (the others go wherever a worker is free),
    recorded as pinned; a pin naming a host without a worker is refused before any point runs,
    and one naming no point of the sweep at plan time."""
    monkeypatch.setenv("MPTCPLAB_FAKE_SLEEP", "0.3")
    spec = sweep_spec(env, pin={"p001": "node0", "p002": "node0", "p003": "node0"})
    run_fake(env, spec=spec, hosts=True)
    where = json.loads((env / "run" / results.METADATA).read_text())["distributed"]["points"]
    first = where["p001"]["worker"]
    assert {where[p]["worker"] for p in ("p001", "p002", "p003")} == {first}
    assert [where[p]["pinned"] for p in sorted(where)] == ["node0"] * 3 + [None] * 3
    with pytest.raises(PreflightError, match=r"sweep.pin.p001: node7 runs no worker of this cluster \(hosts: a, b\)"):
        dist.pin_workers({"p001": "node7"}, {"tcp://1": "a", "tcp://2": "b"})
    assert dist.pin_workers({"p002": "b"}, {"tcp://1": "a", "tcp://2": "b", "tcp://3": "b"}) == {
        "p002": ["tcp://2", "tcp://3"]}
    # a pinned point whose workers are gone: their successors on the same machine, else anywhere
    assert dist.repin(["tcp://10.0.0.2:4000"], {"tcp://10.0.0.2:4100", "tcp://10.0.0.3:4000"}) == [
        "tcp://10.0.0.2:4100"]
    assert dist.repin(["tcp://10.0.0.2:4000"], {"tcp://10.0.0.3:4000"}) is None
    with pytest.raises(SpecError, match=r"sweep.pin.p009: no such point \(this sweep has 6: p001..p006"):
        plan_points(load(RunOptions(spec=sweep_spec(env, pin={"p009": "a"}), out=None)).exp, "20260101-000000-abcd")

"""Distributed sweeps on real networks (root): two workers on this machine, each building its
own network (switch names of its own) at the same time; the results are a local run's."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers import cli, write_spec

pytest.importorskip("distributed")
pytestmark = pytest.mark.root


def sweep_spec(tmp_path: Path) -> Path:
    def mutate(spec):
        spec["sweep"] = {"parameters": {"links[0].bw": [5, 10, 20]}}
    return write_spec(tmp_path, "dual-path", traffic={"duration": 2, "repetitions": 1}, mutate=mutate)


def test_two_local_workers_match_a_local_run_and_resume_locally(tmp_path, no_leftovers):
    spec = sweep_spec(tmp_path)
    dist, local = tmp_path / "dist", tmp_path / "local"
    r = cli("run-experiment", str(spec), "--out", str(dist), "--local-workers", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    r = cli("run-experiment", str(spec), "--out", str(local))
    assert r.returncode == 0, r.stderr[-3000:]
    d, l = pd.read_csv(dist / "summary.csv"), pd.read_csv(local / "summary.csv")
    assert list(d.columns) == list(l.columns)  # identical columns
    assert sorted(d["test"]) == sorted(l["test"]) and not d.duplicated(["test"]).any()  # each point once
    assert (d["subflows"] == d["expected_subflows"]).all() and d["error"].isna().all()
    for table in ("subflows.csv", "mptcp-mib.csv"):
        assert set(pd.read_csv(dist / table).columns) == set(pd.read_csv(local / table).columns), table
    assert sorted(p.name for p in (dist / "raw").iterdir()) == sorted(p.name for p in (local / "raw").iterdir())
    meta = json.loads((dist / "metadata.json").read_text())
    where = meta["distributed"]["points"]
    assert sorted(where) == ["p001", "p002", "p003"] and all(w["host"] and w["worker"] for w in where.values())
    assert all(set(w["switches"].values()) <= {f"mw{w['slot']:02d}s0", f"mw{w['slot']:02d}s1"} for w in where.values())
    assert sorted(meta["self_checks"]) == ["p001", "p002", "p003"] and meta["status"] == "complete"
    # A distributed run cut short (its last point pending) is finished by a local --resume.
    pts = json.loads((dist / "points.json").read_text())
    pts[2]["status"] = "pending"
    (dist / "points.json").write_text(json.dumps(pts))
    before = d[d.point != "p003"].sort_values("test")
    r = cli("run-experiment", "--resume", str(dist))
    assert r.returncode == 0, r.stderr[-3000:]
    after = pd.read_csv(dist / "summary.csv")
    assert sorted(after["test"]) == sorted(l["test"])
    assert after[after.point != "p003"].sort_values("test")["started"].tolist() == before["started"].tolist()

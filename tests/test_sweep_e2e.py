"""Sweeps on real networks (root): in place between points, resume after SIGKILL without losing
or repeating a completed point, a failed point recorded while the sweep goes on."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import BIN, REPO, cli, write_spec

pytestmark = pytest.mark.root


def channel_spec(tmp_path: Path, bws, duration=2, **extra) -> Path:
    def mutate(spec):
        spec["sweep"] = {"parameters": {"links[1].bw": list(bws)}}
        spec.update(extra)

    return write_spec(tmp_path, "dual-channel-max", traffic={"duration": duration, "repetitions": 1},
                      mutate=mutate, name="sweep.yaml")


def test_sweep_changes_links_in_place(tmp_path, no_leftovers):
    out = tmp_path / "run"
    r = cli("run-experiment", str(channel_spec(tmp_path, [2, 10, 40], duration=4)), "--out", str(out))
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out / "summary.csv")
    assert list(df["point"]) == ["p001", "p002", "p003"] and list(df["links[1].bw"]) == [2, 10, 40]
    assert (df["subflows"] == 2).all()
    g = list(df["goodput_mbps"])
    # channel 1 is 10 Mbit/s: MPTCP carries about 10 + the second channel's rate (less the
    # ramp-up of a 4 s test), and more as the second channel grows
    for got, second in zip(g, (2, 10, 40)):
        assert 0.8 * (10 + second) * 1448 / 1514 <= got <= (10 + second), (got, second)
    assert g[0] < g[1] < g[2]
    meta = json.loads((out / "metadata.json").read_text())
    # one network for the whole sweep, its links changed in place (reconfigure_s); each point's
    # link statistics are its own: the rate it set, the bytes sent while it ran
    stats = meta["link_stats"]
    assert list(stats) == ["p001", "p002", "p003"]
    second = [list(stats[p].values())[1] for p in ("p001", "p002", "p003")]
    assert [d["a2b"]["rate"] for d in second] == [2e6, 10e6, 40e6], second
    sent = [max(d["a2b"]["tx_bytes"], d["b2a"]["tx_bytes"]) for d in second]
    assert sent[0] < sent[1] < sent[2], sent
    assert meta["timings"]["reconfigure_s"] > 0
    assert sorted(meta["self_checks"]) == ["p001", "p002", "p003"]  # checked again after each change
    assert all(c["ok"] for c in meta["self_checks"].values())
    for f in ("goodput-vs-links-1-bw.pdf", "subflow-share.png", "subflow-goodput-time.pdf", "goodput-cdf.png"):
        assert (out / "figures" / f).exists(), f


def test_resume_after_sigkill_loses_and_repeats_nothing(tmp_path, no_leftovers):
    out = tmp_path / "run"
    spec = channel_spec(tmp_path, [2, 4, 6, 8, 10])
    p = subprocess.Popen([str(BIN / "run-experiment"), str(spec), "--out", str(out)], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pts = json.loads((out / "points.json").read_text()) if (out / "points.json").exists() else []
        if sum(x["status"] == "done" for x in pts) >= 2:
            break
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = pd.read_csv(out / "summary.csv")
    done = [x["id"] for x in json.loads((out / "points.json").read_text()) if x["status"] == "done"]
    assert len(done) >= 2 and set(before["point"]) >= set(done)
    assert cli("mptcplab", "clean").returncode == 0
    r = cli("run-experiment", str(spec), "--resume", str(out))
    assert r.returncode == 0, r.stderr
    after = pd.read_csv(out / "summary.csv")
    assert sorted(after["point"]) == ["p001", "p002", "p003", "p004", "p005"]  # each exactly once
    for pid in done:  # completed points were kept, not run again
        assert before[before.point == pid]["started"].tolist() == after[after.point == pid]["started"].tolist()
    assert all(x["status"] == "done" for x in json.loads((out / "points.json").read_text()))
    assert json.loads((out / "metadata.json").read_text())["resumed"]


def test_failed_point_is_recorded_and_the_sweep_goes_on(tmp_path, no_leftovers):
    out = tmp_path / "run"
    spec = channel_spec(tmp_path, [5, 5000, 8])  # 5 Gbit/s is more than the user-space path carries
    r = cli("run-experiment", str(spec), "--out", str(out), "--shaper", "userspace", "--check", "full")
    assert r.returncode == 1, r.stderr
    pts = {x["id"]: x for x in json.loads((out / "points.json").read_text())}
    assert pts["p001"]["status"] == "done" and pts["p003"]["status"] == "done"
    assert pts["p002"]["status"] == "failed" and "self-check" in pts["p002"]["error"]
    df = pd.read_csv(out / "summary.csv")
    assert sorted(df["point"]) == ["p001", "p003"]
    meta = json.loads((out / "metadata.json").read_text())
    assert "1 of 3 point(s) failed" in meta["status"] and len(meta["failed_points"]) == 1
    assert "failed point" in r.stderr

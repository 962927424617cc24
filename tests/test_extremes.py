"""Valid but extreme input runs correctly (root, real networks): long delays, heavy loss, jitter
larger than the delay, and a transfer longer than the old fixed 75 s limit. Each of these failed
half-way before: a fixed 1 s ping wait, a self-check that needed 5 of 10 pings, a model that did
not know the emulator clamps jitter at zero, a test abandoned after 75 s."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from helpers import cli, write_spec


def run(tmp_path, links: dict, traffic: dict, link_names=None):
    def mutate(spec):
        spec["traffic"]["protocols"] = ["tcp"]
        spec["emulation"] = {"check": "rtt"}
        spec["outputs"]["formats"] = ["png"]
        for link in spec["topology"]["links"]:
            if link_names is None or f"{link['endpoints'][0]}-{link['endpoints'][1]}" in link_names:
                link.update(links)

    spec = write_spec(tmp_path, inline_topology=True, traffic={"repetitions": 1, **traffic}, mutate=mutate)
    out = tmp_path / "run"
    r = cli("run-experiment", str(spec), "--out", str(out), timeout=900)
    check = json.loads((out / "selfcheck.json").read_text()) if (out / "selfcheck.json").exists() else None
    return r, out, check


@pytest.mark.root
def test_long_delay(tmp_path, no_leftovers):
    """1 s one way on every link: a 4 s RTT on every route."""
    r, out, check = run(tmp_path, {"delay": 1000}, {"duration": 3})
    assert r.returncode == 0, r.stderr[-3000:]
    assert check["ok"] and [round(p["measured_rtt_ms"] / 1000) for p in check["paths"]] == [4, 4], check
    df = pd.read_csv(out / "summary.csv")
    assert df["error"].isna().all() and df["goodput_mbps"].gt(0).all()


@pytest.mark.root
def test_heavy_loss_on_a_route(tmp_path, no_leftovers):
    """30% loss on both links of the second route: 76% of round trips lost. The self-check sends
    pings enough to measure that route (not 10, of which it needed 5), and TCP runs on the first."""
    r, out, check = run(tmp_path, {"loss": 30}, {"duration": 2}, link_names={"h1-s2", "s2-h2"})
    assert r.returncode == 0, r.stderr[-3000:]
    lossy = check["paths"][1]
    assert check["ok"] and lossy["pings_sent"] >= 50 and lossy["pings_answered"] >= 5, lossy
    assert 0.55 < 1 - lossy["pings_answered"] / lossy["pings_sent"] < 0.95, lossy


@pytest.mark.root
def test_jitter_larger_than_the_delay(tmp_path, no_leftovers):
    """2 ms +- 10 ms: the emulator never sends a frame before it arrived, so the mean delay is
    3.6 ms per crossing, not 2; the self-check expects what the emulator does."""
    r, out, check = run(tmp_path, {"delay": 2, "jitter": 10}, {"duration": 2})
    assert r.returncode == 0, r.stderr[-3000:]
    for p in check["paths"]:
        assert p["expected_rtt_ms"] > 4 * 3.6 and p["rtt_ok"], p


@pytest.mark.root
def test_transfer_longer_than_75_seconds(tmp_path, no_leftovers):
    """48 MB over 5 Mbit/s paths: about 80 s of TCP (the old limit was (duration or 60) + 15 s)."""
    r, out, check = run(tmp_path, {}, {"bytes": 48_000_000, "duration": None})
    assert r.returncode == 0, r.stderr[-3000:]
    df = pd.read_csv(out / "summary.csv")
    assert df["error"].isna().all() and (df["duration_s"] > 75).all(), df[["duration_s", "error"]]
    sent = json.loads((out / "raw" / f"{df['test'][0]}-client.json").read_text())["end"]["sum_sent"]["bytes"]
    assert sent >= 48_000_000 and df["bytes"][0] >= 0.99 * sent  # what was still in flight at the end

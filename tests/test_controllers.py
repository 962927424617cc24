"""Path placement on a real meshed Mininet network (root): flow counters on every switch prove
each subflow took its assigned path. `static` always; real POX when POX_HOME points at a checkout
(skipped, saying so, otherwise)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers import BIN, REPO, cli

pytestmark = pytest.mark.root

POX_HOME = os.environ.get("POX_HOME")
needs_pox = pytest.mark.skipif(not (POX_HOME and Path(POX_HOME, "pox.py").exists()),
                               reason="POX_HOME does not point at a POX checkout (git clone -b halosaur "
                                      "https://github.com/noxrepo/pox); static covers the same rules")
PATHS = {0: {"s1", "s2", "s4"}, 1: {"s1", "s3", "s4"}, 2: {"s1", "s2", "s3", "s4"}}
FWD = 0x100


def three_path_spec(tmp_path: Path, kind: str, variants=("mptcp-dependent",), duration=3) -> Path:
    spec = yaml.safe_load((REPO / "experiments/three-path.yaml").read_text())
    spec["topology"] = str(REPO / "topologies/three-path.yaml")
    spec["controller"]["kind"] = kind
    spec["variants"] = [v for v in spec["variants"] if v["name"] in variants]
    spec["traffic"].update(duration=duration, repetitions=1)
    spec["outputs"]["dir"] = str(tmp_path / "results")
    p = tmp_path / "three.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def assert_subflows_on_their_paths(out: Path) -> None:
    df = pd.read_csv(out / "summary.csv")
    row = df[df.variant == "mptcp-dependent"].iloc[0]
    assert row["subflows"] == 3, row
    flows = json.loads((out / "raw" / f"{row['test']}-flows.json").read_text())
    for subflow, on_path in PATHS.items():
        cookie = str(FWD + subflow)
        for sw in ("s1", "s2", "s3", "s4"):
            moved = flows["after"][sw].get(cookie, 0) - flows["before"][sw].get(cookie, 0)
            if sw in on_path:
                assert moved > 200_000, (subflow, sw, moved)  # this subflow's data crossed sw
            else:
                assert moved == 0, (subflow, sw, moved)       # and never any other switch
    assert row["path3_bytes"] > 200_000 and row["path1_bytes"] > row["path3_bytes"]
    assert row["goodput_mbps"] <= row["maxflow_mbps"]


def test_loop_without_controller_is_refused(tmp_path):
    spec = yaml.safe_load(three_path_spec(tmp_path, "static").read_text())
    spec["controller"]["kind"] = "none"
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump(spec))
    r = cli("run-experiment", str(tmp_path / "loop.yaml"))
    assert r.returncode == 2 and "the switches form a loop" in r.stderr


def test_static_places_each_subflow_on_its_path(tmp_path, no_leftovers):
    out = tmp_path / "run"
    r = cli("run-experiment", str(three_path_spec(tmp_path, "static")), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert_subflows_on_their_paths(out)


def test_pox_missing_stops_before_building(tmp_path, no_leftovers):
    env = {k: v for k, v in os.environ.items() if k != "POX_HOME"}
    r = subprocess.run([str(BIN / "run-experiment"), str(three_path_spec(tmp_path, "pox"))],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert r.returncode == 2
    assert "no POX checkout was found" in r.stderr and "noxrepo/pox" in r.stderr
    assert not (tmp_path / "results").exists()


@needs_pox
def test_pox_places_each_subflow_on_its_path(tmp_path, no_leftovers):
    out = tmp_path / "run"
    r = cli("run-experiment", str(three_path_spec(tmp_path, "pox")), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert_subflows_on_their_paths(out)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["network"]["controller"]["listen"] == "127.0.0.1"


@needs_pox
def test_pox_listens_on_loopback_only(tmp_path):
    from mptcplab.controller import PoxController, _listening
    from mptcplab.plan import controller_topology, make_plan
    from mptcplab.spec import load_spec

    topo = controller_topology(make_plan(load_spec(three_path_spec(tmp_path, "pox"))), 5201)
    topo_file = tmp_path / "t.json"
    ctl = PoxController(topo, Path(POX_HOME), None, topo_file, tmp_path / "pox.log")
    topo_file.write_text(topo.to_json())
    env = dict(os.environ, PYTHONPATH=str(REPO / "controllers"))
    p = subprocess.Popen(ctl.argv(), cwd=POX_HOME, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not _listening(ctl.port) and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.1)
        assert p.poll() is None, "POX exited"
        listeners = [l.split() for l in Path("/proc/net/tcp").read_text().splitlines()[1:]]
        mine = [l[1] for l in listeners if l[3] == "0A" and int(l[1].split(":")[1], 16) == ctl.port]
        assert mine == ["0100007F:%04X" % ctl.port]  # 127.0.0.1 only, not 0.0.0.0
    finally:
        p.terminate()
        p.wait(timeout=10)


@needs_pox
def test_controller_death_is_reported(tmp_path, no_leftovers):
    out = tmp_path / "run"
    spec = three_path_spec(tmp_path, "pox", variants=("mptcp-independent", "mptcp-dependent"), duration=4)
    p = subprocess.Popen([str(BIN / "run-experiment"), str(spec), "--out", str(out)], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    pox_pid = None
    while pox_pid is None and time.monotonic() < deadline:
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    argv = (d / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if any(a.endswith(b"pox.py") for a in argv) and any(str(out).encode() in a for a in argv):
                    pox_pid = int(d.name)
        time.sleep(0.2)
    assert pox_pid, "POX did not start"
    while not (out / "raw" / "001-mptcp-independent-r1-client.json").exists() and p.poll() is None:
        time.sleep(0.2)
    os.kill(pox_pid, signal.SIGKILL)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1, err
    df = pd.read_csv(out / "summary.csv")
    assert df["error"].fillna("").str.contains("controller died").any(), df["error"].tolist()
    assert "controller_died" in json.loads((out / "metadata.json").read_text())

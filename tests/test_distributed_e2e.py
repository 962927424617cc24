"""Distributed sweeps on real networks (root): two workers on this machine, each building its
own network (switch names of its own) at the same time; the results are a local run's."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest

from helpers import BIN, REPO, cli, snapshot, write_spec
from test_distributed import run_fake

pytest.importorskip("distributed")
pytestmark = pytest.mark.root


SIX = [f"p00{i}" for i in range(1, 7)]


def sweep_spec(tmp_path: Path) -> Path:
    def mutate(spec):
        spec["sweep"] = {"parameters": {"links[0].bw": [2, 5, 8, 10, 15, 20]}}
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
    assert sorted(where) == SIX and all(w["host"] and w["worker"] for w in where.values())
    assert len({w["worker"] for w in where.values()}) == 2  # both workers ran points
    assert all(set(w["switches"].values()) <= {f"mw{w['slot']:02d}s0", f"mw{w['slot']:02d}s1"} for w in where.values())
    assert sorted(meta["self_checks"]) == SIX and meta["status"] == "complete"
    # A distributed run cut short (its last point pending) is finished by a local --resume.
    pts = json.loads((dist / "points.json").read_text())
    pts[5]["status"] = "pending"
    (dist / "points.json").write_text(json.dumps(pts))
    before = d[d.point != "p006"].sort_values("test")
    r = cli("run-experiment", "--resume", str(dist))
    assert r.returncode == 0, r.stderr[-3000:]
    after = pd.read_csv(dist / "summary.csv")
    assert sorted(after["test"]) == sorted(l["test"])
    assert after[after.point != "p006"].sort_values("test")["started"].tolist() == before["started"].tolist()


def test_a_worker_killed_mid_point_leaves_nothing_and_its_point_is_retried(tmp_path, no_leftovers):
    """SIGKILL of a worker 5 s into its first point (its network built, the tests running): the
    point is run again by a worker, every point is done once in the results, and whatever the
    dead worker built -- bridges, veths, namespaces' processes, its registry state -- is
    removed (by the worker that takes over its slot, or at the end of the run); no_leftovers
    checks the machine afterwards."""
    def mutate(spec):
        spec["sweep"] = {"parameters": {"links[0].bw": [5, 10, 20]}}
    spec = write_spec(tmp_path, "dual-path", traffic={"duration": 3, "repetitions": 1}, mutate=mutate)
    run_fake(tmp_path, spec=spec, runner="mptcplab.distributed:network_point", kill_one=True, kill_after_s=5)
    out = tmp_path / "run"
    df = pd.read_csv(out / "summary.csv")
    assert sorted(df["point"].unique()) == ["p001", "p002", "p003"] and not df.duplicated(["test"]).any()
    assert (df["subflows"] == df["expected_subflows"]).all() and df["error"].isna().all(), df
    meta = json.loads((out / "metadata.json").read_text())
    tries = {p: w["attempts"] for p, w in meta["distributed"]["points"].items()}
    assert sorted(tries.values()) == [1, 1, 2], tries
    assert [p["status"] for p in json.loads((out / "points.json").read_text())] == ["done"] * 3


def test_a_killed_distributed_run_is_finished_by_a_local_resume(tmp_path, no_leftovers):
    """SIGKILL of the client (run-experiment --local-workers 2) while a worker builds or runs a
    point: its LocalCluster dies with it, leaving the workers' networks. `run-experiment
    --resume` -- local, no `mptcplab clean` -- removes exactly what the run's slots recorded,
    then runs the points not done; the done ones are kept, none runs twice."""
    def mutate(spec):
        spec["sweep"] = {"parameters": {"links[0].bw": [5, 10, 15, 20]}}
    spec = write_spec(tmp_path, "dual-path", traffic={"duration": 2, "repetitions": 1}, mutate=mutate)
    out = tmp_path / "run"
    p = subprocess.Popen([str(BIN / "run-experiment"), str(spec), "--out", str(out), "--local-workers", "2"],
                         cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:  # a point done, and a worker's network up
            pts = json.loads((out / "points.json").read_text()) if (out / "points.json").exists() else []
            bridges = snapshot().bridges  # Open vSwitch's and Linux bridges
            if any(x["status"] == "done" for x in pts) and any(b.startswith("mw") for b in bridges):
                break
            time.sleep(0.2)
        else:
            pytest.fail("no point done with another running within 180 s")
        time.sleep(0.5)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    before = pd.read_csv(out / "summary.csv")
    done = [x["id"] for x in json.loads((out / "points.json").read_text()) if x["status"] == "done"]
    assert 1 <= len(done) < 4
    r = cli("run-experiment", "--resume", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "removed what the last attempt left" in " ".join(r.stderr.split()), r.stderr[:2000]
    after = pd.read_csv(out / "summary.csv")
    assert sorted(after["point"].unique()) == ["p001", "p002", "p003", "p004"] and not after.duplicated(["test"]).any()
    for pid in done:  # kept, not run again
        assert before[before.point == pid]["started"].tolist() == after[after.point == pid]["started"].tolist()
    assert after["error"].isna().all()


#: What covers the distribution when this machine cannot serve SSH: the LocalCluster tests above
#: run the same worker code; only how workers are started differs.
NO_SSH = "the LocalCluster tests cover the same workers; .ci/run installs openssh-server and asyncssh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ssh_home(tmp_path: Path) -> Iterator[Path]:
    """A private sshd on 127.0.0.1 (a free port, its own host key, one authorized key, no
    passwords), and a HOME whose ~/.ssh/config sends ``localhost`` to it, as a testbed user's
    would: asyncssh (Dask's SSHCluster) reads that file. sshd is stopped by PID at the end."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.access(sshd, os.X_OK) or not shutil.which("ssh-keygen"):
        pytest.skip(f"no sshd (apt-get install openssh-server); {NO_SSH}")
    pytest.importorskip("asyncssh", reason=f"asyncssh is missing (pip install asyncssh); {NO_SSH}")
    home, etc = tmp_path / "home", tmp_path / "sshd"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    etc.mkdir()
    for key in (etc / "host_ed25519", home / ".ssh" / "id_ed25519"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (etc / "authorized_keys").write_text((home / ".ssh" / "id_ed25519.pub").read_text())
    port = _free_port()
    host_key = (etc / "host_ed25519.pub").read_text().split()
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    (home / ".ssh" / "config").write_text(
        f"Host localhost\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
        f"  IdentityFile {home / '.ssh' / 'id_ed25519'}\n")
    (etc / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {etc / 'host_ed25519'}",
        f"AuthorizedKeysFile {etc / 'authorized_keys'}", f"PidFile {etc / 'sshd.pid'}",
        "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "UsePAM no", "StrictModes no", ""]))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(etc / "sshd_config")], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"sshd did not start: {proc.stderr.read() if proc.poll() is not None else 'timeout'}")
                time.sleep(0.1)
        yield home
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_sweep_over_ssh_on_two_workers_of_this_machine(tmp_path, ssh_home, no_leftovers):
    """--cluster localhost,localhost: Dask's SSHCluster logs in over SSH (the scheduler and two
    workers, all on this machine through a private sshd), and each worker builds its points'
    networks; every point once, its host and worker recorded, the columns of a local run."""
    def mutate(spec):
        spec["sweep"] = {"parameters": {"links[0].bw": [5, 10]}}
    spec = write_spec(tmp_path, "dual-path", traffic={"duration": 2, "repetitions": 1}, mutate=mutate)
    out = tmp_path / "ssh"
    r = cli("run-experiment", str(spec), "--out", str(out), "--cluster", "localhost,localhost",
            env={**os.environ, "HOME": str(ssh_home)})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "starting Dask over SSH" in r.stdout + r.stderr
    df = pd.read_csv(out / "summary.csv")
    assert sorted(df["point"].unique()) == ["p001", "p002"] and not df.duplicated(["test"]).any()
    assert (df["subflows"] == df["expected_subflows"]).all() and df["error"].isna().all()
    meta = json.loads((out / "metadata.json").read_text())
    where = meta["distributed"]["points"]
    assert sorted(where) == ["p001", "p002"] and {w["attempts"] for w in where.values()} == {1}
    assert {w["host"] for w in where.values()} == {socket.gethostname()}, where
    assert meta["status"] == "complete" and sorted(meta["self_checks"]) == ["p001", "p002"]

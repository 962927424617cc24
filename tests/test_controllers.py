"""Path placement on a real meshed Mininet network (root): flow counters on every switch prove
each subflow took its assigned path. `static` always; real POX when POX_HOME points at a checkout
(skipped, saying so, otherwise).

Also what keeps POX safe to run as root: a spec never names the checkout, a checkout others can
write is refused, and the switches reach this run's POX -- its port is read back from the
listening socket that POX's own PID holds, never assumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest
import yaml

from helpers import BIN, REPO, cli, cmdlines, write_spec

POX_HOME = os.environ.get("POX_HOME")
needs_pox = pytest.mark.skipif(not (POX_HOME and Path(POX_HOME, "pox.py").exists()),
                               reason="POX_HOME does not point at a POX checkout (git clone -b halosaur "
                                      "https://github.com/noxrepo/pox); static covers the same rules")
PATHS = {0: {"s1", "s2", "s4"}, 1: {"s1", "s3", "s4"}, 2: {"s1", "s2", "s3", "s4"}}
FWD = 0x100


def three_path_spec(tmp_path: Path, kind: str, variants=("mptcp-dependent",), duration=3) -> Path:
    def mutate(spec):
        spec["controller"]["kind"] = kind
        spec["variants"] = [v for v in spec["variants"] if v["name"] in variants]

    return write_spec(tmp_path, "three-path", traffic={"duration": duration, "repetitions": 1}, mutate=mutate,
                      name="three.yaml")


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


@pytest.mark.root
def test_loop_without_controller_is_refused(tmp_path):
    spec = yaml.safe_load(three_path_spec(tmp_path, "static").read_text())
    spec["controller"]["kind"] = "none"
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump(spec))
    r = cli("run-experiment", str(tmp_path / "loop.yaml"))
    assert r.returncode == 2 and "the switches form a loop" in r.stderr


@pytest.mark.root
def test_static_places_each_subflow_on_its_path(tmp_path, no_leftovers):
    out = tmp_path / "run"
    r = cli("run-experiment", str(three_path_spec(tmp_path, "static")), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert_subflows_on_their_paths(out)


@pytest.mark.root
def test_pox_missing_stops_before_building(tmp_path, no_leftovers):
    env = {k: v for k, v in os.environ.items() if k != "POX_HOME"}
    r = subprocess.run([str(BIN / "run-experiment"), str(three_path_spec(tmp_path, "pox"))],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert r.returncode == 2
    assert "no POX checkout was found" in r.stderr and "noxrepo/pox" in r.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.root
@needs_pox
def test_pox_places_each_subflow_on_its_path(tmp_path, no_leftovers):
    out = tmp_path / "run"
    r = cli("run-experiment", str(three_path_spec(tmp_path, "pox")), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert_subflows_on_their_paths(out)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["network"]["controller"]["listen"] == "127.0.0.1"


# --------------------------------------------------------------------------- the checkout is not the spec's


def fake_checkout(where: Path, marker: Path) -> Path:
    """A directory that looks like a POX checkout; its pox.py leaves ``marker`` if anything runs it."""
    home = where / "pox"
    (home / "pox").mkdir(parents=True)
    (home / "ext").mkdir()
    (home / "pox.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (home / "pox" / "boot.py").write_text("")
    for path in (home, home / "pox", home / "ext"):
        path.chmod(0o755)
    for path in (home / "pox.py", home / "pox" / "boot.py"):
        path.chmod(0o644)
    return home


@pytest.mark.parametrize("command", [("mptcplab", "run", "--dry-run"), ("mptcplab", "run"),
                                     ("run-experiment",)])
def test_spec_naming_pox_home_is_refused(tmp_path, command):
    marker = tmp_path / "pox-ran"
    spec_path = three_path_spec(tmp_path, "pox")
    spec = yaml.safe_load(spec_path.read_text())
    spec["controller"]["pox_home"] = str(fake_checkout(tmp_path, marker))
    spec_path.write_text(yaml.safe_dump(spec))
    r = cli(*command, str(spec_path), timeout=120)
    assert r.returncode == 2, r.stderr
    err = " ".join(r.stderr.split())
    assert "controller.pox_home: a spec may not name the POX checkout" in err
    assert "use --pox-home or POX_HOME" in err and "Traceback" not in err
    assert not (tmp_path / "results").exists() and not marker.exists()


def test_recorded_null_pox_home_is_accepted(tmp_path):
    """Older runs' spec.yaml say `pox_home: null`: that names nothing, and still loads."""
    from mptcplab.spec import load_spec

    spec_path = three_path_spec(tmp_path, "pox")
    spec = yaml.safe_load(spec_path.read_text())
    spec["controller"]["pox_home"] = None
    spec_path.write_text(yaml.safe_dump(spec))
    assert load_spec(spec_path).controller.kind == "pox"
    assert "pox_home" not in load_spec(spec_path).model_dump()["controller"]


def test_checkout_others_can_write_is_refused(tmp_path):
    from mptcplab.controller import pox_checkout_problems

    home = fake_checkout(tmp_path, tmp_path / "pox-ran")
    assert pox_checkout_problems(home) == []
    (home / "pox.py").chmod(0o646)
    assert [p for p in pox_checkout_problems(home) if f"{home}/pox.py is world-writable" in p]
    (home / "pox.py").chmod(0o644)
    (home / "ext").chmod(0o775)  # a module dropped in ext/ would be imported first
    assert [p for p in pox_checkout_problems(home) if f"{home}/ext is group-writable" in p]
    (home / "ext").chmod(0o755)
    (home / "ext" / "mptcp_paths.py").symlink_to(tmp_path / "elsewhere.py")
    (tmp_path / "elsewhere.py").write_text("")
    assert [p for p in pox_checkout_problems(home) if "outside the checkout" in p]
    (home / "ext" / "mptcp_paths.py").unlink()
    assert pox_checkout_problems(home) == []


def test_checkout_under_a_shared_directory_is_refused(tmp_path):
    from mptcplab.controller import pox_checkout_problems

    shared = tmp_path / "shared"
    shared.mkdir()
    home = fake_checkout(shared, tmp_path / "pox-ran")
    shared.chmod(0o777)  # anyone could rename the checkout away and put another in its place
    assert [p for p in pox_checkout_problems(home) if f"{shared} is world-writable" in p]
    shared.chmod(0o1777)  # sticky, like /tmp: others cannot replace what they do not own
    assert pox_checkout_problems(home) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_checkout_owned_by_another_user_is_refused(tmp_path, monkeypatch):
    from mptcplab.controller import pox_checkout_problems

    home = fake_checkout(tmp_path, tmp_path / "pox-ran")
    os.chown(home / "pox" / "boot.py", 4242, 4242)
    monkeypatch.setenv("SUDO_UID", "1000")  # whoever ran sudo, it was not uid 4242
    assert [p for p in pox_checkout_problems(home) if "boot.py is owned by uid 4242" in p]


@pytest.mark.root
def test_run_refuses_a_checkout_others_can_write(tmp_path):
    marker = tmp_path / "pox-ran"
    home = fake_checkout(tmp_path, marker)
    (home / "pox").chmod(0o777)
    r = cli("mptcplab", "run", str(three_path_spec(tmp_path, "pox")), "--pox-home", str(home), timeout=120)
    assert r.returncode == 2, r.stderr
    err = " ".join(r.stderr.split())
    assert f"POX checkout: {home}/pox is world-writable" in err and "chmod go-w" in err
    assert not (tmp_path / "results").exists() and not marker.exists()


# --------------------------------------------------------------------------- whose listener it is

LISTEN = ("import socket, sys\n"
          "s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen()\n"
          "print(s.getsockname()[1], flush=True); sys.stdin.read()\n")


@contextmanager
def listener(address: str = "127.0.0.1") -> Iterator[tuple[int, int]]:
    """A process of its own listening on address:0; yields (pid, port)."""
    p = subprocess.Popen([sys.executable, "-c", LISTEN, address], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        yield p.pid, int(p.stdout.readline())
    finally:
        p.stdin.close()
        p.wait(timeout=10)


def test_listening_port_is_read_back_from_the_owner_only():
    from mptcplab.controller import foreign_listeners, listening_ports, owns_listener

    with listener() as (mine, my_port), listener() as (other, other_port), \
            listener("0.0.0.0") as (_, wild_port):
        assert listening_ports(mine) == {my_port}
        assert owns_listener(mine, my_port)
        # Something accepts connections on other_port -- but it is not `mine`: the check says no.
        assert not owns_listener(mine, other_port)
        assert not owns_listener(mine, wild_port)
        assert [l.port for l in foreign_listeners(other_port, mine)] == [other_port]
        assert [l.address for l in foreign_listeners(wild_port, mine)] == ["0.0.0.0"]
        assert foreign_listeners(my_port, mine) == []


def pox_controller(tmp_path: Path, port: int | None):
    from mptcplab.controller import PoxController
    from mptcplab.plan import controller_topology, make_plan
    from mptcplab.spec import load_spec

    topo = controller_topology(make_plan(load_spec(three_path_spec(tmp_path, "pox"))), 5201)
    written: list[dict] = []

    def write_topology(obj: dict) -> Path:
        written.append(obj)
        (tmp_path / "t.json").write_text(json.dumps(obj))
        return tmp_path / "t.json"

    ctl = PoxController(topo, Path(POX_HOME), port, lambda: open(tmp_path / "pox.log", "xb"), write_topology)
    return ctl, written


@needs_pox
def test_pox_binds_its_own_port_on_loopback_only(tmp_path):
    from mptcplab.controller import listening_ports, owns_listener, tcp_listeners

    ctl, written = pox_controller(tmp_path, None)
    try:
        port = ctl.launch()
        assert "--port=0" in ctl.proc.args and f"--topology={tmp_path / 't.json'}" in ctl.proc.args
        assert written and set(written[0]["switches"]) == {"s1", "s2", "s3", "s4"}
        assert owns_listener(ctl.proc.pid, port) and ctl.describe()["port"] == port
        assert [l.address for l in tcp_listeners() if l.port == port] == ["127.0.0.1"]  # not 0.0.0.0
        assert listening_ports(ctl.proc.pid, "0.0.0.0") == set()
    finally:
        ctl.stop()
    assert ctl.proc is None and ctl.log is None


@needs_pox
def test_pox_refuses_an_openflow_port_another_process_holds(tmp_path):
    from mptcplab.controller import ControllerError

    with listener() as (_, taken):
        ctl, _ = pox_controller(tmp_path, taken)
        try:
            with pytest.raises(ControllerError, match=rf"openflow_port: 127.0.0.1:{taken} is held by "
                                                      r"another process.*Pick another openflow_port"):
                ctl.launch()
        finally:
            ctl.stop()
    assert not (tmp_path / "pox.log").exists()  # POX was never started


@needs_pox
def test_pox_on_a_free_fixed_port_holds_it(tmp_path):
    from mptcplab.controller import owns_listener

    with listener() as (_, port):
        pass  # a port that was free a moment ago (if someone takes it now, launch() says so)
    ctl, _ = pox_controller(tmp_path, port)
    try:
        assert ctl.launch() == port and owns_listener(ctl.proc.pid, port)
    finally:
        ctl.stop()


@pytest.mark.root
@needs_pox
def test_controller_death_is_reported(tmp_path, no_leftovers):
    out = tmp_path / "run"
    spec = three_path_spec(tmp_path, "pox", variants=("mptcp-independent", "mptcp-dependent"), duration=4)
    p = subprocess.Popen([str(BIN / "run-experiment"), str(spec), "--out", str(out)], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    pox_pid = None
    while pox_pid is None and time.monotonic() < deadline:
        for pid, argv in cmdlines():
            if any(a.endswith(b"pox.py") for a in argv) and any(str(out).encode() in a for a in argv):
                pox_pid = pid
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

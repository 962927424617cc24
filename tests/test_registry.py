"""Cleanup kills only what the run provably owns, waits until it is gone, never acts on a state
file that fails validation; one run per machine (MachineLock).

State and lock files live under tmp_path (MPTCPLAB_STATE_DIR / MPTCPLAB_LOCK_DIR): these tests never
read or write the machine's real ones. Tests that create network namespaces are marked ``root``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mptcplab import registry
from mptcplab.errors import BusyError, PreflightError, RunDirError
from mptcplab.lock import MachineLock
from mptcplab.registry import (CleanReport, NamespaceRecord, ProcessRecord, Registry, RunState, clean,
                               clean_state, netns_inode, proc_stat, proc_starttime)

RID = "20260101-000000-abcd"


@pytest.fixture(autouse=True)
def private_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("MPTCPLAB_STATE_DIR", str(tmp_path / "a" / "state"))
    monkeypatch.setattr(registry, "STATE_DIR", tmp_path / "a" / "state")  # read at import time
    monkeypatch.setenv("MPTCPLAB_LOCK_DIR", str(tmp_path / "lock"))
    (tmp_path / "a" / "state").mkdir(parents=True)
    return tmp_path / "a" / "state"


@pytest.fixture
def procs():
    """Start processes; whatever is still running at the end is killed (only these)."""
    started: list[subprocess.Popen] = []

    def start(argv: list[str], **kw) -> subprocess.Popen:
        p = subprocess.Popen(argv, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting for its parent (this test) to reap it."""
    st = proc_stat(pid)
    return st is None or st.state in ("Z", "X")


def survived(p: subprocess.Popen) -> bool:
    """Still running a moment later (a SIGKILL is delivered asynchronously)."""
    time.sleep(0.2)
    return p.poll() is None and not gone(p.pid)


def dead_process() -> tuple[int, int]:
    """The pid and start time of a process that has exited (a dead owner, a dead holder)."""
    p = subprocess.Popen(["sleep", "0.01"])
    st = proc_starttime(p.pid)
    p.wait()
    assert st is not None
    return p.pid, st


def write_v1(state_dir: Path, name: str, **fields) -> Path:
    """A state file in the first format (no boot id, namespaces as bare inodes)."""
    pid, st = dead_process()
    d = {"run_id": RID, "owner_pid": pid, "owner_starttime": st, "created": time.time(),
         "bridges": [], "interfaces": [], "processes": [], "namespaces": []}
    d.update(fields)
    path = state_dir / name
    path.write_text(json.dumps(d))
    return path


def rec(p: subprocess.Popen, argv: list[str] | None = None) -> dict:
    st = proc_starttime(p.pid)
    assert st is not None
    return {"pid": p.pid, "starttime": st, "argv": argv or ["test"], "netns": netns_inode(p.pid)}


def in_new_netns(procs) -> subprocess.Popen:
    """`unshare --net sleep 60`: a process in a network namespace of its own."""
    p = procs(["unshare", "--net", "sleep", "60"])
    me = netns_inode(os.getpid())
    deadline = time.monotonic() + 5
    while netns_inode(p.pid) in (None, me) or Path(f"/proc/{p.pid}/comm").read_text().strip() != "sleep":
        assert time.monotonic() < deadline, "unshare did not start"
        time.sleep(0.01)
    return p


BIG = [sys.executable, "-c", "b = bytearray(1 << 30)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
       "print('ready', flush=True)\nimport time; time.sleep(60)"]


def big_process(procs) -> subprocess.Popen:
    """A process with 1 GiB touched: after SIGKILL it takes tens of ms to free it and exit."""
    p = procs(BIG, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


# ----------------------------------------------------------------------- (a) foreign namespaces


@pytest.mark.root
def test_process_in_a_reused_namespace_inode_survives_clean(private_dirs, procs):
    """The run recorded a host namespace by inode; the host is gone and the inode now names
    somebody else's namespace. Nothing in it may be killed."""
    owner_pid, owner_st = dead_process()  # the run started before the foreign process did
    foreign = in_new_netns(procs)
    ino = netns_inode(foreign.pid)
    write_v1(private_dirs, f"{RID}.json", namespaces=[ino], owner_pid=owner_pid, owner_starttime=owner_st)
    report = clean()
    assert report.runs == [RID]
    assert survived(foreign), "a process the run did not start was killed"
    assert report.processes == 0


@pytest.mark.root
def test_namespace_whose_recorded_holder_pid_was_recycled_is_not_scanned(procs):
    """The recorded holder's pid now belongs to a foreign process (other start time) living in a
    namespace with the recorded inode: not proof, nothing killed."""
    foreign = in_new_netns(procs)
    st = proc_starttime(foreign.pid)
    state = RunState(run_id=RID, owner_pid=1, owner_starttime=0,
                     namespaces=[NamespaceRecord(inode=netns_inode(foreign.pid), holder_pid=foreign.pid,
                                                 holder_starttime=st + 1)])
    report = CleanReport()
    clean_state(state, report)
    assert survived(foreign) and report.processes == 0


@pytest.mark.root
def test_namespace_with_live_recorded_holder_is_emptied(procs):
    """While the recorded holder lives in it the namespace is provably the run's: a process
    there that nobody recorded (started with nsenter) is killed along with the holder."""
    holder = in_new_netns(procs)
    member = procs(["nsenter", f"--net=/proc/{holder.pid}/ns/net", "sleep", "60"])
    deadline = time.monotonic() + 5
    while netns_inode(member.pid) != netns_inode(holder.pid):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    state = RunState(run_id=RID, owner_pid=1, owner_starttime=0,
                     namespaces=[NamespaceRecord(inode=netns_inode(holder.pid), holder_pid=holder.pid,
                                                 holder_starttime=proc_starttime(holder.pid))])
    report = CleanReport()
    clean_state(state, report)
    assert report.processes == 2 and gone(holder.pid) and gone(member.pid)


@pytest.mark.root
def test_forget_network_drops_namespaces_of_a_torn_down_network(private_dirs, procs):
    reg = Registry(RID)
    holder = in_new_netns(procs)
    reg.process(holder.pid, ["mininet", "h1"])
    reg.namespace(holder.pid)
    saved = json.loads((private_dirs / f"{RID}.json").read_text())
    assert saved["namespaces"] == [{"inode": netns_inode(holder.pid), "holder_pid": holder.pid,
                                    "holder_starttime": proc_starttime(holder.pid)}]
    reg.forget_network()  # the holder still lives: kept, so a later clean can retry
    assert len(reg.state.namespaces) == 1 and (private_dirs / f"{RID}.json").exists()
    holder.kill()
    holder.wait()
    reg.forget_network()
    assert reg.state.empty() and not (private_dirs / f"{RID}.json").exists()


# ----------------------------------------------------------------------- (b) recorded processes


def test_recorded_processes_are_killed_and_gone_when_clean_returns(private_dirs, procs):
    big = big_process(procs)
    path = write_v1(private_dirs, f"{RID}.json", processes=[rec(big)])
    report = clean()
    assert gone(big.pid), f"clean returned while {big.pid} was still exiting ({proc_stat(big.pid)})"
    assert report.processes == 1 and report.runs == [RID] and not report.remaining
    assert not path.exists()


def test_process_still_exiting_at_the_deadline_is_reported(procs):
    big = big_process(procs)
    state = RunState(run_id=RID, owner_pid=1, owner_starttime=0,
                     processes=[ProcessRecord(**rec(big))])
    report = CleanReport()
    clean_state(state, report, wait_s=0)
    assert report.processes == 1
    assert report.remaining and f"pid {big.pid}" in report.remaining[0]


def test_recycled_pid_is_not_killed(private_dirs, procs):
    p = procs(["sleep", "60"])
    r = rec(p)
    r["starttime"] += 1  # the recorded process exited and its pid went to this one
    write_v1(private_dirs, f"{RID}.json", processes=[r])
    report = clean()
    assert survived(p) and report.processes == 0


def test_descendants_of_a_recorded_process_are_killed(procs):
    parent = procs(["sh", "-c", "sleep 60 & sleep 60 & wait"])
    deadline = time.monotonic() + 5
    while len(kids := [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit()
                       and (s := proc_stat(int(d.name))) and s.ppid == parent.pid]) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    state = RunState(run_id=RID, owner_pid=1, owner_starttime=0, processes=[ProcessRecord(**rec(parent))])
    report = CleanReport()
    clean_state(state, report)
    assert report.processes == 3 and all(gone(k) for k in kids) and gone(parent.pid)


def test_state_from_another_boot_kills_nothing(private_dirs, procs):
    p = procs(["sleep", "60"])
    write_v1(private_dirs, f"{RID}.json", processes=[rec(p)], created=1.0)  # before this boot
    report = clean()
    assert survived(p) and report.processes == 0
    assert any("before this boot" in s for s in report.skipped)


def test_clean_refuses_while_a_run_holds_the_machine(private_dirs):
    with MachineLock().acquire("20260101-000000-beef", Path("/tmp/r")):
        with pytest.raises(BusyError, match="run 20260101-000000-beef"):
            clean()
        clean(include_running=True)  # --all takes no lock


# ----------------------------------------------------------------------- (c) crafted state files


@pytest.mark.parametrize("run_id", ["../../etc/x", "x;cd;touch F;#", "../victim"])
def test_state_file_with_crafted_run_id_is_skipped(private_dirs, tmp_path, procs, run_id):
    victims = [tmp_path / "etc" / "x.json", tmp_path / "a" / "victim.json"]
    for v in victims:
        v.parent.mkdir(parents=True, exist_ok=True)
        v.write_text("not yours")
    p = procs(["sleep", "60"])
    files = [write_v1(private_dirs, f"{RID}.json", run_id=run_id, processes=[rec(p)]),
             write_v1(private_dirs, f"{run_id.replace('/', '_')}.json", run_id=run_id, processes=[rec(p)])]
    listing = lambda: sorted(str(f) for f in tmp_path.rglob("*") if "lock" not in f.parts)  # noqa: E731
    before = listing()
    report = clean()
    assert survived(p) and report.processes == 0 and report.runs == []
    assert all(v.read_text() == "not yours" for v in victims)
    assert all(f.exists() for f in files), "an invalid state file was acted on"
    assert listing() == before
    assert len([s for s in report.skipped if "not acted on" in s]) == 2, report.skipped


@pytest.mark.parametrize("field,value", [("bridges", ["s1;reboot"]), ("interfaces", ["--help"]),
                                         ("interfaces", ["h1-eth0", "../../x"]), ("owner_pid", -1),
                                         ("processes", [{"pid": True, "starttime": 1, "argv": []}])])
def test_state_file_with_invalid_value_is_skipped(private_dirs, field, value):
    path = write_v1(private_dirs, f"{RID}.json", **{field: value})
    report = clean()
    assert report.runs == [] and path.exists()
    assert any(field in s and "not acted on" in s for s in report.skipped), report.skipped


def test_registry_refuses_a_crafted_run_id(private_dirs, tmp_path):
    before = sorted(tmp_path.rglob("*"))
    for bad in ["../../etc/x", "x;cd;touch F;#", RID + "\n"]:
        with pytest.raises(RunDirError, match="not a run id"):
            Registry(bad)
    assert sorted(tmp_path.rglob("*")) == before


def test_registry_writes_through_no_symlink(private_dirs, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("not yours")
    (private_dirs / f"{RID}.json").symlink_to(victim)
    (private_dirs / f"{RID}.tmp").symlink_to(victim)
    reg = Registry(RID)
    reg.bridges(["s1"])
    assert victim.read_text() == "not yours"
    path = private_dirs / f"{RID}.json"
    assert not path.is_symlink() and json.loads(path.read_text())["bridges"] == ["s1"]


def test_registry_refuses_names_a_state_file_could_not_hold(private_dirs):
    reg = Registry(RID)
    with pytest.raises(ValueError):
        reg.bridges(["s1 s2"])
    with pytest.raises(ValueError):
        reg.interfaces(["h1-eth0;x"])


# ----------------------------------------------------------------------- (d) MachineLock

HOLD = """
import sys, time
from pathlib import Path
from mptcplab.lock import MachineLock
MachineLock().acquire(sys.argv[1], Path(sys.argv[2]))
print("held", flush=True)
time.sleep(60)
"""


def test_second_run_is_refused_naming_the_holder_until_it_dies(procs, tmp_path):
    holder = procs([sys.executable, "-c", HOLD, "20260101-000000-beef", str(tmp_path / "run1")],
                   stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    lock = MachineLock()
    with pytest.raises(BusyError) as e:
        lock.acquire(RID, tmp_path / "run2")
    msg = e.value.problems[0]
    assert f"run 20260101-000000-beef (pid {holder.pid}," in msg and str(tmp_path / "run1") in msg
    assert f"kill -INT {holder.pid}" in msg
    assert lock.holder()["pid"] == holder.pid
    holder.kill()
    holder.wait()
    assert lock.holder() is None  # the file still names it, but it is dead
    t0 = time.monotonic()
    with lock.acquire(RID, tmp_path / "run2"):
        assert time.monotonic() - t0 < 0.5
        assert lock.holder()["run_id"] == RID
    assert lock.holder() is None and not lock.held


def test_lock_file_with_garbage_or_a_symlink(tmp_path):
    lock_dir = tmp_path / "lock"
    lock_dir.mkdir()
    (lock_dir / "machine.lock").write_text('{"pid": "1; rm -rf /"}')
    lock = MachineLock()
    assert lock.holder() is None
    lock.acquire(RID, None).release()
    (lock_dir / "machine.lock").unlink()
    (lock_dir / "machine.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PreflightError, match="plain file"):
        MachineLock().acquire(RID, None)
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.root
def test_forget_network_keeps_a_bridge_still_tagged_and_drops_a_foreign_one(private_dirs):
    """A bridge the teardown could not remove stays recorded (clean retries it); a bridge of the
    same name that is not this run's is not the run's to remember."""
    ours, theirs = f"rg{os.getpid() % 10000}a", f"rg{os.getpid() % 10000}b"
    try:
        for name, tag in ((ours, RID), (theirs, None)):
            args = ["ovs-vsctl", "--timeout=5", "add-br", name, "--", "set", "bridge", name, "datapath_type=netdev"]
            if tag:
                args += ["--", "set", "bridge", name, f"external_ids:mptcplab-run={tag}"]
            subprocess.run(args, check=True)
        reg = Registry(RID)
        reg.bridges([ours, theirs])
        reg.forget_network()
        assert reg.state.bridges == [ours]
        report = clean(include_running=True)  # this process owns the run: it is alive
        assert report.bridges == [ours] and not report.remaining
        assert subprocess.run(["ovs-vsctl", "--timeout=5", "br-exists", theirs]).returncode == 0
    finally:
        for name in (ours, theirs):
            subprocess.run(["ovs-vsctl", "--timeout=5", "--if-exists", "del-br", name], check=False)

"""A run directory is safe to make as root on a shared machine (issue 11).

Pure: no network. Tests that chown need root (they are skipped, saying so, otherwise); uid and
gid 65534 (nobody) stand for the user behind sudo.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from mptcplab import results
from mptcplab.errors import BusyError, RunDirError
from mptcplab.results import FORMAT_VERSION, PointState, RunDir, read_rows, sudo_owner
from mptcplab.spec import Outputs, SpecError, load_spec
from mptcplab.sweep import Point

REPO = Path(__file__).resolve().parent.parent
NOBODY = 65534
RUN_ID = "20261127-101500-a3f9"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def summary_rows(n: int = 2, point: str | None = None) -> list[dict]:
    rows = []
    for i in range(n):
        for proto, g in (("mptcp", 9.0 + i), ("tcp", 4.7 + i / 10)):
            row = {"experiment": "e", "test": f"{len(rows) + 1:03d}-{proto}-r{i + 1}", "protocol": proto,
                   "repetition": i + 1, "goodput_mbps": g, "subflows": 2 if proto == "mptcp" else 1,
                   "error": None, "bw_mbps": 5.0}
            rows.append({"point": point, **row} if point else row)
    return rows


def a_run(tmp_path: Path, name: str = "run") -> RunDir:
    """A finished run's files, as the runner writes them."""
    rd = RunDir.create("e", out=tmp_path / name, run_id=RUN_ID)
    rd.write_spec({"name": "e"})
    rd.write_metadata({"run_id": RUN_ID, "experiment": "e", "formats": ["png"]})
    rd.write_summary(summary_rows())
    return rd


@pytest.fixture
def sudo_nobody(monkeypatch):
    monkeypatch.setenv("SUDO_UID", str(NOBODY))
    monkeypatch.setenv("SUDO_GID", str(NOBODY))
    monkeypatch.setenv("SUDO_USER", "nobody")


@pytest.fixture
def victim(tmp_path):
    """A file outside the run that a planted link points at: it must stay as it is."""
    v = tmp_path / "victim"
    v.write_text("precious\n")
    v.chmod(0o600)
    return v


# --------------------------------------------------------------------------- ownership and modes


@needs_root
def test_everything_a_run_creates_belongs_to_the_sudo_user_with_fixed_modes(tmp_path, sudo_nobody):
    old = os.umask(0o077)  # a umask that made the old files 0600 and unreadable to the user
    try:
        root = tmp_path / "res" / "deep"  # outputs.dir and a parent that do not exist yet
        rd = RunDir.create("e", root=root, run_id=RUN_ID)
        rd.write_spec({"name": "e"})
        rd.write_plan({"hosts": []})
        rd.write_metadata({"run_id": RUN_ID})
        rd.write_summary(summary_rows())
        rd.write_subflows([{"test": "001-mptcp-r1", "share": 1.0}])
        rd.write_raw("001-mptcp-r1-client.json", {"end": {}})
        rd.write_samples("001-mptcp-r1", [{"t": 0.1, "bytes_acked": 1}])
        rd.write_selfcheck("p001", {"ok": True})
        rd.write_json(results.CONTROLLER_TOPOLOGY, {"switches": []})
        rd.write_figure("goodput.png", b"\x89PNG")
        with rd.open_log(results.POX_LOG) as log:
            log.write(b"POX 0.8\n")
        PointState.open(rd, [Point(1, ())]).mark("p001", "done")
    finally:
        os.umask(old)
    made = [tmp_path / "res", *sorted((tmp_path / "res").rglob("*"))]
    assert len(made) >= 17
    for p in made:
        st = p.lstat()
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY), p
        want = 0o755 if stat.S_ISDIR(st.st_mode) else 0o644
        assert stat.S_IMODE(st.st_mode) == want and not stat.S_ISLNK(st.st_mode), (p, oct(st.st_mode))
    assert tmp_path.stat().st_uid == 0  # what existed before is not taken over


def test_sudo_owner_needs_numbers_of_an_existing_user(monkeypatch):
    for uid, gid in (("abc", "0"), ("65534; id", "65534"), ("4000000000", "1"), ("", "65534")):
        monkeypatch.setenv("SUDO_UID", uid)
        monkeypatch.setenv("SUDO_GID", gid)
        assert sudo_owner() is None, uid
    monkeypatch.setenv("SUDO_UID", str(NOBODY))
    monkeypatch.setenv("SUDO_GID", str(NOBODY))
    assert sudo_owner() == (results.Owner(NOBODY, NOBODY) if os.geteuid() == 0 else None)


def test_writes_fsync_the_directory_after_the_rename(tmp_path, monkeypatch):
    """A point marked done survives a power cut: the rename is made durable."""
    rd = a_run(tmp_path)
    synced: list[bool] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    PointState.open(rd, [Point(1, ())]).mark("p001", "done")
    assert synced[-2:] == [False, True]  # the file, then its directory


# --------------------------------------------------------------------------- links are never followed


def test_planted_log_link_is_not_followed(tmp_path, victim):
    rd = a_run(tmp_path)
    (rd.raw / "pox.log").symlink_to(victim)
    with rd.open_log("pox.log") as log:
        log.write(b"controller output\n")
    assert log.name == "pox-2.log" and (rd.raw / "pox-2.log").read_bytes() == b"controller output\n"
    assert victim.read_text() == "precious\n" and (rd.raw / "pox.log").is_symlink()
    assert rd.read_log("pox-2.log") == "controller output\n"


def test_log_is_never_reopened(tmp_path):
    rd = a_run(tmp_path)
    names = []
    for k in range(3):  # a network rebuilt for each point: every POX start keeps its own log
        with rd.open_log() as log:
            log.write(f"start {k}\n".encode())
            names.append(log.name)
    assert names == ["pox.log", "pox-2.log", "pox-3.log"]
    assert (rd.raw / "pox.log").read_text() == "start 0\n"


def test_raw_replaced_by_a_link_is_refused(tmp_path):
    rd = a_run(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(rd.raw)
    rd.raw.symlink_to(elsewhere)
    with pytest.raises(RunDirError, match="symbolic link"):
        rd.write_raw("001-tcp-r1-client.json", {"x": 1})
    with pytest.raises(RunDirError, match="symbolic link"):
        rd.open_log()
    assert os.listdir(elsewhere) == []


def test_summary_link_is_replaced_not_followed_and_not_read(tmp_path, victim):
    rd = a_run(tmp_path)
    (rd.path / "summary.csv").unlink()
    (rd.path / "summary.csv").symlink_to(victim)
    with pytest.raises(RunDirError, match="symbolic link"):  # a resume would copy it into the run
        read_rows(rd, {"p001"}, unnamed="p001")
    rd.write_summary(summary_rows())
    assert victim.read_text() == "precious\n"
    assert not (rd.path / "summary.csv").is_symlink() and "goodput_mbps" in (rd.path / "summary.csv").read_text()


def test_figure_temporaries_and_figures_are_not_followed(tmp_path, victim):
    from mptcplab.figures import render

    rd = a_run(tmp_path)
    rd.figures.mkdir()
    for name in (".goodput.tmp.png", "goodput.png", ".goodput-cdf.tmp.png", "goodput-cdf.png"):
        (rd.figures / name).symlink_to(victim)
    files = render(rd.path, ["png"])
    assert sorted(f.name for f in files) == ["goodput-cdf.png", "goodput.png"]
    assert victim.read_text() == "precious\n"
    assert (rd.figures / "goodput.png").read_bytes().startswith(b"\x89PNG")
    assert not (rd.figures / "goodput.png").is_symlink()
    assert not [n for n in os.listdir(rd.figures) if n.endswith(".tmp") and not (rd.figures / n).is_symlink()]


def test_figures_dir_replaced_by_a_link_is_refused(tmp_path):
    from mptcplab.figures import render

    rd = a_run(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rd.figures.symlink_to(elsewhere)
    with pytest.raises(RunDirError, match="figures"):
        render(rd.path, ["png"])
    assert os.listdir(elsewhere) == []


def test_path_based_write_refuses_a_linked_parent(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "raw").symlink_to(real)
    with pytest.raises(RunDirError, match="symbolic link"):
        results.write_atomic(tmp_path / "raw" / "x-samples.csv", "a\n1\n")
    assert os.listdir(real) == []


# --------------------------------------------------------------------------- new directories only


def test_existing_out_is_refused_with_nothing_written(tmp_path):
    out = tmp_path / "out"
    out.mkdir()  # empty: the old code accepted it
    with pytest.raises(RunDirError) as e:
        RunDir.create("e", out=out)
    assert "--out" in str(e.value) and "--resume" in str(e.value)
    assert os.listdir(out) == []
    (out / "note").write_text("mine")
    with pytest.raises(RunDirError, match="--out"):
        RunDir.create("e", out=out)
    assert os.listdir(out) == ["note"]


def test_output_root_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "results"
    f.write_text("not a directory")
    with pytest.raises(RunDirError, match="outputs.dir: .*not a directory"):
        RunDir.create("e", root=f)
    with pytest.raises(RunDirError, match="--out: .*not a directory"):
        RunDir.create("e", out=f / "run")
    assert f.read_text() == "not a directory"


def test_system_directories_are_refused_before_anything_is_made():
    tag = f"mptcplab-test-{os.getpid()}"
    etc, usr = Path("/etc") / tag, Path("/usr/local") / tag
    assert not etc.exists() and not usr.exists()
    try:
        with pytest.raises(RunDirError, match="outputs.dir: .*system directory /etc"):
            RunDir.create("e", root=etc)
        with pytest.raises(RunDirError, match="--out: .*system directory /usr"):
            RunDir.create("e", out=usr)
        assert not os.path.lexists(etc) and not os.path.lexists(usr)
    finally:  # code that does not refuse (the old one) must not leave its directories there
        for made in (etc, usr):
            if made.is_dir() and not made.is_symlink():
                shutil.rmtree(made)


# --------------------------------------------------------------------------- outputs.dir in the spec


def spec_with_outputs(tmp_path: Path, out_dir: str) -> Path:
    spec = yaml.safe_load((REPO / "experiments/dual-path.yaml").read_text())
    spec["topology"] = str(REPO / "topologies/dual-path.yaml")
    spec["outputs"] = {"dir": out_dir}
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


@pytest.mark.parametrize("bad, system", [("/etc", "/etc"), ("/var/lib/x", "/var"), ("/", "/"),
                                         ("/usr/../sbin/r", "/sbin"), ("/lib64/r", "/lib64")])
def test_outputs_dir_refuses_system_directories(tmp_path, bad, system):
    with pytest.raises(SpecError) as e:
        load_spec(spec_with_outputs(tmp_path, bad))
    [line] = e.value.problems
    assert line.startswith("outputs.dir: ") and f"system directory {system}," in line
    assert "give a directory of your own" in line


def test_outputs_dir_refuses_a_link_into_a_system_directory(tmp_path):
    (tmp_path / "to-etc").symlink_to("/etc")
    with pytest.raises(SpecError, match="outputs.dir: .*system directory /etc"):
        load_spec(spec_with_outputs(tmp_path, str(tmp_path / "to-etc" / "r")))


def test_outputs_dir_allows_var_tmp_and_relative_dirs(tmp_path):
    assert load_spec(spec_with_outputs(tmp_path, "/var/tmp/mptcplab")).outputs.dir == "/var/tmp/mptcplab"
    assert load_spec(spec_with_outputs(tmp_path, "results")).outputs.dir == "results"


def test_outputs_dir_expands_home_of_the_sudo_user(tmp_path, monkeypatch):
    import pwd

    monkeypatch.setenv("SUDO_USER", "nobody")  # under sudo: the user's home, not root's
    assert load_spec(spec_with_outputs(tmp_path, "~/x")).outputs.dir == pwd.getpwnam("nobody").pw_dir + "/x"
    assert Outputs(dir="~").dir == pwd.getpwnam("nobody").pw_dir
    monkeypatch.delenv("SUDO_USER")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Outputs(dir="~/r").dir == str(tmp_path / "home" / "r")
    assert Outputs(dir="~nobody/r").dir == pwd.getpwnam("nobody").pw_dir + "/r"
    assert Outputs(dir="a/~/b").dir == "a/~/b"  # only a leading ~ is a home
    with pytest.raises(SpecError, match="outputs.dir: .*no user 'no-such-user-x'"):
        load_spec(spec_with_outputs(tmp_path, "~no-such-user-x/r"))


# --------------------------------------------------------------------------- reading back: validation


def crafted(tmp_path: Path, meta: dict | None = None, points: list | None = None) -> Path:
    rd = a_run(tmp_path)
    path = rd.path
    rd.close()
    if meta is not None:
        (path / "metadata.json").write_text(json.dumps(meta))
    if points is not None:
        (path / "points.json").write_text(json.dumps(points))
    return path


@pytest.mark.parametrize("run_id", ["20261127-101500-a3f9; touch /tmp/pwned", "../../etc/x", "x", 12,
                                    "20261127-101500-a3f9\n", ["20261127-101500-a3f9"]])
def test_crafted_run_id_is_refused_on_open(tmp_path, run_id):
    path = crafted(tmp_path, {"run_id": run_id, "experiment": "e"})
    for resume in (True, False):
        with pytest.raises(RunDirError) as e:
            RunDir.open_existing(path, resume=resume)
        assert "metadata.json: run_id:" in str(e.value)


def test_resume_needs_a_run_id_and_gives_the_validated_one(tmp_path):
    path = crafted(tmp_path, {"experiment": "e"})
    with pytest.raises(RunDirError, match="metadata.json: run_id: missing"):
        RunDir.open_existing(path, resume=True)
    (path / "metadata.json").write_text(json.dumps({"run_id": RUN_ID}))
    with RunDir.open_existing(path, resume=True) as rd:
        assert rd.run_id == RUN_ID and rd.format == 1  # no "format": a version 1 directory


@pytest.mark.parametrize("meta, field", [({"run_id": RUN_ID, "format": 99}, "format"),
                                         ({"run_id": RUN_ID, "format": "2"}, "format"),
                                         ({"run_id": RUN_ID, "experiment": "../x"}, "experiment"),
                                         ({"run_id": RUN_ID, "formats": ["exe"]}, "formats[0]")])
def test_damaged_metadata_is_refused_naming_the_field(tmp_path, meta, field):
    path = crafted(tmp_path, meta)
    with pytest.raises(RunDirError, match=f"metadata.json: {field.replace('[', '.').replace(']', '.')}"):
        RunDir.open_existing(path)


@pytest.mark.parametrize("points, field", [
    ([{"id": "../../x", "values": {}, "status": "done", "error": None}], "[0].id"),
    ([{"id": "p001", "values": {}, "status": "hacked", "error": None}], "[0].status"),
    ([{"id": "p001", "values": {}, "status": "done", "error": None, "cmd": "rm"}], "[0].cmd"),
    ([{"id": "p001", "values": {}, "status": "done"}, {"id": "p001", "values": {}, "status": "done"}], "p001"),
])
def test_damaged_points_are_refused_naming_the_field(tmp_path, points, field):
    path = crafted(tmp_path, points=points)
    with pytest.raises(RunDirError) as e:
        RunDir.open_existing(path, resume=True)
    assert "points.json: " in str(e.value) and field in str(e.value)


def test_metadata_records_the_format_and_old_runs_still_plot(tmp_path):
    from mptcplab.figures import render

    rd = a_run(tmp_path)
    assert json.loads((rd.path / "metadata.json").read_text())["format"] == FORMAT_VERSION == 2
    (rd.path / "metadata.json").write_text(json.dumps({"run_id": RUN_ID, "formats": ["png"]}))  # a version 1 run
    assert RunDir.open_existing(rd.path).format == 1
    assert sorted(f.name for f in render(rd.path)) == ["goodput-cdf.png", "goodput.png"]


# --------------------------------------------------------------------------- resume: lock and sweep values


def test_a_second_holder_of_the_run_directory_is_refused(tmp_path):
    rd = a_run(tmp_path)  # a run holds its directory from creation
    with pytest.raises(BusyError, match=f"pid {os.getpid()}"):
        RunDir.open_existing(rd.path, resume=True)
    rd.close()
    first = RunDir.open_existing(rd.path, resume=True)
    with pytest.raises(BusyError, match=f"pid {os.getpid()}"):
        RunDir.open_existing(rd.path, resume=True)
    RunDir.open_existing(rd.path).read_summary()  # plot needs no lock
    first.close()
    RunDir.open_existing(rd.path, resume=True).close()


def test_a_second_resume_in_another_process_is_refused(tmp_path):
    rd = a_run(tmp_path)
    code = ("import sys; from mptcplab.results import RunDir; from mptcplab.errors import BusyError\n"
            "try:\n    RunDir.open_existing(sys.argv[1], resume=True)\n"
            "except BusyError as e:\n    print(e); sys.exit(7)\n")
    r = subprocess.run([sys.executable, "-c", code, str(rd.path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 7 and f"pid {os.getpid()}" in r.stdout, r.stderr


def test_planted_lock_link_is_not_followed(tmp_path, victim):
    rd = a_run(tmp_path)
    rd.close()
    (rd.path / ".lock").unlink()
    (rd.path / ".lock").symlink_to(victim)
    with pytest.raises(RunDirError, match="symbolic link"):
        RunDir.open_existing(rd.path, resume=True)
    assert victim.read_text() == "precious\n"


def bw_points(*bws, index0: int = 1) -> list[Point]:
    return [Point(index0 + i, (("links[1].bw", bw),)) for i, bw in enumerate(bws)]


def test_resume_carries_done_points_by_their_values(tmp_path):
    rd = a_run(tmp_path)
    state = PointState.open(rd, bw_points(2, 4, 6))
    state.mark("p001", "done")
    state.mark("p002", "failed", "self-check failed")
    rd.write_summary(summary_rows(1, "p001") + summary_rows(1, "p003"))  # p003 killed half-way
    rd.close()
    rd = RunDir.open_existing(rd.path, resume=True)
    state = PointState.open(rd, bw_points(2, 4, 6))
    assert state.done_ids() == {"p001"} and state.status("p002") == "failed"
    rows, subs = read_rows(rd, state.done_ids(), unnamed="p001")
    assert {r["point"] for r in rows} == {"p001"} and subs == []


@pytest.mark.parametrize("new, says", [
    (bw_points(2, 5, 6), "point p002 (links[1].bw=5) is not in the recorded run"),
    (bw_points(2, 4), "recorded point p003 (links[1].bw=6) is not in this sweep"),
    (bw_points(2, 4, 6, 8), "point p004 (links[1].bw=8) is not in the recorded run"),
    (bw_points(4, 2, 6), "point links[1].bw=4 was p002 and would now be p001"),
    (bw_points(2.0, 4, 6), "point p001 (links[1].bw=2.0) is not in the recorded run"),
])
def test_resume_with_changed_sweep_values_is_refused(tmp_path, new, says):
    rd = a_run(tmp_path)
    PointState.open(rd, bw_points(2, 4, 6)).mark("p001", "done")
    before = (rd.path / "points.json").read_bytes()
    rd.close()
    rd = RunDir.open_existing(rd.path, resume=True)
    with pytest.raises(RunDirError) as e:
        PointState.open(rd, new)
    assert says in str(e.value) and "new run" in str(e.value)
    assert (rd.path / "points.json").read_bytes() == before


def test_rows_without_a_point_belong_to_the_single_point(tmp_path):
    rd = a_run(tmp_path)
    rd.write_subflows([{"test": "001-mptcp-r1", "share": 1.0}])
    assert [len(x) for x in read_rows(rd, {"p001"}, unnamed="p001")] == [4, 1]
    assert read_rows(rd, set(), unnamed="p001") == ([], [])


# --------------------------------------------------------------------------- plot as the run's owner


@pytest.fixture
def shared_tmp():
    """A directory every user can enter (pytest's own is 0700 root's)."""
    d = Path(tempfile.mkdtemp(prefix="mptcplab-test-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


def plot_as_nobody(run_dir: Path, shared: Path) -> subprocess.CompletedProcess[str]:
    cfg = shared / "mplconfig"
    cfg.mkdir(exist_ok=True)
    os.chown(cfg, NOBODY, NOBODY)
    src = str(Path(results.__file__).resolve().parents[1])
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": src, "MPLCONFIGDIR": str(cfg), "HOME": str(cfg)}
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           str(Path(sys.executable).parent / "mptcplab"), "plot", str(run_dir), "-f", "png"],
                          capture_output=True, text=True, env=env, cwd=shared, timeout=300)


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_plot_works_as_the_unprivileged_owner(shared_tmp, monkeypatch, sudo_nobody):
    rd = a_run(shared_tmp)  # as `sudo make run` would leave it: everything the user's
    rd.close()
    assert not rd.figures.exists()
    r = plot_as_nobody(rd.path, shared_tmp)
    assert r.returncode == 0, r.stderr
    assert sorted(Path(p).name for p in r.stdout.split()) == ["goodput-cdf.png", "goodput.png"]
    for p in (rd.figures, rd.figures / "goodput.png"):
        assert p.stat().st_uid == NOBODY
    assert stat.S_IMODE((rd.figures / "goodput.png").stat().st_mode) == 0o644


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_plot_of_a_run_the_user_cannot_write_says_so(shared_tmp, monkeypatch):
    monkeypatch.delenv("SUDO_UID", raising=False)
    monkeypatch.delenv("SUDO_GID", raising=False)
    rd = a_run(shared_tmp)  # root's, without sudo: readable, not writable by others
    rd.close()
    r = plot_as_nobody(rd.path, shared_tmp)
    assert r.returncode == 2 and "figures: permission denied" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not rd.figures.exists()


def test_plot_of_a_damaged_run_is_one_line_not_a_traceback(tmp_path):
    path = crafted(tmp_path, {"run_id": "x; reboot"})
    r = subprocess.run([str(Path(sys.executable).parent / "mptcplab"), "plot", str(path)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and "metadata.json: run_id:" in r.stderr and "Traceback" not in r.stderr

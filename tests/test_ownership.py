"""`sudo make run` (root): the results belong to the user who called sudo, who can read them and
draw the figures again without root. Played here with SUDO_UID/SUDO_GID/SUDO_USER naming
nobody (65534) and `setpriv` to act as that user afterwards.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import BIN, cli, dual_path_spec

pytestmark = pytest.mark.root

NOBODY = 65534


@pytest.fixture
def shared_dir():
    """A tmp dir uid 65534 can reach: pytest's own sits under /tmp/pytest-of-root, mode 0700."""
    d = Path(tempfile.mkdtemp(prefix="mptcplab-owner-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def as_nobody(*argv: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", *argv],
                          capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def wrong_owner_or_mode(run_dir: Path) -> list[str]:
    """Every file or directory of the run (the run dir too) not owned by 65534:65534 with mode
    0644 (files) or 0755 (directories)."""
    wrong = []
    for p in [run_dir, *sorted(run_dir.rglob("*"))]:
        st = p.lstat()
        want = 0o755 if stat.S_ISDIR(st.st_mode) else 0o644
        if (st.st_uid, st.st_gid) != (NOBODY, NOBODY) or stat.S_IMODE(st.st_mode) != want:
            wrong.append(f"{p.relative_to(run_dir.parent)}: {st.st_uid}:{st.st_gid} "
                         f"{stat.S_IMODE(st.st_mode):04o} (want {NOBODY}:{NOBODY} {want:04o})")
    return wrong


def test_sudo_run_leaves_results_the_invoking_user_can_read_and_plot(shared_dir, no_leftovers):
    out = shared_dir / "run"
    sudo = {**os.environ, "SUDO_UID": str(NOBODY), "SUDO_GID": str(NOBODY), "SUDO_USER": "nobody"}
    r = cli("run-experiment", str(dual_path_spec(shared_dir, duration=2)), "--out", str(out), env=sudo)
    assert r.returncode == 0, r.stderr
    problems = [f"owner/mode: {w}" for w in wrong_owner_or_mode(out)]

    mpl = shared_dir / "mplconfig"
    mpl.mkdir()
    os.chown(mpl, NOBODY, NOBODY)
    user = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp", "MPLCONFIGDIR": str(mpl)}
    if os.environ.get("PYTHONPATH"):
        user["PYTHONPATH"] = os.environ["PYTHONPATH"]
    figures = out / "figures"
    before = {p.name: p.stat().st_mtime_ns for p in figures.iterdir()} if figures.exists() else {}
    plot = as_nobody(str(BIN / "mptcplab"), "plot", str(out), env=user, cwd=shared_dir)
    drawn = [Path(line) for line in plot.stdout.split() if line.startswith(str(figures))]
    if plot.returncode != 0:
        problems.append(f"plot as uid {NOBODY}: exit {plot.returncode}: {plot.stderr.strip()[-1500:]}")
    elif not drawn:
        problems.append(f"plot as uid {NOBODY} named no figure: {plot.stdout!r}")
    for p in drawn:  # written anew, by the user
        if not p.exists() or p.stat().st_mtime_ns <= before.get(p.name, 0) or p.stat().st_uid != NOBODY:
            problems.append(f"plot as uid {NOBODY} did not write {p.name}")

    read = as_nobody("cat", str(out / "summary.csv"), env=user, cwd=shared_dir)
    if read.returncode != 0 or read.stdout != (out / "summary.csv").read_text():
        problems.append(f"reading summary.csv as uid {NOBODY}: exit {read.returncode}: {read.stderr.strip()}")
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:25])

"""The command line as a researcher meets it: bad input exits 2, names the field, no traceback,
creates nothing."""

import json
import os
import shutil

import pytest

from helpers import REPO, cli, write_spec


def _loss(spec):
    spec["topology"]["links"][2]["loss"] = 150


def _name(spec):
    spec["topology"]["hosts"]["h1;rm"] = spec["topology"]["hosts"].pop("h1")


@pytest.mark.parametrize("mutate,expected", [
    (_loss, "topology.links[2].loss: 150 is not between 0 and 100"),
    (_name, "topology.hosts.h1;rm: 'h1;rm' is not a valid node name"),
])
def test_bad_spec_exit_2_names_field(tmp_path, mutate, expected):
    r = cli("run-experiment", str(write_spec(tmp_path, inline_topology=True, mutate=mutate)))
    assert r.returncode == 2
    assert expected in r.stderr.replace("\n", " ")
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    assert not (tmp_path / "results").exists()


def test_missing_spec_and_bad_out(tmp_path):
    r = cli("run-experiment", "no-such-experiment")
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr


def test_dry_run_prints_plan_and_touches_nothing(tmp_path):
    r = cli("run-experiment", "dual-path", "--dry-run")
    assert r.returncode == 0, r.stderr
    text = r.stderr + r.stdout
    assert "10.0.2.2/24" in text and "signal" in text and "006-tcp-r3" in text


def test_schema_command():
    r = cli("mptcplab", "schema")
    assert r.returncode == 0
    assert "traffic" in json.loads(r.stdout)["properties"]


def test_plot_on_non_run_dir(tmp_path):
    r = cli("mptcplab", "plot", str(tmp_path))
    assert r.returncode == 2 and "no summary.csv" in r.stderr


def test_crafted_run_id_on_resume_creates_nothing(tmp_path):
    """metadata.json is data anyone who can write the run directory controls: a run id that is
    not one is refused before it reaches OVS or a file path."""
    victim = tmp_path / "PWNED"
    run = tmp_path / "run"
    shutil.copytree(REPO / "tests/data/recorded-run", run)
    meta = json.loads((run / "metadata.json").read_text())
    meta["run_id"] = f"x;touch {victim};#"
    (run / "metadata.json").write_text(json.dumps(meta))
    before = sorted(p.name for p in run.rglob("*"))
    r = cli("run-experiment", "--resume", str(run))
    assert r.returncode == 2, r.stderr
    assert "metadata.json" in r.stderr and "run_id" in r.stderr and "Traceback" not in r.stderr
    assert not victim.exists()
    assert sorted(p.name for p in run.rglob("*")) == before  # not even a lock file


def test_custom_figure_naming_a_missing_column_is_refused_before_the_run(tmp_path):
    spec = write_spec(tmp_path, mutate=lambda s: s.update(figures=[{"x": "links.h1-s1.loss", "y": "goodput"}]))
    r = cli("run-experiment", str(spec), "--dry-run")
    assert r.returncode == 2
    assert "figures[0].x: 'links.h1-s1.loss' is not a column of summary.csv" in r.stderr.replace("\n", " ")
    assert "figures[0].y: 'goodput' is not a column" in r.stderr.replace("\n", " ")
    r = cli("run-experiment", str(spec), "--dry-run", "--set", "links.h1-s1.loss=0,1")
    assert "figures[0].x" not in r.stderr and "figures[0].y: 'goodput'" in r.stderr.replace("\n", " ")


def test_pox_reached_only_through_a_swept_kind_is_checked_up_front(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "POX_HOME"}
    spec = write_spec(tmp_path, "three-path", traffic={"duration": 1, "repetitions": 1})
    r = cli("run-experiment", str(spec), "--dry-run", "--set", "controller.kind=static,pox", env=env)
    assert r.returncode == 2, r.stderr
    assert "controller.kind: pox, but no POX checkout was found" in r.stderr.replace("\n", " ")
    assert not (tmp_path / "results").exists()


def test_fields_a_sweep_cannot_vary(tmp_path):
    r = cli("run-experiment", "dual-path", "--dry-run", "--set", "outputs.dir=/tmp/a,/tmp/b")
    assert r.returncode == 2 and "sweep: outputs.dir: one run has one name" in r.stderr.replace("\n", " ")


def test_plot_on_a_damaged_summary_is_one_line(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(REPO / "tests/data/recorded-run", run)
    (run / "summary.csv").write_text("a,b\n1,2\n")
    r = cli("mptcplab", "plot", str(run))
    assert r.returncode == 2 and "summary.csv: no column" in r.stderr and "Traceback" not in r.stderr


def test_plot_of_a_run_where_every_test_failed_draws_nothing_and_says_so(tmp_path):
    import pandas as pd

    run = tmp_path / "run"
    shutil.copytree(REPO / "tests/data/recorded-run", run)
    df = pd.read_csv(run / "summary.csv")
    df["error"], df["goodput_mbps"] = "iperf3: the server has terminated", None
    df.to_csv(run / "summary.csv", index=False)
    r = cli("mptcplab", "plot", str(run))
    assert r.returncode == 0 and r.stdout == "" and "Traceback" not in r.stderr


def test_resume_over_the_leftovers_of_a_killed_attempt_asks_for_clean(tmp_path):
    """A resume removes what the last attempt recorded before it records the run afresh; a
    record it cannot read it does not act on, and it refuses (`mptcplab clean` reports it). The
    dry run says what the resume would remove."""
    run = tmp_path / "run"
    shutil.copytree(REPO / "tests/data/recorded-run", run)
    state = tmp_path / "state"
    state.mkdir()
    run_id = json.loads((run / "metadata.json").read_text())["run_id"]
    (state / f"{run_id}.json").write_text("{}")
    env = {**os.environ, "MPTCPLAB_STATE_DIR": str(state)}
    r = cli("run-experiment", "--resume", str(run), "--dry-run", env=env)
    assert f"left 1 network(s) recorded ({run_id})" in r.stderr.replace("\n", " "), r.stderr
    assert (state / f"{run_id}.json").read_text() == "{}"  # the dry run changed nothing
    if os.geteuid() == 0:
        r = cli("run-experiment", "--resume", str(run), env={**env, "MPTCPLAB_LOCK_DIR": str(tmp_path / "locks")})
        text = " ".join(r.stderr.split())
        assert r.returncode == 2 and "not acted on" in text and "run `mptcplab clean` first" in text, r.stderr
        assert (state / f"{run_id}.json").read_text() == "{}"


def test_no_spec_and_no_resume():
    r = cli("run-experiment", "--dry-run")
    assert r.returncode == 2 and "SPEC: give an experiment spec" in r.stderr and "Traceback" not in r.stderr

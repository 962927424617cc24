"""The command line as a researcher meets it: bad input exits 2, names the field, no traceback,
creates nothing."""

import json
from pathlib import Path

import pytest
import yaml

from helpers import REPO, cli


def write_spec(tmp_path: Path, mutate) -> Path:
    spec = yaml.safe_load((REPO / "experiments/dual-path.yaml").read_text())
    topo = yaml.safe_load((REPO / "topologies/dual-path.yaml").read_text())
    spec["topology"] = topo
    spec["outputs"]["dir"] = str(tmp_path / "results")
    mutate(spec)
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def _loss(spec):
    spec["topology"]["links"][2]["loss"] = 150


def _name(spec):
    spec["topology"]["hosts"]["h1;rm"] = spec["topology"]["hosts"].pop("h1")


@pytest.mark.parametrize("mutate,expected", [
    (_loss, "topology.links[2].loss: 150 is not between 0 and 100"),
    (_name, "topology.hosts.h1;rm: 'h1;rm' is not a valid node name"),
])
def test_bad_spec_exit_2_names_field(tmp_path, mutate, expected):
    r = cli("run-experiment", str(write_spec(tmp_path, mutate)))
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

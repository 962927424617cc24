"""`mptcplab check SPEC`: per link, the backend shaper auto picks on this kernel and why, for
every sweep point whose picks differ (pure: netem's presence is given, nothing is built)."""

from __future__ import annotations

import io

import pytest
import typer
from rich.console import Console

from helpers import REPO
from mptcplab import cli


def table_text(spec, netem: bool, monkeypatch) -> str:
    monkeypatch.setattr("mptcplab.capabilities.has_netem", lambda: netem)
    out = io.StringIO()
    Console(file=out, width=200).print(cli._backend_table(str(spec)))
    return out.getvalue()


def test_each_link_with_its_backend_and_why(monkeypatch):
    spec = REPO / "experiments" / "dual-path.yaml"
    text = table_text(spec, True, monkeypatch)
    assert "this kernel has netem" in text
    assert text.count("delay, jitter or loss, and this kernel has netem") == 4
    for name in ("h1-s1", "h1-s2", "s1-h2", "s2-h2"):
        assert name in text
    text = table_text(spec, False, monkeypatch)
    assert text.count("userspace") == 4 and "this kernel has no netem qdisc" in text


def test_a_spec_that_asks_for_netem_on_a_kernel_without_it(tmp_path, monkeypatch):
    from helpers import write_spec

    spec = write_spec(tmp_path, "dual-path", mutate=lambda s: s.update(emulation={"shaper": "netem"}))
    text = table_text(spec, False, monkeypatch)
    assert "shaper netem (the spec's)" in text
    assert "refused: shaper netem: this kernel has no netem qdisc" in text


def test_a_missing_spec_is_a_clear_error(tmp_path):
    with pytest.raises(typer.Exit) as e:
        cli._backend_table(str(tmp_path / "nope.yaml"))
    assert e.value.exit_code == 2


def swept(tmp_path, parameters: dict):
    from helpers import write_spec

    return write_spec(tmp_path, "dual-path", mutate=lambda s: s.update(sweep={"parameters": parameters}))


def test_every_point_of_a_sweep_whose_picks_differ_has_its_table(tmp_path, monkeypatch):
    """A swept delay or loss changes auto's pick on a kernel without netem (htb + pfifo for rate
    and queue alone, the user-space emulator with delay or loss): the first point alone does not
    say it. Points p002-p004 (delay or loss on h1-s2) share a table; p001 has its own."""
    spec = swept(tmp_path, {"links.h1-s2.delay": [0, 20], "links.h1-s2.loss": [0, 1]})
    text = " ".join(table_text(spec, False, monkeypatch).split())  # titles wrap
    first, _, rest = text.partition("p002")
    assert "dual-path: links at p001 (this kernel has no netem)" in first
    assert "p001: links.h1-s2.delay=0, links.h1-s2.loss=0" in first  # the caption
    assert "links at p002, p003, p004 (" in text and "p003: links.h1-s2.delay=20, links.h1-s2.loss=0" in rest
    assert first.count("rate and queue only") == 1 and first.count("userspace") == 3
    assert "rate and queue only" not in rest and rest.count("userspace") == 4
    # with netem every point picks netem for every link, but the why differs at p001
    text = " ".join(table_text(spec, True, monkeypatch).split())
    assert text.count("dual-path: links at") == 2 and "links at p001 (this kernel has netem)" in text


def test_a_sweep_whose_picks_never_change_has_one_table(tmp_path, monkeypatch):
    spec = swept(tmp_path, {"links.h1-s2.bw": [2, 5, 10]})
    text = table_text(spec, False, monkeypatch)
    assert text.count("dual-path: links") == 1 and "links at every point (3)" in text
    assert "p001:" not in text
    assert text.count("userspace") == 4


def test_many_points_are_named_by_runs_of_ids(tmp_path, monkeypatch):
    """Six points without loss on h1-s2 (and no delay) and six with it: each table names its
    points, as runs of ids when there are many (the sweep's parameters vary the last fastest:
    here loss, so the two sets alternate)."""
    spec = swept(tmp_path, {"links.h1-s2.delay": [0], "links.h1-s2.bw": [1, 2, 3, 4, 5, 6], "links.h1-s2.loss": [0, 1]})
    text = " ".join(table_text(spec, False, monkeypatch).split())
    assert "links at 6 points: p001, p003, p005, p007, p009, p011 (" in text
    assert "links at 6 points: p002, p004, p006, p008, p010, p012 (" in text
    from mptcplab.cli import _point_names
    from mptcplab.sweep import Point

    pts = [Point(i, (("x", i),)) for i in (1, 2, 3, 5, 7, 8)]
    assert _point_names(pts) == "6 points: p001-p003, p005, p007-p008"
    assert _point_names(pts[:2]) == "p001, p002"
    assert cli._point_labels(pts[:2]) == "p001: x=1; p002: x=2" and cli._point_labels(pts) is None


def test_a_point_the_planner_refuses_is_a_clear_error(tmp_path, monkeypatch):
    spec = swept(tmp_path, {"links.h1-s2.bw": [5, -1]})
    monkeypatch.setattr("mptcplab.capabilities.has_netem", lambda: False)
    with pytest.raises(typer.Exit) as e:
        cli._backend_table(str(spec))
    assert e.value.exit_code == 2

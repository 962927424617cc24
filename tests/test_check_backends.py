"""`mptcplab check SPEC`: per link, the backend shaper auto picks on this kernel and why (pure:
netem's presence is given, nothing is built)."""

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

"""The kernel series' files and the UML check's verdict logic (no kernel build here: `make -C
kernel-patches test` builds and boots it; see kernel-patches/README.md)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

KP = Path(__file__).resolve().parent.parent / "kernel-patches"


def load_uml():
    spec = importlib.util.spec_from_file_location("uml", KP / "uml" / "uml.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_series_lists_every_patch_in_order_with_sign_off():
    names = (KP / "series").read_text().split()
    assert names == sorted(p.name for p in KP.glob("*.patch"))
    for i, name in enumerate(names, 1):
        text = (KP / name).read_text()
        assert name.startswith(f"{i:04d}-")
        assert re.search(r"^Signed-off-by: .+ <.+>$", text, re.MULTILINE), name
        assert re.search(r"^diff --git ", text, re.MULTILINE), name


def e2e_result(auto_walks: int, user_walks: int, complete: bool = True) -> dict:
    def run(mode: str, walks: int) -> dict:
        return {"mode": mode, "flaps": 1000, "flap_seconds": 1.0, "walks": walks,
                "walks_per_flap": walks / 1000, "events_queued": 0, "events_cancelled": 0,
                "second_subflow_joined": True, "sent": 10, "received": 10 if complete else 9,
                "transfer_complete": complete, "transfer_error": None}
    return {"kernel": "6.12", "boot_to_poweroff_seconds": 1.0,
            "runs": [run("automatic endpoints", auto_walks), run("userspace del/add", user_walks)]}


@pytest.mark.parametrize(("auto", "user", "complete", "ok"), [
    (0, 2000, True, True),
    (1, 2000, True, False),     # one walk with automatic endpoints is a failure
    (0, 1999, True, False),     # the userspace way must really cost 2 per flap
    (0, 2000, False, False),    # a transfer that did not complete
])
def test_e2e_verdict(auto, user, complete, ok, capsys):
    assert load_uml().report_e2e(e2e_result(auto, user, complete)) is ok
    assert ("passed" if ok else "FAILED") in capsys.readouterr().out


def test_missing_kernel_is_a_clear_error(tmp_path, monkeypatch, capsys):
    uml = load_uml()
    monkeypatch.setattr("sys.argv", ["uml.py", str(tmp_path / "linux"), "e2e"])
    assert uml.main() == 2
    assert "make -C kernel-patches uml" in capsys.readouterr().err

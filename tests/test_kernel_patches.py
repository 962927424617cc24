"""The kernel series' files and the UML check's verdict logic (no kernel build here: `make -C
kernel-patches test` builds and boots it; see kernel-patches/README.md)."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

KP = Path(__file__).resolve().parent.parent / "kernel-patches"


def load_script(name: str):
    """kernel-patches/uml/NAME.py as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, KP / "uml" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_uml():
    return load_script("uml")


def test_series_lists_every_patch_in_order_with_sign_off():
    """The MPTCP series touches MPTCP (and its documentation) only; the UML harness's own fix
    is a patch of its own in harness/, outside the series."""
    names = (KP / "series").read_text().split()
    assert names == sorted(p.name for p in KP.glob("*.patch"))
    for i, name in enumerate(names, 1):
        text = (KP / name).read_text()
        assert name.startswith(f"{i:04d}-")
        assert re.search(rf"^Subject: \[PATCH {i}/{len(names)}\] mptcp: ", text, re.MULTILINE), name
        assert re.search(r"^Signed-off-by: .+ <.+>$", text, re.MULTILINE), name
        touched = re.findall(r"^diff --git a/(\S+)", text, re.MULTILINE)
        assert touched and all(t.startswith(("net/mptcp/", "Documentation/networking/mptcp")) for t in touched), name
    harness = sorted(KP.glob("harness/*.patch"))
    assert harness and all(re.search(r"^diff --git a/arch/um/", p.read_text(), re.MULTILINE) for p in harness)


def e2e_result(auto_walks: int, user_walks: int, complete: bool = True, kept: bool = True,
               user_kept: bool | None = True, v6_walks: int = 0,
               subflows_after: tuple[str, ...] = ("10.1.2.1%c2:40000",)) -> dict:
    def run(auto: bool, family: str, walks: int) -> dict:
        return {"mode": f"{auto} {family}", "automatic": auto, "family": family, "flaps": 1000,
                "flap_seconds": 1.0, "walks": walks, "walks_per_flap": walks / 1000,
                "events_queued": 0, "events_cancelled": 0, "second_subflow_joined": True,
                "sent": 10, "received": 10 if complete else 9, "transfer_complete": complete,
                "transfer_error": None, "endpoints_after": ["10.1.2.1 id 1 subflow dev c2"],
                "endpoints_kept": kept, "user_endpoint_kept": user_kept if auto else None,
                "second_path_subflows_before": ["10.1.2.1%c2:40000"],
                "second_path_subflows_after": list(subflows_after)}
    def default_delay(auto: bool, walks: int) -> dict:  # the flapping outlasts the window
        return {**run(auto, "IPv4", walks), "one_window": False, "delay_ms": 100, "daemon": not auto,
                "daemon_changes": None if auto else walks, "second_path_subflows_after": ["10.1.2.1%c2:40009"]}
    return {"kernel": "6.12", "boot_to_poweroff_seconds": 1.0, "dad": dict(DAD_OK), "takeover": dict(TAKEOVER_OK),
            "runs": [run(True, "IPv4", auto_walks), run(False, "IPv4", user_walks),
                     run(True, "IPv6", v6_walks), default_delay(True, 6), default_delay(False, 7)]}


#: The DAD check as the fixed kernel passes it.
DAD_OK = {"delay_ms": 100, "valid_dad_ms": 1650, "valid_endpoint_ms": 1720,
          "valid_endpoint_while_tentative": False, "valid_endpoint": True,
          "duplicate_flags": ["dadfailed", "tentative"], "duplicate_endpoint": False,
          "deprecated_flags": ["deprecated", "nodad"], "deprecated_endpoint": False, "walks": 1}


#: A user's add over the kernel's automatic endpoint, as the fixed kernel passes it.
TAKEOVER_OK = {"delay_ms": 100, "automatic": ["10.9.0.1 id 1 subflow implicit dev c1"], "automatic_id": "1",
               "user_add": "ok", "after_add": ["10.9.0.1 id 1 signal backup dev c1"],
               "after_flap": ["10.9.0.1 id 1 signal backup dev c1"], "automatic_shows_implicit": True,
               "user_endpoint": True, "user_endpoint_kept": True}


@pytest.mark.parametrize(("change", "ok"), [
    ({}, True),
    ({"user_add": "ip -n clit mptcp endpoint add 10.9.0.1 ...: Error: File exists"}, False),  # before: EEXIST
    ({"automatic_shows_implicit": False}, False),  # dumps cannot tell the kernel's from the user's
    ({"user_endpoint": False}, False),
    ({"user_endpoint_kept": False}, False),
    (None, False),  # no takeover check at all
])
def test_e2e_verdict_on_a_users_add_over_an_automatic_endpoint(change, ok, capsys):
    assert_verdict_with("takeover", change, ok, capsys)


def assert_verdict_with(check: str, change: dict | None, ok: bool, capsys) -> None:
    """The e2e verdict on a passing result whose CHECK part is changed (or missing: None)."""
    result = e2e_result(0, 2000)
    if change is None:
        del result[check]
    else:
        result[check].update(change)
    assert load_uml().report_e2e(result) is ok
    assert ("passed" if ok else "FAILED") in capsys.readouterr().out


@pytest.mark.parametrize(("change", "ok"), [
    ({}, True),
    ({"valid_endpoint": False, "valid_endpoint_ms": None}, False),  # the bug: never an endpoint
    ({"valid_endpoint_while_tentative": True}, False),  # an endpoint for an unusable address
    ({"duplicate_endpoint": True}, False),
    ({"duplicate_flags": ["tentative"]}, False),  # the duplicate was not detected: nothing shown
    ({"deprecated_endpoint": True}, False),
    (None, False),  # no DAD check at all
])
def test_e2e_verdict_on_ipv6_dad(change, ok, capsys):
    assert_verdict_with("dad", change, ok, capsys)


@pytest.mark.parametrize(("case", "ok"), [
    ({}, True),
    ({"auto_walks": 1}, False),    # one walk with automatic endpoints is a failure
    ({"v6_walks": 1}, False),      # ... over IPv6 too
    ({"user_walks": 1999}, False),  # the userspace way must really cost 2 per flap
    ({"complete": False}, False),  # a transfer that did not complete
    ({"kept": False}, False),      # endpoints that did not end as they began
    ({"user_kept": False}, False),  # the user's endpoint touched
    ({"user_kept": None}, False),  # ... or not checked at all
    ({"subflows_after": ()}, False),  # no subflow left on the second path
    ({"subflows_after": ("10.1.2.1%c2:40001",)}, False),  # a new one: the old one was closed
])
def test_e2e_verdict(case, ok, capsys):
    args = {"auto_walks": 0, "user_walks": 2000} | case
    assert load_uml().report_e2e(e2e_result(**args)) is ok
    assert ("passed" if ok else "FAILED") in capsys.readouterr().out


def test_e2e_says_when_the_flapping_outlasted_the_batch_window(capsys):
    result = e2e_result(0, 2000, v6_walks=2)
    result["runs"][2].update(delay_ms=2000, flap_seconds=33.1)
    assert load_uml().report_e2e(result) is False
    assert "outlasted the batch window (10 x pm_auto_delay_ms = 20 s)" in capsys.readouterr().out


def test_e2e_verdict_wants_every_run(capsys):
    result = e2e_result(0, 2000)
    result["runs"].pop()  # no IPv6 run
    assert load_uml().report_e2e(result) is False


def test_missing_kernel_is_a_clear_error(tmp_path, monkeypatch, capsys):
    uml = load_uml()
    monkeypatch.setattr("sys.argv", ["uml.py", str(tmp_path / "linux"), "e2e"])
    assert uml.main() == 2
    assert "make -C kernel-patches uml" in capsys.readouterr().err


def test_kernel_cpu_windows_pair_begin_and_end_marks():
    marks = [("begin 0:batched:add", 1_000_000), ("end 0:batched:add", 3_500_000),
             ("end 9:stray:add", 9_000_000),  # an end without a begin is ignored
             ("begin 0:batched:add", 10_000_000), ("end 0:batched:add", 10_500_000)]
    assert load_uml().windows(marks) == {"0:batched:add": [2.5, 0.5]}


def test_kernel_cpu_of_this_process_grows():
    uml = load_uml()
    before = uml.kernel_cpu_ns(os.getpid())
    sum(i * i for i in range(200_000))
    assert uml.kernel_cpu_ns(os.getpid()) > before > 0


def bench_result(windows: dict[str, list[float]]) -> dict:
    rows = [{"connections": n, "address_changes": 8, "phase": "add", "mode": mode,
             "walks_per_burst": 1.0 if mode == "batched" else 8.0,
             "cpu_ms_per_burst": 10.0, "ip_wall_ms_per_burst": 10.0}
            for n in (0, 1000) for mode in ("batched", "unbatched")]
    return {"kernel": "6.12", "boot_to_poweroff_seconds": 1.0, "rows": rows,
            "kernel_cpu_windows": windows}


def test_bench_ratios_use_host_kernel_time_when_every_burst_has_it(capsys):
    windows = {"0:batched:add": [10.0], "0:unbatched:add": [12.0],
               "1000:batched:add": [11.0, 13.0], "1000:unbatched:add": [30.0]}
    load_uml().report_bench(bench_result(windows))
    out = capsys.readouterr().out
    assert "(kernel_ms_per_burst)" in out
    # 1000 add: batched 12 (mean of 11, 13) vs unbatched 30; above baseline 18 / 2 = 9x
    assert re.search(r"1000 add +walks +8\.00x +time +2\.50x +above baseline: +18\.00 / +2\.00 ms "
                     r"= +9\.00x", out), out


def test_bench_falls_back_to_guest_ticks_without_marks(capsys):
    load_uml().report_bench(bench_result({}))
    assert "(cpu_ms_per_burst)" in capsys.readouterr().out


def load_pytest_runner():
    return load_script("pytest_in_uml")


def test_pytest_runner_passes_arguments_without_spaces_or_a_shell():
    mod = load_pytest_runner()
    args = ["-v", "-m", "netem", "-k", "rate or delay", "tests"]
    argv = mod.kernel_args(Path("/k/linux"), Path("/repo"), "/repo/.venv/bin/python", args, "1G")
    assert argv[0] == "/k/linux" and "init=" + str(KP / "uml" / "pytest-init.sh") in argv
    assert all(" " not in a for a in argv)
    encoded = next(a for a in argv if a.startswith("mptcplab_args=")).split("=", 1)[1]
    import json
    assert json.loads(bytes.fromhex(encoded)) == args
    assert mod.result_of("boot...\nMPTCPLAB-RESULT {\"returncode\": 3}\nreboot") == {"returncode": 3}
    assert mod.result_of("Kernel panic") is None


GUEST_TESTS = """
import pytest

def test_ok():
    pass

def test_skipped_inside():
    pytest.skip("no netem here")

@pytest.mark.skip(reason="marked")
def test_marked():
    pass

@pytest.mark.xfail(reason="known")
def test_xfailed():
    assert 0

@pytest.fixture
def broken():
    raise RuntimeError("setup")

def test_setup_error(broken):
    pass

def test_failed():
    assert 0
"""


def guest_outcomes(tmp_path: Path, files: dict[str, str]) -> tuple[int, dict | None]:
    """pytest run on ``files`` as the guest runs it (its options, its JUnit report), and the
    outcomes the guest would report."""
    import subprocess
    import sys

    guest = load_script("pytest_guest")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    junit = tmp_path / "junit.xml"
    opts = [o for o in guest.PYTEST_OPTS if not o.startswith(("--junitxml", "--basetemp"))]
    r = subprocess.run([sys.executable, "-m", "pytest", *opts, f"--junitxml={junit}", "-q",
                        "--rootdir", str(tmp_path), str(tmp_path)], cwd=tmp_path, capture_output=True, text=True)
    return r.returncode, guest.report_outcomes(str(junit))


def test_the_guest_reports_every_test_that_did_not_pass_from_pytests_junit_report(tmp_path):
    """Every way a test can fail to pass -- skipped inside, skipped by a mark, skipped with its
    module at collection, xfailed, failed, errored in setup -- is in the guest's result."""
    files = {"test_a.py": GUEST_TESTS,
             "test_b.py": "import pytest\npytest.importorskip('no_such_module_here')\n"}
    rc, found = guest_outcomes(tmp_path, files)
    assert rc == 1 and found is not None
    assert found["counts"] == {"passed": 1, "skipped": 3, "xfailed": 1, "failed": 1, "error": 1}
    by_test = {t["test"]: (t["outcome"], t["reason"]) for t in found["not_passed"]}
    assert by_test["test_a::test_skipped_inside"] == ("skipped", "no netem here")
    assert by_test["test_a::test_marked"] == ("skipped", "marked")
    assert by_test["test_a::test_xfailed"] == ("xfailed", "known")
    assert by_test["test_a::test_failed"][0] == "failed"
    assert by_test["test_a::test_setup_error"][0] == "error"
    assert by_test["test_b"][0] == "skipped"
    assert load_script("pytest_guest").report_outcomes(str(tmp_path / "none.xml")) is None


def test_the_guest_run_fails_when_pytest_exits_0_with_a_skip(tmp_path):
    """pytest exits 0 with skipped tests; the runner's verdict does not."""
    rc, found = guest_outcomes(tmp_path, {"test_a.py": "import pytest\n\ndef test_ok():\n    pass\n\n"
                                                       "def test_skipped():\n    pytest.skip('no tc here')\n"})
    assert rc == 0
    code, lines = load_pytest_runner().verdict({"returncode": rc, "outcomes": found})
    assert code == 1
    assert "uml: not passed in the guest: test_a::test_skipped: skipped: no tc here" in lines


def test_the_runner_verdict():
    verdict = load_pytest_runner().verdict
    passed = {"counts": {"passed": 12}, "not_passed": []}
    assert verdict({"returncode": 0, "outcomes": passed}) == (0, ["uml: in the guest: 12 passed"])
    assert verdict({"returncode": 1, "outcomes": passed})[0] == 1  # pytest's own failure kept
    xfailed = {"counts": {"passed": 1, "xfailed": 1},
               "not_passed": [{"test": "t::x", "outcome": "xfailed", "reason": "known"}]}
    assert verdict({"returncode": 0, "outcomes": xfailed})[0] == 1
    assert verdict({"returncode": 0, "outcomes": {"counts": {}, "not_passed": []}})[0] == 1  # no test ran
    assert verdict({"returncode": 0, "outcomes": None})[0] == 1  # no report: pytest did not get there
    assert verdict({"returncode": 0})[0] == 1
    assert verdict({"returncode": 5, "outcomes": None})[0] == 5
    assert verdict({"returncode": 0}, raw=True) == (0, [])  # a script: its own status


def test_e2e_at_the_default_delay_reports_walks_and_checks_the_rest(capsys):
    """At the default delay the flapping outlasts the batch window: walks (and a new subflow)
    are expected of both automatic endpoints and the debounced userspace daemon, and reported
    side by side; the pair must be there, and the rest must still hold."""
    result = e2e_result(0, 2000)
    assert load_uml().report_e2e(result) is True
    assert "automatic endpoints 6 walks, a userspace daemon with the same debounce 7" in capsys.readouterr().out
    result["runs"][3]["transfer_complete"] = False
    assert load_uml().report_e2e(result) is False
    result = e2e_result(0, 2000)
    del result["runs"][4]
    assert load_uml().report_e2e(result) is False
    assert "default-delay pair" in capsys.readouterr().out


@pytest.mark.parametrize(("line", "implicit"), [
    ("10.9.0.1 id 1 subflow rawflags 10 dev c1", True),     # iproute2 6.1: no name for the flag
    ("10.9.0.1 id 1 subflow implicit dev c1", True),
    ("10.9.0.1 id 1 signal backup dev c1", False),
    ("10.9.0.1 id 1 subflow rawflags 20 dev c1", False),    # another unknown bit
])
def test_the_guest_reads_the_implicit_flag_as_old_and_new_iproute2_print_it(line, implicit):
    assert load_script("guest").shows_implicit(line) is implicit

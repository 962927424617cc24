"""Runs inside the User-Mode Linux guest as PID 1 (through pytest-init.sh): pytest on the
checkout, then one line ``MPTCPLAB-RESULT {"returncode": N, "outcomes": {...}}`` and power off.

The host passes (kernel command line, as init's environment) the checkout, the Python to run
and pytest's arguments as hex-encoded JSON. The host's root is read-only here: pytest gets no
cache (-p no:cacheprovider), its temporary directories and mptcplab's state directory are on
the guest's tmpfs, no bytecode is written. MPTCPLAB_UML_GUEST=1 tells the tests where they are.

The guest is where the netem tests must run, not be skipped: pytest exits 0 with skips (the
conftest turns a root test into a skip when something is missing), so pytest writes a JUnit XML
report and the result line carries every test's outcome from it -- pytest's own accounting,
whatever skipped (a mark, pytest.skip in a test or fixture, a module skipped at collection) or
xfailed -- and the host fails the run unless every test passed (pytest_in_uml.verdict).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

MARK = "MPTCPLAB-RESULT "
#: pytest's JUnit XML report, on the guest's tmpfs (the host's root is read-only here).
JUNIT = "/tmp/mptcplab-junit.xml"
#: -r: the short summary names every skip, xfail, failure and error with its reason.
PYTEST_OPTS = ["-p", "no:cacheprovider", "--basetemp=/tmp/pytest", "-rfEsxX", f"--junitxml={JUNIT}"]


def outcome_of(case: ET.Element) -> tuple[str, str]:
    """(outcome, reason) of one JUnit <testcase>: the first of failure, error, skipped (an
    xfail is a <skipped type="pytest.xfail">) decides; none of them is a pass."""
    for child in case:
        if child.tag in ("failure", "error"):
            return ("failed" if child.tag == "failure" else "error"), child.get("message", "")
        if child.tag == "skipped":
            kind = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
            return kind, child.get("message", "") or (child.text or "").strip()
    return "passed", ""


def outcomes(xml_text: str) -> dict:
    """Counts of each outcome and every test that did not pass (name, outcome, reason) from
    pytest's JUnit XML report."""
    counts: dict[str, int] = {}
    not_passed = []
    for case in ET.fromstring(xml_text).iter("testcase"):
        kind, reason = outcome_of(case)
        counts[kind] = counts.get(kind, 0) + 1
        if kind != "passed":
            name = "::".join(x for x in (case.get("classname", ""), case.get("name", "")) if x)
            not_passed.append({"test": name, "outcome": kind, "reason": reason[:300]})
    return {"counts": counts, "not_passed": not_passed}


def report_outcomes(path: str) -> dict | None:
    """The outcomes of pytest's report at ``path``; None if pytest wrote none (it did not get
    as far) or it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return outcomes(f.read())
    except (OSError, ET.ParseError):
        return None


def poweroff() -> None:
    os.sync()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.reboot(0x4321FEDC)  # LINUX_REBOOT_CMD_POWER_OFF


def main() -> None:
    rc = -1
    result: dict = {}
    try:
        repo = os.environ["mptcplab_repo"]
        python = os.environ.get("mptcplab_python", "python3")
        args = json.loads(bytes.fromhex(os.environ.get("mptcplab_args", "5b5d")).decode())
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
               "PYTHONPATH": os.path.join(repo, "src"), "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONUNBUFFERED": "1", "MPTCPLAB_UML_GUEST": "1",
               "MPTCPLAB_STATE_DIR": "/run/mptcplab/runs"}
        print(f"guest: {os.uname().release}, in {repo}", flush=True)
        start = time.monotonic()
        # mptcplab_raw=1: the arguments are Python's own (a script of the checkout), not pytest's
        raw = os.environ.get("mptcplab_raw") == "1"
        cmd = [python, *args] if raw else [python, "-m", "pytest", *PYTEST_OPTS, *args]
        rc = subprocess.run(cmd, cwd=repo, env=env, check=False).returncode
        print(f"guest: {cmd[1]} exited {rc} after {time.monotonic() - start:.0f} s", flush=True)
        if not raw:
            result["outcomes"] = report_outcomes(JUNIT)
    except BaseException as e:  # noqa: BLE001 -- PID 1 must report and power off, whatever happened
        print(f"guest: {type(e).__name__}: {e}", flush=True)
    print(MARK + json.dumps({"returncode": rc, **result}), flush=True)
    poweroff()


if __name__ == "__main__":
    main()
    sys.exit(0)

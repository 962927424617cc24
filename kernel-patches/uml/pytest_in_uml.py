#!/usr/bin/env python3
"""Runs pytest inside the User-Mode Linux kernel that ``make -C kernel-patches uml`` builds
(netem, htb, tbf, veth, network namespaces), live on this terminal.

    pytest_in_uml.py KERNEL [--python PY] [--repo DIR] [--mem 1G] [--timeout S] -- PYTEST ARGS

The guest sees the host's root read-only through hostfs (so the checkout, its venv, iperf3,
Mininet's mnexec, tc and the user-space emulator already built on the host), boots with
pytest-init.sh as init and runs pytest_guest.py as PID 1, which runs pytest in the checkout and
powers off. The guest's console (pytest's output) is printed as it comes and saved (--log).
The exit status is pytest's in the guest, and 1 where pytest exits 0 but a test did not pass:
the guest is where the netem tests run, so a skip or an xfail there fails the run (the guest
reports every outcome from pytest's JUnit XML; see :func:`verdict`). Only the UML process is
started here, and it is stopped by its PID if it outlives the timeout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MARK = "MPTCPLAB-RESULT "
INIT_LINE = "as init process"


def kernel_args(kernel: Path, repo: Path, python: str, args: list[str], mem: str, raw: bool = False) -> list[str]:
    """The UML command line: nothing from the arguments reaches a shell, and pytest's arguments
    go hex-encoded (the kernel splits its command line at spaces). ``raw``: the arguments are
    Python's (a script of the checkout and its options), not pytest's."""
    return [str(kernel), f"mem={mem}", "rootfstype=hostfs", "rootflags=/", "ro",
            "con=null", "con0=fd:0,fd:1", f"init={HERE / 'pytest-init.sh'}",
            f"mptcplab_repo={repo}", f"mptcplab_python={python}", f"mptcplab_raw={int(raw)}",
            f"mptcplab_args={json.dumps(args).encode().hex()}"]


def result_of(text: str) -> dict | None:
    for line in text.splitlines():
        if line.startswith(MARK) or MARK in line:
            try:
                return json.loads(line.split(MARK, 1)[1])
            except ValueError:
                return None
    return None


def verdict(result: dict, raw: bool = False) -> tuple[int, list[str]]:
    """(exit status, lines to print) for the guest's result. A script (``raw``) has its own exit
    status. pytest's is not enough: it exits 0 when tests are skipped or xfailed, and the guest
    exists to run the tests the host cannot -- so anything but a pass, or no report of the
    outcomes at all, or no test run, makes it 1 (pytest's own failure status is kept)."""
    rc = int(result["returncode"])
    if raw:
        return rc, []
    found = result.get("outcomes")
    if found is None:
        return rc or 1, ["uml: the guest's pytest wrote no report of the outcomes"]
    counts = found.get("counts", {})
    lines = [f"uml: in the guest: {', '.join(f'{n} {k}' for k, n in sorted(counts.items())) or 'no test'}"]
    for t in found.get("not_passed", []):
        lines.append(f"uml: not passed in the guest: {t['test']}: {t['outcome']}: {t['reason']}")
    if not counts.get("passed"):
        return rc or 1, lines + ["uml: no test passed in the guest"]
    if found.get("not_passed"):
        return rc or 1, lines + ["uml: every test must pass in the guest (none skipped, none xfailed)"]
    return rc, lines


class Echo:
    """Echoes the console from the line where init starts (the kernel's boot messages stay in
    the log)."""

    def __init__(self) -> None:
        self.started = False
        self.pending = ""

    def feed(self, chunk: str) -> None:
        if self.started:
            sys.stdout.write(chunk)
        else:
            self.pending += chunk
            at = self.pending.find(INIT_LINE)
            if at >= 0:
                self.started = True
                sys.stdout.write(self.pending[self.pending.rfind("\n", 0, at) + 1:])
                self.pending = ""
        sys.stdout.flush()


def run(argv: list[str], log: Path, timeout: float) -> tuple[int, str]:
    """Boots the guest, echoes its console; (returncode of the UML process, console text)."""
    start = time.monotonic()
    echo = Echo()
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        with log.open(errors="replace") as console:
            while True:
                chunk = console.read()
                if chunk:
                    echo.feed(chunk)
                if proc.poll() is not None:
                    echo.feed(console.read())
                    if not echo.started:  # it never got to init: show how it ended
                        sys.stdout.write(echo.pending[-3000:])
                    break
                if time.monotonic() - start > timeout:
                    proc.kill()
                    proc.wait()
                    print(f"\numl: the guest did not finish in {timeout:.0f} s; console in {log}")
                    break
                time.sleep(0.1)
    return proc.returncode, log.read_text(errors="replace")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("kernel", type=Path)
    ap.add_argument("--repo", type=Path, default=HERE.parent.parent)
    ap.add_argument("--python", default=None, help="the guest's Python (default: the repo's .venv)")
    ap.add_argument("--mem", default="1G")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--log", type=Path, default=None)
    ap.add_argument("--raw", action="store_true", help="run `python ARGS` (a script) instead of pytest")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    a = ap.parse_args(argv[:cut])
    a.pytest_args = argv[cut + 1:]
    if not a.kernel.is_file():
        print(f"uml: no kernel at {a.kernel}: run make -C kernel-patches uml", file=sys.stderr)
        return 2
    repo = a.repo.resolve()
    python = a.python or str(repo / ".venv" / "bin" / "python")
    log = a.log or a.kernel.with_name("console-pytest.log")
    _, text = run(kernel_args(a.kernel, repo, python, a.pytest_args, a.mem, a.raw), log, a.timeout)
    result = result_of(text)
    if result is None:
        print(f"uml: no result from the guest; console in {log}", file=sys.stderr)
        return 1
    rc, lines = verdict(result, a.raw)
    for line in lines:
        print(line, file=sys.stderr if rc else sys.stdout)
    return rc


if __name__ == "__main__":
    sys.exit(main())

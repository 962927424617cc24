"""Runs inside the User-Mode Linux guest as PID 1 (through pytest-init.sh): pytest on the
checkout, then one line ``MPTCPLAB-RESULT {"returncode": N}`` and power off.

The host passes (kernel command line, as init's environment) the checkout, the Python to run
and pytest's arguments as hex-encoded JSON. The host's root is read-only here: pytest gets no
cache (-p no:cacheprovider), its temporary directories and mptcplab's state directory are on
the guest's tmpfs, no bytecode is written. MPTCPLAB_UML_GUEST=1 tells the tests where they are.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time

MARK = "MPTCPLAB-RESULT "


def poweroff() -> None:
    os.sync()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.reboot(0x4321FEDC)  # LINUX_REBOOT_CMD_POWER_OFF


def main() -> None:
    rc = -1
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
        cmd = [python, *args] if os.environ.get("mptcplab_raw") == "1" else \
            [python, "-m", "pytest", "-p", "no:cacheprovider", "--basetemp=/tmp/pytest", *args]
        rc = subprocess.run(cmd, cwd=repo, env=env, check=False).returncode
        print(f"guest: {cmd[1]} exited {rc} after {time.monotonic() - start:.0f} s", flush=True)
    except BaseException as e:  # noqa: BLE001 -- PID 1 must report and power off, whatever happened
        print(f"guest: {type(e).__name__}: {e}", flush=True)
    print(MARK + json.dumps({"returncode": rc}), flush=True)
    poweroff()


if __name__ == "__main__":
    main()
    sys.exit(0)

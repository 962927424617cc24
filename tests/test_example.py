"""The README's EmuLink example runs as shipped (root)."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.root


def test_emulink_example_runs(no_leftovers):
    r = subprocess.run([sys.executable, "-m", "mptcplab.examples.emulink"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rtts = [float(line.split("/")[4]) for line in r.stdout.splitlines() if line.startswith("rtt")]
    assert len(rtts) == 2 and 24 < rtts[0] < 60 and 99 < rtts[1] < 110, r.stdout

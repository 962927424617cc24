"""Names that do not exist fail here, not in the middle of a run as root: pyflakes over the
sources, tests, benchmarks and the POX component (undefined names, unused imports)."""

import subprocess
import sys

import pytest

from helpers import REPO


def test_pyflakes_finds_nothing():
    pytest.importorskip("pyflakes", reason="pyflakes is installed by `make setup` (pip install -e '.[test]')")
    r = subprocess.run([sys.executable, "-m", "pyflakes", "src", "tests", "bench", "controllers"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr

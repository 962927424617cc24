"""The pure stages run where Mininet and pyroute2 are not even installed: a dry run, the plan, the
rows, the results and every figure. (Only the network and traffic stages need them.)"""

import shutil
import subprocess
import sys
import textwrap

from helpers import REPO

BLOCK = textwrap.dedent("""
    import sys

    class Block:
        '''Mininet and pyroute2 are not installed, as far as this process can tell.'''
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("mininet", "pyroute2"):
                raise ImportError(f"{name} is not importable in this test")
            return None

    sys.meta_path.insert(0, Block())
""")


def run_blocked(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_pure_modules_import_without_mininet_or_pyroute2():
    r = run_blocked("""
        import importlib
        for m in ("spec", "sweep", "plan", "linkmodel", "routes", "preflight", "rows", "results", "figures",
                  "console", "provenance", "errors", "ids", "paths", "runner", "cli", "flows", "optimum",
                  "topogen", "outcomes", "transfer", "expect", "census", "eventfigures", "forwarding",
                  "tracebox", "tracing"):
            importlib.import_module("mptcplab." + m)
        assert not any(k.split(".")[0] in ("mininet", "pyroute2") for k in sys.modules)
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_dry_run_without_mininet_or_pyroute2():
    """The plan of every point is shown; the preflight that follows says what a real run would
    need here -- Mininet and pyroute2 -- and exits 2, as a run would (before creating anything)."""
    r = run_blocked("""
        sys.argv = ["run-experiment", "experiments/dual-path-sweep.yaml", "--dry-run"]
        from mptcplab.cli import run_experiment_main
        try:
            run_experiment_main()
        finally:
            assert not any(k.split(".")[0] in ("mininet", "pyroute2") for k in sys.modules)
    """)
    assert "18 sweep points" in r.stderr and "10.0.2.2/24" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert r.returncode == 2 and "Mininet is not importable" in r.stderr and "pyroute2 is not importable" in r.stderr


def test_figures_from_the_recorded_run_without_mininet_or_pyroute2(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(REPO / "tests/data/recorded-run", run)
    r = run_blocked(f"""
        from mptcplab.figures import render
        paths = render({str(run)!r}, ["png"])
        assert len(paths) == 7, paths
        assert not any(k.split(".")[0] in ("mininet", "pyroute2") for k in sys.modules)
    """)
    assert r.returncode == 0, r.stderr

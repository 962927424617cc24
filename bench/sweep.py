#!/usr/bin/env python3
"""Sweep overhead, measured in one run: how much of a sweep's wall time is measurement.

Run as root from the repository:  .venv/bin/python bench/sweep.py [--points N] [--duration S]

It runs the dual-path experiment as a sweep of N points over every link's loss (MPTCP and TCP,
one repetition, S-second tests; links change in place between points, the self-check runs
after each change) and prints, from the run's own metadata, set-up, reconfiguration,
self-check, tear-down and measurement time, per point and as shares of the wall time.
Target: >= 90% of the wall time is measurement with 10 s points.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=6)
    ap.add_argument("--duration", type=float, default=10.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/sweep.py builds Mininet networks: run it as root")
    tmp = Path(tempfile.mkdtemp(prefix="mptcplab-bench-"))
    spec = yaml.safe_load((REPO / "experiments/dual-path.yaml").read_text())
    spec["topology"] = str(REPO / "topologies/dual-path.yaml")
    spec["traffic"].update(duration=args.duration, repetitions=1)
    spec["sweep"] = {"parameters": {"links.*.loss": [round(0.1 * i, 2) for i in range(args.points)]}}
    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec))
    out = tmp / "run"
    t0 = time.monotonic()
    r = subprocess.run([str(Path(sys.executable).parent / "run-experiment"), str(tmp / "spec.yaml"),
                        "--out", str(out)], capture_output=True, text=True)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(f"the sweep failed:\n{r.stderr[-2000:]}")
    tm = json.loads((out / "metadata.json").read_text())["timings"]
    n = tm["points_run"]
    setup = tm["build_s"] + tm["configure_s"]
    rows = [("set-up (build + configure, once)", setup), ("reconfiguration (in place)", tm["reconfigure_s"]),
            ("self-check (after every change)", tm["selfcheck_s"]), ("tear-down (once)", tm["teardown_s"]),
            ("measurement (tests)", tm["measure_s"])]
    print(f"bench/sweep.py: {n} points x 2 tests of {args.duration:g} s, wall time {wall:.1f} s "
          f"(runner's own total {tm['total_s']:.1f} s)")
    for name, sec in rows:
        print(f"  {name:<36} {sec:7.2f} s   {sec / n:6.2f} s per point   {sec / wall * 100:5.1f}% of wall time")
    other = wall - sum(sec for _, sec in rows)
    print(f"  {'other (start-up, figures, results)':<36} {other:7.2f} s   {other / n:6.2f} s per point   "
          f"{other / wall * 100:5.1f}% of wall time")
    share = tm["measure_s"] / wall
    print(f"measurement share of wall time: {share:.3f}  (target >= 0.90: {'met' if share >= 0.9 else 'NOT met'})")
    print(f"results: {out}")


if __name__ == "__main__":
    main()

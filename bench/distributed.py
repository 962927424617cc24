#!/usr/bin/env python3
"""What distributing a sweep buys and costs, measured in one run: the same sweep (dual-path,
links[0].bw over N values, MPTCP and TCP tests of D s) run locally and on a LocalCluster of 2
workers on this machine. Reported: the wall time of each, and per point the overhead the
distribution adds -- the bytes of files a worker ships back, the trip of the result from the
worker to the client (pickling, transfer, unpickling) and the client's writing of those files.
Note: a local run keeps one network across points that change links only; a worker builds one
per point, so on one machine part of the difference is the extra builds (set-up in the
summary).

Run as root from the repository:  .venv/bin/python bench/distributed.py [--points 6] [--duration 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
RUN = str(Path(sys.executable).parent / "run-experiment")


def spec(tmp: Path, points: int, duration: float) -> Path:
    s = yaml.safe_load((REPO / "experiments" / "dual-path.yaml").read_text())
    s["topology"] = str((REPO / "experiments" / s["topology"]).resolve())
    s["traffic"].update(duration=duration, repetitions=1)
    s["sweep"] = {"parameters": {"links[0].bw": [5 + 5 * k for k in range(points)]}}
    s["outputs"] = {"dir": str(tmp / "results"), "formats": ["png"]}
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(s))
    return path


def timed(argv: list[str]) -> float:
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{r.stderr[-3000:]}")
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=6)
    ap.add_argument("--duration", type=float, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mptcplab-bench-") as t:
        tmp = Path(t)
        sp = spec(tmp, a.points, a.duration)
        local = timed([RUN, str(sp), "--out", str(tmp / "local")])
        dist = timed([RUN, str(sp), "--out", str(tmp / "dist"), "--local-workers", "2"])
        meta = json.loads((tmp / "dist" / "metadata.json").read_text())
        pts = meta["distributed"]["points"].values()
        kb = [p["files_bytes"] / 1024 for p in pts]
        ret = [p["return_s"] * 1000 for p in pts if p["return_s"] is not None]
        wr = [p["write_s"] * 1000 for p in pts]
        print(f"sweep: {a.points} points x (mptcp, tcp) x {a.duration:g} s tests")
        print(f"wall time: local {local:.1f} s, 2 local workers {dist:.1f} s (speed-up {local / dist:.2f})")
        print(f"per point: files shipped {statistics.mean(kb):.0f} KiB, worker->client trip "
              f"{statistics.mean(ret):.1f} ms (max {max(ret):.1f}), client writing {statistics.mean(wr):.1f} ms")
        print(f"worker time per point: {statistics.mean(p['elapsed_s'] for p in pts):.1f} s "
              "(network build, self-check, tests, tear-down)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What capturing costs, measured in one run: dual-path, MPTCP and TCP tests of 10 s, run once
without and once with `capture: {}` (dumpcap on the 4 host interfaces, 128-byte snap length).
Reported: the goodput with capture over the goodput without (per protocol), and the CPU the
capture added -- the whole run's CPU time (run-experiment and every process it waited for:
dumpcap, the gzip of the ring files, and the census's tshark at the end) with capture minus
without -- per captured Mbit/s (each data segment is
captured on the sender's and on the receiver's interface, so the captured rate is twice the
goodput, the ACKs aside).

Run as root from the repository:  .venv/bin/python bench/capture.py [--repetitions 3] [--duration 10]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
RUN = str(Path(sys.executable).parent / "run-experiment")


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(tmp: Path, name: str, capture: bool, duration: float, repetitions: int) -> tuple[pd.DataFrame, float, float]:
    spec = {"name": name, "topology": str(REPO / "topologies" / "dual-path.yaml"),
            "mptcp": {"endpoints": "auto", "limits": {"subflows": 2, "add_addr_accepted": 2}},
            "traffic": {"client": "h1", "server": "h2", "duration": duration, "repetitions": repetitions,
                        "protocols": ["mptcp", "tcp"]},
            "outputs": {"formats": ["png"]}}
    if capture:
        spec["capture"] = {}
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    out = tmp / name
    before = children_cpu_s()
    r = subprocess.run([RUN, str(tmp / f"{name}.yaml"), "--out", str(out)], capture_output=True, text=True)
    cpu = children_cpu_s() - before
    if r.returncode != 0:
        sys.exit(f"{name} failed (exit {r.returncode}): {r.stderr[-1500:]}")
    summary = pd.read_csv(out / "summary.csv")
    captured_mb = 0.0
    if capture:
        caps = pd.read_csv(out / "captures.csv")
        if (caps.dropped > 0).any():
            print(f"  note: the capture dropped packets: {caps[caps.dropped > 0].to_dict('records')}")
        captured_mb = sum(p.stat().st_size for p in (out / "raw").glob("*.pcapng.gz")) / 1e6
    return summary, cpu, captured_mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as d:
        tmp = Path(d)
        plain, cpu_plain, _ = run(tmp, "plain", False, args.duration, args.repetitions)
        capt, cpu_capt, gz_mb = run(tmp, "captured", True, args.duration, args.repetitions)
    print(f"capture cost on dual-path: {args.repetitions} x MPTCP and TCP tests of {args.duration:g} s each way")
    print(f"  {'protocol':<8} {'goodput plain':>14} {'captured':>9} {'ratio':>6}")
    for proto in ("mptcp", "tcp"):
        a = plain[plain.protocol == proto].goodput_mbps.mean()
        b = capt[capt.protocol == proto].goodput_mbps.mean()
        print(f"  {proto:<8} {a:14.2f} {b:9.2f} {b / a:6.3f}")
    seconds = args.duration * len(capt)
    captured_mbit = 2 * capt.goodput_mbps.sum() * args.duration   # each segment on two interfaces
    extra = cpu_capt - cpu_plain
    print(f"  CPU of the whole run: {cpu_plain:.1f} s plain, {cpu_capt:.1f} s captured (ratio {cpu_capt / cpu_plain:.2f})")
    print(f"  captured about {captured_mbit / seconds:.1f} Mbit/s for {seconds:g} s; extra CPU {extra:.2f} s = "
          f"{extra / captured_mbit * 1e3:.2f} ms of CPU per captured Mbit "
          f"({100 * extra / seconds:.1f}% of a core while capturing; dumpcap, gzip and the census together); "
          f"{gz_mb:.1f} MB of gzipped captures")


if __name__ == "__main__":
    main()

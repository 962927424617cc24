#!/usr/bin/env python3
"""Many flows on two cores, measured in one run of each part:

1. start offsets -- N TCP flows on a dumbbell of N pairs, all scheduled at the same instant:
   how far from the schedule each really started (flows.csv launch_offset_ms), for N = 2, 4, 8,
   16, against the 10 ms budget.
2. FatTree k=4 at a link rate -- 16 concurrent TCP flows (a permutation, ECMP) after the FULL
   self-check (RTT, rate and loss of every route), for each rate given: whether the self-check
   passed, the aggregate goodput as a fraction of the optimum, and the CPU spent while the flows
   ran -- by Open vSwitch (ovs-vswitchd's own time), by the kernel (system + softirq time of the
   whole machine: htb shaping, veths, TCP) and by link emulator processes (linkemu, when the
   user-space shaper runs) -- per Mbit/s of aggregate goodput.

Run as root from the repository:  .venv/bin/python bench/flows.py [--rates 5 10 20 40] [--flows 2 4 8 16]
Targets (issue 12): start offsets within 10 ms; the highest rate at which the FatTree passes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
RUN = str(Path(sys.executable).parent / "run-experiment")
TICK = os.sysconf("SC_CLK_TCK")


def run(spec: dict, tmp: Path, name: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    out = tmp / name
    return subprocess.run([RUN, str(tmp / f"{name}.yaml"), "--out", str(out)], capture_output=True, text=True), out


# --------------------------------------------------------------------------- start offsets


def offsets(n_flows: list[int], tmp: Path) -> None:
    print("start offsets: N TCP flows on a dumbbell of N pairs, all at t = 0 (budget 10 ms)")
    print(f"  {'flows':>5} {'median ms':>10} {'max ms':>8} {'max / budget':>13}")
    for n in n_flows:
        spec = {"name": f"offsets-{n}", "topology": {"generate": {"kind": "dumbbell", "pairs": n, "links": {
            "bottleneck": {"bw": 10 * n, "queue": 100}}}},
            "flows": [{"src": f"l{i}", "dst": f"r{i}", "protocol": "tcp"} for i in range(1, n + 1)],
            "traffic": {"duration": 3, "repetitions": 3}, "emulation": {"check": "none"},
            "outputs": {"dir": str(tmp / "results"), "formats": ["png"]}}
        r, out = run(spec, tmp, f"offsets-{n}")
        if r.returncode != 0:
            print(f"  {n:>5} failed: {r.stderr[-500:]}")
            continue
        off = pd.read_csv(out / "flows.csv").launch_offset_ms.abs()
        print(f"  {n:>5} {off.median():10.2f} {off.max():8.2f} {off.max() / 10:13.2f}")


# --------------------------------------------------------------------------- CPU while flows run


def _ovs_pid() -> int | None:
    try:
        return int(Path("/var/run/openvswitch/ovs-vswitchd.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _emulators_cpu_s() -> float:
    total = 0.0
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "comm").read_text().strip().startswith("linkemu"):
                    total += _proc_cpu_s(int(p.name))
            except OSError:
                continue
    return total


def _kernel_cpu_s() -> float:
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return (int(cpu[2]) + int(cpu[5]) + int(cpu[6])) / TICK  # system + irq + softirq


class CpuLog(threading.Thread):
    """Samples CPU counters once a second with wall-clock stamps, so that the window of a test
    (summary.csv's started/ended) can be cut out afterwards."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.rows: list[dict[str, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            pid = _ovs_pid()
            try:
                ovs = _proc_cpu_s(pid) if pid else 0.0
            except OSError:
                ovs = 0.0
            self.rows.append({"t": time.time(), "ovs": ovs, "kernel": _kernel_cpu_s(), "emu": _emulators_cpu_s()})
            self.done.wait(1.0)

    def window(self, start: float, end: float) -> dict[str, float]:
        inside = [r for r in self.rows if start <= r["t"] <= end]
        if len(inside) < 2:
            return {}
        a, b = inside[0], inside[-1]
        span = b["t"] - a["t"]
        return {k: (b[k] - a[k]) / span for k in ("ovs", "kernel", "emu")}  # cores busy


def fattree(rates: list[float], tmp: Path, shaper: str) -> None:
    print(f"\nFatTree k=4, 16 TCP flows (permutation, ECMP), full self-check first; shaper {shaper}")
    print(f"  {'Mbit/s':>7} {'self-check':>10} {'goodput':>8} {'of opt.':>8} {'OVS cores':>9} {'kernel':>7} "
          f"{'emulator':>8} {'OVS ms/Mbit':>11} {'all ms/Mbit':>11}")
    base = yaml.safe_load((REPO / "experiments/fattree-permutation.yaml").read_text())
    for rate in rates:
        spec = dict(base)
        spec["topology"] = {"generate": {"kind": "fattree", "k": 4, "links": {
            layer: {"bw": rate, "queue": 100} for layer in ("edge", "aggregation", "core")}}}
        spec.update(name=f"fattree-{rate:g}", variants=[{"name": "tcp", "protocol": "tcp"}], sweep=None,
                    emulation={"check": "full", "shaper": shaper},
                    outputs={"dir": str(tmp / "results"), "formats": ["png"]})
        spec["traffic"] = {"duration": 10, "repetitions": 1}
        log = CpuLog()
        log.start()
        r, out = run(spec, tmp, f"fattree-{rate:g}-{shaper}")
        log.done.set()
        log.join()
        if r.returncode == 3:
            print(f"  {rate:7g} {'FAILED':>10}   (the links are not what the spec says at this rate)")
            continue
        if r.returncode != 0:
            print(f"  {rate:7g} run failed: {r.stderr[-400:]}")
            continue
        (row,) = pd.read_csv(out / "summary.csv").to_dict("records")
        cpu = log.window(row["started"] + 1, row["ended"] - 0.5)  # the flows' steady part
        g = row["goodput_mbps"]
        total = sum(cpu.values())
        print(f"  {rate:7g} {'passed':>10} {g:8.1f} {row['fraction_of_optimal']:8.2f} {cpu.get('ovs', 0):9.2f} "
              f"{cpu.get('kernel', 0):7.2f} {cpu.get('emu', 0):8.2f} {cpu.get('ovs', 0) / g * 1e3:11.2f} "
              f"{total / g * 1e3:11.2f}")
    print("  (cores: CPU-seconds per second while the flows ran, of 2; ms/Mbit: CPU-milliseconds per second "
          "per Mbit/s of aggregate goodput)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, nargs="*", default=[2, 4, 8, 16])
    ap.add_argument("--rates", type=float, nargs="*", default=[5, 10, 20, 40])
    ap.add_argument("--shaper", default="auto", choices=["auto", "userspace"])
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/flows.py builds Mininet networks: run it as root")
    tmp = Path(tempfile.mkdtemp(prefix="mptcplab-bench-flows-"))
    if args.flows:
        offsets(args.flows, tmp)
    if args.rates:
        fattree(args.rates, tmp, args.shaper)
    print(f"\nrun directories: {tmp}")


if __name__ == "__main__":
    main()

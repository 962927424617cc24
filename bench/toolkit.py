#!/usr/bin/env python3
"""Line rate through the whole toolkit (issue 18), measured in one run:

1. ceiling -- per topology and switch kind, the highest per-link rate of a ladder at which the
   FULL self-check passes (RTT, UDP rate and loss of every route; a run that fails it exits 3 and
   measures nothing), and at that rate the goodput of one test over the header-adjusted capacity
   (MPTCP on dual-path and three-path, TCP on the single link). Topologies:
     - dual-path: two disjoint two-link paths (as topologies/dual-path.yaml), 1 and 2 ms per link
       (RTT 4 and 8 ms: short enough that a 1000-packet queue is over a BDP at 1 Gbit/s);
     - single: h1 - s1 - h2, 1 ms per link;
     - three-path: topologies/three-path.yaml with the static controller (always Open vSwitch),
       MPTCP on its two independent paths.
   Header-adjusted capacity: the shaper counts whole Ethernet frames of 1514 bytes; a TCP segment
   carries 1448 bytes of payload in one (timestamps), an MPTCP one 1424 (its TCP header is 56
   bytes with the DSS option, as captured on this kernel).
2. cpu -- dual-path at a fixed rate (default 100 Mbit/s), one MPTCP test of 10 s per switch kind:
   the CPU each part of the toolkit spent while the test ran (/proc/<pid>/stat of every process,
   grouped: ovs-vswitchd, the link emulators, iperf3, the run itself with its samplers and
   monitors; the kernel's softirq time, where veths, bridges, htb and TCP do their work), as
   %core and as CPU-ms per second per Mbit/s of goodput, and the ratio between the switch kinds.
   The headline is the machine's busy time (everything but idle and iowait; run it on an
   otherwise idle machine). The groups overlap: without CONFIG_IRQ_TIME_ACCOUNTING a softirq
   is charged both to the task it interrupted and to the machine's softirq total, and processes
   that end inside the window (the short ss samplers) are not seen -- they say where the time
   goes, the machine's total says how much.

Run as root from the repository:
    .venv/bin/python bench/toolkit.py [--switch ovs bridge] [--rates 100 200 400 700 1000] [--cpu-rate 100]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
RUN = str(Path(sys.executable).parent / "run-experiment")
TICK = os.sysconf("SC_CLK_TCK")
FRAME = 1514
PAYLOAD = {"tcp": 1448, "mptcp": 1424}
TOPOLOGIES = ("dual-path", "single", "three-path")


# --------------------------------------------------------------------------- specs


def topology(kind: str, rate: float) -> dict:
    q = 1000
    if kind == "dual-path":
        return {"hosts": {"h1": {"interfaces": 2}, "h2": {"interfaces": 2}}, "switches": ["s1", "s2"],
                "links": [{"endpoints": e, "bw": rate, "delay": d, "queue": q} for e, d in
                          ((["h1", "s1"], "1ms"), (["h1", "s2"], "2ms"), (["s1", "h2"], "1ms"), (["s2", "h2"], "2ms"))]}
    if kind == "single":
        return {"hosts": {"h1": {}, "h2": {}}, "switches": ["s1"],
                "links": [{"endpoints": e, "bw": rate, "delay": "1ms", "queue": q} for e in (["h1", "s1"], ["s1", "h2"])]}
    topo = yaml.safe_load((REPO / "topologies/three-path.yaml").read_text())
    for link in topo["links"]:
        link.update(bw=rate, queue=q)
    return topo


def spec(kind: str, rate: float, switch: str, check: str, duration: int, out: Path) -> dict:
    protocol = "tcp" if kind == "single" else "mptcp"
    s: dict = {"name": f"toolkit-{kind}", "topology": topology(kind, rate),
               "traffic": {"client": "h1", "server": "h2", "duration": duration, "repetitions": 1,
                           "protocols": [protocol]},
               "mptcp": {"endpoints": "auto", "limits": {"subflows": 2, "add_addr_accepted": 2},
                         "congestion_control": "cubic"},
               "emulation": {"check": check, "switch": switch},
               "outputs": {"dir": str(out), "formats": ["png"]}}
    if kind == "three-path":
        s["controller"] = {"kind": "static", "policy": "mixed"}
        s["mptcp"] = {"endpoints": "none", "limits": {"subflows": 4, "add_addr_accepted": 4},
                      "congestion_control": "cubic"}
        s["variants"] = [{"name": "mptcp-independent", "protocol": "mptcp", "extra_subflows": 1}]
        del s["traffic"]["protocols"]
    return s


def capacity_mbps(kind: str, maxflow_mbps: float) -> float:
    """What the network carries in payload from client to server: its max-flow (the summary's,
    from the plan: 2 x the rate on dual-path, 1 x on the single link and on three-path, whose
    paths share the hosts' access links) in frames of 1514 bytes, each with TCP's or MPTCP's
    payload."""
    return maxflow_mbps * PAYLOAD["tcp" if kind == "single" else "mptcp"] / FRAME


def run(s: dict, tmp: Path, name: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(s))
    out = tmp / name
    return subprocess.run([RUN, str(tmp / f"{name}.yaml"), "--out", str(out)], capture_output=True, text=True), out


# --------------------------------------------------------------------------- CPU by process


def _group(comm: str, pid: int, run_pids: set[int]) -> str:
    if comm.startswith("ovs-vswitchd"):
        return "ovs-vswitchd"
    if comm.startswith("linkemu"):
        return "linkemu"
    if comm.startswith("iperf3"):
        return "iperf3"
    if pid in run_pids:
        return "run (runner, samplers, monitors)"
    return "other"


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(p.name))
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo += children.get(pid, [])
    return out


def snapshot(run_pid: int | None) -> dict[str, float]:
    """CPU-seconds so far per group, and the machine's softirq and busy time."""
    run_pids = _descendants(run_pid) if run_pid else set()
    totals: Counter[str] = Counter()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        f = stat.rsplit(")", 1)[1].split()
        totals[_group(comm, int(p.name), run_pids)] += (int(f[11]) + int(f[12])) / TICK
    cpu = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    totals["kernel softirq"] = cpu[6] / TICK
    totals["machine busy"] = (sum(cpu) - cpu[3] - cpu[4]) / TICK  # all but idle and iowait
    return dict(totals)


class CpuLog(threading.Thread):
    """Snapshots every 0.5 s with wall-clock stamps; the test's window is cut out afterwards.
    Processes that end inside the window take their time with them: the window is chosen inside
    the test, while iperf3 and the emulators all live."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.rows: list[tuple[float, dict[str, float]]] = []
        self.done = threading.Event()
        self.run_pid: int | None = None

    def run(self) -> None:
        while not self.done.is_set():
            self.rows.append((time.time(), snapshot(self.run_pid)))
            self.done.wait(0.5)

    def window(self, start: float, end: float) -> dict[str, float]:
        inside = [r for r in self.rows if start <= r[0] <= end]
        if len(inside) < 2:
            return {}
        (ta, a), (tb, b) = inside[0], inside[-1]
        return {k: max(0.0, b.get(k, 0.0) - a.get(k, 0.0)) / (tb - ta) for k in b}


# --------------------------------------------------------------------------- parts


def ceiling(kinds: list[str], switches: list[str], rates: list[float], tmp: Path) -> None:
    print("ceiling: highest per-link rate at which --check full passes, and the goodput there")
    print(f"  {'topology':<11} {'switch':<7} {'Mbit/s':>7} {'self-check':>10} {'goodput':>8} {'capacity':>8} "
          f"{'ratio':>6}")
    for kind in kinds:
        for switch in switches:
            if kind == "three-path" and switch == "bridge":
                continue  # a controller programs its switches: Open vSwitch only
            for rate in rates:
                r, out = run(spec(kind, rate, switch, "full", 5, tmp / "results"), tmp, f"{kind}-{switch}-{rate:g}")
                verdict = {0: "passed", 3: "FAILED"}.get(r.returncode, f"exit {r.returncode}")
                if r.returncode != 0:
                    print(f"  {kind:<11} {switch:<7} {rate:7g} {verdict:>10}")
                    if r.returncode != 3:
                        print("    " + r.stderr.strip()[-400:].replace("\n", "\n    "))
                    break
                row = pd.read_csv(out / "summary.csv").iloc[0]
                cap = capacity_mbps(kind, row.maxflow_mbps)
                print(f"  {kind:<11} {switch:<7} {rate:7g} {verdict:>10} {row.goodput_mbps:8.1f} {cap:8.1f} "
                      f"{row.goodput_mbps / cap:6.3f}")


def cpu(switches: list[str], rate: float, tmp: Path) -> None:
    print(f"\ncpu: dual-path at {rate:g} Mbit/s per link, one MPTCP test of 10 s, while it ran "
          f"({os.cpu_count()} cores)")
    per_mbit: dict[str, float] = {}
    for switch in switches:
        log = CpuLog()
        s = spec("dual-path", rate, switch, "none", 10, tmp / "results")
        name = f"cpu-{switch}-{rate:g}"
        (tmp / f"{name}.yaml").write_text(yaml.safe_dump(s))
        proc = subprocess.Popen([RUN, str(tmp / f"{name}.yaml"), "--out", str(tmp / name)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        log.run_pid = proc.pid
        log.start()
        _, err = proc.communicate()
        log.done.set()
        log.join()
        if proc.returncode != 0:
            print(f"  {switch}: run failed: {err.strip()[-400:]}")
            continue
        row = pd.read_csv(tmp / name / "summary.csv").iloc[0]
        w = log.window(row.started + 1.0, row.ended - 0.5)
        g = row.goodput_mbps
        busy = w.get("machine busy", 0.0)
        per_mbit[switch] = busy / g * 1e3
        print(f"  switch {switch}: goodput {g:.1f} Mbit/s of {capacity_mbps('dual-path', row.maxflow_mbps):.1f}; "
              f"machine busy "
              f"{busy * 100:.0f}% of a core = {per_mbit[switch]:.2f} CPU-ms/s per Mbit/s")
        for k in ("ovs-vswitchd", "linkemu", "iperf3", "run (runner, samplers, monitors)", "kernel softirq", "other"):
            v = w.get(k, 0.0)
            print(f"    {k:<34} {v * 100:6.1f}% core  {v / g * 1e3:6.2f} ms/s per Mbit/s")
    if len(per_mbit) == 2:
        a, b = switches
        print(f"  CPU per Mbit/s, {a} / {b}: {per_mbit[a] / per_mbit[b]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--switch", nargs="*", default=["ovs", "bridge"], choices=["ovs", "bridge"])
    ap.add_argument("--topologies", nargs="*", default=list(TOPOLOGIES), choices=TOPOLOGIES)
    ap.add_argument("--rates", type=float, nargs="*", default=[100, 200, 400, 700, 1000])
    ap.add_argument("--cpu-rate", type=float, default=100)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/toolkit.py builds Mininet networks: run it as root")
    tmp = Path(tempfile.mkdtemp(prefix="mptcplab-bench-toolkit-"))
    if args.cpu_rate:
        cpu(args.switch, args.cpu_rate, tmp)
    if args.rates:
        ceiling(args.topologies, args.switch, args.rates, tmp)
    print(f"\nrun directories: {tmp}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Benchmark of the user-space link emulator (linkemu): fidelity and capacity, measured in one run.

Run as root from the repository: .venv/bin/python bench/emulator.py [--shaper userspace|netem]

Every figure printed is a ratio or a rate measured now, on real Mininet links (two hosts joined
by one EmuLink, no switch), with iperf3 and ping:

- rate:     TCP goodput / (configured rate x 1448/1514)           target 0.98 .. 1.02
- delay:    ping RTT (median) vs 2 x configured one-way delay      target within 2% + 0.3 ms
- loss:     lost / sent over >= 10,000 UDP datagrams, with the 95% binomial interval
- capacity: Mbit/s and packets/s through one unshaped link, emulator CPU per Mbit/s;
            packets/s per emulator core with 1, 4 and 16 links in parallel
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from mptcplab.testbed import pair, pairs  # noqa: E402

TCP_EFF = 1448 / 1514
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def iperf3(net, a: str, b: str, ip: str, *args: str, seconds: float = 5, port: int = 5201) -> dict:
    srv = net[b].popen(["iperf3", "-s", "-1", "-J", "-p", str(port)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    cli = net[a].popen(["iperf3", "-c", ip, "-p", str(port), "-J", "-t", f"{seconds:g}", *args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, _ = cli.communicate(timeout=seconds + 30)
    sout, _ = srv.communicate(timeout=30)
    return {"client": json.loads(out), "server": json.loads(sout) if sout.strip() else {}}


def ping_rtts(net, count: int, interval: float) -> list[float]:
    p = net["h1a"].popen(["ping", "-n", "-c", str(count), "-i", f"{interval:g}", "10.9.1.2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, _ = p.communicate(timeout=count * interval + 30)
    return [float(x) for x in re.findall(r"time=([0-9.]+) ms", out)]


def bench_rate(shaper: str) -> None:
    print("rate (TCP goodput / configured rate after header overhead; target 0.98..1.02)")
    for mbps in (10, 50, 100):
        with pair(shaper, bw=mbps, queue=max(100, mbps * 10)) as (net, _):
            r = iperf3(net, "h1a", "h1b", "10.9.1.2", "-O", "1", seconds=6)
        g = r["client"]["end"]["sum_received"]["bits_per_second"] / 1e6
        print(f"  {mbps:>4} Mbit/s: goodput {g:7.2f} Mbit/s  ratio {g / (mbps * TCP_EFF):.4f}")


def bench_delay(shaper: str) -> None:
    print("delay (ping RTT median vs 2 x one-way delay; target within 2% + 0.3 ms)")
    for ms in (1, 10, 50):
        with pair(shaper, delay=ms) as (net, _):
            rtts = ping_rtts(net, 100, 0.02)
        med = statistics.median(rtts)
        want = 2 * ms
        ok = abs(med - want) <= want * 0.02 + 0.3
        print(f"  {ms:>3} ms: RTT median {med:8.3f} ms (expected {want} ms)  ratio {med / want:.4f}  "
              f"error {med - want:+.3f} ms  {'within' if ok else 'OUTSIDE'} target")


def bench_loss(shaper: str) -> None:
    print("loss (UDP, >= 10,000 datagrams; measured inside the 95% binomial interval?)")
    for pct in (1.0, 5.0):
        with pair(shaper, up={"loss": pct}) as (net, _):
            r = iperf3(net, "h1a", "h1b", "10.9.1.2", "-u", "-b", "8M", "-l", "100", seconds=2)
        s = r["server"]["end"]["sum_received"]
        n, lost = s["packets"], s["lost_packets"]
        p = pct / 100
        half = 1.96 * math.sqrt(p * (1 - p) / n)
        got = lost / n
        print(f"  {pct:>4}%: {lost}/{n} lost = {got * 100:.3f}%  95% interval "
              f"[{(p - half) * 100:.3f}, {(p + half) * 100:.3f}]%  ratio {got / p:.4f}  "
              f"{'inside' if abs(got - p) <= half else 'OUTSIDE'}")


def bench_capacity(shaper: str) -> None:
    print("capacity (one unshaped link)")
    with pair(shaper) as (net, link):
        pid = link.emulator.pid if link.emulator else None
        c0, t0 = (cpu_seconds(pid) if pid else 0.0), time.monotonic()
        r = iperf3(net, "h1a", "h1b", "10.9.1.2", "-O", "1", seconds=6)
        c1, t1 = (cpu_seconds(pid) if pid else 0.0), time.monotonic()
        g = r["client"]["end"]["sum_received"]["bits_per_second"] / 1e6
        cpu = (c1 - c0) / (t1 - t0)
        print(f"  TCP: {g:8.1f} Mbit/s, emulator CPU {cpu * 100:.0f}% of one core, "
              f"{cpu * 100 / g:.4f} %core per Mbit/s (target >= 500 Mbit/s)")
        c0, t0 = (cpu_seconds(pid) if pid else 0.0), time.monotonic()
        r = iperf3(net, "h1a", "h1b", "10.9.1.2", "-u", "-b", "0", "-l", "64", seconds=4)
        c1, t1 = (cpu_seconds(pid) if pid else 0.0), time.monotonic()
        s = r["server"]["end"]["sum_received"]
        pps = (s["packets"] - s["lost_packets"]) / s["seconds"]
        offered = s["packets"] / s["seconds"]
        cpu = (c1 - c0) / (t1 - t0)
        print(f"  UDP 64 B: {pps / 1e3:8.1f} kpps through (offered {offered / 1e3:.1f} kpps), emulator CPU "
              f"{cpu * 100:.0f}% of one core (target >= 50 kpps)")


def bench_scaling(shaper: str) -> None:
    print("packets/s per emulator core with N links in parallel (UDP 64 B, 40 kpps offered per link)")
    for n in (1, 4, 16):
        with pairs(n, shaper) as (net, links):
            pids = [l.emulator.pid for l in links if l.emulator]
            srvs, clis = [], []
            for i in range(1, n + 1):
                srvs.append(net[f"h{i}b"].popen(["iperf3", "-s", "-1", "-J"], stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE, text=True))
            time.sleep(0.5)
            c0, t0 = sum(cpu_seconds(p) for p in pids), time.monotonic()
            for i in range(1, n + 1):
                clis.append(net[f"h{i}a"].popen(["iperf3", "-c", f"10.9.{i}.2", "-u", "-b", f"{40000 * 64 * 8}",
                                                 "-l", "64", "-t", "4", "-J"], stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE, text=True))
            for c in clis:
                c.communicate(timeout=60)
            c1, t1 = sum(cpu_seconds(p) for p in pids), time.monotonic()
            total = 0.0
            for s in srvs:
                out, _ = s.communicate(timeout=30)
                rec = json.loads(out)["end"]["sum_received"]
                total += (rec["packets"] - rec["lost_packets"]) / max(rec["seconds"], 1e-9)
            cores = (c1 - c0) / (t1 - t0)
            per_core = total / cores if cores else float("nan")
            print(f"  {n:>2} link(s): {total / 1e3:8.1f} kpps in total, emulators use {cores:.2f} cores, "
                  f"{per_core / 1e3:.1f} kpps per core")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shaper", default="userspace", choices=("userspace", "netem"))
    ap.add_argument("--only", choices=("rate", "delay", "loss", "capacity", "scaling"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/emulator.py builds Mininet networks: run it as root")
    print(f"bench/emulator.py: shaper {args.shaper}, kernel {os.uname().release}, {os.cpu_count()} cores")
    for name, fn in (("rate", bench_rate), ("delay", bench_delay), ("loss", bench_loss),
                     ("capacity", bench_capacity), ("scaling", bench_scaling)):
        if args.only in (None, name):
            t = time.monotonic()
            fn(args.shaper)
            print(f"  ({time.monotonic() - t:.0f} s)")


if __name__ == "__main__":
    main()

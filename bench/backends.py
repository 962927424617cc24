#!/usr/bin/env python3
"""The two link backends side by side: the same spec, netem (in the User-Mode Linux kernel of
kernel-patches/, which has netem) and the user-space emulator (on this host and in the guest).

Run as root from the repository, in one go (the guest is booted once and measures both
backends; then this host measures the user-space emulator)::

    .venv/bin/python bench/backends.py [--high-mbps 1000] [--json out.json]

``measure`` is what each side runs: ``bench/backends.py measure --shaper netem|userspace``.

Per case (one direction shaped: h1a -> h1b; the reverse is unshaped), every figure a ratio of
the spec:

- rtt:   ping median / (delay + the ping frame's serialization at the rate; only h1a -> h1b is shaped)
- rate:  TCP goodput (4 s) / (rate x 1448/1514)
- queue: a UDP flood at twice the rate (1400-byte datagrams, 3 s) into the idle link: the
         deepest queue waiting for the rate / the spec's queue (linkemu: its exact maximum;
         netem: the pfifo's length sampled every 20 ms), and the frames the queue dropped /
         the frames that did not arrive (1.00: every loss is a queue drop, none from the delay
         line); `drops` is the queue drops, `netem own` what netem itself dropped
- drops: the queue drops / the drops the spec gives the flood (`expected`): the datagrams
         iperf3 sends at -b (it counts the payload only: 2 x rate x 3 s / 1400 bytes) less the
         frames the rate carries in those 3 s (1442 bytes on the wire: payload + UDP 8 + IPv4
         20 + Ethernet 14) less the queue, full at the end and drained after it
         (mptcplab.testbed.expected_queue_drops). Below 1: the sender could not flood at its
         target (or the link carried more than the rate); above 1: the link carried less.
- loss:  1500 pings 2 ms apart through 10 % random loss one way: lost / 10 %

The cases: 5 Mbit/s with 40 ms (~17 full frames in the delay line), 10 Mbit/s with 200 ms
(~173: the delay line longer than the queue of 100, the trap of netem's old layout, at a flood
the UML guest sustains) and --high-mbps with 20 ms.
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from mptcplab.testbed import UdpFlood, expected_queue_drops  # noqa: E402 -- after the path

TCP_EFF = 1448 / 1514
MARK = "BENCH-RESULT "


def cases(high: float) -> list[dict]:
    return [{"name": "5M-40ms-q100", "bw": 5, "delay": 40, "queue": 100},
            {"name": "10M-200ms-q100", "bw": 10, "delay": 200, "queue": 100},
            {"name": f"{high:g}M-20ms-q100", "bw": high, "delay": 20, "queue": 100}]


def flood_of(case: dict) -> UdpFlood:
    """The queue-filling flood of a case: twice its rate."""
    return UdpFlood(2 * case["bw"])


def drop_figures(case: dict, queue_drops: int) -> dict:
    """The queue drops the spec gives the case's flood, and the measured ones as a ratio of it."""
    expected = expected_queue_drops(flood_of(case), case["bw"], case["queue"])
    return {"expected_drops": expected, "drops_ratio": queue_drops / expected if expected else None}


def ping_rtts(net, count: int, interval: float) -> tuple[list[float], int]:
    p = net["h1a"].popen(["ping", "-n", "-c", str(count), "-i", f"{interval:g}", "-W", "2", "10.9.1.2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, _ = p.communicate(timeout=count * interval + 60)
    return [float(x) for x in re.findall(r"time=([0-9.]+) ms", out)], count


def iperf3(net, args: list[str]) -> tuple[subprocess.Popen, subprocess.Popen]:
    """iperf3's client (h1a, with ``args``) and server (h1b, one test), both started."""
    srv = net["h1b"].popen(["iperf3", "-s", "-1", "-J"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    cli = net["h1a"].popen(["iperf3", "-c", "10.9.1.2", "-J", *args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return cli, srv


def qdiscs(net) -> dict[str, dict]:
    from mptcplab.proc import node_run

    out = node_run(net["h1a"], ["tc", "-j", "-s", "qdisc", "show", "dev", "h1a-eth0"]).stdout
    return {q["kind"]: q for q in json.loads(out or "[]")}


def measure_case(shaper: str, case: dict) -> dict:
    from mptcplab.testbed import pair

    bw, delay, queue = case["bw"], case["delay"], case["queue"]
    out = {"case": case["name"], "shaper": shaper, "bw": bw, "delay": delay, "queue": queue}
    with pair(shaper, up={"bw": bw, "delay": delay, "queue": queue}) as (net, link):
        rtts, _ = ping_rtts(net, 20, 0.05)
        expected_rtt = delay + 98 * 8 / (bw * 1e6) * 1e3  # one direction shaped
        out["rtt_ms"] = statistics.median(rtts) if rtts else None
        out["rtt_ratio"] = out["rtt_ms"] / expected_rtt if rtts else None
        cli, srv = iperf3(net, ["-t", "4"])
        data = json.loads(cli.communicate(timeout=60)[0])
        srv.communicate(timeout=30)
        out["rate_mbps"] = data["end"]["sum_received"]["bits_per_second"] / 1e6
        out["rate_ratio"] = out["rate_mbps"] / (bw * TCP_EFF)
        time.sleep(1.0)  # the link idle again
        # the queue's drop counters since the link was made include the TCP test's (slow start
        # overflows it at long RTTs): count the flood's own
        before = link.stats()["a2b"] if shaper == "userspace" else qdiscs(net)
        cli, srv = iperf3(net, flood_of(case).iperf3_args())
        depth = []
        while cli.poll() is None:
            if shaper == "netem":
                depth.append(qdiscs(net).get("pfifo", {}).get("qlen", 0))
            time.sleep(0.02)
        cli.communicate(timeout=60)
        sdata = json.loads(srv.communicate(timeout=30)[0] or "{}")
        rec = sdata.get("end", {}).get("sum_received") or sdata.get("end", {}).get("sum") or {}
        sent, lost = rec.get("packets", 0), rec.get("lost_packets", 0)
        if shaper == "netem":
            q = qdiscs(net)
            drops = q["pfifo"]["drops"] - before["pfifo"]["drops"]
            # netem counts its child's drops too
            out["netem_own_drops"] = q["netem"]["drops"] - before["netem"]["drops"] - drops
            out["deepest_queue"] = max(depth) if depth else None
        else:
            st = link.stats()["a2b"]
            drops = st["drop_queue"] - before["drop_queue"]
            out["netem_own_drops"] = None
            out["deepest_queue"] = st["max_backlog_pkts"]
        out.update(udp_sent=sent, udp_lost=lost, queue_drops=drops,
                   queue_ratio=out["deepest_queue"] / queue if out["deepest_queue"] is not None else None,
                   drops_accounted=drops / lost if lost else None, **drop_figures(case, drops))
    return out


def measure_loss(shaper: str) -> dict:
    from mptcplab.testbed import pair

    with pair(shaper, up={"loss": 10}) as (net, _):
        rtts, n = ping_rtts(net, 1500, 0.002)
    lost = (n - len(rtts)) / n
    sigma = math.sqrt(0.1 * 0.9 / n)
    return {"case": "loss-10%", "shaper": shaper, "loss": lost, "loss_ratio": lost / 0.10,
            "loss_ratio_99pct": [(0.1 - 2.58 * sigma) / 0.1, (0.1 + 2.58 * sigma) / 0.1]}


def measure(shapers: list[str], high: float) -> dict:
    from mptcplab.capabilities import has_netem

    where = "uml" if os.environ.get("MPTCPLAB_UML_GUEST") == "1" else "host"
    rows = []
    for shaper in shapers:
        if shaper == "netem" and not has_netem():
            continue
        for case in cases(high):
            rows.append({"where": where, **measure_case(shaper, case)})
        rows.append({"where": where, **measure_loss(shaper)})
    return {"kernel": os.uname().release, "where": where, "rows": rows}


def table(rows: list[dict]) -> str:
    def f(x, nd=2):
        return "-" if x is None else f"{x:.{nd}f}"

    def n(x) -> str:
        return "-" if x is None else f"{x:.0f}"

    lines = [f"{'case':<16} {'backend':<10} {'where':<5} {'rtt':>6} {'rate':>6} {'queue':>6} "
             f"{'deepest':>7} {'drops':>6} {'expected':>8} {'drops/exp':>9} {'accounted':>9} "
             f"{'netem own':>9} {'loss':>6}"]
    for r in rows:
        lines.append(f"{r['case']:<16} {r['shaper']:<10} {r['where']:<5} {f(r.get('rtt_ratio'), 3):>6} "
                     f"{f(r.get('rate_ratio'), 3):>6} {f(r.get('queue_ratio')):>6} "
                     f"{n(r.get('deepest_queue')):>7} {n(r.get('queue_drops')):>6} "
                     f"{n(r.get('expected_drops')):>8} {f(r.get('drops_ratio'), 3):>9} "
                     f"{f(r.get('drops_accounted')):>9} {n(r.get('netem_own_drops')):>9} "
                     f"{f(r.get('loss_ratio')):>6}")
    lines.append("(ratios of the spec: rtt, rate, queue = deepest/spec queue, drops/exp = queue drops / "
                 "the spec's drops of the flood, accounted = queue drops / UDP datagrams lost, "
                 "loss = measured / 10 %)")
    return "\n".join(lines)


def kernel_path() -> Path:
    out = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(REPO / "kernel-patches"), "uml-path"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return Path(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("mode", nargs="?", default="all", choices=["all", "measure"])
    ap.add_argument("--shaper", action="append", choices=["netem", "userspace"])
    ap.add_argument("--high-mbps", type=float, default=1000)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--skip-host", action="store_true")
    a = ap.parse_args()
    if a.mode == "measure":
        result = measure(a.shaper or ["netem", "userspace"], a.high_mbps)
        print(table(result["rows"]))
        print(MARK + json.dumps(result), flush=True)
        return 0
    from mptcplab.emulator import binary

    binary()  # the guest sees this host's cache read-only: build the emulator here
    kernel = kernel_path()
    if not kernel.is_file():
        print(f"no UML kernel at {kernel}: make -C kernel-patches uml", file=sys.stderr)
        return 2
    log = kernel.with_name("console-bench-backends.log")
    argv = [sys.executable, str(REPO / "kernel-patches" / "uml" / "pytest_in_uml.py"), str(kernel),
            "--raw", "--mem", "2G", "--log", str(log), "--python", sys.executable, "--",
            str(REPO / "bench" / "backends.py"), "measure", "--high-mbps", f"{a.high_mbps:g}",
            "--shaper", "netem", "--shaper", "userspace"]
    subprocess.run(argv, check=False)
    rows = []
    for line in log.read_text(errors="replace").splitlines():
        if MARK in line:
            rows += json.loads(line.split(MARK, 1)[1])["rows"]
    if not a.skip_host:
        rows += measure(["userspace"], a.high_mbps)["rows"]
    order = {c["name"]: i for i, c in enumerate(cases(a.high_mbps))}
    rows.sort(key=lambda r: (order.get(r["case"], 99), r["shaper"], r["where"]))
    print()
    print(table(rows))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())

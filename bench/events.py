#!/usr/bin/env python3
"""Networks that change during a test, measured in one run of each part (issue 13):

1. application jitter -- one 12 s MPTCP test on wifi-cellular while a flap schedule cuts and
   restores the cellular link every 0.2 s (link events: the emulator or tc) and h2's cellular
   endpoint switches between backup and active every 0.5 s (netlink events): how far from its
   schedule each event was applied (events.csv offset_ms), p50/p99/max per kind, against the
   10 ms target, and how long applying took.
2. recovery -- the Wi-Fi link cut at t = 4 s of a 12 s MPTCP test (the sender sees it only
   through loss: no carrier change at the host), for net.mptcp.stale_loss_cnt 1 and 4 (the
   kernel's default), the least RTO 200 ms (the kernel's default) and 50 ms
   (net.ipv4.tcp_rto_min_us, mptcp.rto_min_ms) and two Wi-Fi delays (RTT 20 ms and 100 ms): the
   outage (longest run of 0.1 s intervals with no goodput) and the time until the goodput holds
   90% of what cellular still offers, with the Wi-Fi subflow's RTO before the cut (ss), against
   the 1 s target. A subflow turns stale (and its data is sent again on cellular) after more than
   stale_loss_cnt timeouts, each twice the one before: stale_loss_cnt + 1 of them take
   RTO x (2^(cnt+1) - 1); the connection-level retransmission timer may move data earlier.

Run as root from the repository:  .venv/bin/python bench/events.py [--repetitions 2] [--skip-jitter]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
RUN = str(Path(sys.executable).parent / "run-experiment")
TOPOLOGY = str(REPO / "topologies" / "wifi-cellular.yaml")


def run(spec: dict, tmp: Path, name: str) -> Path | None:
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    out = tmp / name
    r = subprocess.run([RUN, str(tmp / f"{name}.yaml"), "--out", str(out)], capture_output=True, text=True)
    if not (out / "summary.csv").exists():
        print(f"  {name} failed (exit {r.returncode}): {r.stderr[-800:]}")
        return None
    return out


def base(name: str, duration: float, repetitions: int) -> dict:
    return {"name": name, "topology": TOPOLOGY,
            "mptcp": {"endpoints": "auto", "limits": {"subflows": 2, "add_addr_accepted": 2}},
            "traffic": {"client": "h1", "server": "h2", "duration": duration, "repetitions": repetitions,
                        "protocols": ["mptcp"]},
            "outputs": {"formats": ["png"]}}


def jitter(tmp: Path) -> None:
    spec = base("bench-jitter", 12, 1)
    spec["events"] = {
        "flaps": [{"link": "h1-s2", "start": 1, "period": 0.2, "down_for": 0.1, "count": 50}],
        "at": [{"at": 1.05 + 0.5 * k, "interface": "h2-eth1", "action": "backup" if k % 2 == 0 else "active"}
               for k in range(20)]}
    out = run(spec, tmp, "jitter")
    if out is None:
        return
    ev = pd.read_csv(out / "events.csv")
    ev["kind"] = ev["interface"].notna().map({True: "interface (netlink)", False: "link (emulator/tc)"})
    print("application jitter: |applied - scheduled| during a 12 s MPTCP test (target 10 ms)")
    print(f"  {'kind':<22} {'n':>4} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'p99/target':>10} "
          f"{'took p50':>8} {'took p99':>8}")
    for kind, g in ev.groupby("kind"):
        off, took = g.offset_ms.abs(), g.took_ms
        print(f"  {kind:<22} {len(g):4d} {int(g.error.notna().sum()):6d} {off.quantile(0.5):7.2f} "
              f"{off.quantile(0.99):7.2f} {off.max():7.2f} {off.quantile(0.99) / 10:10.2f} "
              f"{took.quantile(0.5):8.2f} {took.quantile(0.99):8.2f}")


def wifi_rto_ms(out: Path, test: str, cut_s: float) -> float | None:
    """The Wi-Fi subflow's RTO (ss) in the second before the cut."""
    path = out / "raw" / f"{test}-samples.csv"
    if not path.exists():
        return None
    s = pd.read_csv(path)
    s = s[(s.kind == "tcp") & s.local.astype(str).str.startswith("10.0.1.") & s.t.between(cut_s - 1, cut_s)]
    return float(s.rto.median()) if not s.empty else None


def recovery(tmp: Path, repetitions: int) -> None:
    spec = base("bench-recovery", 12, repetitions)
    spec["events"] = {"at": [{"at": 4, "link": "h1-s1", "action": "down"}]}
    spec["sweep"] = {"parameters": {"mptcp.stale_loss_cnt": [1, 4], "mptcp.rto_min_ms": [200, 50],
                                    "links.h1-s1.delay": ["9ms", "49ms"]}}
    out = run(spec, tmp, "recovery")
    if out is None:
        return
    s = pd.read_csv(out / "summary.csv")
    s["rto_ms"] = [wifi_rto_ms(out, t, 4) for t in s.test]
    g = s.groupby(["links.h1-s1.delay", "mptcp.rto_min_ms", "mptcp.stale_loss_cnt"]).agg(
        n=("test", "count"), rto_ms=("rto_ms", "median"), outage_s=("outage_s", "median"),
        recovery_s=("recovery_remaining_s", "median"), survived=("survived", "mean"))
    print("recovery: Wi-Fi (h1-s1) cut at 4 s of 12 s, cellular (5 Mbit/s) healthy; medians "
          f"of {repetitions} (target: recovery < 1 s)")
    print(f"  {'wifi delay':>10} {'rto_min ms':>10} {'stale_loss_cnt':>14} {'n':>2} {'RTO ms':>7} {'stale s':>7} "
          f"{'outage s':>9} {'recovery s':>10} {'recovery/target':>15} {'vs cnt 4':>8}")
    for (delay, rto_min, cnt), r in g.iterrows():
        ref = g.loc[(delay, rto_min, 4), "recovery_s"] if (delay, rto_min, 4) in g.index else None
        ratio = f"{r.recovery_s / ref:8.2f}" if ref and pd.notna(r.recovery_s) else f"{'-':>8}"
        rec = f"{r.recovery_s:10.2f}" if pd.notna(r.recovery_s) else f"{'never':>10}"
        target = f"{r.recovery_s / 1.0:15.2f}" if pd.notna(r.recovery_s) else f"{'-':>15}"
        rto = f"{r.rto_ms:7.0f}" if pd.notna(r.rto_ms) else f"{'-':>7}"
        stale = f"{r.rto_ms / 1e3 * (2 ** (cnt + 1) - 1):7.2f}" if pd.notna(r.rto_ms) else f"{'-':>7}"
        print(f"  {delay:>10} {rto_min:10g} {cnt:14d} {int(r.n):2d} {rto} {stale} {r.outage_s:9.2f} {rec} {target} "
              f"{ratio}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--skip-jitter", action="store_true")
    ap.add_argument("--skip-recovery", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-events-") as d:
        tmp = Path(d)
        if not args.skip_jitter:
            jitter(tmp)
        if not args.skip_recovery:
            recovery(tmp, args.repetitions)


if __name__ == "__main__":
    main()

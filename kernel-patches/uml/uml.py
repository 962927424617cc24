#!/usr/bin/env python3
"""Boots the User-Mode Linux kernel built by ``make uml`` and runs one check in it.

    uml.py KERNEL e2e   [--flaps 1000]            the end-to-end check (exit 1 if it fails)
    uml.py KERNEL bench [--conns 0,1000,10000] [--changes 8] [--rounds 20]

The guest gets the host's root read-only through hostfs (init.sh mounts tmpfs on /run and /tmp)
and runs guest.py as PID 1, which prints one ``MPTCPLAB-RESULT <json>`` line and powers off.
The guest's console is saved next to the report (--log). Only the UML process is started here,
and it is stopped by its PID if it outlives the timeout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MARK = "MPTCPLAB-RESULT "
GUEST_MARK = "MPTCPLAB-MARK"


def kernel_cpu_ns(pid: int) -> int:
    """CPU time of the UML kernel, in ns: the threads of the host process that runs it (the
    guest's processes run in other host processes). Read from the host's schedstat."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def windows(marks: list[tuple[str, int]]) -> dict[str, list[float]]:
    """'begin X' ... 'end X' pairs -> X: [kernel CPU ms of each window]."""
    out: dict[str, list[float]] = {}
    begun: dict[str, int] = {}
    for label, ns in marks:
        kind, _, name = label.partition(" ")
        if kind == "begin":
            begun[name] = ns
        elif kind == "end" and name in begun:
            out.setdefault(name, []).append((ns - begun.pop(name)) / 1e6)
    return out


def boot(kernel: Path, check: str, env: dict[str, str], mem: str, timeout: float,
         log: Path) -> dict:
    args = [str(kernel), f"mem={mem}", "rootfstype=hostfs", "rootflags=/", "ro",
            "con=null", "con0=fd:0,fd:1", f"init={HERE / 'init.sh'}",
            f"mptcplab_check={check}"] + [f"mptcplab_{k}={v}" for k, v in env.items()]
    start = time.monotonic()
    marks: list[tuple[str, int]] = []
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        with log.open(errors="replace") as console:
            pending = ""
            while proc.poll() is None:
                if time.monotonic() - start > timeout:
                    proc.kill()
                    proc.wait()
                    raise SystemExit(f"uml: the guest did not finish in {timeout:.0f} s; "
                                     f"console in {log}")
                pending += console.read()
                *lines, pending = pending.split("\n")
                for line in lines:
                    if GUEST_MARK in line:
                        marks.append((line.split(GUEST_MARK, 1)[1].strip(), kernel_cpu_ns(proc.pid)))
                time.sleep(0.005)
    seconds = time.monotonic() - start
    for line in log.read_text(errors="replace").splitlines():
        if MARK in line:
            result = json.loads(line.split(MARK, 1)[1])
            result["boot_to_poweroff_seconds"] = round(seconds, 1)
            result["kernel_cpu_windows"] = windows(marks)
            return result
    lines = [x for x in log.read_text(errors="replace").splitlines()
             if x.strip() and not x.lstrip().startswith(("[<", "Stack:", "Call Trace:"))]
    tail = "\n  ".join(lines[-12:])
    raise SystemExit(f"uml: no result from the guest (exit {proc.returncode}); console in {log},"
                     f" ending:\n  {tail}")


def report_e2e(result: dict) -> bool:
    """Prints the runs and gives the verdict: every automatic run 0 walks with the user's
    endpoint untouched, the userspace run 2 walks per flap, every transfer complete over both
    subflows and every endpoint list as it began."""
    ok = True
    w = 36
    print(f"UML {result['kernel']}: {result['runs'][0]['flaps']} flaps of the second path's "
          f"interface during an MPTCP transfer ({result['boot_to_poweroff_seconds']} s in all)")
    for run in result["runs"]:
        print(f"  {run['mode']:<{w}} walks {run['walks']:>5} ({run['walks_per_flap']:.3f} per flap)"
              f"  events queued {run['events_queued']}, cancelled {run['events_cancelled']}"
              f"  flapping took {run['flap_seconds']} s")
        print(f"  {'':<{w}} transfer: sent {run['sent']} B, received {run['received']} B, "
              f"complete: {run['transfer_complete']}"
              + (f" ({run['transfer_error']})" if run["transfer_error"] else "")
              + f"; second subflow joined: {run['second_subflow_joined']}")
        kept = "kept" if run["endpoints_kept"] else "CHANGED: " + "; ".join(run["endpoints_after"])
        user = run.get("user_endpoint_kept")
        before, after = run["second_path_subflows_before"], run["second_path_subflows_after"]
        same = bool(after) and before == after
        print(f"  {'':<{w}} after the flaps: endpoints {kept}"
              + ("" if user is None else f", the user's endpoint kept: {user}")
              + f"; second path's subflows: {', '.join(after) or 'none'}"
              + (" (the same as before)" if same else f" (before: {', '.join(before) or 'none'})"))
        ok &= run["transfer_complete"] and run["second_subflow_joined"] and run["endpoints_kept"]
        ok &= bool(after)
        if run["automatic"]:
            ok &= user is True
            window = 10 * (run.get("delay_ms") or 0) / 1000
            if run.get("one_window", True):
                # no walk, so nothing closed the second path's subflow: the same one lives on
                ok &= run["walks"] == 0 and same
                if run["walks"] and window and run["flap_seconds"] > window:
                    print(f"  {'':<{w}} the flapping ({run['flap_seconds']} s) outlasted the batch window "
                          f"(10 x pm_auto_delay_ms = {window:.0f} s): try a larger --delay-ms")
        elif not run.get("daemon"):
            ok &= run["walks"] == 2 * run["flaps"]
    fair = {r["automatic"]: r for r in result["runs"] if not r.get("one_window", True) and r["family"] == "IPv4"
            and (r["automatic"] or r.get("daemon"))}
    if set(fair) == {True, False}:
        a, d = fair[True], fair[False]
        print(f"  at pm_auto_delay_ms {a['delay_ms']} (the flapping outlasts the batch window): automatic "
              f"endpoints {a['walks']} walks, a userspace daemon with the same debounce {d['walks']} "
              f"({d['daemon_changes']} endpoint changes)")
    else:
        ok = False
        print("  the default-delay pair (automatic endpoints, userspace daemon) is missing")
    missing = [name for key, name in (("dad", "DAD check"), ("takeover", "takeover check")) if key not in result]
    for name in missing:
        print(f"  {name}: missing")
    ok &= not missing
    if "dad" in result:
        dad = result["dad"]
        print(f"  IPv6 with DAD, pm_auto_delay_ms {dad['delay_ms']}: valid address usable after "
              f"{dad['valid_dad_ms']} ms, its endpoint after {dad['valid_endpoint_ms']} ms"
              f"{' (while still TENTATIVE)' if dad['valid_endpoint_while_tentative'] else ''}; "
              f"duplicate ({' '.join(dad['duplicate_flags'])}): endpoint {dad['duplicate_endpoint']}; "
              f"deprecated ({' '.join(dad['deprecated_flags'])}): endpoint {dad['deprecated_endpoint']}; "
              f"walks {dad['walks']}")
        ok &= dad["valid_endpoint"] and not dad["valid_endpoint_while_tentative"]
        ok &= "dadfailed" in dad["duplicate_flags"] and not dad["duplicate_endpoint"]
        ok &= "deprecated" in dad["deprecated_flags"] and not dad["deprecated_endpoint"]
    if "takeover" in result:
        take = result["takeover"]
        print(f"  a user's add over an automatic endpoint (id {take['automatic_id']}, shown implicit: "
              f"{take['automatic_shows_implicit']}): {take['user_add']}; the user's endpoint in its place: "
              f"{take['user_endpoint']}; kept when its address went and came back: {take['user_endpoint_kept']}")
        ok &= take["user_add"] == "ok" and take["automatic_shows_implicit"] and take["user_endpoint"] \
            and take["user_endpoint_kept"]
    modes = {(r["automatic"], r["family"]) for r in result["runs"]}
    ok &= {(True, "IPv4"), (False, "IPv4"), (True, "IPv6")} <= modes
    print("e2e: " + ("passed" if ok else "FAILED") + " (want 0 walks with automatic endpoints "
          "when the flapping fits one batch window (IPv4 and IPv6), 2 per flap the userspace "
          "del/add way, every transfer complete, endpoints as they were, a subflow on the second "
          "path, with automatic endpoints in one window the same one; at the default delay the "
          "walks of both ways reported; with DAD, an endpoint for a valid IPv6 address once DAD is "
          "over, none for a duplicate or deprecated one; a user's add over an automatic endpoint "
          "replacing it, which dumps mark implicit)")
    return ok


def ratio(a: float, b: float) -> str:
    return f"{a / b:6.2f}x" if b > 0 else "   n/a "


def report_bench(result: dict) -> bool:
    rows = result["rows"]
    win = result.get("kernel_cpu_windows", {})
    for r in rows:  # the UML kernel's CPU per burst, from the host (ns resolution)
        ms = win.get(f"{r['connections']}:{r['mode']}:{r['phase']}", [])
        r["kernel_ms_per_burst"] = round(sum(ms) / len(ms), 3) if ms else None
    print(f"UML {result['kernel']}: a burst of {rows[0]['address_changes']} address changes "
          f"with N idle MPTCP connections; mean of the rounds ({result['boot_to_poweroff_seconds']}"
          " s in all)")
    print("  kernel ms: the UML kernel's CPU time per burst, read on the host (ns resolution);")
    print("  guest CPU ms: all tasks, from the guest's /proc/schedstat (10 ms ticks)")
    print(f"  {'N':>6} {'phase':<7} {'mode':<10} {'walks':>6} {'kernel ms':>10} {'guest CPU ms':>13}"
          f" {'ip wall ms':>11}")
    for r in rows:
        kms = f"{r['kernel_ms_per_burst']:10.2f}" if r["kernel_ms_per_burst"] is not None else f"{'-':>10}"
        print(f"  {r['connections']:>6} {r['phase']:<7} {r['mode']:<10} {r['walks_per_burst']:>6.1f}"
              f" {kms} {r['cpu_ms_per_burst']:>13.2f} {r['ip_wall_ms_per_burst']:>11.2f}")
    key = {(r["connections"], r["phase"], r["mode"]): r for r in rows}
    metric = "kernel_ms_per_burst" if all(r["kernel_ms_per_burst"] is not None for r in rows) \
        else "cpu_ms_per_burst"
    print(f"  unbatched / batched ({metric}): walks; time; time above the N=0 baseline (the walks'"
          " share)")
    for n, phase in sorted({(r["connections"], r["phase"]) for r in rows}):
        b, u = key[(n, phase, "batched")], key[(n, phase, "unbatched")]
        line = (f"  {n:>6} {phase:<7} walks {ratio(u['walks_per_burst'], b['walks_per_burst'])}"
                f"   time {ratio(u[metric], b[metric])}")
        if n and (0, phase, "batched") in key:
            b0, u0 = key[(0, phase, "batched")], key[(0, phase, "unbatched")]
            eb, eu = b[metric] - b0[metric], u[metric] - u0[metric]
            line += f"   above baseline: {eu:7.2f} / {eb:7.2f} ms = {ratio(eu, eb)}"
        print(line)
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("kernel", type=Path)
    ap.add_argument("check", choices=["e2e", "bench"])
    ap.add_argument("--flaps", type=int, default=1000)
    ap.add_argument("--delay-ms", type=int, default=None)
    ap.add_argument("--conns", default="0,1000,10000",
                    help="connection counts; 0 is the baseline (the ip processes, no walk cost)")
    ap.add_argument("--changes", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--mem", default=None,
                    help="guest memory; the bench's default, 16G, sizes the kernel's MPTCP token\n"
                         "table (one bucket per MiB, 4 tokens each) for 10k connections (20k\n"
                         "tokens); the memory is a sparse file, only what is used is allocated")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--log", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    a = ap.parse_args()
    if not a.kernel.is_file():
        print(f"uml: no kernel at {a.kernel}: run make -C kernel-patches uml", file=sys.stderr)
        return 2
    env = {"flaps": str(a.flaps)} if a.check == "e2e" else {
        "conns": a.conns, "changes": str(a.changes), "rounds": str(a.rounds)}
    if a.delay_ms is not None:
        env["delay_ms"] = str(a.delay_ms)
    log = a.log or a.kernel.with_name(f"console-{a.check}.log")
    mem = a.mem or ("2G" if a.check == "e2e" else "16G")
    result = boot(a.kernel, a.check, env, mem, a.timeout, log)
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    if "error" in result:
        print(f"uml: the guest failed: {result['error']}; console in {log}", file=sys.stderr)
        return 1
    ok = report_e2e(result) if a.check == "e2e" else report_bench(result)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""What a run shows on the terminal: the plan, the sweep points, progress and the summary.

Terminal output only (rich): nothing here decides anything or writes a file.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .plan import Plan
from .spec import Experiment


def show_plan(exp: Experiment, plan: Plan, console: Console) -> None:
    t = Table(title=f"{exp.name}: plan", show_lines=False)
    for c in ("host", "interface", "address", "table", "MPTCP endpoint"):
        t.add_column(c)
    for h in plan.hosts:
        eps = {e.interface: ",".join(e.flags) for e in h.mptcp.endpoints}
        for i in h.intfs:
            t.add_row(h.name, i.name, i.address or "", str(i.table), eps.get(i.name, ""))
    console.print(t)
    lt = Table(title="links")
    for c in ("link", "interfaces", "bw Mbit/s", "delay ms", "jitter ms", "loss %", "queue"):
        lt.add_column(c)
    boxes = any(l.up.middlebox() or l.down.middlebox() for l in plan.links)
    if boxes:
        lt.add_column("middlebox (up / down)")
    for link in plan.links:
        b = link.base
        row = [link.name, f"{link.intf1.name} - {link.intf2.name}", f"{b.bw:g}" if b.bw else "-",
               f"{b.delay:g}", f"{b.jitter:g}", f"{b.loss:g}", str(b.queue or "-")]
        if boxes:
            row.append(" / ".join(middlebox_text(d) for d in (link.up, link.down)))
        lt.add_row(*row)
    console.print(lt)
    show_routing(plan, console)
    tr = exp.traffic
    if plan.multi_flow:
        show_flows(plan, console)
    else:
        length = f"{tr.duration:g} s" if tr.duration else f"{tr.bytes} bytes"
        tool = " by the transfer tool (data hashed at both ends)" if plan.tool == "transfer" else ""
        console.print(f"traffic: {plan.client} -> {plan.server} ({plan.server_address}), {length} per test{tool}, "
                      f"{len(plan.tests)} tests: {' '.join(t.label for t in plan.tests)}")
        console.print(f"expected subflows per MPTCP connection: {plan.expected_subflows}")
    show_events(plan, console)


def show_routing(plan: Plan, console: Console) -> None:
    """The routers' interfaces and every route through them (hosts' tables and routers')."""
    if not plan.routers:
        return
    t = Table(title="routers")
    for c in ("router", "interface", "address"):
        t.add_column(c)
    for r in plan.routers:
        for i in r.intfs:
            t.add_row(r.name, i.name, i.address or "")
    console.print(t)
    rt = Table(title="routes through routers")
    for c in ("node", "table", "destination", "via", "dev", "routers"):
        rt.add_column(c)
    for node, routes in [*((h.name, h.routes) for h in plan.hosts), *((r.name, r.routes) for r in plan.routers)]:
        for x in routes:
            rt.add_row(node, "main" if x.table is None else str(x.table), x.dst, x.via, x.dev, str(x.routers))
    console.print(rt)


def show_events(plan: Plan, console: Console, most: int = 40) -> None:
    """The events every test applies, by time (the first ``most``), and the variants' backups."""
    for v in sorted({(t.variant, t.backup) for t in plan.tests if t.backup}):
        console.print(f"variant {v[0]}: backup endpoints {', '.join(v[1])}")
    if not plan.events:
        return
    t = Table(title=f"events of every test ({len(plan.events)})")
    for c in ("at s", "target", "action", "params", "from"):
        t.add_column(c)
    for e in plan.events[:most]:
        t.add_row(f"{e.at_s:g}", e.target, e.action, ", ".join(f"{k}={v}" for k, v in e.params.items()), e.origin)
    if len(plan.events) > most:
        t.add_row(f"... {len(plan.events) - most} more", "", "", "", "")
    console.print(t)


def middlebox_text(d: Any) -> str:
    """One direction's middlebox in a few words ('-' without one)."""
    parts = []
    if d.strip_mptcp != "none":
        parts.append(f"strip MPTCP ({d.strip_mptcp})")
    if d.drop_mptcp_syn:
        parts.append("drop MPTCP SYNs")
    if d.clamp_mss:
        parts.append(f"MSS <= {d.clamp_mss}")
    if d.rewrite_every:
        after = f" after {d.rewrite_after}" if d.rewrite_after else ""
        most = f", at most {d.rewrite_max} per connection" if d.rewrite_max else ""
        parts.append(f"rewrite payload (1 in {d.rewrite_every} data segments{after}{most})")
    if d.split_at:
        parts.append(f"split segments > {d.split_at} B")
    if d.randomize_isn:
        parts.append("randomise ISNs")
    if d.nat:
        parts.append(f"NAT to {d.nat}")
    if d.coalesce_up_to:
        parts.append(f"coalesce segments up to {d.coalesce_up_to} B (hold {d.coalesce_hold:g} ms)")
    return ", ".join(parts) or "-"


def show_flows(plan: Plan, console: Console) -> None:
    """The flows of the first test of each variant (the flows of a multi-flow test), and the probes."""
    seen: set[str] = set()
    for test in plan.tests:
        if test.variant in seen:
            continue
        seen.add(test.variant)
        t = Table(title=f"flows of {test.variant or 'every test'}")
        for c in ("flow", "src -> dst", "protocol", "subflows", "start s", "length", "cc", "port"):
            t.add_column(c)
        for f in test.flows[:40]:
            length = f"{f.duration_s:g} s" if f.duration_s is not None else f"{f.bytes} bytes"
            t.add_row(f.label, f"{f.src} -> {f.dst} ({f.dst_address})", f.protocol, str(f.expected_subflows),
                      f"{f.start_s:g}", length, f.congestion_control or "default", str(f.port))
        if len(test.flows) > 40:
            t.add_row(f"... {len(test.flows) - 40} more", "", "", "", "", "", "", "")
        console.print(t)
    for p in plan.probes:
        console.print(f"probe {p.label}: ping {p.src} -> {p.dst} ({p.dst_address}) every {p.interval_s:g} s")
    console.print(f"{len(plan.tests)} tests: {' '.join(t.label for t in plan.tests)}")


def show_points(points: list[Any], plans: dict[str, Plan], console: Console) -> None:
    if len(points) == 1 and not points[0].values:
        return
    t = Table(title=f"{len(points)} sweep points")
    t.add_column("point")
    for k, _ in points[0].values:
        t.add_column(k)
    t.add_column("tests")
    for p in points:
        t.add_row(p.id, *[str(v) for _, v in p.values], str(len(plans[p.id].tests)))
    console.print(t)


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
                    transient=False)


def show_summary(rows: list[dict[str, Any]], timings: dict[str, float], failed: list[str], flagged: list[str],
                 run_dir: Any, console: Console) -> None:
    df = pd.DataFrame(rows)
    ok = df[df["error"].isna()] if "error" in df else df
    if ok.empty or "goodput_mbps" not in ok:
        console.print("[red]no test measured anything[/]")
        ok = pd.DataFrame(columns=["protocol", "goodput_mbps", "subflows"])
    t = Table(title="goodput (Mbit/s)")
    for c in ("protocol", "n", "mean", "min", "max", "subflows"):
        t.add_column(c)
    means = {}
    for proto, g in ok.groupby("protocol", sort=False):
        means[proto] = g["goodput_mbps"].mean()
        t.add_row(proto, str(len(g)), f"{g['goodput_mbps'].mean():.2f}", f"{g['goodput_mbps'].min():.2f}",
                  f"{g['goodput_mbps'].max():.2f}", ",".join(str(int(x)) for x in g["subflows"]))
    console.print(t)
    if "mptcp" in means and "tcp" in means and means["tcp"] > 0:
        console.print(f"MPTCP/TCP goodput ratio: {means['mptcp'] / means['tcp']:.2f}")
    tm = timings
    console.print(f"set-up {tm.get('build_s', 0) + tm.get('configure_s', 0):.2f} s, reconfiguration "
                  f"{tm.get('reconfigure_s', 0):.2f} s, self-check {tm.get('selfcheck_s', 0):.2f} s, "
                  f"measurement {tm.get('measure_s', 0):.1f} s, tear-down {tm.get('teardown_s', 0):.2f} s, "
                  f"total {tm.get('total_s', 0):.1f} s")
    for f in failed:
        console.print(f"[red]failed point[/] {f}")
    for f in flagged:
        console.print(f"[yellow]flagged[/] {f}")
    console.print(f"results: {run_dir}")


def show_census(per_test: dict[str, dict[str, Any]], console: Console) -> None:
    """The MPTCP options each test's captures carried, one row per test: connections (MPTCP
    ones), handshakes by their SYNs, address signalling, the rare ones, DSS, fallback."""
    if not per_test:
        return
    t = Table(title="MPTCP options on the wire (options.csv: every count, per subflow)", caption=(
        "conns: connections (MPTCP); CAP, JOIN: MP_CAPABLE and MP_JOIN handshakes (SYNs); ADD, RM: "
        "ADD_ADDR, REMOVE_ADDR; F/FC/R: MP_FAIL, MP_FASTCLOSE, MP_TCPRST; fb: a connection fell back to TCP"))
    for c in ("test", "conns", "CAP", "JOIN", "ADD", "RM", "MP_PRIO", "F/FC/R", "DSS", "fb"):
        t.add_column(c, justify="left" if c == "test" else "right", overflow="fold")
    for test, c in per_test.items():
        if not c.get("options_complete"):
            t.add_row(test, "partial capture (dropped, wrapped or cut short): not counted", *[""] * 8)
            continue
        rare = "/".join(str(c.get(f"options_{k}", 0)) for k in ("MP_FAIL", "MP_FASTCLOSE", "MP_TCPRST"))
        t.add_row(test, f"{c['options_connections']} ({c['options_mptcp_connections']})",
                  str(c["options_MP_CAPABLE_SYN"]), str(c["options_MP_JOIN_SYN"]), str(c["options_ADD_ADDR"]),
                  str(c["options_REMOVE_ADDR"]), str(c["options_MP_PRIO"]), rare, str(c["options_DSS"]),
                  "yes" if c["options_fallback"] else "no")
    console.print(t)


def show_verdicts(verdicts: list[Any], console: Console) -> None:
    """Each expectation, PASS or FAIL with what was observed."""
    for v in verdicts:
        colour = "green" if v.passed else "red"
        console.print(f"[{colour}]{v.describe()}[/]", highlight=False, soft_wrap=True)

"""One experiment, one direction: spec -> plan -> network -> traffic -> measurements -> results
-> figures. This module wires the stages; each stage lives in its own module.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from . import capabilities, selfcheck
from .controller import flow_bytes
from .measurements import (
    connection_token,
    counter_delta,
    read_counters,
    subflows_of,
    tcp_connection_is_plain,
)
from .plan import Plan, PlanTest, make_plan
from .results import RunDir, new_run_id, write_csv
from .spec import Experiment, load_spec, resolve_spec_path

LINK_COLUMNS = {"bw": "bw_mbps", "delay": "delay_ms", "jitter": "jitter_ms", "loss": "loss_pct",
                "queue": "queue_pkts"}


class Interrupted(Exception):
    """SIGINT/SIGTERM/SIGHUP arrived; the network is torn down before we exit."""


@contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """The first SIGINT/SIGTERM/SIGHUP raises :class:`Interrupted`; later ones are ignored so
    that the teardown they triggered cannot itself be interrupted half-way."""
    fired = {"n": 0}
    owner = os.getpid()

    def handler(signum: int, _frame: Any) -> None:
        if os.getpid() != owner:
            # A forked helper (pyroute2 creates its netns sockets in a fork) inherited this
            # handler: it must die as it would have, not unwind the runner's stack.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        fired["n"] += 1
        if fired["n"] == 1:
            raise Interrupted(signal.Signals(signum).name)
        print("mptcplab: cleaning up, please wait", file=sys.stderr)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@dataclass
class RunReport:
    run_dir: Path
    rows: list[dict[str, Any]]
    flagged: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def link_columns(plan: Plan) -> dict[str, Any]:
    """Link parameters as summary columns: one column when every link agrees, else per link."""
    cols: dict[str, Any] = {}
    for key, col in LINK_COLUMNS.items():
        values = [link.params[key] for link in plan.links]
        if len(set(values)) == 1:
            cols[col] = values[0]
        else:
            for link, v in zip(plan.links, values):
                cols[f"{link.name}.{col}"] = v
    return cols


def test_row(exp: Experiment, plan: Plan, test: PlanTest, outcome: Any,
             counters: dict[str, dict[str, int]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One summary row and the per-subflow rows of one test."""
    from .traffic import summarize_iperf3

    row: dict[str, Any] = {
        "experiment": exp.name, "test": test.label, "variant": test.variant or test.protocol,
        "protocol": test.protocol, "repetition": test.repetition,
        "expected_subflows": test.expected_subflows, "error": outcome.error,
    }
    sub_rows: list[dict[str, Any]] = []
    if outcome.client_json and not outcome.error:
        s = summarize_iperf3(outcome.client_json)
        row.update(goodput_mbps=s["goodput_mbps"], duration_s=s["duration_s"], bytes=s["bytes"],
                   iperf3_retransmits=s["iperf3_retransmits"], sender_cc=s["sender_cc"])
        client_delta = counters.get("client", {})
        row["retransmits"] = client_delta.get("TcpRetransSegs", 0)
        if test.protocol == "mptcp":
            counts = []
            for conn in s["connections"]:
                token = connection_token(outcome.samples, conn)
                subs = subflows_of(outcome.samples, token) if token else []
                established = [x for x in subs if x["established"]]
                counts.append(len(established))
                total = sum(x.get("bytes_acked", 0) for x in established) or 1
                for x in established:
                    sub_rows.append({
                        "experiment": exp.name, "test": test.label, "repetition": test.repetition,
                        "connection": conn, "token": token, "local": x["local"], "remote": x["remote"],
                        "local_id": x.get("local_id"), "bytes_acked": x.get("bytes_acked", 0),
                        "share": x.get("bytes_acked", 0) / total, "mean_rtt_ms": x["mean_rtt_ms"],
                        "retrans_total": x.get("retrans_total", 0), "cc": x.get("cc"),
                    })
            row["subflows"] = min(counts) if counts else 0
            row["mp_joins"] = client_delta.get("MPTcpExtMPJoinSynAckRx", 0)
            row["mptcp_fallback"] = client_delta.get("MPTcpExtMPCapableFallbackACK", 0) + \
                client_delta.get("MPTcpExtMPCapableFallbackSYNACK", 0)
        else:
            plain = [tcp_connection_is_plain(outcome.samples, c) for c in s["connections"]]
            row["subflows"] = 1 if all(p is not False for p in plain) else 0
    else:
        row.update(goodput_mbps=None, subflows=0)
    row["subflows_ok"] = bool(row.get("subflows", 0) >= row["expected_subflows"]) and not outcome.error
    row.update(link_columns(plan))
    row["started"] = outcome.started
    row["ended"] = outcome.ended
    return row, sub_rows


def samples_rows(test: PlanTest, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"test": test.label, **s} for s in samples]


def describe_plan(exp: Experiment, plan: Plan, console: Console) -> None:
    t = Table(title=f"{exp.name}: plan", show_lines=False)
    t.add_column("host")
    t.add_column("interface")
    t.add_column("address")
    t.add_column("table")
    t.add_column("MPTCP endpoint")
    for h in plan.hosts:
        eps = {e.interface: ",".join(e.flags) for e in h.mptcp.endpoints}
        for i in h.intfs:
            t.add_row(h.name, i.name, i.address or "", str(i.table), eps.get(i.name, ""))
    console.print(t)
    lt = Table(title="links")
    for c in ("link", "interfaces", "bw Mbit/s", "delay ms", "jitter ms", "loss %", "queue"):
        lt.add_column(c)
    for link in plan.links:
        p = link.params
        lt.add_row(link.name, f"{link.intf1.name} - {link.intf2.name}", str(p["bw"] or "-"),
                   f"{p['delay']:g}", f"{p['jitter']:g}", f"{p['loss']:g}", str(p["queue"] or "-"))
    console.print(lt)
    tr = exp.traffic
    length = f"{tr.duration:g} s" if tr.duration else f"{tr.bytes} bytes"
    console.print(f"traffic: {plan.client} -> {plan.server} ({plan.server_address}), {length} per test, "
                  f"{len(plan.tests)} tests: {' '.join(t.label for t in plan.tests)}")
    console.print(f"expected subflows per MPTCP connection: {plan.expected_subflows}")


def make_controller(exp: Experiment, plan: Plan, rd: RunDir, pox_home: Path | None) -> Any:
    from .controller import PoxController, StaticController
    from .plan import controller_topology

    kind = exp.controller.kind
    if kind == "none":
        return None
    topo = controller_topology(plan, exp.traffic.port)
    if kind == "static":
        return StaticController(topo)
    assert pox_home is not None
    return PoxController(topo, pox_home, exp.controller.openflow_port, rd.path / "controller-topology.json",
                         rd.raw / "pox.log")


def path_columns(controller: Any, before: dict[str, dict[int, int]], after: dict[str, dict[int, int]],
                 n_subflows: int) -> dict[str, int]:
    """Bytes client -> server per path of the set, read at each path's first switch."""
    from .paths import COOKIE_FWD

    paths = controller.paths
    cols = {f"path{j + 1}_bytes": 0 for j in range(len(paths))}
    for i in range(n_subflows):
        j = i % len(paths)
        first = paths[j][1]
        cookie = COOKIE_FWD + i
        cols[f"path{j + 1}_bytes"] += after.get(first, {}).get(cookie, 0) - before.get(first, {}).get(cookie, 0)
    return cols


def run(spec: str | Path, out: str | Path | None = None, dry_run: bool = False,
        console: Console | None = None, figures: bool = True, shaper: str | None = None,
        check: str | None = None, pox_home: str | None = None) -> RunReport | None:
    """Run one experiment. Raises SpecError/PlanError/PreflightError before creating anything."""
    from .network import Network, preflight
    from .registry import Registry
    from .traffic import run_test

    console = console or Console(stderr=True)
    spec_path = resolve_spec_path(spec)
    exp = load_spec(spec_path)
    if shaper or check:
        emu = exp.emulation.model_copy(update={k: v for k, v in (("shaper", shaper), ("check", check)) if v})
        exp = exp.model_copy(update={"emulation": emu})
    plan = make_plan(exp)
    if dry_run:
        describe_plan(exp, plan, console)
        return None
    t_start = time.monotonic()
    caps = capabilities.probe()
    if os.geteuid() == 0 and caps.ovs_installed:
        capabilities.start_ovs()
    preflight(plan, caps, exp.emulation.shaper)
    pox_dir = None
    if exp.controller.kind == "pox":
        from .controller import POX_HELP, find_pox
        from .network import PreflightError

        pox_dir = find_pox(pox_home or exp.controller.pox_home)
        if pox_dir is None:
            raise PreflightError([f"controller.kind: pox, but no POX checkout was found. {POX_HELP}"])

    run_id = new_run_id()
    rd = RunDir.create(exp.name, root=exp.outputs.dir, out=out, run_id=run_id)
    rd.write_spec(exp.model_dump(mode="json"))
    rd.write_json("plan.json", plan.to_dict())
    meta: dict[str, Any] = {
        "run_id": run_id, "experiment": exp.name, "spec_file": str(spec_path),
        "command": sys.argv, "hostname": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "kernel": os.uname().release,
        "capabilities": caps.to_dict(), "versions": capabilities.versions(),
        "datapath": caps.datapath, "shaper_requested": exp.emulation.shaper,
        "root_sysctls": {k: capabilities.read_sysctl(k) for k in (
            "net.mptcp.enabled", "net.mptcp.path_manager", "net.mptcp.scheduler",
            "net.ipv4.tcp_congestion_control", "net.ipv4.tcp_allowed_congestion_control")},
        "mptcp_mode": caps.iperf3_mptcp, "expected_subflows": plan.expected_subflows,
        "formats": exp.outputs.formats, "status": "running",
    }
    rd.write_json("metadata.json", meta)
    console.print(f"[bold]{exp.name}[/]: run {run_id} -> {rd.path}  "
                  f"(OVS {caps.datapath} datapath, netem {'present' if caps.netem else 'absent'}, "
                  f"shaper {exp.emulation.shaper}, MPTCP via {caps.iperf3_mptcp})")

    rows: list[dict[str, Any]] = []
    sub_rows: list[dict[str, Any]] = []
    flagged: list[str] = []
    registry = Registry(run_id)
    from .paths import max_flow
    from .plan import controller_topology

    ctl = make_controller(exp, plan, rd, pox_dir)
    topo = controller_topology(plan, exp.traffic.port)
    maxflow = max_flow(topo, plan.client, plan.server)
    meta["maxflow_mbps"] = maxflow
    net = Network(plan, caps, registry, shaper=exp.emulation.shaper, seed=exp.emulation.seed, controller=ctl)
    tr = exp.traffic
    try:
        with signals_as_exceptions():
            try:
                net.start()
                meta["network"] = net.describe()
                meta["shaping_backend"] = net.shaping_backend
                rd.write_json("metadata.json", meta)
                if exp.emulation.check != "none":
                    em = exp.emulation
                    console.print(f"self-check ({em.check}) of {len(selfcheck.paths(plan))} path(s)...")
                    check_report = selfcheck.run(net, em.check, em.rtt_tolerance_pct, em.rtt_tolerance_ms,
                                                 em.rate_tolerance_pct)
                    meta["self_check"] = check_report.to_dict()
                    rd.write_json("selfcheck.json", check_report.to_dict())
                    rd.write_json("metadata.json", meta)
                    console.print(check_report.table(), highlight=False, soft_wrap=True)
                    if not check_report.ok:
                        raise selfcheck.SelfCheckError(check_report)
                progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                    TextColumn("eta"), TimeRemainingColumn(), console=console,
                                    transient=False)
                client_pid = net.node(plan.client).pid
                server_pid = net.node(plan.server).pid
                with progress:
                    task = progress.add_task("tests", total=len(plan.tests))
                    switches = [sw.name for sw in plan.switches]
                    for test in plan.tests:
                        progress.update(task, description=f"{test.variant or test.protocol} #{test.repetition}")
                        if test.protocol == "mptcp":
                            net.set_signal_ports(plan.server, test.signal_ports)
                        flows_before = flow_bytes(switches) if ctl else {}
                        before = {"client": read_counters(client_pid), "server": read_counters(server_pid)}
                        outcome = run_test(
                            net, test.protocol, mptcp_mode=caps.iperf3_mptcp, port=tr.port,
                            duration=tr.duration, nbytes=tr.bytes, parallel=tr.parallel,
                            congestion_control=plan.host(plan.client).mptcp.congestion_control,
                            timeout_margin=tr.timeout_margin, sample_interval=exp.measurements.interval)
                        deltas = {"client": counter_delta(before["client"], read_counters(client_pid)),
                                  "server": counter_delta(before["server"], read_counters(server_pid))}
                        row, subs = test_row(exp, plan, test, outcome, deltas)
                        row["maxflow_mbps"] = maxflow
                        if row.get("goodput_mbps") is not None and maxflow:
                            row["goodput_over_maxflow"] = row["goodput_mbps"] / maxflow
                        if ctl:
                            flows_after = flow_bytes(switches)
                            row.update(path_columns(ctl, flows_before, flows_after,
                                                    max(topo.port_subflow.values()) + 1))
                            rd.write_raw(f"{test.label}-flows.json", {"before": flows_before, "after": flows_after})
                            if not ctl.alive():
                                died = f"controller died ({ctl.describe().get('died')})"
                                row["error"] = f"{died}; {row['error']}" if row.get("error") else died
                                row["subflows_ok"] = False
                                meta["controller_died"] = ctl.describe().get("died")
                        rd.write_raw(f"{test.label}-client.json", outcome.client_json or {"error": outcome.error, "stderr": outcome.stderr})
                        rd.write_raw(f"{test.label}-server.json", outcome.server_json or {})
                        rd.write_raw(f"{test.label}-counters.json", deltas)
                        write_csv(rd.raw / f"{test.label}-samples.csv", samples_rows(test, outcome.samples))
                        rows.append(row)
                        sub_rows.extend(subs)
                        rd.write_summary(rows)
                        if sub_rows:
                            rd.write_subflows(sub_rows)
                        if not row["subflows_ok"]:
                            why = row["error"] or (f"{row['subflows']} subflow(s), expected "
                                                   f"{row['expected_subflows']}")
                            flagged.append(f"{test.label}: {why}")
                            progress.console.print(f"[yellow]warning[/] {test.label}: {why}")
                        progress.advance(task)
                # What the links did: emulator counters (drops by loss and by queue) or qdisc stats.
                meta["link_stats"] = {pl.name: net.link(pl.index).stats() for pl in plan.links}
            finally:
                net.stop()
    except Interrupted as e:
        meta.update(status=f"interrupted ({e})", ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    timings=net.timings)
        rd.write_json("metadata.json", meta)
        raise
    except BaseException as e:
        meta.update(status=f"failed: {type(e).__name__}: {e}", ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    timings=net.timings)
        rd.write_json("metadata.json", meta)
        raise
    timings = dict(net.timings)
    timings["total_s"] = time.monotonic() - t_start
    meta.update(status="complete" if not flagged else f"complete, {len(flagged)} test(s) flagged",
                flagged=flagged, ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"), timings=timings)
    rd.write_json("metadata.json", meta)
    report = RunReport(rd.path, rows, flagged, timings)
    if figures and rows:
        from .figures import render

        paths = render(rd.path, exp.outputs.formats)
        console.print("figures: " + ", ".join(str(p) for p in paths))
    print_summary(report, console)
    return report


def print_summary(report: RunReport, console: Console) -> None:
    import pandas as pd

    df = pd.DataFrame(report.rows)
    ok = df[df["error"].isna()]
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
    tm = report.timings
    console.print(f"set-up {tm.get('build_s', 0) + tm.get('configure_s', 0):.2f} s, tear-down "
                  f"{tm.get('teardown_s', 0):.2f} s, total {tm.get('total_s', 0):.1f} s")
    for f in report.flagged:
        console.print(f"[yellow]flagged[/] {f}")
    console.print(f"results: {report.run_dir}")

"""One experiment, one direction: spec -> plan -> network -> traffic -> measurements -> results
-> figures. This module wires the stages; each stage lives in its own module.
"""

from __future__ import annotations

import json
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
from .results import PointState, RunDir, new_run_id, read_rows, write_csv
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
    failed_points: list[str] = field(default_factory=list)


def varying_link_params(plans: list[Plan]) -> set[str]:
    """Link parameters that differ between links in any of these plans (one column per link)."""
    return {key for plan in plans for key in LINK_COLUMNS
            if len({link.params[key] for link in plan.links}) > 1}


def link_columns(plan: Plan, per_link: set[str] | None = None) -> dict[str, Any]:
    """Link parameters as summary columns: one column when every link agrees (in every point of
    the run), else one per link, named `links[i].<param>` like the sweep's field paths."""
    per_link = varying_link_params([plan]) if per_link is None else per_link
    cols: dict[str, Any] = {}
    for key, col in LINK_COLUMNS.items():
        if key in per_link:
            for link in plan.links:
                cols[f"links[{link.index}].{col}"] = link.params[key]
        else:
            cols[col] = plan.links[0].params[key] if plan.links else None
    return cols


def test_row(exp: Experiment, plan: Plan, test: PlanTest, outcome: Any,
             counters: dict[str, dict[str, int]], per_link: set[str] | None = None
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
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
    row.update(link_columns(plan, per_link))
    row["started"] = outcome.started
    row["ended"] = outcome.ended
    return row, sub_rows


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


def _self_check(net: Any, exp: Experiment, console: Console, rd: RunDir, tag: str) -> selfcheck.SelfCheckReport | None:
    em = exp.emulation
    if em.check == "none":
        return None
    console.print(f"self-check ({em.check}) of {len(selfcheck.paths(net.plan))} path(s){tag}...")
    if not net.wait_idle():
        console.print("[yellow]warning[/] the links still held frames after 5 s; checking anyway")
    report = selfcheck.run(net, em.check, em.rtt_tolerance_pct, em.rtt_tolerance_ms, em.rate_tolerance_pct)
    console.print(report.table(), highlight=False, soft_wrap=True)
    return report


def run(spec: str | Path, out: str | Path | None = None, dry_run: bool = False,
        console: Console | None = None, figures: bool = True, shaper: str | None = None,
        check: str | None = None, pox_home: str | None = None, sets: list[str] | None = None,
        resume: str | Path | None = None) -> RunReport | None:
    """Run an experiment -- every point of its sweep. Raises SpecError/PlanError/PreflightError
    before anything is created."""
    from . import sweep as sweeps
    from .network import Network, PreflightError, preflight
    from .registry import Registry

    console = console or Console(stderr=True)
    if resume:
        rd_resume = RunDir(Path(resume))
        if not (rd_resume.path / "spec.yaml").exists():
            raise PreflightError([f"--resume: {resume} is not a run directory (no spec.yaml)"])
        spec_path = rd_resume.path / "spec.yaml"
    else:
        spec_path = resolve_spec_path(spec)
    exp = load_spec(spec_path)
    if shaper or check:
        emu = exp.emulation.model_copy(update={k: v for k, v in (("shaper", shaper), ("check", check)) if v})
        exp = exp.model_copy(update={"emulation": emu})
    extra = sweeps.parse_set(sets or [])
    if extra:  # --set parameters become part of the recorded spec's sweep
        from .spec import Sweep

        sw = exp.sweep or Sweep()
        exp = exp.model_copy(update={"sweep": sw.model_copy(update={"parameters": {**sw.parameters, **extra}})})
    pts = sweeps.points(exp)
    # Every point is validated and planned before anything is created: bad input exits 2.
    point_exps = [(p, sweeps.apply(exp, p)) for p in pts]
    plans = {p.id: make_plan(e) for p, e in point_exps}
    first_plan = plans[pts[0].id]
    if dry_run:
        describe_plan(point_exps[0][1], first_plan, console)
        describe_points(pts, plans, console)
        return None
    t_start = time.monotonic()
    caps = capabilities.probe()
    if os.geteuid() == 0 and caps.ovs_installed:
        capabilities.start_ovs()
    for p, e in point_exps:
        preflight(plans[p.id], caps, e.emulation.shaper)
    pox_dir = None
    if exp.controller.kind == "pox":
        from .controller import POX_HELP, find_pox

        pox_dir = find_pox(pox_home or exp.controller.pox_home)
        if pox_dir is None:
            raise PreflightError([f"controller.kind: pox, but no POX checkout was found. {POX_HELP}"])

    if resume:
        rd = RunDir(Path(resume))
        meta: dict[str, Any] = json.loads((rd.path / "metadata.json").read_text())
        run_id = meta["run_id"]
        meta.setdefault("resumed", []).append(time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    else:
        run_id = new_run_id()
        rd = RunDir.create(exp.name, root=exp.outputs.dir, out=out, run_id=run_id)
        rd.write_spec(exp.model_dump(mode="json"))
        rd.write_json("plan.json", first_plan.to_dict())
        meta = {
            "run_id": run_id, "experiment": exp.name, "spec_file": str(spec_path),
            "command": sys.argv, "hostname": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "kernel": os.uname().release,
            "capabilities": caps.to_dict(), "versions": capabilities.versions(),
            "datapath": caps.datapath, "shaper_requested": exp.emulation.shaper,
            "root_sysctls": {k: capabilities.read_sysctl(k) for k in (
                "net.mptcp.enabled", "net.mptcp.path_manager", "net.mptcp.scheduler",
                "net.ipv4.tcp_congestion_control", "net.ipv4.tcp_allowed_congestion_control")},
            "mptcp_mode": caps.iperf3_mptcp, "expected_subflows": first_plan.expected_subflows,
            "formats": exp.outputs.formats, "swept": [k for k, _ in pts[0].values],
            "shuffle_seed": exp.sweep.seed if exp.sweep and exp.sweep.shuffle else None,
        }
    meta["status"] = "running"
    rd.write_json("metadata.json", meta)
    state = PointState.open(rd, pts)
    done_ids = state.done_ids()
    # Rows of points that did not finish (killed half-way) are dropped: the point runs again.
    rows, sub_rows = read_rows(rd, done_ids, unnamed=pts[0].id)
    todo = [(p, e) for p, e in point_exps if p.id not in done_ids]
    console.print(f"[bold]{exp.name}[/]: run {run_id} -> {rd.path}  "
                  f"(OVS {caps.datapath} datapath, netem {'present' if caps.netem else 'absent'}, "
                  f"shaper {exp.emulation.shaper}, MPTCP via {caps.iperf3_mptcp})"
                  + (f"; {len(pts)} points, {len(todo)} to run" if len(pts) > 1 or resume else ""))

    flagged: list[str] = []
    failed: list[str] = []
    registry = Registry(run_id)
    timings: dict[str, float] = {"build_s": 0.0, "configure_s": 0.0, "teardown_s": 0.0,
                                 "reconfigure_s": 0.0, "selfcheck_s": 0.0, "measure_s": 0.0}
    net: Any = None
    net_exp: dict[str, Any] | None = None
    n_tests = sum(len(plans[p.id].tests) for p, _ in todo)
    per_link = varying_link_params(list(plans.values()))

    def close_net() -> None:
        nonlocal net, net_exp
        if net is not None:
            try:
                meta.setdefault("link_stats", {})[net_point] = {
                    pl.name: net.link(pl.index).stats() for pl in net.plan.links} if net.net else {}
            except Exception:
                pass
            net.stop()
            for k in ("build_s", "configure_s", "teardown_s"):
                timings[k] += net.timings.get(k, 0.0)
            net, net_exp = None, None

    net_point = ""
    try:
        with signals_as_exceptions():
            progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False)
            try:
                with progress:
                    task = progress.add_task("tests", total=n_tests)
                    for point, pexp in todo:
                        plan = plans[point.id]
                        pdump = pexp.model_dump(mode="json")
                        try:
                            t0 = time.monotonic()
                            in_place = net is not None and net_exp is not None and \
                                sweeps.link_only_change(net_exp, pdump) and net.apply_links(plan)
                            if in_place:
                                timings["reconfigure_s"] += time.monotonic() - t0
                            else:
                                close_net()
                                ctl = make_controller(pexp, plan, rd, pox_dir)
                                net = Network(plan, caps, registry, shaper=pexp.emulation.shaper,
                                              seed=pexp.emulation.seed, controller=ctl)
                                net.start()
                                net_exp, net_point = pdump, point.id
                                if "network" not in meta:
                                    meta["network"] = net.describe()
                                    meta["shaping_backend"] = net.shaping_backend
                                    rd.write_json("metadata.json", meta)
                            net_exp = pdump
                            t1 = time.monotonic()
                            report = _self_check(net, pexp, progress.console, rd,
                                                 f" at {point.label()}" if point.values else "")
                            timings["selfcheck_s"] += time.monotonic() - t1
                            if report is not None:
                                checks = meta.setdefault("self_checks", {})
                                checks[point.id] = report.to_dict()
                                if not point.values:
                                    meta["self_check"] = report.to_dict()
                                    rd.write_json("selfcheck.json", report.to_dict())
                                else:
                                    rd.write_json(f"selfcheck-{point.id}.json", report.to_dict())
                                rd.write_json("metadata.json", meta)
                                if not report.ok:
                                    raise selfcheck.SelfCheckError(report)
                            t2 = time.monotonic()
                            new_rows, new_subs, new_flags = run_point(net, pexp, plan, point, rd, caps,
                                                                      progress, task, per_link)
                            timings["measure_s"] += time.monotonic() - t2
                            if net.controller is not None and not net.controller.alive():
                                died = net.controller.describe().get("died")
                                meta["controller_died"] = f"{point.id}: {died}" if point.values else died
                        except selfcheck.SelfCheckError as e:
                            if len(pts) == 1:
                                raise
                            state.mark(point.id, "failed", "self-check failed")
                            failed.append(f"{point.id} ({point.label()}): self-check failed")
                            progress.console.print(f"[red]point failed[/] {point.label()}: self-check failed")
                            close_net()
                            progress.advance(task, len(plan.tests))
                            continue
                        except (Interrupted, KeyboardInterrupt):
                            raise
                        except Exception as e:
                            if len(pts) == 1:
                                raise
                            # A failed point is recorded and the sweep goes on, on a fresh network.
                            msg = f"{type(e).__name__}: {e}"
                            state.mark(point.id, "failed", msg)
                            failed.append(f"{point.id} ({point.label()}): {msg}")
                            progress.console.print(f"[red]point failed[/] {point.label()}: {msg}")
                            close_net()
                            continue
                        rows.extend(new_rows)
                        sub_rows.extend(new_subs)
                        flagged.extend(new_flags)
                        rd.write_summary(rows)
                        if sub_rows:
                            rd.write_subflows(sub_rows)
                        state.mark(point.id, "done")
            finally:
                close_net()
    except Interrupted as e:
        meta.update(status=f"interrupted ({e})", ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"), timings=timings)
        rd.write_json("metadata.json", meta)
        raise
    except BaseException as e:
        meta.update(status=f"failed: {type(e).__name__}: {e}", ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    timings=timings)
        rd.write_json("metadata.json", meta)
        raise
    timings["total_s"] = time.monotonic() - t_start
    timings["points_run"] = len(todo)
    status = "complete"
    if failed:
        status += f", {len(failed)} of {len(pts)} point(s) failed"
    if flagged:
        status += f", {len(flagged)} test(s) flagged"
    meta.update(status=status, flagged=flagged, failed_points=failed,
                ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"), timings=timings)
    meta["maxflow_mbps"] = rows[0].get("maxflow_mbps") if rows else None
    rd.write_json("metadata.json", meta)
    report_ = RunReport(rd.path, rows, flagged, timings, failed)
    if figures and rows:
        from .figures import render

        paths = render(rd.path, exp.outputs.formats)
        console.print("figures: " + ", ".join(str(p) for p in paths))
    print_summary(report_, console)
    return report_


def run_point(net: Any, exp: Experiment, plan: Plan, point: Any, rd: RunDir, caps: Any,
              progress: Progress, task: Any, per_link: set[str] | None = None
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Every test of one point on the running network; rows carry the point's values."""
    from .paths import max_flow
    from .plan import controller_topology
    from .traffic import run_test

    tr = exp.traffic
    ctl = net.controller
    topo = controller_topology(plan, tr.port)
    maxflow = max_flow(topo, plan.client, plan.server)
    client_pid, server_pid = net.node(plan.client).pid, net.node(plan.server).pid
    switches = [sw.name for sw in plan.switches]
    rows, sub_rows, flagged = [], [], []
    prefix = f"{point.id}-" if point.values else ""
    for test in plan.tests:
        label = prefix + test.label
        progress.update(task, description=f"{point.id + ' ' if point.values else ''}"
                        f"{test.variant or test.protocol} #{test.repetition}")
        if test.protocol == "mptcp":
            net.set_signal_ports(plan.server, test.signal_ports)
        flows_before = flow_bytes(switches) if ctl else {}
        before = {"client": read_counters(client_pid), "server": read_counters(server_pid)}
        outcome = run_test(
            net, test.protocol, mptcp_mode=caps.iperf3_mptcp, port=tr.port, duration=tr.duration,
            nbytes=tr.bytes, parallel=tr.parallel,
            congestion_control=plan.host(plan.client).mptcp.congestion_control,
            timeout_margin=tr.timeout_margin, sample_interval=exp.measurements.interval)
        deltas = {"client": counter_delta(before["client"], read_counters(client_pid)),
                  "server": counter_delta(before["server"], read_counters(server_pid))}
        row, subs = test_row(exp, plan, test, outcome, deltas, per_link)
        row["test"] = label
        for s_ in subs:
            s_["test"] = label
        if point.values:
            row = {"point": point.id, **point.as_dict(), **row}
            subs = [{"point": point.id, **point.as_dict(), **s_} for s_ in subs]
        row["maxflow_mbps"] = maxflow
        if row.get("goodput_mbps") is not None and maxflow:
            row["goodput_over_maxflow"] = row["goodput_mbps"] / maxflow
        if ctl:
            flows_after = flow_bytes(switches)
            row.update(path_columns(ctl, flows_before, flows_after, max(topo.port_subflow.values()) + 1))
            rd.write_raw(f"{label}-flows.json", {"before": flows_before, "after": flows_after})
            if not ctl.alive():
                died = f"controller died ({ctl.describe().get('died')})"
                row["error"] = f"{died}; {row['error']}" if row.get("error") else died
                row["subflows_ok"] = False
        rd.write_raw(f"{label}-client.json", outcome.client_json or {"error": outcome.error, "stderr": outcome.stderr})
        rd.write_raw(f"{label}-server.json", outcome.server_json or {})
        rd.write_raw(f"{label}-counters.json", deltas)
        write_csv(rd.raw / f"{label}-samples.csv", [{"test": label, **x} for x in outcome.samples])
        rows.append(row)
        sub_rows.extend(subs)
        if not row["subflows_ok"]:
            why = row["error"] or f"{row['subflows']} subflow(s), expected {row['expected_subflows']}"
            flagged.append(f"{label}: {why}")
            progress.console.print(f"[yellow]warning[/] {label}: {why}")
        progress.advance(task)
    return rows, sub_rows, flagged


def describe_points(pts: list[Any], plans: dict[str, Plan], console: Console) -> None:
    if len(pts) == 1 and not pts[0].values:
        return
    t = Table(title=f"{len(pts)} sweep points")
    t.add_column("point")
    keys = [k for k, _ in pts[0].values]
    for k in keys:
        t.add_column(k)
    t.add_column("tests")
    for p in pts:
        t.add_row(p.id, *[str(v) for _, v in p.values], str(len(plans[p.id].tests)))
    console.print(t)


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
    console.print(f"set-up {tm.get('build_s', 0) + tm.get('configure_s', 0):.2f} s, reconfiguration "
                  f"{tm.get('reconfigure_s', 0):.2f} s, self-check {tm.get('selfcheck_s', 0):.2f} s, "
                  f"measurement {tm.get('measure_s', 0):.1f} s, tear-down {tm.get('teardown_s', 0):.2f} s, "
                  f"total {tm.get('total_s', 0):.1f} s")
    for f in report.failed_points:
        console.print(f"[red]failed point[/] {f}")
    for f in report.flagged:
        console.print(f"[yellow]flagged[/] {f}")
    console.print(f"results: {report.run_dir}")

"""One experiment, top to bottom: spec -> plan -> preflight -> run directory -> for each sweep
point: network, self-check, traffic, rows -> results -> figures.

:func:`run` is that list of stages and nothing else; each stage is a function below (or a module
of its own), so a reader can follow one experiment in one direction.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console

from . import capabilities, console as show, preflight, provenance, results, selfcheck, sweep
from .errors import BusyError, PreflightError, RunDirError, SpecError
from .ids import new_run_id
from .plan import Plan, controller_topology, make_plan
from .recovery import per_event, summary_of, total_series
from .rows import (
    at_point, figure_problems, mib_rows, path_columns, receiver_series, rows_for_test, summary_columns,
    varying_link_params, why_flagged,
)
from .spec import Experiment, load_spec, parse_spec, resolve_spec_path
from .timeline import Timeline


class Interrupted(Exception):
    """SIGINT/SIGTERM/SIGHUP arrived; the network is torn down before we exit."""


@dataclass(frozen=True)
class RunOptions:
    """What the command line asks for (see ``mptcplab run --help``)."""

    spec: str | Path | None = None
    out: Path | None = None
    dry_run: bool = False
    figures: bool = True
    shaper: str | None = None
    check: str | None = None
    switch: str | None = None
    pox_home: str | None = None
    sets: tuple[str, ...] = ()
    resume: Path | None = None
    capture: bool = False  # --capture: capture every test (the spec's capture: settings, or the defaults)
    #: Distributed runs (mptcplab.distributed): hosts of an SSHCluster, an existing scheduler's
    #: address, or a LocalCluster's number of workers; with none of them the run is local.
    cluster: tuple[str, ...] = ()
    scheduler: str | None = None
    local_workers: int | None = None
    #: distributed: how often a point whose worker died is tried again elsewhere
    retries: int = 2
    #: distributed: leave out hosts that fail the preflight (else the run is refused)
    skip_bad_hosts: bool = False

    @property
    def distributed(self) -> bool:
        return bool(self.cluster or self.scheduler or self.local_workers)


@dataclass(frozen=True)
class PointPlan:
    """One sweep point: its values, the experiment at those values, and its plan."""

    point: sweep.Point
    exp: Experiment
    plan: Plan


@dataclass(frozen=True)
class Source:
    """Where the experiment comes from: a spec file (a new run) or a run directory (--resume)."""

    exp: Experiment
    spec_file: Path
    run_id: str
    resume: results.RunDir | None = None


@dataclass
class RunReport:
    run_dir: Path
    rows: list[dict[str, Any]]
    flagged: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    failed_points: list[str] = field(default_factory=list)
    failed_expectations: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- the pipeline


def run(opts: RunOptions, console: Console | None = None) -> RunReport | None:
    """Run an experiment -- every point of its sweep. Raises an exit-2 error (SpecError,
    PlanError, PreflightError, RunDirError, BusyError) before anything is created."""
    console = console or Console(stderr=True)
    if opts.distributed:
        from .distributed import run as run_distributed

        return run_distributed(opts, console)
    source = load(opts)
    try:
        points = plan_points(source.exp, source.run_id)
        if source.exp.sweep and source.exp.sweep.pin:
            console.print("sweep.pin: ignored here (this run is not distributed: every point runs on this machine)")
        if opts.dry_run:
            return dry_run(source, points, opts, console)
        with hold_machine(source, opts):
            if source.resume:
                reclaim_last_attempt(source.run_id, console)
            caps, pox_home = check_machine(source, points, opts)
            with open_run(source, points, caps, opts) as active:
                run_points(active, points, pox_home, console)
                conclude(active, opts, console)
    finally:
        if source.resume:
            source.resume.close()  # its lock, taken when it was opened
    show.show_summary(active.rows, active.timings, active.failed, active.flagged, active.rd.path, console)
    if active.evidence is not None:
        show.show_verdicts(active.evidence.verdicts, console)
    return RunReport(active.rd.path, active.rows, active.flagged, active.timings, active.failed,
                     [v.describe() for v in active.evidence.failed] if active.evidence else [])


# --------------------------------------------------------------------------- stages


def load(opts: RunOptions) -> Source:
    """The spec with the command line's overrides, each validated like the spec itself; or, on
    --resume, the spec the run directory recorded (no overrides: a resumed run stays the run
    it was)."""
    if opts.resume:
        if opts.sets or opts.shaper or opts.check or opts.switch or opts.capture:
            raise RunDirError(["--resume continues a run as it was recorded: --set, --shaper, --check, --switch and "
                               "--capture cannot change it; start a new run for other values"])
        rd = results.RunDir.open_existing(opts.resume, resume=True)  # validated, and locked
        spec = rd.read_spec()
        try:
            exp = parse_spec(spec or {})
        except SpecError as e:
            rd.close()
            raise RunDirError([f"{rd.path / results.SPEC}: {p}" for p in e.problems]) from None
        return Source(exp, rd.path / results.SPEC, rd.run_id, rd)
    if not opts.spec:
        raise SpecError(["SPEC: give an experiment spec (a path, or a name in experiments/), or --resume RUN_DIR"])
    spec_file = resolve_spec_path(opts.spec)
    exp = load_spec(spec_file)
    overrides = {"emulation.shaper": opts.shaper, "emulation.check": opts.check, "emulation.switch": opts.switch}
    for path, value in overrides.items():
        if value is not None:
            exp = sweep.with_values(exp, {path: value}, "--" + path.split(".")[1])
    if opts.capture and exp.capture is None:
        exp = sweep.with_values(exp, {"capture": {}}, "--capture")
    extra = sweep.parse_set(list(opts.sets))
    if extra:
        params = {**(exp.sweep.parameters if exp.sweep else {}), **extra}
        exp = sweep.with_values(exp, {"sweep.parameters": params}, "--set")
    return Source(exp, spec_file, new_run_id())


def plan_points(exp: Experiment, run_id: str) -> list[PointPlan]:
    """Every point of the sweep, validated and planned: bad values exit 2 before anything runs."""
    out = []
    for point in sweep.points(exp):
        at = sweep.apply(exp, point)
        out.append(PointPlan(point, at, make_plan(at, run_id)))
    check_columns(exp, out)
    pins = exp.sweep.pin if exp.sweep else {}
    unknown = sorted(set(pins) - {p.point.id for p in out})
    if unknown:
        raise SpecError([f"sweep.pin.{pid}: no such point (this sweep has {len(out)}: "
                         f"{out[0].point.id}..{out[-1].point.id}; `run-experiment SPEC --dry-run` lists them)"
                         for pid in unknown])
    return out


def check_columns(exp: Experiment, points: list[PointPlan]) -> None:
    """Custom figures and expectations name columns the run will produce (SpecError before the
    run otherwise): summary columns; options.KIND when the tests are captured; mib.COUNTER by
    the kernel's naming (MPTcpExt...)."""
    if not exp.figures and not exp.expect:
        return
    n_paths = 0
    if exp.controller.kind != "none" and exp.controller.policy != "ecmp":
        from .paths import proactive_rules

        n_paths = max(len(proactive_rules(controller_topology(p.plan, exp.traffic.port))[1]) for p in points)
    columns = summary_columns([p.plan for p in points], [k for k, _ in points[0].point.values], n_paths)
    problems = figure_problems(exp.figures, columns)
    if exp.expect:
        problems += expectation_problems(exp, columns)
    if problems:
        raise SpecError(problems)


def expectation_problems(exp: Experiment, columns: list[str]) -> list[str]:
    """What an expectation names that the run will not have."""
    import re

    from .analyze import OPTION_COLUMNS
    from .expect import parse_all, unknown_names

    exps = parse_all(exp.expect)
    problems = []
    for e in exps:
        for n in e.name_nodes():
            if n.path.startswith("mib.") and not re.fullmatch(r"MPTcpExt[A-Za-z0-9]+", n.path[4:]):
                problems.append(f"expect[{e.index}]: col {n.col}: {n.path} is not an MPTCP MIB counter "
                                "(mib.MPTcpExt..., as nstat names them)")
            if n.path.startswith("options.") and exp.capture is None:
                problems.append(f"expect[{e.index}]: col {n.col}: {n.path} needs captures: add capture: {{}} "
                                "or run with --capture")
    mib = [n.path for e in exps for n in e.name_nodes() if n.path.startswith("mib.")]  # checked above
    problems += unknown_names(exps, [*columns, *OPTION_COLUMNS, "test", "variant", "protocol", "point", *mib])
    return problems


def dry_run(source: Source, points: list[PointPlan], opts: RunOptions, console: Console) -> None:
    """The plan, and whether this machine would run it now; nothing is created."""
    from .lock import MachineLock

    show.show_plan(points[0].exp, points[0].plan, console)
    show.show_points([p.point for p in points], {p.point.id: p.plan for p in points}, console)
    lock = MachineLock()
    if lock.holder():  # its bridges and interfaces would be listed as clashes: say why instead
        raise BusyError([lock.busy_message() + "; a run now would be refused"])
    if source.resume:
        from .registry import default_state_dir, state_path

        left = [n for n in last_attempt_networks(source.run_id) if state_path(n, default_state_dir()).exists()]
        if left:
            console.print(f"resume: the last attempt left {len(left)} network(s) recorded ({', '.join(left)}); "
                          "the resume removes them first (their owners gone)", highlight=False)
    check_machine(source, points, opts)
    console.print("preflight: this machine can run every point")


def last_attempt_networks(run_id: str) -> list[str]:
    """The network ids a killed attempt of this run may have left on this machine: its own, and
    its distributed workers' (the slots record them)."""
    from .lock import slot_netids

    return [run_id, *slot_netids(run_id)]


def reclaim_last_attempt(run_id: str, console: Console) -> None:
    """On --resume, with the machine lock held: what the run's killed last attempt left -- its
    own network, and its distributed workers' networks on this machine (the slots record them)
    -- removed, as `mptcplab clean` would, but only this run's and only with its owner gone.
    Raises PreflightError (nothing started) when some of it would not go."""
    from .registry import CleanReport, reclaim

    report = CleanReport()
    reclaim(last_attempt_networks(run_id), report)
    if report.runs:
        console.print(f"resume: removed what the last attempt left ({len(report.bridges)} bridge(s), "
                      f"{len(report.interfaces)} interface(s), {report.processes} process(es))")
    for note in report.skipped:
        console.print(f"[yellow]resume[/]: {note}", highlight=False)
    if report.remaining:
        raise PreflightError([*report.remaining, "--resume: the last attempt's leftovers would not go; "
                              "see `mptcplab clean`"])


def check_machine(source: Source, points: list[PointPlan], opts: RunOptions
                  ) -> tuple[capabilities.Capabilities, Path | None]:
    """Probe the machine (starting and writing nothing) and hold every point against it."""
    from .controller import POX_HELP, find_pox, pox_checkout_problems
    from .registry import default_state_dir, state_path

    caps = capabilities.probe()
    machine = preflight.Machine(root=os.geteuid() == 0, bridges=capabilities.existing_bridges(),
                                interfaces=capabilities.existing_interfaces())
    pox_home = None
    problems = []
    if source.resume and not opts.dry_run and state_path(source.run_id, default_state_dir()).exists():
        problems.append(f"--resume: the run's last attempt left processes, bridges or interfaces behind "
                        f"(recorded in {state_path(source.run_id, default_state_dir())}): run `mptcplab clean` first")
    if opts.out is not None and os.path.lexists(opts.out):
        problems.append(f"--out {opts.out}: exists; a run writes only into a new directory. Give a path that "
                        f"does not exist yet, or --resume {opts.out} to finish the run recorded there")
    if any(p.exp.controller.kind == "pox" for p in points):  # a swept controller.kind counts too
        pox_home = find_pox(opts.pox_home)
        if pox_home is None:
            problems.append(f"controller.kind: pox, but no POX checkout was found. {POX_HELP}")
        else:
            problems += pox_checkout_problems(pox_home)
    try:
        preflight.check([(p.point.label(), p.exp, p.plan) for p in points], caps, machine)
    except PreflightError as e:
        problems = e.problems + problems
    if problems:
        raise PreflightError(problems)
    return caps, pox_home


def hold_machine(source: Source, opts: RunOptions) -> Any:
    """The machine-wide lock: one run at a time builds networks here; a second is refused at
    once, naming the run that holds the machine."""
    from .lock import MachineLock

    exp = source.exp
    path = source.resume.path if source.resume else \
        (Path(opts.out) if opts.out else Path(exp.outputs.dir) / exp.name / source.run_id)
    return MachineLock().acquire(source.run_id, path)


def switches_described(caps: capabilities.Capabilities, points: list[PointPlan]) -> str:
    """'Linux bridges', 'OVS user datapath' or both: what the run's switches are."""
    kinds = sorted({p.plan.switch for p in points})
    return ", ".join("Linux bridges" if k == "bridge" else f"OVS {caps.datapath} datapath" for k in kinds)


def prepare_machine(caps: capabilities.Capabilities, points: list[PointPlan]) -> capabilities.Capabilities:
    """After preflight, holding the machine: Open vSwitch running, its module loaded where the
    kernel allows, the link emulator built if a link needs it."""
    caps = capabilities.prepare(caps, ovs=any(p.plan.switch == "ovs" for p in points))
    if any(l.up.shaped() or l.down.shaped() or p.exp.emulation.shaper == "userspace"
           for p in points for l in p.plan.links):
        from .emulator import binary

        binary()
    return caps


@dataclass
class ActiveRun:
    """A run directory being filled: its metadata, point states and rows so far."""

    rd: results.RunDir
    exp: Experiment
    meta: dict[str, Any]
    state: results.PointState
    rows: list[dict[str, Any]]
    sub_rows: list[dict[str, Any]]
    registry: Any
    caps: capabilities.Capabilities
    #: rows so far of the tables beside summary.csv and subflows.csv (results.TABLES)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("build_s", "configure_s", "teardown_s", "reconfigure_s", "selfcheck_s", "measure_s"), 0.0))
    flagged: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    evidence: Any = None  # mptcplab.analyze.Evidence, once the run is analysed

    def save_meta(self) -> None:
        self.rd.write_metadata(self.meta)

    def commit_point(self, point_id: str, out: "PointRows") -> None:
        """Rows first, then the point's done flag: a point marked done always has its rows."""
        self.rows.extend(out.rows)
        self.sub_rows.extend(out.subflows)
        self.rd.write_summary(self.rows)
        if self.sub_rows:
            self.rd.write_subflows(self.sub_rows)
        for name, rows in out.tables.items():
            self.tables.setdefault(name, []).extend(rows)
            if self.tables[name]:
                self.rd.write_table(name, self.tables[name])
        self.state.mark(point_id, "done")

    def fail_point(self, pp: PointPlan, why: str, console: Console) -> None:
        self.state.mark(pp.point.id, "failed", why)
        self.failed.append(f"{pp.point.id} ({pp.point.label()}): {why}")
        console.print(f"[red]point failed[/] {pp.point.label()}: {why}")


@contextmanager
def open_run(source: Source, points: list[PointPlan], caps: capabilities.Capabilities,
             opts: RunOptions, prepare: bool = True) -> Iterator[ActiveRun]:
    """The run directory (new, or the one resumed) held for this run, then the machine prepared
    (not with prepare=False: a distributed run's workers prepare their own); the metadata says
    how the run ended, whatever happens."""
    from .registry import Registry

    exp = source.exp
    rd = source.resume or results.RunDir.create(exp.name, root=exp.outputs.dir, out=opts.out, run_id=source.run_id)
    with rd:  # its lock, held since create/open_existing, goes with it
        state = results.PointState.open(rd, [p.point for p in points])  # a resume of other points: refused
        if prepare:
            caps = prepare_machine(caps, points)
        if source.resume:
            meta = rd.metadata
            meta.setdefault("resumed", []).append(provenance.now())
        else:
            rd.write_spec(exp.model_dump(mode="json"))
            rd.write_plan(points[0].plan.to_dict())
            meta = provenance.run_metadata(exp, source.spec_file, source.run_id, caps,
                                           points[0].plan.expected_subflows, [k for k, _ in points[0].point.values])
        rows, sub_rows = results.read_rows(rd, state.done_ids(), unnamed=points[0].point.id)
        active = ActiveRun(rd, exp, meta, state, rows, sub_rows, Registry(source.run_id), caps,
                           tables=results.read_tables(rd, state.done_ids(), unnamed=points[0].point.id))
        meta["status"] = "running"
        active.save_meta()
        t0 = time.monotonic()
        try:
            yield active
        except Interrupted as e:
            meta.update(status=f"interrupted ({e})", ended=provenance.now(), timings=active.timings)
            active.save_meta()
            raise
        except BaseException as e:
            meta.update(status=f"failed: {type(e).__name__}: {e}", ended=provenance.now(), timings=active.timings)
            active.save_meta()
            raise
        active.timings["total_s"] = time.monotonic() - t0
        status = "complete"
        if active.failed:
            status += f", {len(active.failed)} of {len(points)} point(s) failed"
        if active.flagged:
            status += f", {len(active.flagged)} test(s) flagged"
        if active.evidence is not None and active.evidence.failed:
            status += f", {len(active.evidence.failed)} of {len(active.evidence.verdicts)} expectation(s) failed"
        meta.update(status=status, flagged=active.flagged, failed_points=active.failed, ended=provenance.now(),
                    timings=active.timings, maxflow_mbps=active.rows[0].get("maxflow_mbps") if active.rows else None)
        active.save_meta()


def run_points(active: ActiveRun, points: list[PointPlan], pox_home: Path | None, console: Console) -> None:
    """Every point not done yet, on a network kept between points where only links change. A
    point that fails is recorded and the sweep goes on (a single point's failure is the run's)."""
    from .network import NetworkSession

    caps = active.caps
    todo = [p for p in points if active.state.status(p.point.id) != "done"]
    console.print(f"[bold]{active.exp.name}[/]: run {active.meta['run_id']} -> {active.rd.path}  "
                  f"({switches_described(caps, points)}, netem {'present' if caps.netem else 'absent'}, "
                  f"shaper {active.exp.emulation.shaper}, MPTCP via {caps.iperf3_mptcp})"
                  + (f"; {len(points)} points, {len(todo)} to run" if len(points) > 1 else ""))
    per_link = varying_link_params([p.plan for p in points])
    session = NetworkSession(caps, active.registry, lambda exp, plan: make_controller(exp, plan, active.rd, pox_home))
    with signals_as_exceptions(), show.progress_bar(console) as progress:
        task = progress.add_task("tests", total=sum(len(p.plan.tests) for p in todo))
        try:
            for pp in todo:
                try:
                    out = run_point(active, session, pp, caps, per_link, progress, task)
                except (Interrupted, KeyboardInterrupt):
                    raise
                except Exception as e:
                    if len(points) == 1:
                        raise
                    why = "self-check failed" if isinstance(e, selfcheck.SelfCheckError) else f"{type(e).__name__}: {e}"
                    active.fail_point(pp, why, progress.console)
                    session.close()
                    progress.advance(task, len(pp.plan.tests))
                    continue
                session.point_done(pp.point.id)
                active.commit_point(pp.point.id, out)
        finally:
            session.close()
            active.registry.forget_network()  # the state file goes once nothing of the run is left
            for k in ("build_s", "configure_s", "teardown_s", "reconfigure_s"):
                active.timings[k] += session.timings.get(k, 0.0)
            active.meta["link_stats"] = session.link_stats


@dataclass
class PointRows:
    """What one point adds to the run's tables."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    subflows: list[dict[str, Any]] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, row: dict[str, Any], subflows: list[dict[str, Any]],
            tables: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.rows.append(row)
        self.subflows.extend(subflows)
        for name, rows in (tables or {}).items():
            self.tables.setdefault(name, []).extend(rows)

    def at_point(self, pp: PointPlan) -> "PointRows":
        if not pp.point.values:
            return self
        mark = lambda rows: at_point(pp.point.id, pp.point.as_dict(), rows)  # noqa: E731
        return PointRows(mark(self.rows), mark(self.subflows), {k: mark(v) for k, v in self.tables.items()})


def run_point(active: ActiveRun, session: Any, pp: PointPlan, caps: capabilities.Capabilities,
              per_link: set[str], progress: Any, task: Any) -> PointRows:
    """One point: its network (built or changed in place), the self-check, then every test."""
    net = session.ensure(pp.point.id, pp.exp, pp.plan)
    if "network" not in active.meta:
        active.meta.update(network=net.describe(), shaping_backend=net.shaping_backend)
        active.save_meta()
    t0 = time.monotonic()
    report = self_check(net, pp, progress.console)
    active.timings["selfcheck_s"] += time.monotonic() - t0
    if report is not None:
        active.meta.setdefault("self_checks", {})[pp.point.id] = report.to_dict()
        if not pp.point.values:
            active.meta["self_check"] = report.to_dict()
        active.rd.write_selfcheck(pp.point.id if pp.point.values else None, report.to_dict())
        active.save_meta()
        if not report.ok:
            raise selfcheck.SelfCheckError(report)
    t0 = time.monotonic()
    out = PointRows()
    fixed = PointFixed.of(pp)
    if fixed.optimum is not None:
        optima = active.meta.setdefault("optimum", {})
        optima[pp.point.id if pp.point.values else "all"] = fixed.optimum.to_dict()
    for test in pp.plan.tests:
        progress.update(task, description=f"{pp.point.id + ' ' if pp.point.values else ''}"
                        f"{test.variant or test.protocol} #{test.repetition}")
        run = run_flows_test if test.flows else run_one_test
        row, sub, tables = run(active, net, pp, fixed, test, caps, per_link)
        why = why_flagged(row)
        if why:
            active.flagged.append(f"{row['test']}: {why}")
            progress.console.print(f"[yellow]warning[/] {row['test']}: {why}")
        out.add(row, sub, tables)
        progress.advance(task)
    active.timings["measure_s"] += time.monotonic() - t0
    ctl = net.controller
    if ctl is not None and not ctl.alive():
        died = ctl.describe().get("died")
        active.meta["controller_died"] = f"{pp.point.id}: {died}" if pp.point.values else died
    return out.at_point(pp)


def self_check(net: Any, pp: PointPlan, console: Console) -> selfcheck.SelfCheckReport | None:
    em = pp.exp.emulation
    if em.check == "none":
        return None
    at = f" at {pp.point.label()}" if pp.point.values else ""
    console.print(f"self-check ({em.check}) of {len(selfcheck.routes(net.plan))} route(s){at}...")
    if not net.wait_idle():
        console.print("[yellow]warning[/] the links still held frames after 5 s; checking anyway")
    report = selfcheck.run(net, em.check, em.rtt_tolerance_pct, em.rtt_tolerance_ms, em.rate_tolerance_pct)
    console.print(report.table(), highlight=False, soft_wrap=True)
    return report


@dataclass(frozen=True)
class PointFixed:
    """What every test of a point shares, worked out once: the controller's view of the
    topology, its max-flow, the tests' time limits and, for multi-flow tests, the optimum, the
    fluid model of ECMP and the flows' bottlenecks."""

    topo: Any
    maxflow: float
    time_limit_s: float
    connect_timeout_ms: int
    #: multi-flow tests whose flows all run at once for the same time: the max concurrent flow
    #: (mptcplab.optimum.Optimum); None otherwise (flows apart in time share no optimum)
    optimum: Any = None
    #: with ECMP: subflows per connection -> the fluid model's fraction of the optimum
    ecmp_model: dict[int, float] | None = None
    #: without ECMP: each flow's bottleneck link on its shortest route (Jain's index per group)
    bottlenecks: list[str] | None = None

    @classmethod
    def of(cls, pp: PointPlan) -> "PointFixed":
        from .paths import max_flow
        from .routes import connect_timeout_ms, flow_bottlenecks, flows_time_limit, time_limit

        tr, plan = pp.exp.traffic, pp.plan
        topo = controller_topology(plan, tr.port)
        if not plan.multi_flow:
            return cls(topo, max_flow(topo, plan.client, plan.server),
                       time_limit(plan, tr.duration, tr.bytes, tr.timeout_margin), connect_timeout_ms(plan))
        from .optimum import max_concurrent_flow

        flows = plan.tests[0].flows
        together = len({(f.start_s, f.duration_s) for f in flows}) == 1 and flows[0].bytes is None
        pairs = [(f.src, f.dst) for f in flows]
        opt = max_concurrent_flow(topo, pairs) if together else None
        rates = list(opt.per_flow_mbps) if opt else None
        ecmp = plan.policy == "ecmp"  # routes hashed: a fluid model; else shortest routes: bottlenecks
        model = None
        if opt and ecmp:
            from .optimum import ecmp_fluid_fraction

            model = {n: ecmp_fluid_fraction(topo, pairs, n, draws=10) for n in sorted({t.expected_subflows
                                                                                       for t in plan.tests})}
        return cls(topo, max_flow(topo, plan.client, plan.server),
                   flows_time_limit(plan, flows, tr.timeout_margin, rates), connect_timeout_ms(plan), opt, model,
                   None if ecmp else flow_bottlenecks(plan, flows))


def remaining_capacity(plan: Plan, topo: Any) -> dict[str, float]:
    """Per target of a disruptive event (a link, a host interface): the client -> server
    max-flow without that link -- what recovery is measured against besides the level before.
    An endpoint or a backup flag takes no capacity away: the max-flow stays."""
    from .events import DISRUPTIVE
    from .paths import max_flow, remaining_max_flow

    index = {l.name: l.index for l in plan.links}
    index.update({i.name: i.link for h in plan.hosts for i in h.intfs})
    out = {}
    for e in plan.events:
        if e.action in DISRUPTIVE and e.target not in out:
            lost = e.action in ("down", "address-del")
            out[e.target] = remaining_max_flow(topo, plan.client, plan.server, index[e.target]) if lost \
                else max_flow(topo, plan.client, plan.server)
    return out


def use_backups(net: Any, test: Any) -> None:
    """The endpoints the test's variant makes backups (and no others) before it starts."""
    if test.backup or net.backups:
        from .interfaces import set_backups

        set_backups(net, test.backup)


@dataclass
class Watch:
    """What every test watches around its traffic: the events timeline it applies (started by
    the traffic, on the test's clock), the kernel counters of its hosts and, when the plan says
    so, its packet captures. ``events`` (the applied steps' rows), ``deltas`` (counter changes
    per host) and ``captures`` (each capture's counters) are filled when it ends."""

    timeline: Timeline
    events: list[dict[str, Any]] = field(default_factory=list)
    deltas: dict[str, dict[str, int]] = field(default_factory=dict)
    captures: list[dict[str, Any]] = field(default_factory=list)

    def tables(self, head: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """events.csv, mptcp-mib.csv and captures.csv rows of the test, each led by ``head``."""
        return {results.EVENTS: [{**head, **e} for e in self.events],
                results.MPTCP_MIB: [{**head, **m} for m in mib_rows(self.deltas)],
                results.CAPTURES: [{**head, **c} for c in self.captures]}


@contextmanager
def watching(net: Any, pids: dict[str, int], rd: results.RunDir, label: str) -> Iterator[Watch]:
    """Counters read before and after, captures running from before the traffic to after it
    (their files written to raw/), the timeline stopped (and its links put back) whatever
    happens to the test."""
    from .measurements import counter_delta, read_counters

    before = {name: read_counters(pid) for name, pid in pids.items()}
    watch = Watch(Timeline(net, list(net.plan.events)))
    captures = None
    if net.plan.capture is not None:
        from .capture import Captures

        pc = net.plan.capture
        captures = Captures(net, list(pc.targets), pc.snaplen, pc.max_mb).start()
    try:
        yield watch
    finally:
        try:
            watch.events = watch.timeline.stop()
        finally:  # the captures stop (and their directory goes) even if putting the network back failed
            if captures is not None:
                try:
                    for c in captures.stop():
                        if c.parts:
                            rd.write_capture(label, c.interface, c.parts)
                        watch.captures.append(c.row())
                finally:
                    captures.close()
    watch.deltas = {name: counter_delta(before[name], read_counters(pid)) for name, pid in pids.items()}


def run_one_test(active: ActiveRun, net: Any, pp: PointPlan, fixed: PointFixed, test: Any,
                 caps: capabilities.Capabilities, per_link: set[str]
                 ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """One iperf3 test with counters and (with a controller) per-path bytes, the events applied
    while it ran; raw files written."""
    from .controller import flow_bytes
    from .paths import COOKIE_FWD
    from .traffic import run_test

    tr, plan, ctl = pp.exp.traffic, pp.plan, net.controller
    label = (f"{pp.point.id}-" if pp.point.values else "") + test.label
    if test.protocol == "mptcp":
        net.set_signal_ports(plan.server, test.signal_ports)
    use_backups(net, test)
    net.reset_blackhole_detection([plan.client, plan.server])
    switches = [sw.name for sw in plan.switches]
    pids = {"client": net.node(plan.client).pid, "server": net.node(plan.server).pid}
    flows_before = flow_bytes(switches) if ctl else {}
    with watching(net, pids, active.rd, label) as watch:
        outcome = run_test(net, test.protocol, mptcp_mode=caps.iperf3_mptcp, port=tr.port, duration=tr.duration,
                           nbytes=tr.bytes, parallel=tr.parallel,
                           congestion_control=plan.host(plan.client).mptcp.congestion_control,
                           time_limit=fixed.time_limit_s, connect_timeout_ms=fixed.connect_timeout_ms,
                           sample_interval=pp.exp.measurements.interval, timeline=watch.timeline,
                           tool=tr.tool, seed=test.repetition)
    deltas = watch.deltas
    row, subs = rows_for_test(pp.exp.name, plan, test, outcome, deltas, per_link)
    row["test"] = label
    for s in subs:
        s["test"] = label
    topo = fixed.topo
    row["maxflow_mbps"] = maxflow = fixed.maxflow
    if row.get("goodput_mbps") is not None and maxflow:
        row["goodput_over_maxflow"] = row["goodput_mbps"] / maxflow
    if outcome.sample_errors:
        active.flagged.append(f"{label}: {outcome.sample_errors} subflow sample(s) failed")
    if ctl and ctl.paths:
        flows_after = flow_bytes(switches)
        row.update(path_columns(ctl.paths, flows_before, flows_after, max(topo.port_subflow.values()) + 1, COOKIE_FWD))
        active.rd.write_raw(results.raw_name(label, "flows"), {"before": flows_before, "after": flows_after})
    if ctl and not ctl.alive():
        died = f"controller died ({ctl.describe().get('died')})"
        row["error"] = f"{died}; {row['error']}" if row.get("error") else died
        row["subflows_ok"] = False
    rd = active.rd
    rd.write_raw(results.raw_name(label, "client"), outcome.client_json or {"error": outcome.error,
                                                                           "stderr": outcome.stderr})
    rd.write_raw(results.raw_name(label, "server"), outcome.server_json or {})
    rd.write_raw(results.raw_name(label, "counters"), deltas)
    rd.write_samples(label, [{"test": label, **x} for x in outcome.samples])
    series = receiver_series(outcome.server_json, 0.0)
    watch.events = per_event(watch.events, series, outcome.pm_events, remaining_capacity(plan, fixed.topo),
                             outcome.error, fixed.maxflow)
    row.update(summary_of(watch.events))  # how the connection rode out the cuts
    head = {"experiment": pp.exp.name, "test": label, "variant": row["variant"]}
    return row, subs, {**watch.tables(head), results.PM_EVENTS: [{**head, **e} for e in outcome.pm_events],
                       results.FLOW_GOODPUT: [{**head, "flow": f"{plan.client}-{plan.server}", "t": t, "goodput_mbps": g}
                                              for t, g in series]}


def run_flows_test(active: ActiveRun, net: Any, pp: PointPlan, fixed: PointFixed, test: Any,
                   caps: capabilities.Capabilities, per_link: set[str]
                   ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """A multi-flow test: its flows on one clock, the RTT probes, the switches' port counters;
    one summary row, subflow rows, and rows for flows.csv, flow-goodput.csv and rtt.csv."""
    from .controller import port_bytes
    from .rows import flow_rows, multi_flow_summary
    from .traffic import run_flows

    plan = pp.plan
    label = (f"{pp.point.id}-" if pp.point.values else "") + test.label
    announce, limits = dict(test.host_signal_ports), dict(test.host_limits)
    for host in sorted({h for t in plan.tests for f in t.flows for h in (f.src, f.dst)}):
        net.set_signal_ports(host, announce.get(host, ()))
        net.set_subflow_limit(host, limits.get(host, plan.host(host).mptcp.subflows))
    use_backups(net, test)
    hosts = sorted({h for f in test.flows for h in (f.src, f.dst)})
    net.reset_blackhole_detection(hosts)
    pids = {h: net.node(h).pid for h in hosts}
    switches = [sw.name for sw in plan.switches]
    ports_before = port_bytes(switches) if net.controller else {}
    with watching(net, pids, active.rd, label) as watch:
        outcome = run_flows(net, test, plan.probes, mptcp_mode=caps.iperf3_mptcp, time_limit=fixed.time_limit_s,
                            connect_timeout_ms=fixed.connect_timeout_ms, sample_interval=pp.exp.measurements.interval,
                            timeline=watch.timeline)
    deltas = watch.deltas
    flows, subs, series = flow_rows(pp.exp.name, test, outcome, fixed.optimum, fixed.bottlenecks)
    row = multi_flow_summary(pp.exp.name, plan, test, outcome, flows, per_link, fixed.optimum, deltas)
    row["maxflow_mbps"] = fixed.maxflow
    row["ecmp_model_fraction"] = (fixed.ecmp_model or {}).get(test.expected_subflows)
    for r in [row, *flows, *subs, *series]:
        r["test"] = label
    watch.events = per_event(watch.events, total_series(series), outcome.pm_events)  # all flows together
    row.update(summary_of(watch.events))
    head = {"experiment": pp.exp.name, "test": label, "variant": row["variant"]}
    rtt = [{**head, "probe": name, **x} for name, answers in outcome.probes.items() for x in answers]
    if outcome.sample_errors:
        active.flagged.append(f"{label}: {outcome.sample_errors} subflow sample(s) failed")
    rd = active.rd
    if net.controller:
        rd.write_raw(results.raw_name(label, "ports"), {"before": ports_before, "after": port_bytes(switches)})
    rd.write_raw(results.raw_name(label, "client"), {o.flow.label: o.client_json or {"error": o.error, "stderr": o.stderr}
                                                     for o in outcome.flows})
    rd.write_raw(results.raw_name(label, "server"), {o.flow.label: o.server_json or {} for o in outcome.flows})
    rd.write_raw(results.raw_name(label, "counters"), deltas)
    rd.write_samples(label, [{"test": label, "host": h, **x} for h, xs in outcome.samples.items() for x in xs])
    return row, subs, {**watch.tables(head), results.FLOWS: flows, results.FLOW_GOODPUT: series, results.RTT: rtt,
                       results.PM_EVENTS: [{**head, **e} for e in outcome.pm_events]}


def make_controller(exp: Experiment, plan: Plan, rd: results.RunDir, pox_home: Path | None) -> Any:
    from .controller import PoxController, StaticController

    kind = exp.controller.kind
    if kind == "none":
        return None
    topo = controller_topology(plan, exp.traffic.port)
    if kind == "static":
        return StaticController(topo)
    assert pox_home is not None  # check_machine found it

    def write_topology(obj: Any) -> Path:
        rd.write_json(results.CONTROLLER_TOPOLOGY, obj)
        return rd.path / results.CONTROLLER_TOPOLOGY

    return PoxController(topo, pox_home, exp.controller.openflow_port, open_log=lambda: rd.open_log(results.POX_LOG),
                         write_topology=write_topology)


def conclude(active: "ActiveRun", opts: RunOptions, console: Console) -> None:
    """What follows the last point of a run (local or distributed): the evidence -- census and
    expectations -- where the spec asks for it, then the figures."""
    if active.exp.capture is not None or active.exp.expect:
        active.evidence = analyze_run(active.rd, active.exp, active.meta, console)
    if opts.figures and active.rows:
        draw_figures(active.rd, active.exp, console)


def analyze_run(rd: results.RunDir, exp: Experiment, meta: dict[str, Any], console: Console) -> Any:
    """The option census of the captures and the verdicts of the expectations, from the run's
    results alone (mptcplab.analyze; `mptcplab analyze` redoes it); the verdicts go into the
    metadata too."""
    from .analyze import Evidence, analyze
    from .expect import Verdict

    try:
        evidence = analyze(rd, list(exp.expect))
    except Exception as e:  # noqa: BLE001  (the measurements stand; the analysis is the problem)
        why = f"{type(e).__name__}: {e}"
        console.print(f"[yellow]analysis failed[/] ({why}); the results are complete: `mptcplab analyze {rd.path}` "
                      "tries again", highlight=False, soft_wrap=True)
        meta["analysis_error"] = why
        failed = [Verdict(i, text, False, 0, (), f"not judged: the analysis failed ({why})", True)
                  for i, text in enumerate(exp.expect)]
        return Evidence(verdicts=failed)
    meta.pop("analysis_error", None)
    show.show_census(evidence.per_test, console)
    if evidence.verdicts:
        meta["expectations"] = {"passed": len(evidence.verdicts) - len(evidence.failed),
                                "failed": len(evidence.failed), "verdicts": [v.row() for v in evidence.verdicts]}
    return evidence


def draw_figures(rd: results.RunDir, exp: Experiment, console: Console) -> None:
    """Figures from the results just written, through the run directory still held. A figure
    that cannot be drawn does not undo the run: it is reported, and `mptcplab plot` tries again."""
    from .figures import render

    try:
        paths = render(rd, exp.outputs.formats)
    except Exception as e:  # noqa: BLE001  (the measurements stand; the drawing is the problem)
        console.print(f"[yellow]figures failed[/] ({type(e).__name__}: {e}); the results are complete: "
                      f"`mptcplab plot {rd.path}` draws them again")
        return
    console.print("figures: " + ", ".join(str(p) for p in paths))


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

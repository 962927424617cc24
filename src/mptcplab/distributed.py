"""Sweep points on several hosts through Dask: ``--local-workers N`` (a LocalCluster on this
machine), ``--cluster HOST[,HOST...]`` (an SSHCluster: the scheduler on the first host, one
worker on each) and ``--scheduler ADDRESS`` (workers started by hand, each with
``--nthreads 1 --resources mptcplab-net=1``).

Who does what:

- The client (the run-experiment process) owns the run directory. It plans every point, asks
  every worker for a preflight (capabilities, MPTCP, OVS, iperf3, the same mptcplab), then
  submits one task per point that is not done yet, and writes what comes back through the same
  results API and point state as a local run (rows, subflow rows, tables, raw files, self-checks,
  metadata): ``--resume`` (local or distributed), ``plot`` and ``analyze`` work unchanged.
- A worker runs one point at a time (each worker offers one ``mptcplab-net`` resource, each task
  asks for one): it takes a network slot on its machine (mptcplab.lock.NetSlot: the machine lock
  shared, its slot exclusive), builds the point's network with switch names of its own
  (mptcplab.plan.isolate: ``mw03s0``...), registered under a network id of its own
  (mptcplab.registry), runs the self-check and the tests into a private scratch run directory,
  tears the network down and returns the point's rows and files (bytes) and its host's
  provenance. Every point gets a fresh network (no network is kept across points).
- A point whose worker dies is given by the scheduler to another worker (``--retries`` N: Dask's
  ``allowed-failures``); each start is logged as a Dask event, and the attempts are recorded.
  The worker that takes over a dead worker's slot first removes what the dead one registered.

Where each point ran is in metadata.json, ``distributed.points.<id>`` (host, worker, slot,
network names, attempts), and each host's provenance in ``distributed.hosts.<hostname>``;
summary.csv keeps exactly the columns of a local run.
"""

from __future__ import annotations

import importlib
import io
import os
import re
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from rich.console import Console

from . import __version__, capabilities, console as show, provenance, results
from .errors import BusyError, PreflightError, SpecError
from .lock import slot_numbers

#: The worker resource a point asks for: one network per worker at a time.
RESOURCE = "mptcplab-net"
#: The Dask event topic of point starts (one per attempt).
EVENTS = "mptcplab-point-start"
#: A --cluster host: [user@]name or address (never a shell word: asyncssh takes it as data).
HOST = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}@)?(?:[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\])")
#: What runs a point on a worker ("module:function"); tests substitute their own.
NETWORK_POINT = "mptcplab.distributed:network_point"


def _dask() -> Any:
    try:
        import distributed
    except ImportError:
        raise SpecError(["--local-workers, --cluster and --scheduler need Dask: pip install 'mptcplab[dask]' "
                         "(or make setup)"]) from None
    return distributed


# --------------------------------------------------------------------------- what travels


@dataclass
class PointTask:
    """One point for a worker: the client's run id, the point planned as for a local run."""

    run_id: str
    pp: Any  # runner.PointPlan
    per_link: set[str]
    pox_home: str | None = None
    runner: str = NETWORK_POINT


@dataclass
class PointResult:
    """What a worker sends back for one point."""

    point_id: str
    rows: Any = None  # runner.PointRows, None when the point failed
    error: str | None = None
    #: "raw/<name>" or a top-level name -> bytes (results.RunDir.point_files)
    files: dict[str, bytes] = field(default_factory=dict)
    #: the metadata the point set (network, shaping_backend, self_checks, optimum, controller_died)
    meta: dict[str, Any] = field(default_factory=dict)
    flagged: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    link_stats: dict[str, Any] = field(default_factory=dict)
    #: hostname, worker address, slot, network id, switch names used
    where: dict[str, Any] = field(default_factory=dict)
    log: str = ""
    elapsed_s: float = 0.0
    #: time.time() when the worker finished (the client measures the return trip from it)
    finished: float = 0.0


def host_info(pox_home: str | None = None, points: list[Any] | None = None, run_id: str | None = None
              ) -> dict[str, Any]:
    """A worker's preflight: its host's provenance and what it cannot run (``problems``)."""
    from .plan import isolate
    from .preflight import Machine, check

    caps = capabilities.probe()
    info: dict[str, Any] = {
        "hostname": socket.gethostname(), "kernel": os.uname().release, "mptcplab": __version__,
        "capabilities": caps.to_dict(), "versions": capabilities.versions(),
        "root_sysctls": {k: capabilities.read_sysctl(k) for k in provenance.ROOT_SYSCTLS}, "problems": [],
    }
    with suppress(Exception):
        from distributed import get_worker

        info["worker"] = get_worker().address
    if points:
        machine = Machine(root=os.geteuid() == 0, bridges=capabilities.existing_bridges(),
                          interfaces=capabilities.existing_interfaces())
        try:
            check([(p.point.label(), p.exp, isolate(p.plan, "mw00s", run_id or "")[0]) for p in points], caps, machine)
        except PreflightError as e:
            info["problems"] += e.problems
        except Exception as e:  # noqa: BLE001  (a plan this host cannot isolate)
            info["problems"].append(f"{type(e).__name__}: {e}")
        if any(p.exp.controller.kind == "pox" for p in points):
            from .controller import find_pox, pox_checkout_problems

            home = find_pox(pox_home)
            info["problems"] += ["controller.kind: pox, but no POX checkout here"] if home is None \
                else pox_checkout_problems(home)
    info["caps"] = caps
    return info


# --------------------------------------------------------------------------- the worker


class _Quiet:
    """The progress bar's interface, for run_point on a worker: output into a string."""

    def __init__(self) -> None:
        self.console = Console(file=io.StringIO(), width=120, force_terminal=False, color_system=None)

    def update(self, *_: Any, **__: Any) -> None:
        pass

    def advance(self, *_: Any, **__: Any) -> None:
        pass

    def text(self) -> str:
        return self.console.file.getvalue()  # type: ignore[attr-defined]


def execute(task: PointTask) -> PointResult:
    """The Dask task: log the start (attempts are counted from these), run the point."""
    where: dict[str, Any] = {"hostname": socket.gethostname(), "pid": os.getpid()}
    with suppress(Exception):
        from distributed import get_worker

        w = get_worker()
        where["worker"] = w.address
        w.log_event(EVENTS, {"point": task.pp.point.id, "worker": w.address, "hostname": where["hostname"]})
    module, _, name = task.runner.partition(":")
    fn: Callable[[PointTask], PointResult] = getattr(importlib.import_module(module), name)
    res = fn(task)
    res.where = {**where, **res.where}
    res.finished = time.time()
    return res


def clean_previous(slot: Any) -> list[str]:
    """What the slot's previous holder (a worker that died) registered and left: removed, as
    `mptcplab clean` would, but only those network ids, and only when their owner is gone."""
    from .registry import CleanReport, reclaim

    report = CleanReport()
    slot.forget(reclaim(slot.previous, report))
    return report.remaining


def reclaim_slots(run_id: str) -> list[str]:
    """Run on every worker at the end of a distributed run: each slot of this machine that no
    live worker holds and whose last holder -- a worker of this run -- died with networks
    recorded (killed mid-point, its slot taken by no later point) is cleaned as the next holder
    would clean it. Returns what could not be removed."""
    from .lock import NetSlot

    left: list[str] = []
    for n in slot_numbers():
        try:  # only this run's slots: another run's dead worker is that run's (or `clean`'s) to remove
            slot = NetSlot().acquire(run_id, slots=[n], only_run=run_id)
        except BusyError:
            continue  # held (its holder is alive and cleans after itself), or not this run's
        except (PreflightError, OSError) as e:
            left.append(f"slot {n:02d}: {e}")
            continue
        with slot:
            try:
                left += clean_previous(slot)
            except Exception as e:  # noqa: BLE001  (one slot's trouble does not stop the others)
                left.append(f"slot {n:02d}: {type(e).__name__}: {e}")
    return left


def network_point(task: PointTask) -> PointResult:
    """Build the point's network in a slot of this machine, run its self-check and tests into a
    scratch run directory, tear it down; the rows and files come back as data."""
    from .ids import new_run_id
    from .lock import NetSlot
    from .network import NetworkSession
    from .plan import isolate
    from .preflight import Machine, check
    from .registry import Registry, default_state_dir, state_path
    from .runner import ActiveRun, PointPlan, make_controller, prepare_machine, run_point
    from .selfcheck import SelfCheckError

    t0 = time.monotonic()
    pp = task.pp
    res = PointResult(point_id=pp.point.id)
    progress = _Quiet()
    with NetSlot().acquire(task.run_id) as slot:
        left = clean_previous(slot)
        if left:
            res.error = "a dead worker's network is still there: " + "; ".join(left)
            return res
        netid = new_run_id()
        while state_path(netid, default_state_dir()).exists():
            time.sleep(0.01)
            netid = new_run_id()
        slot.record(netid)
        plan, names = isolate(pp.plan, slot.prefix, netid)
        res.where.update(slot=slot.slot, network_id=netid, switches=names)
        mine = PointPlan(pp.point, pp.exp, plan)
        scratch = Path(tempfile.mkdtemp(prefix="mptcplab-point-"))
        try:
            caps = capabilities.probe()
            check([(pp.point.label(), pp.exp, plan)], caps,
                  Machine(root=os.geteuid() == 0, bridges=capabilities.existing_bridges(),
                          interfaces=capabilities.existing_interfaces()))
            caps = prepare_machine(caps, [mine])
            rd = results.RunDir.create(pp.exp.name, out=scratch / "point", run_id=task.run_id)
            registry = Registry(netid)
            pox_home = Path(task.pox_home) if task.pox_home else None
            if pp.exp.controller.kind == "pox":
                from .controller import find_pox

                pox_home = find_pox(task.pox_home)
            active = ActiveRun(rd, pp.exp, {}, None, [], [], registry, caps)  # type: ignore[arg-type]
            session = NetworkSession(caps, registry, lambda exp, p: make_controller(exp, p, rd, pox_home))
            try:
                res.rows = run_point(active, session, mine, caps, task.per_link, progress, None)
                session.point_done(pp.point.id)
            except SelfCheckError:
                res.error = "self-check failed"
            except Exception as e:  # noqa: BLE001  (the point failed; the client records it)
                res.error = f"{type(e).__name__}: {e}"
            finally:
                try:
                    session.close()
                finally:
                    registry.forget_network()
                    if not registry.path.exists():
                        slot.forget([netid])
            res.meta = {k: v for k, v in active.meta.items()
                        if k in ("network", "shaping_backend", "self_checks", "self_check", "optimum",
                                 "controller_died")}
            res.flagged = list(active.flagged)
            res.timings = {**active.timings, **{k: session.timings.get(k, 0.0)
                                                for k in ("build_s", "configure_s", "teardown_s", "reconfigure_s")}}
            res.link_stats = dict(session.link_stats)
            res.files = rd.point_files()
            rd.close()
        except PreflightError as e:
            res.error = "preflight on " + socket.gethostname() + ": " + "; ".join(e.problems)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    res.log = progress.text()
    res.elapsed_s = time.monotonic() - t0
    return res


# --------------------------------------------------------------------------- the cluster


@contextmanager
def connect(opts: Any, console: Console) -> Iterator[Any]:
    """A Dask client for the options: a LocalCluster, an SSHCluster or an existing scheduler;
    the cluster (if we made it) closed at the end."""
    distributed = _dask()
    import dask

    modes = [m for m in (opts.local_workers, opts.cluster, opts.scheduler) if m]
    if len(modes) > 1:
        raise SpecError(["give one of --local-workers, --cluster and --scheduler"])
    if opts.retries < 0 or opts.retries > 20:
        raise SpecError([f"--retries {opts.retries}: give 0 to 20"])
    worker = {"nthreads": 1, "resources": {RESOURCE: 1}}
    with dask.config.set({"distributed.scheduler.allowed-failures": opts.retries,
                          "distributed.worker.daemon": False}):  # a worker starts processes (Mininet)
        if opts.local_workers:
            if not 1 <= opts.local_workers <= 64:
                raise SpecError([f"--local-workers {opts.local_workers}: give 1 to 64"])
            cluster = distributed.LocalCluster(n_workers=opts.local_workers, threads_per_worker=1, processes=True,
                                               resources={RESOURCE: 1}, dashboard_address=None)
        elif opts.cluster:
            from distributed.deploy.ssh import SSHCluster

            hosts = list(opts.cluster)
            bad = [h for h in hosts if not HOST.fullmatch(h)]
            if bad:
                raise SpecError([f"--cluster: {h!r} is not a host name or address ([user@]host)" for h in bad])
            console.print(f"starting Dask over SSH: scheduler on {hosts[0]}, a worker on each of {', '.join(hosts)}")
            cluster = SSHCluster([hosts[0], *hosts], worker_options=worker,
                                 scheduler_options={"dashboard_address": None})
        else:
            cluster = None
        try:
            client = distributed.Client(cluster if cluster is not None else opts.scheduler)
            try:
                yield client
            finally:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()


def preflight_hosts(client: Any, points: list[Any], run_id: str, opts: Any, console: Console
                    ) -> dict[str, dict[str, Any]]:
    """Every worker's preflight (worker address -> host info). A worker that cannot run every
    point is reported, and the run refused -- or, with skip_bad_hosts, the worker is retired."""
    deadline = time.monotonic() + 60
    while not client.scheduler_info()["workers"]:
        if time.monotonic() > deadline:
            raise PreflightError(["no Dask worker joined within 60 s"])
        time.sleep(0.2)
    workers = client.scheduler_info()["workers"]
    without = [a for a, w in workers.items() if (w.get("resources") or {}).get(RESOURCE, 0) < 1]
    # As tasks pinned to each worker, not client.run: that runs on the worker's event loop, where
    # pyroute2's synchronous sockets (which run their own loop) cannot work.
    futs = {a: client.submit(host_info, opts.pox_home, points, run_id, workers=[a], allow_other_workers=False,
                             pure=False, key=f"mptcplab-preflight-{run_id}-{k}")
            for k, a in enumerate(sorted(workers)) if a not in without}
    infos = {a: f.result(timeout=300) for a, f in futs.items()}
    problems, bad = [], list(without)
    for addr in without:
        problems.append(f"worker {addr}: no {RESOURCE} resource (start it with --nthreads 1 "
                        f"--resources {RESOURCE}=1)")
    for addr, info in infos.items():
        if info["mptcplab"] != __version__:
            info["problems"].append(f"mptcplab {info['mptcplab']} here, {__version__} on the client")
        for p in info["problems"]:
            problems.append(f"worker {addr} ({info['hostname']}): {p}")
        if info["problems"]:
            bad.append(addr)
    good = {a: i for a, i in infos.items() if a not in bad}
    if problems and (not opts.skip_bad_hosts or not good):
        raise PreflightError(problems + ([] if good else ["no worker can run this spec"]))
    for p in problems:
        console.print(f"[yellow]left out[/] {p}", highlight=False, soft_wrap=True)
    if bad:
        client.retire_workers(workers=bad, close_workers=True)
    return good


def host_differences(infos: dict[str, dict[str, Any]]) -> list[str]:
    """What differs between the hosts that will run points (kernel, capabilities)."""
    out = []
    by_host = {i["hostname"]: i for i in infos.values()}
    for key in ("kernel", "capabilities", "root_sysctls"):
        values = {h: i[key] for h, i in by_host.items()}
        if len({repr(v) for v in values.values()}) > 1:
            out.append(f"{key} differs: " + "; ".join(f"{h}: {v}" for h, v in sorted(values.items())))
    return out


# --------------------------------------------------------------------------- the client


def run(opts: Any, console: Console) -> Any:
    """runner.run for a distributed run: the same stages, the points on the cluster's workers."""
    from .runner import RunReport, conclude, load, open_run, plan_points

    if opts.dry_run:
        raise SpecError(["--dry-run checks this machine only: leave out --local-workers, --cluster and --scheduler"])
    source = load(opts)
    try:
        points = plan_points(source.exp, source.run_id)
        if opts.out is not None and os.path.lexists(opts.out):
            raise PreflightError([f"--out {opts.out}: exists; a run writes only into a new directory"])
        with connect(opts, console) as client:
            infos = preflight_hosts(client, points, source.run_id, opts, console)
            pin_workers(source.exp.sweep.pin if source.exp.sweep else {},  # before anything is created
                        {a: i["hostname"] for a, i in infos.items()})
            caps = next(iter(infos.values()))["caps"]
            with open_run(source, points, caps, opts, prepare=False) as active:
                mode = ("local-workers" if opts.local_workers else "cluster" if opts.cluster else "scheduler")
                hosts = {i["hostname"]: {k: v for k, v in i.items() if k not in ("caps", "problems", "worker")}
                         for i in infos.values()}
                diffs = host_differences(infos)
                for d in diffs:
                    console.print(f"[yellow]warning[/] the hosts differ: {d}", highlight=False, soft_wrap=True)
                dist = active.meta.setdefault("distributed", {})
                dist.setdefault("runs", []).append({"mode": mode, "workers": len(infos), "retries": opts.retries,
                                                    "started": provenance.now()})
                dist.setdefault("hosts", {}).update(hosts)
                dist["host_differences"] = diffs
                dist.setdefault("points", {})
                active.save_meta()
                run_points(active, points, client, opts, console,
                           hosts={a: i["hostname"] for a, i in infos.items()})
                conclude(active, opts, console)
    finally:
        if source.resume:
            source.resume.close()
    show.show_summary(active.rows, active.timings, active.failed, active.flagged, active.rd.path, console)
    if active.evidence is not None:
        show.show_verdicts(active.evidence.verdicts, console)
    return RunReport(active.rd.path, active.rows, active.flagged, active.timings, active.failed,
                     [v.describe() for v in active.evidence.failed] if active.evidence else [])


def pin_workers(pins: dict[str, str], hosts: dict[str, str]) -> dict[str, list[str]]:
    """Point id -> the workers (addresses) on the host ``sweep.pin`` names for it, from
    ``hosts`` (worker address -> hostname). Raises PreflightError for a host no worker is on."""
    out, problems = {}, []
    for pid, host in sorted(pins.items()):
        workers = sorted(a for a, h in hosts.items() if h == host)
        if not workers:
            problems.append(f"sweep.pin.{pid}: {host} runs no worker of this cluster "
                            f"(hosts: {', '.join(sorted(set(hosts.values())))})")
        out[pid] = workers
    if problems:
        raise PreflightError(problems)
    return out


def _machine(address: str) -> str:
    """'tcp://10.0.0.5:40123' -> '10.0.0.5': the machine a worker runs on (a worker its nanny
    restarts comes back on another port)."""
    return address.rpartition("://")[2].rpartition(":")[0]


def repin(allowed: list[str], workers: set[str]) -> list[str] | None:
    """Where a pinned point whose workers are all gone may run now: the workers now on the
    same machines (restarted ones), else None (its host is lost: anywhere)."""
    machines = {_machine(a) for a in allowed}
    return sorted(a for a in workers if _machine(a) in machines) or None


def run_points(active: Any, points: list[Any], client: Any, opts: Any, console: Console,
               runner: str = NETWORK_POINT, hosts: dict[str, str] | None = None) -> None:
    """Every point not done yet, one task each; results committed as they arrive. A point the
    spec pins (sweep.pin) runs only on the workers of its host (``hosts``: worker address ->
    hostname; strict, so that Dask's work stealing cannot move it); if those workers go, it
    follows their restarted successors on the same machine, or -- its host lost -- runs on
    any worker, recorded as ``pin_lost``. Others go to whichever worker is free."""
    import distributed

    from .rows import varying_link_params
    from .runner import signals_as_exceptions

    todo = [p for p in points if active.state.status(p.point.id) != "done"]
    console.print(f"[bold]{active.exp.name}[/]: run {active.meta['run_id']} -> {active.rd.path}; "
                  f"{len(points)} point(s), {len(todo)} to run on {len(client.scheduler_info()['workers'])} worker(s)")
    per_link = varying_link_params([p.plan for p in points])
    by_id = {p.point.id: p for p in todo}
    pins = pin_workers(active.exp.sweep.pin if active.exp.sweep else {}, hosts or {}) if hosts is not None else {}
    run_id = active.meta["run_id"]
    pending: dict[Any, str] = {}  # future -> point id
    allowed: dict[str, list[str]] = {}  # pinned point -> the workers it may run on now
    lost: set[str] = set()

    def submit(pp: Any, key: str) -> None:
        task = PointTask(run_id, pp, per_link, opts.pox_home, runner)
        where = {"workers": allowed[pp.point.id], "allow_other_workers": False} if pp.point.id in allowed else {}
        pending[client.submit(execute, task, key=key, resources={RESOURCE: 1}, pure=False, **where)] = pp.point.id

    with signals_as_exceptions(), show.progress_bar(console) as progress:
        bar = progress.add_task("points", total=len(todo))
        try:
            for pp in todo:
                if pp.point.id in pins:
                    allowed[pp.point.id] = pins[pp.point.id]
                submit(pp, f"mptcplab-{run_id}-{pp.point.id}")
            while pending:
                try:
                    done, _ = distributed.wait(list(pending), timeout=2, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    done = set()
                for fut in done:
                    pid = pending.pop(fut)
                    try:
                        res = fut.result()
                        res.where["return_s"] = round(time.time() - res.finished, 4) if res.finished else None
                    except distributed.KilledWorker as e:
                        res = PointResult(point_id=pid, error=f"its worker died {opts.retries + 1} time(s) ({e})")
                    except Exception as e:  # noqa: BLE001  (the task itself raised: the point failed)
                        res = PointResult(point_id=pid, error=f"{type(e).__name__}: {e}")
                    commit(active, by_id[pid], res, attempts(client, pid), progress.console, pid in lost)
                    progress.advance(bar)
                stranded = [(f, pid) for f, pid in pending.items() if pid in allowed and f.status == "pending"]
                if stranded:  # a pinned point whose every worker is gone would wait for ever
                    workers = set(client.scheduler_info()["workers"])
                    for fut, pid in stranded:
                        if set(allowed[pid]) & workers:
                            continue
                        fut.cancel()
                        del pending[fut]
                        now = repin(allowed[pid], workers)
                        if now is None:
                            del allowed[pid]
                            lost.add(pid)
                            progress.console.print(f"[yellow]pin lost[/] {pid}: {active.exp.sweep.pin[pid]} runs "
                                                   "no worker now; it runs on another host", highlight=False)
                        else:
                            allowed[pid] = now
                        submit(by_id[pid], f"mptcplab-{run_id}-{pid}-{time.monotonic_ns()}")
        except BaseException:
            client.cancel(list(pending))
            raise
        finally:
            try:
                sweep_slots(client, run_id, console)
            finally:
                active.registry.forget_network()  # the client itself created nothing: its state file goes


def sweep_slots(client: Any, run_id: str, console: Console, timeout: float = 60) -> None:
    """What a killed worker left in a slot no later point took, removed on every worker's machine
    (tasks pinned to each worker, not client.run: see preflight_hosts); waits at most
    ``timeout`` s in all, and says what is left or could not be looked at."""
    import distributed

    try:
        workers = sorted(client.scheduler_info()["workers"])
        futs = {client.submit(reclaim_slots, run_id, workers=[a], allow_other_workers=False, pure=False,
                              key=f"mptcplab-reclaim-{run_id}-{k}-{time.monotonic_ns()}"): a
                for k, a in enumerate(workers)}
        try:
            distributed.wait(list(futs), timeout=timeout)
        except TimeoutError:
            pass
        for fut, addr in futs.items():
            if fut.status != "finished":
                console.print(f"[yellow]not swept[/] {addr}: its slots were not looked at ({fut.status}); "
                              "`mptcplab clean` there removes what a killed worker left", highlight=False)
                fut.cancel()
                continue
            for what in fut.result():
                console.print(f"[red]left behind[/] on {addr}: {what}", highlight=False)
    except Exception as e:  # noqa: BLE001  (the cluster itself is gone: nothing to ask)
        console.print(f"[yellow]not swept[/]: {type(e).__name__}: {e}", highlight=False)


def attempts(client: Any, point_id: str) -> list[dict[str, Any]]:
    """The starts of a point (one per attempt), as the workers logged them."""
    with suppress(Exception):
        return [{"t": t, **msg} for t, msg in client.get_events(EVENTS) if msg.get("point") == point_id]
    return []


def commit(active: Any, pp: Any, res: PointResult, tries: list[dict[str, Any]], console: Console,
           pin_lost: bool = False) -> None:
    """A point's result written as a local run writes it: files, metadata, then rows and the
    point's done flag (or its failure)."""
    pid = pp.point.id
    t0 = time.monotonic()
    for key, data in res.files.items():
        if key.startswith(f"{results.RAW}/pox") and key.endswith(".log"):
            key = f"{results.RAW}/pox-{pid}.log"  # one per point (each worker's POX starts afresh)
        active.rd.put_point_file(key, data)
    meta = active.meta
    for key in ("network", "shaping_backend"):
        if key in res.meta:
            meta.setdefault(key, res.meta[key])
    for key in ("self_checks", "optimum"):
        meta.setdefault(key, {}).update(res.meta.get(key, {}))
    for key in ("self_check", "controller_died"):
        if key in res.meta:
            meta[key] = res.meta[key]
    meta.setdefault("link_stats", {}).update(res.link_stats)
    for k, v in res.timings.items():
        active.timings[k] = active.timings.get(k, 0.0) + v
    active.flagged.extend(res.flagged)
    meta["distributed"]["points"][pid] = {
        "host": res.where.get("hostname"), "worker": res.where.get("worker"), "slot": res.where.get("slot"),
        "network_id": res.where.get("network_id"), "switches": res.where.get("switches"),
        "attempts": max(1, len(tries)), "tried": [t.get("hostname") for t in tries],
        "pinned": (active.exp.sweep.pin.get(pid) if active.exp.sweep else None), "pin_lost": pin_lost,
        "elapsed_s": round(res.elapsed_s, 3), "error": res.error,
        # the distribution's cost: bytes of files shipped, the worker-to-client trip (one clock
        # only on one machine), and the client's writing of the files
        "files_bytes": sum(len(d) for d in res.files.values()), "return_s": res.where.get("return_s"),
        "write_s": round(time.monotonic() - t0, 4),
    }
    if len(tries) > 1:
        console.print(f"[yellow]retried[/] {pid}: {len(tries)} attempts "
                      f"({', '.join(str(t.get('worker')) for t in tries)})")
    if res.error is not None or res.rows is None:
        active.fail_point(pp, res.error or "no result", console)
        active.save_meta()
        return
    console.print(f"{pid} ({pp.point.label()}) done on {res.where.get('hostname')} "
                  f"({res.where.get('worker')}) in {res.elapsed_s:.1f} s", highlight=False, markup=False)
    active.save_meta()
    active.commit_point(pid, res.rows)

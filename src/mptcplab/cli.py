"""Command line: typer commands that wire the stages; no logic of their own.

Exit codes: 0 done; 1 the run failed; 2 bad input (spec, plan, or this machine cannot run it --
nothing was created); 3 the self-check found links that are not what the spec says (nothing was
measured); 4 the run completed but an expectation (expect:) failed; 130 interrupted (everything
created was removed).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="mptcplab: Multipath TCP experiments on emulated Mininet networks.")
err = Console(stderr=True)

if TYPE_CHECKING:
    from rich.console import Group
    from rich.table import Table

    from .plan import Plan
    from .runner import RunOptions
    from .spec import Experiment
    from .sweep import Point


def _fail(problems: list[str], code: int = 2, what: str = "error") -> None:
    for p in problems:
        err.print(f"[red]{what}:[/] {p}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _run(opts: "RunOptions") -> None:
    from .errors import MptcplabError
    from .runner import Interrupted, run
    from .selfcheck import SelfCheckError

    try:
        report = run(opts, console=err)
    except MptcplabError as e:
        _fail(e.problems, e.exit_code)
    except SelfCheckError:
        err.print("[red]error:[/] the links are not what the spec says (table above); nothing was measured")
        raise typer.Exit(3)
    except Interrupted as e:
        err.print(f"interrupted by {e}; the network was torn down")
        raise typer.Exit(130)
    except Exception as e:  # an internal failure: say it in one line, keep the traceback on demand
        if os.environ.get("MPTCPLAB_DEBUG"):
            raise
        err.print(f"[red]error:[/] the run failed: {type(e).__name__}: {e} (everything it created was "
                  "removed; MPTCPLAB_DEBUG=1 shows the traceback)", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if report is not None and (report.failed_points or any(r.get("error") for r in report.rows)):
        raise typer.Exit(1)
    if report is not None and report.failed_expectations:
        raise typer.Exit(4)


SPEC_HELP = "experiment spec: a path, or a name looked up in experiments/"


@app.command("run")
def run_cmd(
    spec: Optional[str] = typer.Argument(None, help=SPEC_HELP + " (not with --resume)"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the run exactly here"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate and print the plan; touch nothing"),
    shaper: Optional[str] = typer.Option(None, "--shaper", help="auto, netem or userspace (overrides the spec)"),
    check: Optional[str] = typer.Option(None, "--check", help="self-check: none, rtt or full (overrides the spec)"),
    switch: Optional[str] = typer.Option(None, "--switch", help="switches: auto, ovs or bridge (overrides the spec)"),
    pox_home: Optional[str] = typer.Option(None, "--pox-home", help="POX checkout (else $POX_HOME)"),
    sets: Optional[list[str]] = typer.Option(None, "--set", help="sweep PATH=V1,V2,... (repeatable), e.g. links.h1-s1.loss=0,1,2"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="finish an interrupted run in RUN_DIR, as recorded"),
    capture: bool = typer.Option(False, "--capture", help="capture every test's packets (the spec's capture: "
                                 "settings, else the hosts' interfaces, headers only, 50 MB each at most)"),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="run the sweep's points on these hosts over SSH "
                                          "(HOST[,HOST...], Dask SSHCluster; localhost allowed)"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="run the points on an existing Dask "
                                            "cluster (ADDRESS, e.g. tcp://10.0.0.1:8786)"),
    local_workers: Optional[int] = typer.Option(None, "--local-workers", help="run the points on N Dask workers "
                                                "on this machine, one network each"),
    retries: int = typer.Option(2, "--retries", help="distributed: how often a point whose worker died is "
                                "tried again on another worker"),
    skip_bad_hosts: bool = typer.Option(False, "--skip-bad-hosts", help="distributed: leave out hosts that fail "
                                        "the preflight instead of refusing the run"),
) -> None:
    """Run an experiment: build the network, run the tests, store results, draw figures."""
    from .runner import RunOptions

    hosts = tuple(h.strip() for h in (cluster or "").split(",") if h.strip())
    if cluster is not None and not hosts:
        _fail(["--cluster: give HOST[,HOST...]"])
    _run(RunOptions(spec=spec, out=out, dry_run=dry_run, shaper=shaper, check=check, switch=switch,
                    pox_home=pox_home, sets=tuple(sets or ()), resume=resume, capture=capture, cluster=hosts, scheduler=scheduler,
                    local_workers=local_workers, retries=retries, skip_bad_hosts=skip_bad_hosts))


@app.command()
def plot(
    run_dir: Path = typer.Argument(..., help="a run directory (results/<experiment>/<run-id>)"),
    fmt: list[str] = typer.Option(None, "--format", "-f", help="pdf, png or svg (repeatable)"),
) -> None:
    """Render a run's figures again, from its results alone."""
    from .errors import MptcplabError
    from .figures import render
    from .results import FIGURE_FORMATS as FORMATS

    bad = [f for f in fmt or [] if f not in FORMATS]
    if bad:
        _fail([f"--format: {', '.join(bad)} not supported ({', '.join(FORMATS)})"])
    try:
        paths = render(run_dir, fmt or None)
    except MptcplabError as e:
        _fail(e.problems, e.exit_code)
    for p in paths:
        print(p)


@app.command()
def analyze(
    run_dir: Path = typer.Argument(..., help="a run directory (results/<experiment>/<run-id>)"),
) -> None:
    """Redo the MPTCP option census of a run's captures and the verdicts of its spec's
    expectations, from its results alone; exit 4 when an expectation fails."""
    from .console import show_verdicts
    from .errors import MptcplabError
    from .results import RunDir
    from .runner import analyze_run
    from .spec import parse_spec

    try:
        with RunDir.open_existing(run_dir, resume=True) as rd:  # locked: no run or resume writes meanwhile
            exp = parse_spec(rd.read_spec() or {})
            meta = rd.metadata
            evidence = analyze_run(rd, exp, meta, err)
            if evidence.verdicts:
                rd.write_metadata(meta)
    except MptcplabError as e:
        _fail(e.problems, e.exit_code)
    show_verdicts(evidence.verdicts, err)
    if meta.get("analysis_error"):
        raise typer.Exit(1)
    if not evidence.census and not evidence.verdicts:
        err.print("nothing to analyse: the run has no captures (capture: / --capture) and its spec no expect:")
    if evidence.failed:
        raise typer.Exit(4)


@app.command()
def clean(
    all_runs: bool = typer.Option(False, "--all", help="also runs whose process is still alive"),
) -> None:
    """Remove what killed runs left behind -- only objects tagged as the toolkit's own."""
    from .errors import MptcplabError
    from .registry import clean as do_clean

    try:
        rep = do_clean(include_running=all_runs)
    except MptcplabError as e:
        _fail(e.problems, e.exit_code)
    for s in rep.skipped:
        err.print(f"skipped: {s}")
    print(f"cleaned {len(rep.runs)} run(s): {rep.processes} process(es), "
          f"bridges {rep.bridges or '-'}, interfaces {rep.interfaces or '-'}")
    if rep.remaining:
        _fail([f"still there after the wait: {x} (run `mptcplab clean` again)" for x in rep.remaining], 1)


@app.command()
def tracebox(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    src: str = typer.Option(..., "--from", help="the host the probes leave from (its first address)"),
    dst: str = typer.Option(..., "--to", help="the host they go to (its first address)"),
    max_ttl: int = typer.Option(8, "--max-ttl", help="the last TTL probed"),
    port: Optional[int] = typer.Option(None, "--port", help="destination port (default: traffic.port)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the trace as JSON to this file"),
    shaper: Optional[str] = typer.Option(None, "--shaper", help="auto, netem or userspace (overrides the spec)"),
    listen: bool = typer.Option(True, "--listen/--no-listen", help="an MPTCP listener on --to's port, so the "
                                "trace ends in its SYN/ACK (its options show what it saw); else in a RST"),
) -> None:
    """Build the spec's network and send an MPTCP SYN with TTL 1, 2, ...: which hop changed which
    header field or TCP option (MSS clamped, MP_CAPABLE removed, ...). No traffic; torn down after."""
    from .errors import MptcplabError
    from .runner import Interrupted
    from .tracing import TraceOptions, run_tracebox, show

    try:
        trace = run_tracebox(TraceOptions(spec, src, dst, max_ttl, port, json_out, shaper, listen), err)
    except MptcplabError as e:
        _fail(e.problems, e.exit_code)
    except Interrupted as e:
        err.print(f"interrupted by {e}; the network was torn down")
        raise typer.Exit(130)
    except Exception as e:
        if os.environ.get("MPTCPLAB_DEBUG"):
            raise
        err.print(f"[red]error:[/] tracebox failed: {type(e).__name__}: {e} (everything it created was removed; "
                  "MPTCPLAB_DEBUG=1 shows the traceback)", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    show(trace, Console())


@app.command()
def schema() -> None:
    """Print the experiment spec's JSON Schema."""
    from .spec import json_schema

    print(json.dumps(json_schema(), indent=2))


@app.command()
def check(spec: Optional[str] = typer.Argument(None, help="also: per link of this spec (at each sweep "
                                                          "point whose picks differ), the backend shaper "
                                                          "auto picks here, and why")) -> None:
    """What this machine supports: netem, OVS datapaths, iperf3 MPTCP, MPTCP sysctls."""
    from rich.table import Table

    from . import capabilities

    links = _backend_table(spec) if spec else None
    caps = capabilities.probe().to_dict()
    t = Table(title="this machine")
    t.add_column("capability")
    t.add_column("value")
    for k, v in caps.items():
        t.add_row(k, ", ".join(v) if isinstance(v, list) else str(v))
    for name, value in capabilities.mptcp_sysctls().items():
        t.add_row(f"sysctl: {name}", value)
    for k, v in capabilities.versions().items():
        t.add_row(f"version: {k}", str(v))
    Console().print(t)
    if links is not None:
        Console().print(links)


def _backend_table(spec: str) -> Group:
    """Per link: the backend ``shaper: auto`` picks on this kernel and why (and the spec's own
    shaper, where it asks for another) -- at every point of a sweep, since a swept delay, loss
    or middlebox changes the pick: one table per distinct set of picks, naming its points."""
    from rich.console import Group

    from .capabilities import has_netem
    from .errors import MptcplabError
    from .spec import load_spec, resolve_spec_path

    try:
        exp = load_spec(resolve_spec_path(spec))
        netem = has_netem()
        groups = _points_by_backends(exp, netem)
    except MptcplabError as e:
        _fail(e.problems)
    n_points = sum(len(points) for points, _ in groups)
    kernel = f"this kernel {'has' if netem else 'has no'} netem"
    tables = []
    for points, rows in groups:
        where = "" if n_points == 1 else \
            f" at every point ({n_points})" if len(groups) == 1 else f" at {_point_names(points)}"
        caption = _point_labels(points) if len(groups) > 1 else None
        tables.append(_links_table(f"{exp.name}: links{where} ({kernel})", rows, exp.emulation.shaper, caption))
    return Group(*tables)


Rows = tuple[tuple[str, ...], ...]


def _points_by_backends(exp: Experiment, netem: bool) -> list[tuple[list[Point], Rows]]:
    """The sweep's points (in index order) grouped by the rows of their links' table, in the
    order each set of rows first appears. A spec without a sweep is one point."""
    from . import sweep
    from .plan import make_plan

    groups: dict[Rows, list[sweep.Point]] = {}
    for point in sorted(sweep.points(exp), key=lambda p: p.index):
        plan = make_plan(sweep.apply(exp, point))
        groups.setdefault(_link_rows(plan, exp.emulation.shaper, netem), []).append(point)
    return [(points, rows) for rows, points in groups.items()]


def _link_rows(plan: Plan, asked: str, netem: bool) -> Rows:
    """Per link of one point's plan: name, auto's pick, why, and the spec's shaper's answer
    (where it is not auto)."""
    from .linkmodel import LinkEmulationError, backend_and_reason

    rows = []
    for link in plan.links:
        row = [link.name, *backend_and_reason("auto", link.up, link.down, netem)]
        if asked != "auto":
            try:
                row.append(backend_and_reason(asked, link.up, link.down, netem)[0])
            except LinkEmulationError as e:
                row.append(f"refused: {e}")
        rows.append(tuple(row))
    return tuple(rows)


def _links_table(title: str, rows: Rows, asked: str, caption: str | None = None) -> Table:
    """One table of links (the caption: the values of the points it is for)."""
    from rich.table import Table

    t = Table(title=title, caption=caption)
    for col in ("link", "auto picks", "why"):
        t.add_column(col)
    if asked != "auto":
        t.add_column(f"shaper {asked} (the spec's)")
    for row in rows:
        t.add_row(*row)
    return t


def _point_names(points: list[Point]) -> str:
    """Every point's id, consecutive ones as a run: ``p001-p004, p009`` (4 points or fewer:
    ``p001, p002``)."""
    runs: list[list[Point]] = []
    for p in points:
        if runs and p.index == runs[-1][-1].index + 1:
            runs[-1].append(p)
        else:
            runs.append([p])
    if len(points) <= 4:
        return ", ".join(p.id for p in points)
    ids = ", ".join(r[0].id if len(r) == 1 else f"{r[0].id}-{r[-1].id}" for r in runs)
    return f"{len(points)} points: {ids}"


def _point_labels(points: list[Point], most: int = 4) -> str | None:
    """The values of a few points (``p001: x=1; p002: x=2``); for more, None: the dry run
    lists them."""
    return "; ".join(f"{p.id}: {p.label()}" for p in points) if len(points) <= most else None


def main() -> None:
    app()


# `run-experiment SPEC ...` is `mptcplab run SPEC ...` as a command of its own.
run_app = typer.Typer(add_completion=False)
run_app.command()(run_cmd)


def run_experiment_main() -> None:
    run_app()


if __name__ == "__main__":
    sys.exit(main())

"""`mptcplab tracebox`: build the spec's network, probe one path hop by hop, tear it down.

The network is built exactly as run-experiment builds it (the same plan, lock, preflight,
registry and teardown, whatever happens); instead of traffic, the probe (mptcplab.probe) runs in
the source host's namespace and its JSON is read by the pure diff (mptcplab.tracebox).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .errors import SpecError
from .proc import stop
from .tracebox import Trace, analyse

#: What one TTL may wait for its answer at least, and the probe program beyond its probes.
MIN_WAIT_S = 1.0
PROBE_SLACK_S = 20.0
LISTEN_WAIT_S = 15.0


class ProbeError(RuntimeError):
    """The probe program failed in the host (its stderr says why)."""


@dataclass(frozen=True)
class TraceOptions:
    spec: str
    src: str
    dst: str
    max_ttl: int = 8
    port: int | None = None
    json_out: Path | None = None
    shaper: str | None = None
    listen: bool = True  # an MPTCP listener on the destination: the trace ends in its SYN/ACK


def _check(opts: TraceOptions, hosts: list[str]) -> None:
    problems = []
    for flag, name in (("--from", opts.src), ("--to", opts.dst)):
        if name not in hosts:
            problems.append(f"{flag}: {name!r} is not a host of the topology (hosts: {', '.join(hosts)})")
    if opts.src == opts.dst:
        problems.append("--to: give another host than --from")
    if not 1 <= opts.max_ttl <= 64:
        problems.append(f"--max-ttl: {opts.max_ttl} is not between 1 and 64")
    if opts.port is not None and not 1 <= opts.port <= 65535:
        problems.append(f"--port: {opts.port} is not between 1 and 65535")
    if opts.json_out is not None:  # known before the network is built, not after the trace
        out = Path(opts.json_out)
        if out.is_dir() or out.is_symlink():
            problems.append(f"--json: {out} is a directory or a link; give a file name")
        elif out.parent.exists() and not out.parent.is_dir():
            problems.append(f"--json: {out.parent} is not a directory")
    if problems:
        raise SpecError(problems)


#: The probe, run as a script in isolated mode (-I): the caller's directory, PYTHONPATH and user
#: site-packages stay out of a root process in a host's namespace; it needs only scapy.
PROBE = [sys.executable, "-I", str(Path(__file__).with_name("probe.py"))]


def probe_argv(src_ip: str, dst_ip: str, port: int, max_ttl: int, wait_s: float) -> list[str]:
    return [*PROBE, "--src", src_ip, "--dst", dst_ip, "--dport", str(port),
            "--max-ttl", str(max_ttl), "--timeout", f"{wait_s:g}"]


def run_tracebox(opts: TraceOptions, console: Console) -> Trace:
    """Plan, hold the machine, build, probe, tear down; the trace. Exit-2 errors before building."""
    from .registry import Registry
    from .routes import routes
    from .runner import RunOptions, check_machine, hold_machine, load, plan_points, prepare_machine, \
        signals_as_exceptions

    run_opts = RunOptions(spec=opts.spec, shaper=opts.shaper)
    source = load(run_opts)
    exp = source.exp
    _check(opts, list(exp.topology.hosts))
    if exp.controller.kind == "pox":
        raise SpecError(["controller.kind: tracebox builds networks without POX; use none or static"])
    pp = plan_points(exp, source.run_id)[0]  # a sweep: its first point
    plan = pp.plan
    src_ip, dst_ip = plan.host(opts.src).intfs[0].ip or "", plan.host(opts.dst).intfs[0].ip or ""
    every = routes(plan)
    mine = [r for r in every if (r.client.node, r.server.node) == (opts.src, opts.dst)] or every
    rtt_s = max((r.max_rtt_ms() for r in mine), default=0.0) / 1e3
    wait_s = round(max(MIN_WAIT_S, 2 * rtt_s + 0.5), 3)
    with hold_machine(source, run_opts):
        caps, _ = check_machine(source, [pp], run_opts)
        caps = prepare_machine(caps, [pp])
        registry = Registry(source.run_id)
        try:
            with signals_as_exceptions():
                out = _probe_on_network(pp, caps, registry, opts, src_ip, dst_ip, wait_s, console)
        finally:
            registry.forget_network()
    trace = analyse(out)
    if opts.json_out is not None:
        _write_json(opts.json_out, {"spec": str(opts.spec), "from": opts.src, "to": opts.dst, **trace.to_dict(),
                                    "probe": out})
    return trace


def _probe_on_network(pp: Any, caps: Any, registry: Any, opts: TraceOptions, src_ip: str, dst_ip: str,
                      wait_s: float, console: Console) -> dict[str, Any]:
    from .controller import StaticController
    from .network import Network
    from .plan import controller_topology

    exp = pp.exp
    port = opts.port or exp.traffic.port
    ctl = StaticController(controller_topology(pp.plan, port)) if exp.controller.kind == "static" else None
    net = Network(pp.plan, caps, registry, shaper=exp.emulation.shaper, seed=exp.emulation.seed, controller=ctl)
    try:
        console.print(f"building {exp.name} ({len(pp.plan.hosts)} hosts, {len(pp.plan.routers)} routers, "
                      f"{len(pp.plan.links)} links)...")
        net.start()
        console.print(f"tracebox {opts.src} ({src_ip}) -> {opts.dst} ({dst_ip}) port {port}, TTL 1..{opts.max_ttl}")
        listener = _listen(net, opts.dst, dst_ip, port) if opts.listen else None
        try:
            argv = probe_argv(src_ip, dst_ip, port, opts.max_ttl, wait_s)
            r = net.run_in(opts.src, argv, timeout=opts.max_ttl * (wait_s + 1) + PROBE_SLACK_S)
        finally:
            if listener is not None:
                stop(listener)
    finally:
        net.stop()
    if r.returncode != 0:
        raise ProbeError(f"the probe failed in {opts.src} (exit {r.returncode}): {r.stderr.strip()[-500:]}")
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise ProbeError(f"the probe printed no JSON: {r.stdout[-300:]!r} {r.stderr.strip()[-300:]}") from None


def _listen(net: Any, host: str, address: str, port: int) -> Any:
    """The destination's listener (mptcplab.probe --listen), once it says it listens."""
    import select

    p = net.spawn(host, [*PROBE, "--listen", address, "--dport", str(port)],
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([p.stdout], [], [], LISTEN_WAIT_S)
    line = p.stdout.readline() if ready else ""
    if line.strip() != "listening":
        _, err = stop(p)
        raise ProbeError(f"the listener on {host} ({address}:{port}) did not start: {err.strip()[-300:]}")
    return p


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    """As every result file: atomically, no link followed, owned by the user who ran sudo."""
    from .results import write_atomic

    write_atomic(path, json.dumps(obj, indent=1))


def show(trace: Trace, console: Console) -> None:
    """One row per TTL: who answered and what changed since the previous hop; then where."""
    t = Table(title=f"tracebox {trace.src} -> {trace.dst}:{trace.dport}  (sent: {', '.join(trace.sent_options)})")
    for c in ("hop", "address", "answer", "RTT ms", "changed since the previous hop"):
        t.add_column(c)
    for h in trace.hops:
        if h.kind == "none":
            t.add_row(str(h.ttl), "*", "", "", "")
            continue
        what = "; ".join(h.new + [f"{c} undone" for c in h.undone])
        if h.kind == "time-exceeded" and not what:
            what = "unchanged" if not h.changes else "(as before)"
        if h.kind in ("synack", "rst"):
            what = f"the destination answers {h.note}"
        elif h.note:
            what += f" [{h.note}]"
        t.add_row(str(h.ttl), h.address or "", h.kind, f"{h.rtt_ms:.1f}" if h.rtt_ms is not None else "", what)
    console.print(t)
    findings = trace.findings()
    for f in findings:
        console.print(f"change {f}", highlight=False, soft_wrap=True)
    if not findings:
        console.print("no change to the SYN seen on the path", highlight=False)

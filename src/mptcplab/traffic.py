"""Traffic: iperf3 server and client inside the hosts, one test at a time, parsed results.

MPTCP runs with iperf3's own ``--mptcp`` where iperf3 is 3.19 or newer, else under
``mptcpize run`` (LD_PRELOAD turns its TCP sockets into MPTCP ones); TCP runs plain. A fresh
one-off server (``-1``) per test keeps each test's JSON its own. iperf3 processes are started
through :meth:`Network.spawn` (argument lists, recorded in the run's registry by PID) and stopped
by PID; the sampler's short ``ss`` calls go through the node's popen and end by themselves.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .measurements import PM_MONITOR_ARGV, Sampler, parse_pm_events, ss_runner
from .proc import stop
from .recovery import TIMED_OUT


#: Receiver-side goodput is reported every GOODPUT_INTERVAL_S seconds (iperf3's shortest).
GOODPUT_INTERVAL_S = 0.1


class TrafficError(RuntimeError):
    pass


def not_finished(tool: str, time_limit: float) -> str:
    """The error of a client abandoned at its time limit. mptcplab.recovery reads it (its
    ``TIMED_OUT`` words) as a stall: the connection was still open, waiting."""
    return f"{tool} client {TIMED_OUT} within {time_limit:.0f} s"


@dataclass
class TestOutcome:
    protocol: str
    client_json: dict[str, Any] | None
    server_json: dict[str, Any] | None
    samples: list[dict[str, Any]]
    started: float
    ended: float
    error: str | None = None
    stderr: str = ""
    sample_errors: int = 0  # ss samples that failed (reported in the test's row)
    pm_events: list[dict[str, Any]] = field(default_factory=list)  # the client's path manager, on the test's clock


def iperf3_argv(role: str, protocol: str, mptcp_mode: str, *, port: int, server_address: str = "",
                duration: float | None = None, nbytes: int | None = None, parallel: int = 1,
                congestion_control: str | None = None, bind: str | None = None,
                udp_mbps: float | None = None, length: int | None = None,
                connect_timeout_ms: int = 5000, interval: float | None = None) -> list[str]:
    """The iperf3 command for one side of one test (``udp_mbps``: UDP at that rate instead of
    TCP, as the self-check sends). Pure."""
    argv = ["iperf3", "-J", "-p", str(port)]
    if bind:
        argv += ["-B", bind]
    if interval is not None:  # iperf3's reports (on the server: the receiver's goodput) every interval s
        argv += ["-i", f"{interval:g}"]
    if role == "server":
        argv += ["-s", "-1"]
    else:
        argv += ["-c", server_address, "-P", str(parallel), "--connect-timeout", str(connect_timeout_ms)]
        if udp_mbps is not None:
            argv += ["-u", "-b", f"{udp_mbps * 1e6:.0f}"]
        if length is not None:
            argv += ["-l", str(length)]
        if nbytes is not None:
            argv += ["-n", str(nbytes)]
        else:
            argv += ["-t", str(int(duration or 0))]
    if congestion_control and role == "client":  # -C is client-only; the client sends
        argv += ["-C", congestion_control]
    if protocol == "mptcp":
        if mptcp_mode == "--mptcp":
            argv.append("--mptcp")
        elif mptcp_mode == "mptcpize":
            argv = ["mptcpize", "run", *argv]
        else:
            raise TrafficError("this iperf3 cannot do MPTCP and mptcpize is missing")
    return argv


#: mptcplab's byte-count transfer with digests (see mptcplab.transfer), run as a script.
TRANSFER = Path(__file__).with_name("transfer.py")


def transfer_argv(role: str, protocol: str, *, port: int, server_address: str = "",
                  duration: float | None = None, nbytes: int | None = None, seed: int = 1,
                  congestion_control: str | None = None, connect_timeout_ms: int = 5000,
                  interval: float | None = None) -> list[str]:
    """The transfer tool's command for one side of one test (MPTCP through the kernel's own
    socket: no mptcpize). Pure."""
    argv = [sys.executable, "-I", "-S", str(TRANSFER)]
    if role == "server":
        argv += ["recv", "--port", str(port), "--seed", str(seed)]  # compares what it reads with the stream
        if interval is not None:
            argv += ["--interval", f"{interval:g}"]
    else:
        argv += ["send", "--to", server_address, "--port", str(port), "--seed", str(seed),
                 "--connect-timeout-ms", str(connect_timeout_ms)]
        argv += ["--bytes", str(nbytes)] if nbytes is not None else ["--duration", f"{duration or 0:g}"]
        if congestion_control:
            argv += ["--congestion", congestion_control]
    if protocol == "mptcp":
        argv.append("--mptcp")
    return argv


def _wait_listening(run, port: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f":{port} " in run(["ss", "-Hlntu", f"sport = :{port}"]) + " ":
            return True
        time.sleep(0.05)
    return False


class Iperf3Server:
    """A one-off server (iperf3 -s -1, or the transfer tool's receiver) in a host for the
    duration of a ``with`` block: started through
    the network (recorded), awaited until it listens, and read (or stopped by PID) at the end.
    ``result`` is its JSON, ``listening`` whether it ever listened, ``stderr`` what it said."""

    def __init__(self, network: Any, host: str, argv: list[str], port: int):
        self.network, self.host, self.argv, self.port = network, host, argv, port
        self.proc: subprocess.Popen | None = None
        self.listening = False
        self.result: dict[str, Any] | None = None
        self.stderr = ""

    def __enter__(self) -> "Iperf3Server":
        self.proc = self.network.spawn(self.host, self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
        self.listening = _wait_listening(ss_runner(self.network.node(self.host).popen), self.port)
        if not self.listening:
            _, self.stderr = stop(self.proc)
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        assert self.proc is not None
        if self.proc.returncode is not None and not self.listening:
            return
        if exc_type is not None:  # interrupted: no report is coming, stop it now
            out, self.stderr = stop(self.proc)
        else:
            try:
                out, self.stderr = self.proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                out, self.stderr = stop(self.proc)
        self.result = _parse(out)


def run_test(network: Any, protocol: str, *, mptcp_mode: str, port: int, duration: float | None,
             nbytes: int | None, parallel: int, congestion_control: str | None,
             time_limit: float, sample_interval: float, connect_timeout_ms: int = 5000,
             timeline: Any = None, tool: str = "iperf3", seed: int = 1) -> TestOutcome:
    """One test (iperf3, or the transfer tool with ``seed``) from the plan's client to its
    server, with the subflow sampler running; abandoned after ``time_limit`` seconds (see
    :func:`mptcplab.routes.time_limit`). A ``timeline`` (mptcplab.timeline) starts counting when
    the client is started."""
    plan = network.plan
    common = dict(port=port, congestion_control=congestion_control)
    if tool == "transfer":
        s_argv = transfer_argv("server", protocol, port=port, interval=GOODPUT_INTERVAL_S, seed=seed)
        c_argv = transfer_argv("client", protocol, server_address=plan.server_address, duration=duration,
                               nbytes=nbytes, seed=seed, connect_timeout_ms=connect_timeout_ms, **common)
    else:
        s_argv = iperf3_argv("server", protocol, mptcp_mode, interval=GOODPUT_INTERVAL_S, **common)
        c_argv = iperf3_argv("client", protocol, mptcp_mode, server_address=plan.server_address,
                             duration=duration, nbytes=nbytes, parallel=parallel,
                             connect_timeout_ms=connect_timeout_ms, **common)
    started = time.time()
    outcome = TestOutcome(protocol, None, None, [], started, started)
    with Iperf3Server(network, plan.server, s_argv, port) as srv:
        if not srv.listening:
            outcome.error = f"{tool} server did not start listening on port {port}: {srv.stderr.strip()[:300]}"
            return outcome
        sampler = Sampler(ss_runner(network.node(plan.client).popen), interval=sample_interval).start()
        monitor = network.spawn(plan.client, PM_MONITOR_ARGV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True) if protocol == "mptcp" else None
        t0_wall = time.time()
        if timeline is not None:
            timeline.start(time.monotonic())
        cli = network.spawn(plan.client, c_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = cli.communicate(timeout=time_limit)
        except subprocess.TimeoutExpired:
            out, err = stop(cli)
            outcome.error = not_finished(tool, time_limit)
        except BaseException:  # interrupted: nothing of this test keeps running
            stop(cli)
            sampler.stop()
            if monitor is not None:
                stop(monitor)
            raise
        if monitor is not None:
            outcome.pm_events = parse_pm_events(stop(monitor)[0], t0_wall)
        outcome.samples = sampler.stop()
        outcome.sample_errors = sampler.errors
        outcome.stderr = err
        outcome.ended = time.time()
        outcome.client_json = _parse(out)
        if outcome.client_json is None and not outcome.error:
            outcome.error = f"{tool} client printed no JSON (exit {cli.returncode}): {err.strip()[:300]}"
        elif outcome.client_json and outcome.client_json.get("error") and not outcome.error:
            outcome.error = f"{tool}: {outcome.client_json['error']}"
    outcome.server_json = srv.result
    return outcome


def _parse(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        # iperf3 may print a JSON object then more text on errors; take the first object.
        try:
            obj, _ = json.JSONDecoder().raw_decode(text.lstrip())
            return obj
        except ValueError:
            return None


# --------------------------------------------------------------------------- several flows at once

#: The launcher that starts a command at an instant of CLOCK_MONOTONIC (see mptcplab.startat).
STARTAT = Path(__file__).with_name("startat.py")
_START_LINE = re.compile(r"mptcplab-start (\d+)\n?")
#: "[1700000000.123456] 64 bytes from 10.0.1.3: icmp_seq=1 ttl=64 time=20.3 ms" (ping -D)
_PING_LINE = re.compile(r"\[(\d+\.\d+)\].*icmp_seq=(\d+).*time=([0-9.]+) ms")


def at_instant(deadline_ns: int, argv: list[str]) -> list[str]:
    """``argv`` started by the launcher at ``deadline_ns`` (CLOCK_MONOTONIC). Pure."""
    return [sys.executable, "-I", "-S", str(STARTAT), str(deadline_ns), "--", *argv]


def started_at(stderr: str) -> tuple[int | None, str]:
    """The launcher's ``mptcplab-start NS`` line (when the command really started) and the rest
    of stderr (what the command itself said)."""
    m = _START_LINE.match(stderr or "")
    if not m:
        return None, stderr or ""
    return int(m.group(1)), stderr[m.end():]


def parse_ping(text: str, t0_wall: float) -> list[dict[str, Any]]:
    """One row per answered probe: seconds on the test's clock, sequence number, RTT in ms."""
    rows = []
    for line in (text or "").splitlines():
        m = _PING_LINE.search(line)
        if m:
            rows.append({"t": round(float(m.group(1)) - t0_wall, 4), "seq": int(m.group(2)),
                         "rtt_ms": float(m.group(3))})
    return rows


@dataclass
class FlowOutcome:
    """One flow of a multi-flow test: what iperf3 said at both ends, and when the launcher
    really started its client (``launched_s``, seconds on the test's clock; ``scheduled_s`` is
    when it should have). iperf3's own start-up and connection set-up come after the launch."""

    flow: Any  # plan.PlanFlow
    client_json: dict[str, Any] | None = None
    server_json: dict[str, Any] | None = None
    launched_s: float | None = None
    error: str | None = None
    stderr: str = ""

    @property
    def scheduled_s(self) -> float:
        return self.flow.start_s

    @property
    def launch_offset_ms(self) -> float | None:
        return None if self.launched_s is None else (self.launched_s - self.flow.start_s) * 1e3


@dataclass
class FlowsOutcome:
    """A multi-flow test: every flow's outcome, the subflow samples per source host (MPTCP flows),
    and the RTT probes' answers."""

    flows: list[FlowOutcome]
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sample_errors: int = 0
    probes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pm_events: list[dict[str, Any]] = field(default_factory=list)  # each MPTCP source's, with its host
    started: float = 0.0
    ended: float = 0.0
    error: str | None = None


def lead_time_s(n_processes: int) -> float:
    """How far ahead of the shared instant the launchers are spawned: enough for every one of
    them to be running and asleep by then on a loaded two-core machine."""
    return 0.3 + 0.04 * n_processes


def flow_tool(flow: Any) -> str:
    """What sends a flow: a byte-count flow the transfer tool, which times its completion at the
    receiver (iperf3 -n ends when its sender has written the last byte, so the window still in
    flight is neither counted nor timed); a duration flow iperf3."""
    return "transfer" if flow.bytes is not None else "iperf3"


def flow_argv(role: str, flow: Any, mptcp_mode: str, *, connect_timeout_ms: int = 5000) -> list[str]:
    """The command of one side of one flow (plan.PlanFlow) of a multi-flow test. Pure."""
    if flow_tool(flow) == "transfer":
        if role == "server":
            return transfer_argv("server", flow.protocol, port=flow.port, interval=GOODPUT_INTERVAL_S)
        return transfer_argv("client", flow.protocol, port=flow.port, server_address=flow.dst_address,
                             nbytes=flow.bytes, congestion_control=flow.congestion_control,
                             connect_timeout_ms=connect_timeout_ms)
    if role == "server":
        return iperf3_argv("server", flow.protocol, mptcp_mode, port=flow.port, interval=GOODPUT_INTERVAL_S)
    return iperf3_argv("client", flow.protocol, mptcp_mode, port=flow.port, server_address=flow.dst_address,
                       duration=flow.duration_s, nbytes=flow.bytes, parallel=flow.parallel,
                       congestion_control=flow.congestion_control, connect_timeout_ms=connect_timeout_ms)


def run_flows(network: Any, test: Any, probes: tuple[Any, ...], *, mptcp_mode: str, time_limit: float,
              connect_timeout_ms: int, sample_interval: float, timeline: Any = None) -> FlowsOutcome:
    """Every flow of ``test`` on one clock: one one-off server per flow (iperf3, or the transfer
    tool's receiver for a byte-count flow; each reports the receiver's goodput every 0.1 s), then each client started by the launcher at its offset from
    the shared instant, the subflow samplers and RTT probes running meanwhile. Everything is
    started through the network (recorded) and stopped by PID; the test is abandoned
    ``time_limit`` s after the instant."""
    outs = [FlowOutcome(f) for f in test.flows]
    result = FlowsOutcome(outs, started=time.time())
    with ExitStack() as stack:
        servers = []
        for f in test.flows:
            servers.append(stack.enter_context(Iperf3Server(network, f.dst, flow_argv("server", f, mptcp_mode),
                                                            f.port)))
        for o, srv in zip(outs, servers):
            if not srv.listening:
                o.error = (f"{flow_tool(o.flow)} server did not start listening on port {o.flow.port}: "
                           f"{srv.stderr.strip()[:300]}")
        runnable = [o for o in outs if o.error is None]
        sampled = sorted({o.flow.src for o in runnable if o.flow.protocol == "mptcp"})
        samplers = {h: Sampler(ss_runner(network.node(h).popen), interval=sample_interval).start() for h in sampled}
        monitors = {h: network.spawn(h, PM_MONITOR_ARGV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                    for h in sampled}  # each MPTCP source's path manager
        t0_ns = time.monotonic_ns() + int(lead_time_s(len(runnable) + len(probes)) * 1e9)
        t0_wall = time.time() + (t0_ns - time.monotonic_ns()) / 1e9
        if timeline is not None:
            timeline.start(t0_ns / 1e9)  # the flows' clock: CLOCK_MONOTONIC, as time.monotonic()
        procs: list[tuple[FlowOutcome, subprocess.Popen]] = []
        pingers: list[tuple[Any, subprocess.Popen]] = []
        try:
            for o in runnable:
                f = o.flow
                argv = flow_argv("client", f, mptcp_mode, connect_timeout_ms=connect_timeout_ms)
                procs.append((o, network.spawn(f.src, at_instant(t0_ns + int(f.start_s * 1e9), argv),
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
            for pr in probes:
                argv = ["ping", "-n", "-D", "-i", f"{pr.interval_s:g}", "-w", str(int(time_limit) + 1), pr.dst_address]
                pingers.append((pr, network.spawn(pr.src, at_instant(t0_ns, argv), stdout=subprocess.PIPE,
                                                  stderr=subprocess.PIPE, text=True)))
            deadline = t0_ns / 1e9 + time_limit
            for o, p in procs:
                try:
                    out, err = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    out, err = stop(p)
                    o.error = not_finished(flow_tool(o.flow), time_limit)
                ns, o.stderr = started_at(err)
                o.launched_s = None if ns is None else (ns - t0_ns) / 1e9
                o.client_json = _parse(out)
                if o.client_json is None and not o.error:
                    o.error = (f"{flow_tool(o.flow)} client printed no JSON (exit {p.returncode}): "
                               f"{o.stderr.strip()[:300]}")
                elif o.client_json and o.client_json.get("error") and not o.error:
                    o.error = f"{flow_tool(o.flow)}: {o.client_json['error']}"
            for pr, p in pingers:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)  # ping prints what it has and ends
                try:
                    out, _ = p.communicate(timeout=3)
                except subprocess.TimeoutExpired:
                    out, _ = stop(p)
                result.probes[pr.label] = parse_ping(out, t0_wall)
        except BaseException:  # interrupted: nothing of this test keeps running
            for _, p in procs + pingers + list(monitors.items()):
                if p.poll() is None:
                    stop(p)
            for smp in samplers.values():
                smp.stop()
            raise
        for h, mon in monitors.items():
            result.pm_events += [{"host": h, **e} for e in parse_pm_events(stop(mon)[0], t0_wall)]
        for h, smp in samplers.items():
            result.samples[h] = [{**x, "t": round(x["t"] - (t0_ns / 1e9 - smp.started_at), 4)} for x in smp.stop()]
            result.sample_errors += smp.errors
    for o, srv in zip(outs, servers):
        o.server_json = srv.result
    result.ended = time.time()
    failed = [o for o in outs if o.error]
    if failed:
        result.error = f"{len(failed)} of {len(outs)} flow(s) failed: " + "; ".join(
            f"{o.flow.label}: {o.error}" for o in failed[:3])
    return result

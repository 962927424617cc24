"""Traffic: iperf3 server and client inside the hosts, one test at a time, parsed results.

MPTCP runs with iperf3's own ``--mptcp`` where iperf3 is 3.19 or newer, else under
``mptcpize run`` (LD_PRELOAD turns its TCP sockets into MPTCP ones); TCP runs plain. A fresh
one-off server (``-1``) per test keeps each test's JSON its own. iperf3 processes are started
through :meth:`Network.spawn` (argument lists, recorded in the run's registry by PID) and stopped
by PID; the sampler's short ``ss`` calls go through the node's popen and end by themselves.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from .measurements import Sampler, ss_runner
from .proc import stop


class TrafficError(RuntimeError):
    pass


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


def iperf3_argv(role: str, protocol: str, mptcp_mode: str, *, port: int, server_address: str = "",
                duration: float | None = None, nbytes: int | None = None, parallel: int = 1,
                congestion_control: str | None = None, bind: str | None = None,
                udp_mbps: float | None = None, length: int | None = None,
                connect_timeout_ms: int = 5000) -> list[str]:
    """The iperf3 command for one side of one test (``udp_mbps``: UDP at that rate instead of
    TCP, as the self-check sends). Pure."""
    argv = ["iperf3", "-J", "-p", str(port)]
    if bind:
        argv += ["-B", bind]
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


def _wait_listening(run, port: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f":{port} " in run(["ss", "-Hlntu", f"sport = :{port}"]) + " ":
            return True
        time.sleep(0.05)
    return False


class Iperf3Server:
    """A one-off iperf3 server in a host for the duration of a ``with`` block: started through
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

    def __exit__(self, *exc: Any) -> None:
        assert self.proc is not None
        if self.proc.returncode is not None and not self.listening:
            return
        try:
            out, self.stderr = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            out, self.stderr = stop(self.proc)
        self.result = _parse(out)


def run_test(network: Any, protocol: str, *, mptcp_mode: str, port: int, duration: float | None,
             nbytes: int | None, parallel: int, congestion_control: str | None,
             time_limit: float, sample_interval: float, connect_timeout_ms: int = 5000) -> TestOutcome:
    """One iperf3 test from the plan's client to its server, with the subflow sampler running;
    abandoned after ``time_limit`` seconds (see :func:`mptcplab.routes.time_limit`)."""
    plan = network.plan
    common = dict(port=port, congestion_control=congestion_control)
    s_argv = iperf3_argv("server", protocol, mptcp_mode, **common)
    c_argv = iperf3_argv("client", protocol, mptcp_mode, server_address=plan.server_address,
                         duration=duration, nbytes=nbytes, parallel=parallel,
                         connect_timeout_ms=connect_timeout_ms, **common)
    started = time.time()
    outcome = TestOutcome(protocol, None, None, [], started, started)
    with Iperf3Server(network, plan.server, s_argv, port) as srv:
        if not srv.listening:
            outcome.error = f"iperf3 server did not start listening on port {port}: {srv.stderr.strip()[:300]}"
            return outcome
        sampler = Sampler(ss_runner(network.node(plan.client).popen), interval=sample_interval).start()
        cli = network.spawn(plan.client, c_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = cli.communicate(timeout=time_limit)
        except subprocess.TimeoutExpired:
            out, err = stop(cli)
            outcome.error = f"iperf3 client did not finish within {time_limit:.0f} s"
        except BaseException:  # interrupted: nothing of this test keeps running
            stop(cli)
            sampler.stop()
            raise
        outcome.samples = sampler.stop()
        outcome.sample_errors = sampler.errors
        outcome.stderr = err
        outcome.ended = time.time()
        outcome.client_json = _parse(out)
        if outcome.client_json is None and not outcome.error:
            outcome.error = f"iperf3 client printed no JSON (exit {cli.returncode}): {err.strip()[:300]}"
        elif outcome.client_json and outcome.client_json.get("error") and not outcome.error:
            outcome.error = f"iperf3: {outcome.client_json['error']}"
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

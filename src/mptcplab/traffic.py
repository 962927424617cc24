"""Traffic: iperf3 server and client inside the hosts, one test at a time, parsed results.

MPTCP runs with iperf3's own ``--mptcp`` where iperf3 is 3.19 or newer, else under
``mptcpize run`` (LD_PRELOAD turns its TCP sockets into MPTCP ones); TCP runs plain. A fresh
one-off server (``-1``) per test keeps each test's JSON its own. Every process is started
through :meth:`Network.spawn` (argument lists, recorded by PID) and stopped by PID.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from .measurements import Sampler, ss_runner


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
    argv: dict[str, list[str]] = field(default_factory=dict)


def iperf3_argv(role: str, protocol: str, mptcp_mode: str, *, port: int, server_address: str = "",
                duration: float | None = None, nbytes: int | None = None, parallel: int = 1,
                congestion_control: str | None = None, bind: str | None = None) -> list[str]:
    """The iperf3 command for one side of one test. Pure: unit-tested."""
    argv = ["iperf3", "-J", "-p", str(port)]
    if role == "server":
        argv += ["-s", "-1"]
        if bind:
            argv += ["-B", bind]
    else:
        argv += ["-c", server_address, "-P", str(parallel), "--connect-timeout", "5000"]
        if nbytes is not None:
            argv += ["-n", str(nbytes)]
        else:
            argv += ["-t", f"{duration:g}"]
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
        if f":{port} " in run(["ss", "-Hltn", f"sport = :{port}"]) + " ":
            return True
        time.sleep(0.05)
    return False


def _stop(p: subprocess.Popen, grace: float = 2.0) -> tuple[str, str]:
    if p.poll() is None:
        p.terminate()
    try:
        return p.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.communicate()


def run_test(network: Any, protocol: str, *, mptcp_mode: str, port: int, duration: float | None,
             nbytes: int | None, parallel: int, congestion_control: str | None,
             timeout_margin: float, sample_interval: float) -> TestOutcome:
    """One iperf3 test from the plan's client to its server, with the subflow sampler running."""
    plan = network.plan
    client, server = plan.client, plan.server
    common = dict(port=port, congestion_control=congestion_control)
    s_argv = iperf3_argv("server", protocol, mptcp_mode, **common)
    c_argv = iperf3_argv("client", protocol, mptcp_mode, server_address=plan.server_address,
                         duration=duration, nbytes=nbytes, parallel=parallel, **common)
    s_run = ss_runner(network.node(server).popen)
    srv = network.spawn(server, s_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.time()
    outcome = TestOutcome(protocol, None, None, [], started, started, argv={"server": s_argv, "client": c_argv})
    try:
        if not _wait_listening(s_run, port):
            _, err = _stop(srv)
            outcome.error = f"iperf3 server did not start listening on port {port}: {err.strip()[:300]}"
            return outcome
        sampler = Sampler(ss_runner(network.node(client).popen), interval=sample_interval).start()
        cli = network.spawn(client, c_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        limit = (duration or 60) + timeout_margin
        try:
            out, err = cli.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            out, err = _stop(cli)
            outcome.error = f"iperf3 client did not finish within {limit:.0f} s"
        outcome.samples = sampler.stop()
        outcome.stderr = err
        outcome.ended = time.time()
        outcome.client_json = _parse(out)
        if outcome.client_json is None and not outcome.error:
            outcome.error = f"iperf3 client printed no JSON (exit {cli.returncode}): {err.strip()[:300]}"
        elif outcome.client_json and outcome.client_json.get("error") and not outcome.error:
            outcome.error = f"iperf3: {outcome.client_json['error']}"
    finally:
        try:
            sout, _ = srv.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            sout, _ = _stop(srv)
        outcome.server_json = _parse(sout)
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


def summarize_iperf3(client_json: dict[str, Any]) -> dict[str, Any]:
    """Goodput (what the receiver got), the sender's retransmits, the data connections' ports."""
    end = client_json.get("end", {})
    rec = end.get("sum_received", {})
    sent = end.get("sum_sent", {})
    start = client_json.get("start", {})
    conns = [f"{c['local_host']}:{c['local_port']}" for c in start.get("connected", [])]
    return {
        "goodput_mbps": rec.get("bits_per_second", 0.0) / 1e6,
        "bytes": rec.get("bytes", 0),
        "duration_s": rec.get("seconds", sent.get("seconds", 0.0)),
        "iperf3_retransmits": sent.get("retransmits"),
        "connections": conns,
        "sender_cc": end.get("sender_tcp_congestion"),
    }

"""The self-check: before anything is measured, prove every route is what the spec says.

For every route the traffic uses (:mod:`mptcplab.routes`: each client interface to the server
interface on the same segment, or through routers) it measures the RTT with ping and compares it with what the spec implies: the one-way
delays of every link in both directions plus the serialization of the ping frame at each link's
rate. With ``check: full`` it also sends UDP through the path with iperf3: above the bottleneck
rate to measure what the path carries, and below it to measure loss, each compared with the
spec. Outside tolerance the run stops with a table of expected against measured -- a link that
the emulator cannot reproduce (asked for more than it can carry, say) is never measured.
"""

from __future__ import annotations

import math
import re
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .routes import MAX_PINGS, Route, min_answers, pings_for_jitter, pings_needed, routes, rtt_tolerance_ms
from .proc import stop
from .traffic import Iperf3Server, iperf3_argv

UDP_PAYLOAD = 1400
UDP_FRAME_BYTES = UDP_PAYLOAD + 8 + 20 + 14
#: Pings 20 ms apart on every route at once.
PING_INTERVAL_S = 0.02


class SelfCheckError(RuntimeError):
    def __init__(self, report: "SelfCheckReport"):
        super().__init__(report.table())
        self.report = report


@dataclass
class PathResult:
    path: str
    links: list[str]
    expected_rtt_ms: float
    measured_rtt_ms: float | None = None
    rtt_ok: bool | None = None
    expected_rate_mbps: float | None = None
    measured_rate_mbps: float | None = None
    rate_ok: bool | None = None
    expected_loss_pct: float | None = None
    measured_loss_pct: float | None = None
    loss_packets: int | None = None
    loss_ok: bool | None = None
    pings_sent: int = 0
    pings_answered: int = 0
    rtt_tolerance_ms: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(x is not False for x in (self.rtt_ok, self.rate_ok, self.loss_ok))


@dataclass
class SelfCheckReport:
    mode: str
    backend: str
    paths: list[PathResult]
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.paths)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "backend": self.backend, "ok": self.ok, "seconds": self.seconds,
                "paths": [asdict(p) for p in self.paths]}

    def table(self) -> str:
        def f(x: float | None, nd: int = 2) -> str:
            return "-" if x is None else f"{x:.{nd}f}"

        def mark(ok: bool | None) -> str:
            return "" if ok is None else ("ok" if ok else "FAIL")

        lines = [f"self-check ({self.mode}, {self.backend}): " + ("passed" if self.ok else "FAILED"),
                 f"{'path':<22} {'RTT exp':>8} {'RTT got':>8} {'':>4} {'rate exp':>9} {'rate got':>9} {'':>4}"
                 f" {'loss exp':>9} {'loss got':>9} {'':>4}"]
        for p in self.paths:
            lines.append(
                f"{p.path:<22} {f(p.expected_rtt_ms):>8} {f(p.measured_rtt_ms):>8} {mark(p.rtt_ok):>4} "
                f"{f(p.expected_rate_mbps):>9} {f(p.measured_rate_mbps):>9} {mark(p.rate_ok):>4} "
                f"{f(p.expected_loss_pct, 3):>9} {f(p.measured_loss_pct, 3):>9} {mark(p.loss_ok):>4}")
            lines.extend(f"    {n}" for n in p.notes)
        lines.append("(RTT in ms, rate in Mbit/s of UDP payload, loss in %)")
        return "\n".join(lines)


def _ping_start(node: Any, route: Route, count: int) -> subprocess.Popen:
    wait_s = max(2, math.ceil(route.max_rtt_ms() / 1000 * 2) + 1)
    return node.popen(["ping", "-n", "-c", str(count), "-i", f"{PING_INTERVAL_S:g}", "-W", str(wait_s),
                       "-I", route.client.ip, route.server.ip],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _ping_rtts(p: subprocess.Popen, timeout: float) -> list[float]:
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # what it printed so far still counts
        out, _ = stop(p)
    return [float(m) for m in re.findall(r"time=([0-9.]+) ms", out)]


def _udp(network: Any, route: Route, rate_mbps: float, seconds: int, port: int) -> dict[str, Any] | None:
    """Send UDP at rate through the route; the receiver's counts (server side JSON)."""
    server = iperf3_argv("server", "tcp", "", port=port, bind=route.server.ip)
    client = iperf3_argv("client", "tcp", "", port=port, server_address=route.server.ip, bind=route.client.ip,
                         duration=seconds, udp_mbps=rate_mbps, length=UDP_PAYLOAD)
    with Iperf3Server(network, route.server.node, server, port) as srv:
        if not srv.listening:
            return None
        network.run_in(route.client.node, client, timeout=seconds + 20 + route.max_rtt_ms() / 1000 * 4)
    data = srv.result
    if not data or "end" not in data:
        return None
    end = data["end"]
    # iperf3 3.12's server reports the receiver's rate in sum_received (its "sum" has 0 bytes).
    rec = end.get("sum_received") or end.get("sum") or {}
    # The rate in steady state: the receiver's 1 s intervals after the first (the first holds
    # the path's fill-up time, one RTT, and would read low on long paths).
    steady = [i["sum"]["bits_per_second"] for i in data.get("intervals", [])[1:]
              if i.get("sum", {}).get("seconds", 0) > 0.5]
    bps = sum(steady) / len(steady) if steady else rec.get("bits_per_second", 0.0)
    return {"bits_per_second": bps, "lost": rec.get("lost_packets", 0),
            "packets": rec.get("packets", 0), "seconds": rec.get("seconds", seconds)}


def _check_rtt(res: PathResult, route: Route, rtts: list[float], n: int, rtt_tol_pct: float,
               rtt_tol_ms: float) -> None:
    res.pings_sent, res.pings_answered = n, len(rtts)
    least = min_answers(n, route.round_trip_loss())
    if len(rtts) < least:
        res.rtt_ok = False
        res.notes.append(f"only {len(rtts)} of {n} pings answered (the route's loss explains {least} or more)")
    if rtts:
        res.measured_rtt_ms = statistics.median(rtts)
        # Every link crossed may add its forwarding cost (emulator, OVS) on top of the spec;
        # jitter adds the median's sampling error.
        tol = res.rtt_tolerance_ms = rtt_tolerance_ms(route, len(rtts), rtt_tol_pct, rtt_tol_ms)
        if res.rtt_ok is None:
            res.rtt_ok = abs(res.measured_rtt_ms - res.expected_rtt_ms) <= tol


def _check_rate_and_loss(network: Any, res: PathResult, route: Route, rate_tol_pct: float, port: int) -> None:
    bottleneck = route.bottleneck_mbps()
    loss = route.loss_fraction()
    if bottleneck:
        res.expected_rate_mbps = bottleneck * UDP_PAYLOAD / UDP_FRAME_BYTES * (1 - loss)
        got = _udp(network, route, bottleneck * 1.3, 3, port)
        if got is None:
            res.rate_ok = False
            res.notes.append("rate: iperf3 UDP gave no result")
        else:
            res.measured_rate_mbps = got["bits_per_second"] / 1e6
            res.rate_ok = abs(res.measured_rate_mbps - res.expected_rate_mbps) <= \
                res.expected_rate_mbps * rate_tol_pct / 100
    offered = bottleneck * 0.5 if bottleneck else 20.0
    got = _udp(network, route, offered, 2, port)
    res.expected_loss_pct = loss * 100
    if got is None or not got["packets"]:
        res.loss_ok = False
        res.notes.append("loss: iperf3 UDP gave no result")
        return
    n, lost = got["packets"], got["lost"]
    res.loss_packets = n
    res.measured_loss_pct = lost / n * 100
    sigma = math.sqrt(max(loss * (1 - loss), 1e-12) / n)
    res.loss_ok = abs(lost / n - loss) <= 3.29 * sigma + 0.002  # 99.9% + 0.2 points


def run(network: Any, mode: str = "rtt", rtt_tol_pct: float = 5.0, rtt_tol_ms: float = 1.0,
        rate_tol_pct: float = 10.0, port: int = 5299) -> SelfCheckReport:
    """Measure every traffic route; the report says whether all are within tolerance.

    The routes' pings run at the same time (each route is its own interfaces and links), 20 ms
    apart, as many per route as its loss needs for a median (10 on a clean route): a self-check
    after every sweep point costs a fraction of a second.
    """
    t0 = time.monotonic()
    all_routes = routes(network.plan)
    counts = [max(pings_needed(r.round_trip_loss()) or MAX_PINGS,
                  pings_for_jitter(r.rtt_sd_ms(), rtt_tolerance_ms(r, 0, rtt_tol_pct, rtt_tol_ms)))
              for r in all_routes]
    pingers = [_ping_start(network.node(r.client.node), r, n) for r, n in zip(all_routes, counts)]
    results = []
    try:
        for route, n, pinger in zip(all_routes, counts, pingers):
            res = PathResult(path=route.name, links=[l.name for l, _ in route.hops],
                             expected_rtt_ms=route.expected_rtt_ms())
            wait = n * PING_INTERVAL_S + route.max_rtt_ms() / 1000 * 2 + 15
            _check_rtt(res, route, _ping_rtts(pinger, wait), n, rtt_tol_pct, rtt_tol_ms)
            if mode == "full":
                _check_rate_and_loss(network, res, route, rate_tol_pct, port)
            results.append(res)
    finally:
        for p in pingers:
            if p.poll() is None:
                stop(p)
    return SelfCheckReport(mode=mode, backend=network.shaping_backend, paths=results,
                           seconds=time.monotonic() - t0)

"""The self-check: before anything is measured, prove every path is what the spec says.

For every path the traffic uses (each client interface to the server interface on the same
segment) it measures the RTT with ping and compares it with what the spec implies: the one-way
delays of every link in both directions plus the serialization of the ping frame at each link's
rate. With ``check: full`` it also sends UDP through the path with iperf3: above the bottleneck
rate to measure what the path carries, and below it to measure loss, each compared with the
spec. Outside tolerance the run stops with a table of expected against measured -- a link that
the emulator cannot reproduce (asked for more than it can carry, say) is never measured.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any

import networkx as nx

from .links import directions
from .plan import Plan, PlanIntf, PlanLink

PING_FRAME_BYTES = 98  # 56 bytes of ICMP payload + 8 ICMP + 20 IP + 14 Ethernet
UDP_PAYLOAD = 1400
UDP_FRAME_BYTES = UDP_PAYLOAD + 8 + 20 + 14


class SelfCheckError(RuntimeError):
    def __init__(self, report: "SelfCheckReport"):
        super().__init__(report.table())
        self.report = report


@dataclass
class PathSpec:
    """A path through the topology, with the direction each link is crossed in."""

    name: str
    client: PlanIntf
    server: PlanIntf
    hops: list[tuple[PlanLink, bool]]  # (link, crossed from endpoints[0] to endpoints[1])

    def _crossing(self, forward: bool) -> list[dict[str, Any]]:
        """Each link's model in the direction the path crosses it (client->server if forward)."""
        out = []
        for link, along in self.hops:
            up, down = directions(link.params, link.params.get("up"), link.params.get("down"))
            out.append(up if along == forward else down)
        return out

    def forward(self) -> list[dict[str, Any]]:
        return self._crossing(True)

    def backward(self) -> list[dict[str, Any]]:
        return self._crossing(False)

    def expected_rtt_ms(self) -> float:
        total = 0.0
        for d in self.forward() + self.backward():
            total += d["delay"]
            if d["bw"]:
                total += PING_FRAME_BYTES * 8 / (d["bw"] * 1e6) * 1e3
        return total

    def bottleneck_mbps(self) -> float | None:
        rates = [d["bw"] for d in self.forward() if d["bw"]]
        return min(rates) if rates else None

    def loss_fraction(self) -> float:
        keep = 1.0
        for d in self.forward():
            bl = d["burst_loss"]
            if bl:
                p, r = bl["p"] / 100, bl.get("r", 100) / 100
                pi_bad = p / (p + r) if p + r else 0.0
                lost = pi_bad * bl.get("loss_bad", 100) / 100 + (1 - pi_bad) * bl.get("loss_good", 0) / 100
            else:
                lost = d["loss"] / 100
            keep *= 1 - lost
        return 1 - keep


def paths(plan: Plan) -> list[PathSpec]:
    """Client-to-server paths on each shared segment, shortest through the switches."""
    g = nx.MultiGraph()
    hosts = {h.name for h in plan.hosts}
    for link in plan.links:
        g.add_edge(link.intf1.node, link.intf2.node, key=link.index, link=link)
    client, server = plan.host(plan.client), plan.host(plan.server)
    out = []
    for ci in client.intfs:
        for si in server.intfs:
            if si.segment != ci.segment:
                continue
            first, last = plan.links[ci.link], plan.links[si.link]
            if first.index == last.index:  # a direct cable between the two hosts
                out.append(PathSpec(f"{ci.name}->{si.name}", ci, si, [(first, first.intf1.node == ci.node)]))
                continue
            a = first.intf2.node if first.intf1.node == ci.node else first.intf1.node
            b = last.intf2.node if last.intf1.node == si.node else last.intf1.node
            switches = g.subgraph(n for n in g.nodes if n not in hosts)
            try:
                nodes = nx.shortest_path(switches, a, b)
            except (nx.NetworkXNoPath, nx.NodeNotFound):
                continue
            hops = [(first, first.intf1.node == ci.node)]
            for u, v in zip(nodes, nodes[1:]):
                link = min((d["link"] for d in g.get_edge_data(u, v).values()), key=lambda l: l.index)
                hops.append((link, link.intf1.node == u))
            hops.append((last, last.intf1.node == b))
            out.append(PathSpec(f"{ci.name}->{si.name}", ci, si, hops))
    return out


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


def _ping_start(node: Any, src: str, dst: str, count: int, interval: float) -> subprocess.Popen:
    return node.popen(["ping", "-n", "-c", str(count), "-i", f"{interval:g}", "-W", "2", "-I", src, dst],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _ping_rtts(p: subprocess.Popen, timeout: float) -> list[float]:
    out, _ = p.communicate(timeout=timeout)
    return [float(m) for m in re.findall(r"time=([0-9.]+) ms", out)]


def _udp(network: Any, path: PathSpec, rate_mbps: float, seconds: float, port: int) -> dict[str, Any] | None:
    """Send UDP at rate through the path; the receiver's counts (server side JSON)."""
    plan = network.plan
    srv = network.spawn(plan.server, ["iperf3", "-s", "-1", "-J", "-p", str(port), "-B", path.server.ip],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        import time

        time.sleep(0.3)
        cli = network.spawn(plan.client, ["iperf3", "-c", path.server.ip, "-B", path.client.ip, "-p", str(port),
                                          "-u", "-b", f"{rate_mbps * 1e6:.0f}", "-l", str(UDP_PAYLOAD),
                                          "-t", f"{seconds:g}", "-J"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        cli.communicate(timeout=seconds + 20)
    finally:
        try:
            sout, _ = srv.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            srv.kill()
            sout, _ = srv.communicate()
    try:
        data = json.loads(sout)
        end = data["end"]
    except (ValueError, KeyError):
        return None
    # iperf3 3.12's server reports the receiver's rate in sum_received (its "sum" has 0 bytes).
    rec = end.get("sum_received") or end.get("sum") or {}
    # The rate in steady state: the receiver's 1 s intervals after the first (the first holds
    # the path's fill-up time, one RTT, and would read low on long paths).
    steady = [i["sum"]["bits_per_second"] for i in data.get("intervals", [])[1:]
              if i.get("sum", {}).get("seconds", 0) > 0.5]
    bps = sum(steady) / len(steady) if steady else rec.get("bits_per_second", 0.0)
    return {"bits_per_second": bps, "lost": rec.get("lost_packets", 0),
            "packets": rec.get("packets", 0), "seconds": rec.get("seconds", seconds)}


def run(network: Any, mode: str = "rtt", rtt_tol_pct: float = 5.0, rtt_tol_ms: float = 1.0,
        rate_tol_pct: float = 10.0, pings: int = 10, port: int = 5299) -> SelfCheckReport:
    """Measure every traffic path; the report says whether all are within tolerance.

    The paths' pings run at the same time (each path is its own interfaces and links), 10 per
    path, 20 ms apart: a self-check after every sweep point costs a fraction of a second.
    """
    import time

    t0 = time.monotonic()
    plan = network.plan
    results = []
    client = network.node(plan.client)
    all_paths = paths(plan)
    interval = 0.02
    pingers = [_ping_start(client, p.client.ip, p.server.ip, pings, interval) for p in all_paths]
    for path, pinger in zip(all_paths, pingers):
        res = PathResult(path=path.name, links=[l.name for l, _ in path.hops],
                         expected_rtt_ms=path.expected_rtt_ms())
        rtts = _ping_rtts(pinger, pings * interval + 15)
        if len(rtts) < pings // 2:
            res.rtt_ok = False
            res.notes.append(f"only {len(rtts)} of {pings} pings answered")
        if rtts:
            res.measured_rtt_ms = statistics.median(rtts)
            # Every link crossed may add its forwarding cost (emulator, OVS) on top of the spec.
            tol = res.expected_rtt_ms * rtt_tol_pct / 100 + rtt_tol_ms * len(path.hops)
            if res.rtt_ok is None:
                res.rtt_ok = abs(res.measured_rtt_ms - res.expected_rtt_ms) <= tol
        if mode == "full":
            bottleneck = path.bottleneck_mbps()
            loss = path.loss_fraction()
            if bottleneck:
                res.expected_rate_mbps = bottleneck * UDP_PAYLOAD / UDP_FRAME_BYTES * (1 - loss)
                got = _udp(network, path, bottleneck * 1.3, 3.0, port)
                if got is None:
                    res.rate_ok = False
                    res.notes.append("rate: iperf3 UDP gave no result")
                else:
                    res.measured_rate_mbps = got["bits_per_second"] / 1e6
                    res.rate_ok = abs(res.measured_rate_mbps - res.expected_rate_mbps) <= \
                        res.expected_rate_mbps * rate_tol_pct / 100
            offered = bottleneck * 0.5 if bottleneck else 20.0
            got = _udp(network, path, offered, 2.0, port)
            res.expected_loss_pct = loss * 100
            if got is None or not got["packets"]:
                res.loss_ok = False
                res.notes.append("loss: iperf3 UDP gave no result")
            else:
                n, lost = got["packets"], got["lost"]
                res.loss_packets = n
                res.measured_loss_pct = lost / n * 100
                sigma = math.sqrt(max(loss * (1 - loss), 1e-12) / n)
                res.loss_ok = abs(lost / n - loss) <= 3.29 * sigma + 0.002  # 99.9% + 0.2 points
        results.append(res)
    return SelfCheckReport(mode=mode, backend=network.shaping_backend, paths=results,
                           seconds=time.monotonic() - t0)

"""Preflight: everything that would stop a run, checked before anything is created. Pure.

The caller probes the machine (:mod:`mptcplab.capabilities`: what is installed, whether the kernel
has netem, which bridges and interfaces exist) and hands the answers in; these functions only
compare them with the plans of every sweep point, so a bad input exits 2 with nothing created --
not half-way through a sweep.
"""

from __future__ import annotations

import os
import shutil

from dataclasses import dataclass

from .capabilities import Capabilities
from .errors import PreflightError
from .linkmodel import LinkEmulationError, choose_backend
from .plan import Plan
from .routes import MAX_TEST_SECONDS, expected_seconds, routes
from .routes import pings_needed
from .spec import Experiment


@dataclass(frozen=True)
class Machine:
    """What the preflight needs to know of this machine beyond its capabilities."""

    root: bool
    bridges: frozenset[str]        # OVS bridges that exist now
    interfaces: frozenset[str]     # network interfaces in the root namespace now


def link_backends(plan: Plan, shaper: str, netem: bool, problems: list[str]) -> dict[str, str]:
    """The backend each link will use ('netem', 'userspace' or 'plain'); problems named by link."""
    out = {}
    for link in plan.links:
        try:
            out[link.name] = choose_backend(shaper, link.up, link.down, netem=netem)
        except LinkEmulationError as e:
            problems.append(f"links[{link.index}] ({link.name}): {e}")
    return out


def machine_problems(caps: Capabilities, machine: Machine, ovs: bool = True) -> list[str]:
    """What stops any run here; ``ovs``: some point's switches are Open vSwitch."""
    problems = []
    if not machine.root:
        problems.append("mptcplab builds networks with Mininet and needs root: run it with sudo")
    if not caps.mptcp_enabled:
        problems.append("net.mptcp.enabled is not 1 on this machine: sysctl -w net.mptcp.enabled=1")
    if caps.mininet is None:
        problems.append("Mininet is not importable: apt-get install mininet and use a venv made with "
                        "/usr/bin/python3 -m venv --system-site-packages (make setup does both)")
    if caps.pyroute2 is None:
        problems.append("pyroute2 is not importable: pip install pyroute2 into the venv (make setup)")
    if ovs and not caps.ovs_installed:
        problems.append("Open vSwitch is missing: apt-get install openvswitch-switch (make setup); the "
                        "switches need it for a controller or with emulation.switch: ovs")
    if caps.iperf3 is None:
        problems.append("iperf3 is missing: apt-get install iperf3 (make setup)")
    if caps.iperf3_mptcp == "none":
        problems.append(f"iperf3 {caps.iperf3} has no --mptcp and mptcpize is missing: apt-get install mptcpize")
    if not caps.ethtool:
        problems.append("ethtool is missing: apt-get install ethtool (make setup)")
    return problems


def mib_name_problems(exp: Experiment) -> list[str]:
    """Expectations on mib.X name counters this kernel has: an unknown one would read as 0 (a
    counter that did not move) and pass."""
    import difflib

    from .expect import parse_all
    from .measurements import read_counters

    wanted = [(e.index, n.col, n.path[4:]) for e in parse_all(exp.expect) for n in e.name_nodes()
              if n.path.startswith("mib.")]
    if not wanted:
        return []
    known = sorted(k for k in read_counters(os.getpid()) if k.startswith("MPTcpExt"))
    return [f"expect[{i}]: col {col}: mib.{name} is not an MPTCP counter of this kernel"
            + (f" (did you mean mib.{close[0]}?)" if (close := difflib.get_close_matches(name, known, 1)) else "")
            for i, col, name in wanted if name not in known]


def plan_problems(exp: Experiment, plan: Plan, caps: Capabilities, machine: Machine) -> list[str]:
    """What stops this one point on this machine."""
    problems: list[str] = []
    backends = link_backends(plan, exp.emulation.shaper, caps.netem, problems)
    if "userspace" in backends.values() and not caps.cc:
        problems.append("the user-space link emulator is built on first use and needs a C compiler: "
                        "apt-get install gcc libc6-dev (make setup)")
    for h in plan.hosts:
        cc = h.mptcp.congestion_control
        if cc and caps.congestion_controls and cc not in caps.congestion_controls:
            problems.append(f"mptcp.congestion_control: {cc!r} is not available here "
                            f"(available: {', '.join(caps.congestion_controls)})")
        if h.mptcp.scheduler not in caps.schedulers:
            problems.append(f"mptcp.scheduler: {h.mptcp.scheduler!r} is not available here "
                            f"(available: {', '.join(caps.schedulers)})")
    for tool in ("dumpcap", "tshark"):  # capturing, then the census of the captures
        if plan.capture is not None and shutil.which(tool) is None:
            problems.append(f"capture: {tool} is missing (apt-get install tshark; make setup)")
    problems += mib_name_problems(exp)
    if exp.mptcp.stale_loss_cnt is not None and not os.path.exists("/proc/sys/net/mptcp/stale_loss_cnt"):
        problems.append("mptcp.stale_loss_cnt: this kernel has no net.mptcp.stale_loss_cnt (Linux 5.19+); "
                        "leave it out")
    if exp.mptcp.rto_min_ms is not None and not os.path.exists("/proc/sys/net/ipv4/tcp_rto_min_us"):
        problems.append("mptcp.rto_min_ms: this kernel has no net.ipv4.tcp_rto_min_us (Linux 6.11+); leave it out")
    flow_ccs = {f.congestion_control: f.label for t in plan.tests for f in t.flows if f.congestion_control}
    for cc, label in sorted(flow_ccs.items()):
        if caps.congestion_controls and cc not in caps.congestion_controls:
            problems.append(f"flows ({label}).congestion_control: {cc!r} is not available here "
                            f"(available: {', '.join(caps.congestion_controls)})")
    for s in plan.switches:
        if s.name in machine.bridges:
            problems.append(f"switches: an OVS bridge named {s.name!r} already exists and was not "
                            "created by this run; rename the switch in the topology (mptcplab "
                            "never deletes bridges it did not create)")
    for name in plan.interface_names() + [s.name for s in plan.switches]:
        if name in machine.interfaces:
            problems.append(f"an interface named {name!r} already exists in the root namespace; "
                            "rename the node or remove that interface (`mptcplab clean` removes "
                            "leftovers of killed runs)")
    problems += _length_problems(exp, plan)
    if exp.emulation.check != "none":
        for r in routes(plan):
            if pings_needed(r.round_trip_loss()) is None:
                problems.append(
                    f"emulation.check: route {r.name} loses {r.round_trip_loss():.1%} of round trips; "
                    "the self-check cannot measure its RTT with a bounded number of pings: use "
                    "emulation.check: none, or less loss")
    return problems


def _length_problems(exp: Experiment, plan: Plan) -> list[str]:
    tr = exp.traffic
    seconds = expected_seconds(plan, tr.duration, tr.bytes)
    if seconds <= MAX_TEST_SECONDS:
        return []
    what = f"traffic.bytes: {tr.bytes} bytes" if tr.bytes else f"traffic.duration: {tr.duration:g} s"
    return [f"{what} would take about {seconds / 3600:.1f} h per test at the slowest route's expected "
            f"TCP rate (bottleneck, loss and RTT); mptcplab starts no test expected to outlast "
            f"{MAX_TEST_SECONDS / 3600:g} h: send fewer bytes or make the links faster"]


def check(points: list[tuple[str, Experiment, Plan]], caps: Capabilities, machine: Machine) -> None:
    """Every point of a run against this machine; PreflightError listing every problem once."""
    problems = machine_problems(caps, machine, ovs=any(plan.switch == "ovs" for _, _, plan in points))
    where: dict[str, list[str]] = {}  # a problem -> the points that have it
    for label, exp, plan in points:
        for p in plan_problems(exp, plan, caps, machine):
            where.setdefault(p, []).append(label)
    for p, labels in where.items():
        if len(labels) == len(points):
            problems.append(p)
        else:
            problems.append(f"sweep point{'s' if len(labels) > 1 else ''} {', '.join(labels)}: {p}")
    if problems:
        raise PreflightError(list(dict.fromkeys(problems)))

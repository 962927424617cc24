"""Preflight against a described machine: every problem of every sweep point, found before anything
is created. Pure: the machine is a value here."""

from pathlib import Path

import pytest

from mptcplab import sweep
from mptcplab.capabilities import Capabilities
from mptcplab.errors import PreflightError
from mptcplab.plan import make_plan
from mptcplab.preflight import Machine, check
from mptcplab.spec import load_spec

REPO = Path(__file__).resolve().parent.parent

CAPS = Capabilities(kernel="6.18", netem=False, ovs_installed=True, ovs_kernel_datapath=False, mptcp_enabled=True,
                    path_managers=["kernel"], schedulers=["default"], congestion_controls=["reno", "cubic"],
                    iperf3="3.12", iperf3_mptcp="mptcpize", mininet="2.3.0", mptcpize=True, ethtool=True, cc=True,
                    nsenter=True, pyroute2="0.9.7")
MACHINE = Machine(root=True, bridges=frozenset(), interfaces=frozenset({"lo", "eth0"}))


def points(exp):
    return [(p.label(), e, make_plan(e)) for p in sweep.points(exp) for e in [sweep.apply(exp, p)]]


def problems(exp, caps=CAPS, machine=MACHINE):
    with pytest.raises(PreflightError) as e:
        check(points(exp), caps, machine)
    return e.value.problems


def test_dual_path_passes_on_a_capable_machine():
    check(points(load_spec(REPO / "experiments/dual-path.yaml")), CAPS, MACHINE)


def test_machine_problems_are_all_listed():
    exp = load_spec(REPO / "experiments/dual-path.yaml")
    caps = Capabilities(**{**CAPS.__dict__, "mptcp_enabled": False, "iperf3": None})
    out = problems(exp, caps, Machine(root=False, bridges=frozenset({"s2"}), interfaces=frozenset({"h1-eth1"})))
    text = "\n".join(out)
    for needle in ("needs root", "net.mptcp.enabled is not 1", "iperf3 is missing",
                   "an OVS bridge named 's2' already exists", "an interface named 'h1-eth1' already exists"):
        assert needle in text, out


def test_a_problem_of_some_sweep_points_names_them():
    exp = sweep.with_values(load_spec(REPO / "experiments/dual-path.yaml"),
                            {"sweep.parameters": {"emulation.shaper": ["userspace", "netem"]}}, "test")
    out = problems(exp)
    assert out == ["sweep point emulation.shaper=netem: links[0] (h1-s1): shaper netem: this kernel has no netem qdisc",
                   "sweep point emulation.shaper=netem: links[1] (h1-s2): shaper netem: this kernel has no netem qdisc",
                   "sweep point emulation.shaper=netem: links[2] (s1-h2): shaper netem: this kernel has no netem qdisc",
                   "sweep point emulation.shaper=netem: links[3] (s2-h2): shaper netem: this kernel has no netem qdisc"]


def test_hopeless_loss_and_endless_transfers_are_refused():
    base = load_spec(REPO / "experiments/dual-path.yaml")
    lossy = sweep.apply(base, sweep.Point(1, (("links.*.loss", 90),)))
    out = problems(lossy)
    assert any("emulation.check: route h1-eth0->h2-eth0 loses" in p for p in out), out
    slow = sweep.with_values(base, {"traffic.duration": None, "traffic.bytes": 10**11}, "test")
    out = problems(slow)
    assert any(p.startswith("traffic.bytes: 100000000000 bytes would take about") for p in out), out


def test_a_flows_congestion_control_missing_here_is_found_up_front():
    exp = load_spec(REPO / "experiments/shared-bottleneck.yaml")
    exp = sweep.with_values(exp, {"variants": [{"name": "bbr", "flows": {"b": {"congestion_control": "bbr"}}}]}, "t")
    assert "flows (b).congestion_control: 'bbr' is not available here (available: reno, cubic)" in problems(exp)
    check(points(load_spec(REPO / "experiments/shared-bottleneck.yaml")), CAPS, MACHINE)

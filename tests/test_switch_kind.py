"""Which switches a network gets (emulation.switch, mptcplab.plan.switch_kind): Open vSwitch only
where a controller programs the switches, the kernel's Linux bridge everywhere else under auto."""

from pathlib import Path

import pytest
import yaml

from mptcplab.errors import PlanError, SpecError
from mptcplab.plan import make_plan, switch_kind
from mptcplab.spec import load_spec, parse_spec

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("experiment, want", [
    ("dual-path", "bridge"),            # learning switches only
    ("handover", "bridge"),
    ("shared-bottleneck", "bridge"),
    ("middleboxes", "bridge"),           # the boxes are in the link emulator, not the switch
    ("routed-chain", "bridge"),
    ("three-path", "ovs"),               # the static controller installs OpenFlow rules
    ("fattree-permutation", "ovs"),      # ECMP select groups, and the fabric has loops
])
def test_auto_needs_ovs_only_where_a_controller_programs_the_switches(experiment, want):
    exp = load_spec(REPO / "experiments" / f"{experiment}.yaml")
    assert exp.emulation.switch == "auto"
    assert switch_kind(exp) == want
    assert make_plan(exp).switch == want


def _dual(**emulation):
    data = yaml.safe_load((REPO / "experiments/dual-path.yaml").read_text())
    data["topology"] = yaml.safe_load((REPO / "topologies/dual-path.yaml").read_text())
    data["emulation"] = emulation
    return data


def test_an_explicit_choice_is_kept():
    assert make_plan(parse_spec(_dual(switch="ovs"))).switch == "ovs"
    assert make_plan(parse_spec(_dual(switch="bridge"))).switch == "bridge"


def test_a_bridge_cannot_take_a_controller():
    exp = load_spec(REPO / "experiments/three-path.yaml")
    data = exp.model_dump(mode="json")
    data["emulation"]["switch"] = "bridge"
    with pytest.raises(PlanError, match="emulation.switch: bridge"):
        make_plan(parse_spec(data))


def test_an_unknown_switch_is_refused_naming_the_field():
    with pytest.raises(SpecError, match="emulation.switch"):
        parse_spec(_dual(switch="vpp"))

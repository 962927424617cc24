"""The spec: valid files load, every bad input names its field and what is allowed."""

import json
from pathlib import Path

import pytest
import yaml

from mptcplab.spec import SpecError, json_schema, load_spec, parse_spec, resolve_spec_path

REPO = Path(__file__).resolve().parent.parent


def base() -> dict:
    return {
        "name": "t",
        "topology": yaml.safe_load((REPO / "topologies/dual-path.yaml").read_text()),
        "traffic": {"client": "h1", "server": "h2", "duration": 2},
    }


def problems(data: dict) -> list[str]:
    with pytest.raises(SpecError) as e:
        parse_spec(data)
    return e.value.problems


def test_shipped_specs_load():
    for p in sorted((REPO / "experiments").glob("*.yaml")):
        exp = load_spec(p)
        assert exp.name


def test_dual_path_spec_is_what_the_issue_says():
    exp = load_spec(REPO / "experiments/dual-path.yaml")
    assert [h.interfaces for h in exp.topology.hosts.values()] == [2, 2]
    assert all(link.bw == 5 for link in exp.topology.links)
    assert exp.traffic.duration == 10 and exp.traffic.repetitions == 3
    assert exp.traffic.protocols == ["mptcp", "tcp"]


def test_loss_out_of_range_names_field():
    d = base()
    d["topology"]["links"][2]["loss"] = 150
    assert problems(d) == ["topology.links[2].loss: 150 is not between 0 and 100 (percent)"]


def test_topology_file_errors_name_the_file(tmp_path):
    topo = yaml.safe_load((REPO / "topologies/dual-path.yaml").read_text())
    topo["links"][2]["loss"] = 150
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(topo))
    spec = {"name": "x", "topology": "t.yaml", "traffic": {"client": "h1", "server": "h2"}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path / "s.yaml")
    assert e.value.problems == ["t.yaml: links[2].loss: 150 is not between 0 and 100 (percent)"]


@pytest.mark.parametrize("bad", ["h1;rm", "h1 x", "-h", "1h", "h1$(reboot)", "averyveryverylongname", "h1-a"])
def test_bad_node_names_rejected(bad):
    d = base()
    d["topology"]["hosts"][bad] = d["topology"]["hosts"].pop("h1")
    out = problems(d)
    assert any(f"{bad!r} is not a valid node name" in p for p in out), out


def test_unknown_field_and_missing_field():
    d = base()
    d["traffic"]["durration"] = 3
    del d["traffic"]["client"]
    out = problems(d)
    assert "traffic.durration: unknown field (see `mptcplab schema` for the allowed ones)" in out
    assert "traffic.client: required field is missing (or give flows: / matrix:)" in out


def test_cross_checks():
    d = base()
    d["traffic"]["server"] = "h9"
    d["topology"]["links"][0]["endpoints"] = ["h1", "s7"]
    out = problems(d)
    assert any(p.startswith("topology: links[0].endpoints: 's7' is neither a host nor a switch") for p in out), out


def test_interface_count_must_match_links():
    d = base()
    d["topology"]["hosts"]["h1"]["interfaces"] = 3
    assert "topology: hosts.h1: declares 3 interface(s) but 2 link(s) end at it" in problems(d)


def test_units_and_times():
    d = base()
    d["topology"]["links"][0].update(delay="10ms", jitter="500us")
    d["topology"]["links"][1].update(delay="1s")
    exp = parse_spec(d)
    assert exp.topology.links[0].delay == 10 and exp.topology.links[0].jitter == 0.5
    assert exp.topology.links[1].delay == 1000
    d["topology"]["links"][0]["delay"] = "fast"
    assert any("links[0].delay: 'fast' is not a time" in p for p in problems(d))


def test_endpoint_interface_must_exist():
    d = base()
    d["mptcp"] = {"hosts": {"h2": {"endpoints": {"h2-eth7": ["signal"]}}}}
    out = problems(d)
    assert any("mptcp.hosts.h2.endpoints: 'h2-eth7' is not an interface of h2" in p for p in out), out
    d["mptcp"] = {"hosts": {"h2": {"endpoints": {"h2-eth1": ["signall"]}}}}
    assert any("mptcp.hosts.h2.endpoints.h2-eth1[0]: 'signall' is not allowed" in p for p in problems(d)), problems(d)
    d["mptcp"] = {"hosts": {"h2": {"endpoints": {"h2-eth1": ["signal"]}}}}
    assert parse_spec(d).mptcp.hosts["h2"].endpoints == {"h2-eth1": ["signal"]}


def test_yaml_errors_and_missing_files(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path / "bad.yaml")
    assert "not valid YAML" in e.value.problems[0]
    with pytest.raises(SpecError) as e:
        resolve_spec_path("no-such-experiment", tmp_path)
    assert "not found" in e.value.problems[0]


def test_bare_name_resolves_in_experiments():
    assert resolve_spec_path("dual-path", REPO / "experiments") == REPO / "experiments/dual-path.yaml"


def test_schema_is_json():
    s = json_schema()
    json.dumps(s)
    assert "topology" in s["properties"] and "traffic" in s["properties"]


@pytest.mark.parametrize("bad", ["h1\n", "h1\nx"])
def test_names_with_newlines_are_refused(bad):
    """`re.match` with `$` let a trailing newline through; it broke Mininet's shell lines half-way
    through a build."""
    d = base()
    d["topology"]["hosts"][bad] = d["topology"]["hosts"].pop("h1")
    d["traffic"]["client"] = bad
    assert any("is not a valid node name" in p for p in problems(d))


@pytest.mark.parametrize("duration", [0.5, 1.5])
def test_fractional_durations_are_refused(duration):
    """iperf3 reads -t as a whole number: 0.5 would run forever."""
    d = base()
    d["traffic"]["duration"] = duration
    out = problems(d)
    assert any(p.startswith("traffic: duration: ") and "whole number of seconds" in p for p in out), out


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_numbers_are_refused(value):
    d = base()
    d["topology"]["links"][0]["bw"] = value
    d["emulation"] = {"rtt_tolerance_ms": value}
    out = problems(d)
    assert any(p.startswith("topology.links[0].bw") for p in out) and \
        any(p.startswith("emulation.rtt_tolerance_ms") for p in out), out


# --------------------------------------------------------------------------- middleboxes


def with_box(box: dict, where: str = "link") -> dict:
    """base() with a middlebox on link 0 (where: link, up or down)."""
    d = base()
    link = d["topology"]["links"][0]
    if where == "link":
        link["middlebox"] = box
    else:
        link[where] = {"middlebox": box}
    return d


def test_middlebox_translations_load():
    exp = parse_spec(with_box({"randomize_isn": True}, "up"))
    assert exp.topology.links[0].up.middlebox.randomize_isn is True
    assert parse_spec(with_box({})).topology.links[0].middlebox.randomize_isn is False
    box = parse_spec(with_box({"nat": "10.0.1.100"}, "down")).topology.links[0].down.middlebox
    assert str(box.nat) == "10.0.1.100"
    box = parse_spec(with_box({"coalesce_up_to": 1200, "coalesce_hold": "500us"})).topology.links[0].middlebox
    assert (box.coalesce_up_to, box.coalesce_hold) == (1200, 0.5)


@pytest.mark.parametrize("field,value,says", [
    ("randomize_isn", "sometimes", "topology.links[0].middlebox.randomize_isn: Input should be a valid boolean"),
    ("nat", "10.0.0", "topology.links[0].middlebox.nat: Input is not a valid IPv4 address"),
    ("nat", "fd00::1", "topology.links[0].middlebox.nat: Input is not a valid IPv4 address"),
    ("nat", "0.0.0.0", "topology.links[0].middlebox.nat: 0.0.0.0 cannot be a host's address"),
    ("nat", "224.0.0.1", "topology.links[0].middlebox.nat: 224.0.0.1 cannot be a host's address"),
    ("nat", "127.0.0.1", "topology.links[0].middlebox.nat: 127.0.0.1 cannot be a host's address"),
    ("nat", "10.0.0.1; reboot", "topology.links[0].middlebox.nat: Input is not a valid IPv4 address"),
    ("coalesce_up_to", 1, "topology.links[0].middlebox.coalesce_up_to: 1 is not between 2 and 1400 bytes"),
    ("coalesce_up_to", 1401, "topology.links[0].middlebox.coalesce_up_to: 1401 is not between 2 and 1400 bytes"),
    ("coalesce_up_to", "lots", "topology.links[0].middlebox.coalesce_up_to: Input should be a valid integer"),
    ("coalesce_hold", "2s", "topology.links[0].middlebox.coalesce_hold: 2000 is not between 0.001 and 1000 ms"),
    ("coalesce_hold", 0, "topology.links[0].middlebox.coalesce_hold: 0 is not between 0.001 and 1000 ms"),
])
def test_bad_middlebox_values_name_the_field(field, value, says):
    assert any(p.startswith(says) for p in problems(with_box({field: value}))), problems(with_box({field: value}))

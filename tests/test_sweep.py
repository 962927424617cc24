"""Sweep expansion and field paths (no root)."""

from pathlib import Path

import pytest
import yaml

from mptcplab.plan import make_plan
from mptcplab.spec import SpecError, load_spec, parse_spec
from mptcplab.sweep import apply, link_only_change, parse_set, points

REPO = Path(__file__).resolve().parent.parent


def dual(**sweep) -> object:
    spec = yaml.safe_load((REPO / "experiments/dual-path.yaml").read_text())
    spec["topology"] = yaml.safe_load((REPO / "topologies/dual-path.yaml").read_text())
    if sweep:
        spec["sweep"] = sweep
    return parse_spec(spec)


def test_no_sweep_is_one_point():
    pts = points(dual())
    assert len(pts) == 1 and pts[0].values == () and pts[0].id == "p001"


def test_product_and_zip():
    exp = dual(parameters={"links.*.bw": [5, 10], "traffic.duration": [3, 4, 5]},
               zip=[{"links.h1-s2.delay": [1, 2], "links.s2-h2.delay": [3, 4]}])
    pts = points(exp)
    assert len(pts) == 2 * 3 * 2
    assert pts[0].as_dict() == {"links.*.bw": 5, "traffic.duration": 3, "links.h1-s2.delay": 1, "links.s2-h2.delay": 3}
    assert pts[1].as_dict()["links.h1-s2.delay"] == 2 and pts[1].as_dict()["links.s2-h2.delay"] == 4
    assert len({p.values for p in pts}) == len(pts)


def test_zip_lengths_must_match():
    with pytest.raises(SpecError, match="same length"):
        points(dual(zip=[{"links.h1-s2.delay": [1, 2], "links.s2-h2.delay": [3]}]))


def test_shuffle_is_seeded():
    a = [p.id for p in points(dual(parameters={"links.*.loss": [0, 1, 2, 3, 4]}, shuffle=True, seed=7))]
    b = [p.id for p in points(dual(parameters={"links.*.loss": [0, 1, 2, 3, 4]}, shuffle=True, seed=7))]
    c = [p.id for p in points(dual(parameters={"links.*.loss": [0, 1, 2, 3, 4]}, shuffle=True, seed=8))]
    assert a == b and sorted(a) == ["p001", "p002", "p003", "p004", "p005"] and a != c


def test_apply_field_paths():
    exp = dual(parameters={"links.h1-s2.loss": [1.5], "links[3].bw": [2], "links.*.queue": [50],
                           "links.s1-h2.up.delay": [30], "mptcp.limits.subflows": [1]})
    e = apply(exp, points(exp)[0])
    links = e.topology.links
    assert links[1].loss == 1.5 and links[0].loss == 0
    assert links[3].bw == 2 and links[0].bw == 5
    assert all(l.queue == 50 for l in links)
    assert links[2].up.delay == 30 and links[2].delay == 5
    assert e.mptcp.limits.subflows == 1
    assert e.sweep is None


def test_apply_validates_and_names_bad_values_and_paths():
    exp = dual(parameters={"links.h1-s2.loss": [150]})
    with pytest.raises(SpecError) as err:
        apply(exp, points(exp)[0])
    assert "sweep point links.h1-s2.loss=150: topology.links[1].loss: 150 is not between 0 and 100" in err.value.problems[0]
    exp = dual(parameters={"links.h9-s2.loss": [1]})
    with pytest.raises(SpecError, match="no link 'h9-s2'"):
        apply(exp, points(exp)[0])


def test_set_option():
    assert parse_set(["links.h1-s1.loss=0,0.5,1", "mptcp.scheduler=default"]) == {
        "links.h1-s1.loss": [0, 0.5, 1], "mptcp.scheduler": ["default"]}
    with pytest.raises(SpecError, match="PATH=VALUE"):
        parse_set(["links.h1-s1.loss"])


def test_link_only_change_decides_in_place():
    exp = dual(parameters={"links.*.loss": [0, 1], "traffic.duration": [3]})
    a, b = (apply(exp, p).model_dump(mode="json") for p in points(exp))
    assert link_only_change(a, b)
    exp2 = dual(parameters={"mptcp.limits.subflows": [1, 2]})
    c, d = (apply(exp2, p).model_dump(mode="json") for p in points(exp2))
    assert not link_only_change(c, d)


def test_shipped_sweeps_expand_and_plan():
    for name, n in (("dual-path-sweep", 18), ("dual-channel-max", 6)):
        exp = load_spec(REPO / "experiments" / f"{name}.yaml")
        pts = points(exp)
        assert len(pts) == n
        for p in pts:
            make_plan(apply(exp, p))

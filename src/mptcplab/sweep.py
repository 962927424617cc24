"""Sweeps: the list of points of an experiment, each a set of values for spec fields.

Pure (part of the plan stage): no Mininet, no files. A parameter is addressed by its field path:

- ``links.h1-s1.loss``   the link between h1 and s1 (its spec name ``endpoints[0]-endpoints[1]``)
- ``links[2].bw``        the third link of the topology
- ``links.*.bw``         every link at once
- ``links.h1-s2.up.delay``  one direction of a link
- anything else is a dotted path into the spec: ``mptcp.scheduler``, ``traffic.duration``,
  ``mptcp.limits.subflows`` ...; ``[i]`` picks an item of a list the spec has:
  ``events.flaps[0].period``, ``events.at[1].at``

``sweep.parameters`` form a cartesian product; each ``sweep.zip`` group moves together (its lists
have one length); ``shuffle`` runs the points in a random order drawn from ``seed`` (recorded).
``run-experiment SPEC --set PATH=V1,V2`` adds parameters from the command line.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
import re
from dataclasses import dataclass
from typing import Any

from .spec import Experiment, SpecError, parse_spec

_INDEX = re.compile(r"^links\[(\d+)\]\.(.+)$")
#: Top-level fields a sweep cannot vary.
UNSWEPT = ("name", "description", "outputs", "sweep", "figures")
#: Points one run may hold (point ids have room for 6 digits; results are rewritten per point).
MAX_POINTS = 10_000


@dataclass(frozen=True)
class Point:
    index: int                    # position in the unshuffled product (stable id)
    values: tuple[tuple[str, Any], ...]

    @property
    def id(self) -> str:
        return f"p{self.index:03d}"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values) or "(no parameters)"


def parse_set(options: list[str]) -> dict[str, list[Any]]:
    """``--set PATH=V1,V2`` -> {PATH: [V1, V2]} with numbers and booleans read as such."""
    out: dict[str, list[Any]] = {}
    for opt in options:
        if "=" not in opt:
            raise SpecError([f"--set {opt}: write PATH=VALUE[,VALUE...] (e.g. links.h1-s1.loss=0,1,2)"])
        path, _, values = opt.partition("=")
        out[path.strip()] = [_scalar(v.strip()) for v in values.split(",") if v.strip() != ""]
        if not out[path.strip()]:
            raise SpecError([f"--set {opt}: no values"])
    return out


def _scalar(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def points(exp: Experiment, extra: dict[str, list[Any]] | None = None) -> list[Point]:
    """Every point of the sweep, in run order. One empty point when nothing is swept."""
    sw = exp.sweep
    params: dict[str, list[Any]] = dict(sw.parameters) if sw else {}
    params.update(extra or {})
    fixed = [p for z in (sw.zip if sw else []) for p in z] + list(params)
    bad = [p for p in fixed if p.split(".")[0] in UNSWEPT]
    if bad:
        raise SpecError([f"sweep: {p}: one run has one name, one output directory and one sweep; "
                         "sweep link, MPTCP, traffic, controller or emulation fields" for p in bad])
    sizes = [len(v) for v in params.values()] + [len(next(iter(z.values()))) for z in (sw.zip if sw else []) if z]
    if math.prod(sizes) > MAX_POINTS:
        raise SpecError([f"sweep: {math.prod(sizes)} points; a run holds at most {MAX_POINTS} "
                         "(split the sweep into several runs)"])
    groups: list[list[tuple[tuple[str, Any], ...]]] = []
    for path, values in params.items():
        groups.append([((path, v),) for v in values])
    for i, z in enumerate(sw.zip if sw else []):
        lengths = {len(v) for v in z.values()}
        if len(lengths) != 1:
            raise SpecError([f"sweep.zip[{i}]: the lists must have the same length (got {sorted(lengths)})"])
        n = lengths.pop()
        groups.append([tuple((path, z[path][j]) for path in z) for j in range(n)])
    combos = [tuple(v for part in combo for v in part) for combo in itertools.product(*groups)] if groups else [()]
    pts = [Point(i + 1, c) for i, c in enumerate(combos)]
    if sw and sw.shuffle:
        random.Random(sw.seed).shuffle(pts)
    return pts


def apply(exp: Experiment, point: Point) -> Experiment:
    """The experiment at one point: the spec with the point's values, validated again."""
    data = exp.model_dump(mode="json", exclude={"sweep"})
    for path, value in point.values:
        _set(data, path, value)
    try:
        return parse_spec(data)
    except SpecError as e:
        raise SpecError([f"sweep point {point.label()}: {p}" for p in e.problems]) from None


def _links(data: dict[str, Any], selector: str) -> list[dict[str, Any]]:
    links = data["topology"]["links"]
    if selector == "*":
        return links
    found = [l for l in links if f"{l['endpoints'][0]}-{l['endpoints'][1]}" == selector]
    if not found:
        names = ", ".join(f"{l['endpoints'][0]}-{l['endpoints'][1]}" for l in links)
        raise SpecError([f"sweep: no link {selector!r} (links: {names}, or * for all)"])
    return found


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    m = _INDEX.match(path)
    if m:
        i, rest = int(m.group(1)), m.group(2)
        links = data["topology"]["links"]
        if i >= len(links):
            raise SpecError([f"sweep: {path}: the topology has {len(links)} links"])
        targets, rest_path = [links[i]], rest
    elif path.startswith("links."):
        selector, _, rest_path = path[len("links."):].partition(".")
        if not rest_path:
            raise SpecError([f"sweep: {path}: name a field, e.g. links.h1-s1.loss"])
        # link names contain '-', never '.', so the first segment is the selector
        targets = _links(data, selector)
    else:
        targets, rest_path = [data], path
    for t in targets:
        keys = rest_path.split(".")
        node = t
        for k in keys[:-1]:
            node = _step(node, k, path)
        node[keys[-1]] = copy.deepcopy(value)


_ITEM = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)\[(\d+)\]$")


def _step(node: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    """One segment of a field path: a block (``traffic``, made when absent) or one item of a
    list the spec already has (``flaps[0]``)."""
    m = _ITEM.match(key)
    if m:
        items = node.get(m.group(1))
        i = int(m.group(2))
        if not isinstance(items, list) or i >= len(items):
            have = len(items) if isinstance(items, list) else 0
            raise SpecError([f"sweep: {path}: {m.group(1)} has {have} item(s), no [{i}]"])
        out = items[i]
    else:
        if node.get(key) is None:
            node[key] = {}
        out = node[key]
    if not isinstance(out, dict):
        raise SpecError([f"sweep: {path}: {key} is not a block of fields"])
    return out


def link_only_change(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when two resolved specs differ only in link parameters (endpoints unchanged) and in
    the events during the tests, so the running network can be changed in place instead of
    being rebuilt (the events come with the adopted plan)."""
    def strip(d: dict[str, Any]) -> dict[str, Any]:
        d = copy.deepcopy(d)
        d["topology"]["links"] = [{"endpoints": l["endpoints"]} for l in d["topology"]["links"]]
        d.pop("events", None)
        return d

    return strip(old) == strip(new)


def with_values(exp: Experiment, values: dict[str, Any], origin: str) -> Experiment:
    """The experiment with some fields set (command-line overrides such as --shaper or --set),
    validated again like any spec; problems are named after ``origin``."""
    data = exp.model_dump(mode="json")
    for path, value in values.items():
        _set(data, path, value)
    try:
        return parse_spec(data)
    except SpecError as e:
        raise SpecError([f"{origin}: {p}" for p in e.problems]) from None

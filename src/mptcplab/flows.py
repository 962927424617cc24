"""Flows of a test: the spec's ``flows:`` and ``matrix:`` expanded, and a variant applied. Pure.

A traffic matrix is drawn from ``random.Random(seed)`` and nothing else, so a seed names one
matrix on every machine and in every Python release that keeps ``random``'s documented
reproducibility (shuffle, sample and randrange are stable for a seed); the expansion is recorded
in plan.json with every run.

Matrices (Raiciu et al., "Improving Datacenter Performance and Robustness with Multipath TCP",
SIGCOMM 2011, use the first two):
- permutation: a random derangement -- every host sends to exactly one other host and receives
  from exactly one, none to itself;
- random: every host sends to ``per_host`` distinct others chosen at random (receivers may get
  several flows, or none);
- incast: ``senders`` hosts (the first ones after the target, in order) all send to ``target``;
- all-to-all: every ordered pair of distinct hosts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any, Sequence

from .errors import PlanError

#: Tries to draw a derangement by rejection (each succeeds with probability about 1/e).
DERANGEMENT_TRIES = 10_000


@dataclass(frozen=True)
class FlowDef:
    """One flow, resolved: hosts, protocol and length known; ports and addresses come with the plan."""

    label: str
    src: str
    dst: str
    protocol: str = "mptcp"
    extra_subflows: int = 0
    start_s: float = 0.0
    duration_s: float | None = None
    bytes: int | None = None
    congestion_control: str | None = None
    parallel: int = 1

    @property
    def end_s(self) -> float | None:
        """When it is due to end on the test's clock (None for a byte count)."""
        return None if self.duration_s is None else self.start_s + self.duration_s


def permutation(hosts: Sequence[str], rng: random.Random) -> list[tuple[str, str]]:
    """A uniformly random derangement of ``hosts`` (rejection sampling: shuffle until no host
    maps to itself), as (source, destination) pairs in host order."""
    if len(hosts) < 2:
        raise ValueError("a permutation matrix needs at least 2 hosts")
    order = list(hosts)
    for _ in range(DERANGEMENT_TRIES):
        dst = order[:]
        rng.shuffle(dst)
        if all(a != b for a, b in zip(order, dst)):
            return list(zip(order, dst))
    raise ValueError("no derangement found")  # pragma: no cover  (probability (1-1/e)^10000)


def random_pairs(hosts: Sequence[str], per_host: int, rng: random.Random) -> list[tuple[str, str]]:
    if per_host > len(hosts) - 1:
        raise ValueError(f"per_host: {per_host} destinations per host, but only {len(hosts) - 1} other hosts")
    return [(h, d) for h in hosts for d in rng.sample([x for x in hosts if x != h], per_host)]


def incast(hosts: Sequence[str], target: str | None, senders: int | None) -> list[tuple[str, str]]:
    target = target or hosts[0]
    others = [h for h in hosts if h != target]
    n = len(others) if senders is None else senders
    if n > len(others):
        raise ValueError(f"senders: {n}, but only {len(others)} hosts besides the target {target}")
    start = list(hosts).index(target) + 1 if target in hosts else 0
    ring = [h for h in list(hosts)[start:] + list(hosts)[:start] if h != target]
    return [(h, target) for h in ring[:n]]


def all_to_all(hosts: Sequence[str]) -> list[tuple[str, str]]:
    return [(a, b) for a in hosts for b in hosts if a != b]


def matrix_pairs(matrix: Any, all_hosts: Sequence[str]) -> list[tuple[str, str]]:
    """The (source, destination) pairs of a spec's ``matrix:`` block over its hosts."""
    hosts = list(matrix.hosts or all_hosts)
    if len(set(hosts)) != len(hosts):
        raise ValueError("hosts: a host is listed twice")
    if len(hosts) < 2:
        raise ValueError("hosts: a traffic matrix needs at least 2 hosts")
    rng = random.Random(matrix.seed)
    if matrix.kind == "permutation":
        return permutation(hosts, rng)
    if matrix.kind == "random":
        return random_pairs(hosts, matrix.per_host, rng)
    if matrix.kind == "incast":
        if matrix.target is not None and matrix.target not in hosts:
            raise ValueError(f"target: {matrix.target} is not one of the matrix's hosts")
        return incast(hosts, matrix.target, matrix.senders)
    return all_to_all(hosts)


def _one_connection(flow: FlowDef, where: str) -> FlowDef:
    """A byte-count flow is one connection: mptcplab's transfer tool sends it and times its
    completion at the receiver (iperf3 -n stops counting when its sender has written the last
    byte, with a window still in flight). Raises PlanError for parallel streams."""
    if flow.bytes is not None and flow.parallel != 1:
        raise PlanError([f"{where}: flow {flow.label}: parallel: {flow.parallel} with bytes: {flow.bytes}: a "
                         "byte-count flow is one connection (its completion is timed at the receiver); "
                         "remove parallel, or give a duration"])
    return flow


def _flow(label: str, src: str, dst: str, params: Any, traffic: Any) -> FlowDef:
    duration, nbytes = params.duration, params.bytes
    if duration is None and nbytes is None:
        duration, nbytes = traffic.duration, traffic.bytes
    return _one_connection(FlowDef(
        label=label, src=src, dst=dst, protocol=params.protocol, extra_subflows=params.extra_subflows,
        start_s=float(params.start), duration_s=None if duration is None else float(duration),
        bytes=nbytes, congestion_control=params.congestion_control, parallel=params.parallel), "flows")


def expand(exp: Any) -> list[FlowDef]:
    """Every flow of the experiment's tests: ``flows:`` in order, then the matrix's. Labels
    default to SRC-DST (a second flow between the same hosts gets -2, ...). Raises PlanError."""
    out: list[FlowDef] = []
    for f in exp.flows:
        out.append(_flow(f.label or f"{f.src}-{f.dst}", f.src, f.dst, f, exp.traffic))
    if exp.matrix is not None:
        try:
            pairs = matrix_pairs(exp.matrix, list(exp.topology.hosts))
        except ValueError as e:
            raise PlanError([f"matrix.{e}" if str(e).startswith(("hosts", "target", "senders", "per_host"))
                             else f"matrix: {e}"]) from None
        out += [_flow(f"{a}-{b}", a, b, exp.matrix, exp.traffic) for a, b in pairs]
    seen: dict[str, int] = {}
    labelled = []
    for f in out:
        n = seen[f.label] = seen.get(f.label, 0) + 1
        labelled.append(f if n == 1 else replace(f, label=f"{f.label}-{n}"))
    if len({f.label for f in labelled}) != len(labelled):
        raise PlanError(["flows: two flows end up with the same label; give each flow its own label"])
    return labelled


def for_variant(flows: list[FlowDef], variant: Any | None) -> list[FlowDef]:
    """The flows as a variant runs them: its protocol and extra_subflows for every flow, then its
    ``flows:`` changes ("*" first, then by label). Unknown labels raise PlanError."""
    if variant is None:
        return flows
    labels = {f.label for f in flows}
    unknown = sorted(set(variant.flows) - labels - {"*"})
    if unknown:
        raise PlanError([f"variants.{variant.name}.flows: {', '.join(unknown)}: no such flow (flows: "
                         f"{', '.join(sorted(labels)[:12])}{', ...' if len(labels) > 12 else ''}, or *)"])
    out = []
    for f in flows:
        changes: dict[str, Any] = {}
        if variant.protocol is not None:
            changes["protocol"] = variant.protocol
        if variant.extra_subflows is not None:
            changes["extra_subflows"] = variant.extra_subflows
        for key in ("*", f.label):
            over = variant.flows.get(key)
            if over is not None:
                changes.update(over.model_dump(exclude_none=True))
        flow = replace(f, **changes)
        out.append(replace(flow, extra_subflows=0) if flow.protocol == "tcp" else flow)  # TCP has one path
    return out


def schedule_length_s(flows: list[FlowDef]) -> float:
    """When the last duration-bound flow is due to end (0 with byte counts only)."""
    return max((f.end_s or f.start_s for f in flows), default=0.0)

"""The events of a test as one timeline: single changes, flap schedules and random failures
expanded into (time, link, action) steps, sorted. Pure.

A random failure process is drawn from ``random.Random(seed)`` only (exponential up and down
times with the given means), so a seed names one schedule on every machine; the expansion is
recorded in plan.json with every run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

#: Actions that take something away (a link, an interface, an address, an endpoint, a subflow's
#: active role): the events whose aftermath is measured (mptcplab.recovery).
DISRUPTIVE = ("down", "address-del", "endpoint-del", "backup")


@dataclass(frozen=True)
class Step:
    """One change of one link (or, with ``interface``, of one host interface: ``link`` is then
    None), ``at_s`` seconds after the test starts. ``origin`` says which spec entry it comes
    from (at[0], flaps[1], random[0])."""

    at_s: float
    link: str | None
    action: str
    params: dict[str, Any] = field(default_factory=dict)
    origin: str = ""
    interface: str | None = None

    @property
    def target(self) -> str:
        """What the step acts on: a link's name, or a host interface's."""
        return self.interface or self.link or ""


def flap_steps(flap: Any, origin: str) -> list[Step]:
    out = []
    for k in range(flap.count):
        t = flap.start + k * flap.period
        out += [Step(round(t, 6), flap.link, "down", origin=origin),
                Step(round(t + flap.down_for, 6), flap.link, "up", origin=origin)]
    return out


def random_steps(proc: Any, origin: str) -> list[Step]:
    """Up for Exp(mean_up), down for Exp(mean_down), again, until a failure would start after
    ``until``; the last failure always ends (its up may come after ``until``)."""
    rng = random.Random(proc.seed)
    t, out = proc.start, []
    while True:
        t += rng.expovariate(1 / proc.mean_up)
        if t > proc.until:
            return out
        down = rng.expovariate(1 / proc.mean_down)
        out += [Step(round(t, 6), proc.link, "down", origin=origin),
                Step(round(t + down, 6), proc.link, "up", origin=origin)]
        t += down


def timeline(events: Any) -> list[Step]:
    """Every step of a spec's ``events:`` block, by time (ties keep the spec's order)."""
    if events is None:
        return []
    steps = [Step(e.at, e.link, e.action, e.params.model_dump(exclude_none=True) if e.params else {},
                  f"at[{i}]", e.interface) for i, e in enumerate(events.at)]
    for i, f in enumerate(events.flaps):
        steps += flap_steps(f, f"flaps[{i}]")
    for i, r in enumerate(events.random):
        steps += random_steps(r, f"random[{i}]")
    return sorted(steps, key=lambda s: s.at_s)

"""How a flow rides out an event: outage and recovery from its receiver's goodput series. Pure.

Read on the 0.1 s series a test records (flow-goodput.csv): the goodput before the event (its
mean over the ``before_s`` seconds up to it), the outage (the longest run of intervals with no
goodput from the event on, until data flows again), the time to recover (from the event until
goodput stays at >= ``threshold`` of the level before for ``hold_s``), and what was delivered
meanwhile. A flow that never recovers has no recovery time; one that never delivers again has
an outage to the end of its series (``survived`` False).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class Recovery:
    before_mbps: float | None
    outage_s: float
    recovery_s: float | None
    delivered_mb: float  # megabytes delivered between the event and the recovery (or the end)
    survived: bool       # data flowed again after the event

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def after_event(series: Sequence[tuple[float, float]], event_s: float, *, before_s: float = 2.0,
                threshold: float = 0.9, hold_s: float = 0.5, step_s: float = 0.1) -> Recovery:
    """``series``: (t, Mbit/s) pairs, t the end of each ``step_s`` interval, in order."""
    before = [g for t, g in series if event_s - before_s < t <= event_s]
    level = sum(before) / len(before) if before else None
    after = [(t, g) for t, g in series if t > event_s]
    outage, run, flowed = 0.0, 0.0, False
    for _, g in after:
        if g <= 0:
            run += step_s
            outage = max(outage, run)
        else:
            run, flowed = 0.0, True
            if outage:
                break  # the first outage after the event is the one it caused
    recovery_at = None
    if level:
        need = max(1, round(hold_s / step_s))
        ok = 0
        for t, g in after:
            ok = ok + 1 if g >= threshold * level else 0
            if ok >= need:
                recovery_at = t - (need - 1) * step_s
                break
    until = recovery_at if recovery_at is not None else (after[-1][0] if after else event_s)
    delivered = sum(g * step_s / 8 for t, g in after if t <= until)
    return Recovery(level, round(outage, 3), None if recovery_at is None else round(recovery_at - step_s - event_s, 3),
                    round(delivered, 4), flowed)

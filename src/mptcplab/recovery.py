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


def per_event(events: Sequence[dict[str, Any]], series: Sequence[tuple[float, float]],
              pm_events: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """The events' rows (events.csv), each disruptive one that was applied (down, address-del,
    endpoint-del, backup) with its aftermath on ``series``: the Recovery fields, and the
    subflows the client's path manager saw close and establish from the event until the next
    disruptive one (or the end). Other rows come back unchanged."""
    from .events import DISRUPTIVE

    cuts = [e["applied_s"] for e in events if e["action"] in DISRUPTIVE and e.get("applied_s") is not None]
    out = []
    for e in events:
        at = e.get("applied_s")
        if e["action"] not in DISRUPTIVE or at is None:
            out.append(dict(e))
            continue
        until = min((c for c in cuts if c > at), default=float("inf"))
        seen = [p["event"] for p in pm_events if at <= p["t"] < until]
        out.append({**e, **after_event(series, at).to_dict(),
                    "subflows_closed": seen.count("sf_closed"), "subflows_established": seen.count("sf_established")})
    return out


def first_cut(events: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The summary's event: the first disruptive event applied, with its recovery fields."""
    from .events import DISRUPTIVE

    return next((e for e in events if e["action"] in DISRUPTIVE and e.get("applied_s") is not None
                 and "outage_s" in e), None)


def total_series(rows: Sequence[dict[str, Any]], step_s: float = 0.1) -> list[tuple[float, float]]:
    """Several flows' goodput rows (flow, t, goodput_mbps) as one (t, Mbit/s) series: each point
    added to the ``step_s`` interval its end falls in (flows launch a few ms apart)."""
    bins: dict[int, float] = {}
    for r in rows:
        k = round(r["t"] / step_s)
        bins[k] = bins.get(k, 0.0) + (r["goodput_mbps"] or 0.0)
    return [(round(k * step_s, 6), g) for k, g in sorted(bins.items())]

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
    survived: bool       # data flowed again after the outage the event caused (or there was none)
    #: the time to recover to ``threshold`` of what the network still offers (the max-flow
    #: without what the event took away, when below the level before); None when not given
    #: or never reached
    recovery_remaining_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _recovered_at(after: Sequence[tuple[float, float]], level: float, need: int) -> float | None:
    """The end of the first interval of the first ``need`` in a row at or above ``level``."""
    ok = 0
    for t, g in after:
        ok = ok + 1 if g >= level else 0
        if ok >= need:
            return t
    return None


def after_event(series: Sequence[tuple[float, float]], event_s: float, *, before_s: float = 2.0,
                threshold: float = 0.9, hold_s: float = 0.5, step_s: float = 0.1,
                remaining_mbps: float | None = None, level_mbps: float | None = None) -> Recovery:
    """``series``: (t, Mbit/s) pairs, t the end of each ``step_s`` interval, in order.
    ``remaining_mbps``: what the network offers without what the event took away (its max-flow).
    ``level_mbps``: the level to recover to, instead of the mean before the event (a later event
    of a series is measured against the level before the first)."""
    before = [g for t, g in series if event_s - before_s < t <= event_s]
    level = level_mbps if level_mbps is not None else (sum(before) / len(before) if before else None)
    after = [(t, g) for t, g in series if t > event_s]
    need = max(1, round(hold_s / step_s))
    # survived: data flowed after the outage the event caused (what was in flight when it
    # struck does not count) -- or there was no outage at all
    outage, run, flowed = 0.0, 0.0, False
    for _, g in after:
        if g <= 0:
            run += step_s
            outage = max(outage, run)
        else:
            run = 0.0
            if outage:
                flowed = True
                break  # the first outage after the event is the one it caused
    flowed = flowed or (outage == 0 and bool(after))

    def since_event(at: float | None) -> float | None:
        # the recovery began at the start of the first interval of the run that held
        # never before the event: the interval the run began in may have started just before it
        return None if at is None else max(0.0, round(at - need * step_s - event_s, 3))

    end = since_event(_recovered_at(after, threshold * level, need)) if level else None
    until = event_s + end + step_s if end is not None else (after[-1][0] if after else event_s)
    delivered = sum(g * step_s / 8 for t, g in after if t <= until)
    remaining = None
    if level and remaining_mbps is not None and remaining_mbps > 0:
        remaining = since_event(_recovered_at(after, threshold * min(level, remaining_mbps), need))
    return Recovery(level, round(outage, 3), end, round(delivered, 4), flowed, remaining)


#: Words of an error that say the connection was torn down by its peer or the network (iperf3:
#: "Connection reset by peer"; "Connection refused" when the server's end was gone).
RESET_WORDS = ("reset", "refused")
#: What the runner reports for a client abandoned at its time limit (mptcplab.traffic: "<tool>
#: client did not finish within N s"): the connection was still open, waiting -- a stall.
TIMED_OUT = "did not finish"


def fate(r: Recovery, error: str | None) -> str:
    """What became of the connection after a cut, for the issue's survived / stalled / reset:

    - ``reset``: the test's error says the connection was reset (or refused) -- it ended;
    - ``survived``: data flowed again after the outage the cut caused (or there was none);
    - ``stalled``: nothing after the cut to the end -- with no error, with the client abandoned
      at its time limit (it never finished: still waiting on the dead path), or with another error
      after the flow had delivered before the cut (it ended in that silence);
    - ``failed``: an error other than a reset or a time limit, and nothing delivered before the
      cut either: the test never ran properly, so the cut cannot be blamed (a server that did not
      start, a client that printed nothing)."""
    said = (error or "").lower()
    if any(w in said for w in RESET_WORDS):
        return "reset"
    if r.survived:
        return "survived"
    if error and TIMED_OUT not in said and not r.before_mbps:
        return "failed"
    return "stalled"


def per_event(events: Sequence[dict[str, Any]], series: Sequence[tuple[float, float]],
              pm_events: Sequence[dict[str, Any]] = (), remaining_mbps: dict[str, float] | None = None,
              error: str | None = None, capacity_mbps: float | None = None) -> list[dict[str, Any]]:
    """The events' rows (events.csv), each disruptive one that was applied (down, address-del,
    endpoint-del, backup) with its aftermath on ``series`` until the next disruptive one (or the
    end), measured against the level before the first: the Recovery fields, its fate (``survived``
    then says whether that is survived: a reset ends a connection even after data flowed again),
    and the subflows the client's path manager saw close and establish meanwhile. ``error``: the
    test's, which only the last cut's fate reads. ``remaining_mbps``: per
    target, what the network offers without it; ``capacity_mbps``: what it offers whole (the level
    before is capped there: 0.1 s intervals burst above the link rate when a hole in the received
    data is filled). Other rows come back unchanged."""
    from .events import DISRUPTIVE

    def cut(e: dict[str, Any]) -> bool:  # applied, and without an error: a failed event cut nothing
        return e["action"] in DISRUPTIVE and e.get("applied_s") is not None and not e.get("error")

    cuts = [e["applied_s"] for e in events if cut(e)]
    level = after_event(series, cuts[0]).before_mbps if cuts else None
    if level is not None and capacity_mbps:
        level = min(level, capacity_mbps)
    out = []
    last = cuts[-1] if cuts else None
    for e in events:
        at = e.get("applied_s")
        if not cut(e):
            out.append(dict(e))
            continue
        until = min((c for c in cuts if c > at), default=float("inf"))
        seen = [p["event"] for p in pm_events if at <= p["t"] < until]
        target = e.get("interface") or e.get("link") or ""
        # each event until the next one: a recovery the next cut interrupts did not happen
        r = after_event([(t, g) for t, g in series if t <= until], at,
                        remaining_mbps=(remaining_mbps or {}).get(target), level_mbps=level)
        # the test's error is how it ended: the last cut's aftermath; one before it was
        # followed by another cut, whatever the error says
        f = fate(r, error if at == last else None)
        out.append({**e, **r.to_dict(), "survived": f == "survived", "fate": f,
                    "subflows_closed": seen.count("sf_closed"), "subflows_established": seen.count("sf_established")})
    return out


def summary_of(events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The summary's view of a test's events (per_event rows): the first cut's fields (event_s,
    event_link, before_mbps, outage_s, recovery_s, recovery_remaining_s, delivered_mb); whether
    the connection survived them all (``survived`` and ``fate`` of the last cut); and over every
    cut, how many there were and their mean and longest outage. Empty without a cut."""
    cuts = [e for e in events if "outage_s" in e]
    if not cuts:
        return {}
    first, last = cuts[0], cuts[-1]
    outages = [e["outage_s"] for e in cuts]
    return {"event_s": first["applied_s"], "event_link": first.get("link") or first.get("interface"),
            **{k: first[k] for k in ("before_mbps", "outage_s", "recovery_s", "recovery_remaining_s", "delivered_mb")},
            "survived": last["survived"], "fate": last["fate"], "cuts": len(cuts),
            "outage_mean_s": round(sum(outages) / len(outages), 3), "outage_max_s": max(outages)}


def total_series(rows: Sequence[dict[str, Any]], step_s: float = 0.1) -> list[tuple[float, float]]:
    """Several flows' goodput rows (flow, t, goodput_mbps) as one (t, Mbit/s) series: each point
    added to the ``step_s`` interval its end falls in (flows launch a few ms apart)."""
    bins: dict[int, float] = {}
    for r in rows:
        k = round(r["t"] / step_s)
        bins[k] = bins.get(k, 0.0) + (r["goodput_mbps"] or 0.0)
    return [(round(k * step_s, 6), g) for k, g in sorted(bins.items())]


# --------------------------------------------------------------------------- subflows around a cut


@dataclass(frozen=True)
class SubflowAfterCut:
    """One subflow of an MPTCP connection around a cut, from the client's ss samples: the bytes
    acked on it once its sender has had time to notice the cut, and when the path manager said it
    closed. The subflow on a cut path either closes or goes silent; the others carry on."""

    local: str               # address:port, as ss reports it (and subflows.csv)
    remote: str
    acked_after: float       # bytes acked after cut_s + settle_s (until until_s)
    closed_s: float | None   # sf_closed in pm-events after the cut (test clock); None: not seen

    def silent(self, slack_bytes: float) -> bool:
        """Closed, or fewer than ``slack_bytes`` acked after the settling time: what a subflow
        whose path is gone does (an ACK already in flight may still land)."""
        return self.closed_s is not None or self.acked_after < slack_bytes


def cell_number(v: Any) -> float | None:
    """A CSV cell as a number, None when blank: csv gives text, pandas floats with NaN for a
    blank (mptcplab.outcomes reads summary rows with it too)."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if x != x else x


def _given(v: Any) -> bool:
    """A CSV cell holds something: not None, blank text or pandas' NaN."""
    return v is not None and v == v and str(v).strip() != ""


def _address(addr: Any, port: Any = None) -> tuple[str, int | None]:
    """('10.0.1.1', 48134) from '10.0.1.1:48134' (an ss endpoint; '[fd00::1]:80' too), or from an
    address and a port apart (pm-events: saddr4 and sport, the port text or a float)."""
    text = str(addr)
    if port is None:
        text, _, port = text.rpartition(":")
    p = cell_number(port)
    return text.strip("[]"), None if p is None else int(p)


def _closed_at(pm_events: Sequence[dict[str, Any]], token: str, local: str, remote: str, after_s: float,
               until_s: float) -> float | None:
    """When the path manager first reported this subflow of ``token`` closed, after the cut."""
    me = (_address(local), _address(remote))
    for p in sorted(pm_events, key=lambda p: cell_number(p.get("t")) or 0.0):
        t = cell_number(p.get("t"))
        if p.get("event") != "sf_closed" or str(p.get("token")) != token or t is None or not after_s <= t <= until_s:
            continue
        saddr = next((p[k] for k in ("saddr4", "saddr6") if _given(p.get(k))), None)
        daddr = next((p[k] for k in ("daddr4", "daddr6") if _given(p.get(k))), None)
        if (_address(saddr, p.get("sport")), _address(daddr, p.get("dport"))) == me:
            return t
    return None


def subflows_after_cut(samples: Sequence[dict[str, Any]], token: str, cut_s: float, *,
                       pm_events: Sequence[dict[str, Any]] = (), settle_s: float = 1.0,
                       until_s: float = float("inf")) -> list[SubflowAfterCut]:
    """Each subflow of connection ``token`` (the client's ss samples: kind tcp, its token,
    cumulative bytes_acked, t on the sampler's clock, which starts a few ms before the test's)
    in the order first seen: the bytes acked between its last sample at ``cut_s + settle_s`` (an
    RTO or two: what was in flight had time to be acked or given up) and ``until_s`` (the end,
    or when the path came back), and whether ``pm_events`` saw it close meanwhile. Rows as
    csv.DictReader or pandas give them."""
    seen: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for s in samples:
        t, acked = cell_number(s.get("t")), cell_number(s.get("bytes_acked"))
        if s.get("kind") != "tcp" or str(s.get("token")) != token or t is None or acked is None or t > until_s:
            continue
        seen.setdefault((str(s["local"]), str(s["remote"])), []).append((t, acked))
    out = []
    for (local, remote), points in seen.items():
        before = [a for t, a in points if t <= cut_s + settle_s]
        grown = max(a for _, a in points) - (max(before) if before else 0.0)
        out.append(SubflowAfterCut(local, remote, max(0.0, grown),
                                   _closed_at(pm_events, token, local, remote, cut_s, until_s)))
    return out

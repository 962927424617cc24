"""The link model: one direction of an emulated link, in the units the spec uses. Pure.

A link has two directions (``up``: endpoints[0] -> endpoints[1], ``down``: the reverse), each a
:class:`Direction`: rate in Mbit/s, delay and jitter in ms, loss in percent, a drop-tail queue in
packets or bytes, Gilbert-Elliott burst loss, and whether jitter may reorder frames. Everything
that reasons about a link -- the plan, the backend choice, the tc argument lists, the emulator's
settings, the self-check's expectations -- reads this one model, so they cannot disagree.

Nothing here touches the kernel: the caller says whether the kernel has netem.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

#: tc handles of the layout (see :func:`tc_commands`): netem root (delay, jitter, loss) -> htb
#: (rate) -> pfifo (the queue); without delay, jitter and loss the htb is the root.
NETEM_HANDLE = "1:"
NETEM_CLASS = "1:1"
HTB_HANDLE = "5:"
CLASS_ID = "5:1"
LEAF_HANDLE = "10:"
#: The delay line must never drop: netem's limit is the queue plus every frame that can arrive
#: during delay + jitter at DELAY_LINE_FPS (64-byte frames at 10 Gbit/s, ~19.5 M frames/s, far
#: above what a veth without offloads carries), at least NETEM_MIN_LIMIT (netem's default).
DELAY_LINE_FPS = 10e9 / (8 * 64)
NETEM_MIN_LIMIT = 1000
NETEM_MAX_LIMIT = 2**31 - 1
#: Backends a link can get: tc qdiscs, the user-space emulator, or a bare veth pair.
BACKENDS = ("netem", "userspace", "plain")
SHAPERS = ("auto", "netem", "userspace")

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


class LinkEmulationError(RuntimeError):
    """The link cannot be what was asked for on this machine."""


def parse_ms(value: Any) -> float:
    """``10``, ``10.5``, ``"10ms"``, ``"500us"`` or ``"1s"`` -> milliseconds (None -> 0)."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time; write a number of ms or e.g. '10ms', '1s'")
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(us|ms|s)?\s*", str(value))
    if not m:
        raise ValueError(f"{value!r} is not a time; write a number of ms or e.g. '10ms', '1s'")
    return float(m.group(1)) * _UNITS_MS[m.group(2) or "ms"]


@dataclass(frozen=True)
class BurstLoss:
    """Gilbert-Elliott burst loss (netem's ``loss gemodel``), all in percent per frame."""

    p: float            # good -> bad
    r: float = 100.0    # bad -> good
    loss_bad: float = 100.0
    loss_good: float = 0.0

    def mean_loss(self) -> float:
        """Long-run fraction of frames lost (stationary share of the bad state)."""
        p, r = self.p / 100, self.r / 100
        bad = p / (p + r) if p + r else 0.0
        return bad * self.loss_bad / 100 + (1 - bad) * self.loss_good / 100


@dataclass(frozen=True)
class Direction:
    """One direction of a link."""

    bw: float | None = None          # Mbit/s; None = unshaped
    delay: float = 0.0               # ms, one way
    jitter: float = 0.0              # ms, uniform +-jitter
    loss: float = 0.0                # percent, random
    queue: int | None = None         # drop-tail limit, packets
    queue_bytes: int | None = None   # drop-tail limit, bytes (user-space emulator only)
    burst_loss: BurstLoss | None = None
    reorder: bool = False            # may jitter reorder frames?
    # a middlebox on this direction (the user-space emulator rewrites the segments)
    strip_mptcp: str = "none"        # none | all | syn | join | add-addr: MPTCP options made NOPs
    drop_mptcp_syn: bool = False     # SYNs carrying an MPTCP option dropped
    clamp_mss: int | None = None     # SYNs' MSS option lowered to this (bytes)
    rewrite_every: int | None = None  # one payload byte of every N-th data segment changed, checksum fixed
    rewrite_after: int = 0           # ... after this many data segments
    rewrite_max: int | None = None   # ... at most this many per connection (counted from its SYN)
    split_at: int | None = None      # data segments longer than this (payload bytes) split in two
    randomize_isn: bool = False      # connections whose SYN passes here get a random sequence number offset
    nat: str | None = None           # source NAT to this IPv4 address (connections whose SYN passes here)
    coalesce_up_to: int | None = None  # contiguous data segments merged up to this payload (bytes)
    coalesce_hold: float = 1.0       # ms a segment is held at most, waiting for the next

    # ------------------------------------------------------------------ what it needs

    def middlebox(self) -> bool:
        """Does a middlebox act on this direction?"""
        return (self.strip_mptcp != "none" or self.drop_mptcp_syn or bool(self.clamp_mss)
                or bool(self.rewrite_every) or bool(self.split_at) or self.randomize_isn or bool(self.nat)
                or bool(self.coalesce_up_to))

    def needs_netem(self) -> bool:
        """Delay, jitter or loss: htb alone cannot do it."""
        return bool(self.delay or self.jitter or self.loss or self.burst_loss)

    def shaped(self) -> bool:
        return bool(self.bw or self.queue or self.queue_bytes or self.needs_netem() or self.middlebox())

    def netem_cannot(self) -> str | None:
        """Why netem cannot give this direction exactly, or None."""
        if self.middlebox():
            return "a middlebox (only the user-space emulator rewrites segments)"
        if self.queue_bytes:
            return "a queue limit in bytes"
        if self.jitter and not self.reorder:
            return "jitter without reordering (netem reorders jittered frames)"
        return None

    def tc_layout(self) -> tuple[bool, bool, bool]:
        """(netem?, htb?, pfifo?): two directions with one layout change in place."""
        # a queue without a rate never fills (nothing waits): a pfifo root keeps what is asked
        # visible where no netem holds the limit
        return self.needs_netem(), bool(self.bw), bool(self.queue and (self.bw or not self.needs_netem()))

    def netem_limit(self) -> int:
        """netem's ``limit`` (frames): netem counts every frame it holds -- those in the delay
        line and those in its child (the queue) -- so it is sized to never be the one that drops."""
        line = math.ceil(DELAY_LINE_FPS * (self.delay + self.jitter) / 1000)
        return min(NETEM_MAX_LIMIT, (self.queue or 0) + max(NETEM_MIN_LIMIT, line))

    def loss_fraction(self) -> float:
        return self.burst_loss.mean_loss() if self.burst_loss else self.loss / 100

    def mean_delay_ms(self) -> float:
        """Mean one-way delay the emulators give: uniform jitter around ``delay``, a frame never
        leaves before it arrived (negative draws count as 0), so jitter larger than the delay
        lifts the mean above ``delay``: E[max(0, d + U(-j, j))]."""
        d, j = self.delay, self.jitter
        if not j or j <= d:
            return d
        return (d + j) ** 2 / (4 * j)

    def delay_variance_ms2(self) -> float:
        """Variance of that delay (ms^2): j^2/3 for uniform jitter within the delay, less where
        the clamp at 0 folds the lower part."""
        d, j = self.delay, self.jitter
        if not j:
            return 0.0
        low = max(0.0, d - j)
        second = ((d + j) ** 3 - low ** 3) / (6 * j)
        return max(0.0, second - self.mean_delay_ms() ** 2)

    def serialization_ms(self, frame_bytes: int) -> float:
        return frame_bytes * 8 / (self.bw * 1e6) * 1e3 if self.bw else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["burst_loss"] = None if self.burst_loss is None else vars(self.burst_loss).copy()
        return out


def _burst(value: Any) -> BurstLoss | None:
    if value is None or isinstance(value, BurstLoss):
        return value
    v = dict(value)
    return BurstLoss(p=float(v["p"]), r=float(v.get("r", 100.0)), loss_bad=float(v.get("loss_bad", 100.0)),
                     loss_good=float(v.get("loss_good", 0.0)))


def direction(params: Mapping[str, Any]) -> Direction:
    """TCLink-style keyword arguments (``bw``, ``delay='10ms'``, ``loss``, ``max_queue_size`` or
    ``queue``, ...) -> one direction's model."""
    queue = params.get("queue") or params.get("max_queue_size")
    return Direction(
        bw=float(params["bw"]) if params.get("bw") else None,
        delay=parse_ms(params.get("delay")),
        jitter=parse_ms(params.get("jitter")),
        loss=float(params.get("loss") or 0.0),
        queue=int(queue) if queue else None,
        queue_bytes=int(params["queue_bytes"]) if params.get("queue_bytes") else None,
        burst_loss=_burst(params.get("burst_loss")),
        reorder=bool(params.get("reorder", False)),
        **_middlebox(params.get("middlebox")),
    )


def _middlebox(value: Any) -> dict[str, Any]:
    """A spec's (or TCLink-style) ``middlebox`` mapping (the spec's names) -> Direction's fields."""
    m = dict(value or {})
    return {"strip_mptcp": str(m.get("strip_mptcp") or "none"), "drop_mptcp_syn": bool(m.get("drop_mptcp_syn")),
            "clamp_mss": int(m["clamp_mss"]) if m.get("clamp_mss") else None,
            "rewrite_every": int(m["rewrite_payload_every"]) if m.get("rewrite_payload_every") else None,
            "rewrite_after": int(m.get("rewrite_after") or 0),
            "rewrite_max": int(m["rewrite_max"]) if m.get("rewrite_max") else None,
            "split_at": int(m["split_at"]) if m.get("split_at") else None,
            "randomize_isn": bool(m.get("randomize_isn")),
            "nat": str(m["nat"]) if m.get("nat") else None,
            "coalesce_up_to": int(m["coalesce_up_to"]) if m.get("coalesce_up_to") else None,
            "coalesce_hold": parse_ms(m["coalesce_hold"]) if m.get("coalesce_hold") else 1.0}


def directions(params: Mapping[str, Any], up: Mapping[str, Any] | None = None,
               down: Mapping[str, Any] | None = None) -> tuple[Direction, Direction]:
    """(up, down): the link's own parameters, then each direction's overrides (None = keep)."""
    base = dict(params)
    out = []
    for over in (up, down):
        merged = dict(base)
        merged.update({k: v for k, v in (over or {}).items() if v is not None})
        out.append(direction(merged))
    return out[0], out[1]


def changed(d: Direction, **values: Any) -> Direction:
    """``d`` with some fields replaced (values in spec units; None keeps the field)."""
    updates = {k: (_burst(v) if k == "burst_loss" else v) for k, v in values.items() if v is not None}
    if "delay" in updates:
        updates["delay"] = parse_ms(updates["delay"])
    if "jitter" in updates:
        updates["jitter"] = parse_ms(updates["jitter"])
    return replace(d, **updates)


# --------------------------------------------------------------------------- backends


def choose_backend(requested: str, up: Direction, down: Direction, netem: bool) -> str:
    """'netem', 'userspace' or 'plain' (nothing to emulate: a bare veth pair) for one link, or
    LinkEmulationError when asked for the impossible."""
    return backend_and_reason(requested, up, down, netem)[0]


def backend_and_reason(requested: str, up: Direction, down: Direction, netem: bool) -> tuple[str, str]:
    """:func:`choose_backend`'s answer and why, in words (``mptcplab check SPEC`` prints it)."""
    if requested not in SHAPERS:
        raise LinkEmulationError(f"unknown shaper {requested!r} ({', '.join(SHAPERS)})")
    if requested == "auto" and not (up.shaped() or down.shaped()):
        return "plain", "nothing to emulate: a bare veth pair"
    if requested == "userspace":
        return "userspace", "shaper userspace asked for"
    reasons = [r for r in (up.netem_cannot(), down.netem_cannot()) if r]
    wants_netem = up.needs_netem() or down.needs_netem()
    if requested == "netem":
        if wants_netem and not netem:
            raise LinkEmulationError("shaper netem: this kernel has no netem qdisc")
        if reasons:
            raise LinkEmulationError(f"shaper netem cannot emulate {reasons[0]}; use shaper userspace")
        return "netem", "shaper netem asked for"
    if reasons:
        return "userspace", f"netem cannot emulate {reasons[0]}"
    # A link that needs only rate and queue is htb + pfifo in the kernel, netem or not: far less
    # CPU than a user-space process per link (what lets a FatTree's 48 links run on two cores).
    if not wants_netem:
        return "netem", "rate and queue only: htb + pfifo in the kernel (no netem qdisc needed)"
    if netem:
        return "netem", "delay, jitter or loss, and this kernel has netem (netem -> htb -> pfifo)"
    return "userspace", "delay, jitter or loss, and this kernel has no netem qdisc"


def tc_commands(dev: str, d: Direction, netem: bool = True, verb: str = "add") -> list[list[str]]:
    """The tc argument lists that shape one interface's egress.

    Layout, in the order a frame meets it (the user-space emulator's model, with delay and the
    queue apart)::

        netem root 1: (loss, delay, jitter; limit: never drops)        if delay, jitter or loss
          -> htb 5: class 5:1 (rate)                                   if a rate
               -> pfifo 10: (limit = queue: the frames waiting for the rate)  if a queue

    Without delay, jitter and loss the htb is the root (no netem needed). netem's delay comes
    before the rate here, the emulator's after it: for a constant delay the departure times are
    the same (a FIFO at a fixed rate commutes with a fixed delay), and the queue sees the same
    arrivals shifted by the delay, so it fills and drops at the same depth. netem counts the
    frames in its child against its own ``limit``, so the limit is the queue plus every frame the
    delay line can hold (:meth:`Direction.netem_limit`): only the pfifo drops.

    With ``verb='change'`` each qdisc and the class are changed in place (same layout).
    """
    if d.needs_netem() and not netem:
        what = ", ".join(f"{k} {v:g}{u}" for k, v, u in (("delay", d.delay, " ms"), ("jitter", d.jitter, " ms"),
                                                          ("loss", d.loss, "%")) if v) or "burst loss"
        raise LinkEmulationError(
            f"{dev}: {what} needs the netem qdisc, which this kernel does not have "
            "(CONFIG_NET_SCH_NETEM); the link would run without it. Use the user-space shaper "
            "(shaper: userspace) or a kernel with netem.")
    if d.queue_bytes:
        raise LinkEmulationError(f"{dev}: a queue limit in bytes needs the user-space shaper")
    cmds: list[list[str]] = []
    parent = ["root"]
    if d.needs_netem():
        cmd = ["tc", "qdisc", verb, "dev", dev, "root", "handle", NETEM_HANDLE, "netem",
               "limit", str(d.netem_limit())]
        if d.delay or d.jitter:
            cmd += ["delay", f"{d.delay * 1000:.0f}us"]
            if d.jitter:
                cmd += [f"{d.jitter * 1000:.0f}us"]
        if d.burst_loss:
            b = d.burst_loss
            cmd += ["loss", "gemodel", f"{b.p:g}%", f"{b.r:g}%", f"{b.loss_bad:g}%", f"{b.loss_good:g}%"]
        elif d.loss:
            cmd += ["loss", "random", f"{d.loss:g}%"]
        cmds.append(cmd)
        parent = ["parent", NETEM_CLASS]
    if d.bw:
        rate_bps = d.bw * 1e6
        burst = htb_burst_bytes(d.bw)
        quantum = int(min(max(1514, rate_bps / 8 / 10), 200_000))
        if verb == "add":
            cmds.append(["tc", "qdisc", "add", "dev", dev, *parent, "handle", HTB_HANDLE, "htb", "default", "1"])
        cmds.append(["tc", "class", verb, "dev", dev, "parent", HTB_HANDLE, "classid", CLASS_ID, "htb",
                     "rate", f"{rate_bps:.0f}bit", "ceil", f"{rate_bps:.0f}bit",
                     "burst", str(burst), "cburst", str(burst), "quantum", str(quantum)])
        parent = ["parent", CLASS_ID]
    if d.queue and d.tc_layout()[2]:
        cmds.append(["tc", "qdisc", verb, "dev", dev, *parent, "handle", LEAF_HANDLE, "pfifo",
                     "limit", str(d.queue)])
    return cmds


def shaping_problems(dev: str, d: Direction, qdiscs: list[dict[str, Any]]) -> list[str]:
    """What differs between the layout :func:`tc_commands` gives ``d`` and the qdiscs the kernel
    reports (``tc -j qdisc show``'s list)."""
    by_kind: dict[str, dict[str, Any]] = {}
    for q in qdiscs:
        by_kind.setdefault(str(q.get("kind")), q)
    netem, htb, pfifo = d.tc_layout()
    problems = []
    if htb and "htb" not in by_kind:
        problems.append(f"{dev}: asked for {d.bw:g} Mbit/s but no htb qdisc is installed")
    if netem:
        if "netem" not in by_kind:
            problems.append(f"{dev}: asked for delay/jitter/loss but no netem qdisc is installed")
        else:
            limit = (by_kind["netem"].get("options") or {}).get("limit")
            if limit is not None and int(limit) < d.netem_limit():
                problems.append(f"{dev}: netem's limit is {limit} frames, less than the queue plus the delay "
                                f"line ({d.netem_limit()}): netem would drop what the queue should hold")
    if pfifo:
        limit = (by_kind.get("pfifo", {}).get("options") or {}).get("limit")
        if "pfifo" not in by_kind:
            problems.append(f"{dev}: asked for a {d.queue}-packet queue but no pfifo qdisc is installed")
        elif limit is not None and int(limit) != d.queue:
            problems.append(f"{dev}: asked for a {d.queue}-packet queue but the pfifo holds {limit}")
    return problems


def htb_burst_bytes(mbps: float) -> int:
    """htb's bucket: 2 ms at the rate, at least two full frames. htb releases up to this many
    bytes back to back after an idle spell (the user-space emulator none), so a burst arriving at
    an idle link queues that much later; in steady overload the bucket is empty and the queue is
    exact. Smaller buckets cost the rate at high rates (a timer per frame)."""
    return max(3028, int(mbps * 1e6 / 8 * 0.002))


def emulator_settings(d: Direction) -> dict[str, str]:
    """Key=value pairs of the user-space emulator's ``set`` command (linkemu.c's units: bit/s,
    microseconds, probabilities; Gilbert-Elliott as netem's p, r, 1-h, 1-k)."""
    b = d.burst_loss
    return {
        "rate": f"{(d.bw or 0) * 1e6:.0f}",
        "delay_us": f"{d.delay * 1000:.3f}",
        "jitter_us": f"{d.jitter * 1000:.3f}",
        "loss": f"{d.loss / 100:.9g}",
        "limit_pkts": str(d.queue or 0),
        "limit_bytes": str(d.queue_bytes or 0),
        "reorder": "1" if d.reorder else "0",
        "ge_p": f"{(b.p if b else 0.0) / 100:.9g}",
        "ge_r": f"{(b.r if b else 0.0) / 100:.9g}",
        "ge_h": f"{1 - (b.loss_bad if b else 100.0) / 100:.9g}",
        "ge_k": f"{1 - (b.loss_good if b else 0.0) / 100:.9g}",
        "mb_strip": d.strip_mptcp.replace("-", "_"),
        "mb_drop_syn": "1" if d.drop_mptcp_syn else "0",
        "mb_mss": str(d.clamp_mss or 0),
        "mb_rewrite": str(d.rewrite_every or 0),
        "mb_rewrite_after": str(d.rewrite_after or 0),
        "mb_split": str(d.split_at or 0),
        "mb_isn": "1" if d.randomize_isn else "0",
        "mb_nat": d.nat or "off",
        "mb_coalesce": str(d.coalesce_up_to or 0),
        "mb_coalesce_hold_us": str(max(1, round(d.coalesce_hold * 1000))),
        "mb_rewrite_max": str(d.rewrite_max or 0),
    }

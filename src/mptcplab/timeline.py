"""Carrying out a test's events on the running network, on the test's clock.

A thread sleeps until each step's instant (CLOCK_MONOTONIC, the clock the flows start on) and
applies it -- to a link through its EmuLink (set_down / set_params), to a host interface over
netlink (mptcplab.interfaces), never a shell -- and records when it really applied it. At the
end of the test everything it touched is put back as the plan has it (links up with their
planned parameters; interfaces up with their address, routes and endpoint), so the next test
starts on the network the spec describes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .events import Step


@dataclass
class Applied:
    step: Step
    applied_s: float | None = None  # on the test's clock, when applying began
    took_ms: float | None = None    # how long applying took (a netlink/ip call, an emulator command)
    error: str | None = None

    def row(self) -> dict[str, Any]:
        s = self.step
        return {"event": s.origin, "link": s.link, "interface": s.interface, "action": s.action,
                "params": s.params or None,
                "scheduled_s": s.at_s, "applied_s": None if self.applied_s is None else round(self.applied_s, 6),
                "offset_ms": None if self.applied_s is None else round((self.applied_s - s.at_s) * 1e3, 3),
                "took_ms": self.took_ms, "error": self.error}


@dataclass
class Timeline:
    """The steps of one test, applied from ``start(t0)`` until ``stop()``; ``applied`` in order."""

    network: Any
    steps: list[Step]
    applied: list[Applied] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._touched: set[str] = set()
        self._touched_interfaces: set[str] = set()

    def start(self, t0: float) -> "Timeline":
        """Begin counting from ``t0`` (time.monotonic()); nothing to do without steps."""
        self._t0 = t0
        if self.steps:
            self._thread = threading.Thread(target=self._run, name="events", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        for step in self.steps:
            wait = self._t0 + step.at_s - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return  # the test ended first: later steps are not applied (and not recorded)
            record = Applied(step)
            try:
                record.applied_s = time.monotonic() - self._t0
                self._apply(step)
                record.took_ms = round((time.monotonic() - self._t0 - record.applied_s) * 1e3, 3)
            except Exception as e:  # noqa: BLE001  (recorded; the test goes on)
                record.error = f"{type(e).__name__}: {e}"
            self.applied.append(record)

    def _apply(self, step: Step) -> None:
        if step.interface is not None:
            from . import interfaces  # pyroute2: only when a test has interface events

            self._touched_interfaces.add(step.interface)
            interfaces.apply(self.network, step.interface, step.action)
            return
        link = self.network.link(step.link)
        self._touched.add(step.link)
        if step.action == "down":
            link.set_down(True)
        elif step.action == "up":
            link.set_down(False)
        else:
            link.set_params(**step.params)

    def stop(self) -> list[dict[str, Any]]:
        """Stop applying, put every touched link back as planned, and return the events' rows."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        failed = []
        for name in sorted(self._touched):  # each on its own: one that fails does not keep the others
            try:
                planned = next(l for l in self.network.plan.links if l.name == name)
                link = self.network.link(name)
                link.set_down(False)
                if (link.up, link.down) != (planned.up, planned.down):
                    link.set_directions(planned.up, planned.down)
            except Exception as e:  # noqa: BLE001  (raised below, after the others)
                failed.append(f"link {name}: {type(e).__name__}: {e}")
        for ifname in sorted(self._touched_interfaces):
            from . import interfaces

            try:
                interfaces.restore(self.network, ifname)
            except Exception as e:  # noqa: BLE001
                failed.append(f"interface {ifname}: {type(e).__name__}: {e}")
        if failed:
            raise RuntimeError("the network could not be put back after the test's events: " + "; ".join(failed))
        return [a.row() for a in self.applied]

"""A point runner for distributed tests without networks (mptcplab.distributed.PointTask.runner):
it takes a network slot like the real one, sleeps, and returns rows and a raw file."""

from __future__ import annotations

import os
import time

from mptcplab.distributed import PointResult
from mptcplab.ids import new_run_id
from mptcplab.lock import NetSlot
from mptcplab.runner import PointRows


def fake_point(task) -> PointResult:
    pp = task.pp
    with NetSlot().acquire(task.run_id) as slot:
        netid = new_run_id()
        slot.record(netid)  # as the real one does before it builds (nothing is built here)
        started = time.time()
        time.sleep(float(os.environ.get("MPTCPLAB_FAKE_SLEEP", "0.5")))
        slot.forget([netid])
        out = PointRows()
        for test in pp.plan.tests:
            label = f"{pp.point.id}-{test.label}"
            out.add({"experiment": pp.exp.name, "test": label, "variant": test.variant, "protocol": test.protocol,
                     "repetition": test.repetition, "goodput_mbps": 1.0, "error": None, "started": started},
                    [{"experiment": pp.exp.name, "test": label, "subflow": 0, "bytes": 1}])
        return PointResult(point_id=pp.point.id, rows=out.at_point(pp),
                           files={f"raw/{pp.point.id}-fake-client.json": b"{}\n"},
                           where={"slot": slot.slot, "pid": os.getpid()}, elapsed_s=time.time() - started)

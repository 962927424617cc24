"""The known drop count of the queue-filling flood (mptcplab.testbed) and bench/backends.py's
table of it (pure: nothing is built)."""

from __future__ import annotations

import importlib.util

import pytest

from helpers import REPO
from mptcplab.testbed import UdpFlood, expected_queue_drops


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_backends", REPO / "bench" / "backends.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("bw, measured", [(5, (1277, 1280, 1279, 1276, 1279, 1280)),
                                          (15, (4041, 4035, 4035))])
def test_the_expected_drops_are_the_ones_both_backends_measured(bw, measured):
    """kernel-patches/README.md's runs (netem in UML, the user-space emulator on the host and in
    UML): 2 x rate for 3 s of 1400-byte datagrams into 100 frames of queue. The expectation is
    within a few frames of each: iperf3's -b counts the payload only (counting the frames' 1442
    bytes would expect 1200 at 5 Mbit/s)."""
    expected = expected_queue_drops(UdpFlood(2 * bw), bw, 100)
    assert all(abs(m - expected) <= 7 for m in measured), (expected, measured)


def test_the_flood_and_its_frames():
    flood = UdpFlood(20)
    assert flood.iperf3_args() == ["-u", "-b", "20M", "-l", "1400", "-t", "3"]
    assert flood.frame_bytes() == 1442
    assert flood.datagrams() == pytest.approx(20e6 * 3 / 8 / 1400)
    # 10 Mbit/s with 200 ms: ~173 full frames in the delay line, more than the queue of 100
    assert 10e6 * 0.2 / 8 / flood.frame_bytes() == pytest.approx(173.4, abs=0.1)
    assert expected_queue_drops(flood, 10, 100) == pytest.approx(5357.14 - 2600.55 - 100, abs=0.1)
    # the count the receiver saw instead of iperf3's target
    assert expected_queue_drops(flood, 10, 100, sent=5000) == pytest.approx(5000 - 2600.55 - 100, abs=0.1)


def test_a_flood_that_never_fills_the_queue_drops_nothing():
    assert expected_queue_drops(UdpFlood(4), 5, 100) == 0
    # twice the rate for too short a time to fill 1000 frames
    assert expected_queue_drops(UdpFlood(10, seconds=1), 5, 1000) == 0


def test_the_bench_table_has_the_expected_drops_and_their_ratio():
    bench = load_bench()
    names = [c["name"] for c in bench.cases(15)]
    assert names == ["5M-40ms-q100", "10M-200ms-q100", "15M-20ms-q100"]
    case = bench.cases(15)[1]
    figures = bench.drop_figures(case, 2650)
    assert figures["expected_drops"] == pytest.approx(2656.6, abs=0.1)
    assert figures["drops_ratio"] == pytest.approx(2650 / 2656.6, abs=1e-4)
    row = {"case": case["name"], "shaper": "netem", "where": "uml", "rtt_ratio": 1.01, "rate_ratio": 0.99,
           "queue_ratio": 1.0, "deepest_queue": 100, "queue_drops": 2650, "drops_accounted": 1.0,
           "netem_own_drops": 0, **figures}
    lines = bench.table([row, {"case": "loss-10%", "shaper": "netem", "where": "uml", "loss_ratio": 1.07}]).splitlines()
    assert lines[0].split() == ["case", "backend", "where", "rtt", "rate", "queue", "deepest", "drops",
                                "expected", "drops/exp", "accounted", "netem", "own", "loss"]
    assert lines[1].split() == ["10M-200ms-q100", "netem", "uml", "1.010", "0.990", "1.00", "100", "2650",
                                "2657", "0.998", "1.00", "0", "-"]
    assert lines[2].split()[-1] == "1.07" and lines[2].split()[7:9] == ["-", "-"]

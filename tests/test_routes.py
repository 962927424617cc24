"""Routes through a plan and what the spec implies for them: RTT, loss, time limits, and how many
pings the self-check needs. Pure."""

from pathlib import Path

import pytest
import yaml

from mptcplab.plan import make_plan
from mptcplab.routes import MAX_TEST_SECONDS, expected_seconds, routes, time_limit
from mptcplab.routes import MAX_PINGS, min_answers, pings_needed
from mptcplab.spec import load_spec, parse_spec

REPO = Path(__file__).resolve().parent.parent


def plan_with(**link_params):
    topo = yaml.safe_load((REPO / "topologies/dual-path.yaml").read_text())
    for link in topo["links"]:
        link.update(link_params)
    return make_plan(parse_spec({"name": "r", "topology": topo, "traffic": {"client": "h1", "server": "h2"}}))


def test_dual_path_routes_and_rtts():
    rs = routes(make_plan(load_spec(REPO / "experiments/dual-path.yaml")))
    assert [r.name for r in rs] == ["h1-eth0->h2-eth0", "h1-eth1->h2-eth1"]
    # 10 and 40 ms one way (see topologies/dual-path.yaml), plus a ping frame at 5 Mbit/s per link
    assert [round(r.expected_rtt_ms()) for r in rs] == [21, 81]
    assert [r.bottleneck_mbps() for r in rs] == [5, 5]


def test_jitter_larger_than_delay_is_modelled_as_the_emulator_clamps():
    r = routes(plan_with(bw=None, delay=1, jitter=9, reorder=True))[0]
    # each of 4 crossings: E[max(0, 1 + U(-9, 9))] = 100 / 36 ms, not the 1 ms written
    assert r.expected_rtt_ms() == pytest.approx(4 * 100 / 36, abs=0.01)
    assert r.max_rtt_ms() == pytest.approx(40)


def test_byte_transfers_get_time_limits_from_rate_and_loss():
    fast = plan_with(bw=100, delay=0)
    slow = plan_with(bw=1, delay=0)
    lossy = plan_with(bw=100, loss=5, delay=50)
    n = 50_000_000
    assert expected_seconds(fast, None, n) == pytest.approx(4, rel=0.1)
    assert expected_seconds(slow, None, n) == pytest.approx(400, rel=0.1)
    assert expected_seconds(lossy, None, n) > 10 * expected_seconds(fast, None, n)  # Mathis, not the link rate
    assert time_limit(slow, None, n, 15) > 1.5 * 400
    assert time_limit(fast, 10, None, 15) == pytest.approx(25, abs=0.1)


def test_too_long_a_transfer_is_known_before_it_starts():
    assert expected_seconds(plan_with(bw=0.01), None, 10**9) > MAX_TEST_SECONDS


@pytest.mark.parametrize("loss,at_least", [(0.0, 10), (0.5, 20), (0.9, 100)])
def test_pings_for_lossy_routes(loss, at_least):
    n = pings_needed(loss)
    assert n >= at_least and n <= MAX_PINGS
    # with that many, too few answers is rare: the lower bound is below what the loss gives on average
    assert min_answers(n, loss) <= n * (1 - loss)


def test_hopeless_loss_needs_no_self_check_but_a_refusal():
    assert pings_needed(0.999) is None
    assert pings_needed(1.0) is None


def test_jittery_routes_get_pings_enough_for_their_median():
    from mptcplab.routes import pings_for_jitter, rtt_tolerance_ms

    r = routes(plan_with(bw=None, delay=2, jitter=10))[0]
    assert r.rtt_sd_ms() == pytest.approx(4 * 15.84 ** 0.5 / 2, rel=1e-6)  # four crossings
    n = pings_for_jitter(r.rtt_sd_ms(), rtt_tolerance_ms(r, 0, 5, 1))
    assert 50 < n <= MAX_PINGS
    # with n answers the band is about twice the spec's tolerance, with 10 it would be far wider
    assert rtt_tolerance_ms(r, n, 5, 1) < rtt_tolerance_ms(r, 10, 5, 1) / 2
    assert pings_for_jitter(0, 1) == 0

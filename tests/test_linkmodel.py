"""The link model: parameters, backend choice, tc argument lists, emulator settings (pure; the root
tests check the kernel)."""

import math

import pytest

from mptcplab.linkmodel import (
    DELAY_LINE_FPS, NETEM_MIN_LIMIT, Direction, LinkEmulationError, choose_backend, direction, directions,
    emulator_settings, parse_ms, shaping_problems, tc_commands,
)


def d(**kw):
    return direction(kw)


def test_rate_and_queue():
    cmds = tc_commands("h1-eth0", d(bw=5, queue=100), netem=False)
    assert cmds[0] == ["tc", "qdisc", "add", "dev", "h1-eth0", "root", "handle", "5:", "htb", "default", "1"]
    assert cmds[1][:9] == ["tc", "class", "add", "dev", "h1-eth0", "parent", "5:", "classid", "5:1"]
    assert "5000000bit" in cmds[1]
    assert cmds[2] == ["tc", "qdisc", "add", "dev", "h1-eth0", "parent", "5:1", "handle", "10:", "pfifo", "limit", "100"]


def test_netem_root_then_htb_then_pfifo_and_change_in_place():
    cmds = tc_commands("x", d(bw=10, delay=10, jitter=1, loss=0.5, queue=50, reorder=True))
    limit = 50 + math.ceil(DELAY_LINE_FPS * 0.011)
    assert cmds == [
        ["tc", "qdisc", "add", "dev", "x", "root", "handle", "1:", "netem",
         "limit", str(limit), "delay", "10000us", "1000us", "loss", "random", "0.5%"],
        ["tc", "qdisc", "add", "dev", "x", "parent", "1:1", "handle", "5:", "htb", "default", "1"],
        ["tc", "class", "add", "dev", "x", "parent", "5:", "classid", "5:1", "htb", "rate", "10000000bit",
         "ceil", "10000000bit", "burst", "3028", "cburst", "3028", "quantum", "125000"],
        ["tc", "qdisc", "add", "dev", "x", "parent", "5:1", "handle", "10:", "pfifo", "limit", "50"]]
    change = tc_commands("x", d(bw=20, delay=5, queue=50), verb="change")
    assert [c[1:3] for c in change] == [["qdisc", "change"], ["class", "change"], ["qdisc", "change"]]
    assert change[0][4:8] == ["x", "root", "handle", "1:"] and change[2][4:8] == ["x", "parent", "5:1", "handle"]


def _queue_limits(cmds):
    """Every frame limit the layout puts on the path: (qdisc kind, limit)."""
    return [(c[c.index("handle") + 2], int(c[c.index("limit") + 1])) for c in cmds
            if c[1] == "qdisc" and "limit" in c]


@pytest.mark.parametrize(("bw", "delay", "queue"), [(5, 40, 100), (1000, 20, 100), (100, 200, 10)])
def test_the_queue_is_the_frames_waiting_for_the_rate_not_the_delay_line(bw, delay, queue):
    """Issue 16: the old layout (htb -> netem leaf with ``limit queue``) counted the frames in
    the delay line against the queue: 40 ms at 5 Mbit/s left ~83 of 100 frames of queue, and at
    1 Gbit/s with 20 ms the delay line alone (~1650 full frames) exceeded 100 and netem dropped.
    Now the frames waiting for the rate are limited by a pfifo of exactly ``queue`` frames, and
    the netem ahead of it holds the queue plus the whole delay line, at the rate with full
    frames and far beyond."""
    dr = d(bw=bw, delay=delay, queue=queue)
    limits = dict(_queue_limits(tc_commands("x", dr)))
    full_frames_in_flight = bw * 1e6 * delay / 1000 / (8 * 1514)
    assert limits["pfifo"] == queue
    # netem holds its child's frames too: it must fit the queue and the delay line at the rate,
    # even if every frame were a 64-byte one
    tiny_frames_in_flight = bw * 1e6 * delay / 1000 / (8 * 64)
    assert limits["netem"] >= queue + tiny_frames_in_flight > queue + full_frames_in_flight
    # the queue is what the user-space emulator counts, too
    assert emulator_settings(dr)["limit_pkts"] == str(queue)


def test_netem_never_holds_the_queue_without_a_rate():
    """Delay without a rate: nothing waits, so no frame is dropped for the queue (the emulator
    checks its queue only where it has a rate); netem's limit keeps the whole delay line."""
    cmds = tc_commands("x", d(delay=50, queue=10))
    assert len(cmds) == 1 and cmds[0][8] == "netem"
    assert int(cmds[0][cmds[0].index("limit") + 1]) >= 10 + DELAY_LINE_FPS * 0.05
    assert tc_commands("x", d(loss=1))[0][9:11] == ["limit", str(NETEM_MIN_LIMIT)]


def test_layout_without_netem_is_htb_root_and_pfifo():
    cmds = tc_commands("x", d(bw=5), netem=False)
    assert [c[1] for c in cmds] == ["qdisc", "class"] and cmds[0][5] == "root"
    assert tc_commands("x", d(queue=20), netem=False) == [
        ["tc", "qdisc", "add", "dev", "x", "root", "handle", "10:", "pfifo", "limit", "20"]]


def test_layout_changes_need_a_rebuild():
    assert d(bw=5, queue=10).tc_layout() != d(bw=5, queue=10, delay=5).tc_layout()
    assert d(bw=5, delay=1).tc_layout() == d(bw=50, delay=20, loss=1).tc_layout()
    assert d(bw=5, delay=1).tc_layout() != d(bw=5, delay=1, queue=3).tc_layout()


def test_burst_loss_is_gemodel():
    cmds = tc_commands("x", d(burst_loss={"p": 1, "r": 20, "loss_bad": 80, "loss_good": 0}))
    assert cmds[-1][-6:] == ["loss", "gemodel", "1%", "20%", "80%", "0%"]


def test_no_shaping_no_commands():
    assert tc_commands("x", d()) == []


def test_missing_netem_refuses_instead_of_running_a_different_link():
    with pytest.raises(LinkEmulationError) as e:
        tc_commands("s1-eth2", d(bw=5, delay=10), netem=False)
    assert "s1-eth2: delay 10 ms needs the netem qdisc" in str(e.value)


def test_backend_choice():
    up, down = directions({"bw": 5, "delay": 10})
    assert choose_backend("auto", up, down, netem=True) == "netem"
    assert choose_backend("auto", up, down, netem=False) == "userspace"
    # rate and queue only: htb + pfifo in the kernel, which needs no netem
    assert choose_backend("auto", *directions({"bw": 5, "queue": 100}), netem=False) == "netem"
    assert choose_backend("auto", *directions({"bw": 5, "queue_bytes": 15000}), netem=False) == "userspace"
    with pytest.raises(LinkEmulationError):
        choose_backend("netem", up, down, netem=False)
    jitter = directions({"delay": 10, "jitter": 2})
    assert choose_backend("auto", *jitter, netem=True) == "userspace"  # netem would reorder
    with pytest.raises(LinkEmulationError, match="reordering"):
        choose_backend("netem", *jitter, netem=True)
    assert choose_backend("auto", *directions({"delay": 10, "jitter": 2, "reorder": True}), netem=True) == "netem"


def test_directions_override_one_side():
    up, down = directions({"bw": 10, "delay": "5ms", "max_queue_size": 30}, up={"delay": 20}, down={"bw": 2})
    assert (up.bw, up.delay, up.queue) == (10, 20, 30)
    assert (down.bw, down.delay, down.queue) == (2, 5, 30)


def test_emulator_direction_units():
    e = emulator_settings(d(bw=5, delay=10, jitter=0.5, loss=1, queue=100,
                            burst_loss={"p": 2, "r": 50, "loss_bad": 90, "loss_good": 1}))
    assert e["rate"] == "5000000" and e["delay_us"] == "10000.000" and e["jitter_us"] == "500.000"
    assert e["loss"] == "0.01" and e["limit_pkts"] == "100"
    assert (e["ge_p"], e["ge_r"], e["ge_h"], e["ge_k"]) == ("0.02", "0.5", "0.1", "0.99")
    off = emulator_settings(Direction())
    assert off["ge_p"] == "0" and off["ge_r"] == "0" and off["rate"] == "0"


def test_time_strings():
    assert parse_ms("10ms") == 10 and parse_ms("1s") == 1000 and parse_ms("250us") == 0.25 and parse_ms(3) == 3
    with pytest.raises(ValueError):
        parse_ms("soon")


def test_mean_delay_counts_the_emulators_clamp_at_zero():
    """Uniform jitter larger than the delay: negative draws leave at once, so the mean is above
    the delay -- (d + j)^2 / 4j -- not the delay the spec wrote."""
    assert Direction(delay=10, jitter=4).mean_delay_ms() == 10
    assert Direction(delay=2, jitter=10).mean_delay_ms() == pytest.approx(3.6)
    assert Direction(delay=0, jitter=10).mean_delay_ms() == pytest.approx(2.5)


def test_burst_loss_mean():
    # p = 1%, r = 9%: the bad state holds 10% of frames, loses 100% of them
    assert d(burst_loss={"p": 1, "r": 9}).loss_fraction() == pytest.approx(0.1)


def test_delay_variance_with_and_without_the_clamp():
    assert Direction(delay=10, jitter=4).delay_variance_ms2() == pytest.approx(16 / 3)
    assert Direction(delay=2, jitter=10).delay_variance_ms2() == pytest.approx(15.84)
    assert Direction(delay=10).delay_variance_ms2() == 0


def test_shaping_problems_read_what_the_kernel_reports():
    dr = d(bw=5, delay=40, queue=100)
    good = [{"kind": "netem", "handle": "1:", "root": True, "options": {"limit": dr.netem_limit()}},
            {"kind": "htb", "handle": "5:", "parent": "1:1", "options": {}},
            {"kind": "pfifo", "handle": "10:", "parent": "5:1", "options": {"limit": 100}}]
    assert shaping_problems("x", dr, good) == []
    old = [{"kind": "htb", "handle": "5:", "root": True, "options": {}},
           {"kind": "netem", "handle": "10:", "parent": "5:1", "options": {"limit": 100}}]
    problems = shaping_problems("x", dr, old)
    assert any("netem's limit is 100 frames" in p for p in problems), problems
    assert any("no pfifo" in p for p in problems), problems
    short = good[:2] + [{"kind": "pfifo", "handle": "10:", "options": {"limit": 83}}]
    assert shaping_problems("x", dr, short) == ["x: asked for a 100-packet queue but the pfifo holds 83"]


def test_backend_and_reason_say_why():
    from mptcplab.linkmodel import backend_and_reason

    delay = directions({"bw": 5, "delay": 10, "queue": 100})
    assert backend_and_reason("auto", *delay, netem=True) == (
        "netem", "delay, jitter or loss, and this kernel has netem (netem -> htb -> pfifo)")
    assert backend_and_reason("auto", *delay, netem=False) == (
        "userspace", "delay, jitter or loss, and this kernel has no netem qdisc")
    assert backend_and_reason("auto", *directions({"bw": 5}), netem=False)[1].startswith("rate and queue only")
    assert backend_and_reason("auto", *directions({"delay": 5, "jitter": 1}), netem=True) == (
        "userspace", "netem cannot emulate jitter without reordering (netem reorders jittered frames)")
    assert backend_and_reason("auto", *directions({}), netem=True)[0] == "plain"

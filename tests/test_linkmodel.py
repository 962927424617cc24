"""The link model: parameters, backend choice, tc argument lists, emulator settings (pure; the root
tests check the kernel)."""

import pytest

from mptcplab.linkmodel import (
    Direction, LinkEmulationError, choose_backend, direction, directions, emulator_settings, parse_ms, tc_commands,
)


def d(**kw):
    return direction(kw)


def test_rate_and_queue():
    cmds = tc_commands("h1-eth0", d(bw=5, queue=100), netem=False)
    assert cmds[0] == ["tc", "qdisc", "add", "dev", "h1-eth0", "root", "handle", "5:", "htb", "default", "1"]
    assert cmds[1][:9] == ["tc", "class", "add", "dev", "h1-eth0", "parent", "5:", "classid", "5:1"]
    assert "5000000bit" in cmds[1]
    assert cmds[2] == ["tc", "qdisc", "add", "dev", "h1-eth0", "parent", "5:1", "handle", "10:", "pfifo", "limit", "100"]


def test_netem_leaf_under_htb_and_change_in_place():
    cmds = tc_commands("x", d(bw=10, delay=10, jitter=1, loss=0.5, queue=50, reorder=True))
    assert cmds[-1] == ["tc", "qdisc", "add", "dev", "x", "parent", "5:1", "handle", "10:", "netem",
                        "limit", "50", "delay", "10000us", "1000us", "loss", "random", "0.5%"]
    change = tc_commands("x", d(bw=20, delay=5), verb="change")
    assert [c[1:3] for c in change] == [["class", "change"], ["qdisc", "change"]]


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

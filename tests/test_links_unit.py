"""tc command construction for EmuIntf (the root tests check the kernel's side)."""

import pytest

from mptcplab.links import LinkEmulationError, _ms, tc_commands


def test_rate_and_queue():
    cmds = tc_commands("h1-eth0", bw=5, queue=100, netem=False)
    assert cmds[0] == ["tc", "qdisc", "add", "dev", "h1-eth0", "root", "handle", "5:", "htb", "default", "1"]
    assert cmds[1][:9] == ["tc", "class", "add", "dev", "h1-eth0", "parent", "5:", "classid", "5:1"]
    assert "5000000bit" in cmds[1]
    assert cmds[2] == ["tc", "qdisc", "add", "dev", "h1-eth0", "parent", "5:1", "handle", "10:", "pfifo", "limit", "100"]


def test_netem_leaf_under_htb():
    cmds = tc_commands("x", bw=10, delay_ms=10, jitter_ms=1, loss=0.5, queue=50, netem=True)
    assert cmds[-1] == ["tc", "qdisc", "add", "dev", "x", "parent", "5:1", "handle", "10:", "netem",
                        "limit", "50", "delay", "10000us", "1000us", "loss", "random", "0.5%"]


def test_no_shaping_no_commands():
    assert tc_commands("x") == []


def test_missing_netem_refuses_instead_of_running_a_different_link():
    with pytest.raises(LinkEmulationError) as e:
        tc_commands("s1-eth2", bw=5, delay_ms=10, netem=False)
    assert "s1-eth2: delay 10 ms needs the netem qdisc" in str(e.value)


def test_time_strings():
    assert _ms("10ms") == 10 and _ms("1s") == 1000 and _ms("250us") == 0.25 and _ms(3) == 3
    with pytest.raises(LinkEmulationError):
        _ms("soon")

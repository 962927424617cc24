"""LabSwitch (root): a real Open vSwitch bridge on the userspace datapath in a tiny Mininet.

The hazards: Mininet's OVSSwitch deletes any bridge with its name when it starts
(``--if-exists del-br``) and when it stops, and runs its ovs-vsctl command through a root shell.
Every name here includes this process's id, and each test removes only what it created.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from functools import partial
from pathlib import Path

import pytest

from helpers import cmdlines

pytest.importorskip("mininet.node", reason="Mininet is not importable (make setup)")

from mptcplab.switch import BridgeExistsError, LabSwitch  # noqa: E402

RUN = "20261127-101500-a3f9"
OTHER_RUN = "20261127-101500-b4e0"
PID = os.getpid() % 100000


def vsctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ovs-vsctl", "--timeout=5", *args], capture_output=True, text=True, check=False)


def bridges() -> set[str]:
    return set(vsctl("list-br").stdout.split())


def bridge_get(name: str, column: str) -> str:
    return vsctl("--if-exists", "get", "Bridge", name, column).stdout.strip().strip('"')


def shells(name: str) -> list[str]:
    """Mininet node shells for a node called ``name`` (bash ... mininet:NAME)."""
    return [str(pid) for pid, argv in cmdlines() if f"mininet:{name}".encode() in argv]


def tiny_net(sw: str, run_id: str = RUN, switch_cls: type = LabSwitch):
    """Two hosts on one switch, built (hosts, veths, switch shell) but not started."""
    from mininet.net import Mininet
    from mininet.topo import Topo

    topo = Topo()
    a, b = topo.addHost(f"a{PID}", ip="10.77.0.1/24"), topo.addHost(f"b{PID}", ip="10.77.0.2/24")
    s = topo.addSwitch(sw, dpid="00000000000000aa")
    topo.addLink(a, s)
    topo.addLink(b, s)
    return Mininet(topo=topo, switch=partial(switch_cls, run_id=run_id, datapath="user"), controller=None,
                   build=True)


def remove_if_tagged(name: str, run_id: str) -> None:
    """Test cleanup: our own bridge only, should the code under test have left it."""
    if name in bridges() and bridge_get(name, "external_ids:mptcplab-run") == run_id:
        vsctl("del-br", name)


def ping(net, src: str, dst_ip: str, tries: int = 10) -> bool:
    for _ in range(tries):
        p = net[src].popen(["ping", "-c", "1", "-W", "1", dst_ip])
        p.communicate(timeout=10)
        if p.returncode == 0:
            return True
        time.sleep(0.3)
    return False


@pytest.mark.root
def test_lab_switch_starts_forwards_and_removes_its_bridge():
    sw = f"s{PID}"
    net = tiny_net(sw)
    try:
        args = net[sw].create_args([])
        assert "del-br" not in args and "--may-exist" not in args and "--if-exists" not in args
        net.start()
        assert sw in bridges()
        assert bridge_get(sw, "external_ids:mptcplab-run") == RUN
        assert bridge_get(sw, "datapath_type") == "netdev"
        assert bridge_get(sw, "fail_mode") == "standalone"
        assert vsctl("list-ports", sw).stdout.split() == [f"{sw}-eth1", f"{sw}-eth2"]
        assert Path(f"/sys/class/net/{sw}").exists()  # the netdev bridge's own tap
        assert ping(net, f"a{PID}", "10.77.0.2"), "hosts on a LabSwitch (standalone) cannot ping each other"
        net.stop()
        net = None
        assert sw not in bridges()
        assert not Path(f"/sys/class/net/{sw}").exists(), "OVS left the bridge's tap behind"
        for port in (f"{sw}-eth1", f"{sw}-eth2"):
            assert not Path(f"/sys/class/net/{port}").exists()
            assert vsctl("--columns=name", "find", "Interface", f"name={port}").stdout.strip() == ""
        assert shells(sw) == []
    finally:
        if net is not None:
            net.stop()
        remove_if_tagged(sw, RUN)


@pytest.mark.root
@pytest.mark.parametrize("foreign_tag", [None, OTHER_RUN], ids=["user-bridge", "other-run"])
def test_an_existing_bridge_of_the_same_name_survives_start_and_stop(foreign_tag, caplog):
    """Between preflight and start somebody creates a bridge with our switch's name: start must
    fail naming it, and neither start nor stopping our half-built network may delete it."""
    sw = f"s{PID}"
    net = tiny_net(sw)
    assert sw not in bridges()
    extra = [f"external_ids:mptcplab-run={foreign_tag}"] if foreign_tag else []
    made = vsctl("add-br", sw, "--", "set", "Bridge", sw, "datapath_type=netdev", *extra)
    assert made.returncode == 0, made.stderr
    uuid = bridge_get(sw, "_uuid")
    try:
        with pytest.raises(BridgeExistsError, match=f"bridge named {sw} already exists"):
            net.start()
        assert bridge_get(sw, "_uuid") == uuid, "the foreign bridge was deleted (and maybe recreated)"
        assert vsctl("list-ports", sw).stdout.split() == []
        assert bridge_get(sw, "external_ids:mptcplab-run") == (foreign_tag or "")
        with caplog.at_level(logging.WARNING, logger="mptcplab.switch"):
            net.stop()
        net = None
        assert bridge_get(sw, "_uuid") == uuid, "stopping our network deleted somebody else's bridge"
        assert Path(f"/sys/class/net/{sw}").exists()
        assert f"leaving bridge {sw} alone" in caplog.text
    finally:
        if net is not None:
            net.stop()
        if bridge_get(sw, "_uuid") == uuid:
            vsctl("del-br", sw)  # the bridge this test made up


class FakeController:
    """What OVSSwitch.start reads from a Mininet controller; nothing listens there."""

    name, protocol, port = "c0", "tcp", 6999

    def IP(self) -> str:
        return "127.0.0.1"


@pytest.mark.root
def test_controllers_and_protocols_are_set_in_the_same_transaction_and_go_with_the_bridge():
    sw = f"t{PID}"
    switch = LabSwitch(sw, run_id=RUN, datapath="user", failMode="secure", protocols="OpenFlow13",
                       dpid="00000000000000ab")
    try:
        switch.start([FakeController()])
        assert bridge_get(sw, "protocols") == "[OpenFlow13]"
        assert bridge_get(sw, "fail_mode") == "secure"
        assert bridge_get(sw, "other_config:datapath-id") == "00000000000000ab"
        (uuid,) = switch.controllerUUIDs()
        assert vsctl("get", "Controller", uuid, "target").stdout.strip() == '"tcp:127.0.0.1:6999"'
        switch.stop()
        assert sw not in bridges()
        assert uuid not in vsctl("--columns=_uuid", "list", "Controller").stdout, \
            "the bridge's Controller row outlived it"
    finally:
        switch.terminate()
        remove_if_tagged(sw, RUN)


@pytest.mark.root
def test_a_run_id_that_is_a_shell_command_is_refused_before_anything_exists():
    sw = f"s{PID}"
    pwned = Path(f"/tmp/PWNED{PID}")
    pwned.unlink(missing_ok=True)
    before = bridges()
    with pytest.raises(ValueError, match="run_id"):
        LabSwitch(sw, run_id=f"x;touch {pwned};#", datapath="user")
    from mininet.net import Mininet
    from mininet.topo import Topo

    topo = Topo()
    topo.addSwitch(sw, dpid="00000000000000aa")
    with pytest.raises(ValueError, match="run_id"):
        Mininet(topo=topo, switch=partial(LabSwitch, run_id=f"x;touch {pwned};#", datapath="user"),
                controller=None, build=True)
    assert not pwned.exists()
    assert bridges() == before
    assert shells(sw) == []


@pytest.mark.parametrize("kw", [
    {"name": "s1;reboot"}, {"name": "s1 -- del-br x"}, {"name": "-s1"}, {"name": "s123456789ab"},
    {"run_id": ""}, {"run_id": "20261127-101500-a3f9 "}, {"failMode": "secure;x"},
    {"datapath": "netdev"}, {"protocols": "OpenFlow13 fail_mode=secure"}, {"dpid": "1;x"},
    {"dpid": "1" * 17}, {"listenPort": "6634"}, {"reconnectms": "1000 x"},
], ids=lambda kw: f"{next(iter(kw))}={next(iter(kw.values()))!r}")
def test_constructor_refuses_what_would_reach_ovs_vsctl(kw):
    params = {"name": "s1", "run_id": RUN, **kw}
    field = next(iter(kw))
    with pytest.raises(ValueError, match=field):
        LabSwitch(params.pop("name"), **params)

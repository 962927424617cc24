"""The netem backend through the network stage (root; netem: on a kernel without netem these
run in User-Mode Linux, `make test-netem`): a switchless network (two hosts, two cables) built
from a spec with ``shaper: netem``, every qdisc read back (check_shaping), the self-check's netem
path with rate and loss, then the links changed in place (a sweep's next point) and checked
again. Needs no Open vSwitch."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from helpers import REPO
from mptcplab import selfcheck
from mptcplab.capabilities import probe
from mptcplab.network import Network
from mptcplab.plan import make_plan
from mptcplab.proc import node_run
from mptcplab.registry import Registry
from mptcplab.spec import parse_spec

pytestmark = [pytest.mark.root, pytest.mark.netem]


def spec(link1: dict) -> dict:
    topo = yaml.safe_load((REPO / "topologies" / "dual-channel.yaml").read_text())
    topo["links"][0] = {"endpoints": ["h1", "h2"], "bw": 10, "delay": "5ms", "queue": 100}
    topo["links"][1] = {"endpoints": ["h1", "h2"], **link1}
    return {"name": "netem-net", "topology": topo, "emulation": {"shaper": "netem"},
            "mptcp": {"endpoints": "auto", "limits": {"subflows": 2, "add_addr_accepted": 2}},
            "traffic": {"client": "h1", "server": "h2", "duration": 1, "protocols": ["mptcp"]}}


def qdiscs(net: Network, host: str, dev: str) -> dict[str, dict]:
    out = node_run(net.node(host), ["tc", "-j", "qdisc", "show", "dev", dev]).stdout
    return {q["kind"]: q for q in json.loads(out or "[]")}


def test_netem_network_self_check_and_change_in_place(no_leftovers):
    run_id = time.strftime("%Y%m%d-%H%M%S-") + "0e7e"
    plan = make_plan(parse_spec(spec({"bw": 5, "delay": "20ms", "queue": 50, "loss": 1})), run_id)
    net = Network(plan, probe(), Registry(run_id), shaper="netem")
    try:
        net.start()  # _reshape_switch_ports: check_shaping on every interface, or NetworkError
        assert set(net.backends.values()) == {"netem"}
        q = qdiscs(net, "h1", "h1-eth1")
        assert q["netem"]["root"] and q["pfifo"]["options"]["limit"] == 50
        assert q["netem"]["options"]["limit"] == plan.links[1].up.netem_limit()
        report = selfcheck.run(net, mode="full")
        assert report.ok, report.table()
        assert report.backend == "netem"

        new = make_plan(parse_spec(spec({"bw": 8, "delay": "35ms", "queue": 30, "loss": 1})), run_id)
        assert net.change_links(new)
        q = qdiscs(net, "h1", "h1-eth1")
        assert q["pfifo"]["options"]["limit"] == 30
        assert q["netem"]["options"]["limit"] == new.links[1].up.netem_limit()
        assert not [p for h in net.mininet.hosts for i in h.intfList() for p in i.check_shaping()]
        report = selfcheck.run(net, mode="full")
        assert report.ok, report.table()
        second = [p for p in report.paths if p.expected_rate_mbps and p.expected_rate_mbps < 8]
        assert second and second[0].measured_rate_mbps == pytest.approx(second[0].expected_rate_mbps, rel=0.1)
    finally:
        net.stop()

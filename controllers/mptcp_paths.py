"""POX component: puts MPTCP subflows on link-independent or link-dependent paths (MPTCP v1).

    pox.py openflow.of_01 --address=127.0.0.1 --port=P mptcp_paths --topology=FILE --policy=mixed

with controllers/ on PYTHONPATH (mptcplab's harness does all this). The path computation is the
framework-free core :mod:`mptcplab.paths`; this file only speaks OpenFlow.

- On connection of a switch: the core's default rules (ARP and IP to every host address along a
  shortest-path tree -- no flooding, so meshed topologies have no loops), address pairs of
  multi-homed hosts pinned proactively to their path, and "TCP between the hosts -> controller".
- Subflows that share an address pair are steered reactively by 5-tuple on their SYN. The MPTCP
  options are parsed from the raw TCP bytes (mptcplab.mptcp_options; POX 0.8's parser rejects the
  v1 MP_CAPABLE option): a SYN with MP_CAPABLE starts a connection on path 0; its SYN/ACK carries
  the server's key, whose token (SHA-256) names the connection; a SYN with MP_JOIN carries that
  token and takes the connection's next path. The decisions are mptcplab.placement's (once per
  5-tuple: a SYN that comes back from a switch its rule had not reached yet keeps its path). Rule
  cookies say subflow and direction, so flow statistics give the bytes per path.
- With ``--policy=ecmp``: ARP and non-TCP IP along the tree, every TCP packet without a rule to
  the controller, and at each switch a 5-tuple gets an exact rule to the equal-cost next hop
  :func:`mptcplab.paths.ecmp_choice` hashes it to (with the switch's own seed) -- ECMP as a
  hashing switch does it, hop by hop, for OpenFlow 1.0, which has no select groups.
"""

from __future__ import annotations

from pox.core import core
import pox.openflow.libopenflow_01 as of

from mptcplab.mptcp_options import parse_tcp
from mptcplab.paths import (
    COOKIE_ECMP, COOKIE_FWD, COOKIE_REV, ECMP, IPV4, PRIO_DEFAULT, TCP, ControllerTopology, default_rules,
    ecmp_choice, ecmp_next_hops, hash_basis, hop_ports, host_ips, pair_rules, path_set,
)
from mptcplab.placement import SubflowPlacer

log = core.getLogger()
PRIO_TO_CONTROLLER = PRIO_DEFAULT + 50
PRIO_FLOW = 400
IDLE_TIMEOUT = 120


def _flow_mod(rule) -> of.ofp_flow_mod:
    fm = of.ofp_flow_mod()
    m = rule.match_dict()
    fm.match.dl_type = m["dl_type"]
    for field in ("nw_proto", "nw_src", "nw_dst", "tp_src", "tp_dst"):
        if field in m:
            setattr(fm.match, field, m[field])
    fm.priority = rule.priority
    fm.cookie = rule.cookie
    fm.actions.append(of.ofp_action_output(port=rule.out_port))
    return fm


def _install(event, topo: ControllerTopology, rules) -> str:
    """The rules of the switch that just connected; its name."""
    sw = topo.switch_of_dpid(event.dpid)
    for rule in rules:
        if rule.switch == sw:
            event.connection.send(_flow_mod(rule))
    return sw


def _to_controller(src: str | None = None, dst: str | None = None) -> of.ofp_flow_mod:
    """TCP (between src and dst, when given) to the controller, whole packets."""
    fm = of.ofp_flow_mod(priority=PRIO_TO_CONTROLLER)
    fm.match.dl_type, fm.match.nw_proto = IPV4, TCP
    if src is not None:
        fm.match.nw_src, fm.match.nw_dst = src, dst
    fm.actions.append(of.ofp_action_output(port=of.OFPP_CONTROLLER, max_len=0xFFFF))
    return fm


def _release(event, port: int) -> None:
    """Send the packet that came to the controller on its way (buffered in the switch or not)."""
    out = of.ofp_packet_out(in_port=event.port)
    if event.ofp.buffer_id not in (None, -1, 0xFFFFFFFF):
        out.buffer_id = event.ofp.buffer_id
    else:
        out.data = event.data
    out.actions.append(of.ofp_action_output(port=port))
    event.connection.send(out)


class Ecmp:
    """Hash-based ECMP, reactively: one exact 5-tuple rule per switch, on the port the hash picks."""

    def __init__(self, topo: ControllerTopology):
        self.topo = topo
        self.rules = default_rules(topo)  # ARP, and ICMP/UDP, along the shortest-path tree
        self.next_hops = ecmp_next_hops(topo)
        log.info("mptcp_paths: policy ecmp, %d (switch, address) next-hop sets", len(self.next_hops))
        core.openflow.addListeners(self)

    def _handle_ConnectionUp(self, event):
        sw = _install(event, self.topo, self.rules)
        event.connection.send(_to_controller())
        log.info("switch %s up: ecmp rules installed", sw)

    def _handle_PacketIn(self, event):
        data = event.data
        if len(data) < 34 or int.from_bytes(data[12:14], "big") != IPV4 or data[23] != TCP:
            return
        ihl = (data[14] & 0x0F) * 4
        src, dst = ".".join(map(str, data[26:30])), ".".join(map(str, data[30:34]))
        sport = int.from_bytes(data[14 + ihl:16 + ihl], "big")
        dport = int.from_bytes(data[16 + ihl:18 + ihl], "big")
        sw = self.topo.switch_of_dpid(event.dpid)
        ports = self.next_hops.get((sw, dst))
        if not ports:
            return
        port = ecmp_choice(ports, (src, sport, dst, dport), hash_basis(sw))
        fm = of.ofp_flow_mod(priority=PRIO_FLOW, idle_timeout=IDLE_TIMEOUT, cookie=COOKIE_ECMP)
        fm.match.dl_type, fm.match.nw_proto = IPV4, TCP
        fm.match.nw_src, fm.match.nw_dst, fm.match.tp_src, fm.match.tp_dst = src, dst, sport, dport
        fm.actions.append(of.ofp_action_output(port=port))
        event.connection.send(fm)
        _release(event, port)


class MptcpPaths:
    def __init__(self, topo: ControllerTopology):
        self.topo = topo
        self.paths = path_set(topo, topo.client, topo.server, topo.policy)
        self.client_ips = host_ips(topo, topo.client)
        self.server_ips = host_ips(topo, topo.server)
        self.rules = default_rules(topo)
        self.multihomed = len(self.client_ips) > 1 and len(self.server_ips) > 1
        if self.multihomed:
            self.rules += pair_rules(topo, self.paths, list(zip(self.client_ips, self.server_ips)))
        self.placer = SubflowPlacer(hold=IDLE_TIMEOUT)  # the decisions; this class speaks OpenFlow
        log.info("mptcp_paths: policy %s, paths %s", topo.policy, self.paths)
        core.openflow.addListeners(self)

    # ------------------------------------------------------------------ proactive

    def _handle_ConnectionUp(self, event):
        sw = _install(event, self.topo, self.rules)
        if not self.multihomed:
            for cip in self.client_ips:
                for sip in self.server_ips:
                    for src, dst in ((cip, sip), (sip, cip)):
                        event.connection.send(_to_controller(src, dst))
        log.info("switch %s up: rules installed", sw)

    # ------------------------------------------------------------------ reactive

    def _handle_PacketIn(self, event):
        data = event.data
        if len(data) < 34 or int.from_bytes(data[12:14], "big") != IPV4:
            return
        ihl = (data[14] & 0x0F) * 4
        if data[23] != TCP:
            return
        src, dst = ".".join(map(str, data[26:30])), ".".join(map(str, data[30:34]))
        try:
            seg = parse_tcp(data[14 + ihl:])
        except ValueError as e:
            log.warning("unparsable TCP segment: %s", e)
            return
        placement = self.placer.place(src, dst, seg)
        self._install(placement.key, placement.index, placement.forward)
        _release(event, of.OFPP_TABLE)

    def _install(self, key, index: int, forward: bool) -> None:
        """Rules for one direction of a 5-tuple (the SYN's direction when forward) on its path."""
        src, sport, dst, dport = key
        path = self.paths[index % len(self.paths)]
        if src not in self.client_ips:  # a connection opened by the server: walk the path back
            path = list(reversed(path))
        if not forward:
            src, sport, dst, dport = dst, dport, src, sport
        hops = hop_ports(self.topo, path)
        cookie = (COOKIE_FWD if src in self.client_ips else COOKIE_REV) + index
        for sw, in_port, out_port in hops:
            fm = of.ofp_flow_mod(priority=PRIO_FLOW, idle_timeout=IDLE_TIMEOUT, cookie=cookie)
            fm.match.dl_type, fm.match.nw_proto = IPV4, TCP
            fm.match.nw_src, fm.match.nw_dst = src, dst
            fm.match.tp_src, fm.match.tp_dst = sport, dport
            fm.actions.append(of.ofp_action_output(port=out_port if forward else in_port))
            core.openflow.sendToDPID(self.topo.dpid_of(sw), fm)


def launch(topology: str, policy: str = "mixed"):
    topo = ControllerTopology.load(topology)
    topo.policy = policy
    core.registerNew(Ecmp if policy == ECMP else MptcpPaths, topo)

"""The plan: everything decided before touching the kernel.

Pure, deterministic functions from a validated :class:`~mptcplab.spec.Experiment` to interface
names, addresses, per-address routing tables, MPTCP endpoints and limits, the subflows each MPTCP
connection should reach, and the order of the tests. Unit-tested without root; the network stage
only carries out what is written here, and the plan is saved with every result.
"""

from __future__ import annotations

import ipaddress
import re
import zlib
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from . import ids
from .errors import PlanError
from .forwarding import ROUTER_HOST_NUMBER, PlanRoute, PlanRouter, compute as compute_forwarding, lookup
from .ids import host_of
from .linkmodel import Direction, direction, directions
from .spec import Experiment

if TYPE_CHECKING:  # the path core (networkx) is imported lazily
    from .flows import FlowDef
    from .paths import ControllerTopology

#: Mininet numbers host ports from 0 and switch ports from 1 (Switch.portBase).
HOST_PORT_BASE = 0
SWITCH_PORT_BASE = 1
#: Per-address routing tables and rule priorities (well clear of main=254, local=255).
TABLE_BASE = 100
RULE_PRIORITY_BASE = 1000
#: Ports the server announces for a variant's extra subflows: fresh ones for every test (an
#: endpoint's listening port cannot be announced again at once after its endpoint is removed).
SIGNAL_PORT_BASE = 20000
#: Endpoints the in-kernel path manager holds per namespace (MPTCP_PM_ADDR_MAX; ERANGE beyond).
MAX_ENDPOINTS = 8
#: Flows one test may run at once: each is an iperf3 client and server (and a sampler thread for
#: MPTCP) on this one machine; beyond a few hundred the machine, not the network, is measured.
MAX_FLOWS = 256
#: Endpoint flag bits of the in-kernel path manager (include/uapi/linux/mptcp.h).
FLAG_BITS = {"signal": 1 << 0, "subflow": 1 << 1, "backup": 1 << 2, "fullmesh": 1 << 3, "laminar": 1 << 5}


def flag_names(bits: int) -> list[str]:
    """The endpoint flags set in ``bits`` (as the kernel reports them), by name."""
    return [name for name, bit in FLAG_BITS.items() if bits & bit]


@dataclass(frozen=True)
class PlanIntf:
    node: str
    name: str
    port: int
    link: int
    address: str | None = None  # CIDR, hosts and routers
    segment: int | None = None
    table: int | None = None
    rule_priority: int | None = None

    @property
    def ip(self) -> str | None:
        return self.address.split("/")[0] if self.address else None

    @property
    def prefixlen(self) -> int | None:
        return int(self.address.split("/")[1]) if self.address else None

    @property
    def subnet(self) -> str | None:
        return str(ipaddress.ip_interface(self.address).network) if self.address else None


@dataclass(frozen=True)
class PlanEndpoint:
    interface: str
    address: str
    flags: tuple[str, ...]
    id: int

    @property
    def flag_bits(self) -> int:
        bits = 0
        for f in self.flags:
            bits |= FLAG_BITS[f]
        return bits


@dataclass(frozen=True)
class PlanMptcp:
    enabled: bool
    endpoints: tuple[PlanEndpoint, ...]
    subflows: int
    add_addr_accepted: int
    scheduler: str
    congestion_control: str | None
    signal_ports: tuple[int, ...] = ()
    stale_loss_cnt: int | None = None  # net.mptcp.stale_loss_cnt; None: the kernel's
    rto_min_ms: float | None = None  # net.ipv4.tcp_rto_min_us / 1000; None: the kernel's
    checksum: bool | None = None  # net.mptcp.checksum_enabled; None: the kernel's


@dataclass(frozen=True)
class PlanHost:
    name: str
    intfs: tuple[PlanIntf, ...]
    mptcp: PlanMptcp
    #: routes through routers (per-address tables and main); empty where no router is near
    routes: tuple[PlanRoute, ...] = ()


@dataclass(frozen=True)
class PlanSwitch:
    name: str
    dpid: str  # 16 hex digits, as OVS and Mininet want it


@dataclass(frozen=True)
class PlanLink:
    """A link with both directions resolved: ``up`` from intf1's node to intf2's, ``down`` back.
    ``base`` holds the link's own parameters before per-direction overrides (what the summary
    reports as the link's bw, delay, ...)."""

    index: int
    name: str
    intf1: PlanIntf
    intf2: PlanIntf
    base: Direction
    up: Direction
    down: Direction


@dataclass(frozen=True)
class PlanFlow:
    """One flow of a multi-flow test: iperf3 from ``src`` to ``dst_address`` on ``port``,
    started ``start_s`` after the test's clock starts."""

    index: int
    label: str
    src: str
    dst: str
    dst_address: str
    port: int
    protocol: str
    start_s: float
    duration_s: float | None
    bytes: int | None
    congestion_control: str | None
    parallel: int
    extra_subflows: int
    expected_subflows: int


@dataclass(frozen=True)
class PlanProbe:
    """RTT probes (ping) from ``src`` to ``dst_address`` every ``interval_s`` while a test runs."""

    label: str
    src: str
    dst: str
    dst_address: str
    interval_s: float


@dataclass(frozen=True)
class PlanTest:
    index: int
    protocol: str
    repetition: int
    variant: str = ""
    signal_ports: tuple[int, ...] = ()
    expected_subflows: int = 1
    #: A multi-flow test's flows (empty for the one client/server flow), and the ports each
    #: destination host announces during it (host -> ports).
    flows: tuple[PlanFlow, ...] = ()
    host_signal_ports: tuple[tuple[str, tuple[int, ...]], ...] = ()
    #: host -> its subflow limit during this test (multi-flow tests; see _flow_tests)
    host_limits: tuple[tuple[str, int], ...] = ()
    #: host interfaces whose endpoints are backups during this test (the variant's backup:)
    backup: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.index:03d}-{self.variant or self.protocol}-r{self.repetition}"


@dataclass(frozen=True)
class PlanCapture:
    targets: tuple[tuple[str, str], ...]  # (host, interface)
    snaplen: int
    max_mb: float


@dataclass(frozen=True)
class Plan:
    experiment: str
    hosts: tuple[PlanHost, ...]
    switches: tuple[PlanSwitch, ...]
    links: tuple[PlanLink, ...]
    segments: tuple[str, ...]
    client: str
    server: str
    server_address: str
    expected_subflows: int
    tests: tuple[PlanTest, ...]
    controller: str = "none"
    policy: str = "mixed"
    #: what the switches are: 'ovs' (Open vSwitch) or 'bridge' (Linux bridge); see switch_kind
    switch: str = "ovs"
    notes: tuple[str, ...] = field(default=())
    probes: tuple[PlanProbe, ...] = ()
    #: the events of every test, in time order (mptcplab.events.Step)
    events: tuple[Any, ...] = ()
    #: packet captures of every test: (host, interface) pairs, snap length, MB kept per interface
    capture: PlanCapture | None = None
    #: what sends in a one-flow test: iperf3, or mptcplab.transfer (data checked end to end)
    tool: str = "iperf3"
    #: IP routers (mptcplab.forwarding): their interfaces, addresses and routes
    routers: tuple[PlanRouter, ...] = ()

    @property
    def multi_flow(self) -> bool:
        return any(t.flows for t in self.tests)

    def pairs(self) -> list[tuple[str, str]]:
        """Every (source, destination) host pair traffic or probes run between, first seen first."""
        out = [(self.client, self.server)]
        out += [(f.src, f.dst) for t in self.tests for f in t.flows]
        out += [(p.src, p.dst) for p in self.probes]
        return list(dict.fromkeys(out))

    def host(self, name: str) -> PlanHost:
        return next(h for h in self.hosts if h.name == name)

    def router(self, name: str) -> PlanRouter:
        return next(r for r in self.routers if r.name == name)

    def interface_names(self) -> list[str]:
        return [i.name for link in self.links for i in (link.intf1, link.intf2)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


__all__ = ["Plan", "PlanError", "PlanFlow", "PlanHost", "PlanIntf", "PlanLink", "PlanProbe", "PlanRoute", "PlanRouter",
           "PlanTest", "make_plan", "controller_topology"]

# --------------------------------------------------------------------------- helpers


def _segments(exp: Experiment) -> dict[str, int]:
    """Layer-2 segments: switches joined by switch-switch links share one; numbered by first use.

    Returns a map from every switch and every direct host-host link key to its segment index.
    """
    topo = exp.topology
    switches = set(topo.switches)
    parent = {s: s for s in switches}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for link in topo.links:
        a, b = link.endpoints
        if a in switches and b in switches:
            parent[find(a)] = find(b)
    order: dict[str, int] = {}
    seg_of: dict[str, int] = {}
    for i, link in enumerate(topo.links):
        a, b = link.endpoints
        if a in switches or b in switches:
            sw = a if a in switches else b
            root = find(sw)
            if root not in order:
                order[root] = len(order)
        else:  # host-host cable: a segment of its own
            order[f"link{i}"] = len(order)
    for s in switches:
        root = find(s)
        if root not in order:  # isolated switch
            order[root] = len(order)
        seg_of[s] = order[root]
    for i, link in enumerate(topo.links):
        if not (set(link.endpoints) & switches):
            seg_of[f"link{i}"] = order[f"link{i}"]
    return seg_of


def expected_subflows(plan_client: PlanMptcp, plan_server: PlanMptcp) -> int:
    """Subflows the in-kernel path manager opens for one connection, the initial one included.

    The client opens one subflow per `subflow` endpoint towards the server's initial address, and
    for each accepted ADD_ADDR one subflow (one per `fullmesh` endpoint if it has any); all is
    capped by the client's subflow limit (net/mptcp/pm_kernel.c). Specs can override this with
    traffic.expect_subflows when a topology makes some of those subflows impossible.
    """
    if not (plan_client.enabled and plan_server.enabled):
        return 1
    n_subflow = sum(1 for e in plan_client.endpoints if "subflow" in e.flags and "fullmesh" not in e.flags)
    n_fullmesh = sum(1 for e in plan_client.endpoints if "fullmesh" in e.flags)
    n_signal = sum(1 for e in plan_server.endpoints if "signal" in e.flags) + len(plan_server.signal_ports)
    accepted = min(n_signal, plan_client.add_addr_accepted)
    extra = n_subflow + accepted * max(1, n_fullmesh)
    return 1 + min(plan_client.subflows, extra)


# --------------------------------------------------------------------------- the plan


def make_plan(exp: Experiment, run_id: str | None = None) -> Plan:
    """The plan of one experiment (one sweep point). ``run_id`` makes the switches' DPIDs unique
    to this run (so two runs' switches can never be confused by a controller); without it (a dry
    run) they are numbered from 1. Raises PlanError listing every problem found."""
    problems: list[str] = []
    seg_of = _segments(exp)
    ends = _number_ports(exp, seg_of)
    addresses = _assign_addresses(exp, ends, problems)
    links, intfs_of, router_intfs = _lay_out_links(exp, ends, addresses)
    _check_unique_addresses({**intfs_of, **router_intfs}, problems)
    _check_nat_addresses(links, {**intfs_of, **router_intfs}, problems)
    base = ipaddress.ip_network(exp.topology.subnet_base)
    segments = [f"{base.network_address + (k + 1) * 256}/24" for k in range(len(set(seg_of.values())))]
    host_routes, router_routes = compute_forwarding(intfs_of, router_intfs, segments) if router_intfs else ({}, {})
    _check_routed_addresses(exp, intfs_of, router_intfs, problems)
    flows = _flow_defs(exp, problems)
    client, server = (exp.traffic.client, exp.traffic.server) if not exp.multi_flow else \
        ((flows[0].src, flows[0].dst) if flows else ("", ""))
    if exp.multi_flow and not flows:
        raise PlanError(problems or ["flows: the flows and the matrix give no flow at all"])
    hosts = {h: replace(p, routes=host_routes.get(h, ())) for h, p in
             _mptcp_hosts(exp, intfs_of, {f.dst for f in flows} or {server}).items()}
    server_address = _initial_server_address(client, server, hosts, problems)
    if exp.topology.routers and exp.controller.kind != "none":
        problems.append(f"controller.kind: {exp.controller.kind} programs the switches for paths between hosts; "
                        "with routers the IP routes choose the path: use controller: {kind: none}")
    if exp.emulation.switch == "bridge" and exp.controller.kind != "none":
        problems.append(f"emulation.switch: bridge -- a Linux bridge cannot be programmed by controller.kind: "
                        f"{exp.controller.kind}; use emulation.switch: ovs (or auto, which picks ovs here)")
    if exp.controller.kind == "none":
        loop = _switch_loop(exp)
        if loop:
            problems.append(
                f"topology: the switches form a loop ({' - '.join(loop)}); OVS learning switches would "
                "flood it forever: use controller: {kind: static} or {kind: pox}")
    tests = _flow_tests(exp, flows, hosts, problems) if exp.multi_flow else _tests(exp, client, server, hosts, problems)
    probes = _probes(exp, hosts, problems)
    _check_endpoint_targets(exp, hosts, problems)
    if problems:
        raise PlanError(problems)
    return Plan(
        experiment=exp.name,
        hosts=tuple(hosts.values()),
        switches=tuple(PlanSwitch(name=s, dpid=switch_dpid(run_id, i)) for i, s in enumerate(exp.topology.switches)),
        links=tuple(links),
        segments=tuple(segments),
        client=client,
        server=server,
        server_address=server_address,
        expected_subflows=max((t.expected_subflows for t in tests if t.protocol == "mptcp"), default=1),
        tests=tuple(tests),
        controller=exp.controller.kind,
        policy=exp.controller.policy,
        switch=switch_kind(exp),
        probes=probes,
        events=tuple(_events(exp)),
        capture=_capture(exp, hosts, tests, client, server),
        tool=exp.traffic.tool,
        routers=tuple(PlanRouter(r, tuple(router_intfs[r]), router_routes.get(r, ())) for r in exp.topology.routers),
    )


def switch_kind(exp: Experiment) -> str:
    """'ovs' or 'bridge': what the switches of this experiment are. Only Open vSwitch speaks
    OpenFlow, so a controller (static rules, POX, ECMP groups) needs it; everything else gets the
    kernel's Linux bridge under ``auto`` -- the same learning switch, forwarding in the kernel
    instead of in ovs-vswitchd (which, without the OVS kernel module, copies every frame through
    user space). Loops are refused without a controller either way."""
    if exp.emulation.switch != "auto":
        return exp.emulation.switch
    return "ovs" if exp.controller.kind != "none" else "bridge"


#: Switch names of a distributed worker's network (mptcplab.lock.slot_prefix, then the switch's
#: number): mw03s0, mw03s1, ...
ISOLATED_SWITCH = re.compile(r"mw[0-9]{2}s[0-9]{1,4}")


def isolate(plan: Plan, prefix: str, net_id: str) -> tuple[Plan, dict[str, str]]:
    """The plan with switch names of its own, so that several networks coexist on one machine:
    switch k becomes ``<prefix><k>`` (mw03s0, ...) and its interfaces ``mw03s0-eth1``, ...; the
    DPIDs are salted with ``net_id``. Hosts and their interfaces keep their names: they live in
    their own namespaces. Links, events, captures and tests name links and host interfaces
    only, so they are unchanged. Returns the plan and the mapping {spec name: name used}."""
    ids.check_run_id(net_id, "network id")
    rename = {s.name: f"{prefix}{k}" for k, s in enumerate(plan.switches)}
    for new in rename.values():
        if not ISOLATED_SWITCH.fullmatch(new) or not ids.NODE_NAME.fullmatch(new):
            raise PlanError([f"switch name {new!r}: not a worker switch name (prefix {prefix!r})"])
    clash = sorted(set(rename.values()) & {h.name for h in plan.hosts})
    if clash:
        raise PlanError([f"hosts {', '.join(clash)}: named like a worker's switches; rename them"])

    def intf(i: PlanIntf) -> PlanIntf:
        if i.node not in rename:
            return i
        name = f"{rename[i.node]}-eth{i.port}"
        if len(name) > ids.IFNAME_MAX or not ids.INTERFACE_NAME.fullmatch(name):
            raise PlanError([f"interface {name!r}: longer than {ids.IFNAME_MAX} characters"])
        return replace(i, node=rename[i.node], name=name)

    links = tuple(replace(l, intf1=intf(l.intf1), intf2=intf(l.intf2)) for l in plan.links)
    switches = tuple(PlanSwitch(name=rename[s.name], dpid=switch_dpid(net_id, k)) for k, s in enumerate(plan.switches))
    return replace(plan, switches=switches, links=links), rename


def switch_dpid(run_id: str | None, index: int) -> str:
    """16 hex digits: a 32-bit hash of the run id, then the switch's number from 1."""
    salt = zlib.crc32(run_id.encode()) if run_id else 0
    return f"{salt:08x}{index + 1:08x}"


#: One end of a link before addressing: (node, port, segment).
_End = tuple[str, int, int]


def _number_ports(exp: Experiment, seg_of: dict[str, int]) -> list[tuple[_End, _End]]:
    """Ports in order of the links that end at each node, as Mininet numbers them."""
    topo = exp.topology
    switches = set(topo.switches)
    next_port: dict[str, int] = {h: HOST_PORT_BASE for h in [*topo.hosts, *topo.routers]}
    next_port.update({s: SWITCH_PORT_BASE for s in topo.switches})
    out = []
    for i, link in enumerate(topo.links):
        a, b = link.endpoints
        seg = seg_of[a if a in switches else b] if {a, b} & switches else seg_of[f"link{i}"]
        ends = []
        for node in (a, b):
            ends.append((node, next_port[node], seg))
            next_port[node] += 1
        out.append((ends[0], ends[1]))
    return out


def _assign_addresses(exp: Experiment, ends: list[tuple[_End, _End]], problems: list[str]
                      ) -> dict[tuple[int, int], str]:
    """(link index, end) -> CIDR: explicit, else one /24 per segment from subnet_base, hosts
    numbered in the order they are declared."""
    topo = exp.topology
    base = ipaddress.ip_network(topo.subnet_base)
    order = list(topo.hosts)
    host_ends = sorted((order.index(node), port, seg, i, j)
                       for i, pair in enumerate(ends) for j, (node, port, seg) in enumerate(pair)
                       if node in topo.hosts)
    next_addr: dict[int, int] = {}
    address: dict[tuple[int, int], str] = {}
    for hidx, port, seg, i, j in host_ends:
        spec = topo.hosts[order[hidx]]
        if spec.addresses:
            address[(i, j)] = spec.addresses[port - HOST_PORT_BASE]
            continue
        if seg + 1 > 255:
            problems.append("topology: more than 255 L2 segments; give explicit addresses")
            break
        n = next_addr[seg] = next_addr.get(seg, 0) + 1
        if n > 254:
            problems.append(f"topology: segment {seg} has more than 254 host interfaces")
            break
        address[(i, j)] = f"{base.network_address + (seg + 1) * 256 + n}/24"
    # Routers from the top of their segments' /24s down: .254, .253, ... by router, then port.
    routers = list(topo.routers)
    router_ends = sorted((routers.index(node), port, seg, i, j)
                         for i, pair in enumerate(ends) for j, (node, port, seg) in enumerate(pair)
                         if node in topo.routers)
    top: dict[int, int] = {}
    for _, _, seg, i, j in router_ends:
        n = top[seg] = top.get(seg, ROUTER_HOST_NUMBER + 1) - 1
        if n <= next_addr.get(seg, 0) or seg + 1 > 255:
            problems.append(f"topology: segment {seg} has more than 254 host and router interfaces")
            break
        address[(i, j)] = f"{base.network_address + (seg + 1) * 256 + n}/24"
    return address


def _lay_out_links(exp: Experiment, ends: list[tuple[_End, _End]], address: dict[tuple[int, int], str]
                   ) -> tuple[list[PlanLink], dict[str, list[PlanIntf]], dict[str, list[PlanIntf]]]:
    """Interfaces (names, ports, addresses, per-address tables) and each link's two directions;
    the hosts' interfaces and the routers'."""
    topo = exp.topology
    links: list[PlanLink] = []
    intfs_of: dict[str, list[PlanIntf]] = {h: [] for h in topo.hosts}
    router_intfs: dict[str, list[PlanIntf]] = {r: [] for r in topo.routers}
    for i, (link, pair) in enumerate(zip(topo.links, ends)):
        made = []
        for j, (node, port, seg) in enumerate(pair):
            if node in topo.hosts:
                k = port - HOST_PORT_BASE
                intf = PlanIntf(node=node, name=f"{node}-eth{port}", port=port, link=i,
                                address=address.get((i, j)), segment=seg, table=TABLE_BASE + k,
                                rule_priority=RULE_PRIORITY_BASE + k)
                intfs_of[node].append(intf)
            elif node in router_intfs:
                intf = PlanIntf(node=node, name=f"{node}-eth{port}", port=port, link=i,
                                address=address.get((i, j)), segment=seg)
                router_intfs[node].append(intf)
            else:
                intf = PlanIntf(node=node, name=f"{node}-eth{port}", port=port, link=i, segment=seg)
            made.append(intf)
        params = link.model_dump(exclude={"endpoints", "up", "down"})
        up, down = directions(params, link.up and link.up.model_dump(), link.down and link.down.model_dump())
        links.append(PlanLink(index=i, name=link.name, intf1=made[0], intf2=made[1],
                              base=direction(params), up=up, down=down))
    return links, intfs_of, router_intfs


def _check_routed_addresses(exp: Experiment, intfs_of: dict[str, list[PlanIntf]],
                            router_intfs: dict[str, list[PlanIntf]], problems: list[str]) -> None:
    """A router's interface takes its segment's automatic /24: hosts beside it must be in it."""
    routed = {i.segment for intfs in router_intfs.values() for i in intfs}
    for h, intfs in intfs_of.items():
        if exp.topology.hosts[h].addresses and any(i.segment in routed for i in intfs):
            problems.append(f"topology.hosts.{h}.addresses: explicit addresses are not supported on a segment "
                            "with a router (routers use the automatic /24 of subnet_base); leave them out")


def _check_unique_addresses(intfs_of: dict[str, list[PlanIntf]], problems: list[str]) -> None:
    seen: dict[str, str] = {}
    for h, intfs in intfs_of.items():
        for intf in intfs:
            if intf.ip in seen:
                where = f"hosts.{h}" if intf.table is not None else f"routers ({h})"
                problems.append(f"topology.{where}: address {intf.ip} is also used by {seen[intf.ip]}")
            if intf.ip:
                seen[intf.ip] = intf.name


def _check_nat_addresses(links: list[PlanLink], intfs_of: dict[str, list[PlanIntf]], problems: list[str]) -> None:
    """A NAT's public address is answered for by the box on the link's own L2 segment: it must
    lie in that segment's subnet (else nobody ARPs for it there) and be nobody's address (else the
    peer would see its own address, or another host's, as the source)."""
    used = {intf.ip: intf.name for intfs in intfs_of.values() for intf in intfs if intf.ip}
    for link in links:
        subnets = {ipaddress.ip_interface(f"{i.ip}/{i.prefixlen}").network
                   for intfs in intfs_of.values() for i in intfs if i.ip and i.segment == link.intf1.segment}
        for way, d in (("up", link.up), ("down", link.down)):
            if not d.nat:
                continue
            where = f"topology.links[{link.index}].{way}.middlebox.nat"
            addr = ipaddress.ip_address(d.nat)
            if d.nat in used:
                problems.append(f"{where}: {d.nat} is the address of {used[d.nat]}; choose a free address of "
                                "the link's subnet")
            elif subnets and not any(addr in net for net in subnets):
                problems.append(f"{where}: {d.nat} is not in the link's subnet "
                                f"({', '.join(sorted(map(str, subnets)))}): nobody there would ask the box for it")


def _mptcp_hosts(exp: Experiment, intfs_of: dict[str, list[PlanIntf]], servers: set[str]) -> dict[str, PlanHost]:
    """Per host: the global MPTCP settings, then its overrides; endpoints by interface order
    (``endpoints: auto``: every destination host signals its other interfaces)."""
    m = exp.mptcp
    hosts: dict[str, PlanHost] = {}
    for h in exp.topology.hosts:
        over = m.hosts.get(h)
        intfs = sorted(intfs_of[h], key=lambda x: x.port)
        if over is not None and over.endpoints is not None:
            wanted = over.endpoints
        elif m.endpoints == "auto" and h in servers:
            wanted = {i.name: ["signal"] for i in intfs[1:]}
        else:
            wanted = {}
        by_name = {i.name: i for i in intfs}
        endpoints = tuple(
            PlanEndpoint(interface=name, address=by_name[name].ip or "", flags=tuple(flags),
                         id=by_name[name].port - HOST_PORT_BASE + 1)
            for name, flags in sorted(wanted.items(), key=lambda kv: by_name[kv[0]].port))
        limits = over.limits if over and over.limits else m.limits
        hosts[h] = PlanHost(name=h, intfs=tuple(intfs), mptcp=PlanMptcp(
            enabled=m.enabled if over is None or over.enabled is None else over.enabled,
            endpoints=endpoints,
            subflows=limits.subflows,
            add_addr_accepted=limits.add_addr_accepted,
            scheduler=over.scheduler if over and over.scheduler else m.scheduler,
            stale_loss_cnt=m.stale_loss_cnt,
            rto_min_ms=m.rto_min_ms,
            checksum=m.checksum,
            congestion_control=over.congestion_control if over and over.congestion_control else m.congestion_control,
            signal_ports=tuple(over.signal_ports) if over else (),
        ))
    return hosts


def _initial_server_address(client: str, server: str, hosts: dict[str, PlanHost], problems: list[str],
                            where: str = "traffic") -> str:
    """The client connects to the server's first address that shares a segment with the client's
    first interface, else to its first address routers lead to from that interface: that is the
    initial subflow; the others come from the path manager."""
    first = hosts[client].intfs[0] if hosts[client].intfs else None
    for intf in hosts[server].intfs:
        if first is not None and intf.segment == first.segment:
            return intf.ip or ""
    for intf in hosts[server].intfs:
        if first is not None and intf.subnet and lookup(hosts[client].routes, intf.subnet, first.table):
            return intf.ip or ""
    problems.append(
        f"{where}: {client}-eth0 shares no layer-2 segment with any interface of {server}, and no router "
        "leads from its segment to theirs; the initial subflow needs a path")
    return ""


def _check_endpoint_targets(exp: Experiment, hosts: dict[str, PlanHost], problems: list[str]) -> None:
    """Events and variants that act on a host's MPTCP endpoint name an interface that has one."""
    with_endpoint = {ep.interface for h in hosts.values() for ep in h.mptcp.endpoints}

    def missing(ifname: str, where: str) -> None:
        host = host_of(ifname)
        problems.append(f"{where}: {ifname} has no MPTCP endpoint (this plan gives "
                        f"{', '.join(sorted(with_endpoint)) or 'none'}); give it one in "
                        f"mptcp.hosts.{host}.endpoints")

    for i, e in enumerate(exp.events.at if exp.events else []):
        if e.interface and e.action in ("endpoint-del", "endpoint-add", "backup", "active") \
                and e.interface not in with_endpoint:
            missing(e.interface, f"events.at[{i}].interface")
    for v in exp.variants or []:
        for i, ifname in enumerate(v.backup):
            if ifname not in with_endpoint:
                missing(ifname, f"variants.{v.name}.backup[{i}]")


def _capture(exp: Experiment, hosts: dict[str, PlanHost], tests: list[PlanTest], client: str,
             server: str) -> PlanCapture | None:
    """Which interfaces each test captures: as the spec names them, else every interface of the
    hosts traffic runs between."""
    c = exp.capture
    if c is None:
        return None
    if c.interfaces:
        wanted = list(c.interfaces)
    else:
        ends = [client, server] if not exp.multi_flow else [h for t in tests for f in t.flows for h in (f.src, f.dst)]
        wanted = [i.name for h in dict.fromkeys(ends) for i in hosts[h].intfs]
    owner = {i.name: h.name for h in hosts.values() for i in h.intfs}
    return PlanCapture(tuple((owner[n], n) for n in dict.fromkeys(wanted)), c.snaplen, c.max_mb)


def _events(exp: Experiment) -> list[Any]:
    from .events import timeline

    return timeline(exp.events)


def _probes(exp: Experiment, hosts: dict[str, PlanHost], problems: list[str]) -> tuple[PlanProbe, ...]:
    """The RTT probes, each with its own label (SRC-DST, then -2, ... as for flows)."""
    out: list[PlanProbe] = []
    seen: dict[str, int] = {}
    for i, p in enumerate(exp.probes):
        label = p.label or f"{p.src}-{p.dst}"
        n = seen[label] = seen.get(label, 0) + 1
        if n > 1:
            if p.label:
                problems.append(f"probes[{i}].label: {label} is used twice; give each probe its own label")
            label = f"{label}-{n}"
        out.append(PlanProbe(label, p.src, p.dst, _initial_server_address(p.src, p.dst, hosts, problems,
                                                                          f"probes[{i}]"), p.interval))
    return tuple(out)


def _flow_defs(exp: Experiment, problems: list[str]) -> list["FlowDef"]:
    from .flows import expand

    if not exp.multi_flow:
        return []
    try:
        flows = expand(exp)
    except PlanError as e:
        problems += e.problems
        return []
    if len(flows) > MAX_FLOWS:
        problems.append(f"flows: {len(flows)} flows in one test (flows: and matrix:); at most {MAX_FLOWS} run at "
                        "once on one machine: use fewer hosts in matrix.hosts, or a permutation instead of "
                        "all-to-all")
        return []
    return flows


def _flow_tests(exp: Experiment, flows: list["FlowDef"], hosts: dict[str, PlanHost], problems: list[str]
                ) -> list[PlanTest]:
    """Repetitions x variants of all the flows at once. Each flow has its own iperf3 port
    (traffic.port + its index); a destination host announces, for the whole test, as many fresh
    ports as the most extra subflows any MPTCP flow to it asks for -- every MPTCP connection to
    that host is offered them all, so its expected subflows count them all.

    Each host's subflow limit is set, per test, to the most extra subflows the MPTCP flows it
    takes part in would open with its own limits (its interfaces' endpoints and the announced
    ports; never above mptcp.limits): in a matrix a host is source and destination at once, so
    it also announces ports to the hosts it sends to, and the in-kernel path manager of the
    *receiving* side opens subflows toward announced addresses too -- with the limit at 8 a
    7-extra-subflow connection measured 9 subflows. With the limit at the flows' own number, the
    joins a host accepts fill it."""
    from .flows import for_variant

    address = {f.label: _initial_server_address(f.src, f.dst, hosts, problems, f"flows ({f.label}: {f.src} -> {f.dst})")
               for f in flows}
    tests: list[PlanTest] = []
    for rep in range(1, exp.traffic.repetitions + 1):
        for v in exp.variants or [None]:
            index = len(tests) + 1
            try:
                defs = for_variant(flows, v)
            except PlanError as e:
                problems += e.problems
                return []
            extra: dict[str, int] = {}
            for f in defs:
                if f.protocol == "mptcp":
                    extra[f.dst] = max(extra.get(f.dst, 0), f.extra_subflows)
            ports = {h: tuple(SIGNAL_PORT_BASE + 10 * index + k for k in range(1, n + 1)) for h, n in extra.items()}
            own = {f.label: expected_subflows(hosts[f.src].mptcp, replace(hosts[f.dst].mptcp, signal_ports=ports[f.dst]))
                   for f in defs if f.protocol == "mptcp"}
            limit: dict[str, int] = {}
            for f in defs:
                if f.protocol == "mptcp":
                    for h in (f.src, f.dst):
                        limit[h] = min(hosts[h].mptcp.subflows, max(limit.get(h, 0), own[f.label] - 1))
            planned = []
            for i, f in enumerate(defs):
                want = min(own[f.label], 1 + limit[f.src], 1 + limit[f.dst]) if f.protocol == "mptcp" else 1
                planned.append(PlanFlow(
                    index=i, label=f.label, src=f.src, dst=f.dst, port=exp.traffic.port + i,
                    dst_address=address[f.label],
                    protocol=f.protocol, start_s=f.start_s, duration_s=f.duration_s, bytes=f.bytes,
                    congestion_control=f.congestion_control or hosts[f.src].mptcp.congestion_control,
                    parallel=f.parallel, extra_subflows=f.extra_subflows, expected_subflows=want))
            protos = sorted({f.protocol for f in defs})
            tests.append(PlanTest(
                index=index, protocol=protos[0] if len(protos) == 1 else "mixed", repetition=rep,
                variant=v.name if v else "", expected_subflows=max(f.expected_subflows for f in planned),
                flows=tuple(planned), host_signal_ports=tuple(sorted((h, p) for h, p in ports.items() if p)),
                host_limits=tuple(sorted(limit.items())), backup=tuple(v.backup) if v else ()))
    last_signal = SIGNAL_PORT_BASE + 10 * (len(tests) + 1)
    if tests and exp.traffic.port < last_signal and exp.traffic.port + len(tests[0].flows) > SIGNAL_PORT_BASE:
        problems.append(f"traffic.port: the flows' ports {exp.traffic.port}..{exp.traffic.port + len(tests[0].flows) - 1} "
                        f"overlap the ports announced for extra subflows ({SIGNAL_PORT_BASE}..{last_signal}): "
                        f"use a traffic.port below {SIGNAL_PORT_BASE - len(tests[0].flows)} or above {last_signal}")
    if tests and exp.traffic.port + len(tests[0].flows) - 1 > 65535:
        problems.append(f"traffic.port: {len(tests[0].flows)} flows from port {exp.traffic.port} run past 65535")
    if any(p > 65535 for t in tests for _, ps in t.host_signal_ports for p in ps):
        problems.append("variants: too many tests for fresh signal ports (at most about 4500)")
    for name, h in hosts.items():
        n = len(h.mptcp.endpoints) + max((len(ps) for t in tests for hh, ps in t.host_signal_ports if hh == name),
                                         default=len(h.mptcp.signal_ports))
        if n > MAX_ENDPOINTS:
            problems.append(f"mptcp.hosts.{name}: {n} MPTCP endpoints (addresses and signalled ports for extra "
                            f"subflows) but the kernel keeps at most {MAX_ENDPOINTS} per host: ask for fewer "
                            "extra_subflows")
    return tests


def _tests(exp: Experiment, client_name: str, server_name: str, hosts: dict[str, PlanHost],
           problems: list[str]) -> list[PlanTest]:
    """Repetitions x variants (or protocols), each MPTCP test with its subflow target and, for
    variants with extra subflows, fresh ports the server announces."""
    client, server = hosts[client_name].mptcp, hosts[server_name].mptcp
    tests: list[PlanTest] = []
    for rep in range(1, exp.traffic.repetitions + 1):
        for v in exp.variants or [None]:
            for proto in ([v.protocol or "mptcp"] if v else exp.traffic.protocols):
                index = len(tests) + 1
                ports = server.signal_ports
                if v and v.extra_subflows:
                    ports = tuple(SIGNAL_PORT_BASE + 10 * index + k for k in range(1, v.extra_subflows + 1))
                if proto == "mptcp":
                    want = (v.expect_subflows if v else None) or exp.traffic.expect_subflows or \
                        expected_subflows(client, replace(server, signal_ports=ports))
                else:
                    want, ports = 1, ()
                tests.append(PlanTest(index=index, protocol=proto, repetition=rep, variant=v.name if v else "",
                                      signal_ports=ports, expected_subflows=want,
                                      backup=tuple(v.backup) if v and proto == "mptcp" else ()))
    if any(p > 65535 for t in tests for p in t.signal_ports):
        problems.append("variants: too many tests for fresh signal ports (at most about 4500)")
    for t in tests:
        ports = t.signal_ports
        if len(set(ports)) != len(ports) or exp.traffic.port in ports:
            problems.append(f"mptcp.hosts.{server_name}.signal_ports: {list(ports)} repeat a port or "
                            f"include traffic.port {exp.traffic.port}: each signalled port must be a new one")
            break
    _check_endpoint_limit(hosts, tests, server_name, problems)
    return tests


def _check_endpoint_limit(hosts: dict[str, PlanHost], tests: list[PlanTest], server: str,
                          problems: list[str]) -> None:
    """The kernel's path manager keeps at most MAX_ENDPOINTS endpoints per namespace; the server's
    signalled ports are endpoints too. Found here, not when the kernel says ERANGE mid-run."""
    for name, h in hosts.items():
        ports = max((len(t.signal_ports) for t in tests), default=0) if name == server else 0
        n = len(h.mptcp.endpoints) + max(ports, len(h.mptcp.signal_ports))
        if n > MAX_ENDPOINTS:
            problems.append(
                f"mptcp.hosts.{name}: {n} MPTCP endpoints ({len(h.mptcp.endpoints)} addresses and "
                f"{n - len(h.mptcp.endpoints)} signalled ports) but the kernel keeps at most {MAX_ENDPOINTS} "
                "per host: use fewer endpoints, signal_ports or extra_subflows")


def _switch_loop(exp: Experiment) -> list[str]:
    """A cycle among the switches (hosts do not forward), or [] when there is none."""
    import networkx as nx

    g = nx.MultiGraph()
    switches = set(exp.topology.switches)
    g.add_nodes_from(switches)
    for link in exp.topology.links:
        a, b = link.endpoints
        if a in switches and b in switches:
            g.add_edge(a, b)
    try:
        cycle = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        return []
    return [u for u, *_ in cycle] + [cycle[0][0]]


def controller_topology(plan: Plan, first_port: int) -> "ControllerTopology":
    """The resolved topology the controller works on (written as JSON for POX).

    ``port_subflow``: server port -> subflow index: the traffic port is subflow 0, a test's k-th
    signalled port subflow k + 1.
    """
    from .paths import TopoLink, ControllerTopology

    hosts = {h.name for h in plan.hosts}
    attach: dict[str, list[dict[str, Any]]] = {h.name: [] for h in plan.hosts}
    links = []
    for link in plan.links:
        i1, i2 = link.intf1, link.intf2
        links.append(TopoLink(i1.node, i1.port, i2.node, i2.port, link.base.bw,
                              link.up.bw if link.up.bw != link.base.bw else None,
                              link.down.bw if link.down.bw != link.base.bw else None))
        for me, other in ((i1, i2), (i2, i1)):
            if me.node in hosts:
                attach[me.node].append({"name": me.name, "ip": me.ip, "switch": other.node,
                                        "switch_port": other.port})
    port_subflow = {first_port: 0}
    for t in plan.tests:
        for k, p in enumerate(t.signal_ports):
            port_subflow.setdefault(p, k + 1)
    return ControllerTopology(hosts=attach, switches={s.name: s.dpid for s in plan.switches}, links=links,
                    client=plan.client, server=plan.server, port_subflow=port_subflow, policy=plan.policy)

"""The network stage: builds and tears down exactly what the plan says.

Mininet hosts; switches that are Linux bridges where no controller programs them, else Open
vSwitch (kernel datapath where the kernel has it, else the userspace datapath with offloads off on
every veth, without which TCP hangs; :func:`mptcplab.plan.switch_kind`); links shaped by
:mod:`mptcplab.links`, then per host over netlink (pyroute2): addresses, one routing table and one
``ip rule`` per address (so a subflow bound to an address leaves through its own interface), and
the MPTCP endpoints and limits. Everything created is recorded in the :class:`Registry` first, so
that :meth:`Network.stop` -- and ``mptcplab clean`` after a SIGKILL -- remove exactly that.

The only stage that needs root, with traffic.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from functools import partial
from typing import Any, Callable

from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.node import Host
from mininet.topo import Topo
from pyroute2 import MPTCP, IPRoute

from .capabilities import Capabilities
from .links import EmuLink, LinkEmulationError
from .linkmodel import emulator_settings
from .plan import Plan, PlanHost, flag_names
from .proc import node_run, offloads, offloads_off
from .registry import ALIAS_PREFIX, Registry
from . import router as routers
from .spec import Experiment
from .bridge import LabBridge
from .switch import LabSwitch


class NetworkError(RuntimeError):
    """The network could not be built or does not work as planned."""


def netns_path(node: Any) -> str:
    return f"/proc/{node.pid}/ns/net"


class Network:
    """One emulated network, built from a plan by :meth:`start` and removed by :meth:`stop`."""

    def __init__(self, plan: Plan, caps: Capabilities, registry: Registry, shaper: str = "auto",
                 seed: int = 1, controller: Any = None):
        self.controller = controller  # StaticController / PoxController / None (learning switches)
        self.signal_ports: dict[str, tuple[int, ...]] = {}
        self.subflow_limits: dict[str, int] = {}  # hosts whose limit a multi-flow test changed
        self.backups: frozenset[str] = frozenset()  # interfaces whose endpoints a test made backups
        self.shaper = shaper
        self.seed = seed
        self.plan = plan
        self.caps = caps
        self.registry = registry
        self.mininet: Mininet | None = None
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ build

    def _topo(self) -> Topo:
        topo = Topo()
        for h in self.plan.hosts:
            topo.addHost(h.name, ip=None)
        for r in self.plan.routers:
            topo.addHost(r.name, cls=routers.LabRouter, ip=None)
        for s in self.plan.switches:
            topo.addSwitch(s.name, dpid=s.dpid)
        for link in self.plan.links:
            topo.addLink(link.intf1.node, link.intf2.node, port1=link.intf1.port, port2=link.intf2.port,
                         intfName1=link.intf1.name, intfName2=link.intf2.name, model=(link.up, link.down),
                         shaper=self.shaper, seed=self.seed + link.index)
        return topo

    def start(self) -> "Network":
        t0 = time.monotonic()
        setLogLevel("warning")
        in_namespaces = {h.name for h in self.plan.hosts} | {r.name for r in self.plan.routers}
        root_intfs = [i.name for link in self.plan.links for i in (link.intf1, link.intf2)
                      if i.node not in in_namespaces]
        # Intent first: should we die from here on, `mptcplab clean` knows what to look for.
        switch: Any
        names = [s.name for s in self.plan.switches]
        if self.plan.switch == "bridge":
            self.registry.interfaces(root_intfs + names)  # a Linux bridge is a tagged device
            switch = partial(LabBridge, run_id=self.registry.run_id)
        else:
            self.registry.bridges(names)
            self.registry.interfaces(root_intfs + (names if self.caps.datapath == "user" else []))
            # With a controller the switches must not fall back to flooding (loops): secure mode.
            switch = partial(LabSwitch, run_id=self.registry.run_id, datapath=self.caps.datapath,
                             failMode="secure" if self.controller else "standalone",
                             protocols=getattr(self.controller, "protocols", None))
        self.mininet = Mininet(topo=self._topo(), switch=switch, host=Host, link=EmuLink,
                           controller=None, autoSetMacs=True, build=False)
        from . import emulator

        emulator.on_process_started.append(self.registry.process)
        try:
            self.mininet.build()
        finally:
            emulator.on_process_started.remove(self.registry.process)
        for node in self.mininet.hosts + self.mininet.switches:
            self.registry.process(node.pid, ["mininet", node.name])
        for host in self.mininet.hosts:
            self.registry.namespace(host.pid)
        self._tag_root_interfaces(root_intfs)
        self.mininet.start()
        self._reshape_switch_ports()
        self.timings["build_s"] = time.monotonic() - t0
        t1 = time.monotonic()
        self._offloads_off()
        if self.controller is not None:
            self.controller.start(self)
        for r in self.plan.routers:
            routers.configure(self.mininet[r.name], r, netns_path(self.mininet[r.name]))
        for h in self.plan.hosts:
            self._configure_host(h)
        self._wait_connectivity()
        self.timings["configure_s"] = time.monotonic() - t1
        return self

    def _tag_root_interfaces(self, names: list[str]) -> None:
        with IPRoute() as ipr:
            for name in names:
                idx = ipr.link_lookup(ifname=name)
                if idx:
                    ipr.link("set", index=idx[0], ifalias=ALIAS_PREFIX + self.registry.run_id)

    def _reshape_switch_ports(self) -> None:
        """OVS resets a port's qdisc when it adds the port: shape again, then verify all."""
        assert self.mininet is not None
        for sw in self.mininet.switches:
            for intf in sw.intfList():
                if hasattr(intf, "apply_shaping"):
                    intf.apply_shaping()
        problems = [p for node in self.mininet.hosts + self.mininet.switches for intf in node.intfList()
                    if hasattr(intf, "check_shaping") for p in intf.check_shaping()]
        if problems:
            raise NetworkError("links are not what the spec says:\n  " + "\n  ".join(problems))

    def _offloads_off(self) -> None:
        """Offloads off on every veth: the userspace datapath needs it, and htb is exact only
        on wire-sized packets (TSO/GSO would hand it 64 KB super-packets)."""
        assert self.mininet is not None
        for node in self.mininet.hosts + self.mininet.switches:
            for intf in node.intfList():
                if intf.name != "lo" and intf.name != node.name:
                    offloads_off(node, intf.name)

    def _configure_host(self, h: PlanHost) -> None:
        assert self.mininet is not None
        node = self.mininet[h.name]
        ns = netns_path(node)
        with IPRoute(netns=ns) as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=lo, state="up")
            for intf in h.intfs:
                idx = ipr.link_lookup(ifname=intf.name)[0]
                ipr.flush_addr(index=idx)
                ipr.addr("add", index=idx, address=intf.ip, prefixlen=intf.prefixlen)
                ipr.link("set", index=idx, state="up")
                ipr.route("add", dst=intf.subnet, oif=idx, prefsrc=intf.ip, table=intf.table)
                ipr.rule("add", src=intf.ip, src_len=32, table=intf.table, priority=intf.rule_priority)
            routers.add_routes(ipr, h.routes)  # through routers, once every address is up
        # Several interfaces of one host may share a subnet: answer ARP only for the address of
        # the interface asked, and source ARP from the outgoing interface (no ARP flux).
        sysctls = [f"net.mptcp.enabled={1 if h.mptcp.enabled else 0}",
                   "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"]
        if h.routes:  # a reply may come back on another interface than its request left by
            sysctls += ["net.ipv4.conf.all.rp_filter=0", *(f"net.ipv4.conf.{i.name}.rp_filter=0" for i in h.intfs)]
        if os.path.exists("/proc/sys/net/mptcp/scheduler"):
            sysctls.append(f"net.mptcp.scheduler={h.mptcp.scheduler}")
        if h.mptcp.stale_loss_cnt is not None:
            sysctls.append(f"net.mptcp.stale_loss_cnt={h.mptcp.stale_loss_cnt}")
        if h.mptcp.rto_min_ms is not None:
            sysctls.append(f"net.ipv4.tcp_rto_min_us={round(h.mptcp.rto_min_ms * 1000)}")
        if h.mptcp.checksum is not None:
            sysctls.append(f"net.mptcp.checksum_enabled={int(h.mptcp.checksum)}")
        # Congestion control is set per socket by iperf3 (-C): a non-initial namespace may only
        # default to algorithms in the root's tcp_allowed_congestion_control (EPERM otherwise),
        # and we do not change the machine's global settings.
        r = node_run(node, ["sysctl", "-q", "-w", *sysctls])
        if r.returncode != 0:
            raise NetworkError(f"{h.name}: sysctl failed: {r.stderr.strip()}")
        with MPTCP(netns=ns) as mp:
            mp.endpoint("flush")
            mp.limits("set", subflows=h.mptcp.subflows, add_addr_accepted=h.mptcp.add_addr_accepted)
            # No `dev` on endpoints: the per-address rule above already sends a subflow bound to
            # an address out of its own interface (and pyroute2 0.9 cannot encode IF_IDX).
            for ep in h.mptcp.endpoints:
                mp.endpoint("add", addr=ep.address, id=ep.id, flags=ep.flag_bits)
            _check_endpoints_read_back(h.name, h.mptcp.endpoints, mp)
        self.signal_ports[h.name] = ()
        self.subflow_limits.pop(h.name, None)
        self.backups = frozenset(i for i in self.backups if not i.startswith(f"{h.name}-eth"))
        self.set_signal_ports(h.name, h.mptcp.signal_ports)

    def reset_blackhole_detection(self, hosts: list[str]) -> None:
        """Forget the MPTCP firewall-blackhole state of these hosts' namespaces before a test.

        After MPTCP SYNs go unanswered (a middlebox dropping them) Linux 6.12+ turns MPTCP off for
        new active connections of the namespace for net.mptcp.blackhole_timeout (3600 s, doubling
        on each repeat): every later test on the kept network would silently run as TCP. Writing
        the sysctl -- its own value, unchanged -- resets that state (ctrl.c's handler zeroes
        active_disable_times), so each test starts as on a fresh network."""
        if not os.path.exists("/proc/sys/net/mptcp/blackhole_timeout"):
            return
        for host in hosts:
            node = self.node(host)
            r = node_run(node, ["sysctl", "-n", "net.mptcp.blackhole_timeout"])
            value = r.stdout.strip()
            if r.returncode != 0 or not value.isdigit():
                raise NetworkError(f"{host}: cannot read net.mptcp.blackhole_timeout: {r.stderr.strip()}")
            r = node_run(node, ["sysctl", "-q", "-w", f"net.mptcp.blackhole_timeout={value}"])
            if r.returncode != 0:
                raise NetworkError(f"{host}: sysctl failed: {r.stderr.strip()}")

    def set_subflow_limit(self, host: str, subflows: int) -> None:
        """The host's limit of extra subflows per connection (add_addr_accepted as planned)."""
        h = self.plan.host(host)
        if self.subflow_limits.get(host, h.mptcp.subflows) == subflows:
            return
        with MPTCP(netns=netns_path(self.node(host))) as mp:
            mp.limits("set", subflows=subflows, add_addr_accepted=h.mptcp.add_addr_accepted)
        self.subflow_limits[host] = subflows

    def set_signal_ports(self, host: str, ports: tuple[int, ...]) -> None:
        """Announce the host's first address again with these ports (one `signal` endpoint each,
        ids 100+k), replacing the ports announced so far. Ports must be fresh: an endpoint's
        listening port stays taken for a while after the endpoint is removed."""
        current = self.signal_ports.get(host, ())
        if tuple(ports) == current:
            return
        addr = self.plan.host(host).intfs[0].ip
        with MPTCP(netns=netns_path(self.node(host))) as mp:
            for k, _ in enumerate(current):
                mp.endpoint("del", id=100 + k)
            for k, port in enumerate(ports):
                mp.endpoint("add", addr=addr, port=port, id=100 + k, flags=1)
        self.signal_ports[host] = tuple(ports)

    def _wait_connectivity(self) -> None:
        """Every route from the client reaches the server (the switches learn L2 on the way).
        Waits as long as the route's delay and loss need: a ping's wait covers its longest RTT,
        and a lossy route gets as many tries as the self-check would send."""
        from .routes import routes
        from .routes import pings_needed

        assert self.mininet is not None
        for route in routes(self.plan):
            node = self.mininet[route.client.node]
            wait_s = max(1, math.ceil(route.max_rtt_ms() / 1000 * 2))
            tries = pings_needed(route.round_trip_loss()) or 50
            deadline = time.monotonic() + 10 + tries * (wait_s + 0.2)
            while node_run(node, ["ping", "-n", "-q", "-c", "1", "-W", str(wait_s), "-I", route.client.ip,
                                  route.server.ip], timeout=wait_s + 5).returncode != 0:
                if time.monotonic() > deadline:
                    raise NetworkError(f"no connectivity from {route.client.name} ({route.client.ip}) to "
                                       f"{route.server.name} ({route.server.ip}) after {tries} tries")
                time.sleep(0.2)

    # ------------------------------------------------------------------ use

    def node(self, name: str) -> Any:
        assert self.mininet is not None
        return self.mininet[name]

    def spawn(self, node_name: str, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        """Start a process inside a host, recorded in the registry by PID."""
        p = self.node(node_name).popen(argv, **kwargs)
        self.registry.process(p.pid, argv)
        return p

    def run_in(self, node_name: str, argv: list[str], timeout: float, **kwargs: Any
               ) -> subprocess.CompletedProcess[str]:
        """Run a process inside a host to its end (recorded like :meth:`spawn`); stopped by PID
        after ``timeout`` seconds."""
        from .proc import stop

        p = self.spawn(node_name, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            out, err = stop(p)
        return subprocess.CompletedProcess(argv, p.returncode, out, err)

    # ------------------------------------------------------------------ links in place

    def link(self, name: str | int) -> EmuLink:
        """A running link by its spec name (``h1-s1``) or index in the topology's links."""
        assert self.mininet is not None
        index = name if isinstance(name, int) else next(
            (l.index for l in self.plan.links if l.name == name), None)
        if index is None or not 0 <= index < len(self.mininet.links):
            raise KeyError(f"no link {name!r} (links: {', '.join(l.name for l in self.plan.links)})")
        return self.mininet.links[index]

    def change_links(self, plan: Plan) -> bool:
        """Give the running links a new plan's directions in place (a sweep's next point) and
        adopt that plan. False, changing nothing that matters, when that cannot be done in place
        (a link built without emulation, or a change that needs another backend): the caller
        rebuilds the network then."""
        try:
            for old, new in zip(self.plan.links, plan.links):
                if (old.up, old.down) != (new.up, new.down):
                    self.link(new.index).set_directions(new.up, new.down)
        except LinkEmulationError:
            return False
        self.plan = plan
        return True

    def queued(self) -> int:
        """Frames waiting in the links right now (emulator queues, qdisc backlogs)."""
        assert self.mininet is not None
        total = 0
        for link in self.mininet.links:
            if link.backend == "userspace":
                st = link.stats()
                total += st["a2b"]["queued"] + st["b2a"]["queued"]
            elif link.backend == "netem":
                for intf in (link.intf1, link.intf2):
                    total += sum(q.get("qlen", 0) for q in intf.qdiscs())
        return total

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until the last test's tail has left every queue, so that a measurement (the
        self-check after a change) does not queue behind it; frames already queued keep the
        schedule of the rate they arrived under."""
        deadline = time.monotonic() + timeout
        while self.queued():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    @property
    def backends(self) -> dict[str, str]:
        assert self.mininet is not None
        return {pl.name: link.backend for pl, link in zip(self.plan.links, self.mininet.links)}

    @property
    def shaping_backend(self) -> str:
        """netem / userspace, or 'mixed: ...'; links with nothing to emulate ('plain') aside."""
        kinds = sorted(set(self.backends.values()) - {"plain"}) or ["plain"]
        return kinds[0] if len(kinds) == 1 else "mixed: " + ", ".join(kinds)

    # ------------------------------------------------------------------ describe

    def describe(self) -> dict[str, Any]:
        """Per host: sysctls, endpoints, limits, rules; per interface: qdiscs and offloads."""
        assert self.mininet is not None
        out: dict[str, Any] = {"hosts": {}, "interfaces": {}, "links": {}, "switch": self.plan.switch,
                               "routers": {r.name: routers.describe(self.mininet[r.name]) for r in self.plan.routers},
                               "controller": self.controller.describe() if self.controller else {"kind": "none"}}
        for pl, link in zip(self.plan.links, self.mininet.links):
            out["links"][pl.name] = link.describe()
        for h in self.plan.hosts:
            node = self.mininet[h.name]
            ns = netns_path(node)
            with MPTCP(netns=ns) as mp:
                eps = [{k.removeprefix("MPTCP_PM_ADDR_ATTR_").lower(): v
                        for k, v in e.get_attr("MPTCP_PM_ATTR_ADDR")["attrs"]}
                       for e in mp.endpoint("show")]
                for e in eps:
                    e["flag_names"] = flag_names(e.get("flags") or 0)
                lim = mp.limits("show")[0]
                limits = {"subflows": lim.get_attr("MPTCP_PM_ATTR_SUBFLOWS"),
                          "add_addr_accepted": lim.get_attr("MPTCP_PM_ATTR_RCV_ADD_ADDRS")}
            r = node_run(node, ["sysctl", "-a", "--pattern", r"^net\.(mptcp\.|ipv4\.tcp_congestion_control|ipv4\.tcp_rto_min_us)"])
            sysctls = dict(line.split(" = ", 1) for line in r.stdout.splitlines() if " = " in line)
            rules = node_run(node, ["ip", "-j", "rule", "show"]).stdout
            out["hosts"][h.name] = {"endpoints": eps, "limits": limits, "sysctls": sysctls,
                                    "rules": _json_or_text(rules)}
        for node in self.mininet.hosts + self.mininet.switches:
            for intf in node.intfList():
                if intf.name == "lo" or not hasattr(intf, "qdiscs"):
                    continue
                out["interfaces"][intf.name] = {
                    "node": node.name,
                    "shaping": getattr(intf, "shaping", None),
                    "qdiscs": intf.qdiscs(),
                    "offloads": offloads(node, intf.name),
                }
        return out

    # ------------------------------------------------------------------ tear down

    def stop(self) -> None:
        from .registry import CleanReport, clean_state

        t0 = time.monotonic()
        try:
            if self.controller is not None:
                self.controller.stop()
        finally:
            try:
                if self.mininet is not None:
                    self.mininet.stop()
            finally:
                self.mininet = None
                # Whatever Mininet did not remove (processes we spawned, a half-built bridge), we do.
                clean_state(self.registry.state, CleanReport())
                self.registry.forget_network()
                self.timings["teardown_s"] = time.monotonic() - t0


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


#: Link statistics that are levels, not counts (left as read, never subtracted).
GAUGES = frozenset({"queued", "max_backlog_pkts", "max_backlog_bytes", "down"})


def counted_since(now: dict[str, Any], before: dict[str, Any] | None, keep: set[str]) -> dict[str, Any]:
    """``now`` with every count (a number not named in ``keep``) less its value in ``before``."""
    if before is None:
        return now
    out: dict[str, Any] = {}
    for k, v in now.items():
        was = before.get(k) if isinstance(before, dict) else None
        if isinstance(v, dict):
            out[k] = counted_since(v, was if isinstance(was, dict) else None, keep)
        elif (isinstance(v, (int, float)) and not isinstance(v, bool) and k not in keep
              and isinstance(was, (int, float)) and not isinstance(was, bool)):
            out[k] = v - was
        else:
            out[k] = v
    return out


class NetworkSession:
    """The network across the points of a sweep: kept, with its links changed in place, when
    the next point differs only in link parameters; torn down and built again otherwise."""

    def __init__(self, caps: Capabilities, registry: Registry,
                 make_controller: Callable[[Experiment, Plan], Any]):
        self.caps = caps
        self.registry = registry
        self.make_controller = make_controller
        self.network: Network | None = None
        self.point_id = ""  # the point the running network runs (its link_stats key)
        self._spec: dict[str, Any] | None = None  # the experiment the network runs, as data
        self.timings: dict[str, float] = {"reconfigure_s": 0.0}
        self.link_stats: dict[str, Any] = {}
        self._counted: dict[str, Any] | None = None  # the links' statistics when the last point ended

    def ensure(self, point_id: str, exp: Experiment, plan: Plan) -> Network:
        """The running network for this point."""
        from .sweep import link_only_change

        spec = exp.model_dump(mode="json")
        if self.network is not None and self._spec is not None and link_only_change(self._spec, spec):
            t0 = time.monotonic()
            if self.network.change_links(plan):
                self.timings["reconfigure_s"] += time.monotonic() - t0
                self._spec, self.point_id = spec, point_id
                return self.network
        self.close()
        net = Network(plan, self.caps, self.registry, shaper=exp.emulation.shaper, seed=exp.emulation.seed,
                      controller=self.make_controller(exp, plan))
        self.network, self.point_id = net, point_id  # a half-built network is torn down by close()
        self._counted = None
        net.start()
        self._spec = spec
        return net

    def point_done(self, point_id: str) -> None:
        """Record the links' statistics of the point that just ran (link_stats[point_id]): the
        emulators count from their start, so on a network kept across points each point gets
        the counters' growth since the previous one; settings are the point's own."""
        self.point_id = point_id
        net = self.network
        if net is None or net.mininet is None or point_id in self.link_stats:
            return
        try:
            names = [pl.name for pl in net.plan.links]
            # parallel links share a name (h1-h2 twice): those are told apart by their index
            now = {(pl.name if names.count(pl.name) == 1 else f"links[{pl.index}]"): net.link(pl.index).stats()
                   for pl in net.plan.links}
            settings = set().union(*(emulator_settings(d) for pl in net.plan.links for d in (pl.up, pl.down)))
            self.link_stats[point_id] = counted_since(now, self._counted, settings | GAUGES)
            self._counted = now
        except Exception as e:  # statistics are a courtesy; the run goes on
            self.link_stats[point_id] = {"error": f"{type(e).__name__}: {e}"}

    def close(self) -> None:
        if self.network is not None:
            self.point_done(self.point_id)
        net, self.network = self.network, None
        if net is None:
            return
        net.stop()
        for k in ("build_s", "configure_s", "teardown_s"):
            self.timings[k] = self.timings.get(k, 0.0) + net.timings.get(k, 0.0)


def _check_endpoints_read_back(host: str, wanted: Any, mp: Any) -> None:
    """Every endpoint as the kernel keeps it has the flags asked for: a kernel that does not know
    a flag (laminar before Linux 6.18) drops it silently, and the run would measure something
    else than the spec says."""
    got = {}
    for e in mp.endpoint("show"):
        attrs = dict(e.get_attr("MPTCP_PM_ATTR_ADDR")["attrs"])
        got[attrs.get("MPTCP_PM_ADDR_ATTR_ID")] = attrs.get("MPTCP_PM_ADDR_ATTR_FLAGS") or 0
    for ep in wanted:
        missing = set(ep.flags) - set(flag_names(got.get(ep.id, 0)))
        if missing:
            raise NetworkError(f"mptcp.hosts.{host}.endpoints.{ep.interface}: this kernel dropped the flag(s) "
                               f"{', '.join(sorted(missing))} (laminar needs Linux 6.18 or newer); remove them")

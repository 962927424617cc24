"""The network stage: builds and tears down exactly what the plan says.

Mininet hosts and Open vSwitch switches (kernel datapath where the kernel has it, else the
userspace datapath with offloads off on every veth, without which TCP hangs), links shaped by
:mod:`mptcplab.links`, then per host over netlink (pyroute2): addresses, one routing table and one
``ip rule`` per address (so a subflow bound to an address leaves through its own interface), and
the MPTCP endpoints and limits. Everything created is recorded in the :class:`Registry` first, so
that :meth:`Network.stop` -- and ``mptcplab clean`` after a SIGKILL -- remove exactly that.

The only stage that needs root, with traffic.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from functools import partial
from typing import Any

from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.node import Host, OVSSwitch
from mininet.topo import Topo
from pyroute2 import MPTCP, IPRoute

from .capabilities import Capabilities
from .links import DIRECTION_KEYS, EmuLink, LinkEmulationError, choose_backend, directions, node_run
from .plan import Plan, PlanHost
from .registry import ALIAS_PREFIX, BRIDGE_TAG, Registry

OFFLOADS = ("tx", "rx", "tso", "gso", "gro")
_OFFLOAD_NAMES = {
    "tx-checksumming": "tx", "rx-checksumming": "rx", "tcp-segmentation-offload": "tso",
    "generic-segmentation-offload": "gso", "generic-receive-offload": "gro",
}


class NetworkError(RuntimeError):
    """The network could not be built or does not work as planned."""


class PreflightError(NetworkError):
    """This machine cannot run this plan; nothing was created. ``problems``: one line each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class LabSwitch(OVSSwitch):
    """An OVS bridge tagged with the run id, so cleanup can prove it is ours."""

    def __init__(self, name: str, run_id: str = "", **params: Any):
        self.run_id = run_id
        params.setdefault("failMode", "standalone")
        OVSSwitch.__init__(self, name, **params)

    def bridgeOpts(self) -> str:
        return OVSSwitch.bridgeOpts(self) + f" external-ids:{BRIDGE_TAG}={self.run_id}"


def netns_path(node: Any) -> str:
    return f"/proc/{node.pid}/ns/net"


def _ovs_bridges() -> list[str]:
    r = subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True, text=True, check=False)
    return r.stdout.split()


def link_backends(plan: Plan, shaper: str, netem: bool, problems: list[str] | None = None) -> dict[str, str]:
    """The backend each link will use ('netem' or 'userspace'); problems named by link."""
    out = {}
    for link in plan.links:
        up, down = directions(link.params, link.params.get("up"), link.params.get("down"))
        try:
            out[link.name] = choose_backend(shaper, up, down, netem=netem)
        except LinkEmulationError as e:
            if problems is not None:
                problems.append(f"links[{link.index}] ({link.name}): {e}")
    return out


def preflight(plan: Plan, caps: Capabilities, shaper: str = "auto") -> None:
    """Everything that would stop a run, checked before anything is created."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("mptcplab builds networks with Mininet and needs root: run it with sudo")
    if not caps.mptcp_enabled:
        problems.append("net.mptcp.enabled is not 1 on this machine: sysctl -w net.mptcp.enabled=1")
    if caps.mininet is None:
        problems.append("Mininet is not importable: apt-get install mininet and use a venv made with "
                        "/usr/bin/python3 -m venv --system-site-packages (make setup does both)")
    if not caps.ovs_installed:
        problems.append("Open vSwitch is missing: apt-get install openvswitch-switch (make setup)")
    if caps.iperf3 is None:
        problems.append("iperf3 is missing: apt-get install iperf3 (make setup)")
    if caps.iperf3_mptcp == "none":
        problems.append(f"iperf3 {caps.iperf3} has no --mptcp and mptcpize is missing: apt-get install mptcpize")
    if not caps.ethtool:
        problems.append("ethtool is missing: apt-get install ethtool (make setup)")
    backends = link_backends(plan, shaper, caps.netem, problems)
    if "userspace" in backends.values():
        from .emulator import EmulatorError, binary

        try:
            binary()
        except EmulatorError as e:
            problems.append(str(e))
    for h in plan.hosts:
        cc = h.mptcp.congestion_control
        if cc and caps.congestion_controls and cc not in caps.congestion_controls:
            problems.append(f"mptcp.congestion_control: {cc!r} is not available here "
                            f"(available: {', '.join(caps.congestion_controls)})")
        if h.mptcp.scheduler not in caps.schedulers:
            problems.append(f"mptcp.scheduler: {h.mptcp.scheduler!r} is not available here "
                            f"(available: {', '.join(caps.schedulers)})")
    if caps.ovs_installed and os.geteuid() == 0:
        existing = set(_ovs_bridges())
        for s in plan.switches:
            if s.name in existing:
                problems.append(f"switches: an OVS bridge named {s.name!r} already exists and was not "
                                "created by this run; rename the switch in the topology (mptcplab "
                                "never deletes bridges it did not create)")
    taken = set(os.listdir("/sys/class/net"))
    for name in plan.interface_names() + [s.name for s in plan.switches]:
        if name in taken:
            problems.append(f"an interface named {name!r} already exists in the root namespace; "
                            "rename the node or remove that interface (`mptcplab clean` removes "
                            "leftovers of killed runs)")
    if problems:
        raise PreflightError(sorted(set(problems), key=problems.index))


class Network:
    """A running emulated network. Use as a context manager: it always tears down."""

    def __init__(self, plan: Plan, caps: Capabilities, registry: Registry, shaper: str = "auto",
                 seed: int = 1, controller: Any = None):
        self.controller = controller  # StaticController / PoxController / None (learning switches)
        self.signal_ports: dict[str, tuple[int, ...]] = {}
        self.shaper = shaper
        self.seed = seed
        self.plan = plan
        self.caps = caps
        self.registry = registry
        self.net: Mininet | None = None
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ build

    def _topo(self) -> Topo:
        topo = Topo()
        for h in self.plan.hosts:
            topo.addHost(h.name, ip=None)
        for s in self.plan.switches:
            topo.addSwitch(s.name, dpid=s.dpid)
        for link in self.plan.links:
            p = link.params
            topo.addLink(
                link.intf1.node, link.intf2.node,
                port1=link.intf1.port, port2=link.intf2.port,
                intfName1=link.intf1.name, intfName2=link.intf2.name,
                bw=p["bw"], delay=p["delay"], jitter=p["jitter"], loss=p["loss"], queue=p["queue"],
                queue_bytes=p.get("queue_bytes"), burst_loss=p.get("burst_loss"), reorder=p.get("reorder", False),
                up=p.get("up"), down=p.get("down"), shaper=self.shaper, seed=self.seed + link.index,
            )
        return topo

    def start(self) -> "Network":
        t0 = time.monotonic()
        setLogLevel("warning")
        root_intfs = [i.name for link in self.plan.links for i in (link.intf1, link.intf2)
                      if i.node not in {h.name for h in self.plan.hosts}]
        # Intent first: should we die from here on, `mptcplab clean` knows what to look for.
        self.registry.bridges([s.name for s in self.plan.switches])
        self.registry.interfaces(root_intfs + ([s.name for s in self.plan.switches]
                                               if self.caps.datapath == "user" else []))
        # With a controller the switches must not fall back to flooding (loops): secure mode.
        switch = partial(LabSwitch, run_id=self.registry.run_id, datapath=self.caps.datapath,
                         failMode="secure" if self.controller else "standalone")
        self.net = Mininet(topo=self._topo(), switch=switch, host=Host, link=EmuLink,
                           controller=None, autoSetMacs=True, build=False)
        from . import emulator

        emulator.on_process_started.append(self.registry.process)
        try:
            self.net.build()
        finally:
            emulator.on_process_started.remove(self.registry.process)
        for node in self.net.hosts + self.net.switches:
            self.registry.process(node.pid, ["mininet", node.name])
        for host in self.net.hosts:
            self.registry.namespace(host.pid)
        self._tag_root_interfaces(root_intfs)
        self.net.start()
        self._reshape_switch_ports()
        self.timings["build_s"] = time.monotonic() - t0
        t1 = time.monotonic()
        self._offloads_off()
        if self.controller is not None:
            self.controller.start(self)
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
        assert self.net is not None
        for sw in self.net.switches:
            for intf in sw.intfList():
                if hasattr(intf, "apply_shaping"):
                    intf.apply_shaping()
        problems = [p for node in self.net.hosts + self.net.switches for intf in node.intfList()
                    if hasattr(intf, "check_shaping") for p in intf.check_shaping()]
        if problems:
            raise NetworkError("links are not what the spec says:\n  " + "\n  ".join(problems))

    def _offloads_off(self) -> None:
        """Offloads off on every veth: the userspace datapath needs it, and htb is exact only
        on wire-sized packets (TSO/GSO would hand it 64 KB super-packets)."""
        assert self.net is not None
        for node in self.net.hosts + self.net.switches:
            for intf in node.intfList():
                if intf.name == "lo" or intf.name == node.name:
                    continue
                argv = ["ethtool", "-K", intf.name]
                for feature in OFFLOADS:
                    argv += [feature, "off"]
                r = node_run(node, argv)
                if r.returncode not in (0, 80):  # 80: some features were already fixed
                    raise NetworkError(f"{intf.name}: ethtool -K failed: {r.stderr.strip()}")

    def _configure_host(self, h: PlanHost) -> None:
        assert self.net is not None
        node = self.net[h.name]
        ns = netns_path(node)
        with IPRoute(netns=ns) as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=lo, state="up")
            for intf in h.intfs:
                idx = ipr.link_lookup(ifname=intf.name)[0]
                ipr.flush_addr(index=idx)
                ipr.addr("add", index=idx, address=intf.ip, prefixlen=int(intf.address.split("/")[1]))
                ipr.link("set", index=idx, state="up")
                ipr.route("add", dst=intf.subnet, oif=idx, prefsrc=intf.ip, table=intf.table)
                ipr.rule("add", src=intf.ip, src_len=32, table=intf.table, priority=intf.rule_priority)
        # Several interfaces of one host may share a subnet: answer ARP only for the address of
        # the interface asked, and source ARP from the outgoing interface (no ARP flux).
        sysctls = [f"net.mptcp.enabled={1 if h.mptcp.enabled else 0}",
                   "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"]
        if os.path.exists("/proc/sys/net/mptcp/scheduler"):
            sysctls.append(f"net.mptcp.scheduler={h.mptcp.scheduler}")
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
        self.signal_ports[h.name] = ()
        self.set_signal_ports(h.name, h.mptcp.signal_ports)

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

    def _wait_connectivity(self, timeout: float = 10.0) -> None:
        """Every client address reaches the server address on its segment (learns L2 too)."""
        assert self.net is not None
        client = self.plan.host(self.plan.client)
        server = self.plan.host(self.plan.server)
        node = self.net[client.name]
        for ci in client.intfs:
            peers = [si for si in server.intfs if si.segment == ci.segment]
            for si in peers:
                deadline = time.monotonic() + timeout
                while True:
                    r = node_run(node, ["ping", "-n", "-q", "-c", "1", "-W", "1", "-I", ci.ip, si.ip])
                    if r.returncode == 0:
                        break
                    if time.monotonic() > deadline:
                        raise NetworkError(f"no connectivity from {ci.name} ({ci.ip}) to "
                                           f"{si.name} ({si.ip}) after {timeout:.0f} s")
                    time.sleep(0.2)

    # ------------------------------------------------------------------ use

    def node(self, name: str) -> Any:
        assert self.net is not None
        return self.net[name]

    def spawn(self, node_name: str, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        """Start a process inside a host, recorded in the registry by PID."""
        p = self.node(node_name).popen(argv, **kwargs)
        self.registry.process(p.pid, argv)
        return p

    # ------------------------------------------------------------------ links in place

    def link(self, name: str | int) -> EmuLink:
        """A running link by its spec name (``h1-s1``) or index in the topology's links."""
        assert self.net is not None
        index = name if isinstance(name, int) else next(
            (l.index for l in self.plan.links if l.name == name), None)
        if index is None or not 0 <= index < len(self.net.links):
            raise KeyError(f"no link {name!r} (links: {', '.join(l.name for l in self.plan.links)})")
        return self.net.links[index]

    def set_link(self, name: str | int, **params: Any) -> None:
        """Change a running link's rate, delay, jitter, loss or queue (``up=``/``down=`` for one
        direction) without rebuilding the network."""
        self.link(name).set_params(**params)

    def apply_links(self, plan: Plan) -> bool:
        """Change the running links to a new plan's parameters in place (a sweep's next point).

        False when that cannot be done in place (a link built without emulation, or a change
        that needs another backend): the caller rebuilds the network then.
        """
        changes = [(new.index, new.params) for old, new in zip(self.plan.links, plan.links)
                   if old.params != new.params]
        try:
            for index, params in changes:
                self.link(index).set_params(up=params.get("up") or {}, down=params.get("down") or {},
                                            **{k: params.get(k) for k in DIRECTION_KEYS})
        except LinkEmulationError:
            return False
        self.plan = plan
        return True

    def queued(self) -> int:
        """Frames waiting in the links right now (emulator queues, qdisc backlogs)."""
        assert self.net is not None
        total = 0
        for link in self.net.links:
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

    def set_link_down(self, name: str | int, down: bool = True) -> None:
        self.link(name).set_down(down)

    @property
    def backends(self) -> dict[str, str]:
        assert self.net is not None
        return {pl.name: link.backend for pl, link in zip(self.plan.links, self.net.links)}

    @property
    def shaping_backend(self) -> str:
        """netem / userspace, or 'mixed: ...'; links with nothing to emulate ('plain') aside."""
        kinds = sorted(set(self.backends.values()) - {"plain"}) or ["plain"]
        return kinds[0] if len(kinds) == 1 else "mixed: " + ", ".join(kinds)

    # ------------------------------------------------------------------ describe

    def describe(self) -> dict[str, Any]:
        """Per host: sysctls, endpoints, limits, rules; per interface: qdiscs and offloads."""
        assert self.net is not None
        out: dict[str, Any] = {"hosts": {}, "interfaces": {}, "links": {},
                               "controller": self.controller.describe() if self.controller else {"kind": "none"}}
        for pl, link in zip(self.plan.links, self.net.links):
            out["links"][pl.name] = link.describe()
        for h in self.plan.hosts:
            node = self.net[h.name]
            ns = netns_path(node)
            with MPTCP(netns=ns) as mp:
                eps = [{k.removeprefix("MPTCP_PM_ADDR_ATTR_").lower(): v
                        for k, v in e.get_attr("MPTCP_PM_ATTR_ADDR")["attrs"]}
                       for e in mp.endpoint("show")]
                lim = mp.limits("show")[0]
                limits = {"subflows": lim.get_attr("MPTCP_PM_ATTR_SUBFLOWS"),
                          "add_addr_accepted": lim.get_attr("MPTCP_PM_ATTR_RCV_ADD_ADDRS")}
            r = node_run(node, ["sysctl", "-a", "--pattern", r"^net\.(mptcp\.|ipv4\.tcp_congestion_control)"])
            sysctls = dict(line.split(" = ", 1) for line in r.stdout.splitlines() if " = " in line)
            rules = node_run(node, ["ip", "-j", "rule", "show"]).stdout
            out["hosts"][h.name] = {"endpoints": eps, "limits": limits, "sysctls": sysctls,
                                    "rules": _json_or_text(rules)}
        for node in self.net.hosts + self.net.switches:
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
        t0 = time.monotonic()
        if self.controller is not None:
            self.controller.stop()
        if self.net is not None:
            try:
                self.net.stop()
            finally:
                self.net = None
        # Whatever Mininet did not remove (processes we spawned, a half-built bridge), we do.
        from .registry import CleanReport, clean_state

        clean_state(self.registry.state, CleanReport())
        self.registry.release()
        self.timings["teardown_s"] = time.monotonic() - t0

    def __enter__(self) -> "Network":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _json_or_text(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def offloads(node: Any, ifname: str) -> dict[str, str]:
    r = node_run(node, ["ethtool", "-k", ifname])
    found = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^([a-z-]+): (on|off)", line)
        if m and m.group(1) in _OFFLOAD_NAMES:
            found[_OFFLOAD_NAMES[m.group(1)]] = m.group(2)
    return found

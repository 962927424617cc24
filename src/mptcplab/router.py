"""Routers on the running network: a Mininet Node in a namespace of its own, forwarding in Linux.

The kernel does all a router does -- TTL decrement, ICMP time exceeded quoting the offending
packet (up to 576 bytes, so a probe's TCP options come back), forwarding by the routes the plan
computed (mptcplab.forwarding). Here: the sysctls that make a namespace a router which answers
every probe (no ICMP rate limit; rp_filter off, as routes may be asymmetric), set with an
argument list in the node, and its addresses and routes over netlink.
"""

from __future__ import annotations

from typing import Any

from mininet.node import Node
from pyroute2 import IPRoute

from .forwarding import PlanRoute, PlanRouter
from .proc import node_run

#: The main routing table's number (RT_TABLE_MAIN).
MAIN_TABLE = 254


class LabRouter(Node):
    """A Mininet Node in its own network namespace; :func:`configure` makes it forward."""


def sysctls(router: PlanRouter) -> list[str]:
    """What makes the namespace an IP router that answers every probe."""
    out = ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.forwarding=1",
           "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
           "net.ipv4.icmp_ratelimit=0", "net.ipv4.icmp_msgs_per_sec=1000000", "net.ipv4.icmp_msgs_burst=1000000"]
    out += [f"net.ipv4.conf.{i.name}.rp_filter=0" for i in router.intfs]
    return out


def add_routes(ipr: IPRoute, routes: tuple[PlanRoute, ...]) -> None:
    """The plan's routes: each segment via its next hop, in its table (None: main)."""
    for r in routes:
        idx = ipr.link_lookup(ifname=r.dev)[0]
        ipr.route("add", dst=r.dst, gateway=r.via, oif=idx, table=r.table if r.table is not None else MAIN_TABLE)


def configure(node: Any, router: PlanRouter, netns: str) -> None:
    """Addresses up, routes in, forwarding on."""
    r = node_run(node, ["sysctl", "-q", "-w", *sysctls(router)])
    if r.returncode != 0:
        raise RuntimeError(f"{router.name}: sysctl failed: {r.stderr.strip()}")
    with IPRoute(netns=netns) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        for intf in router.intfs:
            idx = ipr.link_lookup(ifname=intf.name)[0]
            ipr.flush_addr(index=idx)
            ipr.addr("add", index=idx, address=intf.ip, prefixlen=intf.prefixlen)
            ipr.link("set", index=idx, state="up")
        add_routes(ipr, router.routes)


def describe(node: Any) -> dict[str, Any]:
    """What the router runs with, for metadata.json: its routes and forwarding sysctls."""
    import json

    routes = node_run(node, ["ip", "-j", "route", "show"]).stdout
    r = node_run(node, ["sysctl", "-a", "--pattern", r"^net\.ipv4\.(ip_forward|icmp_ratelimit|icmp_msgs_per_sec)$"])
    try:
        parsed: Any = json.loads(routes)
    except ValueError:
        parsed = routes
    return {"routes": parsed, "sysctls": dict(line.split(" = ", 1) for line in r.stdout.splitlines() if " = " in line)}

"""A host's interfaces, addresses and MPTCP endpoints changed while a test runs -- over netlink
in the host's namespace (pyroute2), never a shell -- and put back as the plan has them.

What each event does is what the host would see in the field:
- ``down`` / ``up``: the interface goes down (its routes go with it: the kernel flushes them) and
  comes back (the routes of its table are added again).
- ``address-del`` / ``address-add``: the address leaves the interface (a handover: the routes
  that use it as source go too) and comes back with its routes. The endpoint is left alone, as
  the in-kernel path manager leaves it: pair it with ``endpoint-del`` for what mptcpd does.
- ``endpoint-del`` / ``endpoint-add``: the MPTCP endpoint is removed (REMOVE_ADDR to the peer,
  its subflows closed) or added again with the test's flags.
- ``backup`` / ``active``: the endpoint's backup flag set or cleared (MPTCP_PM_CMD_SET_FLAGS:
  MP_PRIO on every subflow from that address).

Which endpoints are backups during a test (a variant's ``backup:``) is the network's state
``backups``; ``endpoint-add`` and the restore after a test honour it.
"""

from __future__ import annotations

import errno
from typing import Any

from pyroute2 import MPTCP, IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic.mptcp import MPTCP_PM_CMD_SET_FLAGS, mptcp_msg

from .ids import host_of
from .plan import FLAG_BITS, PlanEndpoint, PlanIntf

BACKUP = FLAG_BITS["backup"]


def _planned(net: Any, ifname: str) -> tuple[str, PlanIntf, PlanEndpoint | None]:
    host = net.plan.host(host_of(ifname))
    intf = next((i for i in host.intfs if i.name == ifname), None)
    if intf is None:
        raise KeyError(f"no host interface {ifname!r}")
    return host.name, intf, next((e for e in host.mptcp.endpoints if e.interface == ifname), None)


def _ns(net: Any, host: str) -> str:
    from .network import netns_path

    return netns_path(net.node(host))


def _tolerate(code: int, fn: Any, *args: Any, **kwargs: Any) -> None:
    """A netlink call whose ``code`` error means it is already done (EEXIST on add, ...)."""
    try:
        fn(*args, **kwargs)
    except NetlinkError as e:
        if e.code != code:
            raise


def _routes(ipr: IPRoute, idx: int, intf: PlanIntf) -> None:
    """The interface's own table (its subnet, source its address), as the network built it."""
    ipr.route("replace", dst=intf.subnet, oif=idx, prefsrc=intf.ip, table=intf.table)


def _flags(net: Any, ep: PlanEndpoint) -> int:
    """The endpoint's flags during the current test: as planned, plus backup when the test wants it."""
    bits = ep.flag_bits
    return bits | BACKUP if ep.interface in net.backups else bits


def set_endpoint_flags(mp: MPTCP, ep_id: int, flags: int) -> None:
    """MPTCP_PM_CMD_SET_FLAGS by endpoint id (pyroute2 0.9 has no verb for it). The kernel changes
    only backup and fullmesh, and sends MP_PRIO on the subflows when backup changes."""
    msg = mptcp_msg()
    msg["cmd"] = MPTCP_PM_CMD_SET_FLAGS
    msg["version"] = 1
    msg["attrs"] = [("MPTCP_PM_ATTR_ADDR", {"attrs": [("MPTCP_PM_ADDR_ATTR_ID", ep_id),
                                                       ("MPTCP_PM_ADDR_ATTR_FLAGS", flags)]}, 0x8000)]
    mp._run_sync_cleanup(mp.asyncore.nlm_request, msg, msg_type=mp.asyncore.prid,
                         msg_flags=NLM_F_REQUEST | NLM_F_ACK)


def apply(net: Any, ifname: str, action: str) -> None:
    """Carry out one interface event (see the module's docstring)."""
    host, intf, ep = _planned(net, ifname)
    ns = _ns(net, host)
    if action in ("down", "up", "address-del", "address-add"):
        with IPRoute(netns=ns) as ipr:
            idx = ipr.link_lookup(ifname=ifname)[0]
            if action == "down":
                ipr.link("set", index=idx, state="down")
            elif action == "up":
                ipr.link("set", index=idx, state="up")
                _routes(ipr, idx, intf)
            elif action == "address-del":
                _tolerate(errno.EADDRNOTAVAIL, ipr.addr, "del", index=idx, address=intf.ip, prefixlen=intf.prefixlen)
            else:
                _tolerate(errno.EEXIST, ipr.addr, "add", index=idx, address=intf.ip, prefixlen=intf.prefixlen)
                _routes(ipr, idx, intf)
        return
    if ep is None:  # the plan refuses such events; a spec read back from disk could still carry one
        raise KeyError(f"{ifname} has no MPTCP endpoint")
    with MPTCP(netns=ns) as mp:
        if action == "endpoint-del":
            _tolerate(errno.EINVAL, mp.endpoint, "del", id=ep.id)
        elif action == "endpoint-add":
            _tolerate(errno.EEXIST, mp.endpoint, "add", addr=ep.address, id=ep.id, flags=_flags(net, ep))
        elif action in ("backup", "active"):
            set_endpoint_flags(mp, ep.id, ep.flag_bits | BACKUP if action == "backup" else ep.flag_bits & ~BACKUP)
        else:
            raise ValueError(f"unknown interface action {action!r}")


def restore(net: Any, ifname: str) -> None:
    """The interface as the plan built it: up, its address and table route, its endpoint with
    the current test's flags."""
    host, intf, ep = _planned(net, ifname)
    ns = _ns(net, host)
    with IPRoute(netns=ns) as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        ipr.link("set", index=idx, state="up")
        _tolerate(errno.EEXIST, ipr.addr, "add", index=idx, address=intf.ip,
                  prefixlen=intf.prefixlen)
        _routes(ipr, idx, intf)
    if ep is not None:
        with MPTCP(netns=ns) as mp:
            got = {dict(e.get_attr("MPTCP_PM_ATTR_ADDR")["attrs"]).get("MPTCP_PM_ADDR_ATTR_ID"): e
                   for e in mp.endpoint("show")}
            if ep.id not in got:
                mp.endpoint("add", addr=ep.address, id=ep.id, flags=_flags(net, ep))
            else:
                set_endpoint_flags(mp, ep.id, _flags(net, ep))


def set_backups(net: Any, ifnames: tuple[str, ...]) -> None:
    """Make exactly these interfaces' endpoints backups (a test's variant), the others as
    planned; only the endpoints whose flag changes are touched."""
    wanted = frozenset(ifnames)
    for ifname in sorted(wanted ^ net.backups):
        host, _, ep = _planned(net, ifname)
        assert ep is not None  # the plan checked it
        with MPTCP(netns=_ns(net, host)) as mp:
            set_endpoint_flags(mp, ep.id, ep.flag_bits | BACKUP if ifname in wanted else ep.flag_bits & ~BACKUP)
    net.backups = wanted

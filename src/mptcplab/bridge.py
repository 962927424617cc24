"""A Linux bridge as a Mininet switch: the kernel's own learning switch, for networks that need no
OpenFlow controller.

Why: on a kernel without the Open vSwitch module every frame crosses OVS's userspace datapath
(AF_PACKET on each veth, a copy and a wake-up per frame in ``ovs-vswitchd``), which costs more CPU
per Mbit/s than anything else in a run (bench/toolkit.py). A Linux bridge forwards in the
kernel's softirq, as a hardware switch would forward in its ASIC. It cannot be programmed by a
controller, so the plan picks it only where no controller is needed (``emulation.switch: auto``,
:func:`mptcplab.plan.switch_kind`); loops are refused either way (no STP on either switch).

Safety as root on a shared machine, as for :class:`mptcplab.switch.LabSwitch`:

* the name and run id are checked with ``fullmatch`` before anything is created;
* the bridge is created over netlink (pyroute2, no shell); if a device of that name exists the
  create fails and nothing is touched (:class:`BridgeExistsError` says so);
* it carries ``mptcplab:<run id>`` as its interface alias (what ``mptcplab clean`` looks for),
  and is deleted only while it has that alias and the ifindex it was created with.
"""

from __future__ import annotations

import errno
import logging
from typing import Any, Sequence

from mininet.node import Switch
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .ids import check_run_id
from .registry import ALIAS_PREFIX
from .switch import SWITCH_NAME, BridgeExistsError, RunSwitch, SwitchError

log = logging.getLogger(__name__)


class LabBridge(RunSwitch, Switch):
    """A Linux bridge tagged with the run id (module doc). Mininet parameters of OVS switches
    that mean nothing here (``failMode``, ``datapath``, ``protocols``) are refused by the plan,
    which passes none."""

    def __init__(self, name: str, run_id: str, dpid: str | None = None, **params: Any):
        check_run_id(run_id, "LabBridge run_id")
        if not isinstance(name, str) or not SWITCH_NAME.fullmatch(name):
            raise ValueError(f"LabBridge name: {name!r} is not a switch name (a letter, then at most 9 "
                             "letters, digits or '_')")
        if params.get("inNamespace"):
            raise ValueError("LabBridge inNamespace: the bridge lives in the root namespace")
        self.run_id = run_id
        self._ifindex: dict[str, int] = {}  # set before Switch.__init__, which adds 'lo'
        self.bridge_index: int | None = None
        Switch.__init__(self, name, dpid=dpid, **params)

    @property
    def tag(self) -> str:
        return ALIAS_PREFIX + self.run_id

    def start(self, controllers: Sequence[Any]) -> None:
        """Create the bridge (STP off, no forwarding delay, no multicast snooping: it floods
        what it has not learnt, as OVS's standalone mode does), tag it, enslave the data ports and
        bring everything up."""
        if controllers:
            raise SwitchError(f"switch {self.name}: a Linux bridge cannot be programmed by a controller; "
                              "use emulation.switch: ovs")
        with IPRoute() as ipr:
            try:
                ipr.link("add", ifname=self.name, kind="bridge", br_stp_state=0, br_forward_delay=0,
                         br_mcast_snooping=0)
            except NetlinkError as e:
                if e.code == errno.EEXIST:
                    raise BridgeExistsError(
                        f"switch {self.name}: a network device named {self.name} already exists; mptcplab "
                        "never replaces a device it did not create and left it as it was. Rename the switch "
                        "in the topology, or, if it is a leftover of an mptcplab run, run `mptcplab clean`.") from None
                raise SwitchError(f"switch {self.name}: cannot create the Linux bridge: {e}") from None
            try:
                (idx,) = ipr.link_lookup(ifname=self.name)
                ipr.link("set", index=idx, ifalias=self.tag)
            except Exception:
                # ours (the add fails on anyone else's device of that name) but not tagged yet,
                # so `mptcplab clean` would leave it alone: remove it now
                ipr.link("del", ifname=self.name)
                raise
            self.bridge_index = idx
            for intf in self.data_intfs():
                port = self._ifindex.get(intf.name)
                if port is None:
                    raise SwitchError(f"switch {self.name}: port {intf.name} was not made for it")
                ipr.link("set", index=port, master=idx, state="up")
            ipr.link("set", index=idx, state="up")

    def remove_bridge(self) -> bool:
        """Delete the bridge if it is still the one this switch created (same ifindex, this run's
        alias); else leave it and warn. Its ports stay (they go with their links)."""
        if self.bridge_index is None:
            return False
        idx, self.bridge_index = self.bridge_index, None
        with IPRoute() as ipr:
            try:
                (link,) = ipr.get_links(idx)
            except NetlinkError:
                return False  # gone already
            if link.get_attr("IFLA_IFNAME") != self.name or link.get_attr("IFLA_IFALIAS") != self.tag:
                log.warning("%s: leaving device %s alone: it is not the bridge this run created", self.name,
                            link.get_attr("IFLA_IFNAME"))
                return False
            try:
                ipr.link("del", index=idx)
            except NetlinkError as e:
                if e.code != errno.ENODEV:
                    raise SwitchError(f"switch {self.name}: cannot delete the Linux bridge: {e}") from None
        return True

    def connected(self) -> bool:
        return True

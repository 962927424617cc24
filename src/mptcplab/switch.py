"""An Open vSwitch switch for Mininet that runs no shell and deletes only its own bridge.

Mininet's ``OVSSwitch`` builds one ``ovs-vsctl`` command *string* and runs it through the switch's
root bash (``start``), or with ``shell=True`` (``batchStartup``/``batchShutdown``). That string
holds ``-- --if-exists del-br NAME`` and every option value, so a crafted value became a root
command, and two runs (or a user's bridge) with the same switch name destroyed each other:
whoever started second silently deleted the first one's bridge, and whoever stopped first
deleted the other's.

``LabSwitch`` does the same work with argument lists only:

* the constructor checks the switch name, the run id and every option with ``fullmatch`` before
  Mininet starts the switch's shell, so bad input creates nothing;
* ``start`` creates the bridge, its ports and controllers in ONE ``ovs-vsctl`` transaction with
  plain ``add-br`` (no ``--may-exist``, no ``del-br``): if a bridge of that name exists the
  whole transaction fails and nothing is touched -- :class:`BridgeExistsError` says whose it is;
* ``stop``/``batchShutdown`` remove the bridge only if it carries ``external_ids:mptcplab-run``
  equal to this run's id, by the UUID read together with that tag (a bridge deleted and created
  again under the same name in between has another UUID and is left alone);
* interfaces are deleted only if the device still has the ifindex it had when Mininet made it.

OVS removes a userspace (netdev) bridge's tap device itself when the bridge row goes (checked on
OVS 3.1), so there is no ``ip link del NAME`` here. ``TCReapply`` is never called: EmuLink
re-shapes the switch ports after start (network.Network._reshape_switch_ports).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import subprocess
from pathlib import Path
from typing import Any, Iterable, Sequence

from mininet.link import Intf, OVSIntf
from mininet.node import Node, OVSSwitch, Switch

from .ids import IFNAME_MAX, NODE_NAME, check_run_id
from .ovsdb import BRIDGE_TAG, OVSDB_UUID, OvsError, bridge_record, remove_if_tagged, run_vsctl

log = logging.getLogger(__name__)

SWITCH_NAME = NODE_NAME
#: A Linux interface name that cannot be read as an option (no leading '-') or a path.
IFNAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,%d}" % (IFNAME_MAX - 1))
DPID = re.compile(r"[0-9A-Fa-f]{16}")
DPID_PARAM = re.compile(r"[0-9A-Fa-f:]{1,23}")
PROTOCOLS = re.compile(r"OpenFlow1[0-5](,OpenFlow1[0-5])*")
FAIL_MODES = ("secure", "standalone")
DATAPATHS = {"kernel": "system", "user": "netdev"}
CONTROLLER_PROTOCOLS = ("tcp", "ssl")


class SwitchError(OvsError):
    """Open vSwitch refused or failed an operation on a lab switch."""


class BridgeExistsError(SwitchError):
    """A bridge with the switch's name exists already: someone else's, or another run's. The
    preflight refuses such names; this is the race it cannot see (created in between)."""


def _ifindex(name: str) -> int | None:
    """The kernel's index of a root-namespace device: its identity (names can be reused)."""
    if not IFNAME.fullmatch(name):
        return None
    try:
        return int(Path(f"/sys/class/net/{name}/ifindex").read_text())
    except (OSError, ValueError):
        return None


def _check_params(name: object, run_id: object, failMode: object, datapath: object,
                  protocols: object, dpid: object, listenPort: object, reconnectms: object) -> None:
    """Everything that will reach ovs-vsctl, checked before Mininet starts the switch's shell."""
    check_run_id(run_id, "LabSwitch run_id")
    if not isinstance(name, str) or not SWITCH_NAME.fullmatch(name):
        raise ValueError(f"LabSwitch name: {name!r} is not a switch name (a letter, then at most 9 "
                         "letters, digits or '_')")
    if failMode not in FAIL_MODES:
        raise ValueError(f"LabSwitch failMode: {failMode!r} is not one of {', '.join(FAIL_MODES)}")
    if datapath not in DATAPATHS:
        raise ValueError(f"LabSwitch datapath: {datapath!r} is not one of {', '.join(DATAPATHS)}")
    if protocols is not None and not (isinstance(protocols, str) and PROTOCOLS.fullmatch(protocols)):
        raise ValueError(f"LabSwitch protocols: {protocols!r} is not like 'OpenFlow13' or 'OpenFlow10,OpenFlow13'")
    if dpid is not None and not (isinstance(dpid, str) and DPID_PARAM.fullmatch(dpid)
                                 and len(dpid.replace(":", "")) <= 16):
        raise ValueError(f"LabSwitch dpid: {dpid!r} is not a datapath id (at most 16 hex digits)")
    if listenPort is not None and not (type(listenPort) is int and 0 < listenPort < 65536):
        raise ValueError(f"LabSwitch listenPort: {listenPort!r} is not a TCP port")
    if reconnectms is not None and not (type(reconnectms) is int and reconnectms >= 0):
        raise ValueError(f"LabSwitch reconnectms: {reconnectms!r} is not a number of milliseconds")


def _controller_target(c: Any) -> str:
    """'tcp:IP:PORT' for a Mininet controller object, every part checked."""
    proto, ip, port = getattr(c, "protocol", "tcp"), c.IP(), c.port
    if proto not in CONTROLLER_PROTOCOLS:
        raise ValueError(f"controller {c}: protocol {proto!r} is not one of {', '.join(CONTROLLER_PROTOCOLS)}")
    try:
        ipaddress.ip_address(ip)
    except ValueError as e:
        raise ValueError(f"controller {c}: {ip!r} is not an IP address") from e
    if type(port) is not int or not 0 < port < 65536:
        raise ValueError(f"controller {c}: port {port!r} is not a TCP port")
    return f"{proto}:{ip}:{port}"


class RunSwitch:
    """What the Open vSwitch and the Linux bridge switch share: switch-side interfaces deleted
    only if each is still the device Mininet made for this switch (its ifindex), with ``ip link
    del`` as an argument list (Mininet's own ``Intf.delete`` runs a shell string by name); and
    stopping, which removes the switch's bridge only if it is this run's (``remove_bridge``, each
    kind its own way) before the interfaces."""

    _ifindex: dict[str, int]

    def remove_bridge(self) -> bool:
        raise NotImplementedError

    def addIntf(self, intf: Intf, port: int | None = None, **kwargs: Any) -> None:
        """Remember the device's ifindex: at delete time a device of that name is deleted only if
        it is still the one Mininet made for this switch."""
        Node.addIntf(self, intf, port=port, **kwargs)
        if intf.name != "lo":
            idx = _ifindex(intf.name)
            if idx is not None:
                self._ifindex[intf.name] = idx

    def deleteIntfs(self, checkName: bool = True) -> None:
        """Mininet's rule (only interfaces whose name holds the switch's, never 'lo'), with
        ``ip link del`` as an argument list and only on the device this switch was given."""
        for intf in list(self.intfs.values()):
            if intf.name == "lo" or (checkName and self.name not in intf.name):
                continue
            now = _ifindex(intf.name)
            if now is not None:
                if now == self._ifindex.get(intf.name):
                    subprocess.run(["ip", "link", "del", "dev", intf.name], capture_output=True, check=False)
                else:
                    log.warning("%s: leaving interface %s alone: it is not the device this switch was given",
                                self.name, intf.name)
            self._ifindex.pop(intf.name, None)
            self.delIntf(intf)
            intf.link = None

    def data_intfs(self) -> list[Intf]:
        """The interfaces that become bridge ports: numbered, without an IP (as Mininet)."""
        return [i for i in self.intfList() if self.ports[i] and not i.IP()]

    def stop(self, deleteIntfs: bool = True) -> None:
        """Remove our bridge (only ours), then our interfaces (Switch.stop semantics)."""
        try:
            self.remove_bridge()
        finally:
            Switch.stop(self, deleteIntfs)

    @classmethod
    def batchShutdown(cls, switches: Sequence["RunSwitch"], run: Any = None) -> Sequence["RunSwitch"]:
        """Remove each switch's bridge (only if tagged with its run), then end its shell.
        Interfaces go with the links, which Mininet.stop stops first (as upstream). A failure is
        logged, not raised: Mininet.stop would otherwise leave the hosts running, and the run's
        registry cleanup tries the tagged bridges again."""
        for sw in switches:
            try:
                sw.remove_bridge()
            except SwitchError as e:
                log.error("%s", e)
        for sw in switches:
            sw.terminate()
        return switches


class LabSwitch(RunSwitch, OVSSwitch):
    """An OVS bridge tagged with the run id, created and removed without a shell (module doc)."""

    def __init__(self, name: str, run_id: str, failMode: str = "standalone", datapath: str = "kernel",
                 protocols: str | None = None, dpid: str | None = None, reconnectms: int | None = 1000,
                 **params: Any):
        _check_params(name, run_id, failMode, datapath, protocols, dpid, params.get("listenPort"), reconnectms)
        if params.get("inNamespace"):
            raise ValueError("LabSwitch inNamespace: an OVS bridge lives in the root namespace")
        self.run_id = run_id
        self._ifindex: dict[str, int] = {}  # set before Switch.__init__, which adds 'lo'
        self._pending: list[str] | None = None
        OVSSwitch.__init__(self, name, failMode=failMode, datapath=datapath, protocols=protocols,
                           dpid=dpid, reconnectms=reconnectms, **params)
        if not DPID.fullmatch(self.dpid):
            self.terminate()
            raise ValueError(f"LabSwitch dpid: {self.dpid!r} is not 16 hex digits")

    def _port_args(self, intf: Intf) -> list[str]:
        """``-- add-port`` for one data port, with the options intfOpts gives (ofport_request,
        patch peer)."""
        name = intf.name
        if not IFNAME.fullmatch(name):
            raise ValueError(f"switch {self.name}: interface name {name!r} is not a Linux interface name")
        port = self.ports[intf]
        if type(port) is not int or not 0 < port < 65280:
            raise ValueError(f"switch {self.name}: port number {port!r} of {name} is not an OpenFlow port")
        args = ["--", "add-port", self.name, name, "--", "set", "Interface", name, f"ofport_request={port}"]
        if isinstance(intf, OVSIntf):
            peer = intf.link.intf1 if intf.link.intf1 is not intf else intf.link.intf2
            if not IFNAME.fullmatch(peer.name):
                raise ValueError(f"switch {self.name}: patch peer {peer.name!r} is not an interface name")
            args += ["type=patch", f'options:peer="{peer.name}"']
        return args

    # ------------------------------------------------------------------ start

    def create_args(self, controllers: Iterable[Any]) -> list[str]:
        """The ovs-vsctl arguments of the one transaction that creates this bridge."""
        targets = [_controller_target(c) for c in controllers]
        if self.listenPort:
            targets.append(f"ptcp:{self.listenPort}")
        args: list[str] = []
        for i, target in enumerate(targets):
            args += ["--", f"--id=@c{i}", "create", "Controller", f'target="{target}"']
            if self.reconnectms:
                args.append(f"max_backoff={self.reconnectms}")
        settings = [
            f"controller=[{','.join(f'@c{i}' for i in range(len(targets)))}]",
            f"fail_mode={self.failMode}",
            f'other_config:datapath-id="{self.dpid}"',
            f'other_config:dp-desc="{self.name}"',
            f"datapath_type={DATAPATHS[self.datapath]}",
            f'external_ids:{BRIDGE_TAG}="{self.run_id}"',
        ]
        if not self.inband:
            settings.append('other_config:disable-in-band="true"')
        if self.protocols:
            settings.append(f"protocols={self.protocols}")
        if self.stp and self.failMode == "standalone":
            settings.append("stp_enable=true")
        args += ["--", "add-br", self.name, "--", "set", "Bridge", self.name, *settings]
        for intf in self.data_intfs():
            args += self._port_args(intf)
        return args

    def start(self, controllers: Sequence[Any]) -> None:
        """Create the bridge now, or at batchStartup when the switch was made with batch=True."""
        args = self.create_args(controllers)
        if self.batch:
            self._pending = args
            return
        self._create(args)

    def _create(self, args: list[str]) -> None:
        r = run_vsctl(args)
        if r.returncode == 0:
            return
        if "because a bridge named" in r.stderr:
            try:
                rec = bridge_record(self.name)
            except SwitchError:
                rec = None
            owner = ("it is not an mptcplab bridge" if rec is None or rec[1] is None
                     else f"it belongs to run {rec[1]}" if rec[1] != self.run_id else "it carries this run's tag")
            raise BridgeExistsError(
                f"switch {self.name}: an Open vSwitch bridge named {self.name} already exists ({owner}); "
                "mptcplab never replaces a bridge it did not create and left it as it was. Rename the "
                "switch in the topology, or, if it is a leftover of an mptcplab run, run `mptcplab clean`.")
        raise SwitchError(f"switch {self.name}: ovs-vsctl could not create the bridge: {r.stderr.strip()}")

    @classmethod
    def batchStartup(cls, switches: Sequence["LabSwitch"], run: Any = None) -> Sequence["LabSwitch"]:
        """Create the bridges start() deferred (batch=True), one argument-list transaction each.
        ``run`` (Mininet's shell runner) is accepted for the signature and never used."""
        for sw in switches:
            if sw._pending is not None:
                args, sw._pending = sw._pending, None
                sw.batch = False
                sw._create(args)
        return switches

    # ------------------------------------------------------------------ stop

    def remove_bridge(self) -> bool:
        """Remove the bridge if it carries this run's tag (by the UUID read with the tag, so a
        bridge recreated by someone else in between is not hit); else leave it and warn."""
        if bridge_record(self.name) is None:
            return False
        removed, tag = remove_if_tagged(self.name, self.run_id)
        if not removed:
            log.warning("%s: leaving bridge %s alone: it is %s, not this run's (%s)", self.name, self.name,
                        f"tagged by run {tag}" if tag else "not tagged by mptcplab", self.run_id)
        return removed

    # ------------------------------------------------------------------ other OVSSwitch entry points

    def vsctl(self, *args: Any, **kwargs: Any) -> str:
        """ovs-vsctl with each argument one word (no shell, no batching)."""
        r = run_vsctl([str(a) for a in args])
        return r.stdout + r.stderr

    def dpctl(self, *args: Any) -> str:
        """ovs-ofctl CMD SWITCH ARGS... as an argument list."""
        r = subprocess.run(["ovs-ofctl", str(args[0]), self.name, *map(str, args[1:])],
                           capture_output=True, text=True, check=False, timeout=30)
        return r.stdout + r.stderr

    def attach(self, intf: Intf) -> None:
        """Add a data port to the running bridge."""
        r = run_vsctl(self._port_args(intf)[1:])
        if r.returncode != 0:
            raise SwitchError(f"switch {self.name}: cannot add port {intf.name}: {r.stderr.strip()}")
        subprocess.run(["ip", "link", "set", "dev", intf.name, "up"], capture_output=True, check=False)

    def detach(self, intf: Intf) -> None:
        if IFNAME.fullmatch(intf.name):
            run_vsctl(["--if-exists", "del-port", self.name, intf.name])

    def controllerUUIDs(self, update: bool = False) -> list[str]:
        if not self._uuids or update:
            r = run_vsctl(["--if-exists", "get", "Bridge", self.name, "controller"])
            inner = r.stdout.strip()
            if inner.startswith("[") and inner.endswith("]"):
                self._uuids = [u.strip() for u in inner[1:-1].split(",") if OVSDB_UUID.fullmatch(u.strip())]
        return self._uuids

    def connected(self) -> bool:
        for uuid in self.controllerUUIDs():
            if "true" in run_vsctl(["get", "Controller", uuid, "is_connected"]).stdout:
                return True
        return self.failMode == "standalone"


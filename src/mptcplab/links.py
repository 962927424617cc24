"""Link emulation: ``EmuLink``/``EmuIntf``, a drop-in for Mininet's ``TCLink``/``TCIntf``.

Why not TCLink: on a kernel without the netem qdisc TCLink prints an error and runs the link with
no delay and no loss, so the experiment silently measures a different network. ``EmuLink`` gives
the link the spec asks for on every Linux with root, through one of two backends:

- ``netem``: qdiscs on each interface's egress -- netem (delay, jitter, loss) at the root, htb
  (rate) below it and a pfifo (the queue) below that (:func:`mptcplab.linkmodel.tc_commands`), so
  the queue is the frames waiting for the rate, as in the user-space emulator, not the delay line
  -- where the kernel has netem and the link needs nothing netem cannot do;
- ``userspace``: the ``linkemu`` process (:mod:`mptcplab.emulator`) in the middle of the link,
  in a namespace of its own -- where the kernel has no netem, or the link wants jitter without
  reordering or a queue limit in bytes, or ``shaper='userspace'`` asks for it.

Parameters keep TCLink's names and meaning: each applies to both directions (``bw`` Mbit/s,
``delay``/``jitter`` as ``'10ms'`` or a number of ms, ``loss`` percent, ``max_queue_size`` or
``queue`` packets). ``up=``/``down=`` dicts override one direction (node1 -> node2 is up). tc and ip
run with argument lists inside the right namespace; nothing reaches a shell.

Usable from any Mininet script::

    from mininet.net import Mininet
    from mptcplab import EmuLink
    net = Mininet(topo, link=EmuLink)
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from mininet.link import Intf, Link

from .capabilities import has_netem
from .linkmodel import (
    Direction, LinkEmulationError, changed, choose_backend, directions, shaping_problems, tc_commands,
)
from .proc import node_run, offloads_off

__all__ = ["EmuLink", "EmuIntf", "LinkEmulationError"]

#: TCLink options with no meaning here (htb is always used for rate; the model carries the rest).
_TCLINK_ONLY = ("bw", "delay", "jitter", "loss", "max_queue_size", "use_htb", "enable_ecn", "enable_red",
                "speedup", "use_tbf", "latency_ms", "use_hfsc", "gro", "txo", "rxo", "queue", "queue_bytes",
                "burst_loss", "reorder")


class EmuIntf(Intf):
    """One end of an EmuLink. With the netem backend it shapes its own egress."""

    def config(self, shaping: Direction | None = None, backend: str = "netem", **params: Any) -> dict[str, Any]:
        for k in _TCLINK_ONLY:
            params.pop(k, None)
        result = Intf.config(self, **params)
        self.backend = backend
        self.shaping = shaping or Direction()
        if backend == "userspace":
            # The emulator forwards raw frames: they must be whole, with real checksums.
            offloads_off(self.node, self.name)
        elif backend == "netem":
            self.apply_shaping()
        result["shaping"] = self.shaping
        return result

    def apply_shaping(self, verb: str = "add") -> None:
        """(Re)install the qdiscs. Open vSwitch resets a port's qdisc when it adds the port, so
        switch-side interfaces are shaped again after the switch starts (as TCLink does)."""
        if self.backend != "netem":
            return
        cmds = tc_commands(self.name, self.shaping, netem=has_netem(), verb=verb)
        if cmds and verb == "add":
            node_run(self.node, ["tc", "qdisc", "del", "dev", self.name, "root"])
        for argv in cmds:
            r = node_run(self.node, argv)
            if r.returncode != 0:
                raise LinkEmulationError(f"{self.name}: {' '.join(argv[1:4])} failed: {r.stderr.strip()}")

    def check_shaping(self) -> list[str]:
        """What differs between the asked shaping and the qdiscs the kernel reports."""
        s = self.shaping
        if self.backend != "netem" or not s.shaped():
            return []
        return shaping_problems(self.name, s, self.qdiscs())

    def qdiscs(self) -> list[dict[str, Any]]:
        """What the kernel says is installed on this interface (for the metadata)."""
        r = node_run(self.node, ["tc", "-j", "-s", "qdisc", "show", "dev", self.name])
        try:
            return json.loads(r.stdout) if r.returncode == 0 else []
        except ValueError:
            return []


class EmuLink(Link):
    """Drop-in for TCLink: the same parameters, applied to both directions; see module doc.

    ``up``/``down`` dicts override one direction; the network stage passes the plan's resolved
    directions as ``model=(up, down)`` instead.
    """

    def __init__(self, node1: Any, node2: Any, port1: int | None = None, port2: int | None = None,
                 intfName1: str | None = None, intfName2: str | None = None,
                 addr1: str | None = None, addr2: str | None = None, shaper: str = "auto",
                 seed: int = 1, up: dict[str, Any] | None = None, down: dict[str, Any] | None = None,
                 model: tuple[Direction, Direction] | None = None, **params: Any):
        from .emulator import LinkEmulator

        self.up, self.down = model or directions(params, up, down)
        self.backend = choose_backend(shaper, self.up, self.down, netem=has_netem())
        self.emulator: LinkEmulator | None = None
        if self.backend == "userspace":
            name = f"{intfName1 or node1.name}<->{intfName2 or node2.name}"
            self.emulator = LinkEmulator(name, seed=seed).start()
            self.emulator.configure(self.up, self.down)
        try:
            Link.__init__(self, node1, node2, port1=port1, port2=port2,
                          intfName1=intfName1, intfName2=intfName2,
                          cls1=EmuIntf, cls2=EmuIntf, addr1=addr1, addr2=addr2,
                          params1={"shaping": self.up, "backend": self.backend},
                          params2={"shaping": self.down, "backend": self.backend})
            if self.emulator:
                self.emulator.go()
        except BaseException:
            if self.emulator:
                self.emulator.stop()
            raise

    def makeIntfPair(self, intfname1: str, intfname2: str, addr1: str | None = None,  # type: ignore[override]
                     addr2: str | None = None, node1: Any = None, node2: Any = None,
                     deleteIntfs: bool = True) -> None:
        if self.emulator is None:
            Link.makeIntfPair(intfname1, intfname2, addr1, addr2, node1, node2, deleteIntfs=deleteIntfs)
            return
        # Two veth pairs, each created directly in its namespaces: intf1 <-> a and b <-> intf2.
        for name, addr, node, peer in ((intfname1, addr1, node1, "a"), (intfname2, addr2, node2, "b")):
            argv = ["ip", "link", "add", "name", name, "netns", str(node.pid)]
            if addr:
                argv += ["address", addr]
            argv += ["type", "veth", "peer", "name", peer, "netns", str(self.emulator.pid)]
            r = subprocess.run(argv, capture_output=True, text=True, check=False)
            if r.returncode != 0:
                raise LinkEmulationError(f"creating {name}: {r.stderr.strip()}")

    # ------------------------------------------------------------------ in place

    def set_params(self, up: dict[str, Any] | None = None, down: dict[str, Any] | None = None,
                   **params: Any) -> None:
        """Change rate, delay, jitter, loss or queue while the link runs (no rebuild).

        Keyword arguments (TCLink names and units) replace the link's parameters for both
        directions; ``up``/``down`` then override one direction.
        """
        if "max_queue_size" in params:
            params["queue"] = params.pop("max_queue_size")
        self.set_directions(changed(self.up, **{**params, **(up or {})}),
                            changed(self.down, **{**params, **(down or {})}))

    def set_directions(self, new_up: Direction, new_down: Direction) -> None:
        """Give both directions a new model in place; the backend stays the one the link was
        built with (LinkEmulationError when the change needs another one)."""
        if self.emulator is not None:
            self.emulator.configure(new_up, new_down)
        elif self.backend == "plain":
            raise LinkEmulationError("this link was built without emulation (no parameters); give it "
                                     "parameters in the spec, or shaper: userspace, to change it in place")
        else:
            if choose_backend("netem", new_up, new_down, netem=has_netem()) != "netem":
                raise LinkEmulationError("this change needs the user-space shaper")
            for intf, new in ((self.intf1, new_up), (self.intf2, new_down)):
                same = intf.shaping.tc_layout() == new.tc_layout()
                intf.shaping = new
                intf.apply_shaping("change" if same else "add")
        self.up, self.down = new_up, new_down
        self.intf1.shaping, self.intf2.shaping = new_up, new_down

    def set_down(self, down: bool = True) -> None:
        """The cable cut (frames dropped, carrier lost on both ends) or spliced again. Without an
        emulator only the switch's end is set down: the host's end then loses carrier but stays
        configured, as a host's NIC does when its cable is pulled -- an interface set down
        administratively loses its routes (the per-address tables), and would not come back."""
        if self.emulator is not None:
            self.emulator.set_down(down)
            return
        from mininet.node import Switch

        ends = [i for i in (self.intf1, self.intf2) if isinstance(i.node, Switch)] or [self.intf2]
        for intf in ends:
            node_run(intf.node, ["ip", "link", "set", "dev", intf.name, "down" if down else "up"])

    def stats(self) -> dict[str, Any]:
        if self.emulator is not None:
            return self.emulator.stats()
        return {intf.name: intf.qdiscs() for intf in (self.intf1, self.intf2)}

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "up": self.up.as_dict(), "down": self.down.as_dict(),
                "emulator_pid": self.emulator.pid if self.emulator else None}

    def delete(self) -> None:
        try:
            Link.delete(self)
        finally:
            if self.emulator is not None:
                self.emulator.stop()

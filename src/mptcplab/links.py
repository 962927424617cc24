"""Link emulation: ``EmuLink``/``EmuIntf``, a drop-in for Mininet's ``TCLink``/``TCIntf``.

Why not TCLink: on a kernel without the netem qdisc TCLink prints an error and runs the link with
no delay and no loss, so the experiment silently measures a different network. ``EmuLink`` gives
the link the spec asks for on every Linux with root, through one of two backends:

- ``netem``: htb (rate) with a netem leaf (delay, jitter, loss, queue) on each interface's egress,
  as TCLink does -- where the kernel has netem and the link needs nothing netem cannot do;
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
import re
import subprocess
from typing import Any

from mininet.link import Intf, Link

from .capabilities import has_netem

ROOT_HANDLE = "5:"
LEAF_HANDLE = "10:"
CLASS_ID = "5:1"
OFFLOAD_ARGS = ["tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off"]
DIRECTION_KEYS = ("bw", "delay", "jitter", "loss", "queue", "queue_bytes", "burst_loss", "reorder")


class LinkEmulationError(RuntimeError):
    """The link cannot be what was asked for on this machine."""


def _ms(value: Any) -> float:
    """'10ms' / '1s' / '500us' / 10 -> milliseconds."""
    if value in (None, ""):
        return 0.0
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(us|ms|s)?\s*", str(value))
    if not m:
        raise LinkEmulationError(f"{value!r} is not a time (use e.g. '10ms')")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2) or "ms"]


def node_run(node: Any, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run an argument list inside a Mininet node's namespace (mnexec, no shell)."""
    p = node.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


# --------------------------------------------------------------------------- parameters


def normalize(params: dict[str, Any]) -> dict[str, Any]:
    """TCLink-style keyword arguments -> one direction's model in spec units."""
    bl = params.get("burst_loss")
    if bl is not None and not isinstance(bl, dict):
        bl = dict(bl)
    return {
        "bw": float(params["bw"]) if params.get("bw") else None,
        "delay": _ms(params.get("delay")),
        "jitter": _ms(params.get("jitter")),
        "loss": float(params.get("loss") or 0.0),
        "queue": params.get("queue") or params.get("max_queue_size"),
        "queue_bytes": params.get("queue_bytes"),
        "burst_loss": bl,
        "reorder": bool(params.get("reorder", False)),
    }


def directions(params: dict[str, Any], up: dict[str, Any] | None = None,
               down: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(node1 -> node2, node2 -> node1) models: the link's parameters, then each override."""
    base = {k: params[k] for k in (*DIRECTION_KEYS, "max_queue_size") if k in params}
    out = []
    for over in (up, down):
        merged = dict(base)
        merged.update({k: v for k, v in (over or {}).items() if v is not None})
        out.append(normalize(merged))
    return out[0], out[1]


def netem_cannot(d: dict[str, Any]) -> str | None:
    """Why netem cannot give this direction exactly, or None."""
    if d["queue_bytes"]:
        return "a queue limit in bytes"
    if d["jitter"] and not d["reorder"]:
        return "jitter without reordering (netem reorders jittered frames)"
    return None


def needs_netem(d: dict[str, Any]) -> bool:
    return bool(d["delay"] or d["jitter"] or d["loss"] or d["burst_loss"])


def shaped(d: dict[str, Any]) -> bool:
    return bool(d["bw"] or d["queue"] or d["queue_bytes"] or needs_netem(d))


def choose_backend(requested: str, up: dict[str, Any], down: dict[str, Any], netem: bool | None = None) -> str:
    """'netem', 'userspace' or 'plain' (nothing to emulate: a bare veth pair) for one link, or
    LinkEmulationError when asked for the impossible."""
    if requested == "auto" and not (shaped(up) or shaped(down)):
        return "plain"
    netem = has_netem() if netem is None else netem
    reasons = [r for r in (netem_cannot(up), netem_cannot(down)) if r]
    if requested == "userspace":
        return "userspace"
    if requested == "netem":
        if (needs_netem(up) or needs_netem(down)) and not netem:
            raise LinkEmulationError("shaper netem: this kernel has no netem qdisc")
        if reasons:
            raise LinkEmulationError(f"shaper netem cannot emulate {reasons[0]}; use shaper userspace")
        return "netem"
    if requested != "auto":
        raise LinkEmulationError(f"unknown shaper {requested!r} (auto, netem, userspace)")
    return "netem" if netem and not reasons else "userspace"


def tc_commands(dev: str, d: dict[str, Any], netem: bool = True, verb: str = "add") -> list[list[str]]:
    """The tc argument lists that shape one interface's egress. Pure: tested without root.

    Layout: htb root (rate) -> leaf netem (delay, jitter, loss, limit) or pfifo (limit). With
    ``verb='change'`` only the class and the leaf are changed in place (same layout).
    """
    if needs_netem(d) and not netem:
        what = ", ".join(
            f"{k} {v:g}{u}" for k, v, u in (("delay", d["delay"], " ms"), ("jitter", d["jitter"], " ms"),
                                              ("loss", d["loss"], "%")) if v
        ) or "burst loss"
        raise LinkEmulationError(
            f"{dev}: {what} needs the netem qdisc, which this kernel does not have "
            "(CONFIG_NET_SCH_NETEM); the link would run without it. Use the user-space shaper "
            "(shaper: userspace) or a kernel with netem."
        )
    if d["queue_bytes"]:
        raise LinkEmulationError(f"{dev}: a queue limit in bytes needs the user-space shaper")
    cmds: list[list[str]] = []
    parent = ["root"]
    if d["bw"]:
        rate_bps = d["bw"] * 1e6
        burst = max(3028, int(rate_bps / 8 * 0.002))
        quantum = int(min(max(1514, rate_bps / 8 / 10), 200_000))
        if verb == "add":
            cmds.append(["tc", "qdisc", "add", "dev", dev, "root", "handle", ROOT_HANDLE, "htb", "default", "1"])
        cmds.append(["tc", "class", verb, "dev", dev, "parent", ROOT_HANDLE, "classid", CLASS_ID, "htb",
                     "rate", f"{rate_bps:.0f}bit", "ceil", f"{rate_bps:.0f}bit",
                     "burst", str(burst), "cburst", str(burst), "quantum", str(quantum)])
        parent = ["parent", CLASS_ID]
    if needs_netem(d):
        cmd = ["tc", "qdisc", verb, "dev", dev, *parent, "handle", LEAF_HANDLE, "netem"]
        if d["queue"]:
            cmd += ["limit", str(d["queue"])]
        if d["delay"] or d["jitter"]:
            cmd += ["delay", f"{d['delay'] * 1000:.0f}us"]
            if d["jitter"]:
                cmd += [f"{d['jitter'] * 1000:.0f}us"]
        if d["burst_loss"]:
            b = d["burst_loss"]
            cmd += ["loss", "gemodel", f"{b['p']:g}%", f"{b.get('r', 100):g}%",
                    f"{b.get('loss_bad', 100):g}%", f"{b.get('loss_good', 0):g}%"]
        elif d["loss"]:
            cmd += ["loss", "random", f"{d['loss']:g}%"]
        cmds.append(cmd)
    elif d["queue"]:
        cmds.append(["tc", "qdisc", verb, "dev", dev, *parent, "handle", LEAF_HANDLE, "pfifo",
                     "limit", str(d["queue"])])
    return cmds


def _layout(d: dict[str, Any]) -> tuple[bool, str]:
    return (bool(d["bw"]), "netem" if needs_netem(d) else ("pfifo" if d["queue"] else ""))


# --------------------------------------------------------------------------- Mininet classes


class EmuIntf(Intf):
    """One end of an EmuLink. With the netem backend it shapes its own egress."""

    def config(self, shaping: dict[str, Any] | None = None, backend: str = "netem", **params: Any) -> dict[str, Any]:
        # TCLink options with no meaning here (htb is always used for rate).
        for k in ("bw", "delay", "jitter", "loss", "max_queue_size", "use_htb", "enable_ecn", "enable_red",
                  "speedup", "use_tbf", "latency_ms", "use_hfsc", "gro", "txo", "rxo", "queue"):
            params.pop(k, None)
        result = Intf.config(self, **params)
        self.backend = backend
        self.shaping = shaping or normalize({})
        if backend == "userspace":
            # The emulator forwards raw frames: they must be whole, with real checksums.
            node_run(self.node, ["ethtool", "-K", self.name, *OFFLOAD_ARGS])
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
        if self.backend != "netem" or not shaped(self.shaping):
            return []
        s = self.shaping
        kinds = {q.get("kind") for q in self.qdiscs()}
        problems = []
        if s["bw"] and "htb" not in kinds:
            problems.append(f"{self.name}: asked for {s['bw']:g} Mbit/s but no htb qdisc is installed")
        if needs_netem(s) and "netem" not in kinds:
            problems.append(f"{self.name}: asked for delay/jitter/loss but no netem qdisc is installed")
        if s["queue"] and not kinds & {"pfifo", "netem"}:
            problems.append(f"{self.name}: asked for a {s['queue']}-packet queue but no queue qdisc is installed")
        return problems

    def qdiscs(self) -> list[dict[str, Any]]:
        """What the kernel says is installed on this interface (for the metadata)."""
        r = node_run(self.node, ["tc", "-j", "-s", "qdisc", "show", "dev", self.name])
        try:
            return json.loads(r.stdout) if r.returncode == 0 else []
        except ValueError:
            return []


class EmuLink(Link):
    """Drop-in for TCLink: the same parameters, applied to both directions; see module doc."""

    def __init__(self, node1: Any, node2: Any, port1: int | None = None, port2: int | None = None,
                 intfName1: str | None = None, intfName2: str | None = None,
                 addr1: str | None = None, addr2: str | None = None, shaper: str = "auto",
                 seed: int = 1, up: dict[str, Any] | None = None, down: dict[str, Any] | None = None,
                 **params: Any):
        from .emulator import Direction, LinkEmulator

        self.up, self.down = directions(params, up, down)
        self.backend = choose_backend(shaper, self.up, self.down)
        self.emulator: LinkEmulator | None = None
        if self.backend == "userspace":
            name = f"{intfName1 or node1.name}<->{intfName2 or node2.name}"
            self.emulator = LinkEmulator(name, seed=seed).start()
            self.emulator.configure(Direction.from_model(self.up), Direction.from_model(self.down))
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

        Keyword arguments replace the link's parameters for both directions; ``up``/``down`` then
        override one direction. The backend stays the one the link was built with.
        """
        from .emulator import Direction

        if "max_queue_size" in params:
            params["queue"] = params.pop("max_queue_size")

        def merged(current: dict[str, Any], over: dict[str, Any] | None) -> dict[str, Any]:
            return normalize({**current, **params, **{k: v for k, v in (over or {}).items() if v is not None}})

        new_up, new_down = merged(self.up, up), merged(self.down, down)
        if self.emulator is not None:
            self.emulator.configure(Direction.from_model(new_up), Direction.from_model(new_down))
        elif self.backend == "plain":
            raise LinkEmulationError("this link was built without emulation (no parameters); give it "
                                     "parameters in the spec, or shaper: userspace, to change it in place")
        else:
            if choose_backend("netem", new_up, new_down) != "netem":
                raise LinkEmulationError("this change needs the user-space shaper")
            for intf, new in ((self.intf1, new_up), (self.intf2, new_down)):
                same = _layout(intf.shaping) == _layout(new)
                intf.shaping = new
                intf.apply_shaping("change" if same else "add")
        self.up, self.down = new_up, new_down
        self.intf1.shaping, self.intf2.shaping = new_up, new_down

    def set_down(self, down: bool = True) -> None:
        """Link down (carrier off on both ends) or up again, as Mininet's configLinkStatus."""
        if self.emulator is not None:
            self.emulator.set_down(down)
        else:
            for intf in (self.intf1, self.intf2):
                node_run(intf.node, ["ip", "link", "set", "dev", intf.name, "down" if down else "up"])

    def stats(self) -> dict[str, Any]:
        if self.emulator is not None:
            return self.emulator.stats()
        return {intf.name: intf.qdiscs() for intf in (self.intf1, self.intf2)}

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "up": self.up, "down": self.down,
                "emulator_pid": self.emulator.pid if self.emulator else None}

    def delete(self) -> None:
        try:
            Link.delete(self)
        finally:
            if self.emulator is not None:
                self.emulator.stop()

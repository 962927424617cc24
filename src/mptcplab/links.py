"""Link emulation: ``EmuLink``/``EmuIntf``, a drop-in for Mininet's ``TCLink``/``TCIntf``.

Why not TCLink: on a kernel without the netem qdisc TCLink prints an error and runs the link with
no delay and no loss, so the experiment silently measures a different network. ``EmuIntf``
refuses instead (:class:`LinkEmulationError`), naming the interface and the missing qdisc.

Parameters keep TCLink's names and meaning (each applies to every interface of the link, that is
to both directions): ``bw`` Mbit/s via htb, ``delay``/``jitter`` (``'10ms'`` or a number of ms),
``loss`` percent and ``max_queue_size`` packets. tc is always called with argument lists inside
the interface's own namespace; nothing reaches a shell.

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


def tc_commands(dev: str, bw: float | None = None, delay_ms: float = 0.0, jitter_ms: float = 0.0,
                loss: float = 0.0, queue: int | None = None, netem: bool = True) -> list[list[str]]:
    """The tc argument lists that shape one interface's egress. Pure: tested without root.

    Layout: htb root (rate) -> leaf netem (delay, jitter, loss, limit) or pfifo (limit).
    """
    needs_netem = delay_ms > 0 or jitter_ms > 0 or loss > 0
    if needs_netem and not netem:
        what = ", ".join(
            f"{k} {v:g}{u}" for k, v, u in (("delay", delay_ms, " ms"), ("jitter", jitter_ms, " ms"),
                                              ("loss", loss, "%")) if v
        )
        raise LinkEmulationError(
            f"{dev}: {what} needs the netem qdisc, which this kernel does not have "
            "(CONFIG_NET_SCH_NETEM); the link would run without it. Remove delay/jitter/loss "
            "from the link or run on a kernel with netem."
        )
    cmds: list[list[str]] = []
    parent = ["root"]
    if bw:
        rate_bps = bw * 1e6
        burst = max(3028, int(rate_bps / 8 * 0.002))
        quantum = int(min(max(1514, rate_bps / 8 / 10), 200_000))
        cmds.append(["tc", "qdisc", "add", "dev", dev, "root", "handle", ROOT_HANDLE, "htb", "default", "1"])
        cmds.append(["tc", "class", "add", "dev", dev, "parent", ROOT_HANDLE, "classid", CLASS_ID, "htb",
                     "rate", f"{rate_bps:.0f}bit", "ceil", f"{rate_bps:.0f}bit",
                     "burst", str(burst), "cburst", str(burst), "quantum", str(quantum)])
        parent = ["parent", CLASS_ID]
    if needs_netem:
        netem = ["tc", "qdisc", "add", "dev", dev, *parent, "handle", LEAF_HANDLE, "netem"]
        if queue:
            netem += ["limit", str(queue)]
        if delay_ms or jitter_ms:
            netem += ["delay", f"{delay_ms * 1000:.0f}us"]
            if jitter_ms:
                netem += [f"{jitter_ms * 1000:.0f}us"]
        if loss:
            netem += ["loss", "random", f"{loss:g}%"]
        cmds.append(netem)
    elif queue:
        cmds.append(["tc", "qdisc", "add", "dev", dev, *parent, "handle", LEAF_HANDLE, "pfifo",
                     "limit", str(queue)])
    return cmds


class EmuIntf(Intf):
    """An interface whose egress is shaped as asked, or which refuses to exist."""

    def config(self, bw: float | None = None, delay: Any = None, jitter: Any = None,
               loss: float | None = None, max_queue_size: int | None = None,
               use_htb: bool = True, queue: int | None = None, **params: Any) -> dict[str, Any]:
        result = Intf.config(self, **params)
        # TCLink options we accept and ignore (htb is always used for rate).
        for k in ("enable_ecn", "enable_red", "speedup", "use_tbf", "latency_ms", "use_hfsc", "gro", "txo", "rxo"):
            params.pop(k, None)
        self.shaping = {
            "bw": float(bw) if bw else None,
            "delay_ms": _ms(delay),
            "jitter_ms": _ms(jitter),
            "loss": float(loss or 0.0),
            "queue": queue or max_queue_size,
        }
        self.apply_shaping()
        result["shaping"] = self.shaping
        return result

    def apply_shaping(self) -> None:
        """(Re)install the qdiscs. Open vSwitch resets a port's qdisc when it adds the port, so
        switch-side interfaces must be shaped again after the switch starts (as TCLink does)."""
        s = self.shaping
        cmds = tc_commands(self.name, bw=s["bw"], delay_ms=s["delay_ms"], jitter_ms=s["jitter_ms"],
                           loss=s["loss"], queue=s["queue"], netem=has_netem())
        if cmds:
            node_run(self.node, ["tc", "qdisc", "del", "dev", self.name, "root"])
        for argv in cmds:
            r = node_run(self.node, argv)
            if r.returncode != 0:
                raise LinkEmulationError(f"{self.name}: {' '.join(argv[1:4])} failed: {r.stderr.strip()}")

    def check_shaping(self) -> list[str]:
        """What differs between the asked shaping and the qdiscs the kernel reports."""
        s = self.shaping
        kinds = {q.get("kind") for q in self.qdiscs()}
        problems = []
        if s["bw"] and "htb" not in kinds:
            problems.append(f"{self.name}: asked for {s['bw']:g} Mbit/s but no htb qdisc is installed")
        if (s["delay_ms"] or s["jitter_ms"] or s["loss"]) and "netem" not in kinds:
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
    """Drop-in for TCLink: the same parameters, applied to both interfaces (both directions)."""

    def __init__(self, node1: Any, node2: Any, port1: int | None = None, port2: int | None = None,
                 intfName1: str | None = None, intfName2: str | None = None,
                 addr1: str | None = None, addr2: str | None = None, **params: Any):
        Link.__init__(self, node1, node2, port1=port1, port2=port2,
                      intfName1=intfName1, intfName2=intfName2,
                      cls1=EmuIntf, cls2=EmuIntf, addr1=addr1, addr2=addr2,
                      params1=params, params2=params)

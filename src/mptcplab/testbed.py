"""The smallest real network: hosts joined one-to-one by EmuLinks, for tests and benchmarks.

``pairs(n, shaper, **params)`` builds n pairs h<i>a (10.9.<i>.1) -- EmuLink -- h<i>b (10.9.<i>.2)
in one Mininet, no switch in between, so what is measured is the link alone.

:class:`UdpFlood` is the queue-filling load of the emulation tests and bench/backends.py, with
the drop count a link of a given rate and queue must give it (:func:`expected_queue_drops`).
"""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

#: What a UDP datagram's frame adds to its payload on a veth: UDP 8, IPv4 20, Ethernet 14 bytes.
#: The rate counts the whole Ethernet frame (htb and the user-space emulator alike).
UDP_FRAME_OVERHEAD = 8 + 20 + 14

from .proc import offloads_off


def _run(node: Any, argv: list[str]) -> None:
    node.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).wait()


@contextmanager
def pairs(n: int, shaper: str = "userspace", **params: Any) -> Iterator[tuple[Any, list[Any]]]:
    """Yields (net, links); hosts are net['h<i>a'] / net['h<i>b'] for i in 1..n."""
    from mininet.log import setLogLevel
    from mininet.net import Mininet

    from .links import EmuLink

    setLogLevel("warning")
    net = Mininet(topo=None, controller=None, build=False)
    links = []
    try:
        for i in range(1, n + 1):
            a, b = net.addHost(f"h{i}a", ip=None), net.addHost(f"h{i}b", ip=None)
            links.append(net.addLink(a, b, cls=EmuLink, shaper=shaper, seed=i, **params))
        net.build()
        for i in range(1, n + 1):
            for host, last in ((net[f"h{i}a"], 1), (net[f"h{i}b"], 2)):
                intf = host.intfList()[0].name
                offloads_off(host, intf)
                _run(host, ["ip", "addr", "add", f"10.9.{i}.{last}/24", "dev", intf])
                _run(host, ["ip", "link", "set", intf, "up"])
            _run(net[f"h{i}a"], ["ping", "-c", "1", "-W", "2", f"10.9.{i}.2"])  # ARP
        yield net, links
    finally:
        net.stop()


@contextmanager
def pair(shaper: str = "userspace", **params: Any) -> Iterator[tuple[Any, Any]]:
    """One pair: yields (net, link) with h1a = 10.9.1.1 and h1b = 10.9.1.2."""
    with pairs(1, shaper, **params) as (net, links):
        yield net, links[0]


@dataclass(frozen=True)
class UdpFlood:
    """iperf3 -u at ``mbps`` of ``payload``-byte datagrams for ``seconds``: iperf3's -b counts
    the datagrams' payload only, so the frames on the wire carry more than ``mbps``."""

    mbps: float
    seconds: float = 3.0
    payload: int = 1400

    def iperf3_args(self) -> list[str]:
        """The client's options (after ``-c SERVER``)."""
        return ["-u", "-b", f"{self.mbps:g}M", "-l", str(self.payload), "-t", f"{self.seconds:g}"]

    def frame_bytes(self) -> int:
        return self.payload + UDP_FRAME_OVERHEAD

    def datagrams(self) -> float:
        """How many datagrams iperf3 sends at its target rate."""
        return self.mbps * 1e6 * self.seconds / (8 * self.payload)


def expected_queue_drops(flood: UdpFlood, bw: float, queue: int, sent: float | None = None) -> float:
    """The frames a link of rate ``bw`` (Mbit/s) with a drop-tail queue of ``queue`` frames drops
    of ``flood`` sent into it idle: the frames sent (``sent``, e.g. the count the receiver saw,
    else the flood's nominal count) less those the rate carries while the flood lasts, less the
    queue, full at the flood's end, which drains afterwards. The delay line drops nothing (it
    is apart from the queue), so its length is not in it; neither is htb's bucket (two frames
    at low rates, released at the start). 0 when the queue never fills."""
    carried = bw * 1e6 * flood.seconds / (8 * flood.frame_bytes())
    return max(0.0, (flood.datagrams() if sent is None else sent) - carried - queue)

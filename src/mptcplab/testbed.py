"""The smallest real network: hosts joined one-to-one by EmuLinks, for tests and benchmarks.

``pairs(n, shaper, **params)`` builds n pairs h<i>a (10.9.<i>.1) -- EmuLink -- h<i>b (10.9.<i>.2)
in one Mininet, no switch in between, so what is measured is the link alone.
"""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from typing import Any, Iterator

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

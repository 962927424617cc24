#!/usr/bin/env python3
"""EmuLink in a plain Mininet script (run as root with the project's venv):

    sudo .venv/bin/python -m mptcplab.examples.emulink

Two hosts, one link of 10 Mbit/s with 5 ms one way (20 ms from h1 to h2), then the same link
changed in place to 50 ms. Works with or without the netem qdisc.
"""

from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.topo import Topo

from mptcplab import EmuLink
from mptcplab.proc import offloads_off


class Pair(Topo):
    def build(self):
        h1, h2 = self.addHost("h1"), self.addHost("h2")
        self.addLink(h1, h2, bw=10, delay="5ms", max_queue_size=100, up={"delay": "20ms"})


if __name__ == "__main__":
    setLogLevel("warning")
    net = Mininet(Pair(), link=EmuLink, controller=None)
    net.start()
    try:
        h1, h2 = net["h1"], net["h2"]
        for h in (h1, h2):  # the user-space emulator forwards whole frames with real checksums
            offloads_off(h, h.intf().name)
        link = net.links[0]
        print("backend:", link.backend)
        print(h1.cmd("ping -c 3 -i 0.2", h2.IP()).splitlines()[-1])   # ~25 ms RTT
        link.set_params(delay="50ms")
        print(h1.cmd("ping -c 3 -i 0.2", h2.IP()).splitlines()[-1])   # ~100 ms RTT
        print(link.stats())
    finally:
        net.stop()

"""mptcplab: Multipath TCP experiments on emulated Mininet networks.

One direction through the code: spec -> plan -> network -> traffic -> measurements -> results
-> figures. See README.md for the quick start.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "EmuLink", "EmuIntf"]


def __getattr__(name: str):
    # EmuLink pulls in Mininet; import it only when asked so spec/plan stay Mininet-free.
    if name in ("EmuLink", "EmuIntf"):
        from . import links

        return getattr(links, name)
    raise AttributeError(name)

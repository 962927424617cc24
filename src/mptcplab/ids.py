"""Identifiers that end up in file paths, OVS records and kernel objects.

Anything read back from disk (metadata.json, points.json, registry state files) is checked
against these patterns with ``fullmatch`` before it is used: a run directory is data a user can
edit, and its values must never become a shell word or a path outside the state directory.
"""

from __future__ import annotations

import re
import secrets
import time

#: 20261127-101500-a3f9: UTC time of the start, then 16 random bits.
RUN_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{4}")
#: p001, p002, ...: sweep points by their place in the unshuffled product.
POINT_ID = re.compile(r"p[0-9]{3,6}")


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def is_run_id(value: object) -> bool:
    return isinstance(value, str) and RUN_ID.fullmatch(value) is not None


def check_run_id(value: object, where: str) -> str:
    """The run id if it is one, else ValueError naming where it came from."""
    if not is_run_id(value):
        raise ValueError(f"{where}: {value!r} is not a run id (YYYYMMDD-HHMMSS-xxxx)")
    return value  # type: ignore[return-value]

#: Host and switch names: a letter, then letters, digits or '_', at most 10 characters, so that
#: NAME-ethNNNN fits Linux's 15-character interface names. Checked with fullmatch everywhere
#: (spec, registry state files, the switch class): `re.match` with `$` let "h1\n" through.
NODE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,9}")
#: Interfaces the toolkit creates: a node name, optionally -ethN.
INTERFACE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,9}(-eth[0-9]{1,4})?")
IFNAME_MAX = 15


def host_of(ifname: str) -> str:
    """h1-eth0 -> h1 (Mininet names a node's interfaces NODE-ethK; node names have no dash)."""
    return ifname.rpartition("-eth")[0]

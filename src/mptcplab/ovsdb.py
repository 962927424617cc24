"""Open vSwitch bridges by argument lists: read a bridge's identity and remove it only when it
carries a run's tag. Shared by the switch class (teardown) and the registry (cleanup after a
SIGKILL), so neither deletes a bridge by name.

A bridge is removed by the UUID read together with its tag in one ``get``: a bridge deleted and
recreated under the same name by someone else in between has another UUID and is not hit.
"""

from __future__ import annotations

import re
import subprocess
from typing import Sequence

#: external_ids key naming the run that created a bridge.
BRIDGE_TAG = "mptcplab-run"
OVSDB_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
VSCTL_TIMEOUT_S = 10


class OvsError(RuntimeError):
    """ovs-vsctl refused or did not answer."""


def run_vsctl(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """One ``ovs-vsctl`` call as an argument list (never a shell), bounded in time."""
    argv = ["ovs-vsctl", f"--timeout={VSCTL_TIMEOUT_S}", *args]
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=VSCTL_TIMEOUT_S + 5)
    except subprocess.TimeoutExpired as e:
        raise OvsError(f"ovs-vsctl did not answer within {VSCTL_TIMEOUT_S + 5} s: is ovs-vswitchd running?") from e


def bridge_record(name: str) -> tuple[str, str | None] | None:
    """(UUID, run tag or None) of the bridge called ``name``; None if there is none."""
    r = run_vsctl(["--if-exists", "get", "Bridge", name, "_uuid", f"external_ids:{BRIDGE_TAG}"])
    if r.returncode != 0:
        raise OvsError(f"bridge {name}: ovs-vsctl get failed: {r.stderr.strip()}")
    lines = r.stdout.splitlines()
    if not lines or not lines[0].strip():
        return None
    uuid = lines[0].strip()
    if not OVSDB_UUID.fullmatch(uuid):
        raise OvsError(f"bridge {name}: ovs-vsctl printed {uuid!r} where a UUID was expected")
    tag = lines[1].strip().strip('"') if len(lines) > 1 else ""
    return uuid, tag or None


def bridge_tag(name: str) -> str | None:
    """The run tag of the bridge called ``name`` (None: no such bridge, or untagged)."""
    rec = bridge_record(name)
    return None if rec is None else rec[1]


def remove_if_tagged(name: str, run_id: str) -> tuple[bool, str | None]:
    """Remove the bridge ``name`` if it carries ``run_id``'s tag: (removed?, the tag it has).
    Ports, interfaces and controller rows go with the bridge row; OVS removes the bridge's own
    device itself."""
    rec = bridge_record(name)
    if rec is None:
        return False, None
    uuid, tag = rec
    if tag != run_id:
        return False, tag
    r = run_vsctl(["remove", "Open_vSwitch", ".", "bridges", uuid])
    if r.returncode != 0:
        raise OvsError(f"bridge {name}: ovs-vsctl could not remove it: {r.stderr.strip()}")
    return True, tag

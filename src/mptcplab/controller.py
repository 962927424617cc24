"""Controllers for the network stage: who installs the forwarding rules.

- ``StaticController`` installs the path core's rules (:func:`mptcplab.paths.proactive_rules`)
  with ovs-ofctl: path placement works, and is tested, where POX is absent.
- ``PoxController`` runs POX with the component ``controllers/mptcp_paths.py`` on 127.0.0.1 only,
  points the switches at it, and waits until every switch is connected and its rules are in
  (polling the switches themselves, not Mininet's waitConnected). It is stopped by PID. POX binds
  port 0 and the port is read back from the listening socket POX's own PID holds, so the switches
  can only reach this run's POX; the checkout comes from --pox-home/$POX_HOME, never a spec, and
  is refused if others could change the code it runs as root (:func:`pox_checkout_problems`).

Both read per-rule byte counters back from the switches (cookies name the subflow and direction),
so the results can say which path carried what.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import stat
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

from .paths import COOKIE_DEFAULT, ECMP, ControllerTopology, Group, default_rules, ecmp_rules, proactive_rules

LOOPBACK = "127.0.0.1"
REPO_CONTROLLERS = Path(__file__).resolve().parents[2] / "controllers"
POX_HELP = ("POX is not in any package registry: clone it (git clone -b halosaur "
            "https://github.com/noxrepo/pox) and point POX_HOME or --pox-home at the checkout "
            "(a spec never names it: root runs its pox.py); or use controller: {kind: static}, which installs the same rules")


class ControllerError(RuntimeError):
    pass


def ofctl(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ovs-ofctl", *argv], input=stdin, capture_output=True, text=True,
                          timeout=30, check=False)


def flow_bytes(switches: list[str]) -> dict[str, dict[int, int]]:
    """Per switch, bytes per rule cookie (several rules may share one: summed)."""
    out: dict[str, dict[int, int]] = {}
    for sw in switches:
        r = ofctl(["dump-flows", sw])
        per: dict[int, int] = {}
        for line in r.stdout.splitlines():
            m = re.search(r"cookie=(0x[0-9a-f]+).*?n_bytes=(\d+)", line)
            if m:
                c = int(m.group(1), 16)
                per[c] = per.get(c, 0) + int(m.group(2))
        out[sw] = per
    return out


_PORT_STATS = re.compile(r"port\s+(\w+):\s*rx pkts=\d+, bytes=(\d+).*?tx pkts=\d+, bytes=(\d+)", re.S)


def parse_port_stats(text: str) -> dict[str, dict[str, int]]:
    """``ovs-ofctl dump-ports`` output -> {port: {rx_bytes, tx_bytes}} (ports by number or LOCAL)."""
    return {m.group(1): {"rx_bytes": int(m.group(2)), "tx_bytes": int(m.group(3))}
            for m in _PORT_STATS.finditer(text)}


def port_bytes(switches: list[str]) -> dict[str, dict[str, dict[str, int]]]:
    """Per switch, the bytes each port received and sent: the switches' own counters, which show
    where traffic went whatever forwarded it (rules, select groups, learning)."""
    return {sw: parse_port_stats(ofctl(["dump-ports", sw]).stdout) for sw in switches}


def flow_count(sw: str) -> int:
    return sum(1 for line in ofctl(["dump-flows", sw]).stdout.splitlines() if "cookie=" in line)


#: OpenFlow versions a switch speaks for ECMP: 1.0 for the plain rules, 1.5 for select groups
#: with a hash selection method.
ECMP_PROTOCOLS = "OpenFlow10,OpenFlow15"


class StaticController:
    """The path core's rules installed with ovs-ofctl before traffic starts; with policy ecmp,
    select groups that hash each 5-tuple over the equal-cost next hops."""

    kind = "static"

    def __init__(self, topo: ControllerTopology):
        self.topo = topo
        self.groups: list[Group] = []
        if topo.policy == ECMP:
            self.rules, self.groups = ecmp_rules(topo)
            self.paths: list[list[str]] = []
        else:
            self.rules, self.paths = proactive_rules(topo)

    @property
    def protocols(self) -> str | None:
        """The OpenFlow versions its switches must speak (None: the switch's default)."""
        return ECMP_PROTOCOLS if self.groups else None

    def start(self, network: Any) -> None:
        by_switch: dict[str, list[str]] = {}
        groups: dict[str, list[str]] = {}
        for g in self.groups:
            groups.setdefault(g.switch, []).append(g.ofctl())
        for r in self.rules:
            by_switch.setdefault(r.switch, []).append(r.ofctl())
        version = ["-O", "OpenFlow15"] if self.groups else []
        for sw in sorted(self.topo.switches):
            if sw in groups:
                res = ofctl([*version, "add-groups", sw, "-"], stdin="\n".join(groups[sw]) + "\n")
                if res.returncode != 0:
                    raise ControllerError(f"{sw}: ovs-ofctl add-groups failed: {res.stderr.strip()}")
            res = ofctl([*version, "add-flows", sw, "-"], stdin="\n".join(by_switch.get(sw, [])) + "\n")
            if res.returncode != 0:
                raise ControllerError(f"{sw}: ovs-ofctl add-flows failed: {res.stderr.strip()}")

    def alive(self) -> bool:
        return True

    def stop(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "policy": self.topo.policy, "paths": self.paths,
                "rules": len(self.rules), "groups": len(self.groups)}


def find_pox(explicit: str | None = None) -> Path | None:
    """The POX checkout to run: --pox-home (``explicit``), else $POX_HOME -- never a spec, since
    root runs whatever pox.py this points at. Resolved, so the directory checked by
    :func:`pox_checkout_problems` is the one run."""
    for cand in (explicit, os.environ.get("POX_HOME")):
        if cand and (Path(cand) / "pox.py").is_file():
            return Path(cand).resolve()
    return None


def _allowed_uids() -> set[int]:
    """Who may own the code root runs: root, the user running mptcplab, and the user who
    invoked sudo (SUDO_UID) -- each of them could run code as root anyway."""
    uids = {0, os.geteuid()}
    sudo_uid = os.environ.get("SUDO_UID", "")
    if re.fullmatch(r"[0-9]{1,10}", sudo_uid):
        uids.add(int(sudo_uid))
    return uids


def _writable_by_others(st: os.stat_result, allowed: set[int], sticky_ok: bool) -> str | None:
    """Why someone outside ``allowed`` can change this file or directory, or None."""
    if st.st_uid not in allowed:
        return f"owned by uid {st.st_uid}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        if sticky_ok and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX:
            return None  # like /tmp: others may add entries, not replace ours
        return f"{'world' if st.st_mode & stat.S_IWOTH else 'group'}-writable " \
               f"(mode {stat.S_IMODE(st.st_mode):o})"
    return None


def pox_checkout_problems(home: Path, limit: int = 5) -> list[str]:
    """Problem lines (empty: fine) if anyone but root/you could change the code POX runs as root.

    mptcplab runs ``pox.py`` as root. POX's boot puts the checkout, its ``pox/`` and its
    ``ext/`` first on sys.path, so *every* file and directory in the checkout is code root may
    import (a module dropped into ``ext/`` would shadow ours). If any of them -- or a directory
    above the checkout, which could swap it for another -- is writable by a user other than root,
    you, or the user who ran sudo, that user gets root's privileges on the next run. Parent
    directories with the sticky bit (like /tmp) are fine: others cannot replace what they do not
    own. ``pox.py`` must be a regular file, and no symlink may lead out of the checkout (to
    somewhere unchecked). The .git directory is not run and not checked.
    """
    allowed = _allowed_uids()
    home = Path(home).resolve()
    found: list[tuple[Path, str]] = []
    pox_py = home / "pox.py"
    if pox_py.is_symlink() or not pox_py.is_file():
        found.append((pox_py, "not a regular file (a symlink or missing)"))
    for parent in reversed(home.parents):
        why = _writable_by_others(os.stat(parent), allowed, sticky_ok=True)
        if why:
            found.append((parent, why + " (a directory above the checkout)"))
    for root, dirs, files in os.walk(home, onerror=None):
        dirs[:] = sorted(d for d in dirs if not (Path(root) == home and d == ".git"))
        for link in (Path(root) / n for n in [*dirs, *files]):
            # A link out of the checkout leads to files (and directories) nobody checked here;
            # a link within it (debug-pox.py -> pox.py) is checked where it points.
            if link.is_symlink() and home not in link.resolve().parents:
                found.append((link, f"a symlink to {link.resolve()}, outside the checkout"))
        for name in [None, *sorted(files)]:
            path = Path(root) if name is None else Path(root) / name
            try:
                st = os.stat(path)  # a symlink: what it points at is what gets run
            except OSError:
                continue  # a dangling link runs nothing
            why = _writable_by_others(st, allowed, sticky_ok=False)
            if why:
                found.append((path, why))
    lines = [f"POX checkout: {path} is {why}; root would run code from it, so another user could "
             f"run code as root. Make it writable only by root or you (chown, chmod go-w), or point "
             f"--pox-home/POX_HOME at a checkout that is" for path, why in found[:limit]]
    if len(found) > limit:
        lines.append(f"POX checkout: and {len(found) - limit} more such files under {home}")
    return lines


# --------------------------------------------------------------------------- who listens where
# The switches must reach *our* POX: a port picked beforehand (bind port 0, close, hand the number
# to POX) can be taken by someone else in between, and "something accepts connections on it" does
# not say who. So POX binds port 0 itself, and the port is read back from the kernel: the LISTEN
# entry in /proc/<pid>/net/tcp whose socket inode is one of POX's own file descriptors. Once POX
# holds 127.0.0.1:P (without SO_REUSEPORT), nobody else can bind it, so every switch connection
# to it reaches POX.


@dataclass(frozen=True)
class Listener:
    """One listening TCP socket of a network namespace."""

    address: str  # as ipaddress prints it: 127.0.0.1, 0.0.0.0, :: (IPv4-mapped: as IPv4)
    port: int
    inode: int


def _hex_address(text: str) -> str:
    """/proc/net/tcp{,6} addresses: 32-bit words in host byte order, as hex. An IPv4-mapped IPv6
    address (::ffff:127.0.0.1) is given as the IPv4 address it accepts connections to."""
    words = [int(text[i:i + 8], 16) for i in range(0, len(text), 8)]
    addr = ipaddress.ip_address(b"".join(struct.pack("=I", w) for w in words))
    mapped = getattr(addr, "ipv4_mapped", None)
    return str(mapped or addr)


def tcp_listeners(pid: int | str = "self") -> list[Listener]:
    """Every listening TCP socket (IPv4 and IPv6) in the network namespace of ``pid``."""
    out: list[Listener] = []
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10 or f[3] != "0A":  # 0A: TCP_LISTEN
                continue
            addr, port = f[1].rsplit(":", 1)
            out.append(Listener(_hex_address(addr), int(port, 16), int(f[9])))
    return out


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets ``pid`` has open (its /proc/<pid>/fd links ``socket:[N]``); empty if
    the process is gone or not ours to look at."""
    inodes: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            m = re.fullmatch(r"socket:\[([0-9]+)\]", os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
        if m:
            inodes.add(int(m.group(1)))
    return inodes


def listening_ports(pid: int, address: str = LOOPBACK) -> set[int]:
    """TCP ports ``pid`` itself listens on at ``address`` (not: ports something listens on)."""
    mine = socket_inodes(pid)
    return {l.port for l in tcp_listeners(pid) if l.address == address and l.inode in mine}


def owns_listener(pid: int, port: int, address: str = LOOPBACK) -> bool:
    """Is the listener on address:port a socket of ``pid``'s own?"""
    return port in listening_ports(pid, address)


def foreign_listeners(port: int, owner: int | None = None) -> list[Listener]:
    """Listeners in our network namespace that would take (or keep POX from) connections to
    127.0.0.1:``port`` -- on 127.0.0.1 or on a wildcard address -- and are not ``owner``'s own."""
    mine = socket_inodes(owner) if owner is not None else set()
    covering = {LOOPBACK, "0.0.0.0", "::"}
    return [l for l in tcp_listeners() if l.port == port and l.address in covering and l.inode not in mine]


class PoxController:
    """POX with controllers/mptcp_paths.py, on 127.0.0.1 only.

    ``open_log()`` opens POX's log (a binary file; the caller decides how, e.g. without following
    symlinks) and ``write_topology(obj)`` stores the topology POX reads and returns its path: the
    run directory, not this class, owns the files. ``port`` None lets POX bind port 0 and reads
    back the port POX holds; a fixed port must be free, and must end up held by POX itself.
    """

    kind = "pox"

    def __init__(self, topo: ControllerTopology, pox_home: Path, port: int | None,
                 open_log: Callable[[], BinaryIO], write_topology: Callable[[dict[str, Any]], Path]):
        self.topo = topo
        self.pox_home = pox_home
        self.requested_port = port
        self.port: int | None = None  # the port POX holds, once it listens
        self.open_log = open_log
        self.write_topology = write_topology
        self.log: BinaryIO | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.paths: list[list[str]] = []
        self.died: str | None = None

    def argv(self, topo_file: Path) -> list[str]:
        # POX 0.8 has no --no-cli; py is not loaded, so it runs without a console.
        # of_01 binds (address, int(port)): --port=0 lets the kernel pick a free port.
        return [sys.executable, str(self.pox_home / "pox.py"), "log.level", "--WARNING",
                "openflow.of_01", f"--address={LOOPBACK}", f"--port={self.requested_port or 0}",
                "mptcp_paths", f"--topology={topo_file}", f"--policy={self.topo.policy}"]

    def launch(self, register: Callable[[int, list[str]], Any] | None = None,
               timeout: float = 20) -> int:
        """Start POX; return once it listens, with the port it holds. ``register(pid, argv)``
        records the process for cleanup as soon as it exists."""
        if self.requested_port:
            self._refuse_if_held(self.requested_port, None)
        topo_file = self.write_topology(json.loads(self.topo.to_json()))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_CONTROLLERS), env.get("PYTHONPATH")) if p)
        self.log = self.open_log()
        argv = self.argv(topo_file)
        self.proc = subprocess.Popen(argv, cwd=self.pox_home, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        if register is not None:
            register(self.proc.pid, argv)
        deadline = time.monotonic() + timeout
        while True:
            ports = listening_ports(self.proc.pid)
            if self.requested_port:
                if self.requested_port in ports:
                    self.port = self.requested_port
                    return self.port
                self._refuse_if_held(self.requested_port, self.proc.pid)
            elif len(ports) == 1:
                self.port = ports.pop()
                return self.port
            elif ports:
                raise ControllerError(f"POX listens on several ports ({sorted(ports)}); expected one")
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise ControllerError(f"POX did not start listening on {LOOPBACK}: {self.log_tail()}")
            time.sleep(0.1)

    def _refuse_if_held(self, port: int, pid: int | None) -> None:
        others = foreign_listeners(port, pid)
        if others:
            raise ControllerError(
                f"controller.openflow_port: {LOOPBACK}:{port} is held by another process "
                f"(listening on {others[0].address}:{port}), not this run's POX; the switches "
                f"would connect to it. Pick another openflow_port, or leave it out (POX then "
                f"binds a free one)")

    def start(self, network: Any) -> None:
        if self.topo.policy == ECMP:  # the component's rules: the default ones, then hashing per 5-tuple
            rules, self.paths = default_rules(self.topo), []
        else:
            rules, self.paths = proactive_rules(self.topo)
        port = self.launch(network.registry.process)
        for sw in sorted(self.topo.switches):
            subprocess.run(["ovs-vsctl", "--timeout=10", "set-controller", sw, f"tcp:{LOOPBACK}:{port}"],
                           check=True, capture_output=True)
        want = {sw: sum(1 for r in rules if r.switch == sw and r.cookie == COOKIE_DEFAULT)
                for sw in self.topo.switches}
        deadline = time.monotonic() + 30
        while True:
            missing = [sw for sw in sorted(self.topo.switches)
                       if not _connected(sw) or flow_count(sw) < want[sw]]
            if self.proc.poll() is not None:
                raise ControllerError(f"POX exited: {self.log_tail()}")
            if not owns_listener(self.proc.pid, port):
                raise ControllerError(f"POX no longer holds {LOOPBACK}:{port}: {self.log_tail()}")
            if not missing:
                return
            if time.monotonic() > deadline:
                raise ControllerError(f"switches not ready under POX after 30 s: {', '.join(missing)}")
            time.sleep(0.2)

    def log_tail(self, n: int = 800) -> str:
        """The end of POX's log, read through our own descriptor (/proc/self/fd: the same file,
        whatever its name now points at; the log may be opened write-only)."""
        if self.log is None:
            return ""
        try:
            with open(f"/proc/self/fd/{self.log.fileno()}", "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except (OSError, ValueError):
            return "(log unreadable)"

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            if self.died is None:
                self.died = f"POX exited with code {self.proc.returncode if self.proc else '?'}"
            return False
        return True

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self.log is not None:
            self.log.close()
            self.log = None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "policy": self.topo.policy, "paths": self.paths,
                "pox_home": str(self.pox_home), "port": self.port,
                "port_requested": self.requested_port, "listen": LOOPBACK, "died": self.died}


def _connected(sw: str) -> bool:
    """Does OVS say the bridge's controller connection is up?"""
    r = subprocess.run(["ovs-vsctl", "--timeout=5", "get", "Bridge", sw, "controller"], capture_output=True, text=True)
    uuids = re.findall(r"[0-9a-f-]{36}", r.stdout)
    for u in uuids:
        c = subprocess.run(["ovs-vsctl", "--timeout=5", "get", "Controller", u, "is_connected"],
                           capture_output=True, text=True)
        if c.stdout.strip() == "true":
            return True
    return False

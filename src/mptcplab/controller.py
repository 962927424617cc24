"""Controllers for the network stage: who installs the forwarding rules.

- ``StaticController`` installs the path core's rules (:func:`mptcplab.paths.proactive_rules`)
  with ovs-ofctl: path placement works, and is tested, where POX is absent.
- ``PoxController`` runs POX with the component ``controllers/mptcp_paths.py`` on 127.0.0.1 only,
  points the switches at it, and waits until every switch is connected and its rules are in
  (polling the switches themselves, not Mininet's waitConnected). It is stopped by PID. The
  checkout comes from --pox-home/$POX_HOME, never a spec, and is refused if others could change
  the code it runs as root (:func:`pox_checkout_problems`).

Both read per-rule byte counters back from the switches (cookies name the subflow and direction),
so the results can say which path carried what.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .paths import COOKIE_DEFAULT, Topology, proactive_rules

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


def flow_count(sw: str) -> int:
    return sum(1 for line in ofctl(["dump-flows", sw]).stdout.splitlines() if "cookie=" in line)


class StaticController:
    kind = "static"

    def __init__(self, topo: Topology):
        self.topo = topo
        self.rules, self.paths = proactive_rules(topo)

    def start(self, network: Any) -> None:
        by_switch: dict[str, list[str]] = {}
        for r in self.rules:
            by_switch.setdefault(r.switch, []).append(r.ofctl())
        for sw in sorted(self.topo.switches):
            res = ofctl(["add-flows", sw, "-"], stdin="\n".join(by_switch.get(sw, [])) + "\n")
            if res.returncode != 0:
                raise ControllerError(f"{sw}: ovs-ofctl add-flows failed: {res.stderr.strip()}")

    def alive(self) -> bool:
        return True

    def stop(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "policy": self.topo.policy, "paths": self.paths,
                "rules": len(self.rules)}


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PoxController:
    kind = "pox"

    def __init__(self, topo: Topology, pox_home: Path, port: int | None, topo_file: Path, log_file: Path):
        self.topo = topo
        self.pox_home = pox_home
        self.port = port or free_port()
        self.topo_file = topo_file
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.paths: list[list[str]] = []
        self.died: str | None = None

    def argv(self) -> list[str]:
        # POX 0.8 has no --no-cli; py is not loaded, so it runs without a console.
        return [sys.executable, str(self.pox_home / "pox.py"), "log.level", "--WARNING",
                "openflow.of_01", "--address=127.0.0.1", f"--port={self.port}",
                "mptcp_paths", f"--topology={self.topo_file}", f"--policy={self.topo.policy}"]

    def start(self, network: Any) -> None:
        rules, self.paths = proactive_rules(self.topo)
        self.topo_file.write_text(self.topo.to_json())
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_CONTROLLERS), env.get("PYTHONPATH")) if p)
        log = open(self.log_file, "wb")
        argv = self.argv()
        self.proc = subprocess.Popen(argv, cwd=self.pox_home, env=env, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        network.registry.process(self.proc.pid, argv)
        deadline = time.monotonic() + 20
        while not _listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise ControllerError(f"POX did not start listening on 127.0.0.1:{self.port}: "
                                      f"{self.log_file.read_text()[-800:]}")
            time.sleep(0.1)
        for sw in sorted(self.topo.switches):
            subprocess.run(["ovs-vsctl", "--timeout=10", "set-controller", sw, f"tcp:127.0.0.1:{self.port}"],
                           check=True, capture_output=True)
        want = {sw: sum(1 for r in rules if r.switch == sw and r.cookie == COOKIE_DEFAULT)
                for sw in self.topo.switches}
        deadline = time.monotonic() + 30
        while True:
            missing = [sw for sw in sorted(self.topo.switches)
                       if not _connected(sw) or flow_count(sw) < want[sw]]
            if not missing:
                return
            if self.proc.poll() is not None:
                raise ControllerError(f"POX exited: {self.log_file.read_text()[-800:]}")
            if time.monotonic() > deadline:
                raise ControllerError(f"switches not ready under POX after 30 s: {', '.join(missing)}")
            time.sleep(0.2)

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

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "policy": self.topo.policy, "paths": self.paths,
                "pox_home": str(self.pox_home), "port": self.port, "listen": "127.0.0.1",
                "died": self.died}


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        try:
            s.connect(("127.0.0.1", port))
            return True
        except OSError:
            return False


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

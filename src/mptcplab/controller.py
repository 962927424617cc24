"""Controllers for the network stage: who installs the forwarding rules.

- ``StaticController`` installs the path core's rules (:func:`mptcplab.paths.proactive_rules`)
  with ovs-ofctl: path placement works, and is tested, where POX is absent.
- ``PoxController`` runs POX with the component ``controllers/mptcp_paths.py`` on 127.0.0.1 only,
  points the switches at it, and waits until every switch is connected and its rules are in
  (polling the switches themselves, not Mininet's waitConnected). It is stopped by PID.

Both read per-rule byte counters back from the switches (cookies name the subflow and direction),
so the results can say which path carried what.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .paths import COOKIE_DEFAULT, Topology, proactive_rules

REPO_CONTROLLERS = Path(__file__).resolve().parents[2] / "controllers"
POX_HELP = ("POX is not in any package registry: clone it (git clone -b halosaur "
            "https://github.com/noxrepo/pox) and point POX_HOME, --pox-home or controller.pox_home "
            "at the checkout; or use controller: {kind: static}, which installs the same rules")


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
    for cand in (explicit, os.environ.get("POX_HOME")):
        if cand and (Path(cand) / "pox.py").exists():
            return Path(cand)
    return None


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

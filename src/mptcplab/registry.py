"""The registry of what a run created, so that cleanup removes exactly that and nothing else.

A run writes its state file *before* it creates anything (intent first) and tags every kernel and
OVS object it makes: OVS bridges carry ``external_ids:mptcplab-run=<run id>``, interfaces carry the
alias ``mptcplab:<run id>``, processes are recorded with their start time (so a recycled PID is
never killed). ``mptcplab clean`` reads the state files of runs whose owner is gone and removes
only objects that still carry the run's tag. It never kills by process name and never touches a
bridge, link or process the toolkit did not create -- unlike ``mn -c``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_DIR = Path(os.environ.get("MPTCPLAB_STATE_DIR", "/var/lib/mptcplab/runs"))
BRIDGE_TAG = "mptcplab-run"
ALIAS_PREFIX = "mptcplab:"


def proc_starttime(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


def netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


@dataclass
class ProcessRecord:
    pid: int
    starttime: int
    argv: list[str]
    netns: int | None = None

    def alive(self) -> bool:
        return proc_starttime(self.pid) == self.starttime


@dataclass
class RunState:
    run_id: str
    owner_pid: int
    owner_starttime: int
    created: float = field(default_factory=time.time)
    bridges: list[str] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
    processes: list[ProcessRecord] = field(default_factory=list)
    namespaces: list[int] = field(default_factory=list)  # netns inodes of the run's hosts

    def owner_alive(self) -> bool:
        return proc_starttime(self.owner_pid) == self.owner_starttime


class Registry:
    """Records what one run creates; written through to its state file on every change."""

    def __init__(self, run_id: str, state_dir: Path | None = None):
        self.dir = state_dir or STATE_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        self.state = RunState(run_id=run_id, owner_pid=pid, owner_starttime=proc_starttime(pid) or 0)
        self.path = self.dir / f"{run_id}.json"
        self._save()

    @property
    def run_id(self) -> str:
        return self.state.run_id

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.state), indent=1))
        os.replace(tmp, self.path)

    def bridges(self, names: list[str]) -> None:
        self.state.bridges.extend(n for n in names if n not in self.state.bridges)
        self._save()

    def interfaces(self, names: list[str]) -> None:
        self.state.interfaces.extend(n for n in names if n not in self.state.interfaces)
        self._save()

    def process(self, pid: int, argv: list[str]) -> None:
        st = proc_starttime(pid)
        if st is None:
            return  # already gone
        self.state.processes.append(ProcessRecord(pid=pid, starttime=st, argv=list(argv), netns=netns_inode(pid)))
        self._save()

    def namespace(self, pid: int) -> None:
        ino = netns_inode(pid)
        if ino is not None and ino not in self.state.namespaces:
            self.state.namespaces.append(ino)
            self._save()

    def release(self) -> None:
        """The run removed everything itself: forget it."""
        self.path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- cleanup


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def bridge_tag(name: str) -> str | None:
    r = _run(["ovs-vsctl", "--timeout=5", "--if-exists", "get", "Bridge", name, f"external_ids:{BRIDGE_TAG}"])
    if r.returncode != 0:
        return None
    return r.stdout.strip().strip('"') or None


def interface_alias(name: str) -> str | None:
    try:
        return Path(f"/sys/class/net/{name}/ifalias").read_text().strip() or None
    except OSError:
        return None


def _kill(pid: int, starttime: int) -> bool:
    if proc_starttime(pid) != starttime:
        return False
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False


def kill_processes(records: list[ProcessRecord]) -> int:
    n = 0
    for rec in records:
        n += _kill(rec.pid, rec.starttime)
    return n


def processes_in_namespaces(inodes: list[int], since_ticks: int) -> list[ProcessRecord]:
    """Processes now living in one of the run's host namespaces (started after the run did)."""
    root = netns_inode(1)
    wanted = {i for i in inodes if i != root}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        ino = netns_inode(pid)
        st = proc_starttime(pid)
        if ino in wanted and st is not None and st >= since_ticks:
            found.append(ProcessRecord(pid=pid, starttime=st, argv=[], netns=ino))
    return found


@dataclass
class CleanReport:
    runs: list[str] = field(default_factory=list)
    processes: int = 0
    bridges: list[str] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def clean_state(state: RunState, report: CleanReport) -> None:
    """Remove what one run's state says it created, if it still carries the run's tag."""
    report.processes += kill_processes(state.processes)
    since = min((p.starttime for p in state.processes), default=state.owner_starttime)
    report.processes += kill_processes(processes_in_namespaces(state.namespaces, since))
    for br in state.bridges:
        tag = bridge_tag(br)
        if tag == state.run_id:
            _run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", br])
            report.bridges.append(br)
        elif tag is not None:
            report.skipped.append(f"bridge {br} belongs to run {tag}")
    for ifname in state.interfaces:
        alias = interface_alias(ifname)
        if alias == ALIAS_PREFIX + state.run_id:
            _run(["ip", "link", "del", "dev", ifname])
            report.interfaces.append(ifname)
        elif alias is not None or Path(f"/sys/class/net/{ifname}").exists():
            report.skipped.append(f"interface {ifname} is not tagged by this run; left alone")


def load_states(state_dir: Path | None = None) -> list[RunState]:
    states = []
    for path in sorted((state_dir or STATE_DIR).glob("*.json")):
        try:
            d = json.loads(path.read_text())
            d["processes"] = [ProcessRecord(**p) for p in d.get("processes", [])]
            states.append(RunState(**d))
        except (OSError, ValueError, TypeError):
            continue
    return states


def clean(state_dir: Path | None = None, include_running: bool = False) -> CleanReport:
    """Clean up after every run whose owner process is gone (SIGKILL, power loss of the shell)."""
    report = CleanReport()
    sd = state_dir or STATE_DIR
    for state in load_states(sd):
        if state.owner_alive() and not include_running:
            report.skipped.append(f"run {state.run_id} is still running (pid {state.owner_pid})")
            continue
        clean_state(state, report)
        (sd / f"{state.run_id}.json").unlink(missing_ok=True)
        report.runs.append(state.run_id)
    return report

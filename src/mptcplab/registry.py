"""The registry of what a run created, so that cleanup removes exactly that and nothing else.

A run writes its state file *before* it creates anything (intent first) and tags every kernel and
OVS object it makes: OVS bridges carry ``external_ids:mptcplab-run=<run id>``, interfaces carry the
alias ``mptcplab:<run id>``, processes are recorded with their start time (so a recycled PID is
never killed). ``mptcplab clean`` reads the state files of runs whose owner is gone and removes
only objects that still carry the run's tag. It never kills by process name and never touches a
bridge, link or process the toolkit did not create -- unlike ``mn -c``.

What may be killed, and why it is ours:

* a recorded process whose start time (and boot) still match -- the very process the run started;
* a descendant of such a process (PPid chain, each child started no earlier than its parent, every
  link still alive after the scan);
* a process inside a recorded host namespace, but only while that namespace's recorded *holder*
  (the host shell, pid + start time) is verified alive inside it before and after the scan. A
  namespace inode is only unique while the namespace exists: once its holder is gone the number
  may name somebody else's namespace (another run's host, a container), so it is never scanned.

A state file is data on disk: every value read back is validated (run id, pids, names) and a file
that fails is reported in :attr:`CleanReport.skipped` and left alone, never acted on. State files
are written without following symbolic links (a fresh ``O_EXCL`` temporary, then ``rename``) at a
path built only from a validated run id.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import select
import signal
import stat
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import RunDirError
from .ids import IFNAME_MAX, INTERFACE_NAME, NODE_NAME, check_run_id, is_run_id
from .ovsdb import OvsError, bridge_tag, remove_if_tagged
from .proc import ProcStat, proc_starttime, proc_stat  # noqa: F401  (ProcStat: part of this API)

#: The default state directory when the process started (tests read it); the registry itself
#: reads MPTCPLAB_STATE_DIR each time (default_state_dir()).
STATE_DIR = Path(os.environ.get("MPTCPLAB_STATE_DIR", "/var/lib/mptcplab/runs"))
ALIAS_PREFIX = "mptcplab:"
#: Version of the state file format (1: namespaces were bare inode numbers, no boot id).
STATE_VERSION = 2
#: Bridge (switch) names, as the spec allows them (spec.NAME_RE).
BRIDGE_NAME = NODE_NAME
#: Interface names the toolkit creates in the root namespace: switch names and NODE-ethK.
IFACE_NAME = INTERFACE_NAME
BOOT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: A state file larger than this is not one of ours.
MAX_STATE_BYTES = 4 << 20
#: How long clean waits for killed processes, bridges and interfaces to be gone.
WAIT_S = 10.0


def default_state_dir() -> Path:
    """The state directory, read from the environment at call time (tests point it elsewhere)."""
    return Path(os.environ.get("MPTCPLAB_STATE_DIR", "/var/lib/mptcplab/runs"))


# --------------------------------------------------------------------------- /proc


def netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def boot_id() -> str | None:
    """This boot's id: a start time counted from boot means nothing across a reboot."""
    try:
        value = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    return value if BOOT_ID.fullmatch(value) else None


def boot_time() -> float:
    """Wall-clock time of this boot (btime in /proc/stat)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def _is(pid: int, starttime: int) -> bool:
    """Is PID still the process that started at ``starttime`` (and not a zombie)?"""
    st = proc_stat(pid)
    return st is not None and st.starttime == starttime and st.state not in ("Z", "X")


# --------------------------------------------------------------------------- records


@dataclass
class ProcessRecord:
    pid: int
    starttime: int
    argv: list[str]
    netns: int | None = None

    def alive(self) -> bool:
        return _is(self.pid, self.starttime)

    def describe(self) -> str:
        cmd = " ".join(self.argv)[:80] if self.argv else "?"
        return f"pid {self.pid} ({cmd!r})"


@dataclass
class NamespaceRecord:
    """A host's network namespace and the process that holds it (the Mininet host shell).

    The inode names the namespace only while the holder, verified by pid + start time, still
    lives in it: that is checked before every use."""

    inode: int
    holder_pid: int
    holder_starttime: int

    def proven(self) -> bool:
        return _is(self.holder_pid, self.holder_starttime) and netns_inode(self.holder_pid) == self.inode


@dataclass
class RunState:
    run_id: str
    owner_pid: int
    owner_starttime: int
    created: float = field(default_factory=time.time)
    bridges: list[str] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
    processes: list[ProcessRecord] = field(default_factory=list)
    namespaces: list[NamespaceRecord] = field(default_factory=list)  # the run's host namespaces
    boot_id: str | None = field(default_factory=boot_id)
    version: int = STATE_VERSION

    def same_boot(self) -> bool:
        """Were the recorded pids and start times taken during this boot?"""
        if self.boot_id is not None:
            return self.boot_id == boot_id()
        return self.created >= boot_time()  # a version-1 file: no boot id, judge by its time

    def owner_alive(self) -> bool:
        return self.same_boot() and _is(self.owner_pid, self.owner_starttime)

    def empty(self) -> bool:
        return not (self.bridges or self.interfaces or self.processes or self.namespaces)


# --------------------------------------------------------------------------- validation


def _int(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where}: {value!r} is not an integer >= {minimum}")
    return value


def _names(value: Any, where: str, pattern: re.Pattern[str]) -> list[str]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: not a list")
    for i, name in enumerate(value):
        check_name(name, f"{where}[{i}]", pattern)
    return list(value)


def check_name(name: Any, where: str, pattern: re.Pattern[str] = IFACE_NAME) -> str:
    """A bridge or interface name that may be handed to ovs-vsctl or ip, else ValueError."""
    if not isinstance(name, str) or len(name) > IFNAME_MAX or not pattern.fullmatch(name):
        raise ValueError(f"{where}: {name!r} is not a name mptcplab creates")
    return name


def _process(d: Any, where: str) -> ProcessRecord:
    if not isinstance(d, dict) or not {"pid", "starttime", "argv"} <= d.keys() <= {"pid", "starttime", "argv", "netns"}:
        raise ValueError(f"{where}: not a process record")
    argv = d["argv"]
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise ValueError(f"{where}.argv: not a list of strings")
    netns = d.get("netns")
    return ProcessRecord(pid=_int(d["pid"], f"{where}.pid", 2), starttime=_int(d["starttime"], f"{where}.starttime", 0),
                         argv=argv, netns=None if netns is None else _int(netns, f"{where}.netns", 1))


def _namespace(d: Any, where: str) -> NamespaceRecord | None:
    if not isinstance(d, bool) and isinstance(d, int):
        _int(d, where, 1)
        return None  # version 1: a bare inode, no holder to prove it -- never scanned
    if not isinstance(d, dict) or d.keys() != {"inode", "holder_pid", "holder_starttime"}:
        raise ValueError(f"{where}: not a namespace record")
    return NamespaceRecord(inode=_int(d["inode"], f"{where}.inode", 1),
                           holder_pid=_int(d["holder_pid"], f"{where}.holder_pid", 2),
                           holder_starttime=_int(d["holder_starttime"], f"{where}.holder_starttime", 0))


_KEYS = {"run_id", "owner_pid", "owner_starttime", "created", "bridges", "interfaces", "processes",
         "namespaces", "boot_id", "version"}


def state_from_dict(d: Any) -> RunState:
    """A RunState from a state file's JSON, every value validated; ValueError names the field."""
    if not isinstance(d, dict):
        raise ValueError("not a JSON object")
    unknown = set(d) - _KEYS
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)!r}")
    run_id = check_run_id(d.get("run_id"), "run_id")
    version = d.get("version", 1)
    if version not in (1, STATE_VERSION):
        raise ValueError(f"version: {version!r} is not 1 or {STATE_VERSION}")
    created = d.get("created")
    if isinstance(created, bool) or not isinstance(created, (int, float)) or not math.isfinite(created):
        raise ValueError(f"created: {created!r} is not a time")
    bid = d.get("boot_id")
    if bid is not None and (not isinstance(bid, str) or not BOOT_ID.fullmatch(bid)):
        raise ValueError(f"boot_id: {bid!r} is not a boot id")
    for key in ("bridges", "interfaces", "processes", "namespaces"):
        if not isinstance(d.get(key, []), list):
            raise ValueError(f"{key}: not a list")
    namespaces = [_namespace(n, f"namespaces[{i}]") for i, n in enumerate(d.get("namespaces", []))]
    return RunState(
        run_id=run_id,
        owner_pid=_int(d.get("owner_pid"), "owner_pid", 1),
        owner_starttime=_int(d.get("owner_starttime"), "owner_starttime", 0),
        created=float(created),
        bridges=_names(d.get("bridges", []), "bridges", BRIDGE_NAME),
        interfaces=_names(d.get("interfaces", []), "interfaces", IFACE_NAME),
        processes=[_process(p, f"processes[{i}]") for i, p in enumerate(d.get("processes", []))],
        namespaces=[n for n in namespaces if n is not None],
        boot_id=bid,
        version=version,
    )


# --------------------------------------------------------------------------- state files


def state_path(run_id: str, directory: Path) -> Path:
    """``<directory>/<run id>.json``, for a run id that passed :func:`check_run_id` only."""
    return directory / f"{check_run_id(run_id, 'run id')}.json"


def write_state(state: RunState, directory: Path) -> Path:
    """Write a state file atomically, never through a symbolic link: a fresh ``O_EXCL`` temporary
    (``O_NOFOLLOW``, mode 0600) in the same directory, then ``rename`` over the target (which
    replaces a link, never follows it)."""
    path = state_path(state.run_id, directory)
    tmp = directory / f".{state.run_id}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(state), f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_state(path: Path) -> RunState:
    """A state file, read without following a link, validated; ValueError says what is wrong."""
    m = re.fullmatch(r"(.*)\.json", path.name)
    if m is None or not is_run_id(m.group(1)):
        raise ValueError("the file name is not <run id>.json")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise ValueError(f"cannot be opened as a plain file ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        data = f.read(MAX_STATE_BYTES + 1)
    if len(data) > MAX_STATE_BYTES:
        raise ValueError(f"larger than {MAX_STATE_BYTES} bytes")
    try:
        state = state_from_dict(json.loads(data))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not JSON ({e})") from None
    if state.run_id != m.group(1):
        raise ValueError(f"run_id {state.run_id!r} does not match the file name")
    return state


class Registry:
    """Records what one run creates; written through to its state file on every change.

    One Registry serves every network of a sweep: after a network is torn down,
    :meth:`forget_network` drops what it recorded, so that a later teardown never acts on records
    (namespace inodes, pids) of a network that no longer exists."""

    def __init__(self, run_id: str, state_dir: Path | None = None):
        try:
            check_run_id(run_id, "run id")
        except ValueError as e:
            raise RunDirError([f"{e}; the run directory's metadata.json was altered"]) from None
        self.dir = state_dir or default_state_dir()
        self.dir.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        self.state = RunState(run_id=run_id, owner_pid=pid, owner_starttime=proc_starttime(pid) or 0)
        self.path = state_path(run_id, self.dir)
        self._save()

    @property
    def run_id(self) -> str:
        return self.state.run_id

    def _save(self) -> None:
        write_state(self.state, self.dir)

    def bridges(self, names: list[str]) -> None:
        for n in names:
            check_name(n, "bridge", BRIDGE_NAME)
        self.state.bridges.extend(n for n in names if n not in self.state.bridges)
        self._save()

    def interfaces(self, names: list[str]) -> None:
        for n in names:
            check_name(n, "interface")
        self.state.interfaces.extend(n for n in names if n not in self.state.interfaces)
        self._save()

    def process(self, pid: int, argv: list[str]) -> None:
        st = proc_starttime(pid)
        if st is None:
            return  # already gone
        self.state.processes.append(ProcessRecord(pid=pid, starttime=st, argv=[str(a) for a in argv],
                                                  netns=netns_inode(pid)))
        self._save()

    def namespace(self, pid: int) -> None:
        """Record the network namespace of PID (a host shell) together with PID as its holder."""
        ino, st = netns_inode(pid), proc_starttime(pid)
        if ino is None or st is None or ino in _not_ours():
            return
        if all(n.inode != ino for n in self.state.namespaces):
            self.state.namespaces.append(NamespaceRecord(inode=ino, holder_pid=pid, holder_starttime=st))
            self._save()

    def forget_network(self) -> None:
        """The network just torn down (after :func:`clean_state`): drop its records.

        Whatever of it is still present -- a process that outlived SIGKILL, a namespace whose
        holder lives, a tagged bridge or interface -- stays recorded so a later clean retries it;
        the state file is removed once nothing is left (the next network records afresh)."""
        self.state = remaining(self.state)
        if self.state.empty():
            self.release()
        else:
            self._save()

    def release(self) -> None:
        """The run removed everything itself: forget it."""
        self.path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- cleanup


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def bridge_exists(name: str) -> bool:
    return _run(["ovs-vsctl", "--timeout=5", "br-exists", check_name(name, "bridge", BRIDGE_NAME)]).returncode == 0


def interface_alias(name: str) -> str | None:
    try:
        return Path(f"/sys/class/net/{check_name(name, 'interface')}/ifalias").read_text().strip() or None
    except OSError:
        return None


def interface_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{check_name(name, 'interface')}").exists()


def _not_ours() -> set[int]:
    """Namespaces never scanned: the root one (PID 1's) and the one this process runs in."""
    return {i for i in (netns_inode(1), netns_inode(os.getpid())) if i is not None}


def owned_processes(state: RunState) -> list[ProcessRecord]:
    """The live processes this run provably owns (see the module docstring), each with its start
    time; nothing else. Recorded pids are verified by start time and boot; descendants by an
    unbroken PPid chain to a verified recorded process; namespace members only while the
    namespace's recorded holder is verified alive in it, before and after the scan."""
    if not state.same_boot():
        return []
    roots = [p for p in state.processes if p.alive()]
    skip = _not_ours()
    spaces = {n.inode: n for n in state.namespaces if n.inode not in skip and n.proven()}
    if not roots and not spaces:
        return []
    table: dict[int, tuple[ProcStat, int | None]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            pid = int(entry.name)
            st = proc_stat(pid)
            if st is not None and st.state not in ("Z", "X"):
                table[pid] = (st, netns_inode(pid))
    children: dict[int, list[int]] = {}
    for pid, (st, _) in table.items():
        children.setdefault(st.ppid, []).append(pid)
    # Each candidate with what must still hold after the scan: its parent's identity (pid,
    # start time) or its namespace's holder.
    found: dict[int, ProcessRecord] = {p.pid: p for p in roots}
    parent_of: dict[int, tuple[int, int]] = {}
    queue = [(p.pid, p.starttime) for p in roots]
    while queue:
        ppid, pstart = queue.pop()
        for child in children.get(ppid, []):
            cst = table[child][0]
            if child in found or cst.starttime < pstart:
                continue
            found[child] = ProcessRecord(pid=child, starttime=cst.starttime, argv=[], netns=table[child][1])
            parent_of[child] = (ppid, pstart)
            queue.append((child, cst.starttime))
    member_of: dict[int, NamespaceRecord] = {}
    for pid, (st, ino) in table.items():
        if ino in spaces and pid not in found:
            found[pid] = ProcessRecord(pid=pid, starttime=st.starttime, argv=[], netns=ino)
            member_of[pid] = spaces[ino]
    # After the scan: a namespace whose holder died meanwhile proves nothing any more, and a child
    # whose parent died meanwhile may have been read from a recycled pid.
    held = {ino for ino, n in spaces.items() if n.proven()}

    def kept(pid: int) -> bool:
        if pid in member_of:
            return member_of[pid].inode in held
        if pid in parent_of:
            ppid, pstart = parent_of[pid]
            return _is(ppid, pstart) and kept(ppid)
        return True

    me = os.getpid()
    return [p for pid, p in found.items() if pid not in (1, me) and kept(pid)]


def _pidfd(rec: ProcessRecord) -> int | None:
    """A pidfd for exactly the recorded process (start time checked after opening), or None."""
    try:
        fd = os.pidfd_open(rec.pid)
    except OSError:
        return None
    if not rec.alive():
        os.close(fd)
        return None
    return fd


def kill_and_wait(records: list[ProcessRecord], wait_s: float = WAIT_S) -> tuple[int, list[ProcessRecord]]:
    """SIGKILL each process that is still the recorded one, then wait (at most ``wait_s``) until
    every one has exited. Returns how many were killed and those still there at the deadline.

    A pidfd pins the process between the start-time check and the signal, so a pid recycled in
    between is never hit; a zombie counts as gone (it holds nothing but its pid)."""
    fds: dict[int, ProcessRecord] = {}
    for rec in records:
        fd = _pidfd(rec)
        if fd is None:
            continue
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            fds[fd] = rec
        except ProcessLookupError:
            os.close(fd)
    killed = len(fds)
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + wait_s
    try:
        while fds:
            for fd, _ in poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
                poller.unregister(fd)
                os.close(fd)
                del fds[fd]
            if time.monotonic() >= deadline:
                break
        return killed, list(fds.values())
    finally:
        for fd in fds:
            os.close(fd)


def _wait_until(gone: Callable[[], bool], deadline: float) -> bool:
    while not gone():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


@dataclass
class CleanReport:
    runs: list[str] = field(default_factory=list)
    processes: int = 0
    bridges: list[str] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: What was removed but still existed when the wait ran out (processes, bridges, interfaces).
    remaining: list[str] = field(default_factory=list)


def clean_state(state: RunState, report: CleanReport, wait_s: float = WAIT_S) -> None:
    """Remove what one run's state says it created, if it still carries the run's tag, and return
    only once it is gone (or ``wait_s`` has passed: what remains is in ``report.remaining``)."""
    deadline = time.monotonic() + wait_s
    if not state.same_boot() and state.processes:
        report.skipped.append(f"run {state.run_id}: its processes were recorded before this boot; none killed")
    killed, left = kill_and_wait(owned_processes(state), wait_s)
    report.processes += killed
    report.remaining += [f"run {state.run_id}: {p.describe()} still exists {wait_s:g} s after SIGKILL"
                         for p in left]
    for br in state.bridges:
        try:
            removed, tag = remove_if_tagged(check_name(br, "bridge", BRIDGE_NAME), state.run_id)
        except OvsError as e:
            report.remaining.append(f"run {state.run_id}: bridge {br}: {e}")
            continue
        if removed:
            report.bridges.append(br)
            if not _wait_until(lambda: not bridge_exists(br), deadline):
                report.remaining.append(f"run {state.run_id}: bridge {br} still exists")
        elif tag is not None:
            report.skipped.append(f"bridge {br} belongs to run {tag}")
        elif bridge_exists(br):
            report.skipped.append(f"bridge {br} is not tagged by this run; left alone")
    for ifname in state.interfaces:
        alias = interface_alias(ifname)
        if alias == ALIAS_PREFIX + state.run_id:
            _run(["ip", "link", "del", "dev", ifname])
            report.interfaces.append(ifname)
            if not _wait_until(lambda: not interface_exists(ifname), deadline):
                report.remaining.append(f"run {state.run_id}: interface {ifname} still exists")
        elif alias is not None or interface_exists(ifname):
            report.skipped.append(f"interface {ifname} is not tagged by this run; left alone")


def remaining(state: RunState) -> RunState:
    """The part of ``state`` still present: live recorded processes, namespaces whose holder lives,
    bridges and interfaces that still carry the run's tag. Used to forget what a teardown removed."""
    same = state.same_boot()
    present = set(_run(["ovs-vsctl", "--timeout=5", "list-br"]).stdout.split()) if state.bridges else set()
    return RunState(
        run_id=state.run_id, owner_pid=state.owner_pid, owner_starttime=state.owner_starttime,
        created=state.created, boot_id=state.boot_id, version=STATE_VERSION,
        processes=[p for p in state.processes if same and p.alive()],
        namespaces=[n for n in state.namespaces if same and n.proven()],
        bridges=[b for b in state.bridges if b in present and bridge_tag(b) == state.run_id],
        interfaces=[i for i in state.interfaces if interface_alias(i) == ALIAS_PREFIX + state.run_id],
    )


def reclaim(netids: list[str], report: CleanReport, state_dir: Path | None = None) -> list[str]:
    """Clean exactly the networks registered under ``netids`` whose owner is gone (a killed
    worker's, a killed run's), as ``mptcplab clean`` would; returns the ids of which nothing is
    left (no state file, or everything removed). A live owner's or an unreadable state is
    reported in ``report.skipped`` and not acted on."""
    sd = state_dir or default_state_dir()
    done = []
    for netid in netids:
        path = state_path(netid, sd)
        if not path.exists():
            done.append(netid)
            continue
        try:
            state = read_state(path)
        except (ValueError, RunDirError) as e:
            report.skipped.append(f"{path}: {e}; not acted on (`mptcplab clean` reports it)")
            continue
        if state.owner_alive():
            report.skipped.append(f"run {netid} is still running (pid {state.owner_pid})")
            continue
        clean_state(state, report)
        report.runs.append(netid)
        left = remaining(state)
        if left.empty():
            path.unlink(missing_ok=True)
            done.append(netid)
        else:
            write_state(left, sd)
    return done


def load_states(state_dir: Path | None = None, report: CleanReport | None = None) -> list[RunState]:
    """Every valid state file in the directory. An invalid one (a name or value that fails
    validation) is reported in ``report.skipped`` and left where it is."""
    sd = state_dir or default_state_dir()
    states = []
    try:
        entries = sorted(os.scandir(sd), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    for entry in entries:
        if not entry.name.endswith(".json"):
            continue
        try:
            states.append(read_state(Path(entry.path)))
        except ValueError as e:
            if report is not None:
                report.skipped.append(f"state file {entry.name!r} in {sd}: {e}; not acted on")
    return states


def clean(state_dir: Path | None = None, include_running: bool = False, wait_s: float = WAIT_S) -> CleanReport:
    """Clean up after every run whose owner process is gone (SIGKILL, power loss of the shell);
    return once what was removed is gone.

    Holds the machine lock (:class:`mptcplab.lock.MachineLock`) so that it never races a run that
    is starting -- raises :class:`mptcplab.errors.BusyError` if a run holds it. ``include_running``
    (``clean --all``) takes no lock: it is for cleaning up after runs that are still alive."""
    from .lock import MachineLock

    lock = None if include_running else MachineLock().acquire(None, None, command="clean")
    try:
        report = CleanReport()
        sd = state_dir or default_state_dir()
        for state in load_states(sd, report):
            if state.owner_alive() and not include_running:
                report.skipped.append(f"run {state.run_id} is still running (pid {state.owner_pid})")
                continue
            clean_state(state, report, wait_s)
            report.runs.append(state.run_id)
            left = remaining(state)
            if left.empty():
                state_path(state.run_id, sd).unlink(missing_ok=True)
            else:
                write_state(left, sd)
                report.skipped.append(f"run {state.run_id}: some of what it created is still there; "
                                      f"its state file is kept for the next clean")
        return report
    finally:
        if lock is not None:
            lock.release()

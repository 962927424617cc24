"""One mptcplab run per machine -- or several network slots of distributed workers.

Two runs at once destroy each other: their switches have the same names and Mininet deletes
bridges by name. So a run (and ``mptcplab clean``, which must not race a run that is starting)
first takes an exclusive ``flock`` on ``/run/mptcplab/machine.lock`` -- before it creates anything
but that file -- and a second one is refused at once, with a message naming the holder.

The lock is the ``flock`` itself, not the file: the kernel drops it when its holder dies, however
it dies, so a lock file left behind by a killed run never blocks anybody. The file's content
(JSON: pid, start time, run id, run directory, start) only says who holds it, and is validated
before it is shown.

Distributed runs (``--local-workers``, ``--cluster``, ``--scheduler``: mptcplab.distributed) run
one network per worker, and a machine may have several workers. Each worker takes the machine
lock *shared* and then one network slot exclusively (:class:`NetSlot`,
``/run/mptcplab/slot-NN.lock``); the slot number is the prefix of its bridges and root-namespace
interfaces (``mw03s0``, ``mw03s0-eth1``: names of its own). Workers thus coexist with each other,
while a local run and ``mptcplab clean`` (exclusive) still exclude them all, and they exclude a
local run.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Any, Iterable

from .errors import BusyError, PreflightError
from .ids import check_run_id, is_run_id
from .proc import proc_stat

LOCK_NAME = "machine.lock"
STARTED = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[+-][0-9]{4}")
COMMANDS = ("run", "clean")
MAX_BYTES = 8192


def default_lock_dir() -> Path:
    """``/run/mptcplab`` (gone at reboot), or ``$MPTCPLAB_LOCK_DIR`` (tests)."""
    return Path(os.environ.get("MPTCPLAB_LOCK_DIR", "/run/mptcplab"))


class MachineLock:
    """The machine-wide lock. ``with MachineLock().acquire(run_id, run_dir): ...``

    ``shared=True`` (distributed workers, through :class:`NetSlot`) takes it shared: any number
    of shared holders, no exclusive one. A shared holder writes nothing into the file."""

    def __init__(self, lock_dir: Path | None = None, shared: bool = False):
        self.dir = lock_dir or default_lock_dir()
        self.path = self.dir / LOCK_NAME
        self.shared = shared
        self._fd: int | None = None
        self._pid = 0

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, run_id: str | None, run_dir: Path | None = None, command: str = "run") -> "MachineLock":
        """Take the lock now or raise BusyError naming its holder; never waits.

        ``run_dir`` is where the run will write (it need not exist yet); ``command`` is ``run``
        or ``clean`` (which has no run id)."""
        if self._fd is not None:
            raise RuntimeError("this MachineLock is already held")
        if run_id is not None:
            check_run_id(run_id, "run id")
        if command not in COMMANDS:
            raise ValueError(f"command: {command!r} is not one of {COMMANDS}")
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o755)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise PreflightError([f"{self.path}: a symbolic link, not a plain file; remove it "
                                      "(it is mptcplab's machine lock)"]) from None
            raise PreflightError([f"{self.path}: cannot create the machine lock ({e.strerror}); mptcplab "
                                  "runs as root (or set MPTCPLAB_LOCK_DIR to a writable directory)"]) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PreflightError([f"{self.path}: not a plain file; remove it (it is mptcplab's machine lock)"])
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BusyError([self.busy_message()]) from None
            pid = os.getpid()
            if self.shared:  # the file names the one exclusive holder; slots name themselves
                self._fd, self._pid = fd, pid
                return self
            st = proc_stat(pid)
            content = {"pid": pid, "starttime": st.starttime if st else 0, "run_id": run_id,
                       "run_dir": None if run_dir is None else str(Path(run_dir).absolute()),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command}
            data = json.dumps(content).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except BaseException:
            os.close(fd)  # closing drops the flock, if it was taken
            raise
        self._fd, self._pid = fd, pid
        return self

    def release(self) -> None:
        """Drop the lock (the file stays, emptied: unlinking it would let two holders lock two
        different files)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if os.getpid() != self._pid:  # a forked child: the lock is its parent's
            os.close(fd)
            return
        try:
            if not self.shared:
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> "MachineLock":
        if self._fd is None:
            raise RuntimeError("use: with MachineLock().acquire(run_id, run_dir): ...")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def holder(self) -> dict[str, Any] | None:
        """Who the lock file says holds the lock, validated, if that process is alive; else None."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            data = f.read(MAX_BYTES + 1)
        try:
            d = json.loads(data)
        except ValueError:
            return None
        if not _valid(d):
            return None
        st = proc_stat(d["pid"])
        if st is None or st.starttime != d["starttime"] or st.state in ("Z", "X"):
            return None
        return d

    def busy_message(self) -> str:
        # The holder writes its name just after taking the lock: give it a moment.
        h = None
        for _ in range(20):
            h = self.holder()
            if h is not None:
                break
            time.sleep(0.05)
        if h is None:
            slots = held_slots(self.dir)
            if slots:
                return (f"distributed mptcplab worker(s) hold this machine: {', '.join(slots)}; wait for "
                        "them to finish (or stop their run)")
            return (f"another mptcplab process holds this machine (lock {self.path}); wait for it to "
                    "finish")
        if h["command"] == "clean":
            return (f"`mptcplab clean` is running on this machine (pid {h['pid']}, since {h['started']}); "
                    "wait for it to finish")
        return (f"another mptcplab run holds this machine: run {h['run_id']} (pid {h['pid']}, since "
                f"{h['started']}) writing {h['run_dir']}; wait for it to finish or stop it with "
                f"kill -INT {h['pid']}")


def _valid(d: Any) -> bool:
    """Is ``d`` lock content as :meth:`MachineLock.acquire` writes it (every value checked, as it
    is printed to a terminal)?"""
    if not isinstance(d, dict) or set(d) != {"pid", "starttime", "run_id", "run_dir", "started", "command"}:
        return False
    for key, low in (("pid", 1), ("starttime", 0)):
        if isinstance(d[key], bool) or not isinstance(d[key], int) or d[key] < low:
            return False
    if d["command"] not in COMMANDS:
        return False
    if d["run_id"] is not None and not is_run_id(d["run_id"]):
        return False
    if d["command"] == "run" and d["run_id"] is None:
        return False
    rd = d["run_dir"]
    if rd is not None and not (isinstance(rd, str) and rd.startswith("/") and len(rd) <= 4096 and rd.isprintable()):
        return False
    return isinstance(d["started"], str) and STARTED.fullmatch(d["started"]) is not None


# --------------------------------------------------------------------------- network slots

SLOT_NAME = re.compile(r"slot-([0-9]{2})\.lock")
#: How many networks of distributed workers one machine holds at most.
MAX_SLOTS = 100
SLOT_KEYS = {"pid", "starttime", "run_id", "started", "netids"}


def slot_prefix(slot: int) -> str:
    """The switch-name prefix of a slot's networks: mw00s, mw01s, ... (switches mw03s0, mw03s1,
    ... and their interfaces mw03s0-eth1: at most 13 characters, within IFNAMSIZ)."""
    if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < MAX_SLOTS:
        raise ValueError(f"slot: {slot!r} is not a slot number")
    return f"mw{slot:02d}s"


def _read_slot(fd: int) -> dict[str, Any] | None:
    """A slot file's content, validated; None when empty or not what NetSlot writes."""
    data = os.pread(fd, MAX_BYTES + 1, 0)
    try:
        d = json.loads(data)
    except ValueError:
        return None
    if not isinstance(d, dict) or set(d) != SLOT_KEYS:
        return None
    for key, low in (("pid", 1), ("starttime", 0)):
        if isinstance(d[key], bool) or not isinstance(d[key], int) or d[key] < low:
            return None
    if not is_run_id(d["run_id"]) or not isinstance(d["started"], str) or not STARTED.fullmatch(d["started"]):
        return None
    if not isinstance(d["netids"], list) or not all(is_run_id(n) for n in d["netids"]) or len(d["netids"]) > 10000:
        return None
    return d


def slot_numbers(lock_dir: Path | None = None) -> list[int]:
    """The slots this machine has had (a ``slot-NN.lock`` file each), held or not."""
    try:
        names = sorted(os.listdir(lock_dir or default_lock_dir()))
    except OSError:
        return []
    return [int(n[5:7]) for n in names if SLOT_NAME.fullmatch(n)]


def slot_netids(run_id: str, lock_dir: Path | None = None) -> list[str]:
    """The network ids the slots of this machine last recorded for run ``run_id`` (its
    distributed workers', held or not): what a resume of that run may have to remove."""
    d = lock_dir or default_lock_dir()
    out: list[str] = []
    for n in slot_numbers(d):
        try:
            fd = os.open(d / f"slot-{n:02d}.lock", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            c = _read_slot(fd) if stat.S_ISREG(os.fstat(fd).st_mode) else None
        finally:
            os.close(fd)
        if c is not None and c["run_id"] == run_id:
            out += [netid for netid in c["netids"] if netid not in out]
    return out


def held_slots(lock_dir: Path | None = None) -> list[str]:
    """'slot NN: run R (pid P)' for every slot whose holder is alive (as its file says)."""
    d = lock_dir or default_lock_dir()
    out = []
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return []
    for name in names:
        if not SLOT_NAME.fullmatch(name):
            continue
        try:
            fd = os.open(d / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            c = _read_slot(fd)
        finally:
            os.close(fd)
        if c is None:
            continue
        st = proc_stat(c["pid"])
        if st is not None and st.starttime == c["starttime"] and st.state not in ("Z", "X"):
            out.append(f"slot {name[5:7]}: run {c['run_id']} (pid {c['pid']})")
    return out


class NetSlot:
    """A distributed worker's network slot: the machine lock shared, then the first free
    ``slot-NN.lock`` exclusively (flock, dropped by the kernel when the worker dies).

    The slot file records the ids (:attr:`netids`) under which the holder's networks were
    registered (mptcplab.registry state files); :attr:`previous` holds what the slot's last holder
    recorded, so that a worker taking over the slot of a killed one can clean up exactly what
    that one created -- its bridges would otherwise have this slot's names."""

    def __init__(self, lock_dir: Path | None = None):
        self.dir = lock_dir or default_lock_dir()
        self.machine = MachineLock(self.dir, shared=True)
        self.slot: int | None = None
        self.previous: list[str] = []
        self._fd: int | None = None
        self._content: dict[str, Any] = {}

    @property
    def prefix(self) -> str:
        if self.slot is None:
            raise RuntimeError("no slot held")
        return slot_prefix(self.slot)

    def acquire(self, run_id: str, slots: Iterable[int] | None = None, only_run: str | None = None) -> "NetSlot":
        """The first free slot (of ``slots``, default all); BusyError when every one is held.
        ``only_run``: only a slot whose last holder was of that run (and left networks
        recorded), which is left as it was otherwise -- not relabelled as this holder's."""
        check_run_id(run_id, "run id")
        self.machine.acquire(run_id)
        try:
            for slot in (range(MAX_SLOTS) if slots is None else slots):
                path = self.dir / f"slot-{slot:02d}.lock"
                try:
                    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
                except OSError as e:
                    raise PreflightError([f"{path}: cannot open the slot lock ({e.strerror})"]) from None
                try:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        raise PreflightError([f"{path}: not a plain file; remove it (an mptcplab slot lock)"])
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                except BaseException:
                    os.close(fd)
                    raise
                try:
                    old = _read_slot(fd)
                except BaseException:
                    os.close(fd)  # its flock goes with it
                    raise
                if only_run is not None and (old is None or old["run_id"] != only_run or not old["netids"]):
                    os.close(fd)
                    continue
                self.previous = list(old["netids"]) if old else []
                pid = os.getpid()
                st = proc_stat(pid)
                self._fd, self.slot = fd, slot
                self._content = {"pid": pid, "starttime": st.starttime if st else 0, "run_id": run_id,
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "netids": list(self.previous)}
                self._write()
                return self
            raise BusyError([f"all {'the' if slots is not None else MAX_SLOTS} network slots asked for are held "
                             f"({self.dir})"])
        except BaseException:
            self.machine.release()
            raise

    def _write(self) -> None:
        assert self._fd is not None
        data = json.dumps(self._content).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def record(self, netid: str) -> None:
        """A network is about to be registered under ``netid``: intent first."""
        check_run_id(netid, "network id")
        if netid not in self._content["netids"]:
            self._content["netids"].append(netid)
            self._write()

    def forget(self, netids: list[str]) -> None:
        """Those networks are gone (nothing of them recorded any more)."""
        self._content["netids"] = [n for n in self._content["netids"] if n not in netids]
        self._write()

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)  # the content stays: what is left for the next holder
            finally:
                os.close(fd)
        self.slot = None
        self.machine.release()

    def __enter__(self) -> "NetSlot":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

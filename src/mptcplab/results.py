"""Results: the run-directory API. Every file name of a run is spelled here and nowhere else.

Layout (see results/README.md)::

    results/<experiment>/<run-id>/          (or exactly --out DIR)
        spec.yaml  plan.json  metadata.json  points.json  summary.csv  subflows.csv
        selfcheck.json | selfcheck-<point>.json  controller-topology.json  .lock
        raw/<test>-client.json  raw/<test>-server.json  raw/<test>-samples.csv  raw/<test>-counters.json
        raw/<test>-flows.json (with a controller)  raw/pox.log  controller-topology.json  .lock
        raw/pox.log
        figures/

Why it is written the way it is: runs are made as root on shared machines, in directories a user
may control (the run directory itself is handed to the user behind sudo). So:

- A run makes a *new* directory (never an existing one: --resume is the one way into one) and
  creates every file with ``O_CREAT|O_EXCL|O_NOFOLLOW`` relative to a directory file descriptor
  that was opened without following symbolic links: a link planted in the run directory (or a
  ``raw`` replaced by a link) is never followed, and its target is never touched.
- Files are written to a fresh temporary name, fsynced, renamed into place and the directory is
  fsynced: a crash or power cut leaves the old file or the new one, and a point marked done stays
  marked.
- Files are 0644 and directories 0755 whatever the umask, and under sudo (``SUDO_UID`` and
  ``SUDO_GID`` of an existing user) they belong to that user -- set through the file descriptors
  (fchown/fchmod), never through a path.
- Everything read back (metadata.json, points.json, the spec's figures block) is validated before
  use: a run directory is data its owner can edit, and its run id reaches OVS records and paths.
- A run or resume holds ``.lock`` (flock): a second resume of the same directory is refused.

This module imports no network code.
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import io
import json
import os
import pwd
import re
import secrets
import shutil
import stat
import weakref
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Literal, Sequence

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, StrictInt, TypeAdapter, ValidationError, field_validator

from . import ids
from .errors import BusyError, RunDirError

# --------------------------------------------------------------------------- names

#: Written into metadata.json as "format"; a run directory without it is version 1 (same layout).
FORMAT_VERSION = 2
KNOWN_FORMATS = frozenset({1, 2})

SPEC = "spec.yaml"
PLAN = "plan.json"
METADATA = "metadata.json"
POINTS = "points.json"
SUMMARY = "summary.csv"
SUBFLOWS = "subflows.csv"
#: Multi-flow tests: one row per flow per test; the receivers' goodput every 0.1 s; RTT probes.
FLOWS = "flows.csv"
FLOW_GOODPUT = "flow-goodput.csv"
RTT = "rtt.csv"
#: Events applied during tests: when each was scheduled and when it was applied.
EVENTS = "events.csv"
#: What the client's MPTCP path manager reported during each test (ip mptcp monitor).
PM_EVENTS = "pm-events.csv"
#: Every MPTCP MIB counter (MPTcpExt*) that moved during a test, per host.
MPTCP_MIB = "mptcp-mib.csv"
#: The tidy tables a run writes beside summary.csv, each rewritten whole as rows arrive.
#: Each test's packet captures: packets, drops, file size, whether the ring buffer wrapped.
CAPTURES = "captures.csv"
#: The MPTCP option census of the captures (mptcplab.census), per test, connection and subflow.
OPTIONS = "options.csv"
#: The verdicts of the spec's expectations (mptcplab.expect), one row each.
EXPECT = "expect.csv"
TABLES = (SUBFLOWS, FLOWS, FLOW_GOODPUT, RTT, EVENTS, PM_EVENTS, MPTCP_MIB, CAPTURES, OPTIONS, EXPECT)
#: Tables the analysis of a finished run writes (mptcplab.analyze), not rows per test: a resume
#: does not carry them over, the analysis at its end writes them again.
ANALYSIS_TABLES = (OPTIONS, EXPECT)
#: A capture in raw/: <test>-<interface>.pcapng.gz
CAPTURE_SUFFIX = ".pcapng.gz"
#: Columns that are text whatever they look like, read as strings in every table (summary,
#: TABLES, raw samples): MPTCP tokens are 8 hex digits, which read_csv would otherwise make
#: numbers ('00120000' -> 120000, '1e699300' -> inf) in a column where every token looks like
#: one; addresses and endpoints ('10.0.1.1:48134') are names, not quantities.
TEXT_COLUMNS = ("token", "remote_token", "local", "remote", "connection", "saddr4", "daddr4", "saddr6", "daddr6")
SELFCHECK = "selfcheck.json"
CONTROLLER_TOPOLOGY = "controller-topology.json"
LOCK = ".lock"
RAW = "raw"
FIGURES = "figures"
#: in raw/
POX_LOG = "pox.log"
#: Figure file formats mptcplab draws.
FIGURE_FORMATS = ("pdf", "png", "svg")

#: Columns every summary.csv starts with, in this order.
SUMMARY_COLUMNS = [
    "experiment", "test", "variant", "protocol", "repetition", "goodput_mbps", "retransmits", "subflows",
    "expected_subflows", "subflows_ok", "duration_s", "bytes", "error",
]
POINT_STATUSES = ("pending", "done", "failed")
#: Columns a summary.csv cannot do without (figures and resume read them).
SUMMARY_REQUIRED = ("experiment", "test", "protocol", "goodput_mbps", "error")
PointStatus = Literal["pending", "done", "failed"]

FILE_MODE = 0o644
DIR_MODE = 0o755

#: A file name inside a run directory: one component, no leading dot (temporaries and .lock are
#: ours alone), nothing a shell or a path would read specially.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]{0,200}")
#: The spec's experiment name (spec.Experiment.name): a directory under outputs.dir.
EXPERIMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def selfcheck_name(point_id: str | None) -> str:
    """selfcheck.json for a run without sweep values, selfcheck-<point>.json per sweep point."""
    if point_id is None:
        return SELFCHECK
    if not ids.POINT_ID.fullmatch(point_id):
        raise ValueError(f"{point_id!r} is not a point id")
    return f"selfcheck-{point_id}.json"


def samples_name(test: str) -> str:
    """raw/<test>-samples.csv: the per-subflow samples of one test."""
    return _name(f"{test}-samples.csv")


#: The JSON files of one test in raw/: iperf3's client and server, MIB counter deltas, the
#: switches' per-rule byte counters (with a controller).
RAW_KINDS = ("client", "server", "counters", "flows", "ports")


def raw_name(test: str, kind: str) -> str:
    """raw/<test>-<kind>.json."""
    if kind not in RAW_KINDS:
        raise ValueError(f"{kind!r} is not one of {RAW_KINDS}")
    return _name(f"{test}-{kind}.json")


def _name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a file name of a run directory")
    return name


# --------------------------------------------------------------------------- ownership


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int


def sudo_owner(env: dict[str, str] | None = None) -> Owner | None:
    """The user behind sudo, who should own what a root run creates; None when not root or not
    under sudo, or when SUDO_UID/SUDO_GID are not plain numbers of an existing user."""
    if os.geteuid() != 0:
        return None
    env = dict(os.environ) if env is None else env
    uid, gid = env.get("SUDO_UID", ""), env.get("SUDO_GID", "")
    if not (re.fullmatch(r"[0-9]{1,10}", uid) and re.fullmatch(r"[0-9]{1,10}", gid)):
        return None
    if int(uid) >= 2**32 - 1 or int(gid) >= 2**32 - 1:
        return None
    try:
        pwd.getpwuid(int(uid))
    except KeyError:
        return None
    return Owner(int(uid), int(gid))


def _own(fd: int, owner: Owner | None, mode: int) -> None:
    if owner is not None:
        os.fchown(fd, owner.uid, owner.gid)
    os.fchmod(fd, mode)  # after fchown, which may clear mode bits; and whatever the umask was


# --------------------------------------------------------------------------- fd primitives

_DIR_NOFOLLOW = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _why(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "it is a symbolic link, which a run never follows"
    if e.errno == errno.ENOTDIR:
        return "it is not a directory (a symbolic link or a file)"
    return e.strerror or str(e)


def _mkdir_at(parent_fd: int, name: str, owner: Owner | None, *, exist_ok: bool) -> tuple[int, bool]:
    """Open directory `name` under parent_fd without following a link, creating it (0755, owned
    by `owner`) when missing. Returns (fd, created). FileExistsError when it exists and not exist_ok."""
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        created = True
    except FileExistsError:
        if not exist_ok:
            raise
        created = False
    fd = os.open(name, _DIR_NOFOLLOW, dir_fd=parent_fd)
    if created:
        try:
            if os.fstat(fd).st_uid != os.geteuid():  # replaced between mkdir and open
                raise RunDirError(f"{name}: was replaced while being created; try again")
            _own(fd, owner, DIR_MODE)
        except BaseException:
            os.close(fd)
            raise
    return fd, created


def _open_tree(path: Path, owner: Owner | None, what: str) -> int:
    """fd of directory `path`, creating it and its missing parents (each 0755, owned by `owner`).
    The part that exists is opened as named (the caller's choice); what is created is walked
    component by component without following links."""
    path = Path(os.path.abspath(path))
    existing, missing = path, []
    while not os.path.lexists(existing):
        missing.append(existing.name)
        existing = existing.parent
    try:
        fd = os.open(existing, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        why = "exists and is not a directory" if e.errno == errno.ENOTDIR else _why(e)
        raise RunDirError(f"{what}: {existing} {why}; give a directory (or a path that does not exist yet)") from None
    try:
        for name in reversed(missing):
            new, _ = _mkdir_at(fd, name, owner, exist_ok=True)
            os.close(fd)
            fd = new
    except OSError as e:
        os.close(fd)
        raise RunDirError(f"{what}: cannot create {path}: {_why(e)}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_at(dir_fd: int, name: str, data: bytes, owner: Owner | None) -> None:
    """Atomic replace of dir_fd/name with ``data`` (see _fill_at)."""
    def fill(fd: int) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    _fill_at(dir_fd, name, fill, owner)


def _fill_at(dir_fd: int, name: str, fill: Callable[[int], None], owner: Owner | None) -> None:
    """Atomic replace of dir_fd/name: a new temporary (O_EXCL|O_NOFOLLOW) in the same directory,
    0644 and owned by `owner`, written by ``fill(fd)``, fsynced, renamed over `name` (a link there
    is replaced, not followed), then the directory fsynced so the rename survives a power cut."""
    tmp = f".{name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, _NEW_FILE, 0o600, dir_fd=dir_fd)
    try:
        try:
            _own(fd, owner, FILE_MODE)
            fill(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)


def _read_at(dir_fd: int, name: str, where: Path) -> bytes | None:
    """The bytes of regular file dir_fd/name, None when missing; a link or anything else that
    is not a regular file is refused (a root resume must not read /etc/shadow into a CSV)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RunDirError(f"{where}: cannot read: {_why(e)}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RunDirError(f"{where}: not a regular file")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _encode(data: str | bytes) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    raise TypeError(f"write str or bytes, not {type(data).__name__}")


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode()


def _csv(rows: Iterable[dict[str, Any]], first: list[str] | None = None) -> bytes:
    df = pd.DataFrame(list(rows))
    if first:
        cols = [c for c in first if c in df.columns] + [c for c in df.columns if c not in first]
        df = df[cols]
    return df.to_csv(index=False).encode()


# --------------------------------------------------------------------------- path-based writes


def write_atomic(path: Path, data: str | bytes) -> None:
    """Atomic write of one file outside a RunDir's methods (prefer those). Missing parents are
    created; the parent itself is opened without following a link."""
    payload = _encode(data)
    path = Path(path)
    owner = sudo_owner()
    parent = path.parent
    if os.path.lexists(parent):
        try:
            fd = os.open(parent, _DIR_NOFOLLOW)
        except OSError as e:
            raise RunDirError(f"{parent}: {_why(e)}") from None
    else:
        fd = _open_tree(parent, owner, str(parent))
    try:
        _write_at(fd, _name(path.name), payload, owner)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- validation of what is read back


#: A host name as a distributed run records it (socket.gethostname()).
HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")


class Metadata(BaseModel):
    """The fields of metadata.json that are used after a run: validated, the rest kept as is."""

    model_config = ConfigDict(extra="allow")

    format: StrictInt = 1
    run_id: str | None = None
    experiment: str | None = None
    formats: list[Literal["pdf", "png", "svg"]] | None = None
    swept: list[str] = []
    maxflow_mbps: float | None = None

    @field_validator("format")
    @classmethod
    def _format(cls, v: int) -> int:
        if v not in KNOWN_FORMATS:
            raise ValueError(f"{v} is not a format this mptcplab reads ({', '.join(map(str, sorted(KNOWN_FORMATS)))}); "
                             "it was written by another version: use that one")
        return v

    @field_validator("run_id")
    @classmethod
    def _run_id(cls, v: str | None) -> str | None:
        return None if v is None else ids.check_run_id(v, "run_id")

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, v: str | None) -> str | None:
        if v is not None and not EXPERIMENT.fullmatch(v):
            raise ValueError(f"{v!r} is not an experiment name")
        return v

    def run_host(self) -> str | None:
        """The host the run started on (metadata ``hostname``), when well formed."""
        host = (self.model_extra or {}).get("hostname")
        return host if isinstance(host, str) and HOSTNAME.fullmatch(host) else None

    def point_hosts(self) -> dict[str, str]:
        """Point id -> the host that ran it, for a distributed run (``distributed.points``);
        empty otherwise. Read back from disk, so only well-formed ids and host names count."""
        points = ((self.model_extra or {}).get("distributed") or {}).get("points")
        if not isinstance(points, dict):
            return {}
        return {pid: w["host"] for pid, w in points.items()
                if isinstance(pid, str) and ids.POINT_ID.fullmatch(pid) and isinstance(w, dict)
                and isinstance(w.get("host"), str) and HOSTNAME.fullmatch(w["host"])}


class PointRecord(BaseModel):
    """One entry of points.json."""

    model_config = ConfigDict(extra="forbid")

    id: str
    values: dict[str, Any]
    status: PointStatus
    error: str | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not ids.POINT_ID.fullmatch(v):
            raise ValueError(f"{v!r} is not a point id (p001, p002, ...)")
        return v

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items()) or "(no parameters)"


_POINT_LIST = TypeAdapter(list[PointRecord])


def _problems(err: ValidationError, where: Path, fix: str) -> RunDirError:
    lines = []
    for e in err.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".") or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {loc}: {msg}; {fix}")
    return RunDirError(lines)


_ALTERED = "the file was altered or damaged (restore it, or start a new run)"


# --------------------------------------------------------------------------- the run directory


class _Handles:
    """The open descriptors of a RunDir, closed when it is (or when it is garbage)."""

    def __init__(self) -> None:
        self.dir: int | None = None
        self.lock: int | None = None

    def close(self) -> None:
        for fd in (self.lock, self.dir):
            if fd is not None:
                with suppress(OSError):
                    os.close(fd)
        self.dir = self.lock = None


_UNSET: Any = object()


class RunDir:
    """A run's directory. `create` makes a new one; `open_existing` opens one for --resume or
    plot. All access goes through a descriptor of the directory held from then on, so the run
    directory cannot be swapped for a link half-way."""

    def __init__(self, path: str | Path, *, owner: Owner | None = _UNSET, fd: int | None = None):
        self.path = Path(path)
        self.owner: Owner | None = sudo_owner() if owner is _UNSET else owner
        self._h = _Handles()
        self._h.dir = fd
        self._finalizer = weakref.finalize(self, self._h.close)
        self._meta: Metadata | None = None
        self._run_id: str | None = None

    # ---------------------------------------------------------------- making and opening

    @classmethod
    def create(cls, experiment: str, root: str | Path = "results", out: str | Path | None = None,
               run_id: str | None = None) -> "RunDir":
        """A new run directory: `out` exactly, else root/<experiment>/<run_id>. Never an existing
        directory (empty or not); missing parents are created. The new run holds its lock."""
        from .spec import Outputs

        if not EXPERIMENT.fullmatch(experiment):
            raise RunDirError(f"name: {experiment!r} is not an experiment name")
        try:
            run_id = ids.check_run_id(run_id, "run id") if run_id is not None else ids.new_run_id()
        except ValueError as e:
            raise RunDirError(str(e)) from None
        owner = sudo_owner()
        if out is not None:
            what, path = "--out", Path(out)
            target = Path(os.path.abspath(path))
            if os.path.lexists(target):
                raise RunDirError(f"--out {out}: exists; a run writes only into a new directory. Give a path "
                                  f"that does not exist yet, or --resume {out} to finish the run recorded there")
            where = target
        else:
            what, path = "outputs.dir", Path(root) / experiment / run_id
            where = Path(os.path.abspath(root))
        system = Outputs.system_dir(str(where))
        if system:
            raise RunDirError(f"{what}: {where} is under the system directory {system}; results are written "
                              "as root: give a directory of your own (e.g. results or /var/tmp/mptcplab)")
        if out is not None:
            parent = _open_tree(Path(os.path.abspath(path)).parent, owner, what)
        else:
            top = _open_tree(where, owner, what)
            try:
                parent, _ = _mkdir_at(top, experiment, owner, exist_ok=True)
            except OSError as e:
                raise RunDirError(f"{what}: {where / experiment}: {_why(e)}") from None
            finally:
                os.close(top)
        try:
            fd, _ = _mkdir_at(parent, path.name, owner, exist_ok=False)
        except FileExistsError:
            raise RunDirError(f"{what}: {path} exists; a run writes only into a new directory (give another "
                              f"--out, or --resume {path} to finish the run recorded there)") from None
        except OSError as e:
            raise RunDirError(f"{what}: cannot create {path}: {_why(e)}") from None
        finally:
            os.close(parent)
        rd = cls(path, owner=owner, fd=fd)
        rd._run_id = run_id
        rd.lock()
        with rd._at(RAW):
            pass
        return rd

    @classmethod
    def open_existing(cls, path: str | Path, *, resume: bool = False) -> "RunDir":
        """A run directory read back: metadata.json and points.json validated (run id, point ids,
        statuses, format). With resume=True it must hold spec.yaml and a run id, and its lock is
        taken (BusyError when another run or resume holds it)."""
        what = "--resume" if resume else "run directory"
        rd = cls(path)
        try:
            rd._h.dir = os.open(rd.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise RunDirError(f"{what} {path}: {'no such directory' if e.errno == errno.ENOENT else _why(e)}; "
                              "give a run directory (results/<experiment>/<run-id>)") from None
        if _read_at(rd._h.dir, METADATA, rd.path / METADATA) is None:
            no_summary = _read_at(rd._h.dir, SUMMARY, rd.path / SUMMARY) is None
            rd.close()
            raise RunDirError(f"{what} {path}: no {METADATA}{f' and no {SUMMARY}' if no_summary else ''}, so "
                              "not a run directory; give one (results/<experiment>/<run-id>)")
        try:
            rd._load_meta()
            rd.read_points()
            if resume:
                if _read_at(rd._h.dir, SPEC, rd.path / SPEC) is None:
                    raise RunDirError(f"--resume {path}: no {SPEC}; only a run made by mptcplab can be resumed")
                rd.run_id  # noqa: B018  (required to resume)
                rd.lock()
        except BaseException:
            rd.close()
            raise
        return rd

    def lock(self) -> None:
        """Hold <run_dir>/.lock (flock) until close or exit: one run or resume at a time."""
        if self._h.lock is not None:
            return
        where = self.path / LOCK
        dfd = self._dir()
        created = True
        try:
            try:
                fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                             dir_fd=dfd)
            except FileExistsError:
                created = False
                fd = os.open(LOCK, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        except OSError as e:
            raise RunDirError(f"{where}: cannot open the lock: {_why(e)}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                raise RunDirError(f"{where}: not a plain file (a link or a special file); remove it and try again")
            if created:
                _own(fd, self.owner, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                who = f"pid {holder}" if holder.isdigit() else "another process"
                raise BusyError(f"{self.path}: busy: mptcplab {who} is running or resuming this run "
                                f"directory (it holds {LOCK}); wait for it to end, or stop it, then try again") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._h.lock = fd

    def close(self) -> None:
        """Release the lock and the directory."""
        self._h.close()

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------------- descriptors

    def _dir(self) -> int:
        if self._h.dir is None:
            try:
                self._h.dir = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as e:
                raise RunDirError(f"{self.path}: {_why(e)}") from None
        return self._h.dir

    @contextmanager
    def _at(self, sub: str | None, create: bool = True) -> Iterator[int | None]:
        """The run directory's fd (sub None) or a subdirectory's, opened without following a link
        and created (0755, owned like the rest) when missing; None when missing and not create."""
        if sub is None:
            yield self._dir()
            return
        where = self.path / sub
        try:
            if create:
                fd, _ = _mkdir_at(self._dir(), sub, self.owner, exist_ok=True)
            else:
                fd = os.open(sub, _DIR_NOFOLLOW, dir_fd=self._dir())
        except FileNotFoundError:
            if create:
                raise
            yield None
            return
        except PermissionError:
            raise RunDirError(f"{where}: permission denied; run as the owner of {self.path} "
                              "(or with sudo)") from None
        except OSError as e:
            raise RunDirError(f"{where}: {_why(e)}") from None
        try:
            yield fd
        finally:
            os.close(fd)

    def _write(self, sub: str | None, name: str, data: bytes) -> Path:
        where = self.path / sub / name if sub else self.path / name
        with self._at(sub) as fd:
            try:
                _write_at(fd, _name(name), data, self.owner)  # type: ignore[arg-type]
            except PermissionError:
                raise RunDirError(f"{where}: permission denied; run as the owner of {self.path} "
                                  "(or with sudo)") from None
            except IsADirectoryError:
                raise RunDirError(f"{where}: is a directory; {_ALTERED}") from None
        return where

    def _read(self, sub: str | None, name: str) -> bytes | None:
        where = self.path / sub / name if sub else self.path / name
        with self._at(sub, create=False) as fd:
            return None if fd is None else _read_at(fd, name, where)

    # ---------------------------------------------------------------- paths (for display and for tools given a path)

    @property
    def raw(self) -> Path:
        return self.path / RAW

    @property
    def figures(self) -> Path:
        return self.path / FIGURES

    # ---------------------------------------------------------------- writing

    def write_spec(self, spec: dict[str, Any]) -> None:
        self._write(None, SPEC, yaml.safe_dump(spec, sort_keys=False).encode())

    def write_plan(self, plan: dict[str, Any]) -> None:
        self._write(None, PLAN, _json(plan))

    def write_metadata(self, meta: dict[str, Any]) -> None:
        """metadata.json, stamped with this FORMAT_VERSION; checked as it will be read back."""
        doc = {"format": FORMAT_VERSION, **{k: v for k, v in meta.items() if k != "format"}}
        model = Metadata.model_validate(json.loads(_json(doc)))
        self._write(None, METADATA, _json(doc))
        self._meta = model

    def write_json(self, name: str, obj: Any) -> None:
        """A JSON file at the top of the run directory (plan.json, controller-topology.json,
        selfcheck*.json, ...); metadata.json goes through write_metadata."""
        if name == METADATA:
            self.write_metadata(obj)
        else:
            self._write(None, name, _json(obj))

    def write_selfcheck(self, point_id: str | None, report: dict[str, Any]) -> None:
        self._write(None, selfcheck_name(point_id), _json(report))

    def write_raw(self, name: str, obj: Any) -> None:
        """raw/<name>: JSON for a dict or list, else the str/bytes as they are."""
        data = _json(obj) if isinstance(obj, (dict, list)) else _encode(obj)
        self._write(RAW, name, data)

    def write_capture(self, test: str, interface: str, parts: list[Path]) -> Path:
        """raw/<test>-<interface>.pcapng.gz: the capture's ring files, oldest first, gzipped as
        one pcapng file of several sections (tshark reads it as one). The parts are the
        capture's own files in a private directory, opened without following links."""
        name = _name(f"{test}-{interface}{CAPTURE_SUFFIX}")

        def fill(fd: int) -> None:
            with os.fdopen(os.dup(fd), "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                                   compresslevel=6, mtime=0) as gz:
                for part in parts:
                    src = os.open(part, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                    with os.fdopen(src, "rb") as f:
                        shutil.copyfileobj(f, gz, 1 << 20)

        with self._at(RAW) as dfd:
            _fill_at(dfd, name, fill, self.owner)  # type: ignore[arg-type]
        return self.raw / name

    #: Top-level files a point adds besides its rows (a distributed worker ships them back).
    POINT_FILES = re.compile(r"selfcheck(-p[0-9]{3,6})?\.json|controller-topology\.json")

    def point_files(self) -> dict[str, bytes]:
        """What points wrote besides rows and metadata, as {"raw/<name>" or "<name>": bytes}:
        raw/* and the top-level POINT_FILES (self-checks, the controller's topology). A
        distributed worker runs its point into a scratch run directory and ships this back;
        every entry is a regular file with a run directory's name."""
        out: dict[str, bytes] = {}
        for sub in (None, RAW):
            with self._at(sub, create=False) as dfd:
                if dfd is None:
                    continue
                for name in sorted(os.listdir(dfd)):
                    if not NAME.fullmatch(name) or (sub is None and not self.POINT_FILES.fullmatch(name)):
                        continue
                    data = _read_at(dfd, name, self.path / (sub or "") / name)
                    if data is not None:
                        out[f"{sub}/{name}" if sub else name] = data
        return out

    def put_point_file(self, key: str, data: bytes) -> Path:
        """One entry of :meth:`point_files` (from a worker) written into this run directory:
        "raw/<name>" or a top-level POINT_FILES name, nothing else (no summary, spec, metadata
        or points.json: those go through their own writers)."""
        sub, _, name = key.rpartition("/")
        if not isinstance(data, bytes):
            raise ValueError(f"{key!r}: not bytes")
        if sub == RAW and NAME.fullmatch(name):
            return self._write(RAW, name, data)
        if sub == "" and self.POINT_FILES.fullmatch(name):
            return self._write(None, name, data)
        raise ValueError(f"{key!r} is not a file a point writes")

    def captures(self) -> list[Path]:
        """The run's capture files (raw/*.pcapng.gz), each checked to be a regular file with a
        run directory's name -- the paths analysis hands to tshark."""
        out = []
        with self._at(RAW, create=False) as dfd:
            if dfd is None:
                return []
            for name in sorted(os.listdir(dfd)):
                if not name.endswith(CAPTURE_SUFFIX) or not NAME.fullmatch(name):
                    continue
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    raise RunDirError(f"{self.raw / name}: not a regular file; {_ALTERED}")
                out.append(self.raw / name)
        return out

    @contextmanager
    def open_capture(self, name: str) -> Iterator[Path]:
        """raw/<name> opened here -- without following a link, a regular file or refused (a FIFO
        would hang the reader) -- and handed on as /dev/fd/N (pass N to the child process): the
        file checked is the file read, whatever replaces the name meanwhile."""
        with self._at(RAW, create=False) as dfd:
            if dfd is None:
                raise RunDirError(f"{self.raw}: missing")
            fd = os.open(_name(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise RunDirError(f"{self.raw / name}: not a regular file; {_ALTERED}")
            os.set_blocking(fd, True)
            yield Path(f"/dev/fd/{fd}")
        finally:
            os.close(fd)

    def write_samples(self, test: str, rows: Iterable[dict[str, Any]]) -> None:
        self._write(RAW, samples_name(test), _csv(rows))

    def write_summary(self, rows: list[dict[str, Any]]) -> None:
        self._write(None, SUMMARY, _csv(rows, SUMMARY_COLUMNS))

    def write_subflows(self, rows: list[dict[str, Any]]) -> None:
        self._write(None, SUBFLOWS, _csv(rows))

    def write_table(self, name: str, rows: list[dict[str, Any]]) -> None:
        """One of TABLES (subflows.csv, flows.csv, flow-goodput.csv, rtt.csv), whole."""
        if name not in TABLES:
            raise ValueError(f"{name!r} is not one of {TABLES}")
        self._write(None, name, _csv(rows))

    def read_table(self, name: str) -> pd.DataFrame | None:
        """One of TABLES; None when the run has none."""
        if name not in TABLES:
            raise ValueError(f"{name!r} is not one of {TABLES}")
        return self._csv_frame(None, name)

    def write_figure(self, name: str, data: bytes) -> Path:
        """figures/<name> (figures/ created by whoever draws: the run, or plot as the owner)."""
        return self._write(FIGURES, name, data)

    def open_log(self, name: str = POX_LOG) -> BinaryIO:
        """A new log file in raw/ for a process's output (pox.log): created O_EXCL|O_NOFOLLOW,
        0644, owned like the rest. Never reopened: when the name is taken (a network rebuilt for
        another point, a resume) the next free one is used (pox-2.log, pox-3.log, ...) so no log
        is lost. The file's ``name`` is the name chosen (read it back with read_log)."""
        stem, dot, ext = _name(name).rpartition(".")
        if not dot:
            stem, ext = name, ""
        with self._at(RAW) as dfd:
            def opener(p: str, flags: int) -> int:
                return os.open(p, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)

            for k in range(1, 1000):
                cand = name if k == 1 else f"{stem}-{k}{dot}{ext}"
                try:
                    f = open(cand, "xb", opener=opener)  # noqa: SIM115  (the caller closes it)
                except FileExistsError:
                    continue
                except OSError as e:
                    raise RunDirError(f"{self.raw / cand}: cannot create: {_why(e)}") from None
                try:
                    _own(f.fileno(), self.owner, FILE_MODE)
                except BaseException:
                    f.close()
                    raise
                return f  # type: ignore[return-value]
        raise RunDirError(f"{self.raw / name}: 999 logs of that name already; start a new run")

    def read_log(self, name: str = POX_LOG, tail: int = 800) -> str:
        """The last `tail` characters of raw/<name> (for an error message), '' when missing."""
        data = self._read(RAW, _name(name))
        return "" if data is None else data.decode(errors="replace")[-tail:]

    # ---------------------------------------------------------------- reading

    def _read_json(self, name: str, kind: type, validate: Callable[[Any], Any]) -> Any:
        """A JSON file at the top of the run directory, parsed and validated (None when absent);
        RunDirError naming the file and the field otherwise."""
        where = self.path / name
        data = self._read(None, name)
        if data is None:
            return None
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunDirError(f"{where}: not JSON ({e}); {_ALTERED}") from None
        if not isinstance(doc, kind):
            raise RunDirError(f"{where}: not a JSON {'object' if kind is dict else 'list'}; {_ALTERED}")
        try:
            return validate(doc)
        except ValidationError as e:
            raise _problems(e, where, _ALTERED) from None

    def _load_meta(self) -> Metadata:
        meta = self._read_json(METADATA, dict, Metadata.model_validate)
        if meta is None:
            raise RunDirError(f"{self.path / METADATA}: missing; not a run directory "
                              "(give results/<experiment>/<run-id>)")
        self._meta = meta
        return meta

    @property
    def meta(self) -> Metadata:
        """metadata.json, validated (read once, kept up to date by write_metadata)."""
        return self._meta if self._meta is not None else self._load_meta()

    @property
    def metadata(self) -> dict[str, Any]:
        """metadata.json as a dict (validated), e.g. to be updated and written back on resume."""
        return self.meta.model_dump(exclude_unset=True)

    @property
    def format(self) -> int:
        return self.meta.format

    @property
    def run_id(self) -> str:
        """The run id, validated (it reaches OVS external-ids and state file names)."""
        if self._run_id is None:
            rid = self.meta.run_id
            if rid is None:
                raise RunDirError(f"{self.path / METADATA}: run_id: missing; {_ALTERED}")
            self._run_id = rid
        return self._run_id

    def read_points(self) -> list[PointRecord] | None:
        """points.json validated (ids, statuses, no id twice); None when there is none yet."""
        where = self.path / POINTS
        records = self._read_json(POINTS, list, _POINT_LIST.validate_python)
        if records is None:
            return None
        seen = [r.id for r in records]
        dup = sorted({i for i in seen if seen.count(i) > 1})
        if dup:
            raise RunDirError(f"{where}: point {', '.join(dup)} listed twice; {_ALTERED}")
        return records

    def _csv_frame(self, sub: str | None, name: str) -> pd.DataFrame | None:
        data = self._read(sub, name)
        if data is None:
            return None
        try:
            return pd.read_csv(io.BytesIO(data), dtype=dict.fromkeys(TEXT_COLUMNS, str))  # absent ones: ignored
        except pd.errors.EmptyDataError:
            return pd.DataFrame()
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
            where = self.path / sub / name if sub else self.path / name
            raise RunDirError(f"{where}: not a CSV table ({e}); {_ALTERED}") from None

    def read_summary(self) -> pd.DataFrame:
        df = self._csv_frame(None, SUMMARY)
        if df is None:
            raise RunDirError(f"{self.path}: no {SUMMARY} (no test finished, or not a run directory)")
        missing = [c for c in SUMMARY_REQUIRED if c not in df]
        if missing:
            raise RunDirError(f"{self.path / SUMMARY}: no column {', '.join(missing)}; {_ALTERED}")
        return df

    def read_subflows(self) -> pd.DataFrame | None:
        return self._csv_frame(None, SUBFLOWS)

    def read_samples(self, test: str) -> pd.DataFrame | None:
        """raw/<test>-samples.csv; None when missing. `test` comes from summary.csv: checked."""
        try:
            name = samples_name(str(test))
        except ValueError:
            raise RunDirError(f"{self.path / SUMMARY}: test {test!r} is not a test label; {_ALTERED}") from None
        return self._csv_frame(RAW, name)

    def read_spec(self) -> dict[str, Any] | None:
        data = self._read(None, SPEC)
        if data is None:
            return None
        try:
            doc = yaml.safe_load(data)
        except yaml.YAMLError as e:
            raise RunDirError(f"{self.path / SPEC}: not valid YAML ({e}); {_ALTERED}") from None
        if not isinstance(doc, dict):
            raise RunDirError(f"{self.path / SPEC}: not a YAML mapping; {_ALTERED}")
        return doc

    def figure_specs(self) -> list[Any]:
        """The spec's `figures:` block, each entry validated as spec.FigureSpec."""
        from .spec import FigureSpec

        spec = self.read_spec() or {}
        block = spec.get("figures") or []
        if not isinstance(block, list):
            raise RunDirError(f"{self.path / SPEC}: figures: not a list; {_ALTERED}")
        out = []
        for i, fs in enumerate(block):
            try:
                out.append(FigureSpec.model_validate(fs))
            except ValidationError as e:
                raise _problems(e, self.path / SPEC, f"figures[{i}]: {_ALTERED}") from None
        return out


# --------------------------------------------------------------------------- points and rows (resume)


def _canonical(values: dict[str, Any]) -> str:
    """A point's values as JSON text: 1, 1.0 and true are three values, not one."""
    return json.dumps(values, sort_keys=True, default=str)


class PointState:
    """points.json: every sweep point with its values and status (pending, done, failed).

    Points are matched to what was recorded by their values, not their numbers: a resume whose
    point list differs (values added, removed, changed or reordered) is refused -- its done flags
    would otherwise stick to other values. Each change is written (atomically, fsynced) at once."""

    def __init__(self, rd: RunDir, records: list[PointRecord]):
        self.rd = rd
        self.records = records

    @classmethod
    def open(cls, rd: RunDir, points: Sequence[Any]) -> "PointState":
        """The state of `points` (sweep.Point: .id, .as_dict()) in rd, carried over from its
        points.json. Takes rd's lock: whoever changes the points' state holds the directory."""
        rd.lock()
        new = [PointRecord(id=p.id, values=json.loads(_canonical(p.as_dict())), status="pending") for p in points]
        old = rd.read_points()
        if old is not None:
            by_values = {_canonical(o.values): o for o in old}
            now = {_canonical(n.values) for n in new}
            problems = []
            for n in new:
                o = by_values.get(_canonical(n.values))
                if o is None:
                    problems.append(f"point {n.id} ({n.label()}) is not in the recorded run")
                elif o.id != n.id:
                    problems.append(f"point {n.label()} was {o.id} and would now be {n.id}")
                else:
                    n.status, n.error = o.status, o.error
            problems += [f"recorded point {o.id} ({o.label()}) is not in this sweep"
                         for o in old if _canonical(o.values) not in now]
            if problems:
                raise RunDirError([f"{rd.path / POINTS}: {p}" for p in problems] + [
                    f"{rd.path}: a resume runs the recorded sweep points only; resume without --set (or with "
                    "the same values), or start a new run for the new values"])
        state = cls(rd, new)
        state.save()
        return state

    @property
    def points(self) -> list[dict[str, Any]]:
        return [r.model_dump() for r in self.records]

    def status(self, pid: str) -> str:
        return next(r.status for r in self.records if r.id == pid)

    def done_ids(self) -> set[str]:
        return {r.id for r in self.records if r.status == "done"}

    def mark(self, pid: str, status: PointStatus, error: str | None = None) -> None:
        if status not in POINT_STATUSES:
            raise ValueError(f"{status!r} is not a point status")
        for r in self.records:
            if r.id == pid:
                r.status, r.error = status, error
        self.save()

    def save(self) -> None:
        self.rd._write(None, POINTS, _json(self.points))


def _records(df: pd.DataFrame | None) -> list[dict[str, Any]]:
    if df is None or df.empty:
        return []
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
            for r in df.to_dict("records")]


def read_rows(rd: RunDir, done_ids: set[str], unnamed: str | None = None
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(summary rows, subflow rows) of the points in done_ids, for a resume to extend: rows of
    points that did not finish (killed half-way) are dropped, so the point runs again. Rows with
    no "point" (a run without sweep values) belong to `unnamed`."""
    return (_done_rows(rd, SUMMARY, done_ids, unnamed), _done_rows(rd, SUBFLOWS, done_ids, unnamed))


def read_tables(rd: RunDir, done_ids: set[str], unnamed: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """The multi-flow tables' rows (flows.csv, flow-goodput.csv, rtt.csv) of the points in
    done_ids, as read_rows keeps the summary's."""
    return {name: _done_rows(rd, name, done_ids, unnamed) for name in TABLES
            if name != SUBFLOWS and name not in ANALYSIS_TABLES}


def _done_rows(rd: RunDir, name: str, done_ids: set[str], unnamed: str | None) -> list[dict[str, Any]]:
    rows = _records(rd._csv_frame(None, name))
    return [r for r in rows if (r.get("point") if r.get("point") is not None else unnamed) in done_ids]


# --------------------------------------------------------------------------- module-level readers


def _as_rundir(run_dir: str | Path | RunDir) -> RunDir:
    return run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)


def read_summary(run_dir: str | Path | RunDir) -> pd.DataFrame:
    return _as_rundir(run_dir).read_summary()

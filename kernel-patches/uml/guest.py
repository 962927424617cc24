"""Runs inside the User-Mode Linux guest as PID 1 (through init.sh) and powers the guest off.

Two checks, each printing one line ``MPTCPLAB-RESULT <json>`` on the console for uml.py:

e2e    two namespaces joined by two veth paths; an MPTCP transfer runs while the second path's
       interface flaps N times, once with automatic endpoints (net.mptcp.pm_auto_endpoints) and
       once the way userspace daemons do it today (endpoint del/add around every flap). The MIB
       gives the walks over the connections (MPTcpExtPmWalks) each way costs; the endpoint
       list must end as it began, a user's endpoint on the flapping interface included.
bench  N idle MPTCP connections and a burst of K address changes, with automatic endpoints
       (batched) and with one netlink endpoint change per address (unbatched): walks, CPU time
       (/proc/schedstat) and wall time for each.

Everything runs in namespaces of the guest; nothing here touches the host.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

IPPROTO_MPTCP = 262
MARK = "MPTCPLAB-MARK"
SUBFLOW = 2  # MPTCP_PM_ADDR_FLAG_SUBFLOW


class Family:
    """The addresses of one run: IPv4 (the run compared with userspace) or IPv6."""

    def __init__(self, v6: bool) -> None:
        self.v6 = v6
        self.af = socket.AF_INET6 if v6 else socket.AF_INET
        self.name = "IPv6" if v6 else "IPv4"
        self.prefix = 64 if v6 else 24
        self.flag = "-6" if v6 else "-4"  # ip's family option (ip rule does not guess it)
        # the client's address with a user endpoint (automatic mode)
        self.user_addr = self.cli(2, user=True)

    def net(self, k: int) -> str:
        return f"fd00:{k}::/64" if self.v6 else f"10.1.{k}.0/24"

    def cli(self, k: int, user: bool = False) -> str:
        host = 3 if user else 1
        return f"fd00:{k}::{host}" if self.v6 else f"10.1.{k}.{host}"

    def srv(self, k: int) -> str:
        return f"fd00:{k}::2" if self.v6 else f"10.1.{k}.2"

    def addr_add(self, addr: str, dev: str) -> list[str]:
        """``ip addr add`` arguments; IPv6 without duplicate address detection, so that an
        address is usable (and announced to the path manager) at once."""
        return ["addr", "add", f"{addr}/{self.prefix}", "dev", dev] + (["nodad"] if self.v6 else [])


def ip(*args: str, ns: str | None = None) -> str:
    cmd = ["ip"] + (["-n", ns] if ns else []) + list(args)
    out = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip()}")
    return out.stdout


def ip_batch(ns: str, lines: list[str]) -> float:
    """Runs ``ip -n NS -batch`` and returns its wall time in seconds."""
    path = Path("/tmp") / f"batch-{ns}-{time.monotonic_ns()}"
    path.write_text("\n".join(lines) + "\n")
    start = time.monotonic()
    ip("-batch", str(path), ns=ns)
    return time.monotonic() - start


def sysctl(ns: str, name: str, value: int) -> None:
    """Writes /proc/sys/net/mptcp/NAME in netns NS (names are this file's constants)."""
    subprocess.run(["ip", "netns", "exec", ns, "sh", "-c",
                    f"echo {int(value)} > /proc/sys/net/mptcp/{name}"], check=True)


def in_netns(ns: str):
    """Moves the calling thread into netns NS (setns on the thread, not the process)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), f"setns {ns}")
    finally:
        os.close(fd)


def mib(ns: str) -> dict[str, int]:
    """The netns's MPTcpExt counters, read in that netns by a short-lived thread (no process
    to start, so that reading them costs next to no CPU inside a measurement)."""
    text: list[str] = []

    def read() -> None:
        in_netns(ns)
        text.append(Path("/proc/thread-self/net/netstat").read_text())

    reader = threading.Thread(target=read)
    reader.start()
    reader.join()
    out = text[0].splitlines() if text else []
    for names, values in zip(out[::2], out[1::2]):
        if names.startswith("MPTcpExt:"):
            return dict(zip(names.split()[1:], map(int, values.split()[1:])))
    return {}


def mptcp_sockets(ns: str) -> int:
    """Established MPTCP sockets in NS, from ss (the kernel's socket table)."""
    out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-HMn", "state", "established"],
                         capture_output=True, text=True, check=True).stdout
    return len(out.splitlines())


def cpu_ns() -> int:
    """Time all tasks spent running, summed over CPUs (CONFIG_SCHEDSTATS), in ns."""
    total = 0
    for line in Path("/proc/schedstat").read_text().splitlines():
        if line.startswith("cpu"):
            total += int(line.split()[7])
    return total


def mark(label: str) -> None:
    """A point in time the host stamps with the UML kernel's CPU time (uml.py reads it from
    the host's /proc with ns resolution, where the guest's own accounting has 10 ms ticks).
    The guest then idles a little, so that the host reads it while nothing runs."""
    print(f"{MARK} {label}", flush=True)
    time.sleep(0.15)


def subflows_from(ns: str, addr: str) -> list[str]:
    """Local ends of the established TCP sockets (MPTCP subflows here) with address ADDR."""
    out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-tnH", "state", "established"],
                         check=True, capture_output=True, text=True).stdout
    starts = (f"{addr}:", f"{addr}%", f"[{addr}]")
    return sorted(line.split()[2] for line in out.splitlines()
                  if len(line.split()) > 2 and line.split()[2].startswith(starts))


def wait_for(pred, timeout: float, step: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def two_paths(cli: str, srv: str) -> None:
    """cli and srv joined by c1-s1 and c2-s2 (addresses: two_paths_up); the client's second
    address is routed over the second path (table 2)."""
    for ns in (cli, srv):
        ip("netns", "add", ns)
        ip("link", "set", "lo", "up", ns=ns)
        ip("mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "2", ns=ns)
    for k in (1, 2):
        ip("link", "add", f"c{k}", "netns", cli, "type", "veth", "peer", f"s{k}", "netns", srv)


def two_paths_up(cli: str, srv: str, fam: Family) -> None:
    for k in (1, 2):
        ip(*fam.addr_add(fam.cli(k), f"c{k}"), ns=cli)
        ip(*fam.addr_add(fam.srv(k), f"s{k}"), ns=srv)
        ip("link", "set", f"c{k}", "up", ns=cli)
        ip("link", "set", f"s{k}", "up", ns=srv)
    ip(fam.flag, "rule", "add", "from", fam.cli(2), "table", "2", ns=cli)
    ip(*second_path_route(fam), ns=cli)


def second_path_route(fam: Family) -> list[str]:
    """The client's route for its second address: to the server's first address over c2."""
    return ["route", "replace", fam.net(1), "via", fam.srv(2), "dev", "c2", "table", "2"]


class Transfer:
    """An MPTCP transfer cli -> srv (the server's first address, port 5201) that runs until
    stop(); the server counts what it receives, the client what it sent."""

    def __init__(self, cli: str, srv: str, fam: Family) -> None:
        self.fam = fam
        self.sent = 0
        self.received = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._server = threading.Thread(target=self._serve, args=(srv,))
        self._client = threading.Thread(target=self._send, args=(cli,))

    def start(self) -> None:
        self._server.start()
        if not self._listening.wait(10):
            raise RuntimeError("server did not listen")
        self._client.start()

    def stop(self) -> None:
        self._stop.set()
        self._client.join(60)
        self._server.join(60)

    def _serve(self, ns: str) -> None:
        try:
            in_netns(ns)
            with socket.socket(self.fam.af, socket.SOCK_STREAM, IPPROTO_MPTCP) as ls:
                ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                ls.bind((self.fam.srv(1), 5201))
                ls.listen(1)
                self._listening.set()
                conn, _ = ls.accept()
                with conn:
                    while data := conn.recv(1 << 16):
                        self.received += len(data)
        except OSError as exc:
            self.error = f"server: {exc}"

    def _send(self, ns: str) -> None:
        chunk = b"m" * (1 << 14)
        try:
            in_netns(ns)
            s = socket.socket(self.fam.af, socket.SOCK_STREAM, IPPROTO_MPTCP)
            s.connect((self.fam.srv(1), 5201))
            while not self._stop.is_set():
                s.sendall(chunk)
                self.sent += len(chunk)
                time.sleep(0.001)
            s.shutdown(socket.SHUT_WR)
            s.close()
        except OSError as exc:
            self.error = f"client: {exc}"


def flap_lines(fam: Family, auto: bool) -> list[str]:
    """One flap of c2 as ``ip -batch`` lines, and what brings the interface back as it was:
    IPv6 drops a link's addresses when it goes down (keep_addr_on_down=0), so they are added
    again, and the second path's route, which goes with the link, is put back. The userspace
    way also deletes the endpoint after the down and adds it after the up, as daemons do."""
    readd = [" ".join(fam.addr_add(a, "c2")) for a in (fam.cli(2), fam.user_addr)] if fam.v6 else []
    back = readd + [" ".join(second_path_route(fam))]
    if auto:
        return ["link set c2 down", "link set c2 up"] + back
    return (["link set c2 down", "mptcp endpoint delete id 2", "link set c2 up"] + back
            + [f"mptcp endpoint add {fam.cli(2)} dev c2 id 2 subflow"])


IMPLICIT = 0x10  # MPTCP_PM_ADDR_FLAG_IMPLICIT


def shows_implicit(line: str) -> bool:
    """Whether an ``ip mptcp endpoint show`` line has the implicit flag: by name, or -- iproute2
    6.1 knows no name for it -- among the ``rawflags`` it prints in hex for unknown bits."""
    words = line.split()
    if "implicit" in words:
        return True
    if "rawflags" in words[:-1]:
        return bool(int(words[words.index("rawflags") + 1], 16) & IMPLICIT)
    return False


def has_endpoint(lines: list[str], addr: str, eid: str | None = None, *flags: str) -> bool:
    """Whether ``ip mptcp endpoint show`` lists ADDR (with id EID and FLAGS, when given)."""
    for line in lines:
        words = line.split()
        if words[:1] == [addr] and (eid is None or words[1:3] == ["id", eid]) \
                and all(f in words for f in flags):
            return True
    return False


class Daemon:
    """A fair userspace baseline: a daemon that follows c2's link and address events (``ip
    monitor``, as mptcpd follows RTM_NEWADDR/DELADDR) with the kernel's own debounce -- act a
    delay after the last event, at the latest ten delays after the first -- and then makes the
    endpoint list what the interface says: the client's second address an endpoint (id 2,
    subflow) while c2 is up and holds it, none otherwise. Each netlink change is one walk."""

    def __init__(self, ns: str, fam: Family, delay_ms: int) -> None:
        self.ns, self.fam, self.delay = ns, fam, delay_ms / 1000
        self.changes = 0
        self._lock = threading.Lock()
        self._first: float | None = None
        self._due: float | None = None
        self._stop = threading.Event()
        self._proc = subprocess.Popen(["ip", "-n", ns, "monitor", "link", "address"],
                                      stdout=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read)
        self._worker = threading.Thread(target=self._work)
        self._reader.start()
        self._worker.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if " c2" in line or "c2:" in line:
                with self._lock:
                    now = time.monotonic()
                    self._first = self._first or now
                    self._due = min(now + self.delay, self._first + 10 * self.delay)

    def _work(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                due = self._due is not None and time.monotonic() >= self._due
                if due:
                    self._first = self._due = None
            if due:
                self.reconcile()
            time.sleep(0.005)

    def reconcile(self) -> None:
        link = ip("-o", "link", "show", "dev", "c2", ns=self.ns)
        up = ",UP" in link or "<UP" in link
        present = any(f" {self.fam.cli(2)}/" in f" {w}" for w in
                      ip("-o", "addr", "show", "dev", "c2", ns=self.ns).split())
        have = has_endpoint(ip("mptcp", "endpoint", "show", ns=self.ns).splitlines(), self.fam.cli(2))
        if up and present and not have:
            ip("mptcp", "endpoint", "add", self.fam.cli(2), "dev", "c2", "id", "2", "subflow", ns=self.ns)
            self.changes += 1
        elif not (up and present) and have:
            ip("mptcp", "endpoint", "delete", "id", "2", ns=self.ns)
            self.changes += 1

    def settle(self, timeout: float) -> None:
        """Waits until no batch is pending (the last events acted on), then stops."""
        wait_for(lambda: self._due is None, timeout, step=0.05)
        self._stop.set()
        self._worker.join(10)
        self._proc.terminate()
        self._proc.wait(10)
        self._reader.join(10)


def e2e_mode(auto: bool, flaps: int, delay_ms: int, fam: Family, daemon: bool = False) -> dict:
    tag = ("a" if auto else "d" if daemon else "u") + ("6" if fam.v6 else "") + str(delay_ms)
    cli, srv = f"cli{tag}", f"srv{tag}"
    two_paths(cli, srv)
    # With the 10 s delay the kernel follows the addresses from before they exist, and the
    # user's endpoint below is added while the kernel's own add for its address is still
    # queued. With a short delay the user's endpoint comes first and setting the sysctl makes
    # the kernel compare what is there (a user's add after the kernel's replaces it:
    # takeover_check).
    early = delay_ms >= 10000
    if auto and early:
        sysctl(cli, "pm_auto_delay_ms", delay_ms)
        sysctl(cli, "pm_auto_endpoints", SUBFLOW)
    two_paths_up(cli, srv, fam)
    if auto:
        # A second address on the flapping interface with an endpoint of the user's: the
        # automatic endpoints must leave it as it is, through the flaps too.
        ip(*fam.addr_add(fam.user_addr, "c2"), ns=cli)
        ip(fam.flag, "rule", "add", "from", fam.user_addr, "table", "2", ns=cli)
        ip("mptcp", "endpoint", "add", fam.user_addr, "dev", "c2", "id", "50", "subflow",
           "backup", ns=cli)
        if not early:
            sysctl(cli, "pm_auto_delay_ms", delay_ms)
            sysctl(cli, "pm_auto_endpoints", SUBFLOW)
        # one batch: both adds were queued within milliseconds, the worker runs a delay later
        ok = wait_for(lambda: has_endpoint(
            ip("mptcp", "endpoint", "show", ns=cli).splitlines(), fam.cli(2)),
            3 * delay_ms / 1000 + 10, step=0.1)
        if not ok:
            raise RuntimeError(f"no automatic endpoint for {fam.cli(2)}")
    else:
        ip("mptcp", "endpoint", "add", fam.cli(2), "dev", "c2", "id", "2", "subflow", ns=cli)
    endpoints = ip("mptcp", "endpoint", "show", ns=cli).strip().splitlines()

    transfer = Transfer(cli, srv, fam)
    transfer.start()
    joined = wait_for(lambda: mib(cli).get("MPJoinSynAckRx", 0) >= 1, 10)

    time.sleep(1)
    subflows_before = subflows_from(cli, fam.cli(2))
    before = mib(cli)
    follower = Daemon(cli, fam, delay_ms) if daemon else None
    flap_s = ip_batch(cli, flap_lines(fam, auto or daemon) * flaps)
    if follower is not None:
        follower.settle(12 * delay_ms / 1000 + 10)
    if auto:
        # The worker runs a delay after the last event (at the latest ten delays after the
        # first) and reports the events it found to the MIB before it takes the batch.
        wait_for(lambda: mib(cli).get("PmAutoEvents", 0) - before.get("PmAutoEvents", 0)
                 >= 2 * flaps, 12 * delay_ms / 1000 + 10, step=0.2)
    time.sleep(1)  # a walk of that batch, if any, is over
    after = mib(cli)
    endpoints_after = ip("mptcp", "endpoint", "show", ns=cli).strip().splitlines()
    # The subflow on the second path lives through the flaps (automatic endpoints) or comes
    # back with the endpoint (userspace). It carries little data either way: the transfer is
    # application-limited and the default scheduler prefers the first subflow.
    subflows_after = subflows_from(cli, fam.cli(2))
    time.sleep(1)
    transfer.stop()

    delta = {k: after.get(k, 0) - before.get(k, 0)
             for k in ("PmWalks", "PmAutoEvents", "PmAutoCancelled", "PmAutoRescans")}
    return {
        "mode": ("automatic endpoints" if auto else "userspace daemon" if daemon else "userspace del/add")
        + (", IPv6" if fam.v6 else "") + (f", {delay_ms} ms" if auto or daemon else ""),
        "automatic": auto,
        "daemon": daemon,
        "daemon_changes": follower.changes if follower is not None else None,
        "family": fam.name,
        "flaps": flaps,
        "delay_ms": delay_ms if auto or daemon else None,
        # the 10 s runs are meant to hold all the flapping in one batch window (0 walks); at the
        # default delay the flapping outlasts it and walks are what is measured
        "one_window": delay_ms >= 10000,
        "flap_seconds": round(flap_s, 3),
        "walks": delta["PmWalks"],
        "walks_per_flap": delta["PmWalks"] / flaps,
        "events_queued": delta["PmAutoEvents"],
        "events_cancelled": delta["PmAutoCancelled"],
        "rescans": delta["PmAutoRescans"],
        "second_subflow_joined": joined,
        "endpoints": endpoints,
        "endpoints_after": endpoints_after,
        # the flaps end with the interface as it was: every endpoint too, the user's included
        "endpoints_kept": sorted(endpoints) == sorted(endpoints_after)
        and has_endpoint(endpoints_after, fam.cli(2)),
        "user_endpoint_kept": has_endpoint(endpoints_after, fam.user_addr, "50", "subflow",
                                           "backup") if auto else None,
        "second_path_subflows_before": subflows_before,
        "second_path_subflows_after": subflows_after,
        "sent": transfer.sent,
        "received": transfer.received,
        "transfer_complete": transfer.error is None and transfer.sent == transfer.received > 0,
        "transfer_error": transfer.error,
    }


def addr6_flags(ns: str, dev: str, addr: str) -> set[str] | None:
    """The flags ``ip -6 addr show`` gives ADDR on DEV (tentative, dadfailed, deprecated...),
    None when the address is not there."""
    known = {"tentative", "dadfailed", "deprecated", "temporary", "optimistic", "nodad", "mngtmpaddr"}
    for line in ip("-6", "-o", "addr", "show", "dev", dev, ns=ns).splitlines():
        words = line.split()
        if "inet6" in words and words[words.index("inet6") + 1].split("/")[0] == addr:
            return set(words) & known
    return None


def dad_check(delay_ms: int = 100) -> dict:
    """IPv6 addresses added the normal way, with duplicate address detection, and the default
    delay (shorter than DAD): a valid address gets its automatic endpoint once DAD is over, not
    before; an address whose DAD fails never gets one; a deprecated address (preferred_lft 0)
    gets none. Times in ms from the ``ip addr add``."""
    cli, srv = "clid", "srvd"
    for ns in (cli, srv):
        ip("netns", "add", ns)
        ip("link", "set", "lo", "up", ns=ns)
    ip("link", "add", "c1", "netns", cli, "type", "veth", "peer", "s1", "netns", srv)
    ip("addr", "add", "fd00:9::2/64", "dev", "s1", "nodad", ns=srv)
    ip("addr", "add", "fd00:9::5/64", "dev", "s1", "nodad", ns=srv)  # what cli's ::5 collides with
    ip("link", "set", "s1", "up", ns=srv)
    ip("link", "set", "c1", "up", ns=cli)
    sysctl(cli, "pm_auto_delay_ms", delay_ms)
    sysctl(cli, "pm_auto_endpoints", SUBFLOW)
    time.sleep(1)  # the link's own DAD (its link-local address) is over
    before = mib(cli)

    def endpoint(addr: str) -> bool:
        return has_endpoint(ip("mptcp", "endpoint", "show", ns=cli).splitlines(), addr)

    out: dict = {"delay_ms": delay_ms}
    valid, dup, old = "fd00:9::1", "fd00:9::5", "fd00:9::7"
    t0 = time.monotonic()
    ip("addr", "add", f"{valid}/64", "dev", "c1", ns=cli)
    ip("addr", "add", f"{dup}/64", "dev", "c1", ns=cli)
    ip("addr", "add", f"{old}/64", "dev", "c1", "nodad", "preferred_lft", "0", ns=cli)
    dad_ms = endpoint_ms = None
    endpoint_while_tentative = False
    while time.monotonic() - t0 < 6:
        # the endpoint first, then the flags: an endpoint seen while the address is still
        # tentative afterwards was there before DAD was over (the other order would race it)
        has = endpoint(valid)
        flags = addr6_flags(cli, "c1", valid) or set()
        ms = round((time.monotonic() - t0) * 1000)
        if "tentative" in flags and has:
            endpoint_while_tentative = True
        if dad_ms is None and "tentative" not in flags:
            dad_ms = ms
        if has and endpoint_ms is None:
            endpoint_ms = ms
        if dad_ms is not None and endpoint_ms is not None:
            break
        time.sleep(0.02)
    time.sleep(max(0.0, 4 - (time.monotonic() - t0)) + 3 * delay_ms / 1000)  # retries, if any, are over
    after = mib(cli)
    out.update({
        "valid_dad_ms": dad_ms, "valid_endpoint_ms": endpoint_ms,
        "valid_endpoint_while_tentative": endpoint_while_tentative,
        "valid_endpoint": endpoint(valid),
        "duplicate_flags": sorted(addr6_flags(cli, "c1", dup) or []), "duplicate_endpoint": endpoint(dup),
        "deprecated_flags": sorted(addr6_flags(cli, "c1", old) or []), "deprecated_endpoint": endpoint(old),
        "walks": after.get("PmWalks", 0) - before.get("PmWalks", 0),
        "endpoints": ip("mptcp", "endpoint", "show", ns=cli).strip().splitlines(),
    })
    for ns in (cli, srv):
        ip("netns", "del", ns)
    return out


def takeover_check(delay_ms: int = 100) -> dict:
    """A user's endpoint for an address that already has the kernel's automatic one: the add
    succeeds and replaces it, keeping its id (before: EEXIST); dumps tell the automatic one by
    its implicit flag; the user's stays, untouched, when its address goes and comes back."""
    cli = "clit"
    ip("netns", "add", cli)
    ip("link", "set", "lo", "up", ns=cli)
    ip("link", "add", "c1", "type", "veth", "peer", "name", "p1", ns=cli)
    ip("link", "set", "p1", "up", ns=cli)
    ip("link", "set", "c1", "up", ns=cli)
    sysctl(cli, "pm_auto_delay_ms", delay_ms)
    sysctl(cli, "pm_auto_endpoints", SUBFLOW)
    addr = "10.9.0.1"

    def show() -> list[str]:
        return ip("mptcp", "endpoint", "show", ns=cli).strip().splitlines()

    ip("addr", "add", f"{addr}/24", "dev", "c1", ns=cli)
    wait_for(lambda: has_endpoint(show(), addr), 3 * delay_ms / 1000 + 5, step=0.05)
    automatic = [line for line in show() if line.split()[:1] == [addr]]
    auto_id = automatic[0].split()[2] if automatic else None
    try:
        ip("mptcp", "endpoint", "add", addr, "dev", "c1", "signal", "backup", ns=cli)
        user_add = "ok"
    except RuntimeError as e:
        user_add = str(e)
    after_add = show()
    # the address goes and comes back: the kernel leaves the user's endpoint as it is
    ip("addr", "del", f"{addr}/24", "dev", "c1", ns=cli)
    ip("addr", "add", f"{addr}/24", "dev", "c1", ns=cli)
    time.sleep(3 * delay_ms / 1000 + 0.5)
    after_flap = show()
    ip("netns", "del", cli)
    return {"delay_ms": delay_ms, "automatic": automatic, "automatic_id": auto_id, "user_add": user_add,
            "after_add": after_add, "after_flap": after_flap,
            "automatic_shows_implicit": bool(automatic) and shows_implicit(automatic[0]),
            "user_endpoint": auto_id is not None and has_endpoint(after_add, addr, auto_id, "signal", "backup")
            and not any(shows_implicit(line) for line in after_add if line.split()[:1] == [addr]),
            "user_endpoint_kept": auto_id is not None and sorted(after_flap) == sorted(after_add)}


def e2e(flaps: int) -> dict:
    """The automatic endpoints and the userspace way over IPv4, then the automatic endpoints
    over IPv6 (its own notifier, and addresses that go with the link)."""
    # 10 s: the flapping (5 to 35 s in UML, depending on the host's load) must fit in one batch
    # window, which the worker closes ten delays after its first event at the latest
    delay_ms = int(os.environ.get("mptcplab_delay_ms", "10000"))
    v4, v6 = Family(False), Family(True)
    # At the default delay (100 ms) the flapping outlasts the batch window: what automatic
    # endpoints cost then, against a userspace daemon with the same debounce (a fair baseline).
    default_ms = int(os.environ.get("mptcplab_default_delay_ms", "100"))
    return {"check": "e2e", "kernel": os.uname().release, "dad": dad_check(), "takeover": takeover_check(),
            "runs": [e2e_mode(True, flaps, delay_ms, v4), e2e_mode(False, flaps, delay_ms, v4),
                     e2e_mode(True, flaps, delay_ms, v6),
                     e2e_mode(True, flaps, default_ms, v4), e2e_mode(False, flaps, default_ms, v4, daemon=True)]}


def open_connections(cli: str, srv: str, n: int) -> list[socket.socket]:
    """N established MPTCP connections cli -> srv; both ends are kept open."""
    socks: list[socket.socket] = []
    ready = threading.Event()

    def serve() -> None:
        in_netns(srv)
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("10.2.0.2", 5201))
        ls.listen(4096)
        ready.set()
        for _ in range(n):
            conn, _ = ls.accept()
            conn.recv(1)
            conn.sendall(b"y")
            socks.append(conn)
        socks.append(ls)

    server = threading.Thread(target=serve)
    server.start()
    ready.wait(10)

    def connect() -> None:
        in_netns(cli)
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
            s.connect(("10.2.0.2", 5201))
            s.sendall(b"x")  # data both ways: both ends fully established
            s.recv(1)
            socks.append(s)

    client = threading.Thread(target=connect)
    client.start()
    client.join()
    server.join()
    return socks


def bench_one(n: int, k: int, rounds: int, delay_ms: int) -> list[dict]:
    cli, srv = f"bc{n}", f"bs{n}"
    for ns in (cli, srv):
        ip("netns", "add", ns)
        ip("link", "set", "lo", "up", ns=ns)
        # no new subflows: the walk itself is what is measured
        ip("mptcp", "limits", "set", "subflows", "0", "add_addr_accepted", "0", ns=ns)
    ip("link", "add", "x0", "netns", cli, "type", "veth", "peer", "x1", "netns", srv)
    # scope link: not followed by the automatic endpoints, which leaves all 8 endpoint slots
    # (MPTCP_PM_ADDR_MAX) to the burst
    ip("addr", "add", "10.2.0.1/24", "dev", "x0", "scope", "link", ns=cli)
    ip("addr", "add", "10.2.0.2/24", "dev", "x1", ns=srv)
    ip("link", "add", "d0", "netns", cli, "type", "veth", "peer", "d1", "netns", cli)
    for ns, dev in ((cli, "x0"), (srv, "x1"), (cli, "d0"), (cli, "d1")):
        ip("link", "set", dev, "up", ns=ns)
    sysctl(cli, "pm_auto_delay_ms", delay_ms)

    start = time.monotonic()
    socks = open_connections(cli, srv, n)
    opened = time.monotonic() - start
    tokens = mptcp_sockets(cli)
    counters = mib(cli)
    capable = counters.get("MPCapableSYNACKRX", 0)
    if capable < n:
        raise RuntimeError(f"{capable} MP_CAPABLE SYN-ACKs in {cli}, wanted {n}: {counters}")
    addrs = [f"10.3.0.{i + 1}" for i in range(k)]
    rows = []
    for batched in (True, False):
        sysctl(cli, "pm_auto_endpoints", SUBFLOW if batched else 0)
        time.sleep(2 * delay_ms / 1000 + 0.5)
        acc = {"add": [0, 0, 0.0], "delete": [0, 0, 0.0]}  # walks, cpu ns, ip wall s
        for _ in range(rounds):
            for phase in ("add", "delete"):
                if batched:
                    lines = [f"addr {phase} {a}/32 dev d0" for a in addrs]
                elif phase == "add":
                    lines = [line for i, a in enumerate(addrs)
                             for line in (f"addr add {a}/32 dev d0",
                                          f"mptcp endpoint add {a} dev d0 id {i + 10} subflow")]
                else:
                    lines = [line for i, a in enumerate(addrs)
                             for line in (f"mptcp endpoint delete id {i + 10}",
                                          f"addr delete {a}/32 dev d0")]
                label = f"{n}:{'batched' if batched else 'unbatched'}:{phase}"
                walks0 = mib(cli).get("PmWalks", 0)
                mark(f"begin {label}")
                cpu0 = cpu_ns()
                acc[phase][2] += ip_batch(cli, lines)
                time.sleep(delay_ms / 1000 + 0.3)  # the batched walk runs after the delay
                acc[phase][1] += cpu_ns() - cpu0
                mark(f"end {label}")
                acc[phase][0] += mib(cli).get("PmWalks", 0) - walks0
        for phase, (walks, cpu, wall) in acc.items():
            rows.append({"connections": n, "address_changes": k, "phase": phase,
                         "mode": "batched" if batched else "unbatched",
                         "walks_per_burst": walks / rounds,
                         "cpu_ms_per_burst": round(cpu / rounds / 1e6, 3),
                         "ip_wall_ms_per_burst": round(wall / rounds * 1000, 3),
                         "open_seconds": round(opened, 2), "mptcp_sockets": tokens})
    for s in socks:
        s.close()
    return rows


def bench(conns: list[int], k: int, rounds: int) -> dict:
    delay_ms = int(os.environ.get("mptcplab_delay_ms", "50"))
    rows = []
    for n in conns:
        rows += bench_one(n, k, rounds, delay_ms)
    return {"check": "bench", "kernel": os.uname().release, "rows": rows}


def power_off() -> None:
    os.sync()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.reboot(0x4321FEDC)  # LINUX_REBOOT_CMD_POWER_OFF


def main() -> None:
    check = sys.argv[1] if len(sys.argv) > 1 else "e2e"
    try:
        if check == "e2e":
            result = e2e(int(os.environ.get("mptcplab_flaps", "1000")))
        else:
            conns = [int(c) for c in os.environ.get("mptcplab_conns", "0,1000,10000").split(",")]
            result = bench(conns, int(os.environ.get("mptcplab_changes", "8")),
                           int(os.environ.get("mptcplab_rounds", "10")))
    except Exception as exc:  # noqa: BLE001 - reported to the host, which fails loudly
        result = {"check": check, "error": f"{type(exc).__name__}: {exc}"}
    print("MPTCPLAB-RESULT " + json.dumps(result), flush=True)
    power_off()


if __name__ == "__main__":
    main()

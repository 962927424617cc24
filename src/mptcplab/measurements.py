"""Per-subflow samples and kernel counters while traffic runs.

iperf3 sees only the MPTCP socket, not its subflows, so the sampler asks the kernel itself:
``ss -tinMH`` inside the host's namespace every ``interval`` seconds gives every TCP subflow
(bytes, RTT, cwnd, retransmissions, and its MPTCP token) and every MPTCP socket. Subflows belong
to the MPTCP connection whose token they carry as *local* token. The MIB counters
(/proc/PID/net/netstat and snmp, which show the namespace of PID) give totals for a test.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

SS_ARGV = ["ss", "-tinMH"]

_NUM = re.compile(r"^-?\d+(\.\d+)?$")
# "token:0000(id:0)/7507ff92(id:0)": remote token and id / local token and id (iproute2 ss.c).
_SUBFLOW_TOKEN = re.compile(r"token:([0-9a-f]+)\(id:(\d+)\)/([0-9a-f]+)\(id:(\d+)\)")


def _rate(text: str) -> float | None:
    m = re.fullmatch(r"([0-9.]+)([KMG]?)bps", text)
    if not m:
        return None
    return float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[m.group(2)]


def parse_ss(text: str) -> list[dict[str, Any]]:
    """Parse ``ss -tinMH`` output into one dict per socket.

    Every socket is a header line (``tcp ESTAB 0 0 10.0.1.1:5201 10.0.1.2:40000``) followed by a
    tab-indented info line of ``key:value`` tokens. Keys kept: see the returned dicts.
    """
    sockets: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            parts = line.split()
            if len(parts) < 6 or parts[0] not in ("tcp", "mptcp"):
                cur = None
                continue
            cur = {"kind": parts[0], "state": parts[1], "local": parts[4], "remote": parts[5]}
            sockets.append(cur)
            continue
        if cur is None:
            continue
        info = line.strip()
        m = _SUBFLOW_TOKEN.search(info)
        if m:
            cur["remote_token"], cur["remote_id"] = m.group(1), int(m.group(2))
            cur["token"], cur["local_id"] = m.group(3), int(m.group(4))
        cur["mptcp_subflow"] = "tcp-ulp-mptcp" in info
        # Drop parenthesised groups (bbr:(...), token:...(id:..)) before splitting on spaces.
        flat = re.sub(r"\([^)]*\)", "", info)
        for tok in flat.split():
            if ":" not in tok:
                if tok in ("cubic", "reno", "bbr", "bbr2", "vegas", "westwood", "dctcp", "htcp", "bic"):
                    cur["cc"] = tok
                continue
            key, _, val = tok.partition(":")
            if key == "rtt" and "/" in val:
                rtt, var = val.split("/", 1)
                cur["rtt_ms"], cur["rttvar_ms"] = float(rtt), float(var)
            elif key == "retrans" and "/" in val:
                cur["retrans_now"], cur["retrans_total"] = (int(x) for x in val.split("/", 1))
            elif key == "token" and cur["kind"] == "mptcp":
                cur["token"] = val
            elif key in ("delivery_rate", "pacing_rate") and _rate(val) is not None:
                cur[key + "_bps"] = _rate(val)
            elif key in ("bytes_sent", "bytes_acked", "bytes_received", "bytes_retrans", "cwnd",
                         "ssthresh", "segs_out", "segs_in", "data_segs_out", "unacked", "lost",
                         "subflows", "add_addr_accepted", "subflows_max", "add_addr_signal",
                         "mss", "notsent", "delivered") and _NUM.match(val):
                cur[key] = int(float(val))
            elif key in ("minrtt", "rto") and _NUM.match(val):
                cur[key + ("_ms" if key == "minrtt" else "")] = float(val)
    return sockets


@dataclass
class Sampler:
    """Samples ``ss`` in one namespace in a background thread until stopped."""

    run: Callable[[list[str]], str]  # runs an argv in the namespace, returns stdout
    interval: float = 0.1
    samples: list[dict[str, Any]] = field(default_factory=list)
    errors: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ss-sampler", daemon=True)
        self._t0 = 0.0

    @property
    def started_at(self) -> float:
        """time.monotonic() when sampling began: samples' ``t`` counts from here."""
        return self._t0

    def start(self) -> "Sampler":
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                text = self.run(SS_ARGV)
                # the kernel answered somewhere between the call and the return: stamp the middle
                t = (t0 + time.monotonic()) / 2 - self._t0
                for s in parse_ss(text):
                    s["t"] = round(t, 4)
                    self.samples.append(s)
            except Exception:  # a failed sample is counted, never fatal to the test
                self.errors += 1
            self._stop.wait(self.interval)

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.samples


def subflows_of(samples: list[dict[str, Any]], token: str) -> list[dict[str, Any]]:
    """One summary per subflow (local, remote) of the MPTCP connection with this local token."""
    by_pair: dict[tuple[str, str], dict[str, Any]] = {}
    for s in samples:
        if s["kind"] != "tcp" or s.get("token") != token:
            continue
        key = (s["local"], s["remote"])
        agg = by_pair.setdefault(key, {"local": s["local"], "remote": s["remote"], "token": token,
                                       "established": False, "estab_samples": 0, "rtt_ms": [], "first_t": s["t"]})
        agg["established"] |= s["state"] == "ESTAB"
        agg["estab_samples"] += s["state"] == "ESTAB"
        agg["last_t"] = s["t"]
        for k in ("bytes_acked", "bytes_sent", "bytes_received", "retrans_total", "cwnd"):
            if k in s:
                agg[k] = s[k]  # cumulative counters: the last sample is the total
        if "rtt_ms" in s:
            agg["rtt_ms"].append(s["rtt_ms"])
        agg.setdefault("local_id", s.get("local_id"))
        agg.setdefault("cc", s.get("cc"))
    out = []
    for agg in by_pair.values():
        rtts = agg.pop("rtt_ms")
        agg["mean_rtt_ms"] = sum(rtts) / len(rtts) if rtts else None
        # A subflow seen established once that carried nothing was refused or reset at once: in
        # a traffic matrix, where every host announces ports, both ends of a connection open
        # joins and the path manager resets the ones past its limit (measured on FatTree k=4:
        # bytes_acked 1, the SYN). One that carried data counts, however briefly it was seen.
        carried = max(agg.get("bytes_acked", 0), agg.get("bytes_received", 0)) > 1
        agg["lasting"] = agg["estab_samples"] >= 2 or carried
        out.append(agg)
    return sorted(out, key=lambda a: (a.get("local_id") or 0, a["local"]))


def connection_token(samples: list[dict[str, Any]], local: str) -> str | None:
    """The token of the MPTCP socket whose local address:port is ``local`` (from iperf3)."""
    for s in samples:
        if s["kind"] == "mptcp" and s["local"] == local and s.get("token"):
            return s["token"]
    # An MPTCP socket's first subflow has the same 4-tuple and carries the token too.
    for s in samples:
        if s["kind"] == "tcp" and s["local"] == local and s.get("mptcp_subflow") and s.get("token"):
            return s["token"]
    return None


def tcp_connection_is_plain(samples: list[dict[str, Any]], local: str) -> bool | None:
    """True if the TCP socket at ``local`` was seen and was not an MPTCP subflow."""
    seen = [s for s in samples if s["kind"] == "tcp" and s["local"] == local]
    if not seen:
        return None
    return not any(s.get("mptcp_subflow") for s in seen)


# --------------------------------------------------------------------------- MIB counters


def read_counters(pid: int) -> dict[str, int]:
    """TCP, MPTCP and IP counters of the namespace PID lives in (nstat's names)."""
    out: dict[str, int] = {}
    for name in ("netstat", "snmp"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()
        except OSError:
            continue
        for head, vals in zip(lines[::2], lines[1::2]):
            prefix, *keys = head.split()
            _, *nums = vals.split()
            prefix = prefix.rstrip(":")
            for k, v in zip(keys, nums):
                try:
                    out[prefix + k] = int(v)
                except ValueError:
                    pass
    return out


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def ss_runner(popen: Callable[..., subprocess.Popen]) -> Callable[[list[str]], str]:
    def run(argv: list[str]) -> str:
        p = popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        out, _ = p.communicate(timeout=5)
        return out

    return run


# --------------------------------------------------------------------------- path-manager events

#: "[2026-11-27T14:05:58.817544] [       CREATED] token=2c0b065d remid=0 ..." (ip -ts mptcp monitor)
_PM_LINE = re.compile(r"\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)\]\s+\[\s*([A-Z_0-9 ]+?)\s*\]\s*(.*)")
PM_MONITOR_ARGV = ["ip", "-ts", "mptcp", "monitor"]


def parse_pm_events(text: str, t0_wall: float) -> list[dict[str, Any]]:
    """One row per path-manager event the kernel reported (created, established, announced,
    sf_established, sf_closed, sf_prio, ...), its time on the test's clock (``t0_wall`` is
    the test's start, as time.time()), and its fields (token, remid, locid, saddr4, ...).
    Events this iproute2 has no name for stay 'UNKNOWN n'."""
    from datetime import datetime

    rows = []
    for line in (text or "").splitlines():
        m = _PM_LINE.match(line.strip())
        if not m:
            continue
        stamp = datetime.fromisoformat(m.group(1)).timestamp()  # local time, as ip printed it
        row: dict[str, Any] = {"t": round(stamp - t0_wall, 6), "event": m.group(2).lower()}
        for tok in m.group(3).split():
            key, sep, value = tok.partition("=")
            if sep:
                row[key] = value
        rows.append(row)
    return rows

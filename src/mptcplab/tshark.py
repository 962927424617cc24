"""tshark, the one impure part of the option census: packet captures in, rows of field values out.

Why tshark and not a Python pcap parser: it reads pcapng compressed with gzip as the run saves
them (``raw/<test>-<interface>.pcapng.gz``), and its field names are a documented interface
(``tshark -G fields``). What the census needs from it is listed in
:data:`mptcplab.census.FIELDS`; the census itself is pure.

tshark runs from an argument list, never a shell; the capture is opened by the run directory
(RunDir.open_capture: a regular file, no link followed) and handed over as ``/dev/fd/N``, the
value of ``-r``. A capture cut short (the capture process stopped mid-packet) still yields its complete
packets; :class:`FieldRows` says it was truncated.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .census import FIELDS
from .ids import NODE_NAME

#: Only TCP segments; ICMP errors quote a TCP header that is no segment of ours.
DISPLAY_FILTER = "tcp && !icmp && !icmpv6"
#: ``<test>-<node>-eth<k>.pcapng.gz``: node names have no dash (ids.NODE_NAME), test labels may.
CAPTURE_NAME = re.compile(rf"^(?P<test>.+)-(?P<interface>{NODE_NAME.pattern}-eth\d+)\.pcapng\.gz$")
TIMEOUT_S = 300.0
_CUT_SHORT = "cut short in the middle of a packet"


class TsharkError(RuntimeError):
    """tshark is missing or failed on a capture."""


@dataclass(frozen=True)
class FieldRows:
    """tshark's rows for one capture (one dict per packet, keyed by field name); ``truncated``
    when the file ended in the middle of a packet (the rows before it are complete)."""

    rows: list[dict[str, str]]
    truncated: bool = False


def tshark_argv(pcap: Path, fields: tuple[str, ...] = FIELDS, tshark: str = "tshark") -> list[str]:
    """The argument list: one TSV line per TCP segment, a header line, every occurrence of a
    field comma-joined (several MPTCP options in one segment), no name resolution, and no
    sequence analysis or reassembly (the census needs neither; they cost time and memory)."""
    argv = [tshark, "-n", "-r", str(pcap), "-Y", DISPLAY_FILTER,
            "-o", "tcp.analyze_sequence_numbers:FALSE", "-o", "tcp.desegment_tcp_streams:FALSE",
            "-T", "fields", "-E", "header=y", "-E", "separator=/t", "-E", "occurrence=a",
            "-E", "aggregator=,", "-E", "quote=n"]
    for f in fields:
        argv += ["-e", f]
    return argv


def parse_fields(text: str) -> list[dict[str, str]]:
    """tshark's ``-T fields -E header=y -E separator=/t`` output as one dict per line."""
    lines = text.splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        values = line.split("\t")
        if len(values) != len(header):
            raise TsharkError(f"tshark output line {n}: {len(values)} fields, the header has {len(header)}")
        rows.append(dict(zip(header, values)))
    return rows


def read_fields(pcap: Path, fields: tuple[str, ...] = FIELDS, timeout: float = TIMEOUT_S,
                tshark: str = "tshark", pass_fds: tuple[int, ...] = ()) -> FieldRows:
    """Run tshark on one capture (a path the caller checked, e.g. from :func:`capture_files`)."""
    exe = shutil.which(tshark)
    if exe is None:
        raise TsharkError(f"{tshark} not found: install it (Debian: apt-get install tshark; make setup does)")
    if not Path(pcap).is_file():
        raise TsharkError(f"{pcap}: not a regular file")
    argv = tshark_argv(Path(pcap), fields, exe)
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, pass_fds=pass_fds)
    except subprocess.TimeoutExpired:
        raise TsharkError(f"tshark on {pcap} took longer than {timeout:g} s") from None
    truncated = r.returncode != 0 and _CUT_SHORT in r.stderr
    if r.returncode != 0 and not truncated:
        err = "; ".join(x for x in r.stderr.strip().splitlines() if not x.startswith("Running as user"))
        raise TsharkError(f"tshark on {pcap} exited {r.returncode}: {err}")
    return FieldRows(parse_fields(r.stdout), truncated)

"""Results: one run directory, written atomically, read back by figures and resume logic.

Layout (see results/README.md)::

    results/<experiment>/<run-id>/
        spec.yaml  plan.json  metadata.json  summary.csv  subflows.csv
        raw/<test>-client.json  raw/<test>-server.json  raw/<test>-samples.csv  raw/<test>-counters.json
        figures/

Every file is written to a temporary name in the same directory and renamed into place, so a
crash (or SIGKILL) never leaves a half-written summary: readers see the old file or the new one.
This module imports no network code.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import yaml

SUMMARY = "summary.csv"
SUBFLOWS = "subflows.csv"
METADATA = "metadata.json"
#: Columns every summary.csv starts with, in this order.
SUMMARY_COLUMNS = [
    "experiment", "test", "variant", "protocol", "repetition", "goodput_mbps", "retransmits", "subflows",
    "expected_subflows", "subflows_ok", "duration_s", "bytes", "error",
]


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def write_atomic(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_csv(path: Path, rows: Iterable[dict[str, Any]], first: list[str] | None = None) -> None:
    df = pd.DataFrame(list(rows))
    if first:
        cols = [c for c in first if c in df.columns] + [c for c in df.columns if c not in first]
        df = df[cols]
    write_atomic(path, df.to_csv(index=False))


class RunDir:
    """A run's directory. Created empty; each stage adds its files."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def create(cls, experiment: str, root: str | Path = "results", out: str | Path | None = None,
               run_id: str | None = None) -> "RunDir":
        path = Path(out) if out else Path(root) / experiment / (run_id or new_run_id())
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} exists and is not empty; pick another --out")
        (path / "raw").mkdir(parents=True, exist_ok=True)
        return cls(path)

    @property
    def raw(self) -> Path:
        return self.path / "raw"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    def write_spec(self, spec: dict[str, Any]) -> None:
        write_atomic(self.path / "spec.yaml", yaml.safe_dump(spec, sort_keys=False))

    def write_json(self, name: str, obj: Any) -> None:
        write_json(self.path / name, obj)

    def write_raw(self, name: str, obj: Any) -> None:
        if isinstance(obj, (dict, list)):
            write_json(self.raw / name, obj)
        else:
            write_atomic(self.raw / name, obj)

    def write_summary(self, rows: list[dict[str, Any]]) -> None:
        write_csv(self.path / SUMMARY, rows, SUMMARY_COLUMNS)

    def write_subflows(self, rows: list[dict[str, Any]]) -> None:
        write_csv(self.path / SUBFLOWS, rows)


# --------------------------------------------------------------------------- reading


def read_summary(run_dir: str | Path) -> pd.DataFrame:
    path = Path(run_dir) / SUMMARY
    if not path.exists():
        raise FileNotFoundError(f"{path}: no summary.csv (is {run_dir} a run directory?)")
    return pd.read_csv(path)


def read_metadata(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / METADATA
    return json.loads(path.read_text()) if path.exists() else {}


def find_runs(root: str | Path) -> list[Path]:
    """Run directories under root (a run directory itself counts), oldest first."""
    root = Path(root)
    if (root / SUMMARY).exists():
        return [root]
    return sorted(p.parent for p in root.rglob(SUMMARY))

"""Figures of multi-flow runs (flows.csv, flow-goodput.csv, rtt.csv), from saved results alone:
synthetic run directories written through RunDir, and tests/data/multiflow-run -- a real
shared-bottleneck run (MPTCP with 2 subflows vs TCP through one 10 Mbit/s link; MPTCP vs MPTCP;
TCP vs TCP), its tables and JSON files without raw/ and figures/."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pandas as pd
import pytest

from helpers import REPO
from mptcplab.figures import connection_subflow_share, render, subflow_axis, variant_label
from mptcplab.results import FLOW_GOODPUT, FLOWS, RTT, RunDir

MULTIFLOW = REPO / "tests/data/multiflow-run"
SINGLE_FLOW = {"goodput", "goodput-cdf"}


def _names(files: list[Path]) -> set[str]:
    return {f.name.rsplit(".", 1)[0] for f in files}


def _jain(xs: list[float]) -> float:
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))


def _datacenter_run(tmp_path: Path, *, flows: int = 16, rtt: bool = True, fct: bool = False,
                    swept: tuple[str, ...] = ("matrix.seed",), bws: tuple[float, ...] = (10.0,)) -> RunDir:
    """A permutation-matrix experiment as the SIGCOMM 2011 paper ran it: variants tcp, mptcp-2,
    mptcp-4 over seeds (sweep points) and 2 repetitions; flow-level rows with the optimum 1
    Mbit/s per flow, one failed flow, 3 s of goodput samples, and (optionally) two RTT probes and
    completion times."""
    rng = random.Random(7)
    rd = RunDir.create("dc", out=tmp_path / "run")
    summary, rows, series, pings, subs = [], [], [], [], []
    variants = {"tcp": ("tcp", 1, 0.55), "mptcp-2": ("mptcp", 2, 0.75), "mptcp-4": ("mptcp", 4, 0.9)}
    k = 0
    for bw in bws:
        for seed in (1, 2, 3):
            k += 1
            point = f"p{k:03d}"
            values = {"matrix.seed": seed, **({"links.core.bw": bw} if "links.core.bw" in swept else {})}
            for rep in (1, 2):
                for i, (variant, (proto, nsub, mean)) in enumerate(variants.items()):
                    test = f"{point}-{i + 1:03d}-{variant}-r{rep}"
                    base = {"experiment": "dc", "point": point, **values, "test": test, "variant": variant,
                            "repetition": rep}
                    goodputs = []
                    for f in range(flows):
                        failed = variant == "tcp" and rep == 2 and seed == 3 and f == 0
                        g = None if failed else min(1.0, max(0.05, rng.gauss(mean, 0.2))) * bw / 10
                        goodputs.append(g)
                        rows.append({**base, "flow": f"f{f}", "src": f"h{f}", "dst": f"h{(f + 5) % flows}",
                                     "protocol": proto, "cc": "cubic", "parallel": 1, "extra_subflows": nsub - 1,
                                     "expected_subflows": nsub, "scheduled_start_s": 0.0, "launch_offset_ms": 0.1,
                                     "goodput_mbps": g, "bytes": None if failed else 1000,
                                     "duration_s": 3.0, "fct_s": (rng.uniform(0.2, 9.0) if fct and not failed
                                                                 else None),
                                     "retransmits": 1, "optimum_mbps": bw / 10, "error": "refused" if failed else None,
                                     "subflows": 0 if failed else nsub})
                        if not failed:
                            series += [{"experiment": "dc", "test": test, "flow": f"f{f}", "t": round(0.1 * j + 0.003, 3),
                                        "goodput_mbps": max(0.0, rng.gauss(g, 0.1))} for j in range(1, 31)]
                        if proto == "mptcp" and not failed:
                            conn = f"10.0.{f}.1:40000"
                            for s in range(nsub):
                                subs.append({"experiment": "dc", "test": test, "point": point, "repetition": rep,
                                             "flow": f"f{f}", "connection": conn, "token": f"{f:08x}",
                                             "local": conn if s == 0 else f"10.0.{f}.1:{41000 + s}",
                                             "remote": f"10.0.{f}.2:{5201 if s == 0 else 20010 + s}",
                                             "local_id": 0, "share": (0.4 if s == 0 else 0.6 / (nsub - 1))
                                             if nsub > 1 else 1.0})
                    ok = [g for g in goodputs if g is not None]
                    total = sum(ok)
                    for r in rows[-flows:]:
                        r["share"] = r["goodput_mbps"] / total if r["goodput_mbps"] is not None else None
                        r["fraction_of_optimum"] = (r["goodput_mbps"] / r["optimum_mbps"]
                                                    if r["goodput_mbps"] is not None else None)
                    complete = len(ok) == flows
                    summary.append({**base, "protocol": proto, "goodput_mbps": total if complete else None,
                                    "error": None, "flows": flows, "subflows": nsub, "expected_subflows": nsub,
                                    "jain": _jain(ok), "jain_of_optimum": _jain(ok),
                                    "optimum_mbps": flows * bw / 10,
                                    "fraction_of_optimal": total / (flows * bw / 10) if complete else None,
                                    "mptcp_tcp_ratio": None, "max_launch_offset_ms": 0.1})
                    if rtt:
                        for probe in ("h0-h5", "h1-h6"):
                            pings += [{"experiment": "dc", "test": test, "variant": variant, "probe": probe,
                                       "t": 0.1 * j, "seq": j, "rtt_ms": 0.2 + rng.expovariate(1 / (i + 1))}
                                      for j in range(1, 31)]
    rd.write_summary(summary)
    rd.write_table(FLOWS, rows)
    rd.write_table(FLOW_GOODPUT, series)
    rd.write_subflows(subs)
    if rtt:
        rd.write_table(RTT, pings)
    rd.write_metadata({"experiment": "dc", "formats": ["png"], "swept": list(swept)})
    return rd


def test_multi_flow_run_draws_flow_figures_not_single_flow_ones(tmp_path):
    """16 flows per test, variants tcp / mptcp-2 / mptcp-4 over three seeds: the per-flow set,
    no goodput by protocol nor goodput CDF, nothing drawn against the seed, no flow-completion
    (duration flows have no completion time)."""
    rd = _datacenter_run(tmp_path)
    files = render(rd.path)
    assert _names(files) == {"flow-goodput-time", "fairness", "fraction-of-optimal", "flow-throughput-ranked",
                             "rtt-cdf", "subflow-share"}
    assert all(f.stat().st_size > 1000 for f in files)


def test_run_without_rtt_draws_no_rtt_cdf_and_byte_flows_draw_completion(tmp_path):
    names = _names(render(_datacenter_run(tmp_path, flows=4, rtt=False, fct=True).path))
    assert "rtt-cdf" not in names
    assert {"flow-completion", "flow-goodput-time", "fairness", "fraction-of-optimal"} <= names
    assert not names & SINGLE_FLOW


def test_parameter_swept_besides_the_seed_gets_its_own_figures(tmp_path):
    """A sweep of the core links' rate and the seed: fraction of optimal and Jain's index are
    also drawn against the rate (pooling mixes rates); never against the seed."""
    rd = _datacenter_run(tmp_path, flows=4, swept=("links.core.bw", "matrix.seed"), bws=(5.0, 10.0))
    names = _names(render(rd.path))
    assert {"fraction-of-optimal-vs-links-core-bw", "fairness-vs-links-core-bw"} <= names
    assert not any("seed" in n for n in names)


def test_tcp_and_mptcp_n_variants_are_drawn_against_subflows(tmp_path):
    rd = _datacenter_run(tmp_path, flows=3, rtt=False)
    assert subflow_axis(rd.read_table(FLOWS)) == {"tcp": ("tcp", 1), "mptcp-2": ("mptcp", 2), "mptcp-4": ("mptcp", 4)}
    flows = pd.read_csv(MULTIFLOW / "flows.csv")  # mptcp-vs-tcp mixes protocols: plain bars
    assert subflow_axis(flows) is None
    assert subflow_axis(flows[flows["variant"] != "mptcp-vs-tcp"]) == {"mptcp-vs-mptcp": ("mptcp", 2),
                                                                      "tcp-vs-tcp": ("tcp", 1)}


def test_subflow_share_is_per_connection_in_multi_flow_runs(tmp_path):
    """Several MPTCP connections in one test: shares averaged per connection, each variant's
    stack sums to 1 (the single-flow figure stacked the connections of a test on one bar)."""
    rd = _datacenter_run(tmp_path, flows=3, rtt=False)
    table = connection_subflow_share(rd.read_subflows(), rd.read_summary())
    assert list(table.index) == ["mptcp-2", "mptcp-4"]
    assert list(table.columns) == ["subflow 1", "subflow 2", "subflow 3", "subflow 4"]
    assert table.sum(axis=1).round(9).tolist() == [1.0, 1.0]
    assert table.loc["mptcp-4", "subflow 1"] == pytest.approx(0.4)
    recorded = RunDir(MULTIFLOW)
    table = connection_subflow_share(recorded.read_subflows(), recorded.read_summary())
    assert table.sum(axis=1).round(9).tolist() == [1.0, 1.0]


def test_recorded_multi_flow_run(tmp_path):
    """The real run: every multi-flow figure its data supports (no fct_s: flows of fixed
    duration; no raw/: no subflow-goodput-time), the single-flow ones not."""
    run = tmp_path / "run"
    shutil.copytree(MULTIFLOW, run)
    files = render(run)
    names = _names(files)
    assert names == {"flow-goodput-time", "fairness", "fraction-of-optimal", "flow-throughput-ranked", "rtt-cdf",
                     "subflow-share"}
    assert {f.suffix for f in files} == {".pdf", ".png"}
    (run / "rtt.csv").unlink()
    for f in files:
        f.unlink()
    assert "rtt-cdf" not in _names(render(run))


def test_missing_columns_skip_figures_instead_of_failing(tmp_path):
    """flows.csv with goodput only (no share, no optimum), a summary without jain: only the
    goodput time series can be drawn; nothing raises."""
    rd = RunDir.create("bare", out=tmp_path / "run")
    rd.write_summary([{"experiment": "bare", "test": "001-x-r1", "variant": "x", "protocol": "mixed",
                       "repetition": 1, "goodput_mbps": 9.0, "error": None}])
    rd.write_table(FLOWS, [{"experiment": "bare", "test": "001-x-r1", "variant": "x", "flow": f, "protocol": p,
                            "goodput_mbps": 4.5, "error": None} for f, p in (("a", "mptcp"), ("b", "tcp"))])
    rd.write_table(FLOW_GOODPUT, [{"experiment": "bare", "test": "001-x-r1", "flow": f, "t": 0.1 * j,
                                   "goodput_mbps": 4.5} for f in "ab" for j in range(1, 20)])
    rd.write_metadata({"formats": ["png"]})
    assert _names(render(rd.path)) == {"flow-goodput-time"}


def test_variant_labels():
    assert variant_label("mptcp-vs-tcp") == "MPTCP vs TCP"
    assert variant_label("mptcp-vs-mptcp") == "MPTCP vs\nMPTCP"
    assert variant_label("mptcp-vs-mptcp", 0) == "MPTCP vs MPTCP"
    assert variant_label("mptcp-4") == "MPTCP-4"
    assert variant_label("tcp") == "TCP"


def test_run_without_variants_names_them_by_protocol(tmp_path):
    """No variants in the spec: the runner's variant column is the protocol; a summary without
    the column at all is read the same way."""
    src = RunDir(MULTIFLOW)
    rd = RunDir.create("novariant", out=tmp_path / "run")
    rd.write_summary(src.read_summary().drop(columns=["variant"]).to_dict("records"))
    for name in (FLOWS, FLOW_GOODPUT):
        table = src.read_table(name)
        rd.write_table(name, table.drop(columns=["variant"], errors="ignore").to_dict("records"))
    rd.write_subflows(src.read_subflows().to_dict("records"))
    rd.write_metadata({"formats": ["png"]})
    names = _names(render(rd.path))
    assert {"flow-goodput-time", "fairness", "fraction-of-optimal", "flow-throughput-ranked",
            "subflow-share"} <= names

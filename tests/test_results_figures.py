"""Results are written atomically and figures render from a saved run directory alone."""

import os

import pytest

from mptcplab.figures import render
from mptcplab.errors import RunDirError
from mptcplab.results import PM_EVENTS, SPEC, SUBFLOWS, RunDir, read_rows, read_summary, read_tables, write_atomic


def test_atomic_write_leaves_no_temporaries(tmp_path):
    p = tmp_path / "a" / "summary.csv"
    write_atomic(p, "x,y\n1,2\n")
    write_atomic(p, "x,y\n3,4\n")
    assert p.read_text() == "x,y\n3,4\n"
    assert os.listdir(p.parent) == ["summary.csv"]
    assert oct(p.stat().st_mode & 0o777) == oct(0o644)


def test_tokens_and_addresses_read_back_as_the_text_written(tmp_path):
    """MPTCP tokens are 8 hex digits: '00120000' and '1e699300' look like numbers to read_csv
    (120000, inf) when every token in the column does. Read back through RunDir -- tables, raw
    samples, and the rows a resume carries over -- they are exactly the text written."""
    import pandas as pd

    rd = RunDir.create("e", out=tmp_path / "run")
    rd.write_table(PM_EVENTS, [
        {"test": "001-mptcp-r1", "t": 0.1, "event": "created", "token": "00120000", "saddr4": "10.0.1.1",
         "daddr4": "10.0.1.2", "sport": 40000, "dport": 5201},
        {"test": "001-mptcp-r1", "t": 0.2, "event": "created", "token": "1e699300", "saddr6": "fd00::1",
         "daddr6": "fd00::2", "sport": 40001, "dport": 5201},
    ])
    rd.write_subflows([{"test": "001-mptcp-r1", "connection": "10.0.1.1:40000", "token": "00120000",
                        "local": "10.0.1.1:40000", "remote": "10.0.1.2:5201", "share": 1.0}])
    rd.write_samples("001-mptcp-r1", [
        {"kind": "tcp", "local": "10.0.1.1:40000", "remote": "10.0.1.2:5201", "token": "1e6993e9",
         "remote_token": "00120000", "t": 0.1, "bytes_acked": 1},
        {"kind": "tcp", "local": "10.0.1.1:40002", "remote": "10.0.1.2:5201", "token": None,
         "remote_token": None, "t": 0.1, "bytes_acked": 2},  # plain TCP: no token
    ])
    pm = rd.read_table(PM_EVENTS)
    assert list(pm["token"]) == ["00120000", "1e699300"]
    assert list(pm["sport"]) == [40000, 40001]  # numbers stay numbers
    sub = rd.read_subflows()
    assert sub.loc[0, ["token", "connection", "local", "remote"]].tolist() == [
        "00120000", "10.0.1.1:40000", "10.0.1.1:40000", "10.0.1.2:5201"]
    samples = rd.read_samples("001-mptcp-r1")
    assert samples.loc[0, "token"] == "1e6993e9" and samples.loc[0, "remote_token"] == "00120000"
    assert pd.isna(samples.loc[1, "token"]) and pd.isna(samples.loc[1, "remote_token"])
    assert [r["token"] for r in read_tables(rd, {"p001"}, unnamed="p001")[PM_EVENTS]] == ["00120000", "1e699300"]
    assert [r["token"] for r in read_rows(rd, {"p001"}, unnamed="p001")[1]] == ["00120000"]
    assert rd.read_table(SUBFLOWS)["token"].tolist() == ["00120000"]


def test_failed_write_keeps_old_file(tmp_path):
    p = tmp_path / "summary.csv"
    write_atomic(p, "old\n")

    with pytest.raises(TypeError):
        write_atomic(p, 12345)  # not str/bytes: the write fails half-way
    assert p.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["summary.csv"]


def test_run_dir_refuses_nonempty_out(tmp_path):
    rd = RunDir.create("e", out=tmp_path / "run")
    rd.write_json("metadata.json", {"a": 1})
    with pytest.raises(RunDirError, match="--out"):
        RunDir.create("e", out=tmp_path / "run")


def test_figure_from_saved_results(tmp_path):
    rd = RunDir.create("dual", out=tmp_path / "run")
    rows = [{"experiment": "dual", "test": f"{i:03d}", "protocol": p, "repetition": r,
             "goodput_mbps": g, "subflows": s, "error": None, "bw_mbps": 5.0}
            for i, (p, r, g, s) in enumerate([("mptcp", 1, 9.3, 2), ("tcp", 1, 4.78, 1),
                                              ("mptcp", 2, 9.2, 2), ("tcp", 2, 4.77, 1)])]
    rd.write_summary(rows)
    rd.write_json("metadata.json", {"formats": ["pdf", "png"]})
    files = render(rd.path)
    assert sorted(f.name for f in files) == ["goodput-cdf.pdf", "goodput-cdf.png", "goodput.pdf", "goodput.png"]
    assert all(f.stat().st_size > 1000 for f in files)
    assert files[0].read_bytes().startswith(b"%PDF")
    assert list(read_summary(rd.path)["protocol"]) == ["mptcp", "tcp", "mptcp", "tcp"]


def test_sweep_figures_from_saved_results(tmp_path):
    """A two-parameter sweep's figure set, from files alone (no network, no root)."""
    rd = RunDir.create("sweep", out=tmp_path / "run")
    rows, subs, k = [], [], 0
    for bw in (2, 5, 10):
        for loss in (0, 1):
            for rep in (1, 2):
                for proto, base in (("mptcp", 5 + bw), ("tcp", 5)):
                    k += 1
                    test = f"p{k:03d}-{proto}-r{rep}"
                    rows.append({"experiment": "sweep", "test": test, "protocol": proto, "repetition": rep,
                                 "goodput_mbps": base * (1 - loss / 10) + rep * 0.01, "error": None,
                                 "point": f"b{bw}l{loss}", "links.h1-s2.bw": bw, "links.s2-h2.bw": bw,
                                 "links.h1-s2.loss": loss, "subflows": 2 if proto == "mptcp" else 1})
                    if proto == "mptcp":
                        share = 5 / (5 + bw)
                        for local, remote, sh in (("10.0.1.1:4000", "10.0.1.2:5201", share),
                                                  ("10.0.2.1:4001", "10.0.2.2:5201", 1 - share)):
                            subs.append({"test": test, "point": f"b{bw}l{loss}", "connection": "10.0.1.1:4000",
                                         "local": local, "remote": remote, "local_id": 0, "share": sh})
    rd.write_summary(rows)
    rd.write_subflows(subs)
    rd.write_json("metadata.json", {"formats": ["png"], "swept": ["links.h1-s2.bw", "links.s2-h2.bw", "links.h1-s2.loss"]})
    names = sorted(f.name for f in render(rd.path))
    # links.s2-h2.bw moves with links.h1-s2.bw (a zip group): one plot for the pair
    assert names == ["goodput-cdf.png", "goodput-vs-links-h1-s2-bw.png", "goodput-vs-links-h1-s2-loss.png",
                     "mptcp-gain-heatmap.png", "subflow-share.png"]


def test_a_distributed_sweep_is_checked_and_faceted_by_host(tmp_path):
    """Points run on two hosts: goodput-by-host marks each point by the host that ran it, and a
    custom figure can facet by `host`; a host name read back that is not one is not used."""
    rd = RunDir.create("sweep", out=tmp_path / "run")
    rows, where = [], {}
    for k, bw in enumerate((2, 5, 10, 20), start=1):
        where[f"p{k:03d}"] = {"host": "node1" if k % 2 else "node2", "worker": "tcp://10.0.0.1:4000"}
        for proto in ("mptcp", "tcp"):
            rows.append({"experiment": "sweep", "test": f"p{k:03d}-{proto}-r1", "protocol": proto, "repetition": 1,
                         "goodput_mbps": bw * (1.8 if proto == "mptcp" else 0.95), "error": None,
                         "point": f"p{k:03d}", "links.h1-s2.bw": bw})
    where["p004"]["host"] = "node2; rm -rf /"
    rd.write_summary(rows)
    rd.write_json("metadata.json", {"formats": ["png"], "swept": ["links.h1-s2.bw"],
                                    "distributed": {"points": where}})
    (rd.path / SPEC).write_text("figures: [{name: per-host, x: links.h1-s2.bw, col: host}]\n")
    assert RunDir.open_existing(rd.path).meta.point_hosts() == {"p001": "node1", "p002": "node2", "p003": "node1"}
    names = sorted(f.name for f in render(rd.path))
    assert names == ["goodput-by-host.png", "goodput-cdf.png", "goodput-vs-links-h1-s2-bw.png", "per-host.png"]
    one_host = {p: {**w, "host": "node1"} for p, w in where.items()}
    rd.write_json("metadata.json", {"formats": ["png"], "swept": ["links.h1-s2.bw"],
                                    "distributed": {"points": one_host}})
    assert "goodput-by-host.png" not in {f.name for f in render(rd.path)}  # one host: nothing to compare


def test_subflow_share_groups_tests_by_variant(tmp_path):
    """Variants' tests become groups of repetitions (r1, r2, ...) in the subflow-share figure."""
    from mptcplab.figures import _test_groups

    rd = RunDir.create("three", out=tmp_path / "run")
    rows, subs = [], []
    for rep in (1, 2):
        for i, variant in enumerate(("tcp", "mptcp-independent", "mptcp-dependent")):
            test = f"{3 * (rep - 1) + i + 1:03d}-{variant}-r{rep}"
            proto = variant.split("-")[0]
            rows.append({"experiment": "three", "test": test, "variant": variant, "protocol": proto,
                         "repetition": rep, "goodput_mbps": 5.0 + i, "error": None, "subflows": i + 1})
            for k in range(i + 1 if proto == "mptcp" else 0):
                subs.append({"test": test, "connection": "10.0.1.1:4000",
                             "local": "10.0.1.1:4000" if k == 0 else f"10.0.1.1:{4100 + k}",
                             "remote": f"10.0.1.2:{5201 if k == 0 else 20010 + k}", "local_id": 0,
                             "share": 1 / (i + 1)})
    rd.write_summary(rows)
    rd.write_subflows(subs)
    rd.write_json("metadata.json", {"formats": ["png"]})
    groups = _test_groups(read_summary(rd.path))
    assert groups["005-mptcp-independent-r2"] == ("mptcp-independent", 2)
    assert groups["001-tcp-r1"] == ("tcp", 1)
    assert "subflow-share.png" in [f.name for f in render(rd.path)]


@pytest.mark.parametrize("with_retrans", [True, False])
def test_subflow_goodput_time_marks_retransmissions(tmp_path, with_retrans):
    import pandas as pd

    from mptcplab.figures import paper_style, subflow_goodput_time

    rows = []
    for k, local in enumerate(("10.0.1.1:4000", "10.0.2.1:4001")):
        acked, retrans = 0, 0
        for i in range(50):
            stalled = 20 <= i < 22  # loss recovery: the cumulative ACK stands still, then jumps
            acked += 0 if stalled else (62_500 * (3 if i == 22 else 1))
            retrans += 1 if i == 20 else 0
            row = {"kind": "tcp", "token": "abcd", "local": local, "remote": f"10.0.{k + 1}.2:5201",
                   "t": i * 0.1, "bytes_acked": acked}
            if with_retrans:
                row["retrans_total"] = retrans
            rows.append(row)
    paper_style()
    files = subflow_goodput_time(pd.DataFrame(rows), "t", RunDir.create("t", out=tmp_path / "run"), ["png"])
    assert [f.name for f in files] == ["subflow-goodput-time.png"] and files[0].stat().st_size > 1000


def test_zipped_parameters_are_named_on_the_axis():
    import pandas as pd

    from mptcplab.figures import moves_with, param_label

    df = pd.DataFrame({"links.h1-s2.bw": [2, 5, 10, 2], "links.s2-h2.bw": [2, 5, 10, 2],
                       "links.s2-h2.delay": [5, 10, 20, 5], "links.h1-s2.loss": [0, 0, 1, 1]})
    swept = list(df.columns)
    x = "links.h1-s2.bw"
    assert moves_with(df, swept, x) == ["links.s2-h2.bw", "links.s2-h2.delay"]
    assert moves_with(df, swept, "links.h1-s2.loss") == []
    assert param_label(x, moves_with(df, swept, x), df) == \
        "bw h1-s2, s2-h2 (Mbit/s); with delay s2-h2 (ms)"
    assert param_label("links.h1-s2.loss") == "loss h1-s2 (%)"
    assert param_label("traffic.duration") == "traffic.duration (s)"


def test_host_is_a_column_custom_figures_may_use():
    """`host` (who ran each point) is not in summary.csv but figures may name it; other unknown
    columns are still refused before the run."""
    from types import SimpleNamespace

    from mptcplab.rows import figure_problems

    fig = SimpleNamespace(x="links.h1-s2.bw", y="goodput_mbps", hue="protocol", col="host")
    assert figure_problems([fig], ["links.h1-s2.bw", "goodput_mbps", "protocol"]) == []
    bad = SimpleNamespace(x="links.h1-s2.bw", y="goodput_mbps", hue=None, col="hosts")
    assert figure_problems([bad], ["links.h1-s2.bw", "goodput_mbps"])

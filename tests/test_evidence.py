"""Protocol evidence (issue 14): captures of every test, the MPTCP option census taken from them,
and expectations judged on the results -- checked before the run (pure) and on real networks
(root): dual-path captured, its census read, an expectation that holds (exit 0) and one that
fails (exit 4, the observed value named); `mptcplab analyze` redoes it from the run directory."""

import json

import pandas as pd
import pytest

from helpers import cli, write_spec
from mptcplab import census
from mptcplab.errors import SpecError
from mptcplab.plan import make_plan
from mptcplab.spec import parse_spec
from test_events import dual, problems


def test_captures_are_planned_on_the_hosts_traffic_runs_between():
    spec = dual({})
    spec.pop("events")
    spec["capture"] = {}
    c = make_plan(parse_spec(spec)).capture
    assert c.targets == (("h1", "h1-eth0"), ("h1", "h1-eth1"), ("h2", "h2-eth0"), ("h2", "h2-eth1"))
    assert (c.snaplen, c.max_mb) == (128, 50)
    spec["capture"] = {"interfaces": ["h2-eth1"], "snaplen": 96, "max_mb": 5}
    assert make_plan(parse_spec(spec)).capture.targets == (("h2", "h2-eth1"),)
    spec["capture"] = {"interfaces": ["h2-eth9"]}
    assert any("capture.interfaces[0]: 'h2-eth9' is not an interface of a host" in p for p in problems(spec))
    spec["capture"] = {"max_mb": 0}
    assert any("capture.max_mb" in p for p in problems(spec))
    spec.pop("capture")
    assert make_plan(parse_spec(spec)).capture is None


def test_expectations_are_parsed_and_their_names_checked_before_the_run():
    from mptcplab.runner import plan_points

    spec = dual({})
    spec.pop("events")
    spec["expect"] = ["protocol=mptcp: subflows >= 2", "subflows >>= 2"]
    assert any(p.startswith("expect[1]: col 11:") for p in problems(spec))
    spec["expect"] = ["protocol=mptcp: subflow >= 2"]
    with pytest.raises(SpecError, match=r"expect\[0\]: col 17: 'subflow' is not a column of the results "
                                        r"\(did you mean subflows\?\)"):
        plan_points(parse_spec(spec), "20261127-000000-abcd")
    spec["expect"] = ["options.MP_JOIN_SYN >= 1"]           # the census needs captures
    with pytest.raises(SpecError, match=r"options.MP_JOIN_SYN needs captures: add capture: \{\} or run with --capture"):
        plan_points(parse_spec(spec), "20261127-000000-abcd")
    spec["capture"] = {}
    spec["expect"] = ["options.MP_JOIN_SYN >= 1", "mib.MPTcpExtMPJoinSynAckRx >= 1", "mean(goodput_mbps) > 1"]
    plan_points(parse_spec(spec), "20261127-000000-abcd")   # known names: no problem
    spec["expect"] = ["fallback == false"]                  # two columns it could mean: both named
    with pytest.raises(SpecError, match=r"'fallback' is not a column of the results \(did you mean mptcp_fallback "
                                        r".* or options.fallback .*options.fallback == false\)\?\)"):
        plan_points(parse_spec(spec), "20261127-000000-abcd")
    spec["expect"] = ["mib.Nonsense == 0"]
    with pytest.raises(SpecError, match=r"expect\[0\]: col 1: mib.Nonsense is not an MPTCP MIB counter"):
        plan_points(parse_spec(spec), "20261127-000000-abcd")


def test_the_readmes_expectations_are_accepted_before_a_run():
    """The evidence section's expect: block -- a column against another included -- parses and
    names only columns a captured dual-path run has."""
    import yaml

    from helpers import REPO
    from mptcplab.runner import plan_points

    section = (REPO / "README.md").read_text().split("### Evidence", 1)[1]
    block = yaml.safe_load(section.split("```yaml", 1)[1].split("```", 1)[0])
    assert "protocol=mptcp: options.wire_subflows >= expected_subflows" in block["expect"]
    spec = dual({})
    spec.pop("events")
    spec.update(capture=block["capture"], expect=block["expect"])
    plan_points(parse_spec(spec), "20261127-000000-abcd")


@pytest.mark.root
def test_dual_path_captured_its_census_and_expectations(tmp_path, no_leftovers):
    """dual-path, one 3 s MPTCP and one TCP test, captured on every interface of h1 and h2. The
    census: each MPTCP connection (iperf3's control and data) has one MP_CAPABLE handshake and
    one MP_JOIN handshake (h2 announced its second address: ADD_ADDR seen), no fallback; the TCP
    test carries no MPTCP option. An expectation that holds exits 0; one that fails exits 4 and
    names the observed value; `mptcplab analyze` gives the same verdicts from the run directory."""
    def mutate(spec):
        spec["capture"] = {}
        spec["outputs"]["formats"] = ["png"]
        spec["expect"] = ["protocol=mptcp: options.MP_CAPABLE_SYN == 2", "protocol=mptcp: subflows >= 2",
                          "protocol=tcp: options.DSS == 0", "mib.MPTcpExtMPFailTx == 0",
                          # the data connection's subflows ss reported are the ones on the wire
                          "protocol=mptcp: options.wire_subflows == subflows",
                          "protocol=mptcp: options.ss_not_on_wire == 0"]

    out = tmp_path / "run"
    r = cli("run-experiment", str(write_spec(tmp_path, traffic={"duration": 3, "repetitions": 1}, mutate=mutate)),
            "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "PASS protocol=mptcp: subflows >= 2" in r.stderr
    caps = pd.read_csv(out / "captures.csv")
    assert sorted(caps.interface.unique()) == ["h1-eth0", "h1-eth1", "h2-eth0", "h2-eth1"]
    assert (caps.dropped == 0).all() and not caps.wrapped.any() and caps.error.isna().all(), caps
    assert (caps[caps.test.str.contains("mptcp")].packets > 100).all(), caps   # TCP leaves path 2 idle
    assert len(list((out / "raw").glob("*.pcapng.gz"))) == 8
    options = pd.read_csv(out / "options.csv")
    mp = options[options.test.str.contains("mptcp")]
    per_conn = mp.groupby("connection")[["MP_CAPABLE_SYN", "MP_CAPABLE_SYNACK", "MP_CAPABLE_ACK",
                                         "MP_JOIN_SYN", "MP_JOIN_SYNACK", "MP_JOIN_ACK"]].sum()
    assert len(per_conn) == 2 and (per_conn == 1).all().all(), per_conn
    assert mp.ADD_ADDR.sum() >= 1 and not mp.fallback.any(), mp
    # the TCP test's connections are in the census (role tcp: a SYN without MPTCP options), with
    # no MPTCP option of any kind -- an empty census would say nothing
    tcp = options[options.test.str.contains("-tcp-")]
    assert (tcp.role == "tcp").any() and not tcp.mptcp.any(), tcp
    assert (tcp[list(census.COUNTERS)] == 0).all().all(), tcp
    expect = pd.read_csv(out / "expect.csv")
    assert expect.passed.all() and len(expect) == 6, expect
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["expectations"]["passed"] == 6

    # an expectation that does not hold: the run completes and exits 4, the observed value named;
    # `mptcplab analyze` judges the saved results the same way
    def failing(spec):
        spec["outputs"]["formats"] = ["png"]
        spec["traffic"]["protocols"] = ["mptcp"]
        spec["expect"] = ["protocol=mptcp: subflows >= 3"]

    out2 = tmp_path / "run2"
    r = cli("run-experiment", str(write_spec(tmp_path, traffic={"duration": 2, "repetitions": 1},
                                             mutate=failing, name="failing.yaml")), "--out", str(out2))
    assert r.returncode == 4, r.stderr[-3000:]
    assert "FAIL protocol=mptcp: subflows >= 3 (1 of 1 test): 001-mptcp-r1 2" in r.stderr, r.stderr[-2000:]
    assert json.loads((out2 / "metadata.json").read_text())["expectations"]["failed"] == 1
    r = cli("mptcplab", "analyze", str(out2))
    assert r.returncode == 4 and "001-mptcp-r1 2" in r.stderr, r.stderr


def test_a_bad_expectation_exits_2_naming_its_column(tmp_path):
    def mutate(spec):
        spec["expect"] = ["subflows >= 2", "protocol=mptcp: subflows => 2"]

    r = cli("run-experiment", str(write_spec(tmp_path, mutate=mutate)), "--dry-run")
    assert r.returncode == 2, r.stderr
    assert "expect[1]: col 26: expected" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "results").exists()   # nothing created


def test_partial_captures_are_no_evidence(tmp_path):
    """A test whose capture dropped packets, wrapped or failed is listed as incomplete: its
    options.* read as missing, so an expectation on them fails instead of passing on half."""
    from mptcplab import results
    from mptcplab.analyze import _incomplete_captures

    rd = results.RunDir.create("x", out=tmp_path / "run")
    rows = [{"test": "001-mptcp-r1", "interface": "h1-eth0", "dropped": 0, "wrapped": False, "error": None},
            {"test": "002-mptcp-r2", "interface": "h1-eth0", "dropped": 3, "wrapped": False, "error": None},
            {"test": "003-mptcp-r3", "interface": "h1-eth0", "dropped": 0, "wrapped": True, "error": None},
            {"test": "004-mptcp-r4", "interface": "h1-eth0", "dropped": None, "wrapped": False,
             "error": "dumpcap did not stop on SIGINT"}]
    rd.write_table(results.CAPTURES, rows)
    assert _incomplete_captures(rd) == {"002-mptcp-r2", "003-mptcp-r3", "004-mptcp-r4"}


def test_mib_names_are_the_kernels(tmp_path):
    from mptcplab.preflight import mib_name_problems

    spec = dual({})
    spec.pop("events")
    spec["expect"] = ["mib.MPTcpExtMPFailTX == 0", "mib.MPTcpExtMPFailTx == 0"]
    assert mib_name_problems(parse_spec(spec)) == [
        "expect[0]: col 1: mib.MPTcpExtMPFailTX is not an MPTCP counter of this kernel "
        "(did you mean mib.MPTcpExtMPFailTx?)"]


def test_a_capture_replaced_by_a_link_or_a_fifo_is_refused(tmp_path):
    """Analysis runs tshark as root on raw/: only regular files, opened without following links."""
    import os

    from mptcplab import results
    from mptcplab.errors import RunDirError

    rd = results.RunDir.create("x", out=tmp_path / "run")
    rd.write_raw("001-mptcp-r1-h1-eth0.pcapng.gz", b"not really")
    with rd.open_capture("001-mptcp-r1-h1-eth0.pcapng.gz") as p:
        assert p.read_bytes() == b"not really" and str(p).startswith("/dev/fd/")
    os.mkfifo(rd.raw / "002-tcp-r1-h1-eth0.pcapng.gz")
    with pytest.raises(RunDirError, match="not a regular file"):
        with rd.open_capture("002-tcp-r1-h1-eth0.pcapng.gz"):
            pass
    with pytest.raises(RunDirError, match="not a regular file"):
        rd.captures()
    os.unlink(rd.raw / "002-tcp-r1-h1-eth0.pcapng.gz")
    os.symlink("/etc/hostname", rd.raw / "003-tcp-r1-h1-eth0.pcapng.gz")
    with pytest.raises(OSError):
        with rd.open_capture("003-tcp-r1-h1-eth0.pcapng.gz"):
            pass

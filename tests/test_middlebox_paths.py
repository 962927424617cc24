"""Middleboxes on a link's directions (issue 15, first slice): in the spec and the link model
(pure), and on a real network (root) -- MPTCP options stripped from SYNs on the first path make
the connection fall back to TCP and complete; MP_JOIN stripped on the second path leaves the first
subflow carrying everything; the census of the captures says so."""

import json

import pandas as pd
import pytest

from helpers import cli, write_spec
from mptcplab.console import middlebox_text
from mptcplab.linkmodel import choose_backend, emulator_settings
from mptcplab.plan import PlanError, make_plan
from mptcplab.spec import parse_spec
from test_events import dual, problems


def with_boxes(**boxes) -> dict:
    """dual-path with middleboxes: link index -> the link's fields to add."""
    spec = dual({})
    spec.pop("events")
    for i, fields in boxes.items():
        spec["topology"]["links"][int(i[1:])].update(fields)
    return spec


def test_a_middlebox_is_planned_per_direction_and_needs_the_user_space_emulator():
    spec = with_boxes(l0={"up": {"middlebox": {"strip_mptcp": "syn"}}},
                      l1={"middlebox": {"strip_mptcp": "join", "clamp_mss": 1200}})
    plan = make_plan(parse_spec(spec))
    l0, l1, l2 = plan.links[:3]
    assert (l0.up.strip_mptcp, l0.down.strip_mptcp) == ("syn", "none")   # only h1 -> s1
    assert (l1.up.strip_mptcp, l1.down.strip_mptcp, l1.down.clamp_mss) == ("join", "join", 1200)
    assert not (l2.up.middlebox() or l2.down.middlebox())
    # netem cannot rewrite segments: auto picks the emulator even where netem exists; netem refuses
    assert choose_backend("auto", l0.up, l0.down, netem=True) == "userspace"
    assert choose_backend("auto", l2.up, l2.down, netem=True) == "netem"
    with pytest.raises(Exception, match="cannot emulate a middlebox"):
        choose_backend("netem", l0.up, l0.down, netem=True)
    s = emulator_settings(l1.up)
    assert (s["mb_strip"], s["mb_drop_syn"], s["mb_mss"]) == ("join", "0", "1200")
    assert emulator_settings(l0.up)["mb_strip"] == "syn" and emulator_settings(l2.up)["mb_strip"] == "none"
    assert emulator_settings(make_plan(parse_spec(with_boxes(l0={"middlebox": {"strip_mptcp": "add-addr"}})))
                             .links[0].up)["mb_strip"] == "add_addr"


def test_payload_rewriting_and_splitting_are_planned_and_passed_to_the_emulator():
    spec = with_boxes(l0={"up": {"middlebox": {"rewrite_payload_every": 3, "rewrite_after": 10}}},
                      l1={"middlebox": {"split_at": 500, "strip_mptcp": "add-addr"}})
    plan = make_plan(parse_spec(spec))
    l0, l1, l2 = plan.links[:3]
    assert (l0.up.rewrite_every, l0.up.rewrite_after, l0.up.split_at) == (3, 10, None)
    assert (l0.down.rewrite_every, l0.down.rewrite_after) == (None, 0)          # only h1 -> s1
    assert (l1.up.split_at, l1.down.split_at, l1.up.rewrite_every) == (500, 500, None)
    assert l0.up.middlebox() and not l0.down.middlebox() and l1.down.middlebox()
    assert choose_backend("auto", l0.up, l0.down, netem=True) == "userspace"
    assert choose_backend("auto", l1.up, l1.down, netem=True) == "userspace"
    up0, down0, up1, none = (emulator_settings(d) for d in (l0.up, l0.down, l1.up, l2.up))
    assert (up0["mb_rewrite"], up0["mb_rewrite_after"], up0["mb_split"]) == ("3", "10", "0")
    assert (down0["mb_rewrite"], down0["mb_rewrite_after"], down0["mb_split"]) == ("0", "0", "0")
    assert (up1["mb_split"], up1["mb_strip"], up1["mb_rewrite"]) == ("500", "add_addr", "0")
    # the new keys come last, after the first slice's, and are off without a middlebox
    assert list(none)[-11:] == ["mb_strip", "mb_drop_syn", "mb_mss", "mb_rewrite", "mb_rewrite_after", "mb_split",
                               "mb_isn", "mb_nat", "mb_coalesce", "mb_coalesce_hold_us", "mb_rewrite_max"]
    assert (none["mb_rewrite"], none["mb_rewrite_after"], none["mb_split"]) == ("0", "0", "0")
    assert none["mb_rewrite_max"] == up0["mb_rewrite_max"] == "0"               # no limit
    # rewrite-once: the 101st data segment of each connection, and no other
    once = make_plan(parse_spec(with_boxes(l0={"up": {"middlebox": "rewrite-once"}}))).links[0].up
    assert (once.rewrite_every, once.rewrite_after, once.rewrite_max) == (1, 100, 1)
    assert (emulator_settings(once)["mb_rewrite"], emulator_settings(once)["mb_rewrite_max"]) == ("1", "1")
    assert middlebox_text(once) == "rewrite payload (1 in 1 data segments after 100, at most 1 per connection)"
    assert any("topology.links[0].middlebox.rewrite_max" in p
               for p in problems(with_boxes(l0={"middlebox": {"rewrite_payload_every": 1, "rewrite_max": 0}})))
    # rewrite_after alone rewrites nothing: no middlebox
    alone = make_plan(parse_spec(with_boxes(l0={"middlebox": {"rewrite_after": 5}}))).links[0]
    assert not alone.up.middlebox() and choose_backend("auto", alone.up, alone.down, netem=True) == "netem"
    assert middlebox_text(l0.up) == "rewrite payload (1 in 3 data segments after 10)"
    assert middlebox_text(l1.down) == "strip MPTCP (add-addr), split segments > 500 B"


def test_translating_middleboxes_are_planned_and_passed_to_the_emulator():
    spec = with_boxes(l0={"up": {"middlebox": {"randomize_isn": True, "nat": "10.0.1.100"}}},
                      l1={"middlebox": {"coalesce_up_to": 1200, "coalesce_hold": "250us"}})
    l0, l1, l2 = (make_plan(parse_spec(spec)).links[i] for i in (0, 1, 2))
    assert (l1.up.coalesce_up_to, l1.down.coalesce_hold, l0.up.coalesce_up_to) == (1200, 0.25, None)
    s1 = emulator_settings(l1.down)
    assert (s1["mb_coalesce"], s1["mb_coalesce_hold_us"]) == ("1200", "250")
    assert middlebox_text(l1.up) == "coalesce segments up to 1200 B (hold 0.25 ms)"
    assert choose_backend("auto", l1.up, l1.down, netem=True) == "userspace"
    assert l0.up.randomize_isn and not l0.down.randomize_isn
    assert (l0.up.nat, l0.down.nat) == ("10.0.1.100", None)
    assert l0.up.middlebox() and not l0.down.middlebox()
    assert choose_backend("auto", l0.up, l0.down, netem=True) == "userspace"
    with pytest.raises(Exception, match="cannot emulate a middlebox"):
        choose_backend("netem", l0.up, l0.down, netem=True)
    up, down, none = (emulator_settings(d) for d in (l0.up, l0.down, l2.up))
    assert (up["mb_isn"], down["mb_isn"], none["mb_isn"]) == ("1", "0", "0")
    assert (up["mb_nat"], down["mb_nat"], none["mb_nat"]) == ("10.0.1.100", "off", "off")
    assert (up["mb_coalesce"], none["mb_coalesce"], none["mb_coalesce_hold_us"]) == ("0", "0", "1000")
    assert middlebox_text(l0.up) == "randomise ISNs, NAT to 10.0.1.100" and middlebox_text(l0.down) == "-"
    assert json.loads(json.dumps(l0.up.as_dict()))["nat"] == "10.0.1.100"   # metadata.json's link description
    assert l0.up.as_dict()["randomize_isn"] is True
    nat_only = make_plan(parse_spec(with_boxes(l0={"down": {"middlebox": {"nat": "10.0.1.100"}}}))).links[0]
    assert nat_only.down.middlebox() and choose_backend("auto", nat_only.up, nat_only.down, netem=True) == "userspace"
    # a NAT is one way, its address free and on the link's subnet
    assert any("topology.links[0]: middlebox.nat: a NAT translates the connections opened in one direction" in p
               for p in problems(with_boxes(l0={"middlebox": {"nat": "10.0.1.100"}})))
    for nat, why in (("10.0.1.2", "10.0.1.2 is the address of h2-eth0"),
                     ("10.0.7.1", "10.0.7.1 is not in the link's subnet (10.0.1.0/24)")):
        with pytest.raises(PlanError) as e:
            make_plan(parse_spec(with_boxes(l0={"up": {"middlebox": f"nat={nat}"}})))
        assert any(f"topology.links[0].up.middlebox.nat: {why}" in p for p in e.value.problems), e.value.problems
    # a set event cannot bring one
    spec["events"] = {"at": [{"at": 1, "link": "h1-s1", "action": "set",
                              "params": {"middlebox": {"randomize_isn": True}}}]}
    assert any("params.middlebox: a middlebox is part of the link as built" in p for p in problems(spec))


def test_dss_checksums_are_a_host_setting_of_the_plan():
    spec = with_boxes()
    assert {h.mptcp.checksum for h in make_plan(parse_spec(spec)).hosts} == {None}   # the kernel's
    spec["mptcp"]["checksum"] = True
    assert {h.mptcp.checksum for h in make_plan(parse_spec(spec)).hosts} == {True}


def test_bad_middleboxes_are_refused_naming_the_field():
    assert any("topology.links[0].middlebox.strip_mptcp: 'sometimes' is not allowed" in p
               for p in problems(with_boxes(l0={"middlebox": {"strip_mptcp": "sometimes"}})))
    assert any("topology.links[1].down.middlebox.clamp_mss" in p
               for p in problems(with_boxes(l1={"down": {"middlebox": {"clamp_mss": 20}}})))
    assert any("topology.links[0].middlebox.firewall" in p
               for p in problems(with_boxes(l0={"middlebox": {"firewall": True}})))
    for field, value in (("rewrite_payload_every", 0), ("rewrite_after", -1), ("split_at", 0), ("split_at", 65001)):
        assert any(f"topology.links[1].middlebox.{field}" in p
                   for p in problems(with_boxes(l1={"middlebox": {field: value}}))), (field, value)


def _run(tmp_path, name, boxes, protocols=("mptcp",)):
    """dual-path with these boxes, 2 MB sent by the transfer tool (one connection, data hashed at
    both ends), captured."""
    def mutate(spec):
        for i, fields in boxes.items():
            spec["topology"]["links"][i].update(fields)
        spec["traffic"].update(protocols=list(protocols), tool="transfer", bytes=2_000_000)
        spec["traffic"].pop("duration")
        spec["capture"] = {}
        spec["outputs"]["formats"] = ["png"]

    out = tmp_path / name
    r = cli("run-experiment", str(write_spec(tmp_path, traffic={"repetitions": 1}, mutate=mutate,
                                             inline_topology=True, name=f"{name}.yaml")), "--out", str(out))
    return r, out


@pytest.mark.root
def test_mptcp_options_stripped_from_syns_the_connection_falls_back_and_completes(tmp_path, no_leftovers):
    """h1 -> s1 strips MPTCP options from SYNs: the server never sees MP_CAPABLE, answers as TCP,
    and the client falls back -- the transfer completes at the first path's rate with one
    subflow and the data intact (RFC 8684 3.1); the census sees no MP_JOIN and no DSS, and the
    emulator counted what it stripped."""
    r, out = _run(tmp_path, "syn", {0: {"up": {"middlebox": {"strip_mptcp": "syn"}}}})
    summary = pd.read_csv(out / "summary.csv")
    (row,) = summary.to_dict("records")
    assert row["goodput_mbps"] > 0.8 * 5 * 1448 / 1514, row          # completed, over path 1 only
    assert row["subflows"] == 1, row
    assert row["data_intact"] and row["bytes_received"] == row["bytes_sent"] == 2_000_000, row
    options = pd.read_csv(out / "options.csv")
    assert options.MP_JOIN_SYN.sum() == 0 and options.DSS.sum() == 0, options
    assert options.MP_CAPABLE_SYNACK.sum() == 0, options   # the server answered without MP_CAPABLE
    # the client's SYNs left with MP_CAPABLE (h1-eth0's copy) and arrived without it: stripped
    assert options.MP_CAPABLE_SYN.sum() >= 1, options
    (point,) = json.loads((out / "metadata.json").read_text())["link_stats"].values()
    assert point["h1-s1"]["a2b"]["mb_stripped_options"] >= 1, point["h1-s1"]   # the connection's SYN
    # the census sees each SYN leave with MP_CAPABLE and arrive without it: fallback, and the
    # kernel counted it too
    assert options.fallback.all() and set(options.fallback_reason) == {"syn-without-mp-capable"}, options
    assert row["mptcp_fallback"] >= 1, row
    # the run completes; the test is flagged, not failed: 1 subflow where 2 were expected
    assert r.returncode == 0 and "001-mptcp-r1: 1 subflow(s), expected 2" in r.stderr, r.stderr[-2000:]


@pytest.mark.root
def test_mp_join_stripped_on_the_second_path_the_first_subflow_carries_everything(tmp_path, no_leftovers):
    """h1 <-> s2 strips MP_JOIN both ways: the join's SYN arrives without MP_JOIN -- h2 answers it
    as a new TCP connection to port 5201 or resets it -- so the second subflow never forms and
    MPTCP runs on the first path alone; the connection completes with the data intact."""
    r, out = _run(tmp_path, "join", {1: {"middlebox": {"strip_mptcp": "join"}}})
    (row,) = pd.read_csv(out / "summary.csv").to_dict("records")
    assert row["goodput_mbps"] > 0.8 * 5 * 1448 / 1514 and row["subflows"] == 1, row
    assert row["data_intact"] and row["mptcp_fallback"] == 0, row
    options = pd.read_csv(out / "options.csv")
    assert options.MP_CAPABLE_SYNACK.sum() == 1 and options.MP_JOIN_SYNACK.sum() == 0, options
    assert not options.fallback.any(), options   # MPTCP, on one subflow: not a fallback


@pytest.mark.root
def test_payload_rewritten_on_one_path_only_the_dss_checksum_notices(tmp_path, no_leftovers):
    """DSS checksums on (both hosts); the box on s2 -> h2 rewrites one payload byte of every 50th
    data segment after the 20th, fixing the TCP checksum -- TCP cannot notice, MPTCP's DSS
    checksum must. RFC 8684 section 3.7: with another subflow up, the receiver reports MP_FAIL and
    the failing subflow is closed (reset); data goes on over the first path and the connection
    completes. The kernel counts the checksum errors; the census sees the MP_FAIL (or the reset)."""
    def mutate(spec):
        spec["topology"]["links"][3].update({"up": {"middlebox": {"rewrite_payload_every": 50, "rewrite_after": 20}}})
        spec["mptcp"]["checksum"] = True
        spec["traffic"]["protocols"] = ["mptcp"]
        spec["capture"] = {}
        spec["outputs"]["formats"] = ["png"]

    out = tmp_path / "run"
    r = cli("run-experiment", str(write_spec(tmp_path, traffic={"duration": 4, "repetitions": 1}, mutate=mutate,
                                             inline_topology=True)), "--out", str(out))
    (row,) = pd.read_csv(out / "summary.csv").to_dict("records")
    assert pd.isna(row["error"]) and row["goodput_mbps"] > 0.5 * 5, (row, r.stderr[-2000:])   # completed
    (point,) = json.loads((out / "metadata.json").read_text())["link_stats"].values()
    assert point["s2-h2"]["a2b"]["mb_rewritten"] >= 1, point["s2-h2"]
    mib = pd.read_csv(out / "mptcp-mib.csv")
    csum = mib[mib.counter == "MPTcpExtDataCsumErr"]
    assert csum.delta.sum() >= 1, mib                   # the receiver's DSS checksum caught it
    options = pd.read_csv(out / "options.csv")
    join = options[options.role == "join"]
    assert (options.MP_FAIL.sum() + options.MP_TCPRST.sum()) >= 1, options   # reported, as 3.7 says
    assert not join.empty and options[options.role == "initial"].DSS.sum() > join.DSS.sum(), options


@pytest.mark.root
def test_the_transfer_tool_says_whether_rewritten_data_reached_the_application(tmp_path, no_leftovers):
    """The same rewriting box on s2 -> h2, the data sent by the transfer tool (a seeded stream
    hashed at both ends), DSS checksums off then on (a sweep): without checksums nothing in
    MPTCP or TCP can notice, the application receives the changed bytes and the digests differ;
    with them the receiver drops what fails the check (MP_FAIL, RFC 8684 section 3.7), the data
    is sent again over the first path and arrives intact."""
    def mutate(spec):
        spec["topology"]["links"][3].update({"up": {"middlebox": {"rewrite_payload_every": 50, "rewrite_after": 20}}})
        spec["traffic"].update(protocols=["mptcp"], tool="transfer")
        spec["traffic"].pop("duration", None)
        spec["sweep"] = {"parameters": {"mptcp.checksum": [False, True]}}
        spec["outputs"]["formats"] = ["png"]

    out = tmp_path / "run"
    r = cli("run-experiment", str(write_spec(tmp_path, traffic={"bytes": 3_000_000, "repetitions": 1},
                                             mutate=mutate, inline_topology=True)), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {bool(x["mptcp.checksum"]): x for x in pd.read_csv(out / "summary.csv").to_dict("records")}
    off, on = rows[False], rows[True]
    assert off["bytes_sent"] == on["bytes_sent"] == 3_000_000, rows
    assert off["bytes_received"] == 3_000_000 and not off["data_intact"], off   # all of it, changed
    assert on["bytes_received"] == 3_000_000 and on["data_intact"], on         # all of it, as sent
    stats = json.loads((out / "metadata.json").read_text())["link_stats"]
    assert all(p["s2-h2"]["a2b"]["mb_rewritten"] >= 1 for p in stats.values()), stats
    mib = pd.read_csv(out / "mptcp-mib.csv")
    assert "point" in mib
    by_point = mib[mib.counter == "MPTcpExtDataCsumErr"].groupby("point").delta.sum()
    assert by_point.get(off["point"], 0) == 0 and by_point.get(on["point"], 0) >= 1, mib


@pytest.mark.root
def test_the_middlebox_matrix_nat_isn_and_coalescing(tmp_path, no_leftovers):
    """experiments/middleboxes.yaml's NAT and ISN-randomising rows (DSS checksums on) and its
    coalescing row (off), MPTCP and TCP, 1 MB per test. NAT and ISN: the experiment's own
    expectations for them, and the one for every box with checksums, pass for MPTCP -- a source
    NAT on the first path leaves two subflows and intact data, randomised ISNs change nothing.
    Coalescing: the box is faithful (TCP through it gets every byte as sent) and MPTCP's receiver
    notices the merged segment's unmapped bytes and resets that subflow, or falls back to TCP
    (RFC 8684 3.3, 3.7). (Not
    asserted: MPTCP's data integrity through the coalescing box -- Linux 6.18 delivered changed
    bytes with checksums on; see README.)"""
    def mutate(spec):
        spec["traffic"].update(bytes=1_000_000, repetitions=1, protocols=["mptcp", "tcp"])
        spec["sweep"] = {"zip": [{"links.h1-s1.up.middlebox": ["nat=10.0.1.100", "randomize-isn", "coalesce"],
                                  "links.h1-s1.down.middlebox": ["none", "none", "clamp-mss=600"],
                                  "mptcp.checksum": [True, True, False]}]}
        kept = [e for e in spec["expect"] if e.startswith("mptcp.checksum=true")
                or any(f"middlebox={k}:" in e for k in ("'nat=10.0.1.100'", "randomize-isn"))]
        spec["expect"] = ["protocol=mptcp, " + e for e in kept]
        spec["outputs"]["formats"] = ["png"]

    out = tmp_path / "run"
    r = cli("run-experiment", str(write_spec(tmp_path, "middleboxes", mutate=mutate)), "--out", str(out))
    # Through the coalescing box MPTCP may also stall until the test's time limit (Linux 6.18,
    # 2 of 3 runs in one session: after a DSS-corruption fallback to TCP, or both subflows reset): then
    # that one test, and only it, is flagged and the run exits 1; every check below still holds.
    flagged = json.loads((out / "metadata.json").read_text()).get("flagged", []) if out.exists() else []
    assert r.returncode == 0 or (r.returncode == 1 and flagged and all(f.startswith("p003-001-mptcp-") for f in flagged)
                                 and any("did not finish" in f for f in flagged)), r.stderr[-3000:]
    verdicts = pd.read_csv(out / "expect.csv")
    assert len(verdicts) == 5 and verdicts.passed.all(), verdicts.to_dict("records")
    summary = pd.read_csv(out / "summary.csv")
    tcp = summary[summary.protocol == "tcp"]
    assert len(tcp) == 3 and tcp.data_intact.all() and (tcp.bytes_received == 1_000_000).all(), tcp
    stats = json.loads((out / "metadata.json").read_text())["link_stats"]
    nat, isn, coalesce = (stats[p]["h1-s1"]["a2b"] for p in ("p001", "p002", "p003"))
    assert nat["mb_nat_conns"] == 2 and nat["mb_nat_rewritten"] > 100, nat      # one connection per test
    assert isn["mb_isn_conns"] == 2 and isn["mb_isn_rewritten"] > 100, isn
    assert coalesce["mb_coalesced"] > 10, coalesce
    mib = pd.read_csv(out / "mptcp-mib.csv")
    mptcp3 = summary[(summary.protocol == "mptcp") & (summary.point == "p003")].test.iloc[0]
    # the receiver noticed: it resets that subflow, or -- the corruption on the first subflow
    # before the second has joined -- falls back to TCP (after which Linux 6.18 stalls: above)
    noticed = mib[(mib.test == mptcp3) & mib.counter.isin(["MPTcpExtDSSCorruptionReset",
                                                           "MPTcpExtDSSCorruptionFallback"])].delta.sum()
    assert noticed >= 1, mib[mib.test == mptcp3]
    assert (out / "figures" / "middlebox-outcomes.png").exists()

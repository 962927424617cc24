"""Outcomes (mptcplab.outcomes): each test's connection classified as RFC 8684 names the cases,
from its summary row and its hosts' MIB deltas; the table laid out per swept middlebox."""

import pandas as pd

from mptcplab.outcomes import box_label, outcome_of, outcome_table
from mptcplab.rows import mib_by_test

GOOD = {"protocol": "mptcp", "error": None, "goodput_mbps": 9.0, "subflows": 2, "expected_subflows": 2,
        "mptcp_fallback": 0, "bytes_sent": 1000, "bytes_received": 1000, "data_intact": True}


def test_each_case_of_rfc_8684_is_told_apart():
    assert outcome_of(GOOD, {}).kind == "mptcp" and outcome_of(GOOD, {}).text == "MPTCP, 2 subflows"
    assert outcome_of({**GOOD, "subflows": 1}, {}).text == "MPTCP, 1 of 2 subflows"
    fb = outcome_of({**GOOD, "subflows": 1, "mptcp_fallback": 1}, {})
    assert (fb.kind, fb.text) == ("fallback", "fell back to TCP")
    # a checksum failure on one of two subflows: MP_FAIL and that subflow reset (section 3.7)
    reset = outcome_of(GOOD, {"MPTcpExtDataCsumErr": 2, "MPTcpExtMPFailTx": 1, "MPTcpExtMPRstTx": 1})
    assert (reset.kind, reset.text, reset.mp_fail) == ("subflow-reset", "subflow reset (MP_FAIL)", True)
    # ... on the only subflow: MP_FAIL and an infinite mapping, i.e. fallback
    inf = outcome_of({**GOOD, "subflows": 1}, {"MPTcpExtMPFailTx": 1, "MPTcpExtInfiniteMapTx": 1})
    assert (inf.kind, inf.text) == ("fallback", "fell back to TCP (MP_FAIL)")
    # a subflow reset because its mapping was unusable (a coalescing box), the other went on
    assert outcome_of(GOOD, {"MPTcpExtDSSCorruptionReset": 1}).text == "subflow reset (bad mapping)"
    # the kernel's other fallbacks: no MPTCP option where the first DSS was due; SYNs unanswered
    for counter in ("MPTcpExtMPCapableDataFallback", "MPTcpExtBlackhole"):
        assert outcome_of({**GOOD, "subflows": 1}, {counter: 1}).kind == "fallback", counter
    bad = outcome_of({**GOOD, "data_intact": False}, {})
    assert (bad.kind, bad.text) == ("corrupted", "data corrupted")
    short = outcome_of({**GOOD, "data_intact": False, "bytes_received": 250, "error": "transfer: reset"}, {})
    assert (short.kind, short.text) == ("cut-short", "cut short (25%)")
    dead = outcome_of({**GOOD, "data_intact": False, "bytes_received": None, "goodput_mbps": None,
                       "error": "transfer: unable to connect to 10.0.1.2:5201: timed out"}, {})
    assert dead.kind == "failed" and dead.text.startswith("failed: transfer: unable to connect")
    # without the transfer tool (iperf3): no data columns, the rest still applies
    iperf = {k: v for k, v in GOOD.items() if not k.startswith(("bytes_", "data_"))}
    assert outcome_of(iperf, {}).kind == "mptcp"
    assert outcome_of({**iperf, "error": "iperf3: boom", "goodput_mbps": None}, {}).kind == "failed"
    assert outcome_of({**GOOD, "protocol": "tcp"}, {}).text == "TCP"
    # values as a CSV reads them back
    assert outcome_of({**GOOD, "data_intact": "False"}, {}).kind == "corrupted"


def test_the_table_has_a_row_per_middlebox_and_a_column_per_checksum_setting():
    box1, box2 = "links.h1-s1.up.middlebox", "links.h1-s2.up.middlebox"
    rows = []
    for i, (b1, b2, csum, intact) in enumerate([("none", "none", False, True), ("none", "none", True, True),
                                                ("none", "rewrite", False, False), ("none", "rewrite", True, True),
                                                ("strip-syn", "none", False, True), ("strip-syn", "none", True, True)]):
        for rep in (1, 2):
            rows.append({**GOOD, "test": f"p{i:03d}-r{rep}", box1: b1, box2: b2, "mptcp.checksum": csum,
                         "data_intact": intact if rep == 1 or b2 != "rewrite" else True,
                         "mptcp_fallback": int(b1 == "strip-syn")})
    mib = mib_by_test(pd.DataFrame([{"test": "p003-r1", "host": "client", "counter": "MPTcpExtMPFailRx", "delta": 1},
                                    {"test": "p003-r1", "host": "server", "counter": "MPTcpExtMPFailTx", "delta": 1},
                                    {"test": "p003-r1", "host": "server", "counter": "MPTcpExtDataCsumErr",
                                     "delta": 3},
                                    {"test": "p003-r1", "host": "client", "counter": "MPTcpExtMPRstRx", "delta": 1}]))
    assert mib == {"p003-r1": {"MPTcpExtMPFailRx": 1, "MPTcpExtMPFailTx": 1, "MPTcpExtDataCsumErr": 3,
                               "MPTcpExtMPRstRx": 1}}
    names, cols, cells = outcome_table(pd.DataFrame(rows), mib, [box1, box2, "mptcp.checksum"])
    assert names == ["none", "h1→s2: rewrite", "h1→s1: strip-syn"]
    assert cols == ["DSS checksum off", "DSS checksum on"]
    texts = [[c.text for c in line] for line in cells]
    assert texts[0] == ["MPTCP, 2 subflows"] * 2
    # the repetitions disagreed: each outcome with its count, the worst first, and its colour
    assert texts[1][0] == "data corrupted (1/2)\nMPTCP, 2 subflows (1/2)" and cells[1][0].kind == "corrupted"
    assert texts[1][1] == "subflow reset (MP_FAIL) (1/2)\nMPTCP, 2 subflows (1/2)"
    assert texts[2] == ["fell back to TCP"] * 2
    assert box_label("links.s1-h2.down.middlebox") == "h2→s1" and box_label("links.h1-s1.middlebox") == "h1↔s1"

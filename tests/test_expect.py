"""Expectations: the grammar, its errors (with the column), and verdicts over hand-made rows."""

import io
import math
from typing import Annotated

import numpy as np
import pandas as pd
import pytest
from pydantic import AfterValidator, BaseModel, ValidationError

from mptcplab.errors import SpecError
from mptcplab.expect import (
    MISSING,
    Aggregate,
    Const,
    ExpectError,
    Name,
    check,
    column_of,
    evaluate,
    names,
    parse,
    parse_all,
    unknown_names,
)

ROWS = [
    {"test": "001-mptcp-r1", "variant": "mptcp", "protocol": "mptcp", "repetition": 1, "subflows": 2,
     "goodput_mbps": 9.1, "mptcp_fallback": 0, "subflows_ok": True, "options_MP_JOIN_SYN": 1},
    {"test": "002-tcp-r1", "variant": "tcp", "protocol": "tcp", "repetition": 1, "subflows": 1,
     "goodput_mbps": 4.517078, "mptcp_fallback": None, "subflows_ok": True, "options_MP_JOIN_SYN": 0},
    {"test": "003-mptcp-r2", "variant": "mptcp", "protocol": "mptcp", "repetition": 2, "subflows": 2,
     "goodput_mbps": 8.9, "mptcp_fallback": 0, "subflows_ok": True, "options_MP_JOIN_SYN": 1},
    {"test": "004-tcp-r2", "variant": "tcp", "protocol": "tcp", "repetition": 2, "subflows": 1,
     "goodput_mbps": 4.49, "mptcp_fallback": None, "subflows_ok": True, "options_MP_JOIN_SYN": 0},
]


def verdict(text: str, rows=ROWS, **kw):
    return evaluate([parse(text)], rows, **kw)[0]


# --------------------------------------------------------------------------- grammar


def test_comparison_and_scope_parse_into_their_parts():
    text = "protocol=mptcp, variant='mptcp-backup', repetition=2: subflows >= 2"
    e = parse(text, index=3)
    assert e.index == 3 and e.op == ">=" and e.per_row
    assert [(n.path, v) for n, v in e.scope] == [("protocol", "mptcp"), ("variant", "mptcp-backup"),
                                                 ("repetition", 2.0)]
    assert e.scope_text == "protocol=mptcp, variant='mptcp-backup', repetition=2"
    assert e.left == Name("subflows", text.index("subflows") + 1) and e.right == Const(2.0)


@pytest.mark.parametrize("text, left, op, right", [
    ("subflows>=2", Name("subflows", 1), ">=", Const(2.0)),
    ("2 <= subflows", Const(2.0), "<=", Name("subflows", 6)),
    ("fallback == FALSE", Name("fallback", 1), "==", Const(False)),
    ("subflows_ok != true", Name("subflows_ok", 1), "!=", Const(True)),
    ("sender_cc == \"cubic\"", Name("sender_cc", 1), "==", Const("cubic")),
    ("delay_ms < -1.5e3", Name("delay_ms", 1), "<", Const(-1500.0)),
    ("options.MP_JOIN_SYN == 1", Name("options.MP_JOIN_SYN", 1), "==", Const(1.0)),
    ("links[0].bw_mbps > .5", Name("links[0].bw_mbps", 1), ">", Const(0.5)),
    ("links.h1-s2.delay == links.*.loss", Name("links.h1-s2.delay", 1), "==", Name("links.*.loss", 22)),
    ("mean(goodput_mbps) >= 4", Aggregate("mean", Name("goodput_mbps", 6)), ">=", Const(4.0)),
    ("median( goodput_mbps ) > min(maxflow_mbps)", Aggregate("median", Name("goodput_mbps", 9)), ">",
     Aggregate("min", Name("maxflow_mbps", 30))),
])
def test_valid_forms(text, left, op, right):
    e = parse(text)
    assert (e.left, e.op, e.right, e.scope) == (left, op, right, ())


def test_aggregates_only_are_not_per_row():
    assert not parse("mean(goodput_mbps) >= 4").per_row
    assert parse("goodput_mbps >= mean(goodput_mbps)").per_row


@pytest.mark.parametrize("text, col, words", [
    ("", 1, "empty expectation"),
    ("   ", 1, "empty expectation"),
    ("subflows 2", 10, "expected a comparison operator (==, !=, >=, <=, >, <), got '2'"),
    ("subflows foo", 10, "got 'foo'"),
    ("subflows", 9, "comparison operator (==, !=, >=, <=, >, <), got end of text"),
    ("subflows => 2", 11, "expected a value after subflows=, got '>' (to compare, write >=)"),
    ("avg(goodput_mbps) > 1", 1, "unknown function 'avg' (functions: min, max, mean, median)"),
    ("variant == 'mptcp", 12, "unterminated string (no closing ')"),
    ('protocol="tcp: x == 1', 10, "unterminated string (no closing \")"),
    ("subflows >= 2 x", 15, "unexpected 'x' after the comparison"),
    ("subflows >= 2 and fallback == false", 15, "unexpected 'and'"),
    ("subflows >= 2 %", 15, "unexpected character '%'"),
    ("subflows = 2", 13, "got end of text (to compare, write ==)"),
    ("protocol=mptcp subflows >= 2", 16, "expected ',' or ':' after the selector protocol=mptcp"),
    ("protocol=: subflows >= 2", 10, "expected a value after protocol=, got ':'"),
    ("protocol=tcp, : subflows >= 2", 15, "expected a selector such as protocol=mptcp, got ':'"),
    ("protocol=tcp, protocol=mptcp: subflows >= 2", 15, "protocol is selected twice"),
    ("1 == 1", 1, "compares two constants"),
    ("protocol=tcp: 'tcp' == 'tcp'", 15, "compares two constants"),
    ("fallback >= true", 10, "true and false can only be compared with == or !="),
    ("mean(2) > 1", 6, "expected a column name inside mean(...), got '2'"),
    ("mean(goodput_mbps > 1", 19, "expected ')' to close mean(, got '>'"),
    ("subflows >= ", 13, "expected a column name, a number, a 'string', true or false, got end of text"),
])
def test_parse_errors_name_the_column(text, col, words):
    with pytest.raises(ExpectError) as e:
        parse(text, where="expect[2]")
    assert e.value.col == col
    assert e.value.problems == [f"expect[2]: col {col}: {e.value.reason}"]
    assert words in e.value.reason


def test_a_parse_error_is_a_spec_error_and_a_value_error():
    with pytest.raises(SpecError):
        parse("subflows 2")
    with pytest.raises(ValueError, match=r"^col 10: expected a comparison operator"):
        parse("subflows 2")


def test_parse_all_reports_every_bad_item_with_its_index():
    with pytest.raises(SpecError) as e:
        parse_all(["subflows >= 2", "subflows 2", "avg(x) > 1"])
    assert e.value.problems == [
        "expect[1]: col 10: expected a comparison operator (==, !=, >=, <=, >, <), got '2'",
        "expect[2]: col 1: unknown function 'avg' (functions: min, max, mean, median)"]
    assert [x.index for x in parse_all(["subflows >= 2", "goodput_mbps > 1"])] == [0, 1]


def test_check_as_a_pydantic_validator_gets_the_field_path():
    class M(BaseModel):
        expect: list[Annotated[str, AfterValidator(check)]] = []

    assert M(expect=["subflows >= 2"]).expect == ["subflows >= 2"]
    with pytest.raises(ValidationError) as e:
        M(expect=["subflows >= 2", "subflows foo"])
    (err,) = e.value.errors()
    assert err["loc"] == ("expect", 1) and "col 10: expected a comparison operator" in err["msg"]


def test_names_are_every_name_read():
    assert names("protocol=mptcp: mean(options.MP_JOIN_SYN) >= mib.MPTcpExtMPFailTx") == {
        "protocol", "options.MP_JOIN_SYN", "mib.MPTcpExtMPFailTx"}
    assert names(parse("2 <= subflows")) == {"subflows"}


def test_unknown_names_are_found_before_the_run():
    exps = parse_all(["fallback == false", "options.MP_JOIN_SYN == 1", "links[0].bw_mbps > 1",
                      "variant=a: mib.MPTcpExtMPFailTx == 0"])
    cols = ["variant", "mptcp_fallback", "options_MP_JOIN_SYN", "links[0].bw_mbps"]
    assert unknown_names(exps, cols) == [
        "expect[0]: col 1: 'fallback' is not a column of the results (did you mean mptcp_fallback (the "
        "client's MIB fallback counters, MPTCP tests only: protocol=mptcp: mptcp_fallback == 0)?)",
        "expect[3]: col 12: 'mib.MPTcpExtMPFailTx' is not a column of the results"]
    assert unknown_names(exps, cols + ["fallback", "mib_MPTcpExtMPFailTx"]) == []
    assert column_of("options.X") == "options_X" and column_of("links.*.loss") == "links.*.loss"


def test_fallback_names_both_columns_it_could_mean():
    """The issue's `fallback == false` has two readings that can disagree (the kernel's
    counters, the wire): both are spelled out, none is picked; a near miss still gets the
    closest column."""
    cols = ["protocol", "mptcp_fallback", "options_fallback", "subflows"]
    (problem,) = unknown_names(parse_all(["fallback == false"]), cols)
    assert problem == (
        "expect[0]: col 1: 'fallback' is not a column of the results (did you mean mptcp_fallback (the client's "
        "MIB fallback counters, MPTCP tests only: protocol=mptcp: mptcp_fallback == 0) or options.fallback "
        "(a fallback seen in the captures: options.fallback == false)?)")
    assert unknown_names(parse_all(["protocol=mptcp: mptcp_fallback == 0", "options.fallback == false"]), cols) == []
    assert unknown_names(parse_all(["subflow >= 2"]), cols) == [
        "expect[0]: col 1: 'subflow' is not a column of the results (did you mean subflows?)"]
    # both suggestions are written as they are judged
    rows = [{"test": "001-mptcp-r1", "protocol": "mptcp", "mptcp_fallback": 0, "options_fallback": False},
            {"test": "002-tcp-r1", "protocol": "tcp", "mptcp_fallback": None, "options_fallback": False}]
    assert [v.passed for v in evaluate(parse_all(["protocol=mptcp: mptcp_fallback == 0",
                                                  "options.fallback == false"]), rows)] == [True, True]


# --------------------------------------------------------------------------- verdicts


def test_every_row_passes():
    v = verdict("protocol=mptcp: subflows >= 2")
    assert v.passed and v.n_rows == 2 and v.observed == ()
    assert v.describe() == "PASS protocol=mptcp: subflows >= 2 (2 tests)"


def test_each_failing_row_is_named_with_its_value():
    v = verdict("protocol=tcp: goodput_mbps >= 5")
    assert not v.passed and v.n_rows == 2
    assert [(o.what, o.value) for o in v.observed] == [("002-tcp-r1", 4.517078), ("004-tcp-r2", 4.49)]
    assert v.describe() == "FAIL protocol=tcp: goodput_mbps >= 5 (2 of 2 tests): 002-tcp-r1 4.52, 004-tcp-r2 4.49"
    assert v.row() == {"index": 0, "expectation": "protocol=tcp: goodput_mbps >= 5", "passed": False,
                       "tests": 2, "observed": "002-tcp-r1 4.52; 004-tcp-r2 4.49", "reason": ""}


def test_without_a_scope_every_row_is_checked():
    v = verdict("subflows >= 2")
    assert not v.passed and v.n_rows == 4 and [o.what for o in v.observed] == ["002-tcp-r1", "004-tcp-r2"]


def test_scope_selectors_all_hold_and_read_numbers_like_the_rows():
    v = verdict("protocol=mptcp, repetition='2': options.MP_JOIN_SYN == 1")
    assert v.passed and v.n_rows == 1
    assert verdict("variant=tcp: options.MP_JOIN_SYN == 0").n_rows == 2


def test_no_row_selected_fails_with_the_scope_named():
    v = verdict("protocol=quic: subflows >= 1")
    assert not v.passed and v.n_rows == 0
    assert v.describe() == "FAIL protocol=quic: subflows >= 1: no test matched protocol=quic"
    assert not verdict("subflows >= 1", rows=[]).passed


def test_a_name_no_row_has_fails():
    v = verdict("goodput >= 1")
    assert not v.passed and v.reason == "no column goodput in the results"


@pytest.mark.parametrize("missing", [None, float("nan"), "", "nan", pd.NA, np.float64("nan")])
def test_a_missing_value_fails(missing):
    rows = [dict(ROWS[0]), dict(ROWS[2], goodput_mbps=missing)]
    v = verdict("goodput_mbps >= 1", rows)
    assert not v.passed and [(o.what, o.value) for o in v.observed] == [("003-mptcp-r2", MISSING)]
    assert v.describe().endswith(": 003-mptcp-r2 no value")
    assert not verdict("goodput_mbps != 1", rows).passed  # not even where any value would do
    agg = verdict("mean(goodput_mbps) >= 1", rows)
    assert not agg.passed and agg.reason == "mean(goodput_mbps) needs a number in every test"
    assert [o.what for o in agg.observed] == ["003-mptcp-r2"]


@pytest.mark.parametrize("true, false", [
    (True, False), ("True", "False"), ("true", "false"), (1, 0), ("1", "0.0"), (np.bool_(True), np.bool_(False)),
])
def test_booleans_however_they_were_stored(true, false):
    rows = [{"test": "a", "x": true}, {"test": "b", "x": false}]
    assert [o.what for o in verdict("x == true", rows).observed] == ["b"]
    assert [o.what for o in verdict("x == false", rows).observed] == ["a"]
    assert [o.what for o in verdict("x != FALSE", rows).observed] == ["b"]


def test_a_count_against_a_boolean_asks_whether_it_is_non_zero():
    rows = [{"test": "a", "mptcp_fallback": 0}, {"test": "b", "mptcp_fallback": 2}]
    assert [o.what for o in verdict("mptcp_fallback == false", rows).observed] == ["b"]
    assert [o.what for o in verdict("mptcp_fallback == true", rows).observed] == ["a"]


def test_booleans_from_a_csv_read_back_by_pandas():
    buf = io.StringIO()
    pd.DataFrame(ROWS).to_csv(buf, index=False)
    buf.seek(0)
    rows = pd.read_csv(buf).to_dict("records")
    assert verdict("subflows_ok == true", rows).passed
    assert [o.what for o in verdict("protocol=mptcp: mptcp_fallback == false", rows).observed] == []
    # the TCP tests have no fallback count (NaN after the round trip): no value, not "false"
    assert [o.what for o in verdict("mptcp_fallback == false", rows).observed] == ["002-tcp-r1", "004-tcp-r2"]


def test_aggregates_compare_one_value():
    v = verdict("protocol=tcp: mean(goodput_mbps) >= 4")
    assert v.passed and v.n_rows == 2 and not v.per_row
    assert v.observed[0].what == "mean(goodput_mbps)" and math.isclose(v.observed[0].value, (4.517078 + 4.49) / 2)
    assert v.describe() == "PASS protocol=tcp: mean(goodput_mbps) >= 4 (2 tests): mean(goodput_mbps) 4.5"
    low = verdict("min(goodput_mbps) > 4.5")
    assert not low.passed and low.observed[0].value == 4.49
    assert low.describe() == "FAIL min(goodput_mbps) > 4.5 (4 tests): min(goodput_mbps) 4.49"
    assert verdict("protocol=mptcp: median(goodput_mbps) == 9").passed
    assert not verdict("protocol=mptcp: max(goodput_mbps) <= 9").passed
    assert verdict("mean(subflows_ok) == 1").passed  # booleans count as 1/0


def test_a_row_against_an_aggregate_and_two_columns():
    v = verdict("goodput_mbps >= mean(goodput_mbps)")
    assert [o.what for o in v.observed] == ["002-tcp-r1", "004-tcp-r2"]
    rows = [{"test": "a", "goodput_mbps": 9.0, "maxflow_mbps": 10},
            {"test": "b", "goodput_mbps": 4.0, "maxflow_mbps": 10}]
    w = verdict("goodput_mbps >= maxflow_mbps", rows)
    assert [(o.what, o.value, o.shown) for o in w.observed] == [("a", (9.0, 10.0), "9 vs 10"),
                                                               ("b", (4.0, 10.0), "4 vs 10")]


def test_strings_compare_as_strings_and_mismatches_fail():
    assert verdict("protocol=tcp: variant == 'tcp'").passed
    assert [o.what for o in verdict("variant != 'tcp'").observed] == ["002-tcp-r1", "004-tcp-r2"]
    v = verdict("variant >= 1")
    assert not v.passed and v.observed[0].shown == "'mptcp' (cannot compare 'mptcp' with 1)"


def test_equality_allows_the_last_digit_a_csv_rounds_away():
    rows = [{"test": "a", "x": 0.1 + 0.2}]
    assert verdict("x == 0.3", rows).passed and not verdict("x != 0.3", rows).passed
    assert not verdict("x == 0.3001", rows).passed


def test_a_failing_value_is_never_shown_as_the_threshold_it_missed():
    rows = [{"test": "a", "goodput_over_maxflow": 0.89996}, {"test": "b", "goodput_over_maxflow": 0.8}]
    v = verdict("goodput_over_maxflow >= 0.9", rows)
    assert [o.shown for o in v.observed] == ["0.89996", "0.8"]
    w = verdict("goodput_mbps >= 4.5171", [{"test": "a", "goodput_mbps": 4.517}])  # not 4.52
    assert w.describe() == "FAIL goodput_mbps >= 4.5171 (1 of 1 test): a 4.517"


def test_a_resolver_of_the_callers_own():
    mib = {"001-mptcp-r1": {"MPTcpExtMPFailTx": 0}, "003-mptcp-r2": {"MPTcpExtMPFailTx": 3}}

    def resolve(row, name):
        if name.startswith("mib."):
            return mib[row["test"]].get(name[4:], 0)  # a counter that did not move: 0
        return row[name]

    v = verdict("protocol=mptcp: mib.MPTcpExtMPFailTx == 0", resolve=resolve)
    assert [(o.what, o.value) for o in v.observed] == [("003-mptcp-r2", 3.0)]
    assert verdict("protocol=mptcp: mib.MPTcpExtMPJoinSynRx == 0", resolve=resolve).passed


def test_rows_without_a_label_are_numbered():
    v = verdict("x >= 1", rows=[{"x": 1}, {"x": 0}])
    assert v.describe() == "FAIL x >= 1 (1 of 2 tests): row 2 0"


def test_long_failure_lists_are_cut_in_the_console_line_not_in_the_table():
    rows = [{"test": f"t{i}", "x": 0} for i in range(11)]
    v = verdict("x > 0", rows)
    assert v.describe().endswith("t7 0, and 3 more")
    assert v.row()["observed"].count("; ") == 10

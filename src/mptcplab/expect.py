"""Expectations: pass/fail assertions over a run's summary rows. Pure (no network, no files).

A spec's ``expect:`` lists strings such as ``subflows >= 2`` or
``protocol=tcp: mean(goodput_mbps) >= 4``. Each is parsed here before anything runs (a typo
costs nothing), and checked against the summary rows afterwards, one verdict per expectation.
The language is deliberately tiny -- one comparison, an optional scope -- and parsed by hand (no
``eval``): the strings come from a file anyone may hand you, and every mistake must be reported
with its column. Several conditions are several list items, so a failure names which one.

Grammar (EBNF; blanks between tokens are ignored)::

    expectation := [ scope ":" ] comparison
    scope       := selector { "," selector }           (* every selector must hold *)
    selector    := name "=" ( literal | word )         (* word: a bare value like mptcp-backup *)
    comparison  := operand op operand
    op          := "==" | "!=" | ">=" | "<=" | ">" | "<"
    operand     := function "(" name ")" | name | literal
    function    := "min" | "max" | "mean" | "median"
    literal     := number | string | "true" | "false"  (* true/false in any case *)
    name        := ident { "." ( ident | "*" ) }       (* subflows, options.MP_JOIN_SYN, links.*.loss *)
    word        := name
    ident       := ( letter | "_" ) { letter | digit | "_" | "-" } { "[" digits "]" }
    number      := [ "-" ] ( digits [ "." { digit } ] | "." digits ) [ ( "e" | "E" ) [ "+" | "-" ] digits ]
    string      := "'" { any but "'" } "'" | '"' { any but '"' } '"'   (* no escapes *)

Also refused when parsing: a comparison of two constants, true/false with an ordering operator,
the same name selected twice in one scope (no row has two values).

Meaning. The scope selects the rows (tests) it names; without one, every row. A comparison that
names a column is checked on *every* selected row, and each row that fails is reported with its
test label and value; one with only aggregates (``mean(goodput_mbps) >= 4``) compares one value
computed over the selected rows. Selecting no row fails, and so does a missing value (None, NaN,
an empty CSV cell): an expectation never passes for want of data. Values are read the same way
whether they come from a row, a CSV cell or the expectation: true/false (any case) are booleans,
text that reads as a number is a number (compared as floats; ``==`` within 1e-9 relative, since
CSV may round the last digit), anything else is a string. A boolean compared with a number asks
whether the number is non-zero (``mptcp_fallback == false``: no fallback counted).

There is no ``fallback``: a connection that fell back to TCP shows in two places that can
disagree -- ``mptcp_fallback`` (the client's MIB fallback counters; MPTCP tests only) and
``options.fallback`` (seen in the captures) -- and an expectation names the one it means; the
name alone is refused with both spelled out (:data:`AMBIGUOUS`).

``options.X`` and ``mib.X`` name an option-census count and an MPTCP MIB counter delta: by
default the columns ``options_X`` and ``mib_X`` (see :func:`column_of`); the caller's resolver
may look them up anywhere else.
"""

from __future__ import annotations

import difflib
import math
import re
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, NamedTuple

from .errors import SpecError

OPS = ("==", "!=", ">=", "<=", ">", "<")
FUNCTIONS: dict[str, Callable[[list[float]], float]] = {
    "min": min, "max": max, "mean": statistics.fmean, "median": statistics.median}
#: name prefixes that stand for a column with an underscore: options.X -> options_X
PREFIXED = ("options", "mib")
#: Names that could mean more than one column, each with how to write what it may mean. Never
#: resolved to one of them: the kernel's counters and the wire can disagree (a middlebox that
#: strips options one way), and which one an expectation checks is its writer's to say.
AMBIGUOUS: dict[str, tuple[tuple[str, str], ...]] = {
    "fallback": (("mptcp_fallback", "the client's MIB fallback counters, MPTCP tests only: "
                                    "protocol=mptcp: mptcp_fallback == 0"),
                 ("options.fallback", "a fallback seen in the captures: options.fallback == false")),
}

Resolver = Callable[[Mapping[str, Any], str], Any]


class ExpectError(SpecError, ValueError):
    """An expectation that does not parse. A SpecError (exit 2, one line) that is also a
    ValueError, so a pydantic validator can raise it and have the field path put in front."""

    def __init__(self, reason: str, col: int, where: str = ""):
        self.reason, self.col = reason, col
        super().__init__(f"{where}: col {col}: {reason}" if where else f"col {col}: {reason}")


# --------------------------------------------------------------------------- syntax

@dataclass(frozen=True)
class Name:
    path: str
    col: int

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True)
class Aggregate:
    func: str
    arg: Name

    def __str__(self) -> str:
        return f"{self.func}({self.arg})"


@dataclass(frozen=True)
class Const:
    value: float | bool | str


Operand = Name | Aggregate | Const


@dataclass(frozen=True)
class Expectation:
    index: int
    text: str
    scope: tuple[tuple[Name, Any], ...]
    left: Operand
    op: str
    right: Operand
    scope_text: str = ""  # the scope as written, for "no test matched protocol=mptcp"

    @property
    def per_row(self) -> bool:
        """A column (not only aggregates) is compared: every selected row is checked."""
        return isinstance(self.left, Name) or isinstance(self.right, Name)

    def name_nodes(self) -> list[Name]:
        sides = [o.arg if isinstance(o, Aggregate) else o for o in (self.left, self.right)]
        return [n for n, _ in self.scope] + [o for o in sides if isinstance(o, Name)]


class _Tok(NamedTuple):
    kind: str  # num, name, str, op, punct, end
    text: str
    col: int


_TOKEN = re.compile(r"""(?P<ws>\s+)
  | (?P<num>-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[^\W\d][\w-]*(?:\[\d+\])*(?:\.(?:[^\W\d][\w-]*|\*)(?:\[\d+\])*)*)
  | (?P<str>'[^']*'|"[^"]*")
  | (?P<op>==|!=|>=|<=|>|<)
  | (?P<punct>[=,:()])""", re.X)


def _tokens(text: str, where: str) -> list[_Tok]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            c = text[pos]
            why = f"unterminated string (no closing {c})" if c in "'\"" else f"unexpected character {c!r}"
            raise ExpectError(why, pos + 1, where)
        if m.lastgroup != "ws":
            out.append(_Tok(m.lastgroup or "", m.group(), pos + 1))
        pos = m.end()
    return out + [_Tok("end", "", len(text) + 1)]


def _got(t: _Tok) -> str:
    return "end of text" if t.kind == "end" else repr(t.text)


class _Parser:
    def __init__(self, text: str, where: str):
        self.where, self.toks, self.i = where, _tokens(text, where), 0

    def peek(self, ahead: int = 0) -> _Tok:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def take(self) -> _Tok:
        t = self.peek()
        self.i += 1
        return t

    def fail(self, why: str, t: _Tok | None = None) -> ExpectError:
        return ExpectError(why, (t or self.peek()).col, self.where)

    def is_punct(self, p: str, ahead: int = 0) -> bool:
        return self.peek(ahead)[:2] == ("punct", p)

    def expectation(self, index: int, text: str) -> Expectation:
        if self.peek().kind == "end":
            raise self.fail("empty expectation (write a comparison such as subflows >= 2)", _Tok("end", "", 1))
        scope = self.scope() if self.peek().kind == "name" and self.is_punct("=", 1) else ()
        scope_text = text[:self.toks[self.i - 1].col - 1].strip() if scope else ""
        first = self.peek()
        left = self.operand()
        t = self.take()
        if t.kind != "op":
            raise self.fail(f"expected a comparison operator ({', '.join(OPS)}), got {_got(t)}", t)
        right = self.operand()
        if self.peek().kind != "end":
            raise self.fail(f"unexpected {_got(self.peek())} after the comparison")
        if isinstance(left, Const) and isinstance(right, Const):
            raise self.fail("compares two constants: name a column, e.g. subflows >= 2", first)
        if t.text not in ("==", "!=") and any(isinstance(o, Const) and isinstance(o.value, bool)
                                             for o in (left, right)):
            raise self.fail("true and false can only be compared with == or !=", t)
        return Expectation(index, text.strip(), scope, left, t.text, right, scope_text)

    def scope(self) -> tuple[tuple[Name, Any], ...]:
        sels: list[tuple[Name, Any]] = []
        while True:
            t = self.take()
            if t.kind != "name" or not self.is_punct("="):
                raise self.fail(f"expected a selector such as protocol=mptcp, got {_got(t)}", t)
            self.take()
            v = self.take()
            if v.kind not in ("num", "str", "name"):
                hint = f" (to compare, write {v.text}=)" if v.text in (">", "<") else ""
                raise self.fail(f"expected a value after {t.text}=, got {_got(v)}{hint}", v)
            if any(n.path == t.text for n, _ in sels):
                raise self.fail(f"{t.text} is selected twice (no row has two values): "
                                "write one expectation per value", t)
            sels.append((Name(t.text, t.col), _literal(v)))
            if self.is_punct(","):
                self.take()
            elif self.is_punct(":"):
                self.take()
                return tuple(sels)
            else:
                hint = " (to compare, write ==)" if self.peek().kind == "end" and len(sels) == 1 else ""
                raise self.fail(f"expected ',' or ':' after the selector {t.text}={v.text}, "
                                f"got {_got(self.peek())}{hint}")

    def operand(self) -> Operand:
        t = self.take()
        if t.kind == "name" and self.is_punct("("):
            if t.text not in FUNCTIONS:
                raise self.fail(f"unknown function {t.text!r} (functions: {', '.join(FUNCTIONS)})", t)
            self.take()
            arg = self.take()
            if arg.kind != "name" or arg.text.lower() in ("true", "false"):
                raise self.fail(f"expected a column name inside {t.text}(...), got {_got(arg)}", arg)
            if not self.is_punct(")"):
                raise self.fail(f"expected ')' to close {t.text}(, got {_got(self.peek())}")
            self.take()
            return Aggregate(t.text, Name(arg.text, arg.col))
        if t.kind == "name" and t.text.lower() not in ("true", "false"):
            return Name(t.text, t.col)
        if t.kind in ("num", "str", "name"):
            return Const(_literal(t))
        raise self.fail(f"expected a column name, a number, a 'string', true or false, got {_got(t)}", t)


def _literal(t: _Tok) -> float | bool | str:
    if t.kind == "num":
        return float(t.text)
    if t.kind == "str":
        return t.text[1:-1]
    return {"true": True, "false": False}.get(t.text.lower(), t.text)


def parse(text: str, index: int = 0, where: str = "") -> Expectation:
    """One expectation; ExpectError (naming `where` and the column) if it does not parse."""
    if not isinstance(text, str):
        raise ExpectError(f"an expectation is a string, got {type(text).__name__}", 1, where)
    return _Parser(text, where).expectation(index, text)


def check(text: str) -> str:
    """The text if it parses (a pydantic AfterValidator for a spec's expect: items)."""
    parse(text)
    return text


def parse_all(texts: Iterable[str], field: str = "expect") -> list[Expectation]:
    """Every expectation of a list, or one SpecError with a line for each that does not parse."""
    out, problems = [], []
    for i, text in enumerate(texts):
        try:
            out.append(parse(text, i, f"{field}[{i}]"))
        except ExpectError as e:
            problems += e.problems
    if problems:
        raise SpecError(problems)
    return out


def names(expr: Expectation | str) -> set[str]:
    """The names an expectation reads (scope, columns, aggregates' arguments), as written."""
    return {n.path for n in (parse(expr) if isinstance(expr, str) else expr).name_nodes()}


def column_of(name: str) -> str:
    """The summary column a name stands for by default: options.X -> options_X, mib.X -> mib_X."""
    head, _, rest = name.partition(".")
    return f"{head}_{rest}" if head in PREFIXED and rest else name


def resolve_column(row: Mapping[str, Any], name: str) -> Any:
    """The default resolver: the column named, else column_of(name); KeyError if neither."""
    return row[name] if name in row else row[column_of(name)]


def unknown_names(exps: Iterable[Expectation], columns: Iterable[str], field: str = "expect") -> list[str]:
    """Problems, one per name that is not among the columns the run will produce -- found
    before the run rather than as a failed verdict after it."""
    cols = set(columns)
    problems = []
    for e in exps:
        for n in e.name_nodes():
            if n.path not in cols and column_of(n.path) not in cols:
                problems.append(f"{field}[{e.index}]: col {n.col}: {n.path!r} is not a column of the results"
                                + _suggestion(n.path, cols))
    return problems


def _suggestion(name: str, cols: set[str]) -> str:
    """' (did you mean ...?)': every reading of an AMBIGUOUS name the run has, with how to
    write it; else the closest column; else ''."""
    meant = [f"{alt} ({how})" for alt, how in AMBIGUOUS.get(name, ()) if column_of(alt) in cols]
    if not meant:
        meant = difflib.get_close_matches(column_of(name), sorted(cols), 1)
    return f" (did you mean {' or '.join(meant)}?)" if meant else ""


# --------------------------------------------------------------------------- values


class _Missing:
    def __repr__(self) -> str:
        return "no value"


MISSING: Any = _Missing()


def _read(v: Any) -> Any:
    """A value as compared: bool, float, str or MISSING (None, NaN, pandas NA, '')."""
    if v is None or v is MISSING:
        return MISSING
    if isinstance(v, bool) or getattr(getattr(v, "dtype", None), "kind", "") == "b":
        return bool(v)
    if isinstance(v, str):
        s = v.strip()
        if s.lower() in ("true", "false"):
            return s.lower() == "true"
        try:
            v = float(s)
        except ValueError:
            return s if s else MISSING
    try:
        f = float(v)
    except (TypeError, ValueError):
        return MISSING if type(v).__name__ == "NAType" else str(v)
    return MISSING if math.isnan(f) else f


def _compare(a: Any, op: str, b: Any) -> bool | str:
    """True/False, or why the two cannot be compared."""
    if isinstance(a, bool) != isinstance(b, bool):
        a, b = (bool(x) if isinstance(x, float) else x for x in (a, b))
    if type(a) is not type(b):
        return f"cannot compare {_fmt(a)} with {_fmt(b)}"
    if isinstance(a, bool) and op not in ("==", "!="):
        return "true and false cannot be ordered"
    if op in ("==", "!="):
        same = math.isclose(a, b, rel_tol=1e-9) if isinstance(a, float) else a == b
        return same == (op == "==")
    return {">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b}[op]


def _fmt(v: Any, near: Any = None) -> str:
    """Short, but never so short that a failing value looks like the threshold it missed."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        for p in (3, 6, 10):  # shown on the same side of the threshold as the value itself
            s = f"{v:.{p}g}" if abs(v) < 1e4 else f"{v:.{p - 2}f}"
            if not isinstance(near, float) or (float(s) > near, float(s) < near) == (v > near, v < near):
                return s
        return repr(v)
    return "no value" if v is MISSING else repr(v)


# --------------------------------------------------------------------------- verdicts


class Observed(NamedTuple):
    what: str    # a test's label, or an aggregate such as mean(goodput_mbps)
    value: Any   # as compared (bool, float, str; MISSING; a (left, right) pair when both vary)
    shown: str   # the value as printed


@dataclass(frozen=True)
class Verdict:
    index: int
    text: str
    passed: bool
    n_rows: int                          # rows the scope selected
    observed: tuple[Observed, ...] = ()  # per row: the failing rows; aggregates: their values
    reason: str | None = None            # why it failed when no value says it
    per_row: bool = True                 # each row checked (else one aggregate compared)

    def describe(self) -> str:
        """One console line: PASS subflows >= 2 (6 tests); FAIL ...: 002-tcp-r1 4.52, ..."""
        if not self.n_rows:
            return f"FAIL {self.text}: {self.reason}"
        k = f"{len(self.observed)} of {self.n_rows}" if self.per_row and not self.passed else str(self.n_rows)
        out = f"{'PASS' if self.passed else 'FAIL'} {self.text} ({k} test{'' if self.n_rows == 1 else 's'})"
        shown = [f"{o.what} {o.shown}" for o in self.observed[:8]]
        if len(self.observed) > 8:
            shown.append(f"and {len(self.observed) - 8} more")
        parts = ([self.reason] if self.reason else []) + ([", ".join(shown)] if shown else [])
        return f"{out}: {'; '.join(parts)}" if parts else out

    def row(self) -> dict[str, Any]:
        """A row of expect.csv (and an entry of metadata.json): plain str/int/bool values."""
        return {"index": self.index, "expectation": self.text, "passed": self.passed, "tests": self.n_rows,
                "observed": "; ".join(f"{o.what} {o.shown}" for o in self.observed), "reason": self.reason or ""}


def evaluate(exps: Iterable[Expectation], rows: list[Mapping[str, Any]], resolve: Resolver = resolve_column,
             label: str = "test") -> list[Verdict]:
    """One verdict per expectation over these rows (a run's summary rows). `resolve(row, name)`
    gives a name's value in a row, KeyError if the row has none; `label` names a row's test."""
    return [_verdict(e, rows, resolve, label) for e in exps]


def _value(resolve: Resolver, row: Mapping[str, Any], name: Name, absent: Any = MISSING) -> Any:
    """The name's value in the row as compared; `absent` if the row has no such name."""
    try:
        return _read(resolve(row, name.path))
    except KeyError:
        return absent


def _verdict(e: Expectation, rows: list[Mapping[str, Any]], resolve: Resolver, label: str) -> Verdict:
    def fail(n: int, why: str, observed: tuple[Observed, ...] = ()) -> Verdict:
        return Verdict(e.index, e.text, False, n, observed, why, e.per_row)

    absent = sorted({n.path for n in e.name_nodes()
                     if rows and all(_value(resolve, r, n, None) is None for r in rows)})
    if absent:
        return fail(0, f"no column {', '.join(absent)} in the results")
    sel = [r for r in rows if all(_compare(_value(resolve, r, n), "==", _read(v)) is True for n, v in e.scope)]
    if not sel:
        return fail(0, f"no test matched {e.scope_text}" if e.scope else "no test rows")
    labels = [str(r.get(label, f"row {i + 1}")) for i, r in enumerate(sel)]
    n = len(sel)

    agg: dict[Aggregate, float] = {}
    for a in (o for o in (e.left, e.right) if isinstance(o, Aggregate)):
        vals = [_value(resolve, r, a.arg) for r in sel]
        bad = [Observed(lab, v, _fmt(v)) for lab, v in zip(labels, vals) if not isinstance(v, (float, bool))]
        if bad:
            return fail(n, f"{a} needs a number in every test", tuple(bad))
        agg[a] = FUNCTIONS[a.func]([float(v) for v in vals])

    def side(o: Operand, r: Mapping[str, Any]) -> Any:
        if isinstance(o, Name):
            return _value(resolve, r, o)
        return agg[o] if isinstance(o, Aggregate) else _read(o.value)

    if not e.per_row:
        res = _compare(side(e.left, sel[0]), e.op, side(e.right, sel[0]))
        other = {a: side(e.right if a is e.left else e.left, sel[0]) for a in agg}
        obs = tuple(Observed(str(a), v, _fmt(v, other[a])) for a, v in agg.items())
        return Verdict(e.index, e.text, res is True, n, obs, res if isinstance(res, str) else None, False)

    failed = []
    for lab, r in zip(labels, sel):
        lv, rv = side(e.left, r), side(e.right, r)
        res = MISSING if MISSING in (lv, rv) else _compare(lv, e.op, rv)
        if res is True:
            continue
        if isinstance(e.left, Name) and isinstance(e.right, Name):
            value, shown = (lv, rv), f"{_fmt(lv)} vs {_fmt(rv)}"
        else:
            value, near = (lv, rv) if isinstance(e.left, Name) else (rv, lv)
            shown = _fmt(value, near)
        failed.append(Observed(lab, value, shown + (f" ({res})" if isinstance(res, str) else "")))
    return Verdict(e.index, e.text, not failed, n, tuple(failed))

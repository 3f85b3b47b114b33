"""The filter subset shared by Batch `ListJobs`/`ListTasks` and Logging `ListLogEntries`.

Batch filters follow AIP-160 and Logging filters the Logging query language; the part our
code, dsub, nextflow and Google's samples use is the same in both:

    labels.env="prod" AND (status.state=RUNNING OR status.state="QUEUED")
    logName=("projects/p/logs/batch_task_logs" OR "projects/p/logs/batch_agent_logs")
    labels.job_uid=abc-123 severity>=ERROR timestamp>="2024-05-01T00:00:00Z"
    NOT labels."batch.googleapis.com/job_id":* -resource.type="gce_instance"

Operators `= != < <= > >= : =~ !~`, `:*` (field present), `AND`, `OR`, `NOT`, `-`,
juxtaposition (implicit AND), parentheses, value lists `field=(a OR b)` and `log_id("x")`.
As in both languages, `OR` binds tighter than `AND`. Anything else (free-text search,
functions other than `log_id`) is refused with a clear message rather than half-matched:
an emulator that quietly matches differently from the real API hides bugs.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeAlias
from urllib.parse import quote


class FilterError(ValueError):
    """An unsupported or malformed filter (the server answers INVALID_ARGUMENT)."""


class Nanos(int):
    """A timestamp in nanoseconds since the epoch; literals compared with it are RFC 3339."""


class Severity(int):
    """A Logging severity; literals compared with it may be names (`ERROR`) or numbers."""


Value: TypeAlias = str | int | float | bool
Path: TypeAlias = tuple[str, ...]

SEVERITIES: dict[str, int] = {
    "DEFAULT": 0,
    "DEBUG": 100,
    "INFO": 200,
    "NOTICE": 300,
    "WARNING": 400,
    "ERROR": 500,
    "CRITICAL": 600,
    "ALERT": 700,
    "EMERGENCY": 800,
}

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?)?$"
)


def parse_rfc3339(text: str) -> Nanos:
    """RFC 3339 (nanosecond precision, `Z` or offset; a bare date is midnight UTC) -> Nanos."""
    m = _RFC3339.match(text.strip())
    if not m:
        raise FilterError(f"not an RFC 3339 timestamp: {text!r}")
    year, month, day, hour, minute, second, frac, _z, sign, oh, om = m.groups()
    try:
        base = dt.datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
            tzinfo=dt.UTC,
        )  # fmt: skip
    except ValueError as exc:
        raise FilterError(f"not an RFC 3339 timestamp: {text!r} ({exc})") from None
    seconds = int(base.timestamp())
    if sign:
        offset = int(oh) * 3600 + int(om) * 60
        seconds -= offset if sign == "+" else -offset
    nanos = int((frac or "").ljust(9, "0")) if frac else 0
    return Nanos(seconds * 1_000_000_000 + nanos)


def format_rfc3339(nanos: int) -> str:
    """Nanos -> `2024-05-01T12:00:00.123456789Z` (the shape the Google APIs print)."""
    seconds, frac = divmod(int(nanos), 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac:09d}Z" if frac else f"{stamp}Z"


# --- syntax tree -------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    path: Path
    op: str
    values: tuple[str, ...]  # more than one: `field=(a OR b)`, true if any matches


@dataclass(frozen=True)
class LogId:
    log_id: str


@dataclass(frozen=True)
class And:
    terms: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    terms: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    term: Node


Node: TypeAlias = Comparison | LogId | And | Or | Not


class Record(Protocol):
    def lookup(self, path: Path) -> Value | None:
        """The field's value, or None when the record has no such field."""


# --- tokenizer ---------------------------------------------------------------------------

_OPS = ("!=", ">=", "<=", "=~", "!~", "=", "<", ">", ":")
_KEYWORDS = {"AND", "OR", "NOT"}
_STOP = set(' \t\r\n()"=<>!:')


@dataclass(frozen=True)
class _Tok:
    kind: str  # "(", ")", "op", "str", "word", "kw", "-"
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "()":
            toks.append(_Tok(c, c, i))
            i += 1
        elif c == '"':
            j, out = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                    out.append({"n": "\n", "t": "\t"}.get(text[j], text[j]))
                else:
                    out.append(text[j])
                j += 1
            if j >= n:
                raise FilterError(f"unterminated string starting at position {i}")
            toks.append(_Tok("str", "".join(out), i))
            i = j + 1
        elif any(text.startswith(op, i) for op in _OPS):
            op = next(op for op in _OPS if text.startswith(op, i))
            toks.append(_Tok("op", op, i))
            i += len(op)
            # A bare value after an operator runs to whitespace or ')': timestamps and
            # resource names (`2024-05-01T00:00:00Z`, `projects/p/logs/x`) stay whole.
            while i < n and text[i] in " \t":
                i += 1
            if i < n and text[i] not in '"(':
                j = i
                while j < n and not text[j].isspace() and text[j] != ")":
                    j += 1
                toks.append(_Tok("word", text[i:j], i))
                i = j
        elif c == "-":
            toks.append(_Tok("-", c, i))
            i += 1
        else:
            j = i
            while j < n and text[j] not in _STOP:
                j += 1
            if j == i:
                raise FilterError(f"unexpected {c!r} at position {i}")
            word = text[i:j]
            toks.append(_Tok("kw" if word in _KEYWORDS else "word", word, i))
            i = j
    return toks


# --- parser ------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str, check_path: Callable[[Path], None] | None) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.check_path = check_path

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise FilterError("unexpected end of filter")
        self.i += 1
        return tok

    def parse(self) -> Node | None:
        if not self.toks:
            return None
        node = self.and_expr()
        tok = self.peek()
        if tok is not None:
            raise FilterError(f"unexpected {tok.text!r} at position {tok.pos}")
        return node

    def and_expr(self) -> Node:
        terms = [self.or_expr()]
        while (tok := self.peek()) is not None and tok.kind != ")":
            if tok.kind == "kw" and tok.text == "AND":
                self.i += 1
            terms.append(self.or_expr())
        return terms[0] if len(terms) == 1 else And(tuple(terms))

    def or_expr(self) -> Node:
        terms = [self.unary()]
        while (tok := self.peek()) is not None and tok.kind == "kw" and tok.text == "OR":
            self.i += 1
            terms.append(self.unary())
        return terms[0] if len(terms) == 1 else Or(tuple(terms))

    def unary(self) -> Node:
        tok = self.take()
        if (tok.kind == "kw" and tok.text == "NOT") or tok.kind == "-":
            return Not(self.unary())
        if tok.kind == "(":
            node = self.and_expr()
            close = self.peek()
            if close is None or close.kind != ")":
                raise FilterError(f"missing ')' for '(' at position {tok.pos}")
            self.i += 1
            return node
        if tok.kind == "word":
            return self.comparison(tok)
        if tok.kind == "str":
            raise FilterError(
                f"free-text search ({tok.text!r} at position {tok.pos}) is not supported; "
                'compare a field, e.g. textPayload:"..."'
            )
        raise FilterError(f"unexpected {tok.text!r} at position {tok.pos}")

    def comparison(self, first: _Tok) -> Node:
        path = self.path(first)
        tok = self.peek()
        if path == ("log_id",) and tok is not None and tok.kind == "(":
            self.i += 1
            arg = self.take()
            if arg.kind != "str" or self.take().kind != ")":
                raise FilterError(f'log_id takes one quoted name: log_id("...") at {first.pos}')
            return LogId(arg.text)
        if tok is None or tok.kind != "op":
            raise FilterError(
                f"free-text search ({first.text!r} at position {first.pos}) is not supported; "
                "expected FIELD OPERATOR VALUE"
            )
        self.i += 1
        values = self.values(tok)
        if tok.text in ("=~", "!~"):
            for value in values:
                try:
                    re.compile(value)
                except re.error as exc:
                    raise FilterError(f"bad regular expression {value!r}: {exc}") from None
        if self.check_path is not None:
            self.check_path(path)
        return Comparison(path, tok.text, values)

    def path(self, first: _Tok) -> Path:
        parts: list[str] = []
        text = first.text
        # `labels."batch.googleapis.com/job_id"`: the word ends at the quote.
        while True:
            if text.endswith("."):
                parts.extend(p for p in text[:-1].split(".") if p)
                nxt = self.peek()
                if nxt is None or nxt.kind != "str" or nxt.pos != first.pos + len(first.text):
                    raise FilterError(f"bad field name {first.text!r} at position {first.pos}")
                self.i += 1
                parts.append(nxt.text)
                after = self.peek()
                if after is not None and after.kind == "word" and after.text.startswith("."):
                    self.i += 1
                    first = _Tok("word", after.text[1:], after.pos + 1)
                    text = first.text
                    continue
                break
            parts.extend(text.split("."))
            break
        if any(not p for p in parts) or not re.match(r"^[A-Za-z_]", parts[0]):
            raise FilterError(f"bad field name {first.text!r} at position {first.pos}")
        return tuple(parts)

    def values(self, op: _Tok) -> tuple[str, ...]:
        tok = self.peek()
        if tok is None:
            raise FilterError(f"missing value after {op.text!r} at position {op.pos}")
        self.i += 1
        if tok.kind in ("str", "word"):
            return (tok.text,)
        if tok.kind == "(":
            out = [self._value()]
            while (nxt := self.peek()) is not None and nxt.kind == "kw" and nxt.text == "OR":
                self.i += 1
                out.append(self._value())
            if self.take().kind != ")":
                raise FilterError(f"value list after {op.text!r} at {op.pos}: only (a OR b ...)")
            return tuple(out)
        raise FilterError(f"missing value after {op.text!r} at position {op.pos}")

    def _value(self) -> str:
        tok = self.take()
        if tok.kind in ("str", "word"):
            return tok.text
        raise FilterError(f"unexpected {tok.text!r} at position {tok.pos} in a value list")


def parse(text: str, check_path: Callable[[Path], None] | None = None) -> Node | None:
    """Parse a filter; None for an empty one. `check_path` raises FilterError for unknown fields."""
    if len(text) > 20_000:
        raise FilterError("filter longer than 20,000 characters")
    return _Parser(text, check_path).parse()


# --- evaluation --------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _coerce(kind: str, literal: str) -> Value:
    if kind == "nanos":
        return parse_rfc3339(literal)
    if kind == "severity":
        if literal.upper() in SEVERITIES:
            return SEVERITIES[literal.upper()]
        try:
            return int(literal)
        except ValueError:
            raise FilterError(f"unknown severity {literal!r}") from None
    if kind == "bool":
        if literal.lower() not in ("true", "false"):
            raise FilterError(f"not a boolean: {literal!r}")
        return literal.lower() == "true"
    try:
        return float(literal)
    except ValueError:
        raise FilterError(f"not a number: {literal!r}") from None


def _kind(value: Value) -> str:
    if isinstance(value, Nanos):
        return "nanos"
    if isinstance(value, Severity):
        return "severity"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "str"


def _compare(actual: Value, op: str, literal: str) -> bool:
    if op == ":":
        if literal == "*":
            return True
        return literal.lower() in str(actual).lower()
    if op in ("=~", "!~"):
        found = re.search(literal, str(actual)) is not None
        return found if op == "=~" else not found
    kind = _kind(actual)
    rhs: Value = literal if kind == "str" else _coerce(kind, literal)
    lhs: Value = actual
    if op == "=":
        return lhs == rhs
    if op == "!=":
        return lhs != rhs
    if isinstance(lhs, str) != isinstance(rhs, str):
        return False
    if op == "<":
        return lhs < rhs  # type: ignore[operator]
    if op == "<=":
        return lhs <= rhs  # type: ignore[operator]
    if op == ">":
        return lhs > rhs  # type: ignore[operator]
    return lhs >= rhs  # type: ignore[operator]


def matches(node: Node | None, record: Record) -> bool:
    """Evaluate a parsed filter; a comparison on a field the record lacks is false."""
    if node is None:
        return True
    if isinstance(node, Comparison):
        actual = record.lookup(node.path)
        if actual is None:
            return False
        if node.op in ("!=", "!~"):
            return all(_compare(actual, node.op, v) for v in node.values)
        return any(_compare(actual, node.op, v) for v in node.values)
    if isinstance(node, And):
        return all(matches(t, record) for t in node.terms)
    if isinstance(node, Or):
        return any(matches(t, record) for t in node.terms)
    if isinstance(node, Not):
        return not matches(node.term, record)
    name = record.lookup(("logName",))
    return isinstance(name, str) and name.endswith("/logs/" + quote(node.log_id, safe=""))


def check_literals(node: Node | None, kinds: Mapping[str, str]) -> None:
    """Coerce literals now (`timestamp` -> "nanos", `severity` -> "severity"), so a bad one is
    refused even when no record would be compared with it."""
    if node is None or isinstance(node, LogId):
        return
    if isinstance(node, And | Or):
        for term in node.terms:
            check_literals(term, kinds)
    elif isinstance(node, Not):
        check_literals(node.term, kinds)
    elif node.path[0] in kinds and node.op not in (":", "=~", "!~"):
        for value in node.values:
            _coerce(kinds[node.path[0]], value)


def required_values(node: Node | None, path: Path) -> set[str] | None:
    """Values `path` must equal for `node` to match (from top-level AND terms), or None.

    Lets the stores use an index (`labels.job_uid="..."`) instead of scanning every record.
    """
    if node is None:
        return None
    terms: Iterable[Node] = node.terms if isinstance(node, And) else (node,)
    for term in terms:
        if isinstance(term, Comparison) and term.path == path and term.op == "=":
            return set(term.values)
    return None

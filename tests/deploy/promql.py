"""Just enough PromQL reading to list the metrics and labels an expression names.

Not a parser: a careful scan that finds selectors (``name{label="v", ...}``), grouping clauses
(``by``/``without``/``on``/``ignoring``/``group_left``/``group_right``) and the bare metric names left
once ranges, offsets, numbers, keywords and function calls are taken out. Enough for the rules and
the dashboard lmsbridge ships, and strict: anything it cannot place is reported as a metric name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SELECTOR = re.compile(rf"(?P<name>{_IDENT})?\s*\{{(?P<matchers>[^{{}}]*)\}}")
_MATCHER = re.compile(r'\s*(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>(?:[^"\\]|\\.)*)"\s*,?')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\((?P<labels>[^()]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-z]+")
_NUMBER = re.compile(r"(?<![a-zA-Z0-9_:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_NAME = re.compile(rf"(?P<name>{_IDENT})(?P<call>\s*\()?")
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "inf",
    "nan",
}


@dataclass(frozen=True)
class Matcher:
    """One label matcher of a selector."""

    label: str
    op: str
    value: str


@dataclass
class Expression:
    """The metrics one expression selects, with their matchers, and the labels it groups by."""

    text: str
    selectors: list[tuple[str, list[Matcher]]] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)

    @property
    def metrics(self) -> set[str]:
        """Every metric name the expression reads."""
        return {name for name, _ in self.selectors}


def parse(text: str) -> Expression:
    """Read the metric names, matchers and grouping labels out of one PromQL expression."""
    expr = Expression(text)
    rest = text

    def selector(match: re.Match[str]) -> str:
        body = match.group("matchers")
        matchers = [Matcher(m.group("label"), m.group("op"), m.group("value")) for m in _MATCHER.finditer(body)]
        if _MATCHER.sub("", body).strip():
            raise ValueError(f"cannot read the label matchers {{{body}}} in {text!r}")
        name = match.group("name")
        if name is None:
            raise ValueError(f"a selector without a metric name in {text!r}")
        expr.selectors.append((name, matchers))
        return " __selected__ "

    rest = _SELECTOR.sub(selector, rest)
    for match in _GROUPING.finditer(rest):
        expr.grouping |= {label.strip() for label in match.group("labels").split(",") if label.strip()}
    rest = _GROUPING.sub(" ", rest)
    rest = _RANGE.sub(" ", rest)
    rest = _OFFSET.sub(" ", rest)
    rest = _NUMBER.sub(" ", rest)
    for match in _NAME.finditer(rest):
        name = match.group("name")
        if match.group("call") or name in _KEYWORDS or name == "__selected__":
            continue
        expr.selectors.append((name, []))
    return expr

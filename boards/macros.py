"""Turn a panel's SQL into what ClickHouse receives, the way Grafana and its ClickHouse plugin do.

Two steps, as in Grafana 11.6 with the ClickHouse plugin 4.11.2:

1. Grafana's frontend interpolates the dashboard variables (``$name``, ``${name}``, ``${name:format}``).
   The rules below follow @grafana/scenes 6.5.3 (the version Grafana 11.6 ships):
   ``src/variables/interpolation/sceneInterpolator.ts`` (the pattern, unknown names left as they are),
   ``src/variables/interpolation/formatRegistry.ts`` (the formats), and
   ``src/variables/variants/MultiValueVariable.ts`` (``getValue`` and ``CustomAllValue``: a custom "All"
   value is inserted as is, whatever the format). A variable written without a format takes the plugin's
   default format (grafana/clickhouse-datasource v4.11.2 ``src/data/CHDatasource.ts``, ``format``).
   ``tests/boards/test_boards_grafana.py`` runs Grafana's own code under Node and requires the same SQL.
2. The plugin's backend expands its macros: grafana/clickhouse-datasource v4.11.2
   ``pkg/macros/macros.go`` (one function a macro, named below), matched by grafana/sqlds v5.0.1
   ``macros.go``. That Go code cannot run here (its module is not served), so this is the emulation.

The offline report and the tests render every panel through :func:`render`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# @grafana/scenes src/variables/constants.ts
ALL = "$__all"
ALL_TEXT = "All"
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}", re.ASCII)
_MACRO = re.compile(r"\$__(\w+)(?:\(([^()]*)\))?")


class MacroError(ValueError):
    """A macro or variable the SQL uses but that cannot be expanded (Grafana would fail the panel too)."""


@dataclass(frozen=True)
class Variable:
    """A dashboard variable at one state, as far as interpolation reads it.

    ``value`` is ``ALL`` for the "All" option. ``options`` are the values "All" stands for when the variable
    has no custom ``all_value``.
    """

    value: str | tuple[str, ...]
    text: str | tuple[str, ...] | None = None
    all_value: str | None = None
    options: tuple[str, ...] = ()

    def is_all(self) -> bool:
        return self.value == ALL or (isinstance(self.value, tuple) and bool(self.value) and self.value[0] == ALL)


def _quoted(value: str, escapes: Mapping[str, str], quote: str) -> str:
    return quote + "".join(escapes.get(c, c) for c in value) + quote


_SQLSTRING = {"'": "''", '"': '\\"'}  # SQL_ESCAPE_MAP; a backslash is left as it is


def sqlstring(value: str) -> str:
    """Grafana's ``:sqlstring`` format of one value."""
    return _quoted(value, _SQLSTRING, "'")


def _format(value: str | Sequence[str], fmt: str | None, text: str) -> str:
    """formatRegistry.ts, for the formats SQL panels use; None is the ClickHouse plugin's default."""
    many = not isinstance(value, str)
    items = list(value) if many else [value]
    if fmt is None:  # CHDatasource.format
        return "'" + "','".join(items) + "'" if many else items[0]
    if fmt == "sqlstring":
        return ",".join(sqlstring(v) for v in items)
    if fmt == "singlequote":
        return ",".join(_quoted(v, {"'": "\\'"}, "'") for v in items)
    if fmt == "doublequote":
        return ",".join(_quoted(v, {'"': '\\"'}, '"') for v in items)
    if fmt in ("raw", "csv"):
        return ",".join(items)  # String(array) and array.join(',') agree
    if fmt == "pipe":
        return "|".join(items)
    if fmt == "text":
        return text
    raise MacroError(f"variable format :{fmt} is not supported here")


def _text(variable: Variable) -> str:
    """MultiValueVariable.getValueText."""
    if variable.is_all():
        return ALL_TEXT
    text = variable.text if variable.text is not None else variable.value
    return " + ".join(text) if isinstance(text, tuple) else str(text)


def interpolate(sql: str, variables: Mapping[str, Variable | str]) -> str:
    """Grafana's variable interpolation; a plain string stands for a single selected value."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        if match.group(5):
            raise MacroError(f"field paths (${{{name}.{match.group(5)}}}) are not supported here")
        if name not in variables:
            return match.group(0)  # Grafana leaves what it does not know, the plugin's macros among them
        variable = variables[name]
        if isinstance(variable, str):
            variable = Variable(variable)
        if variable.is_all():
            if variable.all_value is not None:  # CustomAllValue.formatter
                if fmt == "text":
                    return ALL_TEXT
                if fmt in ("percentencode", "queryparam"):
                    raise MacroError(f"variable format :{fmt} is not supported here")
                return variable.all_value
            return _format(variable.options, fmt, _text(variable))
        return _format(variable.value, fmt, _text(variable))

    return _VARIABLE.sub(replace, sql)


def _seconds(at: dt.datetime) -> int:
    return int(at.timestamp())


def _millis(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)


def expand_macros(sql: str, time_from: dt.datetime, time_to: dt.datetime, interval_s: float) -> str:
    """The plugin's macros; times are aware datetimes (the plugin's backend works in UTC)."""
    frm, to = _seconds(time_from), _seconds(time_to)
    seconds = max(int(interval_s), 1)

    def date(at: dt.datetime) -> str:  # timeToDate
        return f"toDate('{at.astimezone(dt.UTC):%Y-%m-%d}')"

    def one(name: str, args: list[str]) -> str:
        if name == "fromTime":  # FromTimeFilter
            return f"toDateTime({frm})"
        if name == "toTime":  # ToTimeFilter
            return f"toDateTime({to})"
        if name == "fromTime_ms":  # FromTimeFilterMs
            return f"fromUnixTimestamp64Milli({_millis(time_from)})"
        if name == "toTime_ms":  # ToTimeFilterMs
            return f"fromUnixTimestamp64Milli({_millis(time_to)})"
        if name == "interval_s":  # IntervalSeconds: max(interval, 1 s), whole seconds
            return str(seconds)
        if name in ("dateTimeFilter", "dt"):  # DateTimeFilter
            if len(args) != 2:
                raise MacroError(f"$__{name} expects 2 arguments, got {len(args)}")
            day, at = args
            return (
                f"({day} >= {date(time_from)} AND {day} <= {date(time_to)}) AND "
                f"({at} >= toDateTime({frm}) AND {at} <= toDateTime({to}))"
            )
        if name not in ("timeFilter", "timeFilter_ms", "dateFilter", "timeInterval", "timeInterval_ms"):
            raise MacroError(f"macro $__{name} is not one the ClickHouse plugin knows")
        if len(args) != 1:
            raise MacroError(f"$__{name} expects 1 argument, got {len(args)}")
        column = args[0]
        if name == "timeFilter":  # TimeFilter
            return f"{column} >= toDateTime({frm}) AND {column} <= toDateTime({to})"
        if name == "timeFilter_ms":  # TimeFilterMs
            return (
                f"{column} >= fromUnixTimestamp64Milli({_millis(time_from)}) AND "
                f"{column} <= fromUnixTimestamp64Milli({_millis(time_to)})"
            )
        if name == "dateFilter":  # DateFilter
            return f"{column} >= {date(time_from)} AND {column} <= {date(time_to)}"
        if name == "timeInterval":  # TimeInterval
            return f"toStartOfInterval(toDateTime({column}), INTERVAL {seconds} second)"
        millis = max(int(interval_s * 1000), 1)  # TimeIntervalMs
        return f"toStartOfInterval(toDateTime64({column}, 3), INTERVAL {millis} millisecond)"

    def replace(match: re.Match[str]) -> str:
        args = [a.strip() for a in match.group(2).split(",")] if match.group(2) is not None else []
        return one(match.group(1), args)

    return _MACRO.sub(replace, sql)


def render(
    sql: str,
    variables: Mapping[str, Variable | str],
    time_from: dt.datetime,
    time_to: dt.datetime,
    interval_s: float = 3600,
) -> str:
    """Variables, then macros: the SQL Grafana sends for a panel."""
    if time_from.tzinfo is None or time_to.tzinfo is None:
        raise ValueError("time range bounds must be timezone-aware")
    for match in _VARIABLE.finditer(sql):
        name = match.group(1) or match.group(2) or match.group(4)
        if name not in variables and not name.startswith("__"):
            raise MacroError(f"variable ${name} has no value")
    return expand_macros(interpolate(sql, variables), time_from, time_to, interval_s)

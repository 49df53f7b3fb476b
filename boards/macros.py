"""Turn a panel's SQL into what ClickHouse receives, the way Grafana and its ClickHouse plugin do.

Grafana first interpolates the dashboard variables (``${name}``, ``${name:sqlstring}``, ``$name``),
then the plugin's backend expands its macros (``$__timeFilter(col)``, ``$__fromTime``, ...), as in
grafana/clickhouse-datasource ``pkg/macros/macros.go``. The tests run every panel through this and
the offline report renders from it, so both see the SQL Grafana would send.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping

_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(?!__)(\w+)")
_MACRO = re.compile(r"\$__(\w+)(?:\(([^()]*)\))?")


class MacroError(ValueError):
    """A macro or variable the SQL uses but that cannot be expanded (Grafana would fail the panel too)."""


def sqlstring(value: str) -> str:
    """Grafana's ``:sqlstring`` format: single quotes, embedded quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def interpolate(sql: str, variables: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        if name not in variables:
            raise MacroError(f"variable ${name} has no value")
        value = variables[name]
        fmt = match.group(2)
        if fmt in (None, "raw"):
            return value
        if fmt == "sqlstring":
            return sqlstring(value)
        raise MacroError(f"variable format :{fmt} is not supported here")

    return _VARIABLE.sub(replace, sql)


def _seconds(at: dt.datetime) -> int:
    return int(at.timestamp())


def _millis(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)


def expand_macros(sql: str, time_from: dt.datetime, time_to: dt.datetime, interval_s: float) -> str:
    """The plugin's macros; times are aware datetimes (the plugin works in UTC)."""
    date = "toDate('{:%Y-%m-%d}')"
    seconds = max(int(interval_s), 1)

    def one(name: str, args: list[str]) -> str:
        frm, to = _seconds(time_from), _seconds(time_to)
        if name == "fromTime":
            return f"toDateTime({frm})"
        if name == "toTime":
            return f"toDateTime({to})"
        if name == "fromTime_ms":
            return f"fromUnixTimestamp64Milli({_millis(time_from)})"
        if name == "toTime_ms":
            return f"fromUnixTimestamp64Milli({_millis(time_to)})"
        if name == "interval_s":
            return str(seconds)
        if len(args) != 1 and name != "dateTimeFilter":
            raise MacroError(f"$__{name} expects 1 argument, got {len(args)}")
        column = args[0] if args else ""
        if name == "timeFilter":
            return f"{column} >= toDateTime({frm}) AND {column} <= toDateTime({to})"
        if name == "timeFilter_ms":
            return (
                f"{column} >= fromUnixTimestamp64Milli({_millis(time_from)}) AND "
                f"{column} <= fromUnixTimestamp64Milli({_millis(time_to)})"
            )
        if name == "dateFilter":
            utc_from, utc_to = time_from.astimezone(dt.UTC), time_to.astimezone(dt.UTC)
            return f"{column} >= {date.format(utc_from)} AND {column} <= {date.format(utc_to)}"
        if name == "timeInterval":
            return f"toStartOfInterval(toDateTime({column}), INTERVAL {seconds} second)"
        raise MacroError(f"macro $__{name} is not one the ClickHouse plugin knows")

    def replace(match: re.Match[str]) -> str:
        args = [a.strip() for a in match.group(2).split(",")] if match.group(2) is not None else []
        return one(match.group(1), args)

    return _MACRO.sub(replace, sql)


def render(
    sql: str,
    variables: Mapping[str, str],
    time_from: dt.datetime,
    time_to: dt.datetime,
    interval_s: float = 3600,
) -> str:
    """Variables, then macros: the SQL Grafana sends for a panel."""
    if time_from.tzinfo is None or time_to.tzinfo is None:
        raise ValueError("time range bounds must be timezone-aware")
    return expand_macros(interpolate(sql, variables), time_from, time_to, interval_s)

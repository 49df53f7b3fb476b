"""Run a panel's query as Grafana would, straight against ClickHouse (the report and the tests)."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from boards.macros import Variable, render
from boards.queries import Kind, PanelQuery
from sinks.clickhouse.client import ClickHouseStore

_WRAPPERS = re.compile(r"^(?:Nullable|LowCardinality)\((.*)\)$")


def column_kind(type_name: str) -> Kind | None:
    """How a panel reads a ClickHouse column type; None for a type no panel here expects."""
    name = type_name
    while match := _WRAPPERS.match(name):
        name = match.group(1)
    if name.startswith("DateTime"):
        return "time"
    if name.startswith("Date"):
        return "date"
    if name.startswith(("Int", "UInt", "Float", "Decimal")):
        return "number"
    if name.startswith(("String", "FixedString", "Enum")):
        return "string"
    if name.startswith("Array(") and column_kind(name[6:-1]) == "string":
        return "strings"
    return None


@dataclass(frozen=True)
class PanelResult:
    sql: str
    columns: list[str]
    kinds: list[Kind | None]
    rows: list[tuple[Any, ...]]
    seconds: float

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def run_panel(
    store: ClickHouseStore,
    query: PanelQuery,
    variables: Mapping[str, Variable | str],
    time_from: dt.datetime,
    time_to: dt.datetime,
    interval_s: float | None = None,
) -> PanelResult:
    """The panel's SQL with variables and macros expanded, executed; with the result's column kinds.

    ``interval_s`` defaults to what Grafana picks for about 1,000 points over the range.
    """
    if interval_s is None:
        interval_s = max((time_to - time_from).total_seconds() / 1000, 1)
    return run_sql(store, render(query.sql, variables, time_from, time_to, interval_s))


def run_sql(store: ClickHouseStore, sql: str) -> PanelResult:
    """Execute SQL ready for ClickHouse; an empty result still names its columns (as Grafana's frame does)."""
    started = time.perf_counter()
    result = store.call(store.client.query, sql)
    seconds = time.perf_counter() - started
    names, types = list(result.column_names), [t.name for t in result.column_types]
    if not names:  # no block came back: ask ClickHouse what the columns would have been
        described = store.call(store.client.query, f"DESCRIBE TABLE ({sql})").result_rows
        names, types = [row[0] for row in described], [row[1] for row in described]
    return PanelResult(sql, names, [column_kind(t) for t in types], list(result.result_rows), seconds)

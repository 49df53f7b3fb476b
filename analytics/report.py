"""The adoption table for a period: each segment's rate at the period's end against the period before.

No comparison against nothing: the previous figure, and the change, are None (null in JSON, "—" in
tables) when the period before has no data for the segment, that is when

- the segment had no eligible business on the previous period's last day (a sector or unit born in
  this period, or one whose businesses only registered since), or
- the feed held no invoice at all, of any seller, in the 7 days that the previous 7-day rate measures
  (the days before the first ingested invoice, such as the half-year before the first one).

A segment with eligible businesses of which none issued while the feed ran has a real rate of 0 %,
and is compared.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from analytics.adoption import SegmentDay, adoption, load_units
from base.tables import NO_COMPARISON, Field, FittedTable
from sinks.clickhouse.client import ClickHouseStore

SORT_KEYS = ("rate", "change", "eligible", "invoices", "segment")
WINDOW_DAYS = 7  # the trailing window of adoption_7d (analytics/adoption.py)
FEED_SQL = """
SELECT sum(invoices) FROM segment_daily WHERE issue_date BETWEEN {first:Date} AND {last:Date}
"""


@dataclass(frozen=True)
class ReportRow:
    """One segment; ``previous_adoption_7d`` and ``change`` are None where there is nothing to compare."""

    sector: str
    unit: str
    unit_name: str
    eligible: int
    active_7d: int
    adoption_7d: float
    adoption_28d: float
    previous_adoption_7d: float | None
    change: float | None
    invoices: int
    revenue_vnd: int
    vat_vnd: int
    non_cash_share: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def period_report(
    store: ClickHouseStore,
    start: dt.date,
    end: dt.date,
    *,
    level: str = "district",
    sectors: list[str] | None = None,
    units: list[str] | None = None,
    sort: str = "rate",
) -> list[ReportRow]:
    """One row per segment (with '*' roll-ups): volumes summed over the period, rates at its end.

    Sorted by ``change``, the segments without a comparison come last.
    """
    if end < start:
        raise ValueError(f"the period ends ({end}) before it starts ({start})")
    if sort not in SORT_KEYS:
        raise ValueError(f"sort by one of {', '.join(SORT_KEYS)}, not {sort!r}")
    length = (end - start).days + 1
    previous_end = start - dt.timedelta(days=1)
    compared = feed_had_invoices(store, previous_end - dt.timedelta(days=WINDOW_DAYS - 1), previous_end)
    hierarchy = load_units(store)
    days = adoption(
        store, start - dt.timedelta(days=length), end, level=level, sectors=sectors, units=units, hierarchy=hierarchy
    )
    at_end: dict[tuple[str, str], SegmentDay] = {}
    at_previous_end: dict[tuple[str, str], SegmentDay] = {}
    totals: dict[tuple[str, str], list[int]] = {}
    for row in days:
        key = (row.sector, row.unit)
        if row.day == end:
            at_end[key] = row
        elif row.day == previous_end:
            at_previous_end[key] = row
        if start <= row.day <= end:
            total = totals.setdefault(key, [0, 0, 0, 0])
            total[0] += row.invoices
            total[1] += row.revenue_vnd
            total[2] += row.vat_vnd
            total[3] += round(row.non_cash_share * row.invoices)
    rows = []
    for key, last in at_end.items():
        before = at_previous_end.get(key) if compared else None
        invoices, revenue, vat, non_cash = totals.get(key, [0, 0, 0, 0])
        previous = before.adoption_7d if before is not None and before.eligible else None
        rows.append(
            ReportRow(
                sector=key[0], unit=key[1], unit_name="Toàn tỉnh" if key[1] == "*" else hierarchy.name(key[1]),
                eligible=last.eligible, active_7d=last.active_7d, adoption_7d=last.adoption_7d,
                adoption_28d=last.adoption_28d, previous_adoption_7d=previous,
                change=None if previous is None else last.adoption_7d - previous,
                invoices=invoices, revenue_vnd=revenue, vat_vnd=vat,
                non_cash_share=non_cash / invoices if invoices else 0.0,
            )
        )  # fmt: skip
    order = {
        "rate": lambda r: (r.adoption_7d, r.sector, r.unit),
        "change": lambda r: (r.change is None, r.change or 0.0, r.sector, r.unit),
        "eligible": lambda r: (-r.eligible, r.sector, r.unit),
        "invoices": lambda r: (-r.invoices, r.sector, r.unit),
        "segment": lambda r: (r.sector, r.unit),
    }[sort]
    return sorted(rows, key=order)


def feed_had_invoices(store: ClickHouseStore, first: dt.date, last: dt.date) -> bool:
    """Whether any invoice, of any seller, was ingested for a day in ``first``..``last``."""
    rows = store.query_rows(FEED_SQL, {"first": first, "last": last})
    return bool(rows and rows[0][0])


def format_change(change: float | None) -> str:
    """A change of the rate in percentage points; "—" when there is nothing to compare with."""
    return NO_COMPARISON if change is None else f"{change * 100:+.1f}"


def adoption_table(
    title: str, rows: list[ReportRow], *, rate_format: str = ".1%", with_non_cash: bool = True
) -> FittedTable:
    """The report's rows for the terminal: short headers, unit names wrapped, "—" for no comparison."""
    fields = [
        Field("VSIC"), Field("unit", wrap=True), Field("eligible", "right"), Field("active", "right"),
        Field("rate", "right"), Field("Δ pt", "right"), Field("invoices", "right"),
    ]  # fmt: skip
    if with_non_cash:
        fields.append(Field("non-cash", "right"))
    table = FittedTable(title, fields)
    for row in rows:
        cells = [
            "all" if row.sector == "*" else row.sector, row.unit_name, f"{row.eligible:,}", f"{row.active_7d:,}",
            format(row.adoption_7d, rate_format), format_change(row.change), f"{row.invoices:,}",
        ]  # fmt: skip
        if with_non_cash:
            cells.append(f"{row.non_cash_share:.0%}")
        table.add_row(*cells)
    return table

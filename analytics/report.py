"""The adoption table for a period: each segment's rate at the period's end against the period before."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from analytics.adoption import SegmentDay, adoption, load_units
from sinks.clickhouse.client import ClickHouseStore

SORT_KEYS = ("rate", "change", "eligible", "invoices", "segment")


@dataclass(frozen=True)
class ReportRow:
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
    """One row per segment (with '*' roll-ups): volumes summed over the period, rates at its end."""
    if end < start:
        raise ValueError(f"the period ends ({end}) before it starts ({start})")
    if sort not in SORT_KEYS:
        raise ValueError(f"sort by one of {', '.join(SORT_KEYS)}, not {sort!r}")
    length = (end - start).days + 1
    previous_end = start - dt.timedelta(days=1)
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
        before = at_previous_end.get(key)
        invoices, revenue, vat, non_cash = totals.get(key, [0, 0, 0, 0])
        previous = before.adoption_7d if before else None
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
        "change": lambda r: (r.change if r.change is not None else 0.0, r.sector, r.unit),
        "eligible": lambda r: (-r.eligible, r.sector, r.unit),
        "invoices": lambda r: (-r.invoices, r.sector, r.unit),
        "segment": lambda r: (r.sector, r.unit),
    }[sort]
    return sorted(rows, key=order)

"""Adoption per sector × administrative unit × local day, with roll-ups, from ClickHouse.

Definitions (docs/domain.md): *eligible* = registered, ACTIVE, obliged, per the
registry as of that day (the newest version with ``valid_from`` <= day); *active adopter* =
eligible and issued at least one cash-register invoice in the trailing 7 (and 28) days
(``active_1d``: on that day itself, the fast signal of the adoption-drop rule);
*adoption rate* = active / eligible. The cost grows with sellers × days asked for (registry
versions and ``seller_daily``), never with the number of invoices.

Rows with ``vsic_code = '*'`` are all sectors, ``unit_code = '*'`` the whole province.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from analytics.units import UnitHierarchy
from sinks.clickhouse.client import ClickHouseStore

ADOPTION_SQL = """
WITH
    {start:Date} AS day_from,
    {end:Date} AS day_to,
    versions AS (
        SELECT seller_id, valid_from,
               argMax(vsic_code, kafka_offset) AS vsic_code,
               argMax(admin_unit_code, kafka_offset) AS admin_unit_code,
               argMax(obliged, kafka_offset) AS obliged,
               argMax(status, kafka_offset) AS status
        FROM registry_history
        WHERE valid_from <= day_to
        GROUP BY seller_id, valid_from
    ),
    intervals AS (
        SELECT *, leadInFrame(valid_from, 1, toDate('2149-06-06')) OVER (
                   PARTITION BY seller_id ORDER BY valid_from
                   ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) AS valid_to
        FROM versions
    ),
    eligible AS (
        SELECT seller_id, vsic_code,
               transform(admin_unit_code, {unit_codes:Array(String)}, {unit_targets:Array(String)}, '') AS unit_code,
               arrayJoin(arrayMap(i -> greatest(valid_from, day_from) + i,
                   range(toUInt32(greatest(0, dateDiff('day', greatest(valid_from, day_from),
                                                        least(valid_to, day_to + 1))))))) AS day
        FROM intervals
        WHERE obliged = 1 AND status = 'ACTIVE' AND valid_to > day_from
    ),
    activity AS (
        SELECT seller_id, groupUniqArray(issue_date) AS days
        FROM seller_daily
        WHERE issue_date BETWEEN day_from - 27 AND day_to AND registered = 1
        GROUP BY seller_id
    ),
    adoption AS (
        SELECT day,
               if(grouping(vsic_code) = 1, '*', vsic_code) AS sector,
               if(grouping(unit_code) = 1, '*', unit_code) AS unit,
               count() AS eligible,
               countIf(has(days, day)) AS active_1d,
               countIf(arrayExists(x -> x <= day AND x > day - 7, days)) AS active_7d,
               countIf(arrayExists(x -> x <= day AND x > day - 28, days)) AS active_28d
        FROM eligible LEFT JOIN activity USING (seller_id)
        WHERE unit_code != ''
        GROUP BY GROUPING SETS ((day, vsic_code, unit_code), (day, vsic_code), (day, unit_code), (day))
    ),
    volume AS (
        SELECT issue_date AS day,
               if(grouping(vsic_code) = 1, '*', vsic_code) AS sector,
               if(grouping(unit_code) = 1, '*', unit_code) AS unit,
               sum(invoices) AS invoices, sum(amount_vnd) AS revenue_vnd, sum(vat_amount_vnd) AS vat_vnd,
               sum(non_cash_invoices) AS non_cash_invoices, uniqExactMerge(issuers) AS issuers
        FROM (
            SELECT issue_date, vsic_code, invoices, amount_vnd, vat_amount_vnd, non_cash_invoices, issuers,
                   transform(admin_unit_code, {unit_codes:Array(String)}, {unit_targets:Array(String)}, '') AS unit_code
            FROM segment_daily
            WHERE issue_date BETWEEN day_from AND day_to AND registered = 1
        )
        WHERE unit_code != ''
        GROUP BY GROUPING SETS ((issue_date, vsic_code, unit_code), (issue_date, vsic_code),
                                (issue_date, unit_code), (issue_date))
    )
SELECT a.day, a.sector, a.unit, a.eligible, a.active_1d, a.active_7d, a.active_28d,
       a.active_7d / a.eligible AS adoption_7d, a.active_28d / a.eligible AS adoption_28d,
       v.invoices, v.revenue_vnd, v.vat_vnd, v.issuers,
       if(v.invoices = 0, 0, v.non_cash_invoices / v.invoices) AS non_cash_share
FROM adoption AS a
LEFT JOIN volume AS v ON v.day = a.day AND v.sector = a.sector AND v.unit = a.unit
WHERE ({sectors:Array(String)} = [] OR a.sector IN {sectors:Array(String)})
  AND ({units:Array(String)} = [] OR a.unit IN {units:Array(String)})
ORDER BY a.day, a.sector, a.unit
SETTINGS join_use_nulls = 0
"""

UNREGISTERED_SQL = """
SELECT issue_date, uniqExactMerge(issuers), sum(invoices)
FROM segment_daily WHERE registered = 0 AND issue_date BETWEEN {start:Date} AND {end:Date}
GROUP BY issue_date ORDER BY issue_date
"""


@dataclass(frozen=True)
class SegmentDay:
    day: dt.date
    sector: str
    unit: str
    eligible: int
    active_1d: int
    active_7d: int
    active_28d: int
    adoption_7d: float
    adoption_28d: float
    invoices: int
    revenue_vnd: int
    vat_vnd: int
    issuers: int
    non_cash_share: float


def load_units(store: ClickHouseStore) -> UnitHierarchy:
    return UnitHierarchy.from_rows(store.query_rows("SELECT code, name, level, parent_code FROM admin_units FINAL"))


def adoption(
    store: ClickHouseStore,
    start: dt.date,
    end: dt.date,
    *,
    level: str = "district",
    sectors: list[str] | None = None,
    units: list[str] | None = None,
    hierarchy: UnitHierarchy | None = None,
) -> list[SegmentDay]:
    """Adoption and volume per (day, sector, unit) for ``start``..``end`` with roll-ups ('*')."""
    hierarchy = hierarchy or load_units(store)
    codes, targets = hierarchy.mapping(level)
    parameters: dict[str, Any] = {
        "start": start, "end": end, "unit_codes": codes, "unit_targets": targets,
        "sectors": sectors or [], "units": units or [],
    }  # fmt: skip
    return [SegmentDay(*row) for row in store.query_rows(ADOPTION_SQL, parameters)]


def unregistered(store: ClickHouseStore, start: dt.date, end: dt.date) -> list[tuple[dt.date, int, int]]:
    """(day, issuers, invoices) of sellers not in the registry: not placeable in a segment."""
    return [tuple(r) for r in store.query_rows(UNREGISTERED_SQL, {"start": start, "end": end})]  # type: ignore[misc]

"""The SQL of every board panel, written for the Grafana ClickHouse plugin (its macros and variables).

The Grafana boards, the tests that prove them and the offline report all read these queries, so
what an analyst sees in Grafana and in the report comes from the same SQL. Tables are unqualified:
they live in the data source's default database. Variables are interpolated with ``:sqlstring``
(quoted and escaped by Grafana), never raw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from base.localtime import TIME_ZONE

Kind = Literal["time", "date", "number", "string", "strings"]
ROLLUP = "*"  # segment_adoption's sector or unit of a roll-up row (analytics/adoption.py): what "All" selects
FIRST_DAY = f"toDate($__fromTime, '{TIME_ZONE}')"
LAST_DAY = f"toDate($__toTime, '{TIME_ZONE}')"
IN_RANGE = f"day BETWEEN {FIRST_DAY} AND {LAST_DAY}"
# the period before the chosen one, as long as it
SPAN = f"(dateDiff('day', {FIRST_DAY}, {LAST_DAY}) + 1)"
WITH_BEFORE = f"day BETWEEN {FIRST_DAY} - {SPAN} AND {LAST_DAY}"
RATE = "if(${period:sqlstring} = '28', adoption_28d, adoption_7d)"
ACTIVE = "if(${period:sqlstring} = '28', active_28d, active_7d)"
SECTOR_IS = "sector = ${sector:sqlstring}"
UNIT_IS = "unit = ${unit:sqlstring}"
DAY_TIME = f"toDateTime(day, '{TIME_ZONE}')"
UNIT_NAMES = "(SELECT code, name FROM admin_units FINAL)"
MIN_ELIGIBLE = 10  # smaller segments swing by chance: the same floor as `einvoice-monitor report`
# Columns that compare with the period before or with a baseline. They are NULL when that has no data
# (boards and the offline report show "—"): the period before holds no evaluated day of the segment (the
# evaluator writes figures from the first day with invoices on, for segments with eligible businesses), or
# the chosen period holds none, or the rules had too little history for a baseline (alerts/observe.py).
COMPARISONS = ("adoption_change", "invoices_change", "baseline_share", "baseline_invoices", "invoices_vs_baseline")
NO_COMPARISON = "—"


def _sector_names(lang: str) -> str:
    return f"(SELECT vsic_code, {'name_en' if lang == 'en' else 'name'} AS name FROM sectors FINAL)"


@dataclass(frozen=True)
class PanelQuery:
    """One panel's query and the columns (name -> kind) the panel reads from its result."""

    sql: str
    columns: dict[str, Kind]
    time_series: bool = False
    # a panel allowed to be empty on healthy data (e.g. nothing firing right now)
    may_be_empty: bool = False


def _latest_per(group: str, where: str) -> str:
    """Each group's figures on its newest evaluated day within the range."""
    return f"""
SELECT {group},
       argMax({RATE}, day) AS rate_last,
       argMax(eligible, day) AS eligible_last,
       argMax({ACTIVE}, day) AS active_last
FROM segment_adoption FINAL
WHERE {IN_RANGE} AND {where}
GROUP BY {group}"""


def _rates_by(label: str, group: str, where: str, join: str) -> str:
    """One row per unit (or sector): its rate, eligible and adopters on its newest day, lowest rate first."""
    name = label.rsplit(" AS ", 1)[1]
    return f"""
SELECT {label}, a.rate_last AS adoption_rate, a.eligible_last AS eligible, a.active_last AS active
FROM ({_latest_per(group, where)}) AS a
LEFT JOIN {join}
WHERE a.eligible_last >= {MIN_ELIGIBLE}
ORDER BY adoption_rate ASC, {name}"""


def overview(lang: str) -> dict[str, PanelQuery]:
    sector_names = _sector_names(lang)
    return {
        "totals": PanelQuery(
            f"""
SELECT rate_now AS adoption_rate,
       if(days_before = 0 OR days_now = 0, NULL, rate_now - rate_before) AS adoption_change,
       eligible_now AS eligible, active_now AS active, invoices_now AS invoices,
       if(days_before = 0 OR days_now = 0 OR invoices_before = 0, NULL, invoices_now / invoices_before - 1)
           AS invoices_change,
       revenue_now AS revenue_vnd, non_cash_now / nullIf(invoices_now, 0) AS non_cash_share
FROM (
    SELECT argMaxIf({RATE}, day, {IN_RANGE}) AS rate_now,
           argMaxIf({RATE}, day, day < {FIRST_DAY}) AS rate_before,
           countIf({IN_RANGE}) AS days_now,
           countIf(day < {FIRST_DAY}) AS days_before,
           argMaxIf(eligible, day, {IN_RANGE}) AS eligible_now,
           argMaxIf({ACTIVE}, day, {IN_RANGE}) AS active_now,
           sumIf(invoices, {IN_RANGE}) AS invoices_now,
           sumIf(invoices, day < {FIRST_DAY}) AS invoices_before,
           sumIf(revenue_vnd, {IN_RANGE}) AS revenue_now,
           sumIf(invoices * non_cash_share, {IN_RANGE}) AS non_cash_now
    FROM segment_adoption FINAL
    WHERE {WITH_BEFORE} AND {SECTOR_IS} AND {UNIT_IS}
)""",
            {
                "adoption_rate": "number",
                "adoption_change": "number",
                "eligible": "number",
                "active": "number",
                "invoices": "number",
                "invoices_change": "number",
                "revenue_vnd": "number",
                "non_cash_share": "number",
            },
        ),
        "by_unit": PanelQuery(
            _rates_by(
                "u.name AS unit_name", "unit", f"{SECTOR_IS} AND unit != '*'", f"{UNIT_NAMES} AS u ON u.code = a.unit"
            ),
            {"unit_name": "string", "adoption_rate": "number", "eligible": "number", "active": "number"},
        ),
        "by_sector": PanelQuery(
            _rates_by(
                "concat(a.sector, ' ', s.name) AS sector_name",
                "sector",
                f"{UNIT_IS} AND sector != '*'",
                f"{sector_names} AS s ON s.vsic_code = a.sector",
            ),
            {"sector_name": "string", "adoption_rate": "number", "eligible": "number", "active": "number"},
        ),
        "heatmap": PanelQuery(
            f"""
SELECT u.name AS unit_name, a.sector AS sector, a.rate_last AS adoption_rate
FROM ({_latest_per("sector, unit", "sector != '*' AND unit != '*'")}) AS a
LEFT JOIN {UNIT_NAMES} AS u ON u.code = a.unit
WHERE a.eligible_last >= {MIN_ELIGIBLE}
ORDER BY unit_name, sector""",
            {"unit_name": "string", "sector": "string", "adoption_rate": "number"},
        ),
        "below_target": PanelQuery(
            f"""
SELECT u.name AS unit_name, a.rate_last AS adoption_rate,
       toFloat64OrDefault(${{target:sqlstring}}, 0.8) - a.rate_last AS gap,
       a.eligible_last - a.active_last AS not_issuing, a.eligible_last AS eligible
FROM ({_latest_per("unit", f"{SECTOR_IS} AND unit != '*'")}) AS a
LEFT JOIN {UNIT_NAMES} AS u ON u.code = a.unit
WHERE a.eligible_last >= {MIN_ELIGIBLE} AND gap > 0
ORDER BY gap DESC, unit_name
LIMIT 10""",
            {
                "unit_name": "string",
                "adoption_rate": "number",
                "gap": "number",
                "not_issuing": "number",
                "eligible": "number",
            },
            may_be_empty=True,  # every unit may have reached the target
        ),
    }


def _series(columns: str) -> str:
    return f"""
SELECT {DAY_TIME} AS time, {columns}
FROM segment_adoption FINAL
WHERE {IN_RANGE} AND {SECTOR_IS} AND {UNIT_IS}
ORDER BY time"""


def trends(lang: str) -> dict[str, PanelQuery]:
    return {
        "adoption": PanelQuery(
            _series("adoption_7d, adoption_28d, issuing_share"),
            {"time": "time", "adoption_7d": "number", "adoption_28d": "number", "issuing_share": "number"},
            time_series=True,
        ),
        "issuers": PanelQuery(
            _series("eligible, active_7d, active_1d"),
            {"time": "time", "eligible": "number", "active_7d": "number", "active_1d": "number"},
            time_series=True,
        ),
        "invoices": PanelQuery(
            _series("invoices, baseline_invoices"),
            {"time": "time", "invoices": "number", "baseline_invoices": "number"},
            time_series=True,
        ),
        "non_cash": PanelQuery(
            _series("non_cash_share"), {"time": "time", "non_cash_share": "number"}, time_series=True
        ),
        "annotations": PanelQuery(
            f"""
SELECT {DAY_TIME} AS time,
       concat(rule, ' · ', type, ' · ',
              arrayStringConcat(arrayFilter(x -> x != '', [labels['sector'], labels['unit']]), ' / ')) AS text,
       [rule, type, severity] AS tags
FROM alert_events FINAL
WHERE {IN_RANGE} AND type = 'firing' AND suppressed_by = ''
  AND (${{sector:sqlstring}} = '*' OR labels['sector'] IN (${{sector:sqlstring}}, '*', ''))
  AND (${{unit:sqlstring}} = '*' OR labels['unit'] IN (${{unit:sqlstring}}, '*'))
ORDER BY time""",
            {"time": "time", "text": "string", "tags": "strings"},
        ),
    }


def drilldown(lang: str) -> dict[str, PanelQuery]:
    sector_names = _sector_names(lang)
    return {
        "segments": PanelQuery(
            f"""
SELECT concat(f.sector, ' ', s.name) AS sector_name, u.name AS unit_name, f.eligible_last AS eligible,
       f.active_last AS active, f.rate_last AS adoption_rate, f.share_last AS issuing_share,
       f.baseline_share_last AS baseline_share, f.invoices_last AS invoices,
       f.baseline_invoices_last AS baseline_invoices,
       f.invoices_last / nullIf(f.baseline_invoices_last, 0) - 1 AS invoices_vs_baseline
FROM (
    SELECT sector, unit, argMax(eligible, day) AS eligible_last, argMax({ACTIVE}, day) AS active_last,
           argMax({RATE}, day) AS rate_last, argMax(issuing_share, day) AS share_last,
           argMax(baseline_share, day) AS baseline_share_last, argMax(invoices, day) AS invoices_last,
           argMax(baseline_invoices, day) AS baseline_invoices_last
    FROM segment_adoption FINAL
    WHERE {IN_RANGE} AND sector != '*' AND unit != '*'
      AND (${{sector:sqlstring}} = '*' OR {SECTOR_IS}) AND (${{unit:sqlstring}} = '*' OR {UNIT_IS})
    GROUP BY sector, unit
) AS f
LEFT JOIN {sector_names} AS s ON s.vsic_code = f.sector
LEFT JOIN {UNIT_NAMES} AS u ON u.code = f.unit
ORDER BY adoption_rate ASC, sector_name, unit_name""",
            {
                "sector_name": "string",
                "unit_name": "string",
                "eligible": "number",
                "active": "number",
                "adoption_rate": "number",
                "issuing_share": "number",
                "baseline_share": "number",
                "invoices": "number",
                "baseline_invoices": "number",
                "invoices_vs_baseline": "number",
            },
        ),
        "baseline": PanelQuery(
            _series("issuing_share, baseline_share"),
            {"time": "time", "issuing_share": "number", "baseline_share": "number"},
            time_series=True,
        ),
        "dormant": PanelQuery(
            f"""
SELECT d.seller_id AS seller_id, r.name AS seller_name, concat(d.sector, ' ', s.name) AS sector_name,
       u.name AS unit_name, d.last_invoice_day AS last_invoice_day, d.silent_days AS silent_days,
       d.usual_daily_invoices AS usual_daily_invoices
FROM (
    SELECT * FROM dormant_issuers FINAL
    WHERE day = (SELECT max(day) FROM dormant_issuers WHERE {IN_RANGE})
      AND (${{sector:sqlstring}} = '*' OR {SECTOR_IS}) AND (${{unit:sqlstring}} = '*' OR {UNIT_IS})
) AS d
LEFT JOIN (SELECT seller_id, argMax(name, (valid_from, kafka_offset)) AS name FROM registry_history
           GROUP BY seller_id) AS r ON r.seller_id = d.seller_id
LEFT JOIN {sector_names} AS s ON s.vsic_code = d.sector
LEFT JOIN {UNIT_NAMES} AS u ON u.code = d.unit
ORDER BY usual_daily_invoices DESC, seller_id
LIMIT 500""",
            {
                "seller_id": "string",
                "seller_name": "string",
                "sector_name": "string",
                "unit_name": "string",
                "last_invoice_day": "date",
                "silent_days": "number",
                "usual_daily_invoices": "number",
            },
        ),
    }


def alerts(lang: str) -> dict[str, PanelQuery]:
    return {
        "active": PanelQuery(
            """
SELECT rule, severity, state, labels['sector'] AS sector, labels['unit'] AS unit, started_day, fired_day,
       evaluated_day, held_days
FROM alert_instances FINAL
WHERE fingerprint != '__progress__' AND state IN ('firing', 'pending')
ORDER BY state, severity, rule, unit, sector""",
            {
                "rule": "string",
                "severity": "string",
                "state": "string",
                "sector": "string",
                "unit": "string",
                "started_day": "date",
                "fired_day": "date",
                "evaluated_day": "date",
                "held_days": "number",
            },
            may_be_empty=True,  # nothing firing is the good case
        ),
        "recent": PanelQuery(
            f"""
SELECT day, type, rule, severity, labels['sector'] AS sector, labels['unit'] AS unit,
       suppressed_by, emitted_at, event_id
FROM alert_events FINAL
WHERE {IN_RANGE}
ORDER BY day DESC, emitted_at DESC
LIMIT 500""",
            {
                "day": "date",
                "type": "string",
                "rule": "string",
                "severity": "string",
                "sector": "string",
                "unit": "string",
                "suppressed_by": "string",
                "emitted_at": "time",
                "event_id": "string",
            },
        ),
        "per_day": PanelQuery(
            f"""
SELECT {DAY_TIME} AS time, rule, count() AS events
FROM alert_events FINAL
WHERE {IN_RANGE} AND type = 'firing'
GROUP BY time, rule
ORDER BY time, rule""",
            {"time": "time", "rule": "string", "events": "number"},
            time_series=True,
        ),
        "silences": PanelQuery(
            """
SELECT silence_id, toJSONString(matchers) AS matchers, starts_at, ends_at, created_by, comment
FROM alert_silences FINAL
WHERE deleted = 0 AND ends_at > now()
ORDER BY ends_at""",
            {
                "silence_id": "string",
                "matchers": "string",
                "starts_at": "time",
                "ends_at": "time",
                "created_by": "string",
                "comment": "string",
            },
            may_be_empty=True,  # no silence is the usual case
        ),
        "deliveries": PanelQuery(
            """
SELECT a.endpoint AS endpoint, countIf(a.outcome = 'delivered') AS delivered,
       countIf(a.outcome = 'retry') AS retries,
       countIf(a.outcome IN ('rejected', 'gone', 'exhausted', 'unsafe_url')) AS failed,
       argMax(a.status, a.attempted_at) AS last_status, max(a.attempted_at) AS last_attempt,
       quantile(0.95)(a.latency_ms) AS p95_latency_ms,
       if(max(s.disabled) = 1, 'disabled', 'enabled') AS endpoint_state
FROM webhook_attempts AS a
LEFT JOIN (SELECT endpoint, disabled FROM webhook_endpoint_state FINAL) AS s ON s.endpoint = a.endpoint
WHERE $__timeFilter(a.attempted_at)
GROUP BY a.endpoint
ORDER BY a.endpoint""",
            {
                "endpoint": "string",
                "delivered": "number",
                "retries": "number",
                "failed": "number",
                "last_status": "number",
                "last_attempt": "time",
                "p95_latency_ms": "number",
                "endpoint_state": "string",
            },
        ),
    }


def _counter_steps(metric: str, label_filter: str) -> str:
    """What a counter grew by between the copies a worker writes to pipeline_metrics.

    Each worker process has its own name and its counters start at zero, so a name's first copy
    counts whole. The hour before the range supplies each copy's predecessor.
    """
    return f"""(
    SELECT ts, label, if(previous IS NULL, value, greatest(value - previous, 0)) AS delta
    FROM (
        SELECT ts, label, value,
               lagInFrame(toNullable(value)) OVER (
                   PARTITION BY worker, label ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS previous
        FROM pipeline_metrics
        WHERE metric = '{metric}' AND {label_filter}
          AND ts >= $__fromTime - INTERVAL 1 HOUR AND ts <= $__toTime
    )
    WHERE $__timeFilter(ts)
)"""


def _counter_rate(metric: str, label_filter: str, by: tuple[str, str] | None = None) -> str:
    """A counter's rate per second in each ``$__interval_s`` bucket, from the copies in pipeline_metrics.

    A worker copies its counters every few seconds (EINVOICE_METRICS_INTERVAL_S), so a bucket shorter than
    that would hold no copy or one copy's worth: gaps and spikes. Each step between two copies is spread
    over the buckets it spans, in proportion to the time it spends in each, so the rate is smooth at any
    interval and its integral is exactly what the counter grew by. A worker's first step starts when the
    process did (the last part of its name, streams/app.py); no step is taken as longer than the hour
    looked back for predecessors. Copies up to an hour past the range close the steps that end in it.
    """
    select, group = (f"{by[0]} AS {by[1]}, ", f", {by[1]}") if by else ("", "")
    return f"""
SELECT toDateTime(part.1) AS time, {by[1] + ", " if by else ""}sum(part.2) / $__interval_s AS per_second
FROM (
    SELECT {select}arrayJoin(arrayMap(
               b -> (b, delta * (least(toFloat64(b + $__interval_s), t1) - greatest(toFloat64(b), t0)) / (t1 - t0)),
               range(toUInt32(intDiv(toUInt64(t0), $__interval_s) * $__interval_s),
                     toUInt32(t1) + 1, $__interval_s))) AS part
    FROM (
        SELECT label, if(previous IS NULL, value, greatest(value - previous, 0)) AS delta, t1,
               least(greatest(ifNull(t_previous, toFloat64(toUInt32OrZero(splitByChar(':', worker)[-1]))),
                              t1 - 3600), t1 - 0.001) AS t0
        FROM (
            SELECT worker, label, value, toUnixTimestamp64Milli(ts) / 1000 AS t1,
                   lagInFrame(toNullable(value)) OVER w AS previous,
                   lagInFrame(toNullable(toUnixTimestamp64Milli(ts) / 1000)) OVER w AS t_previous
            FROM pipeline_metrics
            WHERE metric = '{metric}' AND {label_filter}
              AND ts >= $__fromTime - INTERVAL 1 HOUR AND ts <= $__toTime + INTERVAL 1 HOUR
            WINDOW w AS (PARTITION BY worker, label ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
        )
        WHERE t1 >= toUnixTimestamp($__fromTime) AND t0 <= toUnixTimestamp($__toTime)
    )
)
WHERE part.1 + $__interval_s > toUnixTimestamp($__fromTime) AND part.1 <= toUnixTimestamp($__toTime)
GROUP BY time{group}
ORDER BY time{group}"""


def pipeline(lang: str) -> dict[str, PanelQuery]:
    return {
        "ingest_rate": PanelQuery(
            _counter_rate("einvoice_events_total", "endsWith(label, 'einvoice.issued')"),
            {"time": "time", "per_second": "number"},
            time_series=True,
        ),
        "dlq_rate": PanelQuery(
            _counter_rate("einvoice_rejected_total", "1", ("extract(label, 'reason=([^,]*)')", "reason")),
            {"time": "time", "reason": "string", "per_second": "number"},
            time_series=True,
        ),
        "consumer_lag": PanelQuery(
            """
SELECT $__timeInterval(ts) AS time, max(lag) AS consumer_lag
FROM (SELECT ts, worker, sum(value) AS lag FROM pipeline_metrics
      WHERE metric = 'einvoice_consumer_lag' AND $__timeFilter(ts) GROUP BY ts, worker)
GROUP BY time
ORDER BY time""",
            {"time": "time", "consumer_lag": "number"},
            time_series=True,
        ),
        "watermark_delay": PanelQuery(
            """
SELECT $__timeInterval(ts) AS time, min(toUnixTimestamp(ts) - watermark) AS watermark_delay_s
FROM (SELECT ts, worker, max(value) AS watermark FROM pipeline_metrics
      WHERE metric = 'einvoice_watermark_seconds' AND $__timeFilter(ts) GROUP BY ts, worker)
GROUP BY time
ORDER BY time""",
            {"time": "time", "watermark_delay_s": "number"},
            time_series=True,
        ),
        "freshness": PanelQuery(
            """
SELECT (SELECT max(issued_at) FROM invoices) AS newest_issued_at,
       (SELECT max(received_at) FROM invoices) AS newest_received_at,
       (SELECT toDateTime(max(value)) FROM pipeline_metrics WHERE metric = 'einvoice_watermark_seconds')
           AS watermark,
       (SELECT max(evaluated_day) FROM alert_instances WHERE fingerprint = '__progress__')
           AS last_evaluated_day""",
            {
                "newest_issued_at": "time",
                "newest_received_at": "time",
                "watermark": "time",
                "last_evaluated_day": "date",
            },
        ),
        "dlq_reasons": PanelQuery(
            f"""
SELECT extract(label, 'reason=([^,]*)') AS reason, extract(label, 'topic=([^,]*)') AS topic,
       sum(delta) AS rejected
FROM {_counter_steps("einvoice_rejected_total", "1")}
GROUP BY reason, topic
HAVING rejected > 0
ORDER BY rejected DESC, reason""",
            {"reason": "string", "topic": "string", "rejected": "number"},
        ),
    }


BOARDS = {
    "overview": overview,
    "trends": trends,
    "drilldown": drilldown,
    "alerts": alerts,
    "pipeline": pipeline,
}


def all_queries(lang: str = "vi") -> dict[tuple[str, str], PanelQuery]:
    """Every panel query of every board, keyed by (board, panel)."""
    return {(board, key): q for board, make in BOARDS.items() for key, q in make(lang).items()}

"""The evaluator: finds newly complete days, runs the rules on them in order, persists, publishes.

A day is complete once the watermark (newest issue time written to ClickHouse, minus the
allowed lateness) has passed its end and the consumer lag is small. Each complete day is one
evaluation. Per day: events go to Kafka (``adoption.alerts``, key = fingerprint; event ids are
deterministic), then to ``alert_events``, then the instances and a progress row go to
``alert_instances`` in one insert: a crash before that re-runs the day, and re-sends the same
event ids, which receivers deduplicate.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from alerts.dormant import SellerActivity, dormant_observations
from alerts.lag import LagWatch, condition_holds
from alerts.lapses import lapse_counts
from alerts.lifecycle import PROVINCE, AlertEvent, Instance, Observation, Silence, advance, mark_notified
from alerts.observe import (
    FROZEN_BASELINE_RULES,
    hold_segments,
    segment_baselines,
    segment_observations,
    silence_observations,
)
from alerts.rules import Rules
from analytics.adoption import SegmentDay, adoption, load_units
from analytics.units import UnitHierarchy
from base.kafka import DURABLE_PRODUCER
from base.localtime import LOCAL_TZ, TIME_ZONE
from sinks.clickhouse.client import ClickHouseStore

log = logging.getLogger(__name__)
PROGRESS = "__progress__"
DORMANT_REPORTED_DAYS = 60  # a seller silent longer than this drops out of the dormant list
INSTANCE_COLUMNS = (
    "fingerprint", "rule", "labels", "severity", "state", "held_days", "clear_days", "started_day", "fired_day",
    "resolved_day", "last_notified_at", "values", "evaluated_day", "version",
)  # fmt: skip
FIGURE_COLUMNS = (
    "day", "level", "sector", "unit", "eligible", "active_1d", "active_7d", "active_28d", "adoption_7d",
    "adoption_28d", "issuing_share", "baseline_share", "baseline_invoices", "invoices", "revenue_vnd", "vat_vnd",
    "issuers", "non_cash_share", "holiday", "evaluated_at",
)  # fmt: skip
DORMANT_COLUMNS = (
    "day", "unit", "seller_id", "sector", "last_invoice_day", "silent_days", "usual_daily_invoices", "evaluated_at",
)  # fmt: skip
SILENCE_COLUMNS = ("silence_id", "matchers", "starts_at", "ends_at", "comment", "created_by", "deleted", "version")
EVENT_COLUMNS = (
    "event_id", "type", "fingerprint", "rule", "labels", "severity", "day", "started_day", "values", "emitted_at",
    "suppressed_by",
)  # fmt: skip


def history_weeks(rules: Rules) -> int:
    """Weeks of figures before a day that the segment rules compare it with (sector overrides included)."""
    weeks = [getattr(rules, rule).baseline_weeks for rule in ("adoption_drop", "adoption_slide", "volume_drop")]
    spread = [rules.volume_drop.spread_days]
    for overrides in rules.sector_overrides.values():
        weeks += [o["baseline_weeks"] for o in overrides.values() if "baseline_weeks" in o]
        spread += [o["spread_days"] for o in overrides.values() if "spread_days" in o]
    return max(weeks) + math.ceil(max(spread) / 7)  # volume_drop judges each day of its spread by its own baseline


@dataclass(frozen=True)
class StoreSellerVolumes:
    """Per-seller invoices of one segment from ``seller_daily``, registry as of ``day`` (see observe.SellerVolumes)."""

    store: ClickHouseStore
    hierarchy: UnitHierarchy
    level: str
    day: dt.date

    def invoices_by_seller(self, sector: str, unit: str, days: Sequence[dt.date]) -> dict[str, dict[dt.date, int]]:
        codes, targets = self.hierarchy.mapping(self.level)
        rows = self.store.query_rows(
            """
            SELECT d.seller_id, d.issue_date, sum(d.invoices) FROM seller_daily AS d
            INNER JOIN (SELECT seller_id, argMax(vsic_code, (valid_from, kafka_offset)) AS vsic_code,
                               argMax(admin_unit_code, (valid_from, kafka_offset)) AS admin_unit_code
                        FROM registry_history WHERE valid_from <= {day:Date} GROUP BY seller_id) AS r
            USING (seller_id)
            WHERE d.registered = 1 AND d.issue_date IN {days:Array(Date)} AND r.vsic_code = {sector:String}
              AND transform(r.admin_unit_code, {codes:Array(String)}, {targets:Array(String)}, '') = {unit:String}
            GROUP BY d.seller_id, d.issue_date
            """,
            {"day": self.day, "days": list(days), "sector": sector, "unit": unit, "codes": codes, "targets": targets},
        )
        volumes: dict[str, dict[dt.date, int]] = defaultdict(dict)
        for seller, issue_date, invoices in rows:
            volumes[seller][issue_date] = int(invoices)
        return dict(volumes)


@dataclass(frozen=True)
class EvaluationResult:
    day: dt.date
    events: list[AlertEvent]


def read_silences(bootstrap: str, topic: str) -> list[Silence]:
    """Every live silence: the compacted topic read from its start (tombstones remove)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=2000)
    try:
        if not consumer.partitions_for_topic(topic):
            log.warning("no silences topic; run `einvoice-monitor topics create`", extra={"topic": topic})
            return []
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        found: dict[str, Silence | None] = {}
        while consumer.position(tp) < end:
            for records in consumer.poll(timeout_ms=1000).values():
                for record in records:
                    key = record.key.decode()
                    if record.value is None:
                        found[key] = None
                    else:
                        raw = json.loads(record.value)
                        found[key] = Silence(raw["silence_id"], raw["matchers"], raw["starts_at"], raw["ends_at"],
                                             raw.get("comment", ""), raw.get("created_by", ""))  # fmt: skip
        return [s for s in found.values() if s is not None]
    finally:
        consumer.close()


class AlertEvaluator:
    def __init__(
        self, store: ClickHouseStore, rules: Rules, bootstrap: str, alerts_topic: str, silences_topic: str
    ) -> None:
        self.store = store
        self.rules = rules
        self.bootstrap = bootstrap
        self.alerts_topic = alerts_topic
        self.silences_topic = silences_topic
        self.instances: dict[str, Instance] = {}
        self.last_day: dt.date | None = None
        self._loaded = False
        self._producer: KafkaProducer | None = None
        self.lag = LagWatch(rules.evaluation.max_consumer_lag, rules.pipeline_lag)  # one sample per run

    # -- state ---------------------------------------------------------------------------------------------------
    def load(self) -> None:
        """The newest version of every instance, and the last evaluated day (blocking)."""
        rows = self.store.query_rows(f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM alert_instances FINAL")
        self.instances = {}
        for row in rows:
            r = dict(zip(INSTANCE_COLUMNS, row, strict=True))
            if r["fingerprint"] == PROGRESS:
                self.last_day = r["evaluated_day"]
                continue
            self.instances[r["fingerprint"]] = Instance(
                r["fingerprint"], r["rule"], dict(r["labels"]), r["severity"], r["state"], r["held_days"],
                r["clear_days"], r["started_day"], r["fired_day"], r["resolved_day"], r["last_notified_at"],
                json.loads(r["values"] or "{}"),
            )  # fmt: skip
        self._loaded = True

    def _save(self, day: dt.date, events: list[AlertEvent], progress: bool = True) -> None:
        if events:
            event_rows = [
                (e.event_id, e.type, e.fingerprint, e.rule, e.labels, e.severity, e.day, e.started_day,
                 json.dumps(e.values, ensure_ascii=False, default=str), dt.datetime.fromtimestamp(e.emitted_at, dt.UTC),
                 e.suppressed_by)
                for e in events
            ]  # fmt: skip
            self.store.call(self.store.insert, "alert_events", event_rows, column_names=EVENT_COLUMNS)
        version = time.time_ns() // 1000
        rows = [
            (i.fingerprint, i.rule, i.labels, i.severity, i.state, i.held_days, i.clear_days, i.started_day,
             i.fired_day, i.resolved_day, i.last_notified_at, json.dumps(i.values, ensure_ascii=False, default=str),
             day, version)
            for i in self.instances.values()
        ]  # fmt: skip
        if progress:
            rows.append((PROGRESS, "", {}, "", "", 0, 0, None, None, None, None, "{}", day, version))
        self.store.call(self.store.insert, "alert_instances", rows, column_names=INSTANCE_COLUMNS)

    def _save_figures(
        self, day: dt.date, rows: list[SegmentDay], dormant: list[Observation], data_start: dt.date, holiday: bool,
        firing: Mapping[tuple[str, str, str], Mapping[str, Any]],
    ) -> None:  # fmt: skip
        """The day's adoption per segment and the named dormant issuers, for the boards (before the
        progress row: a crash re-evaluates the day and replaces these rows)."""
        at = dt.datetime.now(dt.UTC)
        baselines = segment_baselines(rows, day, self.rules, data_start, firing)  # a firing alert's frozen ones
        level = self.rules.evaluation.level
        figures = [
            (day, level, r.sector, r.unit, r.eligible, r.active_1d, r.active_7d, r.active_28d, r.adoption_7d,
             r.adoption_28d, r.active_1d / r.eligible if r.eligible else 0.0, *baselines.get((r.sector, r.unit),
             (None, None)), r.invoices, r.revenue_vnd, r.vat_vnd, r.issuers, r.non_cash_share, int(holiday), at)
            for r in rows if r.day == day
        ]  # fmt: skip
        if figures:
            self.store.call(self.store.insert, "segment_adoption", figures, column_names=FIGURE_COLUMNS)
        named = [
            (day, o.labels["unit"], s["seller_id"], s["sector"], dt.date.fromisoformat(s["last_invoice_day"]),
             s["silent_days"], s["usual_daily_invoices"], at)
            for o in dormant for s in o.values["sellers"]
        ]  # fmt: skip
        if named:
            self.store.call(self.store.insert, "dormant_issuers", named, column_names=DORMANT_COLUMNS)

    def sync_silences(self, silences: list[Silence]) -> None:
        """Mirror the live silences into ClickHouse for the alerts board (only what changed)."""
        known = {
            row[0]: row[1:]
            for row in self.store.query_rows(
                "SELECT silence_id, matchers, toUnixTimestamp64Milli(starts_at), toUnixTimestamp64Milli(ends_at), "
                "comment, created_by FROM alert_silences FINAL WHERE deleted = 0"
            )
        }
        version = time.time_ns() // 1000
        rows = []
        for s in silences:
            current = (s.matchers, round(s.starts_at * 1000), round(s.ends_at * 1000), s.comment, s.created_by)
            if known.pop(s.silence_id, None) != current:
                starts, ends = (dt.datetime.fromtimestamp(t, dt.UTC) for t in (s.starts_at, s.ends_at))
                rows.append((s.silence_id, s.matchers, starts, ends, s.comment, s.created_by, 0, version))
        epoch = dt.datetime.fromtimestamp(0, dt.UTC)
        rows += [(silence_id, {}, epoch, epoch, "", "", 1, version) for silence_id in known]
        if rows:
            self.store.call(self.store.insert, "alert_silences", rows, column_names=SILENCE_COLUMNS)

    def _publish(self, events: list[AlertEvent]) -> None:
        sendable = [e for e in events if not e.suppressed_by]
        if not sendable:
            return
        if self._producer is None:
            self._producer = KafkaProducer(bootstrap_servers=self.bootstrap, **DURABLE_PRODUCER)
        for event in sendable:
            body = json.dumps(event.as_json(), ensure_ascii=False, default=str).encode()
            self._producer.send(self.alerts_topic, key=event.fingerprint.encode(), value=body,
                                headers=[("event_id", event.event_id.encode())])  # fmt: skip
        self._producer.flush()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()

    # -- completeness ----------------------------------------------------------------------------------------------
    def newest_complete_day(self, consumer_lag: int) -> dt.date | None:
        if consumer_lag > self.rules.evaluation.max_consumer_lag:
            return None
        newest = self.store.query_rows("SELECT max(last_issued_at), min(issue_date) FROM seller_daily")[0]
        if newest[0] is None or newest[0].year < 2000:
            return None
        watermark = newest[0].replace(tzinfo=None) - dt.timedelta(hours=self.rules.evaluation.allowed_lateness_hours)
        return watermark.date() - dt.timedelta(days=1)

    def first_day(self) -> dt.date | None:
        day = self.store.query_rows("SELECT min(issue_date) FROM seller_daily")[0][0]
        return None if day is None or day.year < 2000 else day

    # -- evaluation ------------------------------------------------------------------------------------------------
    def run(
        self, consumer_lag: int = 0, now: float | None = None, until: dt.date | None = None
    ) -> list[EvaluationResult]:
        """Evaluate every newly complete day, oldest first (at most max_days_per_run)."""
        if not self._loaded:
            self.load()
        self._observe_lag(consumer_lag, time.time() if now is None else now)
        newest = self.newest_complete_day(consumer_lag)
        if until is not None and newest is not None:
            newest = min(newest, until)
        if newest is None:
            return []
        day = (self.last_day + dt.timedelta(days=1)) if self.last_day else self.first_day()
        if day is None:
            return []
        silences = read_silences(self.bootstrap, self.silences_topic)
        self.sync_silences(silences)
        hierarchy = load_units(self.store)
        results = []
        while day <= newest and len(results) < self.rules.evaluation.max_days_per_run:
            results.append(self.evaluate_day(day, time.time() if now is None else now, silences, hierarchy))
            day += dt.timedelta(days=1)
        return results

    def _advance(
        self, observations: list[Observation], day: dt.date, now: float, silences: list[Silence] | None = None
    ) -> list[AlertEvent]:
        """The lifecycle's step, with the rules' reminder intervals (each rule's own, else the evaluation's)."""
        return advance(
            self.instances, observations, day, now, silences=silences or (),
            repeat_interval_s=self.rules.evaluation.repeat_interval_hours * 3600,
            repeat_by_rule=self.rules.repeat_by_rule(),
        )  # fmt: skip

    def _observe_lag(self, consumer_lag: int, now: float) -> None:
        """pipeline_lag, judged by burn-down (alerts/lag.py): over the limit and not clearing in time.

        A worker catching up on a backlog is healthy and sends nothing; a stuck one, or one the
        feed outruns, fires after ``for`` seconds. (Meanwhile no day counts as complete either way.)
        """
        rule, limit = self.rules.pipeline_lag, self.rules.evaluation.max_consumer_lag
        judged = self.lag.add(now, consumer_lag)
        if consumer_lag > limit:
            log.info(
                "consumer lag over its limit",
                extra={"consumer_lag": consumer_lag, "limit": limit, "verdict": judged.verdict,
                       "drain_per_s": judged.drain_per_s, "clears_in_s": judged.clears_in_s},
            )  # fmt: skip
        existing = [i for i in self.instances.values() if i.rule == "pipeline_lag" and i.state == "firing"]
        lagging = condition_holds(judged, rule, firing=bool(existing))
        if not lagging and not existing:
            return
        observation = Observation(
            "pipeline_lag", {"unit": PROVINCE}, lagging, rule.severity, 1, 1, judged.values(rule)
        )  # fmt: skip
        # before the first evaluated day, the lag belongs to today; no progress row then, or the
        # evaluation would resume from that day instead of from the first day with data
        day = self.last_day or dt.datetime.now(LOCAL_TZ).date()
        events = self._advance([observation], day, now)
        if events:
            self._publish(events)
            mark_notified(self.instances, events)
            self._save(day, events, progress=self.last_day is not None)

    def evaluate_day(
        self, day: dt.date, now: float, silences: list[Silence], hierarchy: UnitHierarchy
    ) -> EvaluationResult:
        rules = self.rules
        level = rules.evaluation.level
        start = day - dt.timedelta(weeks=history_weeks(rules))
        rows = adoption(self.store, start, day, level=level, hierarchy=hierarchy)
        data_start = self.first_day() or day
        holiday = rules.evaluation.is_holiday(day)
        dormant: list[Observation] = []
        firing = {
            (i.rule, i.labels["sector"], i.labels["unit"]): i.values
            for i in self.instances.values() if i.state == "firing" and i.rule in FROZEN_BASELINE_RULES
        }  # fmt: skip
        silent = silence_observations(self._hourly(day, hierarchy), day, rules)
        if holiday:
            # a holiday is no baseline for a shop, but the whole province silent for hours is still an outage
            observations = [o for o in silent if o.labels["unit"] == PROVINCE]
        else:
            units = sorted({r.unit for r in rows if r.unit != PROVINCE})
            volumes = StoreSellerVolumes(self.store, hierarchy, level, day)
            sellers = self._sellers(day, hierarchy)
            weeks = range(rules.adoption_slide.baseline_weeks + 1)
            lapses = {
                d: lapse_counts(sellers, d, rules, data_start) for d in (day - dt.timedelta(weeks=w) for w in weeks)
            }
            observations = segment_observations(
                rows, day, rules, data_start, firing=firing, sellers=volumes, lapses=lapses
            )
            dormant = dormant_observations(sellers, units, day, rules, data_start)
            observations = hold_segments(observations + dormant, silent) + silent
        events = self._advance(observations, day, now, silences)
        self._save_figures(day, rows, dormant, data_start, holiday, firing)
        self._publish(events)
        mark_notified(self.instances, events)
        self._save(day, events)
        self.last_day = day
        for event in events:
            log.info(
                "alert event",
                extra={"type": event.type, "rule": event.rule, "labels": event.labels, "day": event.day.isoformat(),
                       "suppressed_by": event.suppressed_by},
            )  # fmt: skip
        return EvaluationResult(day, events)

    def _hourly(self, day: dt.date, hierarchy: UnitHierarchy) -> dict[str, dict[dt.datetime, int]]:
        codes, targets = hierarchy.mapping(self.rules.evaluation.level)
        start = day - dt.timedelta(days=self.rules.pipeline_silence.baseline_days)
        # toDate/toHour in the column's time zone: clickhouse-connect hands DateTime('tz') back as naive UTC
        rows = self.store.query_rows(
            "SELECT toDate(received_hour) AS d, toHour(received_hour) AS h, "
            "transform(admin_unit_code, {codes:Array(String)}, {targets:Array(String)}, '') AS u, sum(invoices) "
            "FROM receipts_hourly WHERE received_hour >= toDateTime({start:Date}, {tz:String}) "
            "AND received_hour < toDateTime({end:Date}, {tz:String}) AND u != '' GROUP BY d, h, u",
            {"codes": codes, "targets": targets, "start": start, "end": day + dt.timedelta(days=1), "tz": TIME_ZONE},
        )
        hourly: dict[str, dict[dt.datetime, int]] = defaultdict(lambda: defaultdict(int))
        for local_day, hour, unit, count in rows:
            at = dt.datetime.combine(local_day, dt.time(hour))
            hourly[unit][at] += int(count)
            hourly[PROVINCE][at] += int(count)
        return hourly

    def _sellers(self, day: dt.date, hierarchy: UnitHierarchy) -> list[SellerActivity]:
        rule = self.rules.dormant_issuer
        start = day - dt.timedelta(days=rule.lookback_days + DORMANT_REPORTED_DAYS)
        codes, targets = hierarchy.mapping(self.rules.evaluation.level)
        rows = self.store.query_rows(
            """
            SELECT a.seller_id, r.vsic_code,
                   transform(r.admin_unit_code, {codes:Array(String)}, {targets:Array(String)}, '') AS unit,
                   a.days, a.counts, r.status, a.invoices / greatest(length(a.days), 1)
            FROM (SELECT seller_id, groupArray(issue_date) AS days, groupArray(n) AS counts, sum(n) AS invoices
                  FROM (SELECT seller_id, issue_date, sum(invoices) AS n FROM seller_daily
                        WHERE registered = 1 AND issue_date BETWEEN {start:Date} AND {day:Date}
                        GROUP BY seller_id, issue_date)
                  GROUP BY seller_id) AS a
            INNER JOIN (SELECT seller_id, argMax(vsic_code, (valid_from, kafka_offset)) AS vsic_code,
                               argMax(admin_unit_code, (valid_from, kafka_offset)) AS admin_unit_code,
                               argMax(status, (valid_from, kafka_offset)) AS status
                        FROM registry_history WHERE valid_from <= {day:Date} GROUP BY seller_id) AS r
            USING (seller_id)
            """,
            {"codes": codes, "targets": targets, "start": start, "day": day},
        )
        return [
            SellerActivity(s, v, u, frozenset(d), st, float(avg), dict(zip(d, n, strict=True)))
            for s, v, u, d, n, st, avg in rows if u
        ]  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        """Instances and last day, for `alerts list` and the web page."""
        lag = self.lag.last
        return {
            "last_evaluated_day": self.last_day.isoformat() if self.last_day else None,
            "consumer_lag": None if lag is None else dataclasses.asdict(lag),  # the burn-down verdict
            "instances": [i.as_row() for i in sorted(self.instances.values(), key=lambda i: (i.state, i.rule))],
        }

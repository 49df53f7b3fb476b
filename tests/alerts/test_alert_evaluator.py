"""The evaluator on real ClickHouse (chDB) and Kafka, with figures written straight into the tables.

The simulator-driven scenario tests live in test_alert_scenarios.py; this one pins the rule
semantics on a small, fully known data set: 40 restaurants in Hoằng Hóa and 40 in the city
issue six invoices every day for six weeks; from day 36, 60% of Hoằng Hóa's stop.
"""

from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from alerts.evaluator import AlertEvaluator
from alerts.rules import load_rules
from sinks.clickhouse import ClickHouseStore, apply_migrations
from sinks.clickhouse.invoice_sink import STORED_COLUMNS
from tests.support import read_topic

START = dt.date(2024, 4, 1)
DROP_DAY = START + dt.timedelta(days=35)
LAST_DAY = START + dt.timedelta(days=45)
LOCAL = 7 * 3600 * 1000


def seed_tables(store: ClickHouseStore, stop_share: float = 0.6, outage_day: dt.date | None = None) -> list[str]:
    rng = random.Random(5)
    sellers = [(f"28{i:08d}", "5610", "399" if i < 40 else "380") for i in range(80)]
    registry = [
        (s, dt.date(2023, 1, 1), f"Quán {s}", v, u, 1, "ACTIVE", 0, i, 0) for i, (s, v, u) in enumerate(sellers)
    ]
    store.call(store.client.insert, "registry_history", registry,
               column_names=["seller_id", "valid_from", "name", "vsic_code", "admin_unit_code", "obliged", "status",
                             "kafka_partition", "kafka_offset", "received_at"])  # fmt: skip
    stopped = [s for s, _, u in sellers if u == "399"][: int(40 * stop_share)]
    rows = []
    offset = 0
    day = START
    while day <= LAST_DAY:
        for seller_id, vsic, unit in sellers:
            if day >= DROP_DAY and seller_id in stopped:
                continue
            for _ in range(6):  # six a day: regular enough to be watched for dormancy
                hour = rng.randrange(7, 22)
                if outage_day == day and 9 <= hour < 15:
                    continue  # the feed lost these hours
                local_ms = (day - dt.date(1970, 1, 1)).days * 86_400_000 + hour * 3_600_000 + rng.randrange(3_600_000)
                offset += 1
                rows.append(
                    (seller_id, f"M1-24-AB12C-{offset:011d}", offset, 1, "C24MTT", local_ms - LOCAL, day, 100_000, 8,
                     8_000, "CASH", 0, "AB12C", None, "enterprise", 1, vsic, unit, 1, "seeded", 0, offset,
                     local_ms - LOCAL + 60_000, "seed")
                )  # fmt: skip
        day += dt.timedelta(days=1)
    columns = [list(c) for c in zip(*rows, strict=True)]
    store.call(store.client.insert, "invoices", columns, column_names=STORED_COLUMNS, column_oriented=True)
    return stopped


def alert_topic_events(settings) -> list[dict]:
    return [json.loads(record.value) for record in read_topic(settings, settings.topics.alerts)]


@pytest.fixture
def store(settings):
    opened = ClickHouseStore(settings.clickhouse_dsn)
    opened.call(apply_migrations, opened.client)
    yield opened
    opened.close()


def evaluator_for(store, settings):
    return AlertEvaluator(store, load_rules(), settings.kafka_brokers, settings.topics.alerts, settings.topics.silences)


def test_a_sector_drop_in_one_district_fires_that_alert_and_names_the_dormant_sellers(store, settings):
    stopped = seed_tables(store)
    evaluator = evaluator_for(store, settings)
    results = evaluator.run(now=1_000_000.0)
    assert evaluator.last_day == LAST_DAY - dt.timedelta(days=3)  # newest event ~22:00, minus 48 h of lateness
    events = [(r.day, e) for r in results for e in r.events]
    fired = [(d, e) for d, e in events if e.type == "firing" and not e.suppressed_by]
    adoption = [(d, e) for d, e in fired if e.rule == "adoption_drop"]
    assert {(e.labels["sector"], e.labels["unit"]) for _, e in adoption} == {("5610", "399")}
    first_day, first = adoption[0]
    assert first_day == DROP_DAY + dt.timedelta(days=1)  # held for two complete days
    assert first.values["eligible"] == 40 and first.values["active_today"] == 16
    dormant = [e for _, e in fired if e.rule == "dormant_issuer"]
    assert [e.labels["unit"] for e in dormant] == ["399"]
    assert sorted(s["seller_id"] for s in dormant[0].values["sellers"]) == sorted(stopped)
    assert not [e for _, e in fired if e.rule in ("volume_drop", "pipeline_silence") and e.labels.get("unit") == "380"]
    published = alert_topic_events(settings)
    assert {e["event_id"] for e in published} == {e.event_id for _, e in fired}


def test_state_survives_a_restart_without_refiring(store, settings):
    seed_tables(store)
    first = evaluator_for(store, settings)
    first.run(now=1_000_000.0, until=DROP_DAY + dt.timedelta(days=3))
    again = evaluator_for(store, settings)
    later = again.run(now=1_000_100.0)
    assert again.last_day == LAST_DAY - dt.timedelta(days=3)
    refired = [e for r in later for e in r.events if e.type == "firing" and e.rule == "adoption_drop"]
    assert refired == []
    firing = {i.rule: i.state for i in again.instances.values() if i.labels.get("unit") == "399"}
    assert firing["adoption_drop"] == "firing"


def test_small_noise_stays_quiet(store, settings):
    seed_tables(store, stop_share=0.05)  # two restaurants close: not a segment drop
    results = evaluator_for(store, settings).run(now=1_000_000.0)
    fired = [e for r in results for e in r.events if e.type == "firing" and e.rule == "adoption_drop"]
    assert fired == []


def test_a_feed_outage_raises_the_pipeline_alert_and_no_adoption_alert(store, settings):
    outage = START + dt.timedelta(days=38)
    seed_tables(store, stop_share=0.0, outage_day=outage)
    results = evaluator_for(store, settings).run(now=1_000_000.0)
    fired = [(r.day, e) for r in results for e in r.events if e.type == "firing"]
    assert any(e.rule == "pipeline_silence" and e.labels["unit"] == "*" and d == outage for d, e in fired)
    assert not [e for _, e in fired if e.rule in ("adoption_drop", "volume_drop", "dormant_issuer")]


def test_a_feed_outage_on_a_public_holiday_still_raises_the_province_alert_and_nothing_else(store, settings):
    holiday = dt.date(2024, 4, 30)  # Reunification Day: no rule judges a shop's day, the feed is still watched
    seed_tables(store, stop_share=0.0, outage_day=holiday)
    results = evaluator_for(store, settings).run(now=1_000_000.0)
    on_holiday = [e for r in results if r.day == holiday for e in r.events]
    assert [(e.type, e.rule, e.labels) for e in on_holiday] == [("firing", "pipeline_silence", {"unit": "*"})]


def stuck(evaluator, ticks: int = 6, lag: int = 10**9, t0: float = 1_000_000.0) -> None:
    """The evaluator's timer every 30 s while the lag stays where it is (a stuck worker)."""
    for i in range(ticks):
        assert evaluator.run(consumer_lag=lag, now=t0 + 30 * i) == []  # no day is complete while lagging


def test_consumer_lag_raises_a_data_problem_and_holds_every_day(store, settings):
    seed_tables(store, stop_share=0.0)
    evaluator = evaluator_for(store, settings)
    stuck(evaluator, ticks=5)  # behind from the second sample: 90 s so far, `for` is 120 s
    assert not [i for i in evaluator.instances.values() if i.rule == "pipeline_lag"]
    stuck(evaluator, ticks=1, t0=1_000_150.0)
    lag = [i for i in evaluator.instances.values() if i.rule == "pipeline_lag"]
    assert [i.state for i in lag] == ["firing"]
    assert lag[0].values["consumer_lag"] == 10**9 and lag[0].values["drain_per_s"] == 0.0
    evaluator.run(consumer_lag=0, now=1_000_180.0, until=START)  # caught up: resolves after clear_for (60 s)
    assert [i.state for i in evaluator.instances.values() if i.rule == "pipeline_lag"] == ["firing"]
    evaluator.run(consumer_lag=0, now=1_000_240.0, until=START)
    assert [i.state for i in evaluator.instances.values() if i.rule == "pipeline_lag"] == ["resolved"]
    types = [e["type"] for e in alert_topic_events(settings) if e["rule"] == "pipeline_lag"]
    assert types == ["firing", "resolved"]


def test_a_backlog_draining_steadily_is_no_data_problem(store, settings):
    """A worker started on two million records that drains 5,000 a second: over the limit for six
    minutes, and healthy all along (the rule used to fire on the first tick over the limit)."""
    seed_tables(store, stop_share=0.0)
    evaluator = evaluator_for(store, settings)
    for i in range(15):
        evaluator.run(consumer_lag=max(0, 2_000_000 - 5_000 * 30 * i), now=1_000_000.0 + 30 * i, until=START)
    assert evaluator.lag.last.verdict == "healthy"
    assert not [i for i in evaluator.instances.values() if i.rule == "pipeline_lag"]
    assert not [e for e in alert_topic_events(settings) if e["rule"] == "pipeline_lag"]


def test_lag_before_the_first_evaluation_does_not_move_where_evaluation_resumes(store, settings):
    """A lag alert before any day was evaluated must not leave a progress row: a restarted worker
    would then resume from that day instead of from the first day with invoices."""
    seed_tables(store, stop_share=0.0)
    stuck(evaluator_for(store, settings))
    restarted = evaluator_for(store, settings)
    restarted.load()
    assert restarted.last_day is None
    assert [i.state for i in restarted.instances.values() if i.rule == "pipeline_lag"] == ["firing"]
    results = restarted.run(consumer_lag=0, now=1_000_060.0, until=START + dt.timedelta(days=2))
    assert [r.day for r in results] == [START, START + dt.timedelta(days=1), START + dt.timedelta(days=2)]
    # the boards get the adoption of every evaluated day, with roll-ups
    days = store.query_rows("SELECT DISTINCT day FROM segment_adoption FINAL ORDER BY day")
    assert [d for (d,) in days] == [START, START + dt.timedelta(days=1), START + dt.timedelta(days=2)]
    [(eligible, active)] = store.query_rows(
        "SELECT eligible, active_1d FROM segment_adoption FINAL WHERE day = {d:Date} AND sector = '*' AND unit = '*'",
        {"d": START},
    )
    assert eligible == 80 and active == 80

"""The pipeline board's rate panels at any panel interval, on copies made the way workers make them.

A worker copies its counters to pipeline_metrics every few seconds. A panel interval shorter than that
once left buckets with no copy (gaps) and buckets holding a whole copy's growth (overstated); each step
between copies is now spread over the buckets it spans.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from boards.grafana import DEFAULT_VARIABLES
from boards.queries import BOARDS
from boards.runner import run_panel
from sinks.clickhouse import ClickHouseStore, apply_migrations

T0 = float(int(time.time()) - 3_600)  # the first worker's start, epoch seconds (recent: the table keeps 90 days)
PERIOD_S = 10.0
FIRST_RATE, SECOND_RATE = 500.0, 300.0  # events a second
SECOND_START = T0 + 200.0
END = T0 + 600.0


def copies(worker_start: float, rate: float, metric: str, label: str, rng: random.Random) -> list[tuple]:
    """A worker's copies of one counter growing at a steady rate, every PERIOD_S give or take 0.3 s."""
    rows, at = [], worker_start
    while True:
        at += PERIOD_S + rng.uniform(-0.3, 0.3)
        if at > END:
            return rows
        at = round(at, 3)  # DateTime64(3)
        ts = dt.datetime.fromtimestamp(at, dt.UTC)
        rows.append((ts, f"host:{int(worker_start)}:{int(worker_start)}", metric, label, rate * (at - worker_start)))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ClickHouseStore]:
    opened = ClickHouseStore(f"chdb://{tmp_path / 'clickhouse'}")
    opened.call(apply_migrations, opened.client)
    rng = random.Random(7)
    rows = (
        copies(T0, FIRST_RATE, "einvoice_events_total", "topic=einvoice.issued", rng)
        + copies(SECOND_START, SECOND_RATE, "einvoice_events_total", "topic=einvoice.issued", rng)
        + copies(T0, 2.0, "einvoice_rejected_total", "reason=bad_tax_code,topic=einvoice.issued", rng)
        + copies(T0, 0.5, "einvoice_rejected_total", "reason=unknown_schema,topic=einvoice.issued", rng)
    )
    opened.call(
        opened.client.insert, "pipeline_metrics", rows, column_names=["ts", "worker", "metric", "label", "value"]
    )
    try:
        yield opened
    finally:
        opened.close()


def expected(bucket: float, width: float) -> float:
    """The true rate over [bucket, bucket + width): the first worker throughout, the second from its start."""
    second = max(0.0, min(bucket + width, END) - max(bucket, SECOND_START))
    return FIRST_RATE + SECOND_RATE * second / width


@pytest.mark.parametrize("interval_s", [2, 10, 60])
def test_ingest_rate_has_no_gap_and_is_not_overstated_at_any_interval(store, interval_s):
    time_from = dt.datetime.fromtimestamp(T0 + 60, dt.UTC)
    time_to = dt.datetime.fromtimestamp(END - 60, dt.UTC)
    query = BOARDS["pipeline"]("vi")["ingest_rate"]
    result = run_panel(store, query, DEFAULT_VARIABLES, time_from, time_to, interval_s=interval_s)
    points = {time.replace(tzinfo=dt.UTC).timestamp(): rate for time, rate in result.rows}
    inside = [b for b in sorted(points) if time_from.timestamp() <= b and b + interval_s <= time_to.timestamp()]
    assert len(inside) >= (time_to - time_from).total_seconds() / interval_s - 2
    assert all(later - earlier == interval_s for earlier, later in itertools.pairwise(inside)), "a gap"
    for bucket in inside:
        assert points[bucket] == pytest.approx(expected(bucket, interval_s), rel=1e-6), bucket - T0


def test_the_integral_of_the_rate_is_what_the_counters_grew_by(store):
    time_from, time_to = dt.datetime.fromtimestamp(T0, dt.UTC), dt.datetime.fromtimestamp(END, dt.UTC)
    for key, metric in (("ingest_rate", "einvoice_events_total"), ("dlq_rate", "einvoice_rejected_total")):
        result = run_panel(store, BOARDS["pipeline"]("vi")[key], DEFAULT_VARIABLES, time_from, time_to, interval_s=3)
        grew = store.query_rows(
            "SELECT sum(v) FROM (SELECT max(value) AS v FROM pipeline_metrics WHERE metric = {m:String} "
            "GROUP BY worker, label)",
            {"m": metric},
        )[0][0]
        assert sum(row[-1] * 3 for row in result.rows) == pytest.approx(grew, rel=1e-9), key
    reasons = {row[1] for row in run_panel(store, BOARDS["pipeline"]("vi")["dlq_rate"], DEFAULT_VARIABLES,
                                           time_from, time_to, interval_s=30).rows}  # fmt: skip
    assert reasons == {"bad_tax_code", "unknown_schema"}

"""Exactly once, proven by killing the worker: SIGKILL at random moments, then exact accounting."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from sinks.dead_letter import H_SOURCE_OFFSET
from tests.support import (
    PublishedFeed,
    committed_offsets,
    end_offsets,
    expected_totals,
    open_store,
    read_topic,
    segment_totals,
    seller_daily_totals,
    start_worker,
    wait_consumed,
    wait_until,
)

KILLS = 6


def worker_has_started(worker):
    return lambda: worker.metric_sum("einvoice_events_total") > 0


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_and_counts_nothing_twice(settings):
    feed = PublishedFeed(settings, sellers=3000, invoices=200_000, seed=2024, unregistered=40)
    assert len(feed.valid) >= 196_000
    assert sum(r.kind == "duplicate" for r in feed.records) >= 3600
    assert len(feed.malformed) >= 2000

    rng = random.Random(99)
    topic = settings.topics.invoices
    total = sum(end_offsets(settings, topic).values())
    kills = 0
    progress_at_kill = []
    while kills < KILLS:
        worker = start_worker(settings, name=f"worker-{kills}")
        # kill while it works: after its first insert, at a random moment
        wait_until(worker_has_started(worker), 120, "the first batch", worker)
        time.sleep(rng.uniform(0.0, 1.5))
        worker.kill()
        kills += 1
        progress_at_kill.append(sum(committed_offsets(settings, topic).values()))
    # the kills must have landed while there was work left, or the test proves nothing
    assert progress_at_kill[-1] < total, progress_at_kill
    assert progress_at_kill[-1] > 0, progress_at_kill

    worker = start_worker(settings, name="worker-final")
    try:
        wait_consumed(settings, worker, timeout=600)
    finally:
        worker.stop()

    valid = feed.valid
    store = open_store(settings)
    try:
        count, distinct = store.query_rows("SELECT count(), uniqExact(seller_id, invoice_code) FROM invoices")[0]
        assert (count, distinct) == (len(valid), len(valid)), f"kills at committed offsets {progress_at_kill}"
        expected = expected_totals(feed.records, feed.registered)
        assert segment_totals(store) == expected
        assert seller_daily_totals(store) == expected
        issuers = store.query_rows("SELECT uniqExactMerge(issuers) FROM segment_daily")[0][0]
        assert issuers == len({r.seller_id for r in valid})
    finally:
        store.close()

    dlq = read_topic(settings, settings.topics.invoices_dlq)
    assert Counter(r.value for r in dlq) == Counter(r.value for r in feed.malformed)
    assert len({(r.partition, int(dict(r.headers)[H_SOURCE_OFFSET])) for r in dlq}) == len(dlq)

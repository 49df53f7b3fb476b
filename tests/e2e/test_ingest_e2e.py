"""The ingest slice end to end on the real broker and chDB: exact counts everywhere."""

from __future__ import annotations

from collections import Counter

import pytest

from simulator.feed import MALFORMED_REASON
from sinks.dead_letter import H_REASON, H_SOURCE_OFFSET, H_SOURCE_PARTITION, H_SOURCE_TOPIC
from tests.support import (
    PublishedFeed,
    consume_all,
    expected_totals,
    open_store,
    read_topic,
    segment_totals,
    seller_daily_totals,
    start_worker,
    wait_consumed,
)

EXPECTED_REASON = MALFORMED_REASON  # simulator kind -> the DLQ reason the worker must give


@pytest.mark.parametrize("core", ["compiled", "reference"])
def test_feed_is_ingested_exactly(settings, core):
    """On the compiled batch core (native/, `make native`) and on the Python reference: the same outcome."""
    settings = settings.replace(batch_core=core)
    feed = PublishedFeed(settings, sellers=400, invoices=6000, seed=7, unregistered=25)
    worker = start_worker(settings)
    try:
        assert worker.get_json("/health")["batch_core"]["kind"] == core
        wait_consumed(settings, worker, timeout=180)
        metrics = worker.metrics()
    finally:
        worker.stop()

    valid = feed.valid
    assert len({(r.seller_id, r.invoice_code) for r in valid}) == len(valid)
    duplicates = [r for r in feed.records if r.kind == "duplicate"]
    assert duplicates, "the feed must hold duplicates for this test to mean anything"

    # Prometheus figures of the run
    def metric(name, **labels):
        return sum(
            v for (n, ls), v in metrics.items() if n == name and all(dict(ls).get(k) == x for k, x in labels.items())
        )

    assert metric("einvoice_events_total", topic=settings.topics.invoices) == len(feed.records)
    # the compiled core unpacked every fetch of the invoice topic; the reference left them all to aiokafka's fetcher
    fetches = (metric("einvoice_fetches_total", reader="core"), metric("einvoice_fetches_total", reader="aiokafka"))
    assert (fetches[0] > 0 and fetches[1] == 0) if core == "compiled" else fetches == (0, 0), fetches
    assert metric("einvoice_duplicates_total") == len(duplicates)
    assert metric("einvoice_rejected_total", topic=settings.topics.invoices) == len(feed.malformed)
    assert metric("einvoice_rows_inserted_total", table="invoices") == len(valid)
    unregistered = [r for r in valid if r.seller_id not in feed.registered]
    assert unregistered
    assert metric("einvoice_unregistered_total") == len(unregistered)

    store = open_store(settings)
    try:
        rows = store.query_rows("SELECT seller_id, invoice_code, registered, vsic_code, admin_unit_code FROM invoices")
        assert len(rows) == len(valid)
        assert {(s, c) for s, c, *_ in rows} == {(r.seller_id, r.invoice_code) for r in valid}
        for seller_id, _code, registered, vsic, unit in rows:
            if seller_id in feed.registered:
                assert (registered, vsic, unit) == (1, *feed.registered[seller_id])
            else:
                assert (registered, vsic, unit) == (0, "", "")
        expected = expected_totals(feed.records, feed.registered)
        assert segment_totals(store) == expected
        assert seller_daily_totals(store) == expected
        issuers = store.query_rows("SELECT uniqExactMerge(issuers) FROM segment_daily")[0][0]
        assert issuers == len({r.seller_id for r in valid})
        # local day: an invoice issued at 23:59 local belongs to that day, not the UTC one
        late_evening = [r for r in valid if r.issued_at.hour == 23]
        assert late_evening
        sample = late_evening[0]
        day = store.query_rows(
            "SELECT issue_date, toHour(issued_at) FROM invoices "
            "WHERE seller_id = {s:String} AND invoice_code = {c:String}",
            {"s": sample.seller_id, "c": sample.invoice_code},
        )[0]
        assert day == (sample.issued_at.date(), 23)
        assert store.query_rows("SELECT count() FROM registry_history FINAL")[0][0] == len(feed.in_registry)
        assert store.query_rows("SELECT count() FROM pipeline_metrics")[0][0] > 0
        names = {n for (n,) in store.query_rows("SELECT name FROM admin_units WHERE level = 'district'")}
        assert len(names) == 27 and "Huyện Mường Lát" in names
    finally:
        store.close()

    dlq = read_topic(settings, settings.topics.invoices_dlq)
    assert len(dlq) == len(feed.malformed)
    assert Counter(r.value for r in dlq) == Counter(r.value for r in feed.malformed)
    by_value = {r.value: EXPECTED_REASON[r.kind.split(":", 1)[1]] for r in feed.malformed}
    seen_sources = set()
    for record in dlq:
        headers = dict(record.headers)
        assert headers[H_REASON].decode() == by_value[record.value]
        assert headers[H_SOURCE_TOPIC].decode() == settings.topics.invoices
        assert int(headers[H_SOURCE_PARTITION]) == record.partition
        seen_sources.add((record.partition, int(headers[H_SOURCE_OFFSET])))
    assert len(seen_sources) == len(dlq)


def test_restart_applies_no_migration_twice_and_keeps_counts(settings):
    feed = PublishedFeed(settings, sellers=100, invoices=1500, seed=11)
    for _ in range(2):
        consume_all(settings, timeout=120)
    store = open_store(settings)
    try:
        assert store.query_rows("SELECT count() FROM invoices")[0][0] == len(feed.valid)
        from sinks.clickhouse.migrate import MIGRATIONS_DIR

        versions = store.query_rows("SELECT version, count() FROM schema_migrations GROUP BY version ORDER BY version")
        assert [v for v, _ in versions] == sorted(int(p.name[:4]) for p in MIGRATIONS_DIR.glob("*.sql"))
        assert all(n == 1 for _, n in versions)
    finally:
        store.close()


def test_a_partition_whose_registry_another_worker_consumed_joins_every_registered_seller(settings):
    """As after a takeover: the group's registry offsets are at the end, and Faust's changelog holds nothing yet.

    The worker must not join against a table that only the changelog would fill, later: it reads each
    registry partition from the log start before its first invoices (streams.app.Pipeline.catch_up_registry).
    From the committed offset, as it did, every invoice here came out unregistered.
    """
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    feed = PublishedFeed(settings, sellers=400, invoices=6_000, seed=21, unregistered=5)
    topic = settings.topics.registry
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_brokers, group_id=settings.app_id,
                             enable_auto_commit=False)  # fmt: skip
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        ends = consumer.end_offsets(partitions)
        consumer.commit({tp: OffsetAndMetadata(ends[tp], "", -1) for tp in partitions})
    finally:
        consumer.close()
    assert sum(ends.values()) == len(feed.in_registry)
    consume_all(settings)
    store = open_store(settings)
    try:
        assert segment_totals(store) == expected_totals(feed.records, feed.registered)
    finally:
        store.close()

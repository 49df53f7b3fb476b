"""Rewinding the worker's consumer group on the real broker, then letting the real worker replay.

What must hold: the dry run's numbers are what then happens; a rewind by time reprocesses exactly
the records received from that time on; replaying what ClickHouse already holds changes nothing,
however often; the rewind refuses while the worker runs, unless told to stop it or forced.
"""

from __future__ import annotations

import json
from collections import Counter

from replay.audit import AuditLog
from replay.ranges import parse_instant
from tests.support import (
    PublishedFeed,
    committed_offsets,
    end_offsets,
    expected_totals,
    open_store,
    read_topic,
    run_cli,
    segment_totals,
    seller_daily_totals,
    start_worker,
    wait_consumed,
    wait_until,
)

CUTOFF = "2024-06-02T12:00"  # local time, Asia/Ho_Chi_Minh


def worker_counts(worker, settings):
    topic = settings.topics.invoices
    return {
        "events": worker.metric_sum("einvoice_events_total", topic=topic),
        "inserted": worker.metric_sum("einvoice_rows_inserted_total", table="invoices"),
        "skipped": worker.metric_sum("einvoice_replayed_skipped_total"),
        "duplicates": worker.metric_sum("einvoice_duplicates_total"),
        "rejected": worker.metric_sum("einvoice_rejected_total", topic=topic),
    }


def clickhouse_state(settings):
    store = open_store(settings)
    try:
        count = store.query_rows("SELECT count(), uniqExact(seller_id, invoice_code) FROM invoices")[0]
        return count, segment_totals(store), seller_daily_totals(store)
    finally:
        store.close()


def test_rewind_by_time_reprocesses_exactly_the_range_the_dry_run_announced(settings):
    feed = PublishedFeed(settings, sellers=150, invoices=2000, seed=21, unregistered=5)
    topic = settings.topics.invoices
    on_topic = read_topic(settings, topic)
    cutoff_ms = parse_instant(CUTOFF)
    # independent expectation: per partition, everything from the first record received at or after the cutoff
    first_at = {}
    for record in sorted(on_topic, key=lambda r: (r.partition, r.offset)):
        if record.timestamp >= cutoff_ms:
            first_at.setdefault(record.partition, record.offset)
    ends = end_offsets(settings, topic)
    expected = {p: ends[p] - first_at.get(p, ends[p]) for p in ends}
    in_range = [r for r in on_topic if r.offset >= first_at.get(r.partition, ends[r.partition])]
    kinds = {(r.key, r.value, r.timestamp_ms): r.kind for r in feed.records}
    malformed_in_range = sum(kinds[(r.key, r.value, r.timestamp)].startswith("malformed:") for r in in_range)
    assert 0 < sum(expected.values()) < len(on_topic) and malformed_in_range > 0

    worker = start_worker(settings)
    live_pid = worker.proc.pid
    try:
        wait_consumed(settings, worker, timeout=180)
        dry = run_cli(settings, "replay", "rewind", "--to-time", CUTOFF, "--dry-run", "--json")
        assert dry.exit_code == 0, dry.output
        plan = json.loads(dry.stdout)
        assert {p["partition"]: p["reprocess"] for p in plan["partitions"]} == expected
        targets = {p: ends[p] - n for p, n in expected.items()}
        assert {p["partition"]: p["target"] for p in plan["partitions"]} == targets
        assert plan["active_members"], "the worker runs: the dry run names it"

        refused = run_cli(settings, "replay", "rewind", "--to-time", CUTOFF, "--yes")
        assert refused.exit_code == 3
        said = " ".join(refused.stderr.split())  # Rich wraps long lines
        assert "1 active member(s)" in said and "--stop-workers" in said
        assert committed_offsets(settings, topic) == ends, "a refused rewind moves nothing"

        done = run_cli(settings, "replay", "rewind", "--to-time", CUTOFF, "--yes", "--stop-workers")
        assert done.exit_code == 0, done.output
        assert not worker.running, "--stop-workers stopped the worker (SIGTERM, clean exit)"
        assert worker.proc.returncode == 0
    finally:
        worker.stop()
    assert committed_offsets(settings, topic) == targets
    before = clickhouse_state(settings)
    assert before[0] == (len(feed.valid), len(feed.valid))

    worker = start_worker(settings, name="worker-replay")
    try:
        wait_consumed(settings, worker, timeout=180)
        counts = worker_counts(worker, settings)
    finally:
        worker.stop()
    # exactly the announced records were read again; none was written again
    assert counts["events"] == sum(expected.values()) == plan["reprocess"]
    assert counts["inserted"] == 0
    assert counts["rejected"] == malformed_in_range
    assert counts["skipped"] + counts["duplicates"] == sum(expected.values()) - malformed_in_range
    after = clickhouse_state(settings)
    assert after == before
    assert after[1] == expected_totals(feed.records, feed.registered)
    assert len(read_topic(settings, settings.topics.invoices_dlq)) == len(feed.malformed), "no dead letter twice"

    audit = [e for e in AuditLog(settings.data_dir).entries() if e["action"] == "rewind"]
    assert [e["result"] for e in audit] == ["dry_run", "refused", "ok"]
    for entry in audit:
        assert entry["user"] and entry["host"] and entry["at"]
        assert entry["target"] == {"group": settings.app_id, "topics": [topic], "partitions": "all",
                                   "to": "time 2024-06-02T12:00:00+07:00"}  # fmt: skip
    assert audit[2]["detail"]["stopped_pids"] == [live_pid]
    assert audit[2]["detail"]["plan"]["reprocess"] == sum(expected.values())


def test_replaying_the_whole_topic_twice_leaves_the_counts_equal(settings):
    feed = PublishedFeed(settings, sellers=150, invoices=2000, seed=5)
    topic = settings.topics.invoices
    total = sum(end_offsets(settings, topic).values())
    worker = start_worker(settings)
    try:
        wait_consumed(settings, worker, timeout=180)
        first = worker_counts(worker, settings)
        assert first["inserted"] == len(feed.valid)
        for rounds in (2, 3):
            # --force while the worker runs: it is removed from the group, rejoins and reads everything again
            result = run_cli(settings, "replay", "rewind", "--to-earliest", "--force", "--yes")
            assert result.exit_code == 0, result.output
            wait_until(lambda rounds=rounds: worker_counts(worker, settings)["events"] == rounds * total, 120,
                       f"replay number {rounds - 1}", worker)  # fmt: skip
            wait_consumed(settings, worker, timeout=120)
        counts = worker_counts(worker, settings)
    finally:
        worker.stop()
    assert counts["events"] == 3 * total
    assert counts["inserted"] == len(feed.valid), "nothing written twice"
    assert counts["rejected"] == 3 * len(feed.malformed)
    duplicates = sum(r.kind == "duplicate" for r in feed.records)
    assert counts["skipped"] == 2 * (len(feed.valid) + duplicates) - (counts["duplicates"] - duplicates)
    count, totals, seller_totals = clickhouse_state(settings)
    assert count == (len(feed.valid), len(feed.valid))
    expected = expected_totals(feed.records, feed.registered)
    assert totals == expected and seller_totals == expected
    dlq = read_topic(settings, settings.topics.invoices_dlq)
    assert Counter(r.value for r in dlq) == Counter(r.value for r in feed.malformed), "each dead letter once"

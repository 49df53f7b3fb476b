"""Archives on the real broker: the round trip reproduces ClickHouse, ranges are exact, damage is found."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from kafka.admin import KafkaAdminClient

from deploy.kafka import free_port
from kafka_io.topics import create_topics
from replay.archive import STATE, plan_archive, read_records, write_archive
from replay.audit import AuditLog
from replay.ranges import parse_instant
from simulator.archive import MANIFEST
from tests.support import (
    PublishedFeed,
    consume_all,
    open_store,
    read_topic,
    run_cli,
    segment_totals,
    seller_daily_totals,
)


def as_stored(records):
    """What must survive a round trip: where, and every byte of it."""
    return sorted((r.partition, r.offset, r.key, r.value, r.timestamp, tuple(r.headers)) for r in records)


def clickhouse_figures(settings):
    store = open_store(settings)
    try:
        return (store.query_rows("SELECT count() FROM invoices")[0][0], segment_totals(store),
                seller_daily_totals(store), store.query_rows("SELECT uniqExactMerge(issuers) FROM segment_daily")[0][0],
                store.query_rows("SELECT count() FROM registry_history FINAL")[0][0])  # fmt: skip
    finally:
        store.close()


def delete_topics(settings, topics):
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_brokers)
    try:
        admin.delete_topics(topics)
        deadline = time.monotonic() + 60
        while set(topics) & set(admin.list_topics()):
            assert time.monotonic() < deadline, "topics not deleted"
            time.sleep(0.2)
    finally:
        admin.close()
    deadline = time.monotonic() + 60
    while True:  # a topic marked for deletion cannot be created again for a moment
        try:
            create_topics(settings.kafka_brokers, settings)
            return
        except Exception:
            assert time.monotonic() < deadline, "topics not recreated"
            time.sleep(0.5)


def test_archive_delete_publish_ingest_reproduces_the_clickhouse_totals(settings, tmp_path):
    feed = PublishedFeed(settings, sellers=150, invoices=2000, seed=33, unregistered=5)
    consume_all(settings, timeout=180)
    topics = [settings.topics.invoices, settings.topics.registry, settings.topics.invoices_dlq]
    original = {t: as_stored(read_topic(settings, t)) for t in topics}
    assert len(original[settings.topics.invoices_dlq]) == len(feed.malformed) > 0  # records with headers
    figures = clickhouse_figures(settings)
    assert figures[0] == len(feed.valid)

    out = tmp_path / "archive"
    result = run_cli(settings, "replay", "archive", "--out", str(out), "--topic", "invoices", "--topic", "registry",
                     "--topic", "invoices_dlq", "--file-records", "700")  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["records"] == sum(len(v) for v in original.values())
    for entry in manifest["files"]:
        assert {"topic", "partition", "first_offset", "last_offset", "records", "sha256"} <= set(entry)
        assert entry["records"] <= 700
    assert {(f["topic"], f["partition"]) for f in manifest["files"]} >= {
        (settings.topics.invoices, p) for p in range(4)
    }
    verified = run_cli(settings, "replay", "verify", str(out))
    assert verified.exit_code == 0, verified.output

    # the history is gone: topics deleted and created empty; a fresh deployment (group, chDB) takes over
    delete_topics(settings, topics)
    assert all(not read_topic(settings, t) for t in topics)
    fresh = settings.replace(data_dir=tmp_path / "fresh", app_id=f"einvoice-test-{uuid.uuid4().hex[:8]}",
                             web_port=free_port())  # fmt: skip
    create_topics(fresh.kafka_brokers, fresh)
    published = run_cli(fresh, "replay", "publish", str(out))
    assert published.exit_code == 0, published.output
    for topic in topics:
        assert as_stored(read_topic(settings, topic)) == original[topic], f"{topic}: keys, values, timestamps, headers"

    consume_all(fresh, name="worker-fresh", timeout=180)
    assert clickhouse_figures(fresh) == figures
    assert len(read_topic(settings, settings.topics.invoices_dlq)) == len(feed.malformed), "no dead letter twice"
    # publishing the same archive again is refused: it was published, and the topic holds its records
    again = run_cli(fresh, "replay", "publish", str(out))
    assert again.exit_code == 3 and "published to these topics already" in " ".join(again.stderr.split())
    again = run_cli(fresh, "replay", "publish", str(out), "--again")
    assert again.exit_code == 3 and "still holds the archived records" in " ".join(again.stderr.split())
    assert as_stored(read_topic(settings, settings.topics.invoices)) == original[settings.topics.invoices]


def test_archive_by_time_is_exact_resumes_after_interruption_and_verify_finds_damage(settings, tmp_path):
    PublishedFeed(settings, sellers=100, invoices=1500, seed=8)
    topic = settings.topics.invoices
    start_ms, end_ms = parse_instant("2024-06-01T18:00"), parse_instant("2024-06-02T18:00+07:00")
    on_topic = sorted(read_topic(settings, topic), key=lambda r: (r.partition, r.offset))
    first, stop = {}, {}
    for r in on_topic:
        if r.timestamp >= start_ms:
            first.setdefault(r.partition, r.offset)
        if r.timestamp >= end_ms:
            stop.setdefault(r.partition, r.offset)
    expected = [r for r in on_topic if first.get(r.partition, 1 << 62) <= r.offset < stop.get(r.partition, 1 << 62)]
    assert 0 < len(expected) < len(on_topic)

    plan = plan_archive(settings.kafka_brokers, [topic], None, from_ms=start_ms, to_ms=end_ms, file_records=200)
    assert plan.records == len(expected)
    reference, _ = write_archive(settings.kafka_brokers, plan, tmp_path / "a")
    archived = [rec for f in reference["files"] for rec in read_records(tmp_path / "a" / f["path"])]
    assert [(r["partition"], r["offset"], r["key"], r["value"]) for r in archived] == [
        (r.partition, r.offset, r.key, r.value) for r in expected
    ]

    def interrupt_after(limit):
        seen = [0]

        def on_progress(n):
            seen[0] += n
            if seen[0] >= limit:
                raise KeyboardInterrupt

        return on_progress

    resumed_dir = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        write_archive(settings.kafka_brokers, plan, resumed_dir, interrupt_after(450))
    assert (resumed_dir / STATE).exists() and not (resumed_dir / MANIFEST).exists()
    done_before = json.loads((resumed_dir / STATE).read_text())["files"]
    assert done_before, "some files were finished before the interruption"
    resumed, written = write_archive(settings.kafka_brokers, plan, resumed_dir)
    assert written == len(expected) - sum(f["records"] for f in done_before)
    assert not (resumed_dir / STATE).exists()
    strip = [{k: f[k] for k in ("path", "records", "sha256", "first_offset", "last_offset")} for f in resumed["files"]]
    assert strip == [{k: f[k] for k in ("path", "records", "sha256", "first_offset", "last_offset")}
                     for f in reference["files"]], "byte-identical to the uninterrupted archive"  # fmt: skip

    ok = run_cli(settings, "replay", "verify", str(resumed_dir))
    assert ok.exit_code == 0, ok.output
    files = [resumed_dir / f["path"] for f in resumed["files"]]
    damaged = bytearray(files[0].read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    files[0].write_bytes(bytes(damaged))
    files[1].unlink()
    (files[2].parent / "stray.avro").write_bytes(files[2].read_bytes())
    bad = run_cli(settings, "replay", "verify", str(resumed_dir))
    assert bad.exit_code == 1
    said = " ".join(bad.stderr.split())  # Rich wraps long lines
    assert f"{resumed['files'][0]['path']}: sha256" in said
    assert f"{resumed['files'][1]['path']}: missing" in said
    assert "stray.avro: not in the manifest" in said
    results = [e["result"] for e in AuditLog(settings.data_dir).entries()]
    assert results == ["ok", "damaged"]

    # by offsets: partition 1 from 20 (inclusive) to 170 (exclusive), interrupted and resumed as well
    by_offset = plan_archive(settings.kafka_brokers, [topic], [1], from_offsets={1: 20}, to_offsets={1: 170},
                             file_records=50)  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        write_archive(settings.kafka_brokers, by_offset, tmp_path / "c", interrupt_after(75))
    manifest, _ = write_archive(settings.kafka_brokers, by_offset, tmp_path / "c")
    assert [(f["first_offset"], f["last_offset"]) for f in manifest["files"]] == [(20, 69), (70, 119), (120, 169)]

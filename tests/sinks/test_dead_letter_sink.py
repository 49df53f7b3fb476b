"""The DLQ writer on the session's real broker: record batches per partition, order and bytes kept."""

from __future__ import annotations

import asyncio

from base.config import Settings
from kafka_io.topics import create_topics
from sinks.dead_letter import (
    H_ORIGINAL,
    H_SOURCE_OFFSET,
    MAX_BATCH_BYTES,
    DeadLetter,
    DeadLetterSink,
    KafkaDeadLetterLog,
)
from tests.support import read_topic


def letter(partition: int, offset: int, value: bytes) -> DeadLetter:
    return DeadLetter(
        source_topic="einvoice.issued", source_partition=partition, source_offset=offset, key=b"k%d" % offset,
        value=value, timestamp_ms=1_717_000_000_000 + offset, headers=(("trace", b"t"),), reason="malformed",
        detail=f"bad record {offset}",
    )  # fmt: skip


def test_many_letters_and_an_oversized_one_land_in_source_order_across_record_batches(settings: Settings) -> None:
    bootstrap = settings.kafka_brokers or ""
    create_topics(bootstrap, settings)
    topic = settings.topics.invoices_dlq
    # partition 0: ~3 MB of letters (several record batches of at most MAX_BATCH_BYTES) with one
    # letter larger than the DLQ's limit in the middle; partition 1: a single letter
    sizes = {offset: 1_000 + offset % 7 for offset in range(3_000)}
    sizes[1_500] = 5 * 1024 * 1024
    pending = {
        0: [letter(0, offset, bytes([offset % 251]) * size) for offset, size in sizes.items()],
        1: [letter(1, 42, b"lonely")],
    }
    assert sum(sizes.values()) - sizes[1_500] > 4 * MAX_BATCH_BYTES

    async def write() -> tuple[dict[int, int], dict[int, int]]:
        sink = DeadLetterSink(KafkaDeadLetterLog(bootstrap, topic))
        await sink.start()
        try:
            written = await sink.write(pending)
            return written, await sink.progress([0, 1])
        finally:
            await sink.stop()

    written, progress = asyncio.run(write())
    assert written == progress == {0: 2_999, 1: 42}
    records = read_topic(settings, topic)
    by_partition = {p: [r for r in records if r.partition == p] for p in (0, 1)}
    assert [int(dict(r.headers)[H_SOURCE_OFFSET]) for r in by_partition[0]] == list(range(3_000))
    assert [r.value for r in by_partition[1]] == [b"lonely"]
    for record in by_partition[0]:
        offset = int(dict(record.headers)[H_SOURCE_OFFSET])
        assert record.timestamp == 1_717_000_000_000 + offset and record.key == b"k%d" % offset
        if offset == 1_500:  # cut to fit the topic, and says so
            assert len(record.value) < sizes[offset]
            assert dict(record.headers)[f"{H_ORIGINAL}.value.bytes"] == str(sizes[offset]).encode()
        else:
            assert record.value == bytes([offset % 251]) * sizes[offset]
            assert dict(record.headers)["trace"] == b"t"

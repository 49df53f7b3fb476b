"""Offsets the pipeline owns: where a partition starts, holes in what Faust delivered, commits.

faust-streaming can drop a message at the head of a partition after a restart (the flow is
suspended while tables recover) and then either stall its commits or, when exactly one
message is missing, commit past it (faust-streaming issues #312 and #606). So the pipeline
does not trust Faust's ack bookkeeping: it knows the offset each partition must continue
from, fetches any hole straight from Kafka, and commits the offsets it has processed itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential_jitter

from contracts.records import SourceRecord

log = logging.getLogger(__name__)

# A partition's first records can arrive while the broker is briefly away (a restart): the reads
# that set it up wait for it, as the worker's own consumer does, instead of ending the process.
through_outage = retry(
    retry=retry_if_exception(lambda exc: isinstance(exc, KafkaError) and exc.retriable),
    wait=wait_exponential_jitter(multiplier=0.2, max=5),
    stop=stop_after_delay(60),
    reraise=True,
)


@through_outage
def group_positions(bootstrap: str, group: str, topic: str, partitions: Sequence[int]) -> dict[int, int]:
    """Where the group continues each partition: its committed offset, else the log start (blocking)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{group}-positions")
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    committed = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0}
    missing = [p for p in partitions if p not in committed]
    if missing:
        committed.update(_log_bounds(bootstrap, topic, missing, end=False))
    return {p: committed[p] for p in partitions}


def _log_bounds(bootstrap: str, topic: str, partitions: Sequence[int], end: bool) -> dict[int, int]:
    """Each partition's log start, or its end (high watermark), as the broker says (blocking)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [KafkaTopicPartition(topic, p) for p in partitions]
        found = consumer.end_offsets(tps) if end else consumer.beginning_offsets(tps)
    finally:
        consumer.close()
    return {tp.partition: offset for tp, offset in found.items()}


@through_outage
def start_offsets(bootstrap: str, topic: str, partitions: Sequence[int]) -> dict[int, int]:
    """The current start (log start offset) of each partition (blocking)."""
    return _log_bounds(bootstrap, topic, partitions, end=False)


@through_outage
def end_offsets(bootstrap: str, topic: str, partitions: Sequence[int]) -> dict[int, int]:
    """The current end (high watermark) of each partition (blocking)."""
    return _log_bounds(bootstrap, topic, partitions, end=True)


def group_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, tuple[int, int]]:
    """Per partition of ``topic``: (its end, where the group continues), as the broker says (blocking)."""
    every = list(range(partitions))
    ends = end_offsets(bootstrap, topic, every)
    positions = group_positions(bootstrap, group, topic, every)
    return {p: (ends[p], positions[p]) for p in every}


def missing_ranges(offsets: Sequence[int], expected: int) -> list[tuple[int, int]]:
    """Half-open ranges of offsets from ``expected`` up to the last given that are absent."""
    holes = []
    cursor = expected
    for offset in offsets:
        if offset > cursor:
            holes.append((cursor, offset))
        cursor = max(cursor, offset + 1)
    return holes


async def fetch_range(bootstrap: str, topic: str, partition: int, start: int, end: int) -> list[SourceRecord]:
    """The records of ``[start, end)`` that exist (control records and compacted ones do not)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        found: list[SourceRecord] = []
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for record in batch.get(tp, []):
                if record.offset < end:
                    found.append(SourceRecord.from_kafka(record))
        return found
    finally:
        await consumer.stop()

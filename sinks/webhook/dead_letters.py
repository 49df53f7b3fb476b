"""The alert DLQ (``adoption.alerts.dlq``): events an endpoint did not take, with the last error.

Key ``<endpoint>/<event id>``; the value keeps the exact payload that was signed, so a redelivery sends
the same body under the same ``webhook-id``. A successful redelivery writes a tombstone for the key, so
the newest record per key says whether it is still pending (and compaction can drop both).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition

from base.kafka import DURABLE_PRODUCER

H_EVENT_ID = "event_id"
H_REASON = "dlq.reason"
H_DETAIL = "dlq.detail"
H_ENDPOINT = "dlq.endpoint"
H_SOURCE_TOPIC = "dlq.source.topic"
H_SOURCE_PARTITION = "dlq.source.partition"
H_SOURCE_OFFSET = "dlq.source.offset"
H_RESOLVED = "dlq.resolved"


@dataclass(frozen=True)
class DeadLetteredEvent:
    endpoint: str
    event_id: str
    reason: str  # exhausted, rejected, gone, unsafe_url, malformed
    last_error: str
    last_status: int
    attempts: int
    first_attempt_at: float | None
    last_attempt_at: float
    source_topic: str
    source_partition: int
    source_offset: int
    payload: Mapping[str, Any]
    event: Mapping[str, Any]

    @property
    def key(self) -> bytes:
        return dlq_key(self.endpoint, self.event_id)

    def value(self) -> bytes:
        return json.dumps(
            {
                "endpoint": self.endpoint, "event_id": self.event_id, "reason": self.reason,
                "last_error": self.last_error, "last_status": self.last_status, "attempts": self.attempts,
                "first_attempt_at": self.first_attempt_at, "last_attempt_at": self.last_attempt_at,
                "source": {
                    "topic": self.source_topic, "partition": self.source_partition, "offset": self.source_offset,
                },
                "payload": self.payload, "event": self.event,
            },
            ensure_ascii=False,
        ).encode()  # fmt: skip

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (H_EVENT_ID, self.event_id.encode()),
            (H_REASON, self.reason.encode()),
            (H_DETAIL, self.last_error.encode("utf-8", "replace")[:2000]),
            (H_ENDPOINT, self.endpoint.encode()),
            (H_SOURCE_TOPIC, self.source_topic.encode()),
            (H_SOURCE_PARTITION, str(self.source_partition).encode()),
            (H_SOURCE_OFFSET, str(self.source_offset).encode()),
        ]

    @classmethod
    def from_value(cls, value: bytes) -> DeadLetteredEvent:
        raw = json.loads(value)
        source = raw.get("source") or {}
        return cls(
            raw["endpoint"], raw["event_id"], raw["reason"], raw.get("last_error", ""), int(raw.get("last_status", 0)),
            int(raw.get("attempts", 0)), raw.get("first_attempt_at"), float(raw.get("last_attempt_at", 0.0)),
            source.get("topic", ""), int(source.get("partition", -1)), int(source.get("offset", -1)),
            raw.get("payload") or {}, raw.get("event") or {},
        )  # fmt: skip


def dlq_key(endpoint: str, event_id: str) -> bytes:
    return f"{endpoint}/{event_id}".encode()


class DeadLetterWriter:
    """An idempotent producer, acks=all: a record is durable before the source offset is committed."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, **DURABLE_PRODUCER)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send(self, letter: DeadLetteredEvent) -> None:
        assert self._producer is not None, "DeadLetterWriter.start() first"
        await self._producer.send_and_wait(self.topic, key=letter.key, value=letter.value(), headers=letter.headers())

    async def resolve(self, endpoint: str, event_id: str) -> None:
        """A tombstone: the event was delivered after all."""
        assert self._producer is not None, "DeadLetterWriter.start() first"
        headers = [(H_EVENT_ID, event_id.encode()), (H_ENDPOINT, endpoint.encode()), (H_RESOLVED, b"delivered")]
        await self._producer.send_and_wait(self.topic, key=dlq_key(endpoint, event_id), value=None, headers=headers)


def read_pending_sync(bootstrap: str, topic: str) -> list[DeadLetteredEvent]:
    """The newest record of every key, read from the start to the current end; tombstoned keys left out."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=2000)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise LookupError(f"topic {topic} does not exist; run `einvoice-monitor topics create`")
        tps = [KafkaTopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        newest: dict[bytes, DeadLetteredEvent | None] = {}
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=1000).values():
                for record in records:
                    if record.key is None:
                        continue
                    newest[record.key] = None if record.value is None else DeadLetteredEvent.from_value(record.value)
        return [letter for letter in newest.values() if letter is not None]
    finally:
        consumer.close()


async def read_pending(bootstrap: str, topic: str) -> list[DeadLetteredEvent]:
    return await asyncio.to_thread(read_pending_sync, bootstrap, topic)

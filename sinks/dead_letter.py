"""The dead-letter writer: rejected records keep their bytes and gain headers that say why.

A rejected record goes to the DLQ partition with the same number as its source partition, in
source-offset order, so the newest DLQ record of a partition tells how far the DLQ got. After a
crash :meth:`DeadLetterSink.progress` reads that back and the pipeline does not send twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

log = logging.getLogger(__name__)

H_REASON = "dlq.reason"
H_DETAIL = "dlq.detail"
H_SOURCE_TOPIC = "dlq.source.topic"
H_SOURCE_PARTITION = "dlq.source.partition"
H_SOURCE_OFFSET = "dlq.source.offset"


@dataclass(frozen=True)
class DeadLetter:
    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None
    headers: Sequence[tuple[str, bytes]]
    reason: str
    detail: str

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        own = [
            (H_REASON, self.reason.encode()),
            (H_DETAIL, self.detail.encode("utf-8", "replace")[:2000]),
            (H_SOURCE_TOPIC, self.source_topic.encode()),
            (H_SOURCE_PARTITION, str(self.source_partition).encode()),
            (H_SOURCE_OFFSET, str(self.source_offset).encode()),
        ]
        return [*(h for h in self.headers if not h[0].startswith("dlq.")), *own]


@dataclass
class DeadLetterSink:
    """Buffers dead letters per source partition; :meth:`flush` sends and waits for acks=all."""

    bootstrap: str
    topic: str
    _producer: AIOKafkaProducer | None = None
    _pending: dict[int, list[DeadLetter]] = field(default_factory=dict)

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def add(self, letter: DeadLetter) -> None:
        self._pending.setdefault(letter.source_partition, []).append(letter)

    def discard(self, partition: int) -> None:
        self._pending.pop(partition, None)

    async def flush(self) -> dict[int, int]:
        """Send every buffered dead letter, wait for acks=all; returns the last source offset per partition."""
        pending, self._pending = self._pending, {}
        if not pending:
            return {}
        assert self._producer is not None, "DeadLetterSink.start() first"
        futures = [
            await self._producer.send(
                self.topic,
                value=letter.value,
                key=letter.key,
                partition=partition,
                timestamp_ms=letter.timestamp_ms,
                headers=letter.kafka_headers(),
            )
            for partition, letters in pending.items()
            for letter in letters
        ]
        await asyncio.gather(*futures)
        return {partition: letters[-1].source_offset for partition, letters in pending.items() if letters}

    async def progress(self, partitions: Sequence[int]) -> dict[int, int]:
        """Highest source offset already dead-lettered per partition (-1 when none)."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            result = {p: -1 for p in partitions}
            for tp in tps:
                if ends[tp] == 0:
                    continue
                consumer.seek(tp, ends[tp] - 1)
                records = []
                for _ in range(30):  # a fetch may come back empty while the broker warms up
                    records = (await consumer.getmany(tp, timeout_ms=1_000)).get(tp, [])
                    if records:
                        break
                if not records:
                    raise RuntimeError(f"could not read the last record of {tp}; is the broker healthy?")
                headers = dict(records[-1].headers or ())
                result[tp.partition] = int(headers.get(H_SOURCE_OFFSET, b"-1"))
            return result
        finally:
            await consumer.stop()


class DiscardingDeadLetterSink(DeadLetterSink):
    """Keeps the bookkeeping, sends nothing: a rebuild worker must not write the live DLQ a second time."""

    async def start(self) -> None:
        return None

    async def flush(self) -> dict[int, int]:
        pending, self._pending = self._pending, {}
        return {partition: letters[-1].source_offset for partition, letters in pending.items() if letters}

    async def progress(self, partitions: Sequence[int]) -> dict[int, int]:
        return dict.fromkeys(partitions, -1)

"""The dead-letter writer: rejected records keep their bytes and gain headers that say why.

A rejected record goes to the DLQ partition with the same number as its source partition, in
source-offset order, so the newest DLQ record of a partition tells how far the DLQ got. After a
crash :meth:`DeadLetterSink.progress` reads that back and the pipeline does not send twice.

A dead letter must always fit the DLQ topic, or the worker could never get past its record: the
source topic accepted it (compressed, so maybe far larger than the limit uncompressed) and our
headers make it bigger still. So a dead letter larger than the DLQ topic's ``max.message.bytes``
keeps a prefix of its value (then of its key) and says so in headers with the original size and
SHA-256; everything smaller, which is every record a default-configured source topic accepts
uncompressed (the DLQ topics are created with twice Kafka's default limit), keeps its bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from base.kafka import DURABLE_PRODUCER
from contracts.records import SourceRecord
from contracts.validation import Rejection
from kafka_io.topics import KAFKA_DEFAULT_MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

H_REASON = "dlq.reason"
H_DETAIL = "dlq.detail"
H_SOURCE_TOPIC = "dlq.source.topic"
H_SOURCE_PARTITION = "dlq.source.partition"
H_SOURCE_OFFSET = "dlq.source.offset"
H_ORIGINAL = "dlq.original"  # dlq.original.value.bytes / .sha256 (and .key.…): what a cut-down letter lost
MAX_BATCH_BYTES = 512 * 1024  # a record batch of many dead letters; one letter alone may be larger
MAX_DETAIL_BYTES = 2000  # dlq.detail is cut to this many bytes
# More than our own headers (the detail, a topic name of at most 249 ASCII characters, numbers) and a
# one-record batch's overhead can take (DeadLetter.obviously_fits).
OWN_HEADERS_BOUND = MAX_DETAIL_BYTES + 2048
HEADER_OVERHEAD_BOUND = 10  # a header's two length varints


def record_size(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> int:
    """Upper bound of the size of a one-record batch, uncompressed: what the broker compares with its limit."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, list(headers)))


def fit_record(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]], limit: int
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """Key, value and headers cut down to ``limit`` bytes: the value first, then the key, then foreign headers."""
    if record_size(key, value, headers) <= limit:
        return key, value, headers
    for name in ("value", "key"):
        data = value if name == "value" else key
        if not data or record_size(key, value, headers) <= limit:
            continue
        headers = [
            *headers,
            (f"{H_ORIGINAL}.{name}.bytes", str(len(data)).encode()),
            (f"{H_ORIGINAL}.{name}.sha256", hashlib.sha256(data).hexdigest().encode()),
        ]
        cut = data[: max(0, len(data) - (record_size(key, value, headers) - limit))]
        key, value = (key, cut) if name == "value" else (cut, value)
    if record_size(key, value, headers) > limit:  # the source's own headers were the bulk: keep only ours
        headers = [h for h in headers if h[0].startswith("dlq.")]
    return key, value, headers


async def topic_max_message_bytes(bootstrap: str, topic: str) -> int:
    """The topic's ``max.message.bytes`` (Kafka's default when it cannot be read)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})]
        )
        for response in responses:
            for _error, _message, _type, _name, entries in response.resources:
                for entry in entries:
                    if entry[0] == "max.message.bytes":
                        return int(entry[1])
    except Exception as exc:
        log.warning(
            "could not read max.message.bytes; assuming Kafka's default", extra={"topic": topic, "error": repr(exc)}
        )
    finally:
        await admin.close()
    return KAFKA_DEFAULT_MAX_MESSAGE_BYTES


@lru_cache(maxsize=1024)
def _header(name: str, text: str) -> tuple[str, bytes]:
    """A header of few values (a reason, a topic, a partition), made once: a dead letter is sent per rejected record."""
    return name, text.encode()


class DeadLetter(NamedTuple):
    """A rejected record and why (a tuple: built for every rejected record, a frozen dataclass costs 4x)."""

    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None
    headers: Sequence[tuple[str, bytes | None]]
    reason: str
    detail: str

    @classmethod
    def of(cls, topic: str, record: SourceRecord, rejection: Rejection) -> DeadLetter:
        """A rejected record of ``topic`` as its letter (a record without a timestamp has -1 for it)."""
        stamp = record.timestamp_ms if record.timestamp_ms >= 0 else None
        return cls(topic, record.partition, record.offset, record.key, record.value, stamp, record.headers,
                   rejection.reason, rejection.detail)  # fmt: skip

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        """The source record's headers (but its own dlq.* ones), then ours: why, and where it came from."""
        own = [
            _header(H_REASON, self.reason),
            (H_DETAIL, self.detail.encode("utf-8", "replace")[:MAX_DETAIL_BYTES]),
            _header(H_SOURCE_TOPIC, self.source_topic),
            _header(H_SOURCE_PARTITION, str(self.source_partition)),
            (H_SOURCE_OFFSET, str(self.source_offset).encode()),
        ]
        if not self.headers:
            return own
        return [*(h for h in self.headers if not h[0].startswith("dlq.")), *own]

    def obviously_fits(self, limit: int) -> bool:
        """Whether the letter is far below ``limit``, by a bound cheaper than :func:`record_size`: then it
        need not be measured and cut (:func:`fit_record`), the usual case, per rejected record."""
        size = len(self.key or b"") + len(self.value or b"") + OWN_HEADERS_BOUND
        for name, data in self.headers:  # a name's UTF-8 takes at most 4 bytes a character
            size += 4 * len(name) + len(data or b"") + HEADER_OVERHEAD_BOUND
        return size <= limit


class DeadLetterLog(Protocol):
    """Where dead letters go and what it already holds.

    The DLQ topic (:class:`KafkaDeadLetterLog`), nothing (:class:`DiscardingDeadLetterLog`, a rebuild), or a
    list (:class:`MemoryDeadLetterLog`, the tests).
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def write(self, pending: dict[int, list[DeadLetter]]) -> dict[int, int]:
        """Send these dead letters and wait until they are kept; returns the last source offset per partition."""
        ...

    async def progress(self, partitions: Sequence[int]) -> dict[int, int]:
        """Highest source offset already dead-lettered per partition (-1 when none)."""
        ...


@dataclass
class KafkaDeadLetterLog:
    """A DLQ topic: whole record batches per source partition, acks=all; progress from the topic's end."""

    bootstrap: str
    topic: str
    max_record_bytes: int | None = None  # None: the DLQ topic's max.message.bytes, read at start
    _producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self.max_record_bytes is None:
            self.max_record_bytes = await topic_max_message_bytes(self.bootstrap, self.topic)
        # Whole record batches go out at once (write), so nothing is gained by lingering.
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, **DURABLE_PRODUCER, linger_ms=0,
            max_batch_size=min(self.max_record_bytes, MAX_BATCH_BYTES),
            max_request_size=max(self.max_record_bytes, 1_048_576),
        )  # fmt: skip
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def write(self, pending: dict[int, list[DeadLetter]]) -> dict[int, int]:
        """Send these dead letters, wait for acks=all; returns the last source offset per partition."""
        if not pending:
            return {}
        producer, limit = self._producer, self.max_record_bytes
        assert producer is not None and limit, "KafkaDeadLetterLog.start() first"
        futures = []
        for partition, letters in pending.items():
            if not letters:
                continue
            # One record batch at a time, in source-offset order: a send per letter costs ~10x the
            # Python time and, lingering, ~5x the wall time (docs/performance.md).
            batch = producer.create_batch()
            for letter in letters:
                if letter.obviously_fits(limit):
                    key, value, headers = letter.key, letter.value, letter.kafka_headers()
                else:
                    key, value, headers = fit_record(letter.key, letter.value, letter.kafka_headers(), limit)
                # a full batch goes out and the letter starts the next (an empty batch takes any one record)
                while batch.append(key=key, value=value, timestamp=letter.timestamp_ms, headers=headers) is None:
                    futures.append(await producer.send_batch(batch, self.topic, partition=partition))
                    batch = producer.create_batch()
            futures.append(await producer.send_batch(batch, self.topic, partition=partition))
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


def _last_offsets(pending: dict[int, list[DeadLetter]]) -> dict[int, int]:
    return {partition: letters[-1].source_offset for partition, letters in pending.items() if letters}


class DiscardingDeadLetterLog:
    """Keeps nothing: a rebuild worker must not write the live DLQ a second time."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def write(self, pending: dict[int, list[DeadLetter]]) -> dict[int, int]:
        return _last_offsets(pending)

    async def progress(self, partitions: Sequence[int]) -> dict[int, int]:
        return dict.fromkeys(partitions, -1)


@dataclass
class MemoryDeadLetterLog:
    """A DLQ topic as the list ``sent`` (one list for two sinks: two workers on one topic), for the tests.

    Like a Kafka topic, it keeps whatever is sent, twice if sent twice: not resending is the ingest's job.
    """

    sent: list[DeadLetter] = field(default_factory=list)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def write(self, pending: dict[int, list[DeadLetter]]) -> dict[int, int]:
        for letters in pending.values():
            self.sent.extend(letters)
        return _last_offsets(pending)

    async def progress(self, partitions: Sequence[int]) -> dict[int, int]:
        result = dict.fromkeys(partitions, -1)
        for letter in self.sent:
            if letter.source_partition in result:
                result[letter.source_partition] = letter.source_offset
        return result


@dataclass
class DeadLetterSink:
    """Buffers dead letters per source partition; :meth:`flush` hands them to its log and waits until kept."""

    log: DeadLetterLog
    _pending: dict[int, list[DeadLetter]] = field(default_factory=dict)

    async def start(self) -> None:
        await self.log.start()

    async def stop(self) -> None:
        await self.log.stop()

    def add(self, letter: DeadLetter) -> None:
        self._pending.setdefault(letter.source_partition, []).append(letter)

    def extend(self, partition: int, letters: list[DeadLetter]) -> None:
        """:meth:`add` for a batch of one source partition's letters, in offset order."""
        if letters:
            self._pending.setdefault(partition, []).extend(letters)

    def discard(self, partition: int) -> None:
        self._pending.pop(partition, None)

    def take(self) -> dict[int, list[DeadLetter]]:
        """What is buffered, per source partition; the buffer starts over."""
        pending, self._pending = self._pending, {}
        return pending

    async def flush(self) -> dict[int, int]:
        """Send every buffered dead letter, wait until kept; returns the last source offset per partition."""
        return await self.write(self.take())

    async def write(self, pending: dict[int, list[DeadLetter]]) -> dict[int, int]:
        """Send these dead letters through the log; returns the last source offset per partition."""
        if not pending:
            return {}
        return await self.log.write(pending)

    async def progress(self, partitions: Sequence[int]) -> dict[int, int]:
        return await self.log.progress(partitions)

"""Fetched batches of one topic handed over whole, past Faust's per-message delivery.

Faust delivers every message through ``Consumer._drain_messages``: a message object, a
conductor lookup under a lock and a ``wait_first`` (two tasks) per message, then an agent's
queue and stream. That costs about 100 µs a message, ten times what decoding and validating
an invoice costs, and capped the worker near 7,000 events/s. The invoice topic does not need
any of it: the pipeline works per batch and commits its own offsets after ClickHouse has the
rows (``Pipeline.commit``).

So the consumer below takes the invoice topic's records out of each fetch and puts them in
:class:`FetchedBatches`, a bounded buffer the ingest task drains. With the compiled core
installed, the records do not even become Python objects: :func:`unpack_in_core` has aiokafka's
fetcher hand each fetch of the topic over as its record batches' bytes, which the core unpacks
(``einvoice_core.KafkaRecords``) where aiokafka built a ConsumerRecord per record, in Python, on
the consumer's thread (two fifths of that thread's time, and of the interpreter's lock). The
topic stays in Faust's subscription (Faust still assigns its partitions, co-partitioned with the
registry, and seeks them to the committed offsets); every other topic (the registry, table
changelogs) goes the usual way to its agent. A full buffer makes the fetch wait: backpressure
reaches Kafka, and memory stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import faust
from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import ConsumerRecord
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchedChunk:
    """Records of one partition from one fetch, in offset order."""

    partition: int
    records: Sequence[Any]  # einvoice_core.KafkaRecords, or a list of aiokafka's ConsumerRecords


# -- the fetches of one topic unpacked by the compiled core ---------------------------------------------------------
# aiokafka 0.14's fetcher (aiokafka/consumer/fetcher.py, Fetcher._proc_fetch_request) wraps each partition's record
# set in MemoryRecords and PartitionRecords, whose iteration builds the ConsumerRecords; FetchResult.getall collects
# them and moves the partition's position to PartitionRecords.next_fetch_offset. The two names are replaced in that
# module: the record set keeps its bytes, and the batch topic's PartitionRecords yields one KafkaRecords a fetch.
_ORIGINAL_PARTITION_RECORDS = aiokafka_fetcher.PartitionRecords
_UNPACKED_TOPICS: dict[str, Any] = {}  # topic -> einvoice_core.KafkaRecords
# fetches of those topics by who read them, "core" or "aiokafka" (einvoice_fetches_total): process-wide, as the
# fetcher is; streams.metrics reads it when scraped
FETCHES: Counter[str] = Counter()
_LEFT_BECAUSE: set[str] = set()  # the reasons already logged


class _KeptRecordSet(MemoryRecords):
    """aiokafka's record set of a fetch, keeping its bytes (a reference, not a copy)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.data = data


class _UnpackedPartition(_ORIGINAL_PARTITION_RECORDS):  # type: ignore[misc,valid-type]
    """aiokafka's PartitionRecords of the batch topic: the fetch comes out as one KafkaRecords.

    Whatever the core does not read exactly as aiokafka would (another message format, a bad
    CRC, an unknown codec, transactions read committed) is left to aiokafka's own iteration,
    with its own errors; each reason is logged once, and every such fetch counted.
    """

    def _unpack_records(self) -> Iterator[Any]:
        data = getattr(self._records, "data", None)  # None: the fetch came before unpack_in_core
        if data is not None and self._isolation_level != aiokafka_fetcher.READ_COMMITTED:
            try:
                unpacked = _UNPACKED_TOPICS[self._tp.topic].unpack(data, self.next_fetch_offset)
            except ValueError as exc:
                # once a reason (a producer's odd format would repeat every fetch), a hundred reasons at most
                if str(exc) not in _LEFT_BECAUSE and len(_LEFT_BECAUSE) < 100:
                    _LEFT_BECAUSE.add(str(exc))
                    log.warning("fetch left to aiokafka", extra={"partition": self._tp.partition, "why": str(exc)})
            else:
                FETCHES["core"] += 1
                self.next_fetch_offset = unpacked.next_offset
                if len(unpacked):
                    yield unpacked
                return
        FETCHES["aiokafka"] += 1
        yield from super()._unpack_records()


def _partition_records(tp: Any, *args: Any, **kwargs: Any) -> Any:
    cls = _UnpackedPartition if tp.topic in _UNPACKED_TOPICS else _ORIGINAL_PARTITION_RECORDS
    return cls(tp, *args, **kwargs)


def unpack_in_core(topic: str, kafka_records: Any) -> None:
    """Have aiokafka's fetcher hand ``topic``'s fetches out as ``kafka_records`` (einvoice_core.KafkaRecords)."""
    _UNPACKED_TOPICS[topic] = kafka_records
    aiokafka_fetcher.MemoryRecords = _KeptRecordSet
    aiokafka_fetcher.PartitionRecords = _partition_records


class FetchedBatches:
    """A bounded FIFO of fetched chunks; ``put`` waits while more than ``max_records`` are buffered."""

    def __init__(self, max_records: int) -> None:
        self.max_records = max_records
        self._chunks: deque[FetchedChunk] = deque()
        self._buffered = 0
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        return self._buffered

    async def put(self, chunk: FetchedChunk) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._buffered < self.max_records)
            self._chunks.append(chunk)
            self._buffered += len(chunk.records)
            self._changed.notify_all()

    async def take(self, max_records: int) -> list[FetchedChunk]:
        """Wait for a record, then take up to ``max_records`` of the oldest chunk's partition (split if it must be).

        One partition a batch: each batch is then one block of one partition, the unit of the
        store's fence (sinks/clickhouse/invoice_sink.py). Taking the oldest chunk's partition first
        serves the partitions in the order they were fetched.
        """
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._chunks))
            partition = self._chunks[0].partition
            taken: list[FetchedChunk] = []
            kept: deque[FetchedChunk] = deque()
            count = 0
            while self._chunks:
                chunk = self._chunks.popleft()
                room = max_records - count
                if chunk.partition != partition or room <= 0:
                    kept.append(chunk)
                    continue
                if len(chunk.records) > room:
                    kept.append(FetchedChunk(chunk.partition, chunk.records[room:]))
                    chunk = FetchedChunk(chunk.partition, chunk.records[:room])
                taken.append(chunk)
                count += len(chunk.records)
            self._chunks = kept
            self._buffered -= count
            self._changed.notify_all()
            return taken

    async def purge(self, partitions: Iterable[int]) -> int:
        """Drop what is buffered for partitions this worker no longer owns; returns the records dropped."""
        gone = set(partitions)
        async with self._changed:
            kept = [c for c in self._chunks if c.partition not in gone]
            dropped = self._buffered - sum(len(c.records) for c in kept)
            self._chunks = deque(kept)
            self._buffered -= dropped
            self._changed.notify_all()
            return dropped


class BatchFetchConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, with one topic's records handed to a :class:`FetchedBatches`."""

    batch_topic: str | None = None
    batches: FetchedBatches | None = None

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        records, active = await super()._wait_next_records(timeout)
        batches, topic = self.batches, self.batch_topic
        if not records or batches is None:
            return records, active
        for tp in [tp for tp in records if tp.topic == topic]:
            for chunk in _chunks(records.pop(tp)):
                # Handed over even when a rebalance began meanwhile: dropping would leave them unread until the
                # next seek. The ingest task skips partitions no longer assigned, and drops what it processed.
                self._read_offset[tp] = chunk[-1].offset if isinstance(chunk, list) else chunk.last_offset
                await batches.put(FetchedChunk(tp.partition, chunk))
        return records, active


def _chunks(fetched: list[Any]) -> list[Any]:
    """A partition's share of a fetch as chunks: aiokafka's records as one, or its KafkaRecords (one a fetch)."""
    if fetched and isinstance(fetched[0], ConsumerRecord):
        return [fetched]
    return fetched


class BatchFetchTransport(faust_aiokafka.Transport):
    Consumer: ClassVar[type[BatchFetchConsumer]] = BatchFetchConsumer  # type: ignore[assignment]


class BatchFetchApp(faust.App):
    """A Faust app whose consumer hands ``batch_topic``'s fetches to ``batches``.

    Two more changes keep a burst of table writes (the whole registry, on a fresh deployment)
    from stopping the batch topic:

    - Faust's producer buffer holds at most 100 changelog records; past that, the conductor
      stops the consumer's fetch loop, for every topic, until they are sent one by one. The
      buffer here holds ``changelog_buffer`` records, so a registry burst drains beside the
      invoices. Faust's own commits still flush it first, so a table stays consistent with
      the offsets committed for its source topic.
    - :meth:`commit_batch_offsets` commits the batch topic without that flush: its records
      write no changelog, and waiting for the registry's would hold every invoice commit.
    """

    _batch_topic: str | None = None
    _batches: FetchedBatches | None = None
    changelog_buffer: int = 100_000

    def attach_batches(self, topic: faust.TopicT, batches: FetchedBatches) -> None:
        """Keep ``topic`` subscribed (no agent reads it) and route its records to ``batches``."""
        self.topics.add(topic)
        self._batch_topic = topic.get_topic_name()
        self._batches = batches

    def _new_producer(self) -> Any:
        producer = super()._new_producer()
        producer.buffer.max_messages = self.changelog_buffer
        return producer

    async def commit_batch_offsets(self, offsets: dict[TP, int]) -> bool:
        """Commit offsets of the batch topic (Faust's commit path minus its producer flush); False if refused.

        Partitions no longer assigned are not committed (Faust's own rule): their new owner
        commits them.
        """
        consumer = self.consumer
        assignment = consumer.assignment()
        committable = {tp: offset for tp, offset in offsets.items() if tp in assignment}
        if not committable or not await consumer._commit(committable):
            return False
        consumer._committed_offset.update(committable)
        return True

    def _new_transport(self) -> Any:
        return BatchFetchTransport(self.conf.broker_consumer, self)

    def _new_consumer(self) -> Any:
        consumer = super()._new_consumer()
        consumer.batch_topic = self._batch_topic
        consumer.batches = self._batches
        return consumer

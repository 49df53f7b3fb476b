"""In-memory stand-ins for the ingest's sinks, as httpx's MockTransport stands in for a transport.

The ingest (:class:`streams.ingest.InvoiceIngest`) keeps its rules; only the outside goes: the
fakes subclass the real sinks, so the buffering, the blocks, their tokens and the steps of a
block's write are the real code (``add``, ``add_block``, ``take``, ``discard``, ``write``), and
replace what talks to ClickHouse and Kafka (``insert``, ``chain_moved_past``, ``landed_at``).
:class:`MemoryStore` keeps what ClickHouse would: the rows of ``invoices``, the ``invoice_blocks``
view, and ``insert_deduplication_token`` (an insert whose token already landed is dropped, whoever
sends it). Two sinks over one store are two workers on one ClickHouse: what the fence is about.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from base.localtime import LOCAL_OFFSET_MS
from sinks.clickhouse.invoice_sink import (
    INVOICE_COLUMNS,
    InvoiceSink,
    PartitionProgress,
    PendingInsert,
    block_range,
)
from sinks.clickhouse.reconcile import Repair
from sinks.dead_letter import DeadLetter, DeadLetterSink

T = TypeVar("T")


@dataclass(frozen=True)
class LandedBlock:
    """One row of the ``invoice_blocks`` view: a block that landed, and the range its token names."""

    topic: str
    partition: int
    start: int
    end: int
    row_token: str
    rows: int


@dataclass
class MemoryStore:
    """What ClickHouse holds for the ingest: rows as dicts of column → value, the blocks, the tokens seen."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    blocks: list[LandedBlock] = field(default_factory=list)
    dropped: list[str] = field(
        default_factory=list
    )  # row tokens of inserts that added nothing: chain taken, token seen
    _tokens: set[str] = field(default_factory=set)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """ClickHouseStore.run without its thread: the ingest hands its blocking reads to it."""
        return fn(*args, **kwargs)

    async def until_done(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """ClickHouseStore.until_done without its thread and its retries: the block writes go through it."""
        return fn(*args, **kwargs)

    def insert(self, pending: PendingInsert) -> bool:
        """Land a block unless an insert under its dedup token already did; True when it landed.

        Synchronous, so a test can land another writer's block from inside the ingest's fault point.
        """
        if pending.batch.blocks:
            raise NotImplementedError("compiled-core blocks are Native bytes: tests/streams/test_native_core.py")
        taken = pending.fenced and any(
            b.start >= pending.start for b in self.partition_blocks(pending.topic, pending.partition)
        )  # the fenced insert's condition, evaluated by ClickHouse in the insert (CHAIN_TAKEN_SQL)
        if taken or pending.token in self._tokens:
            self.dropped.append(pending.row_token)
            return False
        self._tokens.add(pending.token)
        row_token = pending.row_token
        self.rows.extend(
            {**dict(zip(INVOICE_COLUMNS, row, strict=True)), "insert_token": row_token} for row in pending.batch.rows
        )
        # the view reads the range from a fenced token, else from the rows' offsets (0007_blocks.sql)
        start, end = block_range(row_token) or (pending.batch.first_offset, pending.batch.last_offset)
        self.blocks.append(LandedBlock(pending.topic, pending.partition, start, end, row_token, pending.rows))
        return True

    def partition_rows(self, topic: str, partition: int) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["kafka_topic"] == topic and r["kafka_partition"] == partition]

    def partition_blocks(self, topic: str, partition: int) -> list[LandedBlock]:
        return [b for b in self.blocks if b.topic == topic and b.partition == partition]


class MemoryInvoiceSink(InvoiceSink):
    """:class:`InvoiceSink` whose inserts and reads go to a :class:`MemoryStore` (shared by several sinks or not)."""

    def __init__(self, topic: str, memory: MemoryStore | None = None, fenced: bool = True) -> None:
        self.memory = memory if memory is not None else MemoryStore()
        super().__init__(self.memory, topic, fenced=fenced)  # type: ignore[arg-type]  # run() is all the ingest uses

    @property
    def rows(self) -> list[dict[str, Any]]:
        """This topic's rows in the store, in the order they landed."""
        return [r for r in self.memory.rows if r["kafka_topic"] == self.topic]

    @property
    def blocks(self) -> list[LandedBlock]:
        return [b for b in self.memory.blocks if b.topic == self.topic]

    def insert(self, pending: PendingInsert) -> None:
        """The insert; dropped silently when its token landed before, as ClickHouse does."""
        self.memory.insert(pending)

    def chain_moved_past(self, partition: int, start: int) -> bool:
        return any(b.start >= start for b in self.memory.partition_blocks(self.topic, partition))

    def landed_at(self, partition: int, start: int) -> tuple[str, ...]:
        return tuple(b.row_token for b in self.memory.partition_blocks(self.topic, partition) if b.start == start)

    def progress(self) -> dict[int, PartitionProgress]:
        """As the real one: from the table's rows, the chain's end from the blocks; partitions with rows only."""
        result: dict[int, PartitionProgress] = {}
        for partition in sorted({r["kafka_partition"] for r in self.rows}):
            rows = self.memory.partition_rows(self.topic, partition)
            newest = max(rows, key=lambda r: r["kafka_offset"])
            chain_end = max((b.end for b in self.memory.partition_blocks(self.topic, partition)), default=-1)
            result[partition] = PartitionProgress(
                max_offset=max(newest["kafka_offset"], chain_end),
                max_issued_local_ms=max(r["issued_at"] for r in rows) + LOCAL_OFFSET_MS,
                last_token=newest["insert_token"],
                rows=len(rows),
            )
        return result

    async def repair(self, newest: Mapping[int, str]) -> list[Repair]:
        """Nothing to repair: this store has no views, and every block here landed whole."""
        return [Repair(token) for _, token in sorted(newest.items())]

    def dedup_keys(self, partition: int, since_day: int) -> tuple[Any, Any]:
        """(invoice_key, day) columns from ``since_day`` on, numpy as the real one returns them."""
        rows = [r for r in self.memory.partition_rows(self.topic, partition) if r["issue_date"] >= max(since_day, 0)]
        if not rows:
            return (), ()
        keys = np.array([r["invoice_key"] for r in rows], dtype=np.int64)
        return keys, np.array([r["issue_date"] for r in rows], dtype=np.int64)


@dataclass
class MemoryDeadLetterSink(DeadLetterSink):
    """:class:`DeadLetterSink` whose DLQ topic is the list ``sent`` (pass one list to two sinks to share it).

    Like a Kafka topic, it keeps whatever is sent, twice if sent twice: not resending is the ingest's job.
    """

    bootstrap: str = "memory"
    topic: str = "einvoice.issued.dlq"
    sent: list[DeadLetter] = field(default_factory=list)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def write(self, pending: dict[int, list[DeadLetter]]) -> dict[int, int]:
        for letters in pending.values():
            self.sent.extend(letters)
        return {partition: letters[-1].source_offset for partition, letters in pending.items() if letters}

    async def progress(self, partitions: Sequence[int]) -> dict[int, int]:
        """The source offset of each partition's newest dead letter (-1 when none), as read from the topic's end."""
        result = dict.fromkeys(partitions, -1)
        for letter in self.sent:
            if letter.source_partition in result:
                result[letter.source_partition] = letter.source_offset
        return result

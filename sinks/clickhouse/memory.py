"""The invoice sink's store in memory: for the unit tests, as httpx's MockTransport stands in for a transport.

The sink keeps its rules (buffering, the blocks and their tokens, the steps of a block's write); only
ClickHouse goes. :class:`MemoryInvoiceStore` holds what ClickHouse would: the rows of ``invoices``, the
``invoice_blocks`` view, and ``insert_deduplication_token`` (an insert whose token already landed is
dropped, whoever sends it), and evaluates the fenced insert's condition as ClickHouse does. The DLQ's
counterpart is :class:`sinks.dead_letter.MemoryDeadLetterLog`. Compiled-core blocks are Native bytes and
are not decoded here (``tests/streams/test_native_core.py`` compares the core with the reference instead).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from base.localtime import LOCAL_OFFSET_MS
from sinks.clickhouse.blocks import INVOICE_COLUMNS, PartitionProgress, PendingInsert, block_range
from sinks.clickhouse.reconcile import Repair

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
class MemoryInvoiceStore:
    """:class:`sinks.clickhouse.blocks.InvoiceStore` in memory: rows as dicts of column → value, the blocks
    (the ``invoice_blocks`` view), and the deduplication tokens seen (an insert whose token already landed is
    dropped, whoever sends it). Two sinks over one store are two workers on one ClickHouse."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    blocks: list[LandedBlock] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # row tokens of inserts that added nothing
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

    def rows_of(self, topic: str) -> list[dict[str, Any]]:
        """A topic's rows, in the order they landed."""
        return [r for r in self.rows if r["kafka_topic"] == topic]

    def blocks_of(self, topic: str) -> list[LandedBlock]:
        return [b for b in self.blocks if b.topic == topic]

    def chain_moved_past(self, topic: str, partition: int, start: int) -> bool:
        return any(b.start >= start for b in self.partition_blocks(topic, partition))

    def landed_at(self, topic: str, partition: int, start: int) -> tuple[str, ...]:
        return tuple(b.row_token for b in self.partition_blocks(topic, partition) if b.start == start)

    def progress(self, topic: str) -> dict[int, PartitionProgress]:
        """As ClickHouse's: from the table's rows, the chain's end from the blocks; partitions with rows only."""
        result: dict[int, PartitionProgress] = {}
        for partition in sorted({r["kafka_partition"] for r in self.rows_of(topic)}):
            rows = self.partition_rows(topic, partition)
            newest = max(rows, key=lambda r: r["kafka_offset"])
            chain_end = max((b.end for b in self.partition_blocks(topic, partition)), default=-1)
            result[partition] = PartitionProgress(
                max_offset=max(newest["kafka_offset"], chain_end),
                max_issued_local_ms=max(r["issued_at"] for r in rows) + LOCAL_OFFSET_MS,
                last_token=newest["insert_token"],
                rows=len(rows),
            )
        return result

    def repair(self, topic: str, newest: Mapping[int, str]) -> list[Repair]:
        """Nothing to repair: this store has no views, and every block here landed whole."""
        return [Repair(token) for _, token in sorted(newest.items())]

    def dedup_keys(self, topic: str, partition: int, since_day: int) -> tuple[Any, Any]:
        """(invoice_key, day) columns from ``since_day`` on, numpy as ClickHouse's store returns them."""
        rows = [r for r in self.partition_rows(topic, partition) if r["issue_date"] >= max(since_day, 0)]
        if not rows:
            return (), ()
        keys = np.array([r["invoice_key"] for r in rows], dtype=np.int64)
        return keys, np.array([r["issue_date"] for r in rows], dtype=np.int64)

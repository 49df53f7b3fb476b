"""The invoice writer: rows buffered per source partition, one idempotent insert per partition block.

Each insert is one block of one partition: the records from the end of the partition's last
block that landed up to the batch's last record, sent as one ClickHouse Native block (so every
insert of it, first, retried or another writer's, carries the same deduplication id). Its
``insert_deduplication_token`` names the block's start (``topic/partition/start``), and each row
carries ``topic/partition/start..end``. Fenced (the default), the insert is conditional: ClickHouse
inserts nothing when a block at or past the start has landed (:data:`CHAIN_TAKEN_SQL`, evaluated
in the insert itself), so a writer that froze before its insert and wakes after a takeover adds
nothing, however many inserts came in between; two writers inserting at one start at the same
instant are told apart by the token. The view ``invoice_blocks`` tells each writer whose block
landed (:meth:`InvoiceStore.landed_at`), and the loser resyncs.

After a crash or a rebalance, :meth:`InvoiceSink.progress` tells the end of the chain per
partition, and the pipeline skips what is already there. A crash can also cut an insert short
between the table and its views (chDB dies with the worker); :meth:`InvoiceSink.repair` then
makes each partition's newest block whole in every view from what ``invoices`` holds
(:mod:`sinks.clickhouse.reconcile`), adding only what is missing, without re-inserting the block.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from sinks.clickhouse.blocks import (
    INVOICE_COLUMNS,
    STORED_COLUMNS,
    BlockWrite,
    EncodedRows,
    InvoiceStore,
    PartitionBatch,
    PartitionProgress,
    PendingInsert,
    block_range,
    dedup_token,
)
from sinks.clickhouse.client import ClickHouseStore
from sinks.clickhouse.invoice_store import CHAIN_TAKEN_SQL, INSERT_SETTINGS, ClickHouseInvoiceStore, insert_settings
from sinks.clickhouse.reconcile import Repair

log = logging.getLogger(__name__)

# the names the rest of the project imports from here (the block contract is sinks.clickhouse.blocks)
__all__ = [
    "CHAIN_TAKEN_SQL",
    "INSERT_SETTINGS",
    "INVOICE_COLUMNS",
    "STORED_COLUMNS",
    "BlockWrite",
    "EncodedRows",
    "InvoiceSink",
    "InvoiceStore",
    "PartitionProgress",
    "PendingInsert",
    "block_range",
    "dedup_token",
    "insert_settings",
]


class InvoiceSink:
    """Buffers enriched invoice rows per partition; each partition's block is one insert."""

    def __init__(
        self, store: InvoiceStore | ClickHouseStore, topic: str, table: str = "invoices", fenced: bool = True
    ) -> None:
        # a ClickHouseStore is wrapped: the real store; anything else is taken as the seam (sinks.clickhouse.memory)
        self.store: InvoiceStore = ClickHouseInvoiceStore(store, table) if isinstance(store, ClickHouseStore) else store
        self.topic = topic
        self.fenced = fenced
        self._batches: dict[int, PartitionBatch] = {}

    def add(self, partition: int, offset: int, row: tuple[Any, ...]) -> None:
        batch = self._batches.get(partition)
        if batch is None:
            batch = self._batches[partition] = PartitionBatch(first_offset=offset)
        batch.rows.append(row)
        batch.last_offset = offset

    def add_block(self, partition: int, block: EncodedRows) -> None:
        """A partition's rows as the compiled core encoded them (one Native insert, no per-row Python)."""
        batch = self._batches.get(partition)
        if batch is None:
            batch = self._batches[partition] = PartitionBatch(first_offset=block.first_offset)
        batch.blocks.append(block)
        batch.last_offset = block.last_offset

    def take(self, partition: int, start: int, end: int) -> PendingInsert | None:
        """The partition's buffered rows as the block of records ``start..end``; None when it has no rows."""
        batch = self._batches.pop(partition, None)
        if batch is None or not len(batch):
            return None
        if batch.blocks and batch.rows:
            raise ValueError("a block holds rows of both the compiled core and the reference")
        return PendingInsert(self.topic, partition, start, end, batch, self.fenced)

    async def flush(self) -> list[BlockWrite]:
        """Write everything buffered, one block a partition from its first row to its last (tests, benchmarks)."""
        written = []
        for partition, batch in sorted(self._batches.items()):
            if (pending := self.take(partition, batch.first_offset, batch.last_offset)) is not None:
                written.append(await self.write(pending))
        return written

    async def write(self, pending: PendingInsert, before_insert: Callable[[], None] | None = None) -> BlockWrite:
        """Steps 3 to 5 of the fence for one block, as one job on the ClickHouse thread.

        3. The chain check: has a block at or past the start landed? Then nothing is inserted.
        4. The insert under the block's token (``before_insert`` runs just before it: a fault point).
        5. The read-back of the blocks that landed at the start.

        One job, not three calls from the event loop: it runs to the end while the loop prepares
        the next batch. A failure at any step is retried with backoff, from the step that failed
        (backpressure, never loss); an insert retried after it landed is dropped by its token.
        """
        job = _BlockJob(self, pending, before_insert)
        return await self.store.until_done(job.run)

    def discard(self, partition: int) -> None:
        """Drop what is buffered for a partition this worker no longer owns."""
        self._batches.pop(partition, None)

    def progress(self) -> dict[int, PartitionProgress]:
        """Highest written offset, newest issue time and newest block per partition (blocking).

        Read from the table itself, not from a view: the table is what a cut-short insert reached first.
        """
        return self.store.progress(self.topic)

    async def repair(self, newest: Mapping[int, str]) -> list[Repair]:
        """Make each partition's newest block (partition -> its rows' token) whole in every view.

        Window-free: it reads what ``invoices`` and each view hold and writes only what is missing
        (:mod:`sinks.clickhouse.reconcile`); safe to run again at any point.
        """
        return await self.store.until_done(self.store.repair, self.topic, dict(newest))

    def dedup_keys(self, partition: int, since_day: int) -> tuple[Any, Any]:
        """(invoice_key, local day number) columns of the partition's invoices from ``since_day`` on (blocking).

        numpy columns: at Thanh Hóa scale a restore reads ~2 M keys a partition, ~100 bytes each as tuples.
        """
        return self.store.dedup_keys(self.topic, partition, since_day)


class _BlockJob:
    """One block's :meth:`InvoiceSink.write`, resumable: a retry starts at the step that failed."""

    def __init__(self, sink: InvoiceSink, pending: PendingInsert, before_insert: Callable[[], None] | None) -> None:
        self.sink, self.pending, self.before_insert = sink, pending, before_insert
        self.checked = not pending.fenced
        self.inserted = False
        self.insert_started: float | None = None
        self.seconds = 0.0

    def run(self) -> BlockWrite:
        sink, pending = self.sink, self.pending
        last = pending.end if pending.fenced else pending.batch.last_offset
        if not self.checked:  # 3.
            if sink.store.chain_moved_past(pending.topic, pending.partition, pending.start):
                return BlockWrite(pending.rows, last, 0.0, moved_past=True)
            self.checked = True
        if not self.inserted:  # 4.
            if self.insert_started is None:  # the first attempt
                if self.before_insert is not None:
                    self.before_insert()
                self.insert_started = time.perf_counter()
            sink.store.insert(pending)
            self.inserted = True
            self.seconds = time.perf_counter() - self.insert_started
        landed = sink.store.landed_at(pending.topic, pending.partition, pending.start) if pending.fenced else ()  # 5.
        return BlockWrite(pending.rows, last, self.seconds, landed=landed)

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
landed (:meth:`InvoiceSink.landed_at`), and the loser resyncs.

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
from dataclasses import dataclass, field
from typing import Any, Protocol

from base.localtime import LOCAL_OFFSET_MS
from sinks.clickhouse import reconcile
from sinks.clickhouse.client import ClickHouseStore
from sinks.clickhouse.reconcile import Repair

log = logging.getLogger(__name__)

INVOICE_COLUMNS: tuple[str, ...] = (
    "seller_id", "invoice_code", "invoice_key", "invoice_form", "invoice_symbol", "issued_at", "issue_date",
    "amount_vnd", "vat_rate", "vat_amount_vnd", "payment_method", "non_cash", "register_id", "buyer_tax_code",
    "seller_kind", "registered", "vsic_code", "admin_unit_code", "schema_id",
    "kafka_topic", "kafka_partition", "kafka_offset", "received_at",
)  # fmt: skip
STORED_COLUMNS = (*INVOICE_COLUMNS, "insert_token")

# has a block at or past a start landed? (the chain check, and the condition of a fenced insert)
CHAIN_TAKEN_SQL = (
    "SELECT count() FROM invoice_blocks WHERE kafka_topic = {topic:String} "
    "AND kafka_partition = {partition:UInt16} AND block_start >= {start:UInt64}"
)
INSERT_SETTINGS = {"deduplicate_blocks_in_dependent_materialized_views": 1, "insert_deduplicate": 1}


def insert_settings(token: str) -> dict[str, object]:
    """The settings of an insert whose deduplication token is ``token`` (in the table and every view)."""
    return {**INSERT_SETTINGS, "insert_deduplication_token": token}


@dataclass(frozen=True)
class PartitionProgress:
    """What ClickHouse already holds of one source partition."""

    max_offset: int  # the chain's end: the last record offset of the newest block that landed
    max_issued_local_ms: int | None
    last_token: str
    rows: int


@dataclass(frozen=True)
class BlockWrite:
    """What became of one block's write (steps 3 to 5 of the fence, docs/architecture.md)."""

    rows: int
    last_offset: int  # the offset the chain reaches when the block is ours: its end (fenced) or its last row
    seconds: float  # the insert's, retries included
    moved_past: bool = False  # the chain check found a block at or past the start: nothing was inserted
    landed: tuple[str, ...] = ()  # fenced: the row tokens of the blocks that landed at the block's start

    def ours(self, pending: PendingInsert) -> bool:
        """Did this block land (unfenced: was it inserted)?"""
        return not self.moved_past and (not pending.fenced or pending.row_token in self.landed)


class EncodedRows(Protocol):
    """A partition's rows already encoded by the compiled core (einvoice_core.Prepared)."""

    rows: int
    first_offset: int
    last_offset: int

    def native(self, token: str) -> bytes: ...


@dataclass
class _PartitionBatch:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    blocks: list[EncodedRows] = field(default_factory=list)
    first_offset: int = -1
    last_offset: int = -1

    def __len__(self) -> int:
        return len(self.rows) + sum(b.rows for b in self.blocks)


def dedup_token(row_token: str) -> str:
    """The insert_deduplication_token of the insert whose rows carry ``row_token``."""
    return row_token.split("..", 1)[0]


def block_range(row_token: str) -> tuple[int, int] | None:
    """(start, end) record offsets of a fenced block's token ``topic/partition/start..end``; None for older ones."""
    if ".." not in row_token:
        return None
    head, end = row_token.rsplit("..", 1)
    return int(head.rsplit("/", 1)[1]), int(end)


@dataclass(frozen=True)
class PendingInsert:
    """One partition's next block, taken from the buffer: what one insert writes.

    Fenced (the default), the block covers the records ``start..end``, where ``start`` follows the
    end of the partition's last block that landed, rejected and duplicate records included; its
    deduplication token names ``start`` only, so that any two writers of the partition that begin
    a block there write the same token and only the first insert lands (docs/architecture.md, Exactly once).
    Unfenced, the token names the rows' first and last offsets, as before the fence.
    """

    topic: str
    partition: int
    start: int
    end: int
    batch: _PartitionBatch
    fenced: bool = True

    @property
    def rows(self) -> int:
        return len(self.batch)

    @property
    def row_token(self) -> str:
        """The token each row carries (``insert_token``), from which the block's range can be read back."""
        if self.fenced:
            return f"{self.topic}/{self.partition}/{self.start}..{self.end}"
        return f"{self.topic}/{self.partition}/{self.batch.first_offset}-{self.batch.last_offset}"

    @property
    def token(self) -> str:
        return dedup_token(self.row_token)


class InvoiceSink:
    """Buffers enriched invoice rows per partition; each partition's block is one insert."""

    def __init__(self, store: ClickHouseStore, topic: str, table: str = "invoices", fenced: bool = True) -> None:
        self.store = store
        self.topic = topic
        self.table = table
        self.fenced = fenced
        self._batches: dict[int, _PartitionBatch] = {}

    def add(self, partition: int, offset: int, row: tuple[Any, ...]) -> None:
        batch = self._batches.get(partition)
        if batch is None:
            batch = self._batches[partition] = _PartitionBatch(first_offset=offset)
        batch.rows.append(row)
        batch.last_offset = offset

    def add_block(self, partition: int, block: EncodedRows) -> None:
        """A partition's rows as the compiled core encoded them (one Native insert, no per-row Python)."""
        batch = self._batches.get(partition)
        if batch is None:
            batch = self._batches[partition] = _PartitionBatch(first_offset=block.first_offset)
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

    def chain_moved_past(self, partition: int, start: int) -> bool:
        """Blocking: has a block starting at or after record ``start`` landed?"""
        rows = self.store.client.query(CHAIN_TAKEN_SQL, parameters=self._chain_at(partition, start)).result_rows
        return bool(rows[0][0])

    def _chain_at(self, partition: int, start: int) -> dict[str, object]:
        return {"topic": self.topic, "partition": partition, "start": start}

    def landed_at(self, partition: int, start: int) -> tuple[str, ...]:
        """Blocking: the row tokens of the partition's blocks that landed starting at record ``start``."""
        rows = self.store.client.query(
            "SELECT insert_token FROM invoice_blocks WHERE kafka_topic = {topic:String} "
            "AND kafka_partition = {partition:UInt16} AND block_start = {start:UInt64}",
            parameters={"topic": self.topic, "partition": partition, "start": start},
        ).result_rows
        return tuple(r[0] for r in rows)

    def insert(self, pending: PendingInsert) -> None:
        """Blocking: one insert of the block under its token, as one Native block.

        Fenced, conditional on the chain (:data:`CHAIN_TAKEN_SQL`); unfenced, a plain insert
        dropped by ClickHouse only while its token is in the deduplication window.
        """
        settings = insert_settings(pending.token)
        block = self.native(pending)
        if pending.fenced:
            taken = self._chain_at(pending.partition, pending.start)
            self.store.insert_block_unless(self.table, STORED_COLUMNS, block, CHAIN_TAKEN_SQL, taken, settings)
        else:
            self.store.raw_insert(self.table, list(STORED_COLUMNS), block, "Native", settings)

    def native(self, pending: PendingInsert) -> bytes:
        """Blocking: the block's rows as one ClickHouse Native block, ``row_token`` on each row."""
        batch, row_token = pending.batch, pending.row_token
        if batch.blocks:  # the compiled core's rows (one Prepared a partition's block: one batch, one block)
            if len(batch.blocks) == 1:
                return batch.blocks[0].native(row_token)
            raise ValueError("a block holds the rows of more than one prepared batch: it would be several blocks")
        columns = [list(c) for c in zip(*batch.rows, strict=True)]
        columns.append([row_token] * len(batch.rows))
        return self.store.native_block(self.table, STORED_COLUMNS, columns)

    def discard(self, partition: int) -> None:
        """Drop what is buffered for a partition this worker no longer owns."""
        self._batches.pop(partition, None)

    def progress(self) -> dict[int, PartitionProgress]:
        """Highest written offset, newest issue time and newest block per partition (blocking).

        Read from the table itself, not from a view: the table is what a cut-short insert
        reached first.
        """
        rows = self.store.client.query(
            "SELECT kafka_partition, max(kafka_offset), toUnixTimestamp64Milli(max(issued_at)), "
            "argMax(insert_token, kafka_offset), count() "
            f"FROM {self.table} WHERE kafka_topic = {{topic:String}} GROUP BY kafka_partition",
            parameters={"topic": self.topic},
        ).result_rows
        chain_ends = dict(
            self.store.client.query(
                "SELECT kafka_partition, max(block_end) FROM invoice_blocks WHERE kafka_topic = {topic:String} "
                "GROUP BY kafka_partition",
                parameters={"topic": self.topic},
            ).result_rows
        )
        # DateTime64 in Asia/Ho_Chi_Minh: the epoch ms is UTC; + the offset gives local wall-clock ms.
        return {
            int(p): PartitionProgress(max(int(o), int(chain_ends.get(p, -1))), int(ms) + LOCAL_OFFSET_MS, t, int(n))
            for p, o, ms, t, n in rows
        }

    async def repair(self, newest: Mapping[int, str]) -> list[Repair]:
        """Make each partition's newest block (partition -> its rows' token) whole in every view.

        Window-free: it reads what ``invoices`` and each view hold and writes only what is missing
        (:mod:`sinks.clickhouse.reconcile`); safe to run again at any point.
        """
        return await self.store.until_done(self._repair, dict(newest))

    def _repair(self, newest: dict[int, str]) -> list[Repair]:
        views = reconcile.views(self.store)
        repairs = []
        for partition, token in sorted(newest.items()):
            self._drop_orphan_link(partition, token)
            repairs.append(reconcile.repair_block(self.store, partition, token, views))
        return repairs

    def _drop_orphan_link(self, partition: int, token: str) -> None:
        """A chain row whose block has no row in ``invoices`` (a view written before its table) is removed.

        ClickHouse writes the table before its views, so this is not expected; were it to happen,
        the chain check would skip records that never landed.
        """
        rows = self.store.client.query(
            "SELECT argMax(insert_token, block_start), count() FROM invoice_blocks WHERE kafka_topic = {topic:String} "
            "AND kafka_partition = {partition:UInt16}",
            parameters={"topic": self.topic, "partition": partition},
        ).result_rows
        link = rows[0][0] if rows and rows[0][1] else None
        if link is None or link == token:
            return
        held = self.store.client.query(
            f"SELECT count() FROM {self.table} WHERE insert_token = {{token:String}}", parameters={"token": link}
        ).result_rows[0][0]
        if not held:
            log.error("the chain names a block that invoices lacks: link removed", extra={"block": link})
            self.store.client.command("DELETE FROM invoice_blocks WHERE insert_token = {token:String}",
                                      parameters={"token": link})  # fmt: skip

    def dedup_keys(self, partition: int, since_day: int) -> tuple[Any, Any]:
        """(invoice_key, local day number) columns of the partition's invoices from ``since_day`` on (blocking).

        numpy columns: at Thanh Hóa scale a restore reads ~2 M keys a partition, ~100 bytes each as tuples.
        """
        found = self.store.client.query_np(
            f"SELECT invoice_key AS key, toUInt32(issue_date) AS day FROM {self.table} "
            "WHERE issue_date >= toDate({since:UInt32}) AND kafka_topic = {topic:String} "
            "AND kafka_partition = {partition:UInt16}",
            parameters={"since": max(since_day, 0), "topic": self.topic, "partition": partition},
        )
        if not len(found):
            return (), ()
        return found["key"], found["day"].astype("int64")


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
            if sink.chain_moved_past(pending.partition, pending.start):
                return BlockWrite(pending.rows, last, 0.0, moved_past=True)
            self.checked = True
        if not self.inserted:  # 4.
            if self.insert_started is None:  # the first attempt
                if self.before_insert is not None:
                    self.before_insert()
                self.insert_started = time.perf_counter()
            sink.insert(pending)
            self.inserted = True
            self.seconds = time.perf_counter() - self.insert_started
        landed = sink.landed_at(pending.partition, pending.start) if pending.fenced else ()  # 5.
        return BlockWrite(pending.rows, last, self.seconds, landed=landed)

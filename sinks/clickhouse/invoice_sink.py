"""The invoice writer: rows buffered per source partition, one idempotent insert per flush.

Each flush is one insert holding, for every partition in it, a contiguous offset range; its
``insert_deduplication_token`` names those ranges (``topic/partition/first-last|...``), so a
retried insert is dropped by ClickHouse in the table and in every materialized view behind
it. One insert per batch rather than one per partition: chDB spends ~25 ms on an insert of any
size, so this is what the throughput depends on.

After a crash or a rebalance, :meth:`InvoiceSink.progress` tells the highest offset already
written per partition, and the pipeline skips what is already there. A crash can also cut an
insert short between the table and its views (chDB dies with the worker); so
:meth:`InvoiceSink.repair` re-inserts the newest block of each partition, read back from the
table (rows carry their block's token), under its original token: ClickHouse drops it wherever
it already landed and adds it wherever it is missing. Only the newest block of a partition can
be partial, because inserts are sequential and each one is awaited.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sinks.clickhouse.client import ClickHouseStore

INVOICE_COLUMNS: tuple[str, ...] = (
    "seller_id", "invoice_code", "invoice_key", "invoice_form", "invoice_symbol", "issued_at", "issue_date",
    "amount_vnd", "vat_rate", "vat_amount_vnd", "payment_method", "non_cash", "register_id", "buyer_tax_code",
    "seller_kind", "registered", "vsic_code", "admin_unit_code", "schema_id",
    "kafka_topic", "kafka_partition", "kafka_offset", "received_at",
)  # fmt: skip
STORED_COLUMNS = (*INVOICE_COLUMNS, "insert_token")

INSERT_SETTINGS = {"deduplicate_blocks_in_dependent_materialized_views": 1, "insert_deduplicate": 1}


@dataclass(frozen=True)
class PartitionProgress:
    """What ClickHouse already holds of one source partition."""

    max_offset: int
    max_issued_local_ms: int | None
    last_token: str
    rows: int


@dataclass(frozen=True)
class FlushResult:
    rows: int
    last_offsets: dict[int, int]
    seconds: float


class EncodedRows(Protocol):
    """A partition's rows already encoded by the compiled core (einvoice_core.Prepared)."""

    rows: int
    first_offset: int
    last_offset: int

    def rowbinary(self, token: str) -> bytes: ...


@dataclass
class _PartitionBatch:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    blocks: list[EncodedRows] = field(default_factory=list)
    first_offset: int = -1
    last_offset: int = -1

    def __len__(self) -> int:
        return len(self.rows) + sum(b.rows for b in self.blocks)


@dataclass(frozen=True)
class PendingInsert:
    """One insert taken from the buffer: a contiguous offset range per partition, and the token naming them."""

    token: str
    batches: dict[int, _PartitionBatch]

    @property
    def rows(self) -> int:
        return sum(len(b) for b in self.batches.values())


def _token(topic: str, batches: dict[int, _PartitionBatch]) -> str:
    return "|".join(f"{topic}/{p}/{b.first_offset}-{b.last_offset}" for p, b in sorted(batches.items()) if len(b))


class InvoiceSink:
    """Buffers enriched invoice rows per partition; :meth:`flush` writes them in one insert."""

    def __init__(self, store: ClickHouseStore, topic: str, table: str = "invoices") -> None:
        self.store = store
        self.topic = topic
        self.table = table
        self._batches: dict[int, _PartitionBatch] = {}

    def add(self, partition: int, offset: int, row: tuple[Any, ...]) -> None:
        batch = self._batches.get(partition)
        if batch is None:
            batch = self._batches[partition] = _PartitionBatch(first_offset=offset)
        batch.rows.append(row)
        batch.last_offset = offset

    def add_block(self, partition: int, block: EncodedRows) -> None:
        """A partition's rows as the compiled core encoded them (one RowBinary insert, no per-row Python)."""
        batch = self._batches.get(partition)
        if batch is None:
            batch = self._batches[partition] = _PartitionBatch(first_offset=block.first_offset)
        batch.blocks.append(block)
        batch.last_offset = block.last_offset

    def token(self) -> str:
        return _token(self.topic, self._batches)

    def take(self) -> PendingInsert | None:
        """What is buffered, as one insert to write; the buffer starts over (the next batch fills it meanwhile)."""
        batches = {p: b for p, b in sorted(self._batches.items()) if len(b)}
        self._batches = {}
        if not batches:
            return None
        if any(b.blocks for b in batches.values()) and any(b.rows for b in batches.values()):
            raise ValueError("a flush holds rows of both the compiled core and the reference")
        return PendingInsert(_token(self.topic, batches), batches)

    async def flush(self) -> FlushResult | None:
        """Insert everything buffered; retry until it succeeds (backpressure, never loss)."""
        pending = self.take()
        return None if pending is None else await self.write(pending)

    async def write(self, pending: PendingInsert) -> FlushResult:
        """One insert under the pending ranges' token; retried until ClickHouse accepts it."""
        started = time.perf_counter()
        batches, token = pending.batches, pending.token
        blocks = [block for batch in batches.values() for block in batch.blocks]
        if blocks:  # the compiled core's rows: its bytes, under the same token and settings
            count = sum(block.rows for block in blocks)
            data = b"".join(block.rowbinary(token) for block in blocks)
            await self.store.raw_insert_until_accepted(
                self.table, list(STORED_COLUMNS), data, "RowBinary",
                {**INSERT_SETTINGS, "insert_deduplication_token": token},
            )  # fmt: skip
        else:
            rows = [row for batch in batches.values() for row in batch.rows]
            count = len(rows)
            columns = [list(c) for c in zip(*rows, strict=True)]
            columns.append([token] * len(rows))
            await self._insert(columns, token)
        return FlushResult(count, {p: b.last_offset for p, b in batches.items()}, time.perf_counter() - started)

    async def _insert(self, columns: list[list[Any]], token: str) -> None:
        await self.store.insert_until_accepted(
            self.table, columns, column_names=STORED_COLUMNS, column_oriented=True,
            settings={**INSERT_SETTINGS, "insert_deduplication_token": token},
        )  # fmt: skip

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
        # DateTime64 in Asia/Ho_Chi_Minh: the epoch ms is UTC; +7 h gives local wall-clock ms.
        return {int(p): PartitionProgress(int(o), int(ms) + 7 * 3_600_000, t, int(n)) for p, o, ms, t, n in rows}

    async def repair(self, tokens: Iterable[str]) -> int:
        """Re-insert the blocks with these tokens under their own tokens; returns the rows read back."""
        restored = 0
        for token in sorted(set(tokens)):
            result = await self.store.run(
                self.store.client.query,
                f"SELECT {', '.join(STORED_COLUMNS)} FROM {self.table} WHERE insert_token = {{token:String}} "
                "ORDER BY kafka_partition, kafka_offset",
                parameters={"token": token},
            )
            if result.result_rows:
                await self._insert([list(c) for c in result.result_columns], token)
                restored += len(result.result_rows)
        return restored

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

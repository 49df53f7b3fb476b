"""The invoice writer: one batch per source partition, flushed explicitly, inserted idempotently.

Each insert holds one partition's contiguous offset range and carries an
``insert_deduplication_token`` derived from topic, partition and range, so a retried insert
is dropped by ClickHouse in the table and in every materialized view behind it.

After a crash or a rebalance, :meth:`InvoiceSink.progress` tells the highest offset already
written per partition, and the pipeline skips what is already there. A crash can also cut an
insert short between the table and its views (chDB dies with the worker); so
:meth:`InvoiceSink.repair_last_block` re-inserts each partition's last block, read back from
the table, under its original token: ClickHouse drops it wherever it already landed and adds
it wherever it is missing. Only the last block can be partial, because inserts of a partition
are sequential and each one is awaited.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from tenacity import AsyncRetrying, before_sleep_log, retry_if_exception_type, wait_exponential_jitter

from sinks.clickhouse.client import ClickHouseStore

log = logging.getLogger(__name__)

INVOICE_COLUMNS: tuple[str, ...] = (
    "seller_id", "invoice_code", "invoice_key", "invoice_form", "invoice_symbol", "issued_at", "issue_date",
    "amount_vnd", "vat_rate", "vat_amount_vnd", "payment_method", "non_cash", "register_id", "buyer_tax_code",
    "seller_kind", "registered", "vsic_code", "admin_unit_code", "schema_id",
    "kafka_topic", "kafka_partition", "kafka_offset", "received_at",
)  # fmt: skip
STORED_COLUMNS = (*INVOICE_COLUMNS, "block_first_offset")

INSERT_SETTINGS = {"deduplicate_blocks_in_dependent_materialized_views": 1, "insert_deduplicate": 1}


@dataclass(frozen=True)
class PartitionProgress:
    """What ClickHouse already holds of one source partition."""

    max_offset: int
    max_issued_local_ms: int | None
    last_block_first_offset: int
    rows: int


@dataclass(frozen=True)
class FlushResult:
    rows: int
    last_offset: int
    seconds: float


@dataclass
class _PartitionBatch:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    first_offset: int = -1
    last_offset: int = -1


class InvoiceSink:
    """Buffers enriched invoice rows per partition; :meth:`flush` writes one partition's batch."""

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

    async def flush(self, partition: int) -> FlushResult | None:
        """Insert the partition's batch; retry until it succeeds (backpressure, never loss)."""
        batch = self._batches.pop(partition, None)
        if batch is None or not batch.rows:
            return None
        columns = [list(c) for c in zip(*batch.rows, strict=True)]
        columns.append([batch.first_offset] * len(batch.rows))
        started = time.perf_counter()
        await self._insert(columns, self.token(partition, batch.first_offset, batch.last_offset))
        return FlushResult(len(batch.rows), batch.last_offset, time.perf_counter() - started)

    def token(self, partition: int, first_offset: int, last_offset: int) -> str:
        return f"{self.topic}/{partition}/{first_offset}-{last_offset}"

    async def _insert(self, columns: list[list[Any]], token: str) -> None:
        async for attempt in AsyncRetrying(
            wait=wait_exponential_jitter(initial=0.2, max=30.0),
            retry=retry_if_exception_type(Exception),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        ):
            with attempt:
                await self.store.run(
                    self.store.client.insert,
                    self.table,
                    columns,
                    column_names=STORED_COLUMNS,
                    column_oriented=True,
                    settings={**INSERT_SETTINGS, "insert_deduplication_token": token},
                )

    def discard(self, partition: int) -> None:
        """Drop what is buffered for a partition this worker no longer owns."""
        self._batches.pop(partition, None)

    def progress(self) -> dict[int, PartitionProgress]:
        """Highest written offset, newest issue time and last block per partition (blocking).

        Read from the table itself, not from a view: the table is what a cut-short insert
        reached first.
        """
        rows = self.store.client.query(
            "SELECT kafka_partition, max(kafka_offset), toUnixTimestamp64Milli(max(issued_at)), "
            "argMax(block_first_offset, kafka_offset), count() "
            f"FROM {self.table} WHERE kafka_topic = {{topic:String}} GROUP BY kafka_partition",
            parameters={"topic": self.topic},
        ).result_rows
        # DateTime64 in Asia/Ho_Chi_Minh: the epoch ms is UTC; +7 h gives local wall-clock ms.
        return {int(p): PartitionProgress(int(o), int(ms) + 7 * 3_600_000, int(b), int(n)) for p, o, ms, b, n in rows}

    async def repair_last_block(self, partition: int, progress: PartitionProgress) -> int:
        """Re-insert the partition's last block under its original token; returns its rows."""
        result = await self.store.run(
            self.store.client.query,
            f"SELECT {', '.join(STORED_COLUMNS)} FROM {self.table} WHERE kafka_topic = {{topic:String}} "
            "AND kafka_partition = {partition:UInt16} AND block_first_offset = {first:UInt64} ORDER BY kafka_offset",
            parameters={"topic": self.topic, "partition": partition, "first": progress.last_block_first_offset},
        )
        if not result.result_rows:
            return 0
        columns = [list(c) for c in result.result_columns]
        await self._insert(columns, self.token(partition, progress.last_block_first_offset, progress.max_offset))
        return len(result.result_rows)

    def dedup_keys(self, partition: int, since_day: int) -> list[tuple[int, int]]:
        """(invoice_key, local day number) of the partition's invoices from ``since_day`` on (blocking)."""
        return self.store.client.query(
            "SELECT invoice_key, toUInt32(issue_date) FROM invoices "
            "WHERE issue_date >= toDate({since:UInt32}) AND kafka_topic = {topic:String} "
            "AND kafka_partition = {partition:UInt16}",
            parameters={"since": max(since_day, 0), "topic": self.topic, "partition": partition},
        ).result_rows

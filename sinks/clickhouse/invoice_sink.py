"""The invoice writer: one batch per source partition, flushed explicitly, inserted idempotently.

Each insert holds one partition's contiguous offset range and carries an
``insert_deduplication_token`` derived from topic, partition and range, so a retried insert
is dropped by ClickHouse in the table and in every materialized view behind it. After a crash
or a rebalance, :meth:`InvoiceSink.progress` tells the highest offset already written per
partition, and the pipeline skips what is already there.
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

INSERT_SETTINGS = {"deduplicate_blocks_in_dependent_materialized_views": 1, "insert_deduplicate": 1}


@dataclass(frozen=True)
class PartitionProgress:
    """What ClickHouse already holds of one source partition."""

    max_offset: int
    max_issued_local_ms: int | None
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
        token = f"{self.topic}/{partition}/{batch.first_offset}-{batch.last_offset}"
        started = time.perf_counter()
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
                    batch.rows,
                    column_names=INVOICE_COLUMNS,
                    settings={**INSERT_SETTINGS, "insert_deduplication_token": token},
                )
        return FlushResult(len(batch.rows), batch.last_offset, time.perf_counter() - started)

    def discard(self, partition: int) -> None:
        """Drop what is buffered for a partition this worker no longer owns."""
        self._batches.pop(partition, None)

    def progress(self) -> dict[int, PartitionProgress]:
        """Highest written offset and newest issue time per partition (blocking; call off the loop)."""
        rows = self.store.client.query(
            "SELECT kafka_partition, max(max_offset), toUnixTimestamp64Milli(max(max_issued_at)), sum(rows) "
            "FROM ingest_progress WHERE kafka_topic = {topic:String} GROUP BY kafka_partition",
            parameters={"topic": self.topic},
        ).result_rows
        # DateTime64 in Asia/Ho_Chi_Minh: the epoch ms is UTC; +7 h gives local wall-clock ms.
        return {int(p): PartitionProgress(int(o), int(ms) + 7 * 3_600_000, int(n)) for p, o, ms, n in rows}

    def dedup_keys(self, partition: int, since_day: int) -> list[tuple[int, int]]:
        """(invoice_key, local day number) of the partition's invoices from ``since_day`` on (blocking)."""
        return self.store.client.query(
            "SELECT invoice_key, toUInt32(issue_date) FROM invoices "
            "WHERE issue_date >= toDate({since:UInt32}) AND kafka_topic = {topic:String} "
            "AND kafka_partition = {partition:UInt16}",
            parameters={"since": max(since_day, 0), "topic": self.topic, "partition": partition},
        ).result_rows

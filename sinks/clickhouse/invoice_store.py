"""The invoice sink's store on ClickHouse: the chain check, the conditional insert, the read-back, progress.

Every method is blocking and runs on the ClickHouse thread of :class:`sinks.clickhouse.client.ClickHouseStore`
(through :meth:`run` and :meth:`until_done`). See :mod:`sinks.clickhouse.invoice_sink` for why each exists.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from base.localtime import LOCAL_OFFSET_MS
from sinks.clickhouse import reconcile
from sinks.clickhouse.blocks import STORED_COLUMNS, PartitionProgress, PendingInsert
from sinks.clickhouse.client import ClickHouseStore
from sinks.clickhouse.reconcile import Repair

log = logging.getLogger(__name__)
T = TypeVar("T")

# has a block at or past a start landed? (the chain check, and the condition of a fenced insert)
CHAIN_TAKEN_SQL = (
    "SELECT count() FROM invoice_blocks WHERE kafka_topic = {topic:String} "
    "AND kafka_partition = {partition:UInt16} AND block_start >= {start:UInt64}"
)
INSERT_SETTINGS = {"deduplicate_blocks_in_dependent_materialized_views": 1, "insert_deduplicate": 1}


def insert_settings(token: str) -> dict[str, object]:
    """The settings of an insert whose deduplication token is ``token`` (in the table and every view)."""
    return {**INSERT_SETTINGS, "insert_deduplication_token": token}


class ClickHouseInvoiceStore:
    """:class:`sinks.clickhouse.blocks.InvoiceStore` on a ClickHouse server or chDB (one ``invoices`` table)."""

    def __init__(self, store: ClickHouseStore, table: str = "invoices") -> None:
        self.store = store
        self.table = table

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self.store.run(fn, *args, **kwargs)

    async def until_done(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self.store.until_done(fn, *args, **kwargs)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self.store.call(fn, *args, **kwargs)

    def chain_moved_past(self, topic: str, partition: int, start: int) -> bool:
        """Blocking: has a block starting at or after record ``start`` landed?"""
        rows = self.store.client.query(CHAIN_TAKEN_SQL, parameters=_chain_at(topic, partition, start)).result_rows
        return bool(rows[0][0])

    def landed_at(self, topic: str, partition: int, start: int) -> tuple[str, ...]:
        """Blocking: the row tokens of the partition's blocks that landed starting at record ``start``."""
        rows = self.store.client.query(
            "SELECT insert_token FROM invoice_blocks WHERE kafka_topic = {topic:String} "
            "AND kafka_partition = {partition:UInt16} AND block_start = {start:UInt64}",
            parameters={"topic": topic, "partition": partition, "start": start},
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
            taken = _chain_at(pending.topic, pending.partition, pending.start)
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

    def progress(self, topic: str) -> dict[int, PartitionProgress]:
        """Highest written offset, newest issue time and newest block per partition (blocking).

        Read from the table itself, not from a view: the table is what a cut-short insert
        reached first.
        """
        rows = self.store.client.query(
            "SELECT kafka_partition, max(kafka_offset), toUnixTimestamp64Milli(max(issued_at)), "
            "argMax(insert_token, kafka_offset), count() "
            f"FROM {self.table} WHERE kafka_topic = {{topic:String}} GROUP BY kafka_partition",
            parameters={"topic": topic},
        ).result_rows
        chain_ends = dict(
            self.store.client.query(
                "SELECT kafka_partition, max(block_end) FROM invoice_blocks WHERE kafka_topic = {topic:String} "
                "GROUP BY kafka_partition",
                parameters={"topic": topic},
            ).result_rows
        )
        # DateTime64 in Asia/Ho_Chi_Minh: the epoch ms is UTC; + the offset gives local wall-clock ms.
        return {
            int(p): PartitionProgress(max(int(o), int(chain_ends.get(p, -1))), int(ms) + LOCAL_OFFSET_MS, t, int(n))
            for p, o, ms, t, n in rows
        }

    def repair(self, topic: str, newest: Mapping[int, str]) -> list[Repair]:
        """Window-free: reads what ``invoices`` and each view hold and writes only what is missing
        (:mod:`sinks.clickhouse.reconcile`); safe to run again at any point."""
        views = reconcile.views(self.store)
        repairs = []
        for partition, token in sorted(newest.items()):
            self._drop_orphan_link(topic, partition, token)
            repairs.append(reconcile.repair_block(self.store, partition, token, views))
        return repairs

    def _drop_orphan_link(self, topic: str, partition: int, token: str) -> None:
        """A chain row whose block has no row in ``invoices`` (a view written before its table) is removed.

        ClickHouse writes the table before its views, so this is not expected; were it to happen,
        the chain check would skip records that never landed.
        """
        rows = self.store.client.query(
            "SELECT argMax(insert_token, block_start), count() FROM invoice_blocks WHERE kafka_topic = {topic:String} "
            "AND kafka_partition = {partition:UInt16}",
            parameters={"topic": topic, "partition": partition},
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

    def dedup_keys(self, topic: str, partition: int, since_day: int) -> tuple[Any, Any]:
        """(invoice_key, local day number) columns of the partition's invoices from ``since_day`` on (blocking).

        numpy columns: at Thanh Hóa scale a restore reads ~2 M keys a partition, ~100 bytes each as tuples.
        """
        found = self.store.client.query_np(
            f"SELECT invoice_key AS key, toUInt32(issue_date) AS day FROM {self.table} "
            "WHERE issue_date >= toDate({since:UInt32}) AND kafka_topic = {topic:String} "
            "AND kafka_partition = {partition:UInt16}",
            parameters={"since": max(since_day, 0), "topic": topic, "partition": partition},
        )
        if not len(found):
            return (), ()
        return found["key"], found["day"].astype("int64")


def _chain_at(topic: str, partition: int, start: int) -> dict[str, object]:
    return {"topic": topic, "partition": partition, "start": start}

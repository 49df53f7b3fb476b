"""The invoice sink's block write on chDB: steps 3 to 5 of the fence as one job that resumes where it failed."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from sinks.clickhouse import ClickHouseStore, InvoiceSink
from sinks.clickhouse.faults import ClickHouseUnavailable
from sinks.clickhouse.invoice_sink import PendingInsert
from sinks.clickhouse.invoice_store import ClickHouseInvoiceStore

TOPIC = "einvoice.issued"
ISSUED_MS = 1_717_200_000_000  # 2024-06-01 00:00 UTC


def row(offset: int) -> tuple:
    """One row in INVOICE_COLUMNS order."""
    day = (ISSUED_MS + 7 * 3_600_000) // 86_400_000
    return (
        "2800000001", f"M1-24-ABCDE-{offset:011d}", offset + 1, 1, "C24MAA", ISSUED_MS + offset, day, 100_000, 10,
        10_000, "CASH", 0, "REG-1", None, "enterprise", 1, "4711", "380", 2, TOPIC, 0, offset, ISSUED_MS + offset,
    )  # fmt: skip


class FlakyStore(ClickHouseInvoiceStore):
    """The real store, counting the sink's steps, whose insert and read-back each fail the first time."""

    def __init__(self, store: ClickHouseStore) -> None:
        super().__init__(store)
        self.calls: Counter[str] = Counter()

    def chain_moved_past(self, topic: str, partition: int, start: int) -> bool:
        self.calls["chain check"] += 1
        return super().chain_moved_past(topic, partition, start)

    def insert(self, pending: PendingInsert) -> None:
        self.calls["insert"] += 1
        super().insert(pending)
        if self.calls["insert"] == 1:
            raise ClickHouseUnavailable("the reply was lost after the insert landed")

    def landed_at(self, topic: str, partition: int, start: int) -> tuple[str, ...]:
        self.calls["read-back"] += 1
        if self.calls["read-back"] == 1:
            raise ClickHouseUnavailable("the read-back failed")
        return super().landed_at(topic, partition, start)


def test_a_failed_step_is_retried_alone_and_the_block_lands_once(store: ClickHouseStore) -> None:
    flaky = FlakyStore(store)
    sink = InvoiceSink(flaky, TOPIC)
    for offset in range(50):
        sink.add(0, offset, row(offset))
    pending = sink.take(0, 0, 59)  # records 50..59 were rejected: the block still covers them
    assert pending is not None
    fault_points: list[str] = []
    retries = store.insert_retries

    written = asyncio.run(sink.write(pending, lambda: fault_points.append("before insert")))

    assert written.ours(pending) and not written.moved_past
    assert written.landed == (f"{TOPIC}/0/0..59",) and (written.rows, written.last_offset) == (50, 59)
    # the chain check and the fault point ran once; the insert and the read-back twice (the retry dropped by its token)
    assert flaky.calls == {"chain check": 1, "insert": 2, "read-back": 2}
    assert fault_points == ["before insert"]
    assert store.insert_retries == retries + 2
    assert store.query_rows("SELECT count(), uniqExact(kafka_offset) FROM invoices") == [(50, 50)]
    assert store.query_rows("SELECT sum(invoices) FROM seller_daily") == [(50,)]
    assert store.query_rows("SELECT block_start, block_end, rows FROM invoice_blocks") == [(0, 59, 50)]


def test_a_block_behind_the_chain_is_not_inserted(store: ClickHouseStore) -> None:
    """Another writer's block at or past the start landed: the write stops at the chain check."""
    flaky = FlakyStore(store)
    first, second = InvoiceSink(store, TOPIC), InvoiceSink(flaky, TOPIC)
    for offset in range(10):
        first.add(0, offset, row(offset))
        second.add(0, offset, row(offset))
    asyncio.run(first.flush())
    pending = second.take(0, 0, 9)
    assert pending is not None

    written = asyncio.run(second.write(pending, lambda: pytest.fail("the fault point is past the chain check")))

    assert written.moved_past and not written.ours(pending)
    assert flaky.calls == {"chain check": 1}
    assert store.query_rows("SELECT count() FROM invoices") == [(10,)]

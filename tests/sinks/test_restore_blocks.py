"""A partition's newest block at production sizes: restored without a row twice, whatever the deduplication window.

The blocks are the default batch size's (40,000 rows) and one just past clickhouse-connect's
~2 MiB insert piece (17,482 rows, the issue's reproduction), encoded by the compiled core from
Avro records (``Prepared.native``) and by the Python reference (``ClickHouseStore.native_block``).
A restore re-inserted the newest block under its token until this version: a Native block read
back and inserted in pieces carried other deduplication ids and landed twice. Now the restore
adds only what a view lacks (``sinks/clickhouse/reconcile.py``), and every insert of a block is
one Native block whose condition ClickHouse checks when it runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from base.config import INVOICE_SUBJECT
from contracts.codec import AvroCodec, SchemaCatalog
from contracts.registry import as_version
from contracts.validation import InvoiceRules
from sinks.clickhouse import ClickHouseStore, InvoiceSink
from sinks.clickhouse.invoice_sink import STORED_COLUMNS, PendingInsert, insert_settings
from streams.partition import NO_WATERMARK
from tests.support import set_dedup_window

einvoice_core = pytest.importorskip("einvoice_core", reason="the compiled core is built by `make native`")

TOPIC = "einvoice.issued"
SELLERS = [f"28000{n:05d}" for n in range(40)]
REGISTRY = {
    s: [as_version({"valid_from": dt.date(2024, 1, 1), "vsic_code": "4711" if n % 2 else "5610",
                    "admin_unit_code": "380" if n % 3 else "381", "obliged": True, "status": "ACTIVE", "name": s})]
    for n, s in enumerate(SELLERS)
}  # fmt: skip
VIEWS = ("invoices", "seller_daily", "segment_daily", "receipts_hourly")
CODEC = AvroCodec(SchemaCatalog.load(), INVOICE_SUBJECT)
DAY0 = dt.datetime(2024, 6, 1, 1, 0)  # local wall clock; the feed spans three local days


def avro_records(partition: int, first: int, count: int) -> tuple[list[int], list[bytes], list[bytes], list[int]]:
    """``count`` valid invoices at offsets ``first..``: (offsets, keys, values, timestamps)."""
    offsets, keys, values, stamps = [], [], [], []
    for offset in range(first, first + count):
        seller = SELLERS[offset % len(SELLERS)]
        issued = DAY0 + dt.timedelta(seconds=5 * offset)
        value = {
            "seller_id": seller, "invoice_form": 1, "invoice_symbol": "C24MTT",
            "invoice_code": f"M1-24-AB12C-{partition:03d}{offset:08d}", "issued_at": issued,
            "amount_vnd": 100_000 + offset, "vat_rate": 8, "vat_amount_vnd": (100_000 + offset) * 8 // 100,
            "payment_method": "CASH" if offset % 2 else "EWALLET", "register_id": "AB12C",
        }  # fmt: skip
        offsets.append(offset)
        keys.append(seller.encode())
        values.append(CODEC.encode(value))
        stamps.append(int((issued - dt.timedelta(hours=7)).replace(tzinfo=dt.UTC).timestamp() * 1000) + 60_000)
    return offsets, keys, values, stamps


def new_core() -> einvoice_core.InvoiceCore:
    rules = InvoiceRules()
    entries = [(s.schema_id, s.subject, s.source) for s in SchemaCatalog.load().entries()]
    return einvoice_core.InvoiceCore(
        TOPIC, INVOICE_SUBJECT, entries, rules.invoice_code_pattern, rules.future_tolerance_ms,
        10 * 365 * 86_400_000, rules.max_amount_vnd, rules.vat_tolerance_vnd, 72 * 3_600_000,
    )  # fmt: skip


def compiled_block(
    sink: InvoiceSink, partition: int, first: int, count: int, start: int | None = None
) -> PendingInsert:
    """The block of ``count`` invoices as the compiled core prepares and encodes it."""
    core = new_core()
    core.restore(partition, first - 1, first - 1, NO_WATERMARK, [], [])
    prepared = core.prepare(partition, *avro_records(partition, first, count), REGISTRY.get)
    assert prepared.rows == count and not prepared.rejected
    sink.add_block(partition, prepared)
    pending = sink.take(partition, first if start is None else start, first + count - 1)
    assert pending is not None
    return pending


def reference_block(sink: InvoiceSink, partition: int, first: int, count: int) -> PendingInsert:
    """The same invoices as rows of the Python reference: the core's tuples, added one by one."""
    core = new_core()
    core.restore(partition, first - 1, first - 1, NO_WATERMARK, [], [])
    prepared = core.prepare(partition, *avro_records(partition, first, count), REGISTRY.get)
    for offset, row in zip(prepared.offsets(), prepared.tuples(), strict=True):
        sink.add(partition, offset, row)
    pending = sink.take(partition, first, first + count - 1)
    assert pending is not None
    return pending


ENCODINGS = {"compiled": compiled_block, "reference": reference_block}


def counts(store: ClickHouseStore) -> dict[str, int]:
    """Rows of invoices, and invoices counted in each view behind it."""
    found = {"invoices": store.query_rows("SELECT count() FROM invoices")[0][0]}
    for view in VIEWS[1:]:
        found[view] = store.query_rows(f"SELECT sum(invoices) FROM {view}")[0][0]
    return found


def distinct_offsets(store: ClickHouseStore) -> int:
    return store.query_rows("SELECT uniqExact(kafka_partition, kafka_offset) FROM invoices")[0][0]


def write(sink: InvoiceSink, pending: PendingInsert) -> None:
    written = asyncio.run(sink.write(pending))
    assert written.ours(pending), written


def restore(sink: InvoiceSink, partitions: list[int]) -> dict[int, dict[str, int]]:
    """What a worker's restore does: the chain's newest block per partition, made whole; views repaired."""
    progress = sink.store.call(sink.progress)  # type: ignore[attr-defined]
    repairs = asyncio.run(sink.repair({p: progress[p].last_token for p in partitions}))
    assert all(not r.doubled for r in repairs), repairs
    return {int(r.token.split("/")[1]): r.added for r in repairs}


@pytest.mark.parametrize("rows", [17_482, 40_000])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_restored_block_holds_each_row_once(store: ClickHouseStore, encoding: str, rows: int) -> None:
    """The issue's reproduction: one block past a client piece (and the default batch) inserted, then restored."""
    sink = InvoiceSink(store, TOPIC)
    write(sink, ENCODINGS[encoding](sink, 0, 0, rows))
    assert counts(store) == dict.fromkeys(VIEWS, rows)

    assert restore(sink, [0]) == {0: {}}  # nothing was missing: nothing is written
    assert restore(sink, [0]) == {0: {}}  # a second restart, the same
    assert counts(store) == dict.fromkeys(VIEWS, rows)
    assert distinct_offsets(store) == rows
    assert store.query_rows("SELECT block_start, block_end, rows FROM invoice_blocks") == [(0, rows - 1, rows)]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_block_cut_short_before_its_views_is_completed_from_invoices(store: ClickHouseStore, encoding: str) -> None:
    """A crash between the table and its views, at 40,000 rows: the restore adds exactly what the views lack."""
    sink = InvoiceSink(store, TOPIC)
    write(sink, ENCODINGS[encoding](sink, 1, 0, 25_000))
    for view in ("segment_daily_mv", "invoice_blocks_mv", "receipts_hourly_mv"):
        store.call(store.client.command, f"DETACH TABLE {view}")
    try:  # the chain's view is detached too: the writer cannot read its block back, as after a crash
        asyncio.run(sink.write(ENCODINGS[encoding](sink, 1, 25_000, 40_000)))
    finally:
        for view in ("segment_daily_mv", "invoice_blocks_mv", "receipts_hourly_mv"):
            store.call(store.client.command, f"ATTACH TABLE {view}")
    assert counts(store) == {"invoices": 65_000, "seller_daily": 65_000, "segment_daily": 25_000,
                             "receipts_hourly": 25_000}  # fmt: skip

    added = restore(sink, [1])[1]
    assert set(added) == {"segment_daily_mv", "invoice_blocks_mv", "receipts_hourly_mv"}
    assert counts(store) == dict.fromkeys(VIEWS, 65_000)
    assert restore(sink, [1]) == {1: {}}
    chain = store.query_rows("SELECT block_start, block_end, rows FROM invoice_blocks ORDER BY block_start")
    assert chain == [(0, 24_999, 25_000), (25_000, 64_999, 40_000)]
    # the repaired aggregates equal what the views compute from invoices, column by column
    assert store.query_rows(
        "SELECT issue_date, vsic_code, admin_unit_code, sum(invoices), sum(amount_vnd), sum(non_cash_invoices), "
        "uniqExactMerge(issuers) FROM segment_daily GROUP BY ALL ORDER BY ALL"
    ) == store.query_rows(
        "SELECT issue_date, vsic_code, admin_unit_code, count(), sum(amount_vnd), sum(non_cash), uniqExact(seller_id) "
        "FROM invoices GROUP BY ALL ORDER BY ALL"
    )


def test_every_insert_of_a_block_carries_the_same_deduplication_id(store: ClickHouseStore) -> None:
    """One Native block each time, whichever encoding sends it: a repeat under the token is dropped (unfenced)."""
    sink = InvoiceSink(store, TOPIC, fenced=False)
    compiled = compiled_block(sink, 2, 0, 40_000)
    reference = reference_block(sink, 2, 0, 40_000)
    native = store.call(sink.store.native, compiled)
    assert native == store.call(sink.store.native, compiled)  # the same bytes each time
    for block in (native, store.call(sink.store.native, reference), native):
        store.call(store.raw_insert, "invoices", list(STORED_COLUMNS), block, "Native", insert_settings("t/2/0"))
    assert counts(store) == dict.fromkeys(VIEWS, 40_000)
    big = compiled_block(sink, 3, 0, 100_000)  # past max_block_size (65,409): one block still
    for _ in range(2):
        store.call(store.raw_insert, "invoices", list(STORED_COLUMNS), store.call(sink.store.native, big), "Native",
                   insert_settings("t/3/0"))  # fmt: skip
    assert counts(store) == dict.fromkeys(VIEWS, 140_000)


def test_a_restore_after_more_inserts_than_the_window_doubles_nothing(store: ClickHouseStore) -> None:
    """Window of 10 insert ids, 24 inserts since the newest block of partition 0, whose views a crash cut short."""
    set_dedup_window(store, 10)
    sink = InvoiceSink(store, TOPIC)
    write(sink, compiled_block(sink, 0, 0, 20_000))
    store.call(store.client.command, "DETACH TABLE seller_daily_mv")
    try:
        write(sink, compiled_block(sink, 0, 20_000, 20_000))
    finally:
        store.call(store.client.command, "ATTACH TABLE seller_daily_mv")
    for n in range(24):  # other partitions go on: partition 0's token leaves the window
        write(sink, compiled_block(sink, 1 + n % 3, 1_000 * (n // 3), 1_000))
    expected = 40_000 + 24_000
    assert counts(store)["seller_daily"] == expected - 20_000

    assert set(restore(sink, [0, 1, 2, 3])[0]) == {"seller_daily_mv"}
    assert counts(store) == dict.fromkeys(VIEWS, expected)
    for _ in range(2):
        restore(sink, [0, 1, 2, 3])
    assert counts(store) == dict.fromkeys(VIEWS, expected)
    assert distinct_offsets(store) == expected


@pytest.mark.parametrize("fenced", [True, False])
def test_a_woken_writer_adds_nothing_after_more_inserts_than_the_window(store: ClickHouseStore, fenced: bool) -> None:
    """A writer frozen between its chain check and its insert wakes after 30 blocks (window 10).

    Fenced, ClickHouse checks the chain in the insert itself: nothing lands. Unfenced, the same
    insert under the same token relies on the window, which no longer holds it: the block doubles.
    """
    set_dedup_window(store, 10)
    frozen_sink, taker = InvoiceSink(store, TOPIC, fenced=fenced), InvoiceSink(store, TOPIC, fenced=fenced)
    write(taker, compiled_block(taker, 0, 0, 5_000))
    frozen = compiled_block(frozen_sink, 0, 5_000, 5_000)  # its chain check passed: the next block starts at 5,000
    assert not store.call(frozen_sink.store.chain_moved_past, TOPIC, 0, 5_000)
    write(taker, compiled_block(taker, 0, 5_000, 5_000))  # the taker writes the same start, then goes on
    for n in range(1, 30):
        write(taker, compiled_block(taker, n % 4, 10_000 * (n // 4 + 1), 500))

    store.call(frozen_sink.store.insert, frozen)  # step 4 after the freeze (steps 3 and 4 are one job otherwise)
    landed = store.call(frozen_sink.store.landed_at, TOPIC, 0, 5_000)
    total = 10_000 + 29 * 500
    if fenced:
        assert landed == (f"{TOPIC}/0/5000..9999",)
        assert counts(store) == dict.fromkeys(VIEWS, total)
    else:
        assert counts(store) == dict.fromkeys(VIEWS, total + 5_000)  # the bound the fence removes: doubled
    assert distinct_offsets(store) == total


def test_a_chain_link_without_its_rows_is_removed_so_the_records_are_read_again(store: ClickHouseStore) -> None:
    """A chain row naming a block invoices lacks (a view ahead of its table) would skip records that never landed."""
    sink = InvoiceSink(store, TOPIC)
    write(sink, compiled_block(sink, 0, 0, 1_000))
    store.call(
        store.client.command,
        f"INSERT INTO invoice_blocks (kafka_topic, kafka_partition, block_start, block_end, insert_token, rows) "
        f"VALUES ('{TOPIC}', 0, 1000, 1999, '{TOPIC}/0/1000..1999', 1000)",
    )
    assert store.call(sink.progress)[0].max_offset == 1_999
    restore(sink, [0])
    assert store.call(sink.progress)[0].max_offset == 999  # the chain ends where invoices does
    write(sink, compiled_block(sink, 0, 1_000, 1_000))  # and the records are written
    assert counts(store) == dict.fromkeys(VIEWS, 2_000)


def test_a_view_the_restore_cannot_repair_is_refused_loudly(store: ClickHouseStore) -> None:
    """A view added later without kafka_partition in its key: no restore can tell its keys apart, so none starts."""
    store.call(store.client.command, "CREATE TABLE per_day (issue_date Date, invoices "
               "SimpleAggregateFunction(sum, UInt64)) ENGINE = AggregatingMergeTree ORDER BY issue_date")  # fmt: skip
    store.call(store.client.command, "CREATE MATERIALIZED VIEW per_day_mv TO per_day AS "
               "SELECT issue_date, count() AS invoices FROM invoices GROUP BY issue_date")  # fmt: skip
    sink = InvoiceSink(store, TOPIC)
    write(sink, compiled_block(sink, 0, 0, 100))
    with pytest.raises(RuntimeError, match="per_day_mv: per_day is not keyed by kafka_partition"):
        store.call(sink.store.repair, TOPIC, {0: f"{TOPIC}/0/0..99"})

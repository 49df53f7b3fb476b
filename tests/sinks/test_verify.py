"""`verify_store` and `einvoice-monitor verify` on real chDB: a clean store passes, each fault is found, exactly.

The blocks are written by the real sink (`InvoiceSink`, as tests/harness/test_chdb_http.py does); each
fault is then made the way it happens: a block inserted again under another deduplication token, a view
row written by hand, a view detached during an insert, chain rows deleted or added.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from sinks.clickhouse import ClickHouseStore, InvoiceSink, apply_migrations
from sinks.clickhouse.invoice_sink import INSERT_SETTINGS, STORED_COLUMNS
from sinks.clickhouse.verify import (
    ChainMismatch,
    DoubledOffsets,
    DoubledStart,
    StoreReport,
    ViewMismatch,
    verify_store,
)
from tests.harness.test_chdb_http import DAY0, TOPIC, flush, invoice_rows

SELLERS = [("0100000001", "4711", "380"), ("0100000002", "5610", "381")]
DAY_MS = 86_400_000
DAYS = [DAY0 + dt.timedelta(days=k) for k in range(4)]
TOKEN_0, TOKEN_1 = f"{TOPIC}/0/0..29", f"{TOPIC}/1/0..23"


def open_chdb(path: Path) -> ClickHouseStore:
    store = ClickHouseStore(f"chdb://{path}")
    store.call(apply_migrations, store.client)
    return store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ClickHouseStore]:
    store = open_chdb(tmp_path / "ch")
    yield store
    store.close()


def received_late(rows: list, first: int) -> list:
    """The rows, those from ``first`` on received a day after their issue (so a receipt day is not an issue day)."""
    return rows[:first] + [(*row[:-1], row[-1] + DAY_MS) for row in rows[first:]]


def fill(store: ClickHouseStore) -> None:
    """Partition 0: 30 rows, 10 an issue day over three days, the second seller's received a day late.
    Partition 1: 24 rows, 8 an issue day, received on their issue day. One block each."""
    flush(
        InvoiceSink(store, TOPIC),
        {0: received_late(invoice_rows(SELLERS, 15, 0, 0), 15), 1: invoice_rows(SELLERS, 12, 1, 0)},
    )


def insert_rows(store: ClickHouseStore, rows: list, token: str, dedup: str, **columns: object) -> int:
    """Rows (INVOICE_COLUMNS) inserted under row token ``token``, deduplication token ``dedup``; returns how many."""
    data = [list(c) for c in zip(*rows, strict=True)] + [[token] * len(rows)]
    data += [[value] * len(rows) for value in columns.values()]
    store.call(
        store.client.insert, "invoices", data, column_names=[*STORED_COLUMNS, *columns], column_oriented=True,
        settings={**INSERT_SETTINGS, "insert_deduplication_token": dedup},
    )  # fmt: skip
    return len(rows)


def insert_again(store: ClickHouseStore, partition: int, token: str, dedup: str) -> int:
    """A partition's rows inserted again as a new insert (another deduplication token); returns how many."""
    rows = store.query_rows(
        f"SELECT {', '.join(STORED_COLUMNS[:-1])} FROM invoices WHERE kafka_partition = {{p:UInt16}}", {"p": partition}
    )
    return insert_rows(store, rows, token, dedup)


def test_a_clean_store_is_ok(store: ClickHouseStore) -> None:
    fill(store)
    assert store.query_rows("SELECT insert_token, rows FROM invoice_blocks ORDER BY kafka_partition") == [
        (TOKEN_0, 30),
        (TOKEN_1, 24),
    ]
    report = store.call(verify_store, store)
    [(applied,)] = store.query_rows("SELECT applied_at FROM schema_migrations FINAL WHERE version = 7")
    # a fresh store: the chain holds every insert since the migration that made it
    assert report == StoreReport(rows=54, blocks=2, chain_since=applied.replace(tzinfo=dt.UTC))
    assert report.ok
    # receipts_hourly is held to receipt days (5, 10, 10, 5 in partition 0), not issue days (10, 10, 10)
    assert store.query_rows(
        "SELECT toDate(received_hour), sum(invoices) FROM receipts_hourly WHERE kafka_partition = 0 "
        "GROUP BY 1 ORDER BY 1"
    ) == list(zip(DAYS, [5, 10, 10, 5], strict=True))


def test_a_block_inserted_again_under_another_token_is_doubled_everywhere(store: ClickHouseStore) -> None:
    fill(store)
    # the same rows, the same start, another end: what a second writer past the deduplication window leaves
    assert insert_again(store, 1, f"{TOPIC}/1/0..30", "other") == 24

    report = store.call(verify_store, store)

    assert not report.ok
    assert (report.rows, report.blocks) == (78, 3)
    assert report.doubled_starts == (DoubledStart(TOPIC, 1, 0, (TOKEN_1, f"{TOPIC}/1/0..30")),)
    assert report.doubled_offsets == tuple(DoubledOffsets(TOPIC, 1, day, 8) for day in DAYS[:3])
    # the views count the second copy with the table: held and in invoices 16, each record once 8
    assert report.view_mismatches == tuple(
        ViewMismatch(view, day, 1, 16, 8, 16)
        for view in ("seller_daily", "segment_daily", "receipts_hourly")
        for day in DAYS[:3]
    )
    assert all(m.mirrors_table for m in report.view_mismatches)
    assert report.chain_mismatches == ()  # each token has its one chain row, counting its rows


def test_a_view_row_added_by_hand_is_a_mismatch(store: ClickHouseStore) -> None:
    fill(store)
    store.call(
        store.client.insert, "segment_daily", [(DAYS[1], "4711", "380", 1, 0, 3)],
        column_names=["issue_date", "vsic_code", "admin_unit_code", "registered", "kafka_partition", "invoices"],
    )  # fmt: skip

    report = store.call(verify_store, store)

    assert report.view_mismatches == (ViewMismatch("segment_daily", DAYS[1], 0, 13, 10, 10),)
    assert not report.view_mismatches[0].mirrors_table
    assert (report.doubled_starts, report.doubled_offsets, report.chain_mismatches) == ((), (), ())
    assert not report.ok


def test_a_view_that_missed_a_block_is_short(store: ClickHouseStore) -> None:
    """What a crash between the table and one view leaves (the restore repairs only the newest block)."""
    fill(store)
    store.call(store.client.command, "DETACH TABLE receipts_hourly_mv")
    try:
        flush(InvoiceSink(store, TOPIC), {2: invoice_rows(SELLERS[:1], 6, 2, 0)})
    finally:
        store.call(store.client.command, "ATTACH TABLE receipts_hourly_mv")

    report = store.call(verify_store, store)

    assert report.view_mismatches == tuple(ViewMismatch("receipts_hourly", day, 2, 0, 2, 2) for day in DAYS[:3])
    assert (report.rows, report.doubled_starts, report.doubled_offsets, report.chain_mismatches) == (60, (), (), ())


def test_the_chain_is_held_to_the_tokens_of_invoices(store: ClickHouseStore) -> None:
    fill(store)
    # the chain as if made 100 days ago: only its 30-day TTL (less a day) limits which tokens need a row
    store.call(
        store.client.command,
        "ALTER TABLE schema_migrations UPDATE applied_at = now64(3) - INTERVAL 100 DAY WHERE version = 7",
        settings={"mutations_sync": 2},
    )
    old, recent = f"{TOPIC}/2/0..5", f"{TOPIC}/3/0..5"
    for partition, token, days in ((2, old, 40), (3, recent, 20)):
        ingested = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=days)
        rows = invoice_rows(SELLERS[:1], 6, partition, 0)
        assert insert_rows(store, rows, token, f"{TOPIC}/{partition}/0", ingested_at=ingested) == 6
        store.call(store.client.command, "DELETE FROM invoice_blocks WHERE insert_token = {t:String}",
                   parameters={"t": token})  # fmt: skip
    store.call(store.client.command, "DELETE FROM invoice_blocks WHERE insert_token = {t:String}",
               parameters={"t": TOKEN_1})  # fmt: skip
    store.call(
        store.client.command,
        "INSERT INTO invoice_blocks (kafka_topic, kafka_partition, block_start, block_end, insert_token, rows) "
        f"VALUES ('{TOPIC}', 0, 30, 39, '{TOPIC}/0/30..39', 10), ('{TOPIC}', 0, 0, 29, '{TOKEN_0}', 30)",
    )

    report = store.call(verify_store, store)

    assert report.chain_mismatches == (
        ChainMismatch(TOPIC, 0, TOKEN_0, 30, 2, 60),
        ChainMismatch(TOPIC, 0, f"{TOPIC}/0/30..39", 0, 1, 10),
        ChainMismatch(TOPIC, 1, TOKEN_1, 24, 0, 0),
        ChainMismatch(TOPIC, 3, recent, 6, 0, 0),  # 20 days old, no chain row: reported; 40 days old: not
    )
    assert [m.problem for m in report.chain_mismatches] == [
        "2 chain rows for one token",
        "chain row without invoices rows",
        "invoices rows without a chain row",
        "invoices rows without a chain row",
    ]
    assert report.doubled_starts == (DoubledStart(TOPIC, 0, 0, (TOKEN_0, TOKEN_0)),)
    assert (report.rows, report.doubled_offsets, report.view_mismatches) == (66, (), ())
    ttl = dt.datetime.now(dt.UTC) - dt.timedelta(days=29)
    assert ttl - dt.timedelta(minutes=5) < report.chain_since <= ttl


def run_verify(data_dir: Path, *args: str):
    env = {"EINVOICE_DATA_DIR": str(data_dir), "CLICKHOUSE_URL": ""}
    return CliRunner().invoke(app, ["verify", *args], env=env, catch_exceptions=False)


def test_the_command_exits_0_on_a_clean_store_and_1_on_a_doubled_one(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = open_chdb(data_dir / "clickhouse")  # where the settings put chDB
    try:
        fill(store)
    finally:
        store.close()

    clean = run_verify(data_dir)
    assert clean.exit_code == 0, clean.output
    assert "Store check: 54 invoice rows, 2 chain rows" in clean.stdout
    assert clean.stdout.count(" OK ") == 6 and "store ok" in clean.stdout
    assert "replay rebuild" not in clean.stderr

    store = open_chdb(data_dir / "clickhouse")
    try:
        insert_again(store, 1, f"{TOPIC}/1/0..30", "other")
    finally:
        store.close()

    doubled = run_verify(data_dir, "--limit", "2")
    assert doubled.exit_code == 1, doubled.output
    for line in ("1 start doubled", "24 extra rows on 3 partition-days", "3 partition-days off", "… and 7 more"):
        assert line in doubled.stdout, doubled.stdout
    assert doubled.stdout.count(" OK ") == 1  # the chain
    assert "store ok" not in doubled.stdout
    assert "einvoice-monitor replay rebuild" in doubled.stderr and "Exactly once" in doubled.stderr

    as_json = run_verify(data_dir, "--json")
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert (report["ok"], report["rows"], report["blocks"]) == (False, 78, 3)
    assert report["doubled_starts"] == [
        {"kafka_topic": TOPIC, "kafka_partition": 1, "block_start": 0, "tokens": [TOKEN_1, f"{TOPIC}/1/0..30"]}
    ]
    assert [(d["issue_date"], d["extra_rows"]) for d in report["doubled_offsets"]] == [
        (day.isoformat(), 8) for day in DAYS[:3]
    ]
    assert len(report["view_mismatches"]) == 9 and report["chain_mismatches"] == []
    assert report["view_mismatches"][0] == {
        "view": "seller_daily", "day": DAY0.isoformat(), "kafka_partition": 1, "held": 16, "expected": 8, "stored": 16
    }  # fmt: skip


def test_the_command_refuses_a_negative_limit_and_tells_its_exit_codes(tmp_path: Path) -> None:
    refused = run_verify(tmp_path / "data", "--limit", "-1")
    assert refused.exit_code == 2
    assert not (tmp_path / "data").exists()  # refused before ClickHouse was opened
    helped = run_verify(tmp_path / "data", "--help")
    assert helped.exit_code == 0
    assert "1 something is doubled or off" in " ".join(helped.stdout.split())

"""The loopback ClickHouse HTTP endpoint (harness/chdb_http.py): real HTTP, real clickhouse-connect, real chDB.

Each test gets a database of its own on one endpoint process, reached the way a worker reaches a
server: ``http://user:@127.0.0.1:port/db`` through ``sinks.clickhouse.connect`` (lz4 both ways).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import clickhouse_connect
import lz4.frame
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from analytics.adoption import adoption, unregistered
from contracts.registry import REGISTRY_HISTORY_COLUMNS
from harness.chdb_http import ChdbHttpServer
from sinks.clickhouse import ClickHouseStore, InvoiceSink, apply_migrations
from sinks.clickhouse.invoice_sink import INSERT_SETTINGS, STORED_COLUMNS, insert_settings
from sinks.clickhouse.migrate import LOCK_TABLE, MIGRATIONS_DIR, MigrationLocked, migration_lock

TOPIC = "test.einvoice.issued"
DAY0 = dt.date(2024, 6, 3)
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbHttpServer]:
    server = ChdbHttpServer(tmp_path_factory.mktemp("chdb-http") / "store")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        assert server.proc is not None and server.proc.returncode == 0, server.log_path.read_text()


def dsn_for(endpoint: ChdbHttpServer, database: str) -> str:
    return endpoint.dsn.rsplit("/", 1)[0] + f"/{database}"


@pytest.fixture
def store(endpoint: ChdbHttpServer) -> Iterator[ClickHouseStore]:
    """A fresh database with every migration applied through the endpoint."""
    database = f"t_{uuid.uuid4().hex[:10]}"
    admin = ClickHouseStore(endpoint.dsn)
    admin.call(admin.client.command, f"CREATE DATABASE {database}")
    admin.close()
    store = ClickHouseStore(dsn_for(endpoint, database))
    store.call(apply_migrations, store.client)
    try:
        yield store
    finally:
        store.close()


def invoice_rows(sellers: list[tuple[str, str, str]], per_seller: int, partition: int, first_offset: int) -> list:
    """Rows as the ingest builds them: (seller, vsic, unit) each issuing ``per_seller`` invoices over three days."""
    rows, offset = [], first_offset
    for s, (seller, vsic, unit) in enumerate(sellers):
        for i in range(per_seller):
            day = DAY0 + dt.timedelta(days=i % 3)
            issued_ms = int(dt.datetime(day.year, day.month, day.day, 2, tzinfo=dt.UTC).timestamp() * 1000) + i * 1000
            amount = 10_000 * (s + 1) + i
            rows.append((
                seller, f"M1-24-ABCDE-{partition:02d}{offset:09d}", hash((seller, offset)) & (2**62), 1, "C24MAA",
                issued_ms, (day - dt.date(1970, 1, 1)).days, amount, 10, amount // 10, "CARD" if i % 2 else "CASH",
                i % 2, "REG-1", None, "enterprise", 1 if vsic else 0, vsic, unit, 1, TOPIC, partition, offset,
                issued_ms + HOUR_MS,
            ))  # fmt: skip
            offset += 1
    return rows


def counts(store: ClickHouseStore) -> dict[str, int]:
    """Rows of the table and invoices counted in each view behind it."""
    return {
        "invoices": store.query_rows("SELECT count() FROM invoices")[0][0],
        "seller_daily": store.query_rows("SELECT sum(invoices) FROM seller_daily")[0][0],
        "segment_daily": store.query_rows("SELECT sum(invoices) FROM segment_daily")[0][0],
        "receipts_hourly": store.query_rows("SELECT sum(invoices) FROM receipts_hourly")[0][0],
    }


def flush(sink: InvoiceSink, rows_by_partition: dict[int, list]) -> None:
    for partition, rows in rows_by_partition.items():
        for row in rows:
            sink.add(partition, row[21], row)
    asyncio.run(sink.flush())


def test_migrations_apply_once_and_every_client_sees_them(endpoint: ChdbHttpServer, store: ClickHouseStore) -> None:
    names = sorted(p.stem for p in MIGRATIONS_DIR.glob("*.sql"))
    versions = store.query_rows("SELECT version, name FROM schema_migrations FINAL ORDER BY version")
    assert [name for _, name in versions] == names
    assert store.call(apply_migrations, store.client) == []  # a second worker starting finds nothing to do
    other = clickhouse_connect.get_client(dsn=dsn_for(endpoint, store.client.database), compress="zstd")
    try:
        tables = {
            r[0] for r in other.query("SELECT name FROM system.tables WHERE database = currentDatabase()").result_rows
        }
        assert {"invoices", "seller_daily_mv", "segment_daily_mv", "receipts_hourly_mv", "replay_audit"} <= tables
        assert other.query("SELECT count() FROM admin_units FINAL").result_rows == [(28,)]  # 0002's reference data
    finally:
        other.close()


def fresh_database(endpoint: ChdbHttpServer) -> str:
    database = f"t_{uuid.uuid4().hex[:10]}"
    admin = clickhouse_connect.get_client(dsn=endpoint.dsn)
    admin.command(f"CREATE DATABASE {database}")
    admin.close()
    return database


def test_workers_starting_together_on_a_fresh_store_apply_each_migration_once(endpoint: ChdbHttpServer) -> None:
    """Compose starts the replicas at once: four clients migrate one fresh database together, as separate
    connections; one applies everything under the lock, the others wait and find nothing left to do."""
    names = sorted(p.stem for p in MIGRATIONS_DIR.glob("*.sql"))
    for _ in range(2):
        database = fresh_database(endpoint)
        clients = [clickhouse_connect.get_client(dsn=dsn_for(endpoint, database)) for _ in range(4)]
        try:
            with ThreadPoolExecutor(len(clients)) as pool:
                applied = list(pool.map(apply_migrations, clients))
            assert sorted(name for each in applied for name in each) == names  # each once, all of them
            rows = clients[0].query("SELECT version FROM schema_migrations").result_rows
            assert len(rows) == len(names)
            tables = {r[0] for r in clients[0].query("SHOW TABLES").result_rows}
            assert {"seller_daily", "seller_daily_mv", "segment_daily", "receipts_hourly"} <= tables
            assert not {t for t in tables if t.endswith("_0008")} and LOCK_TABLE not in tables
            columns = {r[0] for r in clients[0].query("DESCRIBE TABLE seller_daily").result_rows}
            assert "kafka_partition" in columns  # 0008's table, not 0001's
        finally:
            for client in clients:
                client.close()


def test_a_lock_left_by_a_killed_migrator_is_named_with_what_to_do(endpoint: ChdbHttpServer) -> None:
    client = clickhouse_connect.get_client(dsn=dsn_for(endpoint, fresh_database(endpoint)))
    try:
        other = clickhouse_connect.get_client(dsn=dsn_for(endpoint, client.database))
        # taken, and not released while the other starts: as if its holder had been killed
        with migration_lock(client), pytest.raises(MigrationLocked) as refused:
            apply_migrations(other, wait_s=1.0)
        message = str(refused.value)
        assert f"{socket.gethostname()}:" in message and f"DROP TABLE {LOCK_TABLE}" in message
        assert apply_migrations(client) != []  # released: the next start migrates
    finally:
        client.close()


def test_a_repeated_insert_is_dropped_in_the_table_and_in_every_view(store: ClickHouseStore) -> None:
    """Through the endpoint: a fenced insert repeated finds its chain taken; an unfenced one is dropped by its token."""
    sellers = [("0100000001", "4711", "380"), ("0100000002", "5610", "381")]
    sink = InvoiceSink(store, TOPIC)
    flush(sink, {0: invoice_rows(sellers, 150, 0, 0), 1: invoice_rows(sellers, 100, 1, 0)})
    assert counts(store) == dict.fromkeys(("invoices", "seller_daily", "segment_daily", "receipts_hourly"), 500)
    progress = store.call(sink.progress)
    tokens = [progress[0].last_token, progress[1].last_token]
    assert tokens == [f"{TOPIC}/0/0..299", f"{TOPIC}/1/0..199"]  # one block a partition, named by its range
    assert (progress[0].max_offset, progress[1].max_offset) == (299, 199)

    for partition, rows in ((0, invoice_rows(sellers, 150, 0, 0)), (1, invoice_rows(sellers, 100, 1, 0))):
        for row in rows:
            sink.add(partition, row[21], row)
        pending = sink.take(partition, 0, rows[-1][21])
        assert pending is not None
        store.call(sink.store.insert, pending)  # fenced: the chain holds a block at this start, the insert adds nothing
        # a plain repeat of the same Native block: dropped by its token
        store.call(store.raw_insert, "invoices", list(STORED_COLUMNS), store.call(sink.store.native, pending), "Native",
                   insert_settings(pending.token))  # fmt: skip
    assert counts(store) == dict.fromkeys(counts(store), 500)

    # the same rows under another token are a new insert: the check above can fail
    result = store.query_rows(f"SELECT {', '.join(STORED_COLUMNS)} FROM invoices WHERE kafka_partition = 1")
    columns = [list(c) for c in zip(*result, strict=True)]
    store.call(
        store.client.insert, "invoices", columns, column_names=STORED_COLUMNS, column_oriented=True,
        settings={**INSERT_SETTINGS, "insert_deduplication_token": "another"},
    )  # fmt: skip
    assert counts(store) == dict.fromkeys(counts(store), 700)


def test_repair_completes_an_insert_that_reached_the_table_but_not_the_views(store: ClickHouseStore) -> None:
    """What a crash between the table and its views leaves; the repair writes only what the view lacks."""
    sellers = [("0100000003", "4711", "380")]
    sink = InvoiceSink(store, TOPIC)
    flush(sink, {2: invoice_rows(sellers, 90, 2, 0)})
    store.call(store.client.command, "DETACH TABLE segment_daily_mv")
    try:
        flush(sink, {2: invoice_rows(sellers, 60, 2, 90)})
    finally:
        store.call(store.client.command, "ATTACH TABLE segment_daily_mv")
    assert counts(store) == {"invoices": 150, "seller_daily": 150, "segment_daily": 90, "receipts_hourly": 150}
    token = store.call(sink.progress)[2].last_token
    assert token == f"{TOPIC}/2/90..149"
    [repair] = asyncio.run(sink.repair({2: token}))
    assert (repair.added, repair.doubled) == ({"segment_daily_mv": 3}, {})  # the block's three days
    assert counts(store) == dict.fromkeys(counts(store), 150)
    [again] = asyncio.run(sink.repair({2: token}))
    assert (again.added, again.doubled) == ({}, {})


def test_the_projects_queries_answer_through_it(store: ClickHouseStore) -> None:
    """The adoption query (its unit mapping is too long for the URL: sent as a form) and the unregistered one."""
    units = [r[0] for r in store.query_rows("SELECT code FROM admin_units FINAL WHERE level = 'district' LIMIT 2")]
    sectors = [r[0] for r in store.query_rows("SELECT vsic_code FROM sectors FINAL ORDER BY vsic_code LIMIT 2")]
    registered = [("0100000010", sectors[0], units[0]), ("0100000011", sectors[1], units[1])]
    history = [
        (seller, DAY0 - dt.timedelta(days=30), f"Cửa hàng {seller}", vsic, unit, 1, "ACTIVE", 0, n, 0)
        for n, (seller, vsic, unit) in enumerate([*registered, ("0100000012", sectors[0], units[0])])
    ]
    store.call(store.client.insert, "registry_history", history, column_names=REGISTRY_HISTORY_COLUMNS)
    rows = invoice_rows(registered, 30, 0, 0) + invoice_rows([("8000000001", "", "")], 12, 1, 0)
    flush(InvoiceSink(store, TOPIC), {0: rows[:60], 1: rows[60:]})

    days = adoption(store, DAY0, DAY0 + dt.timedelta(days=2), level="district")
    totals = {d.day: d for d in days if (d.sector, d.unit) == ("*", "*")}
    assert sorted(totals) == [DAY0 + dt.timedelta(days=i) for i in range(3)]
    assert [(d.eligible, d.active_1d, d.invoices, d.issuers) for d in totals.values()] == [(3, 2, 20, 2)] * 3
    assert sum(d.revenue_vnd for d in totals.values()) == sum(r[7] for r in rows[:60])
    assert unregistered(store, DAY0, DAY0 + dt.timedelta(days=2)) == [
        (DAY0 + dt.timedelta(days=i), 1, 4) for i in range(3)
    ]


def raw_post(endpoint: ChdbHttpServer, sql: str, **params: str) -> tuple[int, dict[str, Any], str]:
    from urllib.parse import urlencode

    request = urllib.request.Request(f"http://127.0.0.1:{endpoint.port}/?{urlencode(params)}", data=sql.encode())
    request.add_header("Authorization", "Basic ZGVmYXVsdDo=")  # default, empty password
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_errors_come_back_as_clickhouse_sends_them(endpoint: ChdbHttpServer, store: ClickHouseStore) -> None:
    status, headers, body = raw_post(endpoint, "SELECT * FROM no_such_table")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (404, "60")
    assert body.startswith("Code: 60. DB::Exception: ") and "(UNKNOWN_TABLE)" in body and "(version 26." in body
    status, headers, body = raw_post(endpoint, "SELEC 1")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "62")
    status, headers, body = raw_post(endpoint, "SELECT throwIf(1, 'boom')")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "395") and "boom" in body
    status, _, body = raw_post(endpoint, "SELECT 1", max_threads="1")
    assert (status, body) == (200, "1\n")

    with pytest.raises(DatabaseError) as raised:
        store.query_rows("SELECT count() FROM invoice")
    assert raised.value.code == 60
    with pytest.raises(DatabaseError) as raised:
        store.call(store.client.command, "CREATE TABLE invoices (a UInt8) ENGINE = Memory")
    assert raised.value.code == 57  # TABLE_ALREADY_EXISTS
    # an insert the engine refuses (not the client): nothing of it lands
    store.call(store.client.command, "CREATE TABLE checked (n UInt8, CONSTRAINT small CHECK n < 10) ENGINE = Log")
    with pytest.raises(DatabaseError) as raised:
        store.call(store.client.insert, "checked", [[1], [50]], column_names=["n"])
    assert raised.value.code == 469  # VIOLATED_CONSTRAINT
    assert store.query_rows("SELECT count() FROM checked") == [(0,)]
    with pytest.raises(DatabaseError) as raised:
        clickhouse_connect.get_client(dsn=endpoint.dsn.replace("default:@", "default:wrong@"))
    assert raised.value.code == 516
    assert store.query_rows("SELECT count() FROM invoices") == [(0,)]


def test_sessions_keep_their_own_settings(endpoint: ChdbHttpServer) -> None:
    """A SET in one client's session does not leak into another's; per-request settings end with the request."""
    first, second = (clickhouse_connect.get_client(dsn=endpoint.dsn, compress="lz4") for _ in range(2))
    try:
        first.command("SET max_threads = 1")
        setting = "SELECT value FROM system.settings WHERE name = 'max_block_size'"
        assert first.command("SELECT getSetting('max_threads')") == 1
        assert second.command("SELECT getSetting('max_threads')") != 1
        assert first.query(setting, settings={"max_block_size": 1234}).result_rows == [("1234",)]
        assert first.query(setting).result_rows != [("1234",)]
        assert first.command("SELECT getSetting('max_threads')") == 1
    finally:
        first.close()
        second.close()


def test_compressions_and_ping(endpoint: ChdbHttpServer, tmp_path: Path) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/ping", timeout=5) as response:
        assert response.read() == b"Ok.\n"
    for compress in ("lz4", "zstd", "gzip", False):  # clickhouse-connect cannot send deflate
        client = clickhouse_connect.get_client(dsn=endpoint.dsn, compress=compress)
        try:
            table = f"c_{compress or 'none'}"
            client.command(f"CREATE TABLE {table} (n UInt64, s String) ENGINE = MergeTree ORDER BY n")
            client.insert(table, [(n, "é" * (n % 7)) for n in range(20_000)], column_names=["n", "s"])
            assert client.query(f"SELECT count(), sum(n), sum(length(s)) FROM {table}").result_rows == [
                (20_000, sum(range(20_000)), sum(2 * (n % 7) for n in range(20_000)))
            ]
            # bind parameters too long for the URL go as a multipart form
            ids = [f"0100{n:06d}" for n in range(2000)]
            assert client.query("SELECT length({ids:Array(String)}), {ids:Array(String)}[2000]",
                                parameters={"ids": ids}).result_rows == [(2000, ids[-1])]  # fmt: skip
        finally:
            client.close()


def send_and_vanish(endpoint: ChdbHttpServer, database: str, head: bytes, body: bytes) -> None:
    """An HTTP insert whose client dies before its body ends (a worker SIGKILLed while sending)."""
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=10) as sock:
        query = urllib.parse.quote(f"INSERT INTO {database}.cut (n) FORMAT TabSeparated")
        sock.sendall(f"POST /?query={query} HTTP/1.1\r\nHost: x\r\n".encode() + head + b"\r\n" + body)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(65536)  # whatever it answers, if anything


@pytest.mark.parametrize("framing", ["chunked", "content-length", "lz4"])
def test_a_body_cut_short_inserts_nothing(endpoint: ChdbHttpServer, store: ClickHouseStore, framing: str) -> None:
    """ClickHouse fails an insert whose body ends early; a partial one would later be taken for the whole."""
    database = store.client.database
    store.call(store.client.command, "CREATE TABLE cut (n UInt32) ENGINE = MergeTree ORDER BY n")
    rows = b"".join(b"%d\n" % n for n in range(1000))
    if framing == "chunked":  # whole chunks of complete rows, but never the terminating zero-size chunk
        send_and_vanish(endpoint, database, b"Transfer-Encoding: chunked\r\n", b"%x\r\n%s\r\n" % (len(rows), rows))
    elif framing == "content-length":
        send_and_vanish(endpoint, database, b"Content-Length: %d\r\n" % (2 * len(rows)), rows)
    else:  # a complete lz4 frame followed by the start of the next one
        frames = lz4.frame.compress(rows) + lz4.frame.compress(rows)[:20]
        send_and_vanish(endpoint, database, b"Content-Encoding: lz4\r\nContent-Length: %d\r\n" % len(frames), frames)
    assert store.query_rows("SELECT count() FROM cut") == [(0,)]
    store.call(store.client.insert, "cut", [[n] for n in range(10)], column_names=["n"])  # and it still serves
    assert store.query_rows("SELECT count() FROM cut") == [(10,)]


@pytest.mark.parametrize("fenced", [True, False])
def test_two_writers_of_a_block_start_land_once_with_the_fence(store: ClickHouseStore, fenced: bool) -> None:
    """A frozen worker and the one that took over both write the block that starts at offset 0.

    Fenced, the token names the start only: the second insert is dropped in the table and every
    view, and both writers read back whose block landed. Unfenced, the tokens name different ranges
    and the rows land twice: what the fence is for.
    """
    sellers = [("0100000001", "4711", "380"), ("0100000002", "5610", "381")]
    rows = invoice_rows(sellers, 100, 0, 0)  # offsets 0..199
    survivor, frozen = InvoiceSink(store, TOPIC, fenced=fenced), InvoiceSink(store, TOPIC, fenced=fenced)
    for row in rows[:120]:
        survivor.add(0, row[21], row)
    for row in rows:
        frozen.add(0, row[21], row)
    first, second = survivor.take(0, 0, 119), frozen.take(0, 0, 199)
    assert first is not None and second is not None
    store.call(survivor.store.insert, first)  # step 4 of each write, without the chain check that would stop the second
    store.call(frozen.store.insert, second)
    if fenced:
        assert counts(store) == dict.fromkeys(counts(store), 120)
        assert store.call(frozen.store.landed_at, TOPIC, 0, 0) == (first.row_token,) == (f"{TOPIC}/0/0..119",)
        assert store.call(survivor.progress)[0].max_offset == 119  # the chain goes on from 120
    else:
        assert counts(store) == dict.fromkeys(counts(store), 320)

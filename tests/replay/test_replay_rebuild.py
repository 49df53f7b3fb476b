"""Rebuild after a rule fix: the fresh database holds the corrected data, compare shows exactly the fix,
the switch is one step, the worker goes on with the new database, the old one stays until dropped."""

from __future__ import annotations

import json
from collections import Counter

import clickhouse_connect
from kafka.admin import KafkaAdminClient

from replay.audit import AuditLog
from replay.databases import Database
from replay.rebuild import OPERATIONAL_TABLES, exchange_tables, load_all
from sinks.clickhouse import apply_migrations
from tests.support import (
    PublishedFeed,
    consume_all,
    expected_totals,
    open_store,
    read_topic,
    run_cli,
    segment_totals,
    seller_daily_totals,
    start_worker,
    wait_consumed,
)


def said(result):
    return " ".join(result.stderr.split())  # Rich wraps long lines


def test_rebuild_after_a_rule_fix_compare_switch_and_drop(settings):
    feed = PublishedFeed(settings, sellers=150, invoices=2000, seed=44, unregistered=5)
    amounts = sorted(r.amount_vnd for r in feed.valid)
    limit = amounts[int(len(amounts) * 0.95)]
    buggy = settings.replace(max_amount_vnd=limit)  # the bug: big invoices rejected as absurd amounts
    wrongly = [r for r in feed.valid if r.amount_vnd > limit]
    assert wrongly

    live = start_worker(buggy)
    try:
        wait_consumed(buggy, live, timeout=180)
        # the fixed configuration (default maximum) replays into a fresh database; the live worker goes on
        rebuilt = run_cli(settings, "replay", "rebuild")
        assert rebuilt.exit_code == 0, rebuilt.output
        assert live.running
        busy = run_cli(settings, "replay", "compare")
        assert busy.exit_code == 3 and "in use by another process" in said(busy), "chDB: one process per directory"
    finally:
        live.stop()
    (rebuild,) = load_all(settings)
    assert rebuild.status == "caught_up" and rebuild.mode == "embedded"

    compared = run_cli(settings, "replay", "compare", "--json")
    assert compared.exit_code == 0, compared.output
    deltas = {}
    for line in compared.stdout.splitlines():
        row = json.loads(line)
        deltas[(row["day"], row["sector"], row["unit"], row["registered"])] = (
            row["rebuilt"]["invoices"] - row["live"]["invoices"]
        )
    fixed = Counter()
    for r in wrongly:
        vsic, unit = feed.registered.get(r.seller_id, ("", ""))
        fixed[(r.issued_at.date().isoformat(), vsic, unit, int(r.seller_id in feed.registered))] += 1
    assert deltas == dict(fixed), "exactly the wrongly rejected invoices, segment by segment"

    switched = run_cli(settings, "replay", "switch", "--yes")
    assert switched.exit_code == 0, switched.output
    store = open_store(settings)
    try:
        assert store.query_rows("SELECT count() FROM invoices")[0][0] == len(feed.valid)
        expected = expected_totals(feed.records, feed.registered)
        assert segment_totals(store) == expected and seller_daily_totals(store) == expected
        assert store.query_rows("SELECT count() FROM pipeline_metrics")[0][0] > 0, (
            "the live worker's metrics came along"
        )
        audited = {i for (i,) in store.query_rows("SELECT id FROM replay_audit")}
        assert audited == {e["id"] for e in AuditLog(settings.data_dir).entries()}
    finally:
        store.close()
    (rebuild,) = load_all(settings)
    retired = Database(f"chdb://{rebuild.retired}")
    assert rebuild.status == "switched" and retired.directory.exists()
    assert retired.run("invoice_count") == len(feed.valid) - len(wrongly), "the old data stays until dropped"

    # the worker goes on with the new database: what it had read is not read into it twice, new data once
    more = PublishedFeed(settings, sellers=150, invoices=600, seed=46)
    consume_all(settings, name="worker-after-switch", timeout=180)
    store = open_store(settings)
    try:
        both = expected_totals(feed.records + more.records, {**feed.registered, **more.registered})
        assert segment_totals(store) == both
        assert store.query_rows("SELECT count() FROM invoices")[0][0] == len(feed.valid) + len(more.valid)
    finally:
        store.close()
    dlq = read_topic(settings, settings.topics.invoices_dlq)
    # the buggy live worker dead-lettered the big invoices and their feed duplicates; the rebuild wrote nothing there
    big = [r for r in feed.records if r.kind in ("valid", "duplicate") and r.amount_vnd > limit]
    assert len(dlq) == len(feed.malformed) + len(big) + len(more.malformed)

    dropped = run_cli(settings, "replay", "drop", rebuild.id, "--yes")
    assert dropped.exit_code == 0, dropped.output
    assert not retired.directory.exists()
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_brokers)
    try:
        assert rebuild.app_id not in {g["group_id"] for g in admin.list_groups()}
        assert not [t for t in admin.list_topics() if t.startswith(rebuild.app_id)]
    finally:
        admin.close()
    actions = [(e["action"], e["result"]) for e in AuditLog(settings.data_dir).entries()]
    assert actions == [("rebuild", "ok"), ("compare", "refused"), ("compare", "differences"), ("switch", "ok"),
                       ("drop", "ok")]  # fmt: skip


def insert_invoices(client, seller, n):
    client.command(
        "INSERT INTO invoices (seller_id, invoice_code, issued_at, issue_date, kafka_topic, kafka_partition, "
        f"kafka_offset, received_at) SELECT '{seller}', toString(number), now64(3), today(), 't', 0, number, "
        f"now64(3) FROM numbers({n})"
    )


def test_server_switch_exchanges_every_derived_table_in_one_statement(tmp_path):
    """The server path's SQL, on chDB's Atomic databases (no ClickHouse server here)."""
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'ch'}")
    try:
        check_exchange(client)
    finally:
        client.close()  # chDB: one directory per process at a time


def check_exchange(client):
    for db, seller, n in (("einvoice", "OLD", 10), ("einvoice_rebuild_x", "NEW", 25)):
        client.command(f"CREATE DATABASE {db}")
        client.database = db
        apply_migrations(client)
        insert_invoices(client, seller, n)
        client.command(f"INSERT INTO alert_events (event_id, type, day, emitted_at) VALUES ('{db}', 'firing', "
                       "today(), now64(3))")  # fmt: skip
    client.database = "default"
    switched = exchange_tables(client, "einvoice", "einvoice_rebuild_x")
    assert {"invoices", "seller_daily", "segment_daily", "seller_daily_mv", "schema_migrations"} <= set(switched)
    assert not set(switched) & set(OPERATIONAL_TABLES)

    def figures(db):
        return client.query(
            f"SELECT (SELECT count() FROM {db}.invoices), (SELECT sum(invoices) FROM {db}.seller_daily), "
            f"(SELECT sum(invoices) FROM {db}.segment_daily), (SELECT any(event_id) FROM {db}.alert_events)"
        ).result_rows[0]

    assert figures("einvoice") == (25, 25, 25, "einvoice"), "new data; the live alert state stays"
    assert figures("einvoice_rebuild_x") == (10, 10, 10, "einvoice_rebuild_x")
    client.database = "einvoice"
    insert_invoices(client, "LATER", 5)  # the views follow their tables: new rows reach the new aggregates
    client.database = "default"
    assert figures("einvoice") == (30, 30, 30, "einvoice")
    assert figures("einvoice_rebuild_x") == (10, 10, 10, "einvoice_rebuild_x")

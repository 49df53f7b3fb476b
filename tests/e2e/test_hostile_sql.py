"""SQL is built from bound parameters only: hostile names and codes in the registry, and a static scan.

The registry test publishes registrations whose names carry SQL metacharacters, ClickHouse
placeholders and Grafana macros, and whose sector and unit codes try the same; the reference
tables get a sector and a unit with such names. Names are data and are stored verbatim (in NFC);
codes are not legal codes and go to the registry DLQ with a reason. Then the adoption query, the
report (with hostile filters, as /report passes them), the alert evaluator and the webhook payload
run, and no table or column has changed.

The static test reads streams/, sinks/, analytics/ and alerts/: every SQL text built with an
f-string, ``%`` or ``.format`` may interpolate only identifiers from a fixed allowlist, and every
query call gets a literal, a module constant or such an f-string; values travel as parameters.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from alerts.evaluator import AlertEvaluator
from alerts.rules import load_rules
from analytics.adoption import adoption, load_units
from analytics.report import period_report
from base.config import INVOICE_SUBJECT
from contracts.codec import AvroCodec, SchemaCatalog
from contracts.validation import MAX_NAME_CHARS
from kafka_io.publish import Publisher, partition_for
from simulator.publish import publish_registry
from sinks.clickhouse import apply_migrations
from sinks.dead_letter import H_REASON
from sinks.webhook.payload import build_payload, encode, load_names
from tests.support import (
    PublishedFeed,
    committed_offsets,
    end_offsets,
    open_store,
    read_topic,
    start_worker,
    wait_consumed,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
# Stored verbatim: a name is data (NFC-normalised, as DOMAIN.md asks)
HOSTILE_NAMES = [
    "Quán 'Bà Tư'", "Nhà thuốc O'Brien\\'s", "x'; DROP TABLE invoices; --", "' OR 1=1 --", "\\' OR \\'1\\'=\\'1",
    "{start:Date}", "{sectors:Array(String)}", "{{units}}", "$__timeFilter(issued_at)", "${__from}",
    "`invoices`", "Robert'); DROP TABLE registry_history;--", "\"; SELECT * FROM system.users; --",
    "%s %(name)s {0}", "Phở 🍜 24/7 — Hoằng Hóa", unicodedata.normalize("NFD", "Xăng dầu Quảng Xương"),
    "Ж" * MAX_NAME_CHARS, "SELECT 1 FORMAT JSON", "名前 اسم שם",
]  # fmt: skip
# Rejected with a reason: a name no legal form allows, or codes that are not codes
HOSTILE_REJECTED = [
    ({"name": "Quán\nphở"}, "invalid_name"),
    ({"name": "x\r\n; DROP TABLE invoices"}, "invalid_name"),
    ({"name": "ab\x00cd"}, "invalid_name"),
    ({"name": "Phở \u202e24/7"}, "invalid_name"),
    ({"name": "x" * (MAX_NAME_CHARS + 1)}, "invalid_name"),
    ({"name": "y" * 200_000}, "invalid_name"),
    ({"vsic_code": "4711' OR '1'='1"}, "invalid_vsic_code"),
    ({"vsic_code": "4711;--"}, "invalid_vsic_code"),
    ({"vsic_code": "{start:Date}"}, "invalid_vsic_code"),
    ({"vsic_code": "4711\n"}, "invalid_vsic_code"),
    ({"vsic_code": "`4711`"}, "invalid_vsic_code"),
    ({"admin_unit_code": "380'); DROP TABLE admin_units; --"}, "invalid_admin_unit"),
    ({"admin_unit_code": "$__timeFilter"}, "invalid_admin_unit"),
    ({"admin_unit_code": "380\n"}, "invalid_admin_unit"),
    ({"admin_unit_code": "3" * 100_000}, "invalid_admin_unit"),
]
HOSTILE_UNIT = ("999", "Huyện '); DROP TABLE admin_units; -- {start:Date} $__timeFilter `x`", "district", "38")
HOSTILE_SECTOR = ("9999", "Ngành ' OR 1=1 -- {sectors:Array(String)}", "Sector \\'; DROP TABLE sectors;--")
FILTERS = ["' OR 1=1 --", "{start:Date}", "4711') OR ('1'='1", "$__timeFilter", "*'; DROP TABLE invoices; --"]


def schema_snapshot(store) -> tuple:
    tables = store.query_rows(
        "SELECT name, engine, create_table_query FROM system.tables WHERE database = currentDatabase() ORDER BY name"
    )
    columns = store.query_rows(
        "SELECT table, name, type FROM system.columns WHERE database = currentDatabase() ORDER BY table, position"
    )
    return tables, columns


def test_hostile_names_and_codes_in_the_registry_are_data(settings):
    # the reference tables get a unit and a sector with hostile names, as an operator's import might
    store = open_store(settings)
    try:
        store.call(apply_migrations, store.client)
        store.call(
            store.client.insert, "admin_units", [HOSTILE_UNIT], column_names=["code", "name", "level", "parent_code"]
        )
        store.call(store.client.insert, "sectors", [HOSTILE_SECTOR], column_names=["vsic_code", "name", "name_en"])
        before = schema_snapshot(store)
    finally:
        store.close()

    feed = PublishedFeed(settings, sellers=300, invoices=3000, seed=17)
    base = feed.in_registry[0].registration(valid_from=dt.date(2024, 1, 1), obliged=True, status="ACTIVE")
    stored = [{**base, "seller_id": f"28999{i:05d}", "name": name, "vsic_code": "9999", "admin_unit_code": "999"}
              for i, name in enumerate(HOSTILE_NAMES)]  # fmt: skip
    rejected = [{**base, "seller_id": f"28998{i:05d}", **changes} for i, (changes, _) in enumerate(HOSTILE_REJECTED)]
    sim = feed.simulation
    publish_registry(settings.kafka_brokers or "", settings.topics.registry, stored + rejected, sim.registry_codec)
    # each hostile-named seller issues one invoice a day, so its segment has figures
    codec = AvroCodec(SchemaCatalog.load(), INVOICE_SUBJECT)
    invoices, keys, stamps = [], [], []
    for i, registration in enumerate(stored):
        for day in range(3):
            issued = dt.datetime(2024, 6, 1 + day, 10, i)
            invoices.append(codec.encode({
                "seller_id": registration["seller_id"], "invoice_form": 1, "invoice_symbol": "C24MTT",
                "invoice_code": f"M1-24-AB12C-{i * 10 + day:011d}", "issued_at": issued, "amount_vnd": 100_000,
                "vat_rate": 8, "vat_amount_vnd": 8_000, "payment_method": "CASH", "register_id": "AB12C",
            }))  # fmt: skip
            keys.append(registration["seller_id"].encode())
            stamps.append(int((issued - dt.timedelta(hours=7)).replace(tzinfo=dt.UTC).timestamp() * 1000) + 60_000)
    publisher = Publisher(settings.kafka_brokers or "")
    try:
        parts = np.array([partition_for(k, settings.partitions) for k in keys])
        publisher.send(settings.topics.invoices, parts, keys, invoices, stamps)
    finally:
        publisher.close()

    worker = start_worker(settings)
    try:
        wait_consumed(settings, worker, timeout=300)
        registry_end = end_offsets(settings, settings.topics.registry)
        wait_until(lambda: committed_offsets(settings, settings.topics.registry) == registry_end, 120,
                   "the registry to be consumed", worker)  # fmt: skip
        assert worker.running
    finally:
        worker.stop()
    assert "unrecoverable error" not in worker.log_path.read_text(errors="replace")

    dlq = read_topic(settings, settings.topics.registry_dlq)
    assert Counter(dict(r.headers)[H_REASON].decode() for r in dlq) == Counter(reason for _, reason in HOSTILE_REJECTED)
    assert {r.key.decode() for r in dlq} == {r["seller_id"] for r in rejected}

    store = open_store(settings)
    try:
        names = dict(store.query_rows(
            "SELECT seller_id, name FROM registry_history FINAL WHERE seller_id IN {ids:Array(String)}",
            {"ids": [r["seller_id"] for r in stored + rejected]},
        ))  # fmt: skip
        assert names == {r["seller_id"]: unicodedata.normalize("NFC", r["name"]) for r in stored}

        rows = adoption(store, dt.date(2024, 6, 1), dt.date(2024, 6, 3))
        ours = [r for r in rows if r.sector == "9999" and r.unit == "999"]
        assert [(r.day.day, r.eligible, r.active_1d, r.invoices) for r in ours] == [
            (d, len(stored), len(stored), len(stored)) for d in (1, 2, 3)
        ]
        for hostile in FILTERS:  # what /report?sector=…&unit=… hands to the query
            assert adoption(store, dt.date(2024, 6, 1), dt.date(2024, 6, 3), sectors=[hostile]) == []
            assert adoption(store, dt.date(2024, 6, 1), dt.date(2024, 6, 3), units=[hostile]) == []
            assert (
                period_report(store, dt.date(2024, 6, 2), dt.date(2024, 6, 3), sectors=[hostile], units=[hostile]) == []
            )

        evaluator = AlertEvaluator(store, load_rules(), settings.kafka_brokers or "", settings.topics.alerts,
                                   settings.topics.silences)  # fmt: skip
        evaluator.run(now=1_800_000_000.0)
        for day in (dt.date(2024, 6, 2), dt.date(2024, 6, 3)):
            evaluator.evaluate_day(day, 1_800_000_000.0, [], load_units(store))
        evaluator.close()

        loaded = load_names(store)
        assert loaded.units["999"] == HOSTILE_UNIT[1] and loaded.sectors["9999"] == HOSTILE_SECTOR[1]
        event = {"event_id": "e1", "type": "firing", "fingerprint": "f", "rule": "adoption_drop", "severity": "warning",
                 "labels": {"sector": "9999", "unit": "999"}, "day": "2024-06-03", "started_day": "2024-06-02",
                 "values": {"issuing_share": 0.1}, "emitted_at": 1_800_000_000.0}  # fmt: skip
        body = json.loads(encode(build_payload(event, loaded, "http://localhost:3000/d/x")))
        assert body["alert"]["labels"]["unit"]["name"] == HOSTILE_UNIT[1]

        assert schema_snapshot(store) == before  # nothing altered, dropped or created
        counts = dict(store.query_rows("SELECT table, sum(rows) FROM system.parts WHERE active GROUP BY table"))
        assert counts["admin_units"] >= 28 and counts["sectors"] >= 1
    finally:
        store.close()


# -- static scan ---------------------------------------------------------------------------------------------------

SCANNED = ("streams", "sinks", "analytics", "alerts")
QUERY_METHODS = {"query", "command", "query_rows", "raw_query", "query_df", "query_np", "query_arrow", "_query"}
SQL_WORDS = ("SELECT ", "INSERT ", "ALTER ", "CREATE ", "DROP ", "DELETE ", "TRUNCATE ", "OPTIMIZE ", " FROM ",
             " WHERE ", "SETTINGS ")  # fmt: skip
# The only expressions SQL text may interpolate, and why each is not data
ALLOWED = {
    "self.table": "InvoiceSink's table name, set by code (default 'invoices'), never from a record",
    "', '.join(STORED_COLUMNS)": "the sink's fixed column tuple",
    "', '.join(INSTANCE_COLUMNS)": "the evaluator's fixed column tuple",
    "statement.rstrip(';')": "a statement of a migration file shipped in the package (sinks/clickhouse/migrations)",
    "LOCK_TABLE": "the migration lock's table name, a constant of sinks/clickhouse/migrate.py",
    # ClickHouseStore.insert_block_unless: what its callers pass is code (the sink's table, STORED_COLUMNS,
    # CHAIN_TAKEN_SQL) or made here (a temporary file's path, the table's types read from system.columns)
    **dict.fromkeys(
        ("block_table", "block_columns", "block_condition", "block_file", "block_structure"),
        "insert_block_unless: the sink's table, column tuple and chain check, a temp path, the table's types",
    ),
    # sinks/clickhouse/reconcile.py: identifiers and SELECTs of the database's own views, read from
    # system.tables and system.columns (created by the migrations shipped in the package), never a record
    **dict.fromkeys(
        (
            "view.target",
            "view.over(block_rows)",
            "view.over(neighbours)",
            "view_columns",
            "view_keys",
            "view_held",
            "view_truth_keys",
            "view_deltas",
            "view_rest",
            "view_over",
            "view_short",
            "view_compared",
            "view_insert_columns",
            "view_insert_values",
        ),
        "reconcile: the views' names, columns and SELECTs, from system.tables of the shipped migrations",
    ),
    "RECEIVED_DAY": "verify.py's constant SQL expression of a row's local receipt day",
    "CHAIN_TTL_DAYS": "verify.py's integer constant (the chain's TTL less a day)",
}


def _sql_like(text: str) -> bool:
    return any(word in text for word in SQL_WORDS)


def _literal(node: ast.AST) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_literal(v) for v in node.values)
    return ""


def sql_findings(source: str, filename: str = "<string>") -> list[str]:
    """Places where SQL text interpolates something not on the allowlist, or a query gets non-literal SQL."""
    tree = ast.parse(source, filename)
    constants = {
        t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
        for t in node.targets if isinstance(t, ast.Name)
    }  # fmt: skip
    findings = []

    def where(node: ast.AST) -> str:
        return f"{filename}:{node.lineno}"

    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and _sql_like(_literal(node)):
            for part in node.values:
                if isinstance(part, ast.FormattedValue) and ast.unparse(part.value) not in ALLOWED:
                    findings.append(f"{where(node)}: SQL f-string interpolates {ast.unparse(part.value)}")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
            sides = (node.left, node.right)
            if any(_sql_like(_literal(s)) for s in sides) and not all(isinstance(s, ast.Constant) for s in sides):
                findings.append(f"{where(node)}: SQL built with {type(node.op).__name__}: {ast.unparse(node)[:80]}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "format" and _sql_like(_literal(node.func.value)):
                findings.append(f"{where(node)}: SQL built with str.format")
            args = node.args
            if node.func.attr in ("run", "call") and args and getattr(args[0], "attr", "") in QUERY_METHODS:
                args = args[1:]  # store.run(client.query, sql, ...): the query runs on the ClickHouse thread
            elif node.func.attr not in QUERY_METHODS:
                args = []
            if args:
                sql = args[0]
                if isinstance(sql, ast.Name) and sql.id in constants:
                    sql = constants[sql.id]
                if ast.unparse(sql) in ALLOWED:
                    continue
                computed = isinstance(sql, ast.Name | ast.Attribute | ast.Call | ast.BinOp | ast.Subscript)
                if computed and not _declared_locally(tree, node, sql):
                    findings.append(f"{where(node)}: {node.func.attr}() gets SQL from {ast.unparse(sql)}")
    return findings


def _declared_locally(tree: ast.AST, call: ast.Call, sql: ast.AST) -> bool:
    """A name assigned, in the function around the call, only literal or allowlisted SQL (checked above)."""
    if not isinstance(sql, ast.Name):
        return False
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef) and call in ast.walk(function):
            if sql.id in {a.arg for a in function.args.args}:
                return True  # a helper's parameter: its callers are scanned in turn
            values = [n.value for n in ast.walk(function) if isinstance(n, ast.Assign)
                      and any(isinstance(t, ast.Name) and t.id == sql.id for t in n.targets)]  # fmt: skip
            return bool(values) and all(isinstance(v, ast.Constant | ast.JoinedStr) for v in values)
    return False


def test_no_sql_interpolates_data():
    files = [p for d in SCANNED for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 30
    findings = [f for p in files for f in sql_findings(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))]
    assert findings == []


@pytest.mark.parametrize(
    "snippet",
    [
        "client.query(f\"SELECT * FROM invoices WHERE seller_id = '{seller_id}'\")",
        'sql = f"SELECT name FROM {table} WHERE 1"\nstore.query_rows(sql)',
        "client.command(\"ALTER TABLE invoices DELETE WHERE seller_id = '%s'\" % seller_id)",
        "client.query(\"SELECT * FROM invoices WHERE unit = '{}'\".format(unit))",
        'client.query("SELECT * FROM invoices WHERE unit = \'" + unit + "\'")',
        "def f(store, unit):\n    store.query_rows(make_sql(unit))",
        "await store.run(store.client.query, 'SELECT * FROM invoices WHERE unit = ' + unit)",
        "store.call(store.client.command, sql_for(unit))",
    ],
)
def test_the_scan_catches_interpolated_sql(snippet):
    assert sql_findings(snippet)


@pytest.mark.parametrize(
    "snippet",
    [
        'client.query("SELECT * FROM invoices WHERE unit = {unit:String}", parameters={"unit": unit})',
        'SQL = "SELECT 1"\nstore.query_rows(SQL)',
        "client.query(f\"SELECT {', '.join(STORED_COLUMNS)} FROM {self.table} WHERE t = {{t:String}}\")",
        'log.info(f"selected {n} rows from the feed")',
    ],
)
def test_the_scan_allows_bound_parameters_and_fixed_identifiers(snippet):
    assert sql_findings(snippet) == []

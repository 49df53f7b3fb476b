"""Versioned, idempotent migrations: each ``migrations/NNNN_name.sql`` runs once per database."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from clickhouse_connect.driver.client import Client

from sinks.clickhouse.client import ClickHouseStore

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def _statements(sql: str) -> list[str]:
    without_comments = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in without_comments.split(";\n") if s.strip().rstrip(";").strip()]


def apply_migrations(client: Client, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations not applied yet, in order; returns the names applied now."""
    client.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
        "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query("SELECT version FROM schema_migrations FINAL").result_rows}
    applied = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name} must be named NNNN_lowercase_name.sql")
        version = int(match.group(1))
        if version in done:
            continue
        for statement in _statements(path.read_text(encoding="utf-8")):
            client.command(statement.rstrip(";"))
        client.insert("schema_migrations", [(version, path.stem)], column_names=["version", "name"])
        applied.append(path.stem)
        log.info("migration applied", extra={"migration": path.stem})
    return applied


def open_store(dsn: str) -> ClickHouseStore:
    """The store with its tables at the newest migration: what every process that reads or writes needs first.

    Closed again if the migrations fail, so a caller that goes on without ClickHouse leaks no thread.
    """
    store = ClickHouseStore(dsn)
    try:
        applied = store.call(apply_migrations, store.client)
    except BaseException:
        store.close()
        raise
    log.info("clickhouse ready", extra={"dsn": store.redacted_dsn, "migrations_applied": applied})
    return store

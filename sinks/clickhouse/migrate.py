"""Versioned, idempotent migrations: each ``migrations/NNNN_name.sql`` runs once per database."""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clickhouse_connect.driver.client import Client

from sinks.clickhouse.client import ClickHouseStore

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
LOCK_TABLE = "schema_migrations_lock"
LOCK_WAIT_S = 1800.0  # a migration that rebuilds views from a large `invoices` takes minutes
LOCK_POLL_S = 0.5
RELEASE_LOCK = (
    "If that process is gone (killed while migrating), check schema_migrations against "
    f"sinks/clickhouse/migrations/, then `DROP TABLE {LOCK_TABLE}` and start again."
)


def _statements(sql: str) -> list[str]:
    without_comments = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in without_comments.split(";\n") if s.strip().rstrip(";").strip()]


class MigrationLocked(RuntimeError):
    """Another process held the migration lock for longer than this one would wait."""


def apply_migrations(client: Client, directory: Path = MIGRATIONS_DIR, wait_s: float = LOCK_WAIT_S) -> list[str]:
    """Apply the migrations not applied yet, in order, under the migration lock; returns the names applied now.

    Workers sharing a ClickHouse start together (compose's replicas), and a migration is several
    statements (0008 rebuilds views under new names, then renames them): two processes running
    one interleaved broke it (one renamed a table away while the other filled it). So only the
    holder of the lock applies; the others wait for it, then find nothing left to do.
    """
    client.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
        "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version"
    )
    if not _pending(client, directory):
        return []  # the usual start: no lock taken
    with migration_lock(client, wait_s):
        applied = []
        for version, path in _pending(client, directory):  # read again: the lock's last holder may have done them
            for statement in _statements(path.read_text(encoding="utf-8")):
                client.command(statement.rstrip(";"))
            client.insert("schema_migrations", [(version, path.stem)], column_names=["version", "name"])
            applied.append(path.stem)
            log.info("migration applied", extra={"migration": path.stem})
        return applied


def _pending(client: Client, directory: Path) -> list[tuple[int, Path]]:
    done = {row[0] for row in client.query("SELECT version FROM schema_migrations FINAL").result_rows}
    pending = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name} must be named NNNN_lowercase_name.sql")
        if int(match.group(1)) not in done:
            pending.append((int(match.group(1)), path))
    return pending


@contextmanager
def migration_lock(client: Client, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """The database's migration lock: a table only one ``CREATE TABLE`` can make (ClickHouse has no locks).

    Held while migrating, dropped after, also when a migration fails. A process killed while
    holding it leaves it behind: the next one waits ``wait_s``, then says whose it is and what to do.
    """
    holder = f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + wait_s
    announced = False
    while True:
        try:
            client.command(
                f"CREATE TABLE {LOCK_TABLE} (holder String, since DateTime64(3, 'UTC') DEFAULT now64(3)) "
                "ENGINE = MergeTree ORDER BY tuple()"
            )
            break
        except Exception as exc:  # clickhouse_connect's DatabaseError, or chDB's own
            if "already exists" not in str(exc) and "TABLE_ALREADY_EXISTS" not in str(exc):
                raise
        if not announced:
            announced = True
            log.info("waiting for another process's migrations", extra={"lock": _lock_holder(client)})
        if time.monotonic() >= deadline:
            held = f"the migration lock is held by {_lock_holder(client)} and was not released in {wait_s:.0f} s."
            raise MigrationLocked(" ".join((held, RELEASE_LOCK)))
        time.sleep(LOCK_POLL_S)
    try:
        client.insert(LOCK_TABLE, [(holder,)], column_names=["holder"])
        yield
    finally:
        client.command(f"DROP TABLE IF EXISTS {LOCK_TABLE}")


def _lock_holder(client: Client) -> str:
    try:
        rows = client.query(f"SELECT holder, toString(since) FROM {LOCK_TABLE} LIMIT 1").result_rows
    except Exception:  # released meanwhile
        return "nobody now"
    return f"{rows[0][0]} since {rows[0][1]} UTC" if rows else "a process that has not written its name yet"


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

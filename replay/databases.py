"""Where a ClickHouse database of the pipeline lives, and running one operation against it.

A server database (``CLICKHOUSE_URL``) is reached from this process. A chDB directory belongs to
one process at a time, and a process can open only one directory in its life; so every operation
on a chDB directory runs in a child process (``python -m replay.databases OP``) that opens it,
does the work and prints the answer as JSON. That is also how ``compare`` reads two directories.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.redaction import redact_url_credentials
from replay.refused import Refused
from sinks.clickhouse import ClickHouseStore, open_store

BUSY_HINT = (
    "chDB allows one process per directory: stop the worker that owns it (Ctrl-C, or `replay ... --stop-workers`), "
    "or use a ClickHouse server (CLICKHOUSE_URL)"
)


class DatabaseUnavailable(Refused):
    """The database cannot be opened now; the message says why and what to do."""


@dataclass(frozen=True)
class Database:
    """A server database (``http(s)://user:pw@host:port/db``) or a chDB directory (``chdb:///path``)."""

    dsn: str

    @property
    def embedded(self) -> bool:
        return self.dsn.startswith("chdb:")

    @property
    def directory(self) -> Path:
        return Path(urllib.parse.urlparse(self.dsn).path)

    @property
    def name(self) -> str:
        """The server database (the URL's path; ClickHouse's ``default`` when there is none)."""
        return urllib.parse.urlparse(self.dsn).path.strip("/") or "default"

    def sibling(self, name: str) -> Database:
        """Another database on the same server, same credentials and options."""
        parts = urllib.parse.urlparse(self.dsn)
        return Database(urllib.parse.urlunparse(parts._replace(path=f"/{name}")))

    def describe(self) -> str:
        return redact_url_credentials(self.dsn)

    def run(self, op: str, **kwargs: Any) -> Any:
        """``OPERATIONS[op](store, **kwargs)``: here for a server, in a child process for chDB."""
        if not self.embedded:
            return _execute(self.dsn, op, kwargs)
        child = subprocess.run(
            [sys.executable, "-m", "replay.databases", op],
            input=json.dumps({"dsn": self.dsn, "kwargs": kwargs}),
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            error = (child.stderr.strip().splitlines() or ["(no output)"])[-1]
            if "Cannot lock file" in child.stderr or "already running" in child.stderr:
                raise DatabaseUnavailable(f"{self.directory} is in use by another process. {BUSY_HINT}")
            raise DatabaseUnavailable(f"{op} on {self.describe()} failed: {error}")
        return json.loads(child.stdout)


def _execute(dsn: str, op: str, kwargs: dict[str, Any]) -> Any:
    store = open_store(dsn)
    try:
        return OPERATIONS[op](store, **kwargs)
    finally:
        store.close()


def segment_counts(store: ClickHouseStore) -> list[list[Any]]:
    """Per local day × sector × unit × registered: invoices, revenue and issuers (from segment_daily)."""
    rows = store.query_rows(
        "SELECT toString(issue_date), vsic_code, admin_unit_code, registered, sum(invoices), sum(amount_vnd), "
        "uniqExactMerge(issuers) FROM segment_daily GROUP BY issue_date, vsic_code, admin_unit_code, registered"
    )
    return [[d, v, u, int(r), int(n), int(a), int(i)] for d, v, u, r, n, a, i in rows]


def existing_tables(store: ClickHouseStore) -> list[str]:
    return [t for (t,) in store.query_rows("SELECT name FROM system.tables WHERE database = currentDatabase()")]


def export_tables(store: ClickHouseStore, tables: list[str], directory: str) -> dict[str, int]:
    """Each existing table of ``tables`` to ``directory/<table>.native``; returns rows per table."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    present = set(existing_tables(store))
    counts = {}
    for table in tables:
        if table not in present:
            continue

        def dump(table: str = table) -> None:
            with (
                (out / f"{table}.native").open("wb") as fh,
                store.client.raw_stream(f"SELECT * FROM {table}", fmt="Native") as stream,
            ):
                for chunk in stream:
                    fh.write(chunk)

        store.call(dump)
        counts[table] = int(store.query_rows(f"SELECT count() FROM {table}")[0][0])
    return counts


def import_tables(store: ClickHouseStore, tables: list[str], directory: str) -> dict[str, int]:
    """Replace the rows of each table with ``directory/<table>.native`` (tables without a file stay)."""
    present = set(existing_tables(store))
    counts = {}
    for table in tables:
        path = Path(directory) / f"{table}.native"
        if table not in present or not path.exists():
            continue
        store.call(store.client.command, f"TRUNCATE TABLE {table}")
        if path.stat().st_size:

            def load(table: str = table, path: Path = path) -> None:
                with path.open("rb") as fh:
                    store.client.raw_insert(table, insert_block=fh, fmt="Native")

            store.call(load)
        counts[table] = int(store.query_rows(f"SELECT count() FROM {table}")[0][0])
    return counts


# replay_audit, as replay.audit writes its entries
AUDIT_COLUMNS = ("id", "at", "user", "host", "action", "target", "result", "detail", "duration_s")


def audit_rows(entries: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Entries as rows of ``replay_audit`` (target and detail as JSON text)."""
    rows = []
    for e in entries:
        at = dt.datetime.fromisoformat(e["at"])
        rows.append(
            (
                e["id"],
                at,
                e["user"],
                e["host"],
                e["action"],
                json.dumps(e["target"], ensure_ascii=False),
                e["result"],
                json.dumps(e["detail"], ensure_ascii=False, default=str),
                float(e["duration_s"]),
            )
        )
    return rows


def sync_audit(store: ClickHouseStore, entries: list[dict[str, Any]]) -> int:
    """Insert the audit entries ``replay_audit`` does not hold yet; returns how many."""
    have = {i for (i,) in store.query_rows("SELECT id FROM replay_audit")}
    missing = [e for e in entries if e["id"] not in have]
    if missing:
        store.call(store.insert, "replay_audit", audit_rows(missing), column_names=list(AUDIT_COLUMNS))
    return len(missing)


def invoice_count(store: ClickHouseStore) -> int:
    return int(store.query_rows("SELECT count() FROM invoices")[0][0])


OPERATIONS: dict[str, Callable[..., Any]] = {
    "segment_counts": segment_counts,
    "export_tables": export_tables,
    "import_tables": import_tables,
    "sync_audit": sync_audit,
    "invoice_count": invoice_count,
}


def main() -> None:
    request = json.loads(sys.stdin.read())
    result = _execute(request["dsn"], sys.argv[1], request["kwargs"])
    sys.stdout.write(json.dumps(result, default=str))


if __name__ == "__main__":
    main()

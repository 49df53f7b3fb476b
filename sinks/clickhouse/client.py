"""One ClickHouse connection for the process, used from one thread.

clickhouse-connect and chDB calls block; running them on a single dedicated thread keeps the
event loop (and Kafka heartbeats) free and serialises access to chDB, which is one session a process.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import clickhouse_connect
from clickhouse_connect.datatypes.registry import get_from_name
from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.insert import InsertContext
from clickhouse_connect.driver.transform import NativeTransform
from tenacity import AsyncRetrying, RetryCallState, before_sleep_log, retry_if_exception_type, wait_exponential_jitter

from base.redaction import redact_url_credentials
from sinks.clickhouse.faults import FaultSwitch

log = logging.getLogger(__name__)
T = TypeVar("T")


def connect(dsn: str) -> Client:
    """A client for ``chdb:///path`` (embedded) or ``http(s)://user:pass@host:port/db`` (server)."""
    if dsn.startswith("chdb:"):
        return clickhouse_connect.get_client(dsn=dsn)
    return clickhouse_connect.get_client(dsn=dsn, compress="lz4")


class ClickHouseStore:
    """The client plus the thread it runs on.

    Inserts through :meth:`insert` and :meth:`raw_insert` (on the ClickHouse thread) go through a
    chaos-testing switch first (:mod:`sinks.clickhouse.faults`): absent in production, it costs one
    ``stat`` a second.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        # writes that failed and are retried through this store (``einvoice_clickhouse_retries_total``, read
        # by streams.metrics when scraped)
        self.insert_retries = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self.client: Client = self._executor.submit(connect, dsn).result()
        self.faults = FaultSwitch.from_environment()
        self._types: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}

    @property
    def embedded(self) -> bool:
        """chDB in this process (``chdb://``), not a server reached over HTTP."""
        return self.dsn.startswith("chdb:")

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call on the ClickHouse thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call on the ClickHouse thread, from synchronous code."""
        return self._executor.submit(fn, *args, **kwargs).result()

    async def insert_until_accepted(self, table: str, data: Any, **kwargs: Any) -> None:
        """Insert, retrying with backoff until ClickHouse accepts: the caller waits (backpressure), nothing is lost.

        Retrying the same block is safe where the table deduplicates it (the invoice sink's tokens)
        or where a row twice is harmless (``registry_history`` is a ReplacingMergeTree on its Kafka offset).
        """
        await self.until_done(self.insert, table, data, **kwargs)

    async def until_done(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the ClickHouse thread, again after a backoff each time it raises, until it returns.

        ``fn`` must be safe to run again after a failure at any point (an insert under its
        deduplication token; the invoice sink's block write, which resumes at the step that failed).
        """
        async for attempt in AsyncRetrying(
            wait=wait_exponential_jitter(multiplier=0.2, max=30.0),
            retry=retry_if_exception_type(Exception),
            before_sleep=self._count_retry,
            reraise=True,
        ):
            with attempt:
                return await self.run(fn, *args, **kwargs)
        raise AssertionError("unreachable: tenacity reraises the last failure")

    def _count_retry(self, retry_state: RetryCallState) -> None:
        self.insert_retries += 1
        _log_retry(retry_state)

    def insert(self, table: str, data: Any, **kwargs: Any) -> None:
        """Blocking, on the ClickHouse thread: ``client.insert`` through the chaos switch."""
        self.faults.check()
        self.client.insert(table, data, **kwargs)

    def raw_insert(self, table: str, column_names: list[str], block: bytes, fmt: str, settings: dict[str, Any]) -> None:
        """Blocking, on the ClickHouse thread: a block already encoded (the compiled core's Native block)."""
        self.faults.check()
        self.client.raw_insert(table, column_names, insert_block=block, fmt=fmt, settings=settings)

    def insert_block_unless(
        self,
        table: str,
        column_names: Sequence[str],
        block: bytes,
        taken_sql: str,
        parameters: dict[str, Any],
        settings: dict[str, Any],
    ) -> None:
        """Blocking, on the ClickHouse thread: insert one Native block unless ``taken_sql`` counts a row.

        One statement, ``INSERT ... SELECT ... WHERE (taken_sql) = 0``: ClickHouse evaluates the
        condition when it runs the insert, not when the caller decided to send it, so a caller that
        froze in between (SIGSTOP, a VM pause) and wakes later inserts nothing where the condition
        has become true meanwhile (the invoice sink's fence, docs/architecture.md). Embedded, the
        block is read from a file as chDB's own ``raw_insert`` does; over HTTP it is the body,
        read by ``input()``. One block in, the same deduplication id every time.
        """
        self.faults.check()
        block_table, block_condition = table, taken_sql
        block_columns = ", ".join(quote_identifier(c) for c in column_names)
        if self.embedded:
            with tempfile.NamedTemporaryFile(prefix="einvoice-block-", suffix=".native") as tmp:
                tmp.write(block)
                tmp.flush()
                block_file = _quote(tmp.name)
                sql = (
                    f"INSERT INTO {block_table} ({block_columns}) SELECT {block_columns} "
                    f"FROM file({block_file}, 'Native') WHERE ({block_condition}) = 0"
                )
                self.client.command(sql, parameters=parameters, settings=settings)
            return
        types = self.column_types(table, column_names)
        block_structure = _quote(
            ", ".join(f"{quote_identifier(n)} {t}" for n, t in zip(column_names, types, strict=True))
        )
        sql = (
            f"INSERT INTO {block_table} ({block_columns}) SELECT {block_columns} "
            f"FROM input({block_structure}) WHERE ({block_condition}) = 0 FORMAT Native"
        )
        self.client.command(sql, parameters=parameters, data=block, settings=settings)

    def column_types(self, table: str, column_names: Sequence[str]) -> tuple[str, ...]:
        """Blocking: the ClickHouse types of a table's columns, read once a process."""
        key = (table, tuple(column_names))
        if key not in self._types:
            described = dict(
                self.client.query(
                    "SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                    "AND table = {table:String}",
                    parameters={"table": table},
                ).result_rows
            )
            self._types[key] = tuple(described[c] for c in column_names)
        return self._types[key]

    def native_block(self, table: str, column_names: Sequence[str], columns: Sequence[Sequence[Any]]) -> bytes:
        """Blocking: Python columns as one ClickHouse Native block for ``table`` (clickhouse-connect's encoder).

        One block whatever its size: clickhouse-connect's own inserts cut a block into pieces of about
        2 MiB, and a repeat cut otherwise would carry other deduplication ids.
        """
        types = [get_from_name(t) for t in self.column_types(table, column_names)]
        rows = len(columns[0]) if columns else 0
        context = InsertContext(
            table, list(column_names), types, columns, column_oriented=True, block_size=max(rows, 1)
        )
        encoded = b"".join(NativeTransform.build_insert(context))
        if context.current_block != 1:
            raise AssertionError(f"clickhouse-connect cut {rows} rows into {context.current_block} blocks")
        # the first block opens with the statement clickhouse-connect would send it under: the data follows it
        statement, _, block = encoded.partition(b" FORMAT Native\n")
        if not statement.startswith(b"INSERT INTO "):
            raise AssertionError("clickhouse-connect's Native block no longer opens with its INSERT statement")
        return block

    def query_rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self.call(lambda: self.client.query(sql, parameters=parameters).result_rows)

    def close(self) -> None:
        try:
            self.call(self.client.close)
        finally:
            self._executor.shutdown(wait=True)

    @property
    def redacted_dsn(self) -> str:
        """The DSN without credentials, for logs."""
        return redact_url_credentials(self.dsn)


def _quote(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


_log_retry = before_sleep_log(log, logging.WARNING)

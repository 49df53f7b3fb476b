"""One ClickHouse connection for the process, used from one thread.

clickhouse-connect and chDB calls block; running them on a single dedicated thread keeps the
event loop (and Kafka heartbeats) free and serialises access to chDB, which is one session a process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

import clickhouse_connect
from clickhouse_connect.driver.client import Client
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

    # inserts that failed and are retried, in this process (``einvoice_clickhouse_retries_total``): process-wide,
    # since the metrics registry is built before any store; streams.metrics reads it when scraped
    insert_retries: ClassVar[int] = 0

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self.client: Client = self._executor.submit(connect, dsn).result()
        self.faults = FaultSwitch.from_environment()

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
            before_sleep=_count_retry,
            reraise=True,
        ):
            with attempt:
                return await self.run(fn, *args, **kwargs)
        raise AssertionError("unreachable: tenacity reraises the last failure")

    def insert(self, table: str, data: Any, **kwargs: Any) -> None:
        """Blocking, on the ClickHouse thread: ``client.insert`` through the chaos switch."""
        self.faults.check()
        self.client.insert(table, data, **kwargs)

    def raw_insert(self, table: str, column_names: list[str], block: bytes, fmt: str, settings: dict[str, Any]) -> None:
        """Blocking, on the ClickHouse thread: a block already encoded (the compiled core's Native block)."""
        self.faults.check()
        self.client.raw_insert(table, column_names, insert_block=block, fmt=fmt, settings=settings)

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


_log_retry = before_sleep_log(log, logging.WARNING)


def _count_retry(retry_state: RetryCallState) -> None:
    ClickHouseStore.insert_retries += 1
    _log_retry(retry_state)

"""The attempts log and the endpoints' disabled state, in ClickHouse (tables of migration 0004).

The log is also what makes a retry schedule survive a restart: the first attempt time of an event
(its horizon starts there) and the attempt count are read back before the event is sent again. A
failed write is logged and delivery goes on: a board row is not worth holding an alert for.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

from sinks.clickhouse.client import ClickHouseStore

log = logging.getLogger(__name__)

ATTEMPT_COLUMNS = (
    "attempted_at", "endpoint", "event_id", "event_type", "rule", "attempt", "outcome", "status", "latency_ms",
    "error", "source", "worker",
)  # fmt: skip
STATE_COLUMNS = ("endpoint", "url_digest", "disabled", "reason", "changed_at", "version")


@dataclass(frozen=True)
class Attempt:
    attempted_at: float
    endpoint: str
    event_id: str
    event_type: str
    rule: str
    attempt: int
    outcome: str
    status: int
    latency_ms: float
    error: str
    source: str
    worker: str

    def row(self) -> tuple[object, ...]:
        at = dt.datetime.fromtimestamp(self.attempted_at, dt.UTC)
        return (at, self.endpoint, self.event_id, self.event_type, self.rule, self.attempt, self.outcome,
                self.status, self.latency_ms, self.error[:2000], self.source, self.worker)  # fmt: skip


@dataclass(frozen=True)
class History:
    """What earlier attempts (before a restart, or a redelivery) did with one event."""

    attempts: int = 0
    first_at: float | None = None
    delivered: bool = False


@dataclass(frozen=True)
class EndpointState:
    endpoint: str
    url_digest: str
    disabled: bool
    reason: str


def _epoch(value: dt.datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()


class AttemptLog:
    """Async front of the two tables; ``store`` None keeps nothing (a standalone run without ClickHouse)."""

    def __init__(self, store: ClickHouseStore | None) -> None:
        self.store = store

    async def _query(self, sql: str, parameters: dict[str, object] | None = None) -> list[tuple[object, ...]]:
        """On the store's thread (``store.query_rows`` would wait on that same thread from inside it)."""
        assert self.store is not None
        client = self.store.client
        return await self.store.run(lambda: client.query(sql, parameters=parameters).result_rows)

    async def record(self, attempt: Attempt) -> None:
        if self.store is None:
            return
        store = self.store
        try:
            await store.run(store.insert, "webhook_attempts", [attempt.row()], column_names=ATTEMPT_COLUMNS)
        except Exception as exc:
            log.warning(
                "could not log a webhook attempt in ClickHouse",
                extra={"endpoint": attempt.endpoint, "event_id": attempt.event_id, "error": type(exc).__name__},
            )

    async def history(self, endpoint: str, event_id: str) -> History | None:
        """None when ClickHouse cannot answer (the caller falls back on the event's own time)."""
        if self.store is None:
            return History()
        sql = (
            "SELECT count(), min(attempted_at), max(attempt), countIf(outcome = 'delivered') FROM webhook_attempts "
            "WHERE endpoint = {endpoint:String} AND event_id = {event_id:String}"
        )
        try:
            rows = await self._query(sql, {"endpoint": endpoint, "event_id": event_id})
        except Exception as exc:
            log.warning("could not read webhook attempts", extra={"endpoint": endpoint, "error": type(exc).__name__})
            return None
        count, first, highest, delivered = rows[0]
        if not count:
            return History()
        return History(attempts=int(highest), first_at=_epoch(first), delivered=bool(delivered))

    async def states(self) -> dict[str, EndpointState]:
        if self.store is None:
            return {}
        rows = await self._query("SELECT endpoint, url_digest, disabled, reason FROM webhook_endpoint_state FINAL")
        return {r[0]: EndpointState(r[0], r[1], bool(r[2]), r[3]) for r in rows}

    async def set_state(self, endpoint: str, url_digest: str, *, disabled: bool, reason: str) -> None:
        if self.store is None:
            return
        now = time.time()
        row = (endpoint, url_digest, int(disabled), reason, dt.datetime.fromtimestamp(now, dt.UTC), time.time_ns())
        store = self.store
        await store.run(store.insert, "webhook_endpoint_state", [row], column_names=STATE_COLUMNS)


def set_endpoint_enabled(
    store: ClickHouseStore, endpoint: str, url_digest: str, reason: str = "enabled by hand"
) -> None:
    """Enable an endpoint a 410 disabled (blocking; for a CLI command). The worker reads it at its next start."""
    now = time.time()
    row = (endpoint, url_digest, 0, reason, dt.datetime.fromtimestamp(now, dt.UTC), time.time_ns())
    store.call(store.insert, "webhook_endpoint_state", [row], column_names=STATE_COLUMNS)

"""``einvoice-monitor alerts redeliver``: send the dead-lettered events again.

Reads ``adoption.alerts.dlq`` to its current end, takes every key's newest record that is not a
tombstone, and sends its stored payload (same bytes, same ``webhook-id``) to its endpoint. A success
writes a tombstone; a failure writes a new DLQ record with the new last error, so the event stays
pending for the next run. Endpoints are tried concurrently; each event retries with the endpoint's
backoff for at most ``within_s``. Attempts are logged like the dispatcher's (source ``redeliver``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from sinks.clickhouse.client import ClickHouseStore
from sinks.webhook.attempts import Attempt, AttemptLog, EndpointState
from sinks.webhook.config import EndpointConfig, WebhookConfig
from sinks.webhook.dead_letters import DeadLetteredEvent, DeadLetterWriter, read_pending
from sinks.webhook.delivery import AttemptResult, make_client, send_once
from sinks.webhook.dispatcher import OUTCOMES, worker_name
from sinks.webhook.metrics import WebhookMetrics
from sinks.webhook.payload import encode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Redelivery:
    endpoint: str
    event_id: str
    outcome: str  # delivered, failed, skipped, pending (dry run)
    detail: str = ""


async def redeliver(
    bootstrap: str,
    dlq_topic: str,
    config: WebhookConfig,
    *,
    store: ClickHouseStore | None = None,
    endpoints: Iterable[str] = (),
    event_ids: Iterable[str] = (),
    dry_run: bool = False,
    within_s: float = 30.0,
    metrics_registry: CollectorRegistry | None = None,
) -> list[Redelivery]:
    """Redeliver the pending DLQ records (only those of ``endpoints`` / ``event_ids`` when given)."""
    wanted_endpoints, wanted_ids = set(endpoints), set(event_ids)
    pending = [
        letter
        for letter in await read_pending(bootstrap, dlq_topic)
        if (not wanted_endpoints or letter.endpoint in wanted_endpoints)
        and (not wanted_ids or letter.event_id in wanted_ids)
    ]
    pending.sort(key=lambda letter: (letter.endpoint, letter.last_attempt_at))
    if dry_run:
        return [Redelivery(x.endpoint, x.event_id, "pending", f"{x.reason}: {x.last_error}") for x in pending]
    attempts = AttemptLog(store)
    states: dict[str, EndpointState] = {}
    with contextlib.suppress(Exception):
        states = await attempts.states()
    metrics = WebhookMetrics(metrics_registry)
    writer = DeadLetterWriter(bootstrap, dlq_topic)
    await writer.start()
    try:
        by_endpoint: dict[str, list[DeadLetteredEvent]] = {}
        for letter in pending:
            by_endpoint.setdefault(letter.endpoint, []).append(letter)
        runs = [
            _redeliver_endpoint(name, letters, config, states.get(name), attempts, writer, metrics, within_s)
            for name, letters in by_endpoint.items()
        ]
        results = await asyncio.gather(*runs)
    finally:
        await writer.stop()
    return [r for group in results for r in group]


async def _redeliver_endpoint(
    name: str, letters: list[DeadLetteredEvent], config: WebhookConfig, state: EndpointState | None,
    attempts: AttemptLog, writer: DeadLetterWriter, metrics: WebhookMetrics, within_s: float,
) -> list[Redelivery]:  # fmt: skip
    endpoint = config.endpoint(name)
    reason = ""
    if endpoint is None:
        reason = "endpoint no longer configured"
    elif not endpoint.enabled:
        reason = "endpoint disabled in the configuration"
    elif state is not None and state.disabled and state.url_digest == endpoint.url_digest:
        reason = "endpoint disabled after 410 Gone; give it a new URL or enable it first"
    if endpoint is None or reason:
        return [Redelivery(x.endpoint, x.event_id, "skipped", reason) for x in letters]
    client = make_client(endpoint)
    try:
        return [await _redeliver_one(endpoint, x, config, client, attempts, writer, metrics, within_s) for x in letters]
    finally:
        await client.aclose()


async def _redeliver_one(
    endpoint: EndpointConfig, letter: DeadLetteredEvent, config: WebhookConfig, client: httpx.AsyncClient,
    attempts: AttemptLog, writer: DeadLetterWriter, metrics: WebhookMetrics, within_s: float,
) -> Redelivery:  # fmt: skip
    body = encode(letter.payload)
    history = await attempts.history(endpoint.name, letter.event_id)
    attempt = max(letter.attempts, history.attempts if history else 0)
    deadline = time.time() + within_s
    worker = worker_name()
    extra = {"endpoint": endpoint.name, "host": endpoint.display_url, "event_id": letter.event_id}
    tries = 0
    while True:
        attempt += 1
        tries += 1
        result: AttemptResult = await send_once(client, endpoint, letter.event_id, body, config.http_allowlist)
        wait = None
        if result.verdict == "retry":
            wait = endpoint.retry.delay(tries, random.random())
            if result.retry_after_s is not None:
                wait = max(wait, result.retry_after_s)
            if time.time() + wait > deadline:
                wait = None
        outcome = "retry" if wait is not None else OUTCOMES.get(result.verdict, "exhausted")
        metrics.attempts.labels(endpoint.name, outcome).inc()
        metrics.latency.labels(endpoint.name).observe(result.latency_s)
        await attempts.record(
            Attempt(
                time.time(), endpoint.name, letter.event_id, str(letter.event.get("type", "")),
                str(letter.event.get("rule", "")), attempt, outcome, result.status,
                round(result.latency_s * 1000, 1), result.error, "redeliver", worker,
            )
        )  # fmt: skip
        log.info(
            "webhook redelivery attempt",
            extra={**extra, "attempt": attempt, "outcome": outcome, "status": result.status, "error": result.error},
        )
        if outcome == "delivered":
            await writer.resolve(endpoint.name, letter.event_id)
            metrics.delivered.labels(endpoint.name).inc()
            return Redelivery(endpoint.name, letter.event_id, "delivered", f"after {tries} attempt(s)")
        if wait is None:
            reason = {"gone": "gone", "rejected": "rejected", "unsafe_url": "unsafe_url"}.get(outcome, "exhausted")
            again = dataclasses.replace(
                letter, reason=reason, last_error=result.error, last_status=result.status, attempts=attempt,
                last_attempt_at=time.time(),
            )  # fmt: skip
            await writer.send(again)
            if outcome == "gone":
                with contextlib.suppress(Exception):
                    await attempts.set_state(endpoint.name, endpoint.url_digest, disabled=True, reason="410 Gone")
                log.error("NOTICE webhook endpoint disabled: the receiver answered 410 Gone", extra=extra)
            return Redelivery(endpoint.name, letter.event_id, "failed", result.error)
        await asyncio.sleep(wait)


def redeliver_sync(*args: Any, **kwargs: Any) -> list[Redelivery]:
    """:func:`redeliver` from synchronous code (the CLI)."""
    return asyncio.run(redeliver(*args, **kwargs))

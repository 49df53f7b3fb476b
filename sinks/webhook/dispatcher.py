"""The webhook dispatcher: every configured endpoint gets its own copy of ``adoption.alerts``.

Each endpoint is a Kafka consumer group of its own (``<app id>-webhook-<name>``) that delivers events
one at a time, in order, and commits an event's offset only once the event is settled: delivered,
refused for good (4xx, 410) or written to the DLQ. So:

- a process killed at any moment re-reads the event from the committed offset and sends it again
  under the same ``webhook-id`` (the alert event id); the retry schedule resumes from the attempts
  log (attempt count, first attempt time: the horizon is not restarted);
- a slow or dead endpoint only holds its own group; the others go on;
- several workers share each endpoint's partitions through the group.

The wait between attempts can last hours, so the consumer's poll interval allows that (aiokafka
would otherwise leave the group while an event is being retried).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from sinks.clickhouse.client import ClickHouseStore
from sinks.webhook.attempts import Attempt, AttemptLog
from sinks.webhook.config import EndpointConfig, WebhookConfig, config_from_settings
from sinks.webhook.dead_letters import DeadLetteredEvent, DeadLetterWriter
from sinks.webhook.delivery import AttemptResult, make_client, send_once
from sinks.webhook.metrics import WebhookMetrics
from sinks.webhook.payload import Names, build_payload, encode, load_names

log = logging.getLogger(__name__)

OUTCOMES = {"ok": "delivered", "gone": "gone", "reject": "rejected", "unsafe": "unsafe_url"}
REQUIRED_EVENT_KEYS = ("event_id", "type", "fingerprint", "rule", "severity", "day", "emitted_at")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class _InFlight:
    tp: TopicPartition
    event_id: str
    attempt: int
    retrying: bool


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: EndpointWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.worker.assigned.difference_update(revoked)
        self.worker.wake.set()  # an event of a revoked partition stops waiting; its new owner resends it

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.worker.assigned.update(assigned)
        await self.worker.position_new_partitions(assigned)


class EndpointWorker:
    """One endpoint: its consumer group, HTTP client and retry loop."""

    def __init__(self, dispatcher: WebhookDispatcher, endpoint: EndpointConfig) -> None:
        self.dispatcher = dispatcher
        self.endpoint = endpoint
        self.group_id = f"{dispatcher.app_id}-{endpoint.group_id_suffix}"
        self.assigned: set[TopicPartition] = set()
        self.wake = asyncio.Event()
        self.stopping = False
        self.disabled = False
        self.in_flight: _InFlight | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.client: httpx.AsyncClient = make_client(endpoint)
        self._extra = {"endpoint": endpoint.name, "host": endpoint.display_url}

    # -- consumer -----------------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Consume until stopped or disabled; an unexpected error restarts the consumer after a pause."""
        while not self.stopping and not self.disabled:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook endpoint loop failed; restarting in 5 s", extra=self._extra)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 5.0)
                self.wake.clear()

    async def _consume(self) -> None:
        d = self.dispatcher
        retry = self.endpoint.retry
        # Longest time between two polls: one event's whole retry schedule plus a margin.
        max_poll_s = retry.horizon_s + retry.max_s + 2 * self.endpoint.timeout_s + 600
        consumer = AIOKafkaConsumer(
            bootstrap_servers=d.bootstrap, group_id=self.group_id, client_id=self.group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_interval_ms=int(max_poll_s * 1000),
            session_timeout_ms=int(d.session_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, d.session_timeout_s / 3) * 1000),
        )  # fmt: skip
        consumer.subscribe([d.alerts_topic], listener=_Rebalance(self))
        self.consumer = consumer
        await consumer.start()
        log.info("webhook endpoint consuming", extra={**self._extra, "group": self.group_id})
        try:
            while not self.stopping and not self.disabled:
                batches = await consumer.getmany(timeout_ms=500, max_records=1)
                for tp, records in batches.items():
                    for record in records:
                        if self.stopping or self.disabled or tp not in self.assigned:
                            break
                        await self._handle(consumer, tp, record)
        finally:
            self.consumer = None
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def position_new_partitions(self, assigned: list[TopicPartition]) -> None:
        """A group without a committed offset starts ``backfill_s`` back in the alert history, not at its start."""
        consumer = self.consumer
        if consumer is None:
            return
        fresh = [tp for tp in assigned if await consumer.committed(tp) is None]
        if not fresh:
            return
        since_ms = int((time.time() - self.endpoint.backfill_s) * 1000)
        found = await consumer.offsets_for_times({tp: since_ms for tp in fresh})
        ends = await consumer.end_offsets(fresh)
        start = {tp: (found[tp].offset if found.get(tp) is not None else ends[tp]) for tp in fresh}
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        await consumer.commit(start)
        offsets = {tp.partition: o for tp, o in start.items()}
        log.info(
            "webhook endpoint starts in the alert history",
            extra={**self._extra, "backfill_s": self.endpoint.backfill_s, "offsets": offsets},
        )

    async def _commit(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        try:
            await consumer.commit({tp: offset})
        except KafkaError as exc:  # a rebalance took the partition: its new owner resends (same webhook-id)
            log.warning(
                "could not commit a settled webhook event; it may be sent again",
                extra={**self._extra, "partition": tp.partition, "offset": offset, "error": type(exc).__name__},
            )

    # -- one event ----------------------------------------------------------------------------------------------------
    async def _handle(self, consumer: AIOKafkaConsumer, tp: TopicPartition, record: Any) -> None:
        header_id = dict(record.headers or ()).get("event_id")
        try:
            event = json.loads(record.value)
            missing = [k for k in REQUIRED_EVENT_KEYS if k not in event]
            if missing:
                raise KeyError(", ".join(missing))
            event_id = header_id.decode() if isinstance(header_id, bytes) else str(event["event_id"])
            payload = build_payload(event, self.dispatcher.names, self.dispatcher.config.grafana_url)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error(
                "malformed alert event skipped",
                extra={**self._extra, "partition": tp.partition, "offset": record.offset, "error": repr(exc)[:200]},
            )
            await self._commit(consumer, tp, record.offset + 1)
            return
        if event.get("suppressed_by") or not self.endpoint.subscribe.matches(event):
            await self._commit(consumer, tp, record.offset + 1)
            return
        settled = await self._deliver(tp, record.offset, event, event_id, payload)
        if settled:
            await self._commit(consumer, tp, record.offset + 1)

    async def _deliver(
        self, tp: TopicPartition, offset: int, event: Mapping[str, Any], event_id: str, payload: Mapping[str, Any]
    ) -> bool:
        """Attempt until settled; False when abandoned (stopping, or the partition moved to another worker)."""
        d = self.dispatcher
        name = self.endpoint.name
        extra = {**self._extra, "event_id": event_id}
        history = await d.attempts.history(name, event_id)
        if history is not None and history.delivered:
            log.info("webhook event already delivered before a restart; not sent again", extra=extra)
            return True
        now = time.time()
        if history is None:  # ClickHouse did not answer: the event's own time bounds the horizon
            first_at = min(now, float(event.get("emitted_at", now)))
            attempt = 0
        else:
            first_at = history.first_at or now
            attempt = history.attempts
        deadline = first_at + self.endpoint.retry.horizon_s
        body = encode(payload)
        self.in_flight = _InFlight(tp, event_id, attempt, False)
        try:
            while True:
                if self.stopping or tp not in self.assigned:
                    return False
                attempt += 1
                result = await send_once(self.client, self.endpoint, event_id, body, d.config.http_allowlist)
                outcome, wait = self._next_step(result, attempt, deadline)
                await self._record(event, event_id, attempt, result, outcome, wait)
                if outcome == "delivered":
                    d.metrics.delivered.labels(name).inc()
                    return True
                if outcome == "retry":
                    assert wait is not None
                    self.in_flight = _InFlight(tp, event_id, attempt, True)
                    d.metrics.retrying.labels(name).set(1)
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), wait)
                    d.metrics.retrying.labels(name).set(0)
                    continue
                reason = {"gone": "gone", "rejected": "rejected", "unsafe_url": "unsafe_url"}.get(outcome, "exhausted")
                letter = DeadLetteredEvent(
                    endpoint=name, event_id=event_id, reason=reason, last_error=result.error, last_status=result.status,
                    attempts=attempt, first_attempt_at=first_at, last_attempt_at=time.time(),
                    source_topic=tp.topic, source_partition=tp.partition, source_offset=offset,
                    payload=payload, event=event,
                )  # fmt: skip
                await d.dead_letters.send(letter)
                d.metrics.dead_letters.labels(name, reason).inc()
                log.warning(
                    "webhook event sent to the alert DLQ",
                    extra={**extra, "reason": reason, "attempts": attempt, "error": result.error},
                )
                if outcome == "gone":
                    await self._disable(event_id)
                return True
        finally:
            self.in_flight = None

    def _next_step(self, result: AttemptResult, attempt: int, deadline: float) -> tuple[str, float | None]:
        """The attempt's outcome and, for a retry, how long to wait (backoff with jitter, or Retry-After)."""
        if result.verdict != "retry":
            return OUTCOMES[result.verdict], None
        now = time.time()
        if now >= deadline:
            return "exhausted", None
        wait = self.endpoint.retry.delay(attempt, random.random())
        if result.retry_after_s is not None:
            if now + result.retry_after_s > deadline:
                return "exhausted", None  # the receiver asks us to come back after the horizon
            wait = max(wait, result.retry_after_s)
        return "retry", min(wait, deadline - now)

    async def _record(
        self, event: Mapping[str, Any], event_id: str, attempt: int, result: AttemptResult, outcome: str,
        wait: float | None, source: str = "stream",
    ) -> None:  # fmt: skip
        d = self.dispatcher
        name = self.endpoint.name
        d.metrics.attempts.labels(name, outcome).inc()
        d.metrics.latency.labels(name).observe(result.latency_s)
        await d.attempts.record(
            Attempt(
                time.time(), name, event_id, str(event.get("type", "")), str(event.get("rule", "")), attempt, outcome,
                result.status, round(result.latency_s * 1000, 1), result.error, source, d.worker,
            )
        )  # fmt: skip
        extra = {
            **self._extra, "event_id": event_id, "attempt": attempt, "outcome": outcome, "status": result.status,
            "latency_ms": round(result.latency_s * 1000, 1),
        }  # fmt: skip
        if result.error:
            extra["error"] = result.error
        if wait is not None:
            extra["retry_in_s"] = round(wait, 2)
        log.log(logging.INFO if outcome in ("delivered", "retry") else logging.WARNING, "webhook attempt", extra=extra)

    async def _disable(self, event_id: str) -> None:
        """410 Gone: the receiver says this URL will never take events again. Persist it; tell people."""
        d = self.dispatcher
        self.disabled = True
        d.metrics.disabled.labels(self.endpoint.name).set(1)
        try:
            await d.attempts.set_state(
                self.endpoint.name, self.endpoint.url_digest, disabled=True, reason=f"410 Gone for event {event_id}"
            )
        except Exception as exc:
            log.error("could not persist the disabled state", extra={**self._extra, "error": type(exc).__name__})
        log.error(
            "NOTICE webhook endpoint disabled: the receiver answered 410 Gone. Fix the URL in the webhooks file "
            "(a new URL enables it again) and run `einvoice-monitor alerts redeliver` for the dead-lettered events",
            extra={**self._extra, "event_id": event_id},
        )

    async def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        await self.client.aclose()

    def status(self) -> dict[str, Any]:
        flight = self.in_flight
        return {
            "endpoint": self.endpoint.name, "host": self.endpoint.display_url, "group": self.group_id,
            "disabled": self.disabled, "partitions": sorted(tp.partition for tp in self.assigned),
            "in_flight": None if flight is None else {
                "event_id": flight.event_id, "attempt": flight.attempt, "waiting_to_retry": flight.retrying,
            },
        }  # fmt: skip


class WebhookDispatcher:
    """Runs one :class:`EndpointWorker` per enabled endpoint; ``start()`` returns once they are launched."""

    def __init__(
        self,
        *,
        bootstrap: str,
        alerts_topic: str,
        dlq_topic: str,
        app_id: str,
        config: WebhookConfig,
        store: ClickHouseStore | None,
        names: Names | None = None,
        metrics_registry: CollectorRegistry | None = None,
        session_timeout_s: float = 10.0,
        worker: str | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.alerts_topic = alerts_topic
        self.dlq_topic = dlq_topic
        self.app_id = app_id
        self.config = config
        self.store = store
        self.names = names
        self.metrics = WebhookMetrics(metrics_registry)
        self.session_timeout_s = session_timeout_s
        self.worker = worker or worker_name()
        self.attempts = AttemptLog(store)
        self.dead_letters = DeadLetterWriter(bootstrap, dlq_topic)
        self.workers: dict[str, EndpointWorker] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def from_settings(
        cls,
        settings: Any,
        bootstrap: str,
        store: ClickHouseStore | None,
        metrics_registry: CollectorRegistry | None = None,
        config: WebhookConfig | None = None,
    ) -> WebhookDispatcher | None:
        """None when no endpoint is configured (``EINVOICE_WEBHOOKS_FILE`` unset or empty).

        ``config`` is the already loaded configuration (load it early, with :func:`config_from_settings`,
        so a bad file stops the worker before it starts); read from ``settings`` when omitted.
        """
        config = config if config is not None else config_from_settings(settings)
        if not config.endpoints:
            return None
        topics = settings.topics
        return cls(
            bootstrap=bootstrap, alerts_topic=topics.alerts,
            dlq_topic=topics.alerts_dlq, app_id=settings.app_id, config=config,
            store=store, metrics_registry=metrics_registry,
            session_timeout_s=min(30.0, float(settings.session_timeout_s)),
        )  # fmt: skip

    async def start(self) -> None:
        if self.names is None and self.store is not None:
            try:
                self.names = await asyncio.to_thread(load_names, self.store)
            except Exception as exc:
                log.warning("sector and unit names not loaded; payloads carry codes only", extra={"error": repr(exc)})
        try:
            states = await self.attempts.states()
        except Exception as exc:
            log.warning("could not read the endpoints' disabled state", extra={"error": type(exc).__name__})
            states = {}
        await self.dead_letters.start()
        for endpoint in self.config.endpoints:
            extra = {"endpoint": endpoint.name, "host": endpoint.display_url}
            state = states.get(endpoint.name)
            if not endpoint.enabled:
                self.metrics.disabled.labels(endpoint.name).set(1)
                log.info("webhook endpoint disabled in the configuration", extra=extra)
                continue
            if state is not None and state.disabled:
                if state.url_digest == endpoint.url_digest:
                    self.metrics.disabled.labels(endpoint.name).set(1)
                    log.warning("webhook endpoint stays disabled", extra={**extra, "reason": state.reason})
                    continue
                with contextlib.suppress(Exception):
                    await self.attempts.set_state(
                        endpoint.name, endpoint.url_digest, disabled=False, reason="URL changed"
                    )
                log.info("webhook endpoint enabled again: its URL changed", extra=extra)
            self.metrics.disabled.labels(endpoint.name).set(0)
            worker = EndpointWorker(self, endpoint)
            self.workers[endpoint.name] = worker
            self._tasks.append(asyncio.create_task(worker.run(), name=f"webhook-{endpoint.name}"))
        log.info("webhook dispatcher started", extra={"endpoints": sorted(self.workers), "topic": self.alerts_topic})

    async def stop(self) -> None:
        """Stop waiting and sending; an unsettled event is not committed and is sent again after restart."""
        for worker in self.workers.values():
            worker.stopping = True
            worker.wake.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for worker in self.workers.values():
            await worker.stop()
        self._tasks.clear()
        await self.dead_letters.stop()

    def status(self) -> list[dict[str, Any]]:
        """Per endpoint: partitions, disabled, the event in flight (for a web page or the CLI)."""
        return [w.status() for w in self.workers.values()]

    async def run_forever(self) -> None:
        """Standalone: until cancelled (``python -m sinks.webhook run``)."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

"""The Faust app: topics, the registry table, the agents, the web pages and the timers.

``create_app`` builds everything from :class:`Settings`, so a test can run a worker with its
own ports and data directory. Invoices do not go through an agent: the consumer hands each
fetch over whole (:mod:`streams.batch_fetch`) and one task feeds it, batch after batch, to
:class:`streams.ingest.InvoiceIngest`; the task commits a batch's offsets itself, only after
ingest returned, i.e. after ClickHouse and the DLQ acknowledged it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any

import faust
from faust.types import TP, EventT
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from alerts.evaluator import AlertEvaluator
from alerts.rules import load_rules
from analytics.adoption import unregistered
from analytics.report import period_report
from base.config import INVOICE_SUBJECT, REGISTRY_SUBJECT, Settings
from base.localtime import HOUR_MS, LOCAL_TZ
from base.outages import OUTAGES
from sinks.clickhouse import ClickHouseStore, InvoiceSink, open_store
from sinks.dead_letter import DeadLetter, DeadLetterSink, DiscardingDeadLetterSink
from sinks.webhook import WebhookConfig, WebhookDispatcher, config_from_settings
from streams import batch_core, freeze
from streams.batch_fetch import BatchFetchApp, FetchedBatches, unpack_in_core
from streams.codec import AvroCodec, SchemaCatalog
from streams.ingest import InvoiceIngest, PartitionRecords, PartitionsMoved, PreparedBatch, SourceRecord
from streams.metrics import IngestMetrics
from streams.offsets import end_offsets, fetch_range, group_offsets, group_positions, missing_ranges
from streams.registry import REGISTRY_HISTORY_COLUMNS, decode_registry_batch, merge_version
from streams.validation import InvoiceRules, InvoiceValidator

log = logging.getLogger(__name__)

REGISTRY_TABLE = "registry"
# Faust commits inline in its fetch loop once this many records are acked, and a commit first
# sends every changelog record the registry table has buffered: with the whole registry arriving
# on a fresh deployment that stopped every topic's fetch, invoices too, for ~10 s. Faust's commit
# timer (broker_commit_interval) commits the registry instead, beside the fetch loop.
COMMIT_EVERY_TIMER_ONLY = 2**62
# EINVOICE_FENCE: both halves of the fence, one alone (to show what the other prevents), or none
FENCES = ("on", "store", "lease", "off")
# Records fetched ahead of the writer, in batches. A batch is one partition's records (the fence's
# unit): with two, blocks were ~20,000 records and the consumer stalled whenever the writer lagged;
# four gave +24 % for ~25 MiB, six too near 1 GiB at scale 1.0 (docs/performance.md).
FETCH_BUFFER_BATCHES = 4


class RegistryTable(faust.Table):
    """A table written from batches: the changelog partition is pinned to the batch's partition.

    Faust picks the changelog partition from the "current event"; in a batch that mixes
    partitions the current event is the last one taken, so we pin it explicitly to keep the
    changelog co-partitioned with ``business.registry``.
    """

    _pinned_partition: int | None = None

    @contextlib.contextmanager
    def writing_partition(self, partition: int) -> Iterator[None]:
        self._pinned_partition = partition
        try:
            yield
        finally:
            self._pinned_partition = None

    def partition_for_key(self, key: Any) -> int | None:
        if self._pinned_partition is not None:
            return self._pinned_partition
        return super().partition_for_key(key)


def crash_without_commit(what: str) -> None:
    """Exit at once, before Faust acks the batch: an uncommitted batch is re-read after restart.

    Faust's batch iterator acks the buffered events even when the loop body raises, which
    would commit offsets of records never written; so an unexpected error ends the process
    (a supervisor restarts it) instead of being raised.
    """
    log.critical("unrecoverable error; exiting without committing", extra={"during": what}, exc_info=True)
    logging.shutdown()
    os._exit(70)


class CommitChain:
    """A batch's offset commit, off the write path: the next batch's insert need not wait for it.

    Commits still follow their batch's insert (they are added after it returned) and run one at a
    time, so a partition's committed offset only moves forward. Offsets added while a commit is
    under way are merged (a partition's newer next offset replaces its older one) and go out in one
    commit after it: batches that write quickly (a feed of rejected records: no insert) can come
    faster than a commit's round trip, and one commit a batch would fall ever further behind.
    """

    def __init__(self, commit: Callable[[dict[int, int]], Awaitable[bool]]) -> None:
        self._commit = commit
        self._pending: dict[int, int] = {}
        self._running: asyncio.Task[None] | None = None

    def add(self, offsets: dict[int, int]) -> None:
        self._pending.update(offsets)
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self._pending:
            offsets, self._pending = self._pending, {}
            try:
                await self._commit(offsets)
            except Exception:
                crash_without_commit("offset commit")


class OrderedWriter:
    """The one batch being written while the next is prepared: writes stay sequential and in order.

    Sequential writes keep the store's invariant that only a partition's newest block can be cut
    short (InvoiceSink.repair); the overlap hides the insert's time behind the next preparation.
    """

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def start(self, write: Coroutine[Any, Any, None]) -> None:
        if self._task is not None and not self._task.done():
            raise RuntimeError("a batch is still being written")
        self._task = asyncio.create_task(write)

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)


def to_source_records(events: Sequence[EventT]) -> list[SourceRecord]:
    records = []
    for event in events:
        message = event.message
        ts = message.timestamp
        headers = message.headers or ()
        records.append(
            SourceRecord(
                partition=message.partition,
                offset=message.offset,
                key=message.key,
                value=message.value,
                timestamp_ms=int(ts * 1000) if ts else -1,
                headers=tuple(headers.items() if isinstance(headers, dict) else headers),
            )
        )
    return records


class Pipeline:
    """Everything the agents share: ClickHouse, the DLQ writers, codecs, metrics."""

    def __init__(
        self, settings: Settings, bootstrap: str, registry_table: RegistryTable,
        webhook_config: WebhookConfig | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.bootstrap = bootstrap
        self.metrics = IngestMetrics()
        schemas = SchemaCatalog.load()
        self.invoice_codec = AvroCodec(schemas, INVOICE_SUBJECT)
        self.registry_codec = AvroCodec(schemas, REGISTRY_SUBJECT)
        self.registry_table = registry_table
        self.store: ClickHouseStore | None = None
        self.topics = settings.topics
        if settings.role not in ("live", "rebuild"):
            raise ValueError(f"EINVOICE_ROLE must be live or rebuild, got {settings.role!r}")
        self.live = settings.role == "live"  # a rebuild worker writes ClickHouse only (replay/rebuild.py)
        if settings.fence not in FENCES:
            raise ValueError(f"EINVOICE_FENCE must be one of {', '.join(FENCES)}, got {settings.fence!r}")
        # the store's fence (chain check, conditional insert, read-back, tokens by start) and the group's lease
        self.fenced = settings.fence in ("on", "store")
        self.leased = settings.fence in ("on", "lease")
        dead_letters = DeadLetterSink if self.live else DiscardingDeadLetterSink
        self.invoice_dlq = dead_letters(bootstrap, self.topics.invoices_dlq)
        self.registry_dlq = dead_letters(bootstrap, self.topics.registry_dlq)
        self.ingest: InvoiceIngest | None = None
        self.batch_core: batch_core.BatchCore | None = None
        self.registry_positions: dict[int, int] = {}
        # per invoice partition, the offset after the last record prepared, and after the last one written
        self.next_offsets: dict[int, int] = {}
        self.written_offsets: dict[int, int] = {}
        self.evaluator: AlertEvaluator | None = None
        self.webhook_config = webhook_config
        self.webhooks: WebhookDispatcher | None = None
        self.started_at = time.time()
        self.app: BatchFetchApp | None = None
        self.confirmed_at = 0.0  # monotonic time of the last commit the group accepted
        self.owned: set[int] = set()  # invoice partitions assigned and not revoked since
        self.ready = asyncio.Event()
        # one name per process life: the boards read each name's counters as starting from zero, and a
        # container restarts with the same hostname and pid
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}:{int(self.started_at)}"

    async def start(self) -> None:
        self.store = await asyncio.to_thread(open_store, self.settings.clickhouse_dsn)
        await self.invoice_dlq.start()
        await self.registry_dlq.start()
        rules = InvoiceRules.from_settings(self.settings)
        dedup_horizon_ms = self.settings.dedup_horizon_hours * HOUR_MS
        self.batch_core = batch_core.load(
            self.settings.batch_core, topic=self.topics.invoices, subject=INVOICE_SUBJECT,
            schemas=self.invoice_codec.schemas, rules=rules, dedup_horizon_ms=dedup_horizon_ms,
        )  # fmt: skip
        log.info("batch core", extra={"kind": self.batch_core.kind, "reason": self.batch_core.reason})
        self.ingest = InvoiceIngest(
            topic=self.topics.invoices,
            codec=self.invoice_codec,
            validator=InvoiceValidator(rules),
            sink=InvoiceSink(self.store, self.topics.invoices, fenced=self.fenced),
            dead_letters=self.invoice_dlq,
            lookup_seller=self.lookup_seller,
            dedup_horizon_ms=dedup_horizon_ms,
            metrics=self.metrics,
            confirm_ownership=self.confirm_ownership if self.leased else None,
            core=self.batch_core.core,
            fault_point=self.fault_point,
        )
        self.ready.set()
        if not self.live:
            return
        # Webhooks: one consumer group per endpoint on adoption.alerts; never holds up ingestion.
        self.webhooks = WebhookDispatcher.from_settings(
            self.settings,
            self.bootstrap,
            self.store,
            metrics_registry=self.metrics.metrics_registry,
            config=self.webhook_config,
        )
        if self.webhooks is not None:
            await self.webhooks.start()

    async def stop(self) -> None:
        if self.webhooks is not None:
            await self.webhooks.stop()
            self.webhooks = None
        await self.invoice_dlq.stop()
        await self.registry_dlq.stop()
        if self.store is not None:
            self.store.close()
            self.store = None

    async def copy_metrics(self) -> None:
        """The worker's counters and gauges into pipeline_metrics, for the pipeline board."""
        store = self.store
        if store is None:
            return
        now_ms = int(time.time() * 1000)
        rows = [(now_ms, self.worker_name, name, label, value) for name, label, value in self.metrics.snapshot()]
        try:
            await store.run(
                store.insert, "pipeline_metrics", rows, column_names=["ts", "worker", "metric", "label", "value"]
            )
        except Exception as exc:  # the board shows a gap; ingest goes on
            log.warning("could not copy metrics to ClickHouse", extra={"error": type(exc).__name__})

    def lookup_seller(self, seller_id: str) -> list[dict[str, Any]] | None:
        # the memory store's dict itself: Table.get goes through four layers of Faust's mapping classes
        # (7% of the worker's time at 20,000 events/s); the store is memory:// (create_app)
        return self.registry_table.data.data.get(seller_id)

    async def catch_up_registry(self, partitions: Sequence[int]) -> None:
        """Before the first invoices of a partition, read its registry partition up to its end.

        Both topics are consumed at once, so an invoice published after its seller's
        registration could otherwise be joined before the registry agent read it. Waiting for
        the agent would deadlock (Faust feeds all agents from one loop, and a waiting invoice
        agent stops that loop), so the registrations not yet processed are read here with a
        consumer of our own and merged into the table's store; the agent applies them again
        later, with changelog, which is harmless because merging a version is idempotent.
        """
        started = time.monotonic()
        committed = await asyncio.to_thread(
            group_positions, self.bootstrap, self.settings.app_id, self.topics.registry, partitions
        )
        ends = await asyncio.to_thread(end_offsets, self.bootstrap, self.topics.registry, partitions)
        merged = 0
        for partition in partitions:
            start = max(committed[partition], self.registry_positions.get(partition, -1) + 1)
            if start >= ends[partition]:
                continue
            records = await fetch_range(self.bootstrap, self.topics.registry, partition, start, ends[partition])
            batch = decode_registry_batch(self.registry_codec, records)
            for seller_id, version in batch.ordered:
                if version is not None:
                    self.registry_table.data[seller_id] = merge_version(self.registry_table.get(seller_id), version)
                    merged += 1
        log.info(
            "registry caught up",
            extra={"partitions": list(partitions), "merged": merged, "seconds": round(time.monotonic() - started, 2)},
        )

    async def complete(self, parts: list[PartitionRecords]) -> list[PartitionRecords]:
        """The batch as this worker must process it: holes filled from Kafka, records it processed already dropped.

        Holes: see streams.offsets. Faust also delivers some records twice (seen: the last record of
        each partition after a start at a rewound offset); the sink would skip them, but they would
        count as events again. A partition's records that start where the last batch ended and run
        without a gap (nearly always) pass as they are; only the others are looked at record by record.
        """
        completed = []
        for part in parts:
            expected = self.next_offsets[part.partition]
            if part.first_offset == expected and part.last_offset - expected + 1 == len(part):
                completed.append(part)
            elif (fixed := await self._complete(part, expected)) is not None:
                completed.append(fixed)
        return completed

    async def _complete(self, part: PartitionRecords, expected: int) -> PartitionRecords | None:
        partition = part.partition
        fresh: list[SourceRecord] = []
        for record in part.records():
            if record.offset < expected or (fresh and record.offset <= fresh[-1].offset):
                continue
            fresh.append(record)
        if len(fresh) < len(part):
            log.info("records delivered again; dropped", extra={"dropped": len(part) - len(fresh)})
        for start, end in missing_ranges([r.offset for r in fresh], expected):
            found = await fetch_range(self.bootstrap, self.topics.invoices, partition, start, end)
            log.warning(
                "offsets missing from the stream; fetched from Kafka",
                extra={"partition": partition, "from": start, "to": end, "found": len(found)},
            )
            self.metrics.gaps_filled.inc(len(found))
            fresh.extend(found)
        fresh.sort(key=lambda r: r.offset)
        return PartitionRecords(partition, fresh) if fresh else None

    async def commit(self, offsets: dict[int, int]) -> bool:
        """Commit these next offsets, whatever Faust's ack bookkeeping thinks; False if the group refused."""
        assert self.app is not None
        accepted = await self.app.commit_batch_offsets(
            {TP(self.topics.invoices, p): offset for p, offset in offsets.items()}
        )
        if accepted:
            self.confirmed_at = time.monotonic()
            self.written_offsets.update(offsets)
        return accepted

    def fault_point(self, point: str) -> None:
        freeze.reached(point, self.settings.data_dir)

    async def confirm_ownership(self, partitions: Sequence[int]) -> None:
        """Before a batch is written: still the owner of its partitions? (Step 1 of the fence, README Exactly once.)

        Within the lease since the last accepted commit the partitions cannot have moved; past it,
        a commit of the offsets already processed asks the group coordinator, which refuses a
        member it evicted. A pause after this check is caught by the store (steps 3 and 5).
        """
        if time.monotonic() - self.confirmed_at <= self.settings.session_timeout_s / 3:
            return
        if not await self.commit({p: self.written_offsets[p] for p in partitions}):
            raise PartitionsMoved(f"partitions {sorted(partitions)} moved to another worker; batch not written")


def create_app(settings: Settings, bootstrap: str) -> faust.App:
    app = BatchFetchApp(
        settings.app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        topic_partitions=settings.partitions,
        topic_allow_declare=False,
        topic_disable_leader=False,
        web_enabled=True,
        web_port=settings.web_port,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        producer_acks=-1,
        # the registry table's changelog: with Faust's defaults (no linger, 16 KiB batches) a burst of
        # table writes leaves one record per produce request, ~0.5 ms each, and Faust's commits wait for them
        producer_linger=0.01,
        producer_max_batch_size=1_048_576,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 5),
        consumer_auto_offset_reset="earliest",
        broker_commit_every=COMMIT_EVERY_TIMER_ONLY,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=max(settings.batch_size * 2, 4096),
        autodiscover=False,
        datadir=str(settings.data_dir / "faust"),
    )
    topics = settings.topics
    invoice_topic = app.topic(
        topics.invoices, key_serializer="raw", value_serializer="raw", partitions=settings.partitions
    )
    registry_topic = app.topic(
        topics.registry, key_serializer="raw", value_serializer="raw", partitions=settings.partitions
    )
    registry_table = RegistryTable(
        app, name=REGISTRY_TABLE, default=None, partitions=settings.partitions,
        key_type=str,
    )  # fmt: skip
    app.tables.add(registry_table)
    # invoices bypass Faust's per-message delivery (streams.batch_fetch); a batch in flight holds the lock
    fetched = FetchedBatches(max_records=settings.batch_size * FETCH_BUFFER_BATCHES)
    app.attach_batches(invoice_topic, fetched)
    if (unpacker := batch_core.kafka_records(settings.batch_core)) is not None:
        unpack_in_core(settings.topics.invoices, unpacker)  # the fetches' records never become Python objects
    in_flight = asyncio.Lock()  # held while a batch is prepared
    writer = OrderedWriter()  # the batch being written meanwhile
    webhook_config = config_from_settings(settings)  # a bad endpoints file stops the worker here, before it starts
    pipeline = Pipeline(settings, bootstrap, registry_table, webhook_config)
    commits = CommitChain(pipeline.commit)  # a written batch's offsets, committed after it, in order
    pipeline.app = app
    app.pipeline = pipeline  # type: ignore[attr-defined]
    pipeline.metrics.ready.set_function(lambda: float(pipeline.ingest is not None))  # as /health says "ok"

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: faust.App, assigned: set[TP], **kwargs: Any) -> None:
        pipeline.owned = {tp.partition for tp in assigned if tp.topic == topics.invoices}

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: faust.App, revoked: set[TP], **kwargs: Any) -> None:
        parts = [tp.partition for tp in revoked if tp.topic == topics.invoices]
        if pipeline.ingest is None or not parts:
            pipeline.owned.difference_update(parts)
            return
        acquired = False
        try:  # let the batches in flight finish their writes first; a commit may be refused, which is harmless
            async with asyncio.timeout(settings.session_timeout_s / 2):
                acquired = await in_flight.acquire()
                await writer.wait()
        except TimeoutError:
            log.warning("batch still in flight at revocation", extra={"partitions": parts})
        pipeline.owned.difference_update(parts)  # under the lock: no batch of these partitions starts from here on
        if acquired:
            in_flight.release()
        dropped = await fetched.purge(parts)
        pipeline.ingest.revoke(parts)
        for partition in parts:
            pipeline.next_offsets.pop(partition, None)
            pipeline.written_offsets.pop(partition, None)
        log.info("partitions revoked", extra={"partitions": parts, "fetched_records_dropped": dropped})

    @app.agent(registry_topic, concurrency=1)
    async def registry_agent(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            await pipeline.ready.wait()
            try:
                await ingest_registry(to_source_records(events))
            except Exception:
                crash_without_commit("registry batch")

    async def ingest_registry(records: list[SourceRecord]) -> None:
        by_partition: dict[int, list[SourceRecord]] = {}
        for record in records:
            by_partition.setdefault(record.partition, []).append(record)
        for partition, part_records in by_partition.items():
            batch = decode_registry_batch(pipeline.registry_codec, part_records)
            with registry_table.writing_partition(partition):
                for seller_id, version in batch.ordered:
                    if version is None:
                        registry_table.pop(seller_id, None)
                    else:
                        registry_table[seller_id] = merge_version(registry_table.get(seller_id), version)
            for record, rejection in batch.rejected:
                pipeline.registry_dlq.add(
                    DeadLetter(
                        topics.registry, partition, record.offset, record.key, record.value,
                        record.timestamp_ms if record.timestamp_ms >= 0 else None, record.headers,
                        rejection.reason, rejection.detail,
                    )
                )  # fmt: skip
                pipeline.metrics.rejected.labels(topics.registry, rejection.reason).inc()
            await pipeline.registry_dlq.flush()
            if batch.history_rows and pipeline.store is not None:
                await pipeline.store.insert_until_accepted(
                    "registry_history", batch.history_rows, column_names=REGISTRY_HISTORY_COLUMNS
                )
                pipeline.metrics.rows_inserted.labels("registry_history").inc(len(batch.history_rows))
            pipeline.registry_positions[partition] = part_records[-1].offset
        pipeline.metrics.events.labels(topics.registry).inc(len(records))
        pipeline.metrics.registry_sellers.set(len(registry_table))

    @app.task
    async def ingest_invoice_batches() -> None:
        """The invoice path: whatever the consumer fetched, as one batch; prepared while the one before is written."""
        await pipeline.ready.wait()
        while True:
            chunks = await fetched.take(settings.batch_size)
            async with in_flight:
                owned = pipeline.owned  # not consumer.assignment(): that lags behind a revocation
                by_partition: dict[int, list[Any]] = {}
                for chunk in chunks:
                    if chunk.partition in owned:
                        by_partition.setdefault(chunk.partition, []).append(chunk.records)
                if not by_partition:
                    continue
                try:
                    batch = await prepare_invoices([PartitionRecords.of_chunks(p, c) for p, c in by_partition.items()])
                    await writer.wait()  # batches are written one at a time, in the order they were prepared
                except Exception:
                    crash_without_commit("invoice batch")
                if batch is not None:
                    writer.start(write_invoices(batch))

    async def prepare_invoices(parts: list[PartitionRecords]) -> PreparedBatch | None:
        assert pipeline.ingest is not None
        new_parts = [part.partition for part in parts if part.partition not in pipeline.next_offsets]
        if new_parts:
            await pipeline.catch_up_registry(new_parts)
            starts = await asyncio.to_thread(group_positions, bootstrap, settings.app_id, topics.invoices, new_parts)
            pipeline.next_offsets.update(starts)
            pipeline.written_offsets.update(starts)
        parts = await pipeline.complete(parts)
        if not parts:
            return None
        batch = await pipeline.ingest.prepare(parts)
        pipeline.next_offsets.update(batch.next_offsets)
        return batch

    async def write_invoices(batch: PreparedBatch) -> None:
        """Write a prepared batch, then commit its offsets: only after ClickHouse and the DLQ acknowledged it."""
        assert pipeline.ingest is not None
        try:
            outcome = await pipeline.ingest.write(batch)
            pipeline.fault_point(freeze.BEFORE_COMMIT)
            if outcome.committable:
                commits.add(outcome.committable)
        except Exception:
            crash_without_commit("invoice batch")
        for partition in outcome.taken:  # resynced: read again from the store and the group's position
            pipeline.next_offsets.pop(partition, None)
            pipeline.written_offsets.pop(partition, None)
        for partition, next_offset in outcome.committable.items():
            if partition not in pipeline.owned:
                continue  # revoked while the batch ran: aiokafka no longer knows its high watermark
            highwater = app.consumer.highwater(TP(topics.invoices, partition))
            if highwater:
                pipeline.metrics.consumer_lag.labels(topics.invoices, str(partition)).set(highwater - next_offset)

    @app.task
    async def start_pipeline() -> None:
        await pipeline.start()

    @app.on_before_shutdown.connect
    async def before_shutdown(sender: faust.App, **kwargs: Any) -> None:
        if pipeline.webhooks is not None:
            await pipeline.webhooks.stop()
            pipeline.webhooks = None
        await pipeline.copy_metrics()  # the last figures, or the boards miss what came after the last copy

    rules = load_rules(settings.rules_file)

    @app.timer(interval=rules.evaluation.interval_s, on_leader=True)
    async def evaluate_alerts() -> None:
        """The alert evaluator: on the leader only, every interval, each newly complete day once."""
        if pipeline.store is None or not pipeline.live:
            return
        if pipeline.evaluator is None:
            pipeline.evaluator = AlertEvaluator(pipeline.store, rules, bootstrap, topics.alerts, topics.silences)
        try:  # an exception escaping a Faust timer crashes the app; Kafka or ClickHouse away is retried next time
            offsets = await asyncio.to_thread(
                group_offsets, bootstrap, settings.app_id, topics.invoices, settings.partitions
            )
            lag = sum(max(0, end - position) for end, position in offsets.values())
            results = await asyncio.to_thread(pipeline.evaluator.run, lag)
        except Exception:
            log.exception("alert evaluation failed; retrying at the next interval")
            pipeline.metrics.alert_evaluation_failures.inc()
            pipeline.evaluator = None  # reload state from ClickHouse next time
            return
        for result in results:
            pipeline.metrics.alert_events.inc(len(result.events))
        if pipeline.evaluator.last_day is not None:
            day_after = pipeline.evaluator.last_day + dt.timedelta(days=1)
            pipeline.metrics.evaluator_progress.evaluated_through = dt.datetime.combine(
                day_after, dt.time(), LOCAL_TZ
            ).timestamp()

    @app.timer(interval=settings.kafka_probe_interval_s)
    async def probe_kafka() -> None:
        """The group's position as the broker sees it, for Prometheus: it moves only if some worker commits."""
        try:
            offsets = await asyncio.to_thread(
                group_offsets, bootstrap, settings.app_id, topics.invoices, settings.partitions
            )
        except Exception as exc:  # the broker away: the last contact stops moving, and Prometheus says so
            log.warning("could not read the group's offsets from Kafka", extra={"error": type(exc).__name__})
            return
        metrics = pipeline.metrics
        metrics.kafka_last_contact.set(time.time())
        for partition, (end, position) in offsets.items():
            labels = (topics.invoices, str(partition))
            metrics.topic_end_offset.labels(*labels).set(end)
            metrics.group_committed_offset.labels(*labels).set(position)
            metrics.group_lag.labels(*labels).set(max(0, end - position))

    @app.timer(interval=settings.metrics_interval_s)
    async def write_metrics() -> None:
        await pipeline.copy_metrics()

    @app.timer(interval=OUTAGES.quiet_s / 2)
    async def close_outages() -> None:
        """A Kafka node's outage ends in the log when it ends, even when nothing else is logged then."""
        OUTAGES.tick()

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        ready = pipeline.ingest is not None
        body = {
            "status": "ok" if ready else "starting",
            "worker": pipeline.worker_name,
            "uptime_s": round(time.time() - pipeline.started_at, 1),
            # assigned invoice partitions; "restored": those whose state is loaded (on their first records)
            "partitions": sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == topics.invoices),
            "restored": sorted(pipeline.ingest.states) if pipeline.ingest else [],
            # "compiled", or "reference" with why (a worker without the compiled core is several times slower)
            "batch_core": {"kind": pipeline.batch_core.kind, "reason": pipeline.batch_core.reason}
            if pipeline.batch_core
            else None,
        }
        return web.json(body, status=200 if ready else 503)

    @app.page("/debug/offsets")
    async def debug_offsets(web: Any, request: Any) -> Any:
        """Faust's own offset bookkeeping per partition: what it read, acked and committed."""
        consumer = app.consumer
        body = {
            f"{tp.topic}:{tp.partition}": {
                "committed": consumer._committed_offset.get(tp),
                "read": consumer._read_offset.get(tp),
                "acked_head": sorted(consumer._acked.get(tp, []))[:5],
                "acked": len(consumer._acked.get(tp, [])),
                "gaps": [(i.begin, i.end) for i in sorted(consumer._gap.get(tp, []))][:5],
                "next": pipeline.next_offsets.get(tp.partition) if tp.topic == topics.invoices else None,
            }
            for tp in sorted(consumer.assignment())
        }
        return web.json(body)

    @app.page("/alerts")
    async def alerts_page(web: Any, request: Any) -> Any:
        """Alert instances and the last evaluated day (the leader's view)."""
        if pipeline.evaluator is None:
            return web.json({"leader": False, "instances": [], "last_evaluated_day": None})
        return web.json({"leader": True, **pipeline.evaluator.snapshot()})

    @app.page("/report")
    async def report_page(web: Any, request: Any) -> Any:
        """The adoption report, so `einvoice-monitor report` works while this worker owns chDB."""
        if pipeline.store is None:
            return web.json({"error": "starting"}, status=503)
        query = request.query
        try:
            rows = await asyncio.to_thread(
                period_report, pipeline.store, dt.date.fromisoformat(query["from"]), dt.date.fromisoformat(query["to"]),
                level=query.get("level", "district"), sectors=query.getall("sector", []) or None,
                units=query.getall("unit", []) or None, sort=query.get("sort", "rate"),
            )  # fmt: skip
            first, last = dt.date.fromisoformat(query["from"]), dt.date.fromisoformat(query["to"])
            outside = await asyncio.to_thread(unregistered, pipeline.store, first, last)
        except (KeyError, ValueError) as exc:
            return web.json({"error": str(exc)}, status=400)
        return web.json(
            {"rows": [r.as_json() for r in rows], "unregistered": [[d.isoformat(), i, n] for d, i, n in outside]}
        )

    @app.page("/webhooks")
    async def webhooks_page(web: Any, request: Any) -> Any:
        """Per endpoint: partitions, disabled, the event in flight and its attempt."""
        return web.json({"endpoints": pipeline.webhooks.status() if pipeline.webhooks else []})

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(
            generate_latest(pipeline.metrics.metrics_registry), content_type=CONTENT_TYPE_LATEST.split(";")[0]
        )

    return app

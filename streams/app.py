"""The Faust app of the ingest worker: topics, the registry table, the agents, its web pages and timers.

The adoption alerts' evaluator and the report page sit above the worker and are attached to this app
at the top (:mod:`cli.worker`).

``create_app`` builds everything from :class:`Settings`, so a test can run a worker with its
own ports and data directory. Invoices do not go through an agent: the consumer hands each
fetch over whole (:mod:`streams.batch_fetch`) and one task feeds it, batch after batch, to
:class:`streams.ingest.InvoiceIngest`; the task commits a batch's offsets itself, only after
ingest returned, i.e. after ClickHouse and the DLQ acknowledged it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from typing import Any

import faust
from faust.types import TP, EventT
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from base.config import INVOICE_SUBJECT, REGISTRY_SUBJECT, REGISTRY_TABLE, Settings
from base.localtime import HOUR_MS
from base.outages import OUTAGES
from contracts.codec import AvroCodec, SchemaCatalog
from contracts.records import SourceRecord
from contracts.registry import REGISTRY_HISTORY_COLUMNS, decode_registry_batch
from contracts.validation import InvoiceRules, InvoiceValidator
from kafka_io.offsets import end_offsets, fetch_range, group_offsets, group_positions, start_offsets
from sinks.clickhouse import ClickHouseStore, InvoiceSink, open_store
from sinks.dead_letter import DeadLetter, DeadLetterLog, DeadLetterSink, DiscardingDeadLetterLog, KafkaDeadLetterLog
from sinks.webhook import WebhookConfig, WebhookDispatcher, config_from_settings
from streams import batch_core, freeze
from streams.batch_fetch import BatchFetchApp, FetchedBatches, unpack_in_core
from streams.checkpoint import Checkpoint, crash_without_commit
from streams.ingest import InvoiceIngest
from streams.metrics import IngestMetrics

log = logging.getLogger(__name__)

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

        def dead_letter_log(topic: str) -> DeadLetterLog:
            return KafkaDeadLetterLog(bootstrap, topic) if self.live else DiscardingDeadLetterLog()

        self.invoice_dlq = DeadLetterSink(dead_letter_log(self.topics.invoices_dlq))
        self.registry_dlq = DeadLetterSink(dead_letter_log(self.topics.registry_dlq))
        self.ingest: InvoiceIngest | None = None
        self.batch_core: batch_core.BatchCore | None = None
        self.checkpoint: Checkpoint | None = None  # the invoice partitions' owner (create_app)
        self.webhook_config = webhook_config
        self.webhooks: WebhookDispatcher | None = None
        self.started_at = time.time()
        self.ready = asyncio.Event()
        # one name per process life: the boards read each name's counters as starting from zero, and a
        # container restarts with the same hostname and pid
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}:{int(self.started_at)}"

    async def start(self) -> None:
        self.store = await asyncio.to_thread(open_store, self.settings.clickhouse_dsn)
        self.metrics.clickhouse_retries.store = self.store
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
            core=self.batch_core.core,
            fault_point=self.fault_point,
            partitions=self.checkpoint.partitions if self.checkpoint else None,
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

    async def ingest_registry(self, records: list[SourceRecord]) -> None:
        """A batch of registrations into the table (with its changelog), their history into ClickHouse."""
        registry_table, topics = self.registry_table, self.topics
        by_partition: dict[int, list[SourceRecord]] = {}
        for record in records:
            by_partition.setdefault(record.partition, []).append(record)
        for partition, part_records in by_partition.items():
            batch = decode_registry_batch(self.registry_codec, part_records)
            with registry_table.writing_partition(partition):
                batch.apply_to(registry_table)  # through the table: its changelog gets each version
            for record, rejection in batch.rejected:
                self.registry_dlq.add(DeadLetter.of(topics.registry, record, rejection))
                self.metrics.rejected.labels(topics.registry, rejection.reason).inc()
            await self.registry_dlq.flush()
            if batch.history_rows and self.store is not None:
                await self.store.insert_until_accepted(
                    "registry_history", batch.history_rows, column_names=REGISTRY_HISTORY_COLUMNS
                )
                self.metrics.rows_inserted.labels("registry_history").inc(len(batch.history_rows))
        self.metrics.events.labels(topics.registry).inc(len(records))
        self.metrics.registry_sellers.set(len(registry_table))

    async def probe_group(self) -> None:
        """The group's position for Prometheus, on its timer; the broker away is a warning, not an error."""
        try:
            await self.read_group()
        except Exception as exc:  # the broker away: the last contact stops moving, and Prometheus says so
            log.warning("could not read the group's offsets from Kafka", extra={"error": type(exc).__name__})

    async def read_group(self) -> int:
        """The group's position as the broker sees it (it moves only if some worker commits), exported for
        Prometheus; returns the invoice topic's total lag, which the alert evaluator waits to be small."""
        offsets = await asyncio.to_thread(
            group_offsets, self.bootstrap, self.settings.app_id, self.topics.invoices, self.settings.partitions
        )
        metrics, total_lag = self.metrics, 0
        metrics.kafka_last_contact.set(time.time())
        for partition, (end, position) in offsets.items():
            labels, lag = (self.topics.invoices, str(partition)), max(0, end - position)
            metrics.topic_end_offset.labels(*labels).set(end)
            metrics.group_committed_offset.labels(*labels).set(position)
            metrics.group_lag.labels(*labels).set(lag)
            total_lag += lag
        return total_lag

    def lookup_seller(self, seller_id: str) -> list[dict[str, Any]] | None:
        # the memory store's dict itself: Table.get goes through four layers of Faust's mapping classes
        # (7% of the worker's time at 20,000 events/s); the store is memory:// (create_app)
        return self.registry_table.data.data.get(seller_id)

    async def catch_up_registry(self, partitions: Sequence[int]) -> None:
        """Before the first invoices of a partition, read its whole registry partition, to its end.

        Both topics are consumed at once, so an invoice published after its seller's registration
        could otherwise be joined before the registry agent read it. And a partition taken over
        from another worker holds, up to that worker's committed offset, only what Faust restores
        from the table's changelog, which it does beside the invoice task, not before it: joined
        too early, a whole partition's invoices came out unregistered (the takeover test, once in
        a while). So the registry partition is read here from its log start (it is compacted: one
        record a seller, ~14,000 a partition for Thanh Hóa, well under a second), with a consumer
        of our own, and merged into the table's store. Waiting for the agent would deadlock (Faust
        feeds all agents from one loop); the agent and the changelog apply the same versions again
        later, which is harmless because merging a version is idempotent.
        """
        started = time.monotonic()
        topic = self.topics.registry
        starts = await asyncio.to_thread(start_offsets, self.bootstrap, topic, partitions)
        ends = await asyncio.to_thread(end_offsets, self.bootstrap, topic, partitions)
        merged = 0
        for partition in partitions:
            if starts[partition] >= ends[partition]:
                continue
            records = await fetch_range(self.bootstrap, topic, partition, starts[partition], ends[partition])
            merged += decode_registry_batch(self.registry_codec, records).apply_to(self.registry_table.data)
        log.info(
            "registry caught up",
            extra={"partitions": list(partitions), "merged": merged, "seconds": round(time.monotonic() - started, 2)},
        )

    def fault_point(self, point: str) -> None:
        freeze.reached(point, self.settings.data_dir)


class KafkaGroup:
    """The consumer group through Faust's consumer and Kafka's admin API: the checkpoint's :class:`Group`."""

    def __init__(self, app: BatchFetchApp, bootstrap: str, group_id: str, topic: str) -> None:
        self.app, self.bootstrap, self.group_id, self.topic = app, bootstrap, group_id, topic

    async def positions(self, partitions: Sequence[int]) -> dict[int, int]:
        return await asyncio.to_thread(group_positions, self.bootstrap, self.group_id, self.topic, partitions)

    async def commit(self, offsets: dict[int, int]) -> bool:
        """Whatever Faust's ack bookkeeping thinks (streams.batch_fetch.BatchFetchApp.commit_batch_offsets)."""
        return await self.app.commit_batch_offsets({TP(self.topic, p): offset for p, offset in offsets.items()})

    async def fetch(self, partition: int, start: int, end: int) -> list[SourceRecord]:
        return await fetch_range(self.bootstrap, self.topic, partition, start, end)

    def highwater(self, partition: int) -> int | None:
        return self.app.consumer.highwater(TP(self.topic, partition))  # type: ignore[no-any-return]


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
    webhook_config = config_from_settings(settings)  # a bad endpoints file stops the worker here, before it starts
    pipeline = Pipeline(settings, bootstrap, registry_table, webhook_config)
    checkpoint = pipeline.checkpoint = Checkpoint(
        group=KafkaGroup(app, bootstrap, settings.app_id, topics.invoices), fetched=fetched, metrics=pipeline.metrics,
        batch_size=settings.batch_size, session_timeout_s=settings.session_timeout_s, topic=topics.invoices,
        leased=pipeline.leased, before_first_records=pipeline.catch_up_registry, fault_point=pipeline.fault_point,
    )  # fmt: skip
    app.pipeline = pipeline  # type: ignore[attr-defined]
    pipeline.metrics.ready.set_function(lambda: float(pipeline.ingest is not None))  # as /health says "ok"

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: faust.App, assigned: set[TP], **kwargs: Any) -> None:
        checkpoint.assign([tp.partition for tp in assigned if tp.topic == topics.invoices])

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: faust.App, revoked: set[TP], **kwargs: Any) -> None:
        await checkpoint.revoke([tp.partition for tp in revoked if tp.topic == topics.invoices])

    @app.agent(registry_topic, concurrency=1)
    async def registry_agent(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            await pipeline.ready.wait()
            try:
                await pipeline.ingest_registry(to_source_records(events))
            except Exception:
                crash_without_commit("registry batch")

    @app.task
    async def ingest_invoice_batches() -> None:
        """The invoice path: the checkpoint's steps, batch after batch, once the pipeline has started."""
        await pipeline.ready.wait()
        assert pipeline.ingest is not None
        await checkpoint.run(pipeline.ingest)

    @app.task
    async def start_pipeline() -> None:
        await pipeline.start()

    @app.on_before_shutdown.connect
    async def before_shutdown(sender: faust.App, **kwargs: Any) -> None:
        if pipeline.webhooks is not None:
            await pipeline.webhooks.stop()
            pipeline.webhooks = None
        await pipeline.copy_metrics()  # the last figures, or the boards miss what came after the last copy

    @app.timer(interval=settings.kafka_probe_interval_s)
    async def probe_kafka() -> None:
        await pipeline.probe_group()

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
            "restored": checkpoint.partitions.restored(),
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
                "next": owner.next_offset
                if tp.topic == topics.invoices and (owner := checkpoint.partitions.owners.get(tp.partition))
                else None,
            }
            for tp in sorted(consumer.assignment())
        }
        return web.json(body)

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

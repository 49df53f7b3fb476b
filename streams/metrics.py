"""The worker's figures, served on /metrics (Prometheus) and copied to ClickHouse for the boards."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sinks.clickhouse.client import ClickHouseStore
from streams.batch_fetch import FETCHES


class ClickHouseRetries(Collector):
    """The store's insert retries, read when scraped (the store counts them; it has no registry of its own)."""

    def __init__(self) -> None:
        self.store: ClickHouseStore | None = None  # the worker's, once opened (streams.app.Pipeline.start)

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "einvoice_clickhouse_retries", "Inserts that failed and are retried (backpressure)",
            value=self.store.insert_retries if self.store is not None else 0,
        )  # fmt: skip


class FetchReaders(Collector):
    """The invoice topic's fetches by who read their records: the compiled core, or aiokafka (what it left).

    Counted process-wide (``streams.batch_fetch.FETCHES``): the fetcher is aiokafka's, patched once per
    process, and knows no app.
    """

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "einvoice_fetches", "Fetches of the invoice topic, by who unpacked their records", labels=["reader"]
        )
        for reader in ("core", "aiokafka"):
            family.add_metric([reader], FETCHES[reader])
        yield family


class EvaluatorProgress(Collector):
    """Where the alert evaluator stands: exported only once this worker's evaluator has judged a day.

    A worker that is not the leader, or a new deployment without a complete day yet, exports nothing
    rather than a zero that would read as "stalled since 1970" (deploy/prometheus/rules.yml).
    """

    def __init__(self) -> None:
        self.evaluated_through: float | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.evaluated_through is not None:
            yield GaugeMetricFamily(
                "einvoice_alerts_evaluated_through_seconds",
                "End of the newest day the alert rules judged (local midnight after it), UTC epoch seconds",
                value=self.evaluated_through,
            )


class IngestMetrics:
    """One registry per app, so several apps in one process (tests) do not collide."""

    def __init__(self) -> None:
        self.metrics_registry = CollectorRegistry()
        r = self.metrics_registry
        self.events = Counter("einvoice_events", "Records read from Kafka", ["topic"], registry=r)
        self.rejected = Counter(
            "einvoice_rejected", "Records sent to the DLQ, by reason", ["topic", "reason"], registry=r
        )
        self.duplicates = Counter("einvoice_duplicates", "Invoices dropped as feed duplicates", registry=r)
        self.beyond_horizon = Counter(
            "einvoice_dedup_beyond_horizon", "Invoices older than the dedup horizon, accepted unchecked", registry=r
        )
        self.unregistered = Counter("einvoice_unregistered", "Invoices from sellers not in the registry", registry=r)
        self.rows_inserted = Counter("einvoice_rows_inserted", "Rows inserted into ClickHouse", ["table"], registry=r)
        self.skipped = Counter(
            "einvoice_replayed_skipped", "Records re-read after a restart and already written", registry=r
        )
        self.batch_seconds = Histogram(
            "einvoice_batch_seconds", "Time to process one batch, decode to insert", registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )  # fmt: skip
        self.insert_seconds = Histogram("einvoice_insert_seconds", "ClickHouse insert latency", registry=r)
        self.consumer_lag = Gauge(
            "einvoice_consumer_lag", "Records behind the partition's end", ["topic", "partition"], registry=r
        )
        self.watermark = Gauge(
            "einvoice_watermark_seconds", "Newest issue time seen, UTC epoch seconds", ["partition"], registry=r
        )
        self.fenced_blocks = Counter(
            "einvoice_fenced_blocks", "Blocks not written or dropped: another writer held the partition's chain",
            registry=r,
        )  # fmt: skip
        self.doubled_blocks = Counter(
            "einvoice_doubled_blocks",
            "Blocks found landed twice: two at one start (the read-back) or a view holding more than invoices "
            "(a restore); `einvoice-monitor verify` lists them",
            registry=r,
        )  # fmt: skip
        self.gaps_filled = Counter(
            "einvoice_offset_gaps_filled", "Records Faust did not deliver, fetched from Kafka directly", registry=r
        )
        self.alert_events = Counter("einvoice_alert_events", "Alert events the evaluator produced", registry=r)
        self.dedup_keys = Gauge("einvoice_dedup_keys", "Invoice keys held for dedup", registry=r)
        self.registry_sellers = Gauge("einvoice_registry_sellers", "Sellers in the local registry table", registry=r)
        # What Prometheus's rules (deploy/prometheus/rules.yml) need beyond the figures above:
        # process_start_time_seconds (a crash loop), readiness, the group's position read from the
        # broker itself (a stuck worker does not update it), the evaluator's progress.
        self.ready = Gauge("einvoice_worker_ready", "1 once the worker consumes (as /health: ok), else 0", registry=r)
        self.topic_end_offset = Gauge(
            "einvoice_topic_end_offset", "A partition's end (high watermark), read from the broker",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self.group_committed_offset = Gauge(
            "einvoice_group_committed_offset", "The consumer group's committed offset, read from the broker",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self.group_lag = Gauge(
            "einvoice_group_lag", "Records the group has not committed yet, read from the broker",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self.kafka_last_contact = Gauge(
            "einvoice_kafka_last_contact_seconds", "When the broker last answered this worker's probe, UTC epoch "
            "seconds (0: never)", registry=r,
        )  # fmt: skip
        self.alert_evaluation_failures = Counter(
            "einvoice_alert_evaluation_failures", "Alert evaluations that raised (retried at the next interval)",
            registry=r,
        )  # fmt: skip
        self.evaluator_progress = EvaluatorProgress()
        r.register(self.evaluator_progress)
        self.clickhouse_retries = ClickHouseRetries()
        r.register(self.clickhouse_retries)
        r.register(FetchReaders())
        ProcessCollector(registry=r)

    def snapshot(self) -> list[tuple[str, str, float]]:
        """(metric, label, value) for every sample, for the ClickHouse copy."""
        rows = []
        for family in self.metrics_registry.collect():
            for sample in family.samples:
                if sample.name.endswith(("_created", "_bucket")):
                    continue
                label = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                rows.append((sample.name, label, float(sample.value)))
        return rows

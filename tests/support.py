"""Test helpers that read real Kafka and ClickHouse state (no fakes)."""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from base.config import Settings
from deploy.kafka import free_port
from deploy.worker_process import WorkerProcess
from kafka_io import offsets
from kafka_io.topics import create_topics
from sinks.clickhouse import ClickHouseStore
from sinks.clickhouse.verify import verify_store
from sinks.dead_letter import H_SOURCE_OFFSET


def deployment_settings(kafka_bootstrap: str, directory: Path) -> Settings:
    """Settings of a deployment of its own: own topics, consumer group, chDB directory, web port."""
    run = uuid.uuid4().hex[:8]
    configured = Settings(
        data_dir=directory / "data",
        kafka_brokers=kafka_bootstrap,
        topic_prefix=f"t{run}.",
        app_id=f"einvoice-test-{run}",
        partitions=4,
        web_port=free_port(),
        session_timeout_s=6.0,
        batch_size=1000,
        metrics_interval_s=2.0,
    )
    create_topics(kafka_bootstrap, configured)
    return configured


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    return offsets.end_offsets(settings.kafka_brokers or "", topic, range(settings.partitions))


def committed_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """Where the worker's group continues each partition (its commit, else the log start)."""
    return offsets.group_positions(settings.kafka_brokers or "", settings.app_id, topic, range(settings.partitions))


def consumer_lag(settings: Settings) -> int:
    """Invoice records published and not yet committed by the worker's group (read from Kafka, not the worker)."""
    topic = settings.topics.invoices
    ends, committed = end_offsets(settings, topic), committed_offsets(settings, topic)
    return sum(ends[p] - committed[p] for p in ends)


def wait_until(condition: Callable[[], bool], timeout: float, what: str, worker: WorkerProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if worker is not None and not worker.running:
            raise AssertionError(f"worker died while waiting for {what}:\n{worker.tail()}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f"\n{worker.tail()}" if worker else ""))


def committed_total(settings: Settings) -> int:
    return sum(committed_offsets(settings, settings.topics.invoices).values())


def kill_once_past(settings: Settings, worker: WorkerProcess, target: int, jitter_s: float, timeout: float) -> None:
    """SIGKILL ``worker`` once its group has read past ``target`` records (and it has started), ``jitter_s`` later."""
    base = committed_total(settings)
    topic = settings.topics.invoices

    def read_past() -> bool:
        read = worker.metric_sum("einvoice_events_total", topic=topic)
        return read > 0 and base + read >= target

    wait_until(read_past, timeout, f"the worker to read past record {target}", worker)
    time.sleep(jitter_s)
    worker.kill()


def wait_consumed(settings: Settings, worker: WorkerProcess, timeout: float = 300.0) -> None:
    """Until the worker's group has committed the end of every invoice partition."""
    topic = settings.topics.invoices
    ends = end_offsets(settings, topic)

    def done() -> bool:
        committed = committed_offsets(settings, topic)
        return all(committed[p] >= end for p, end in ends.items())

    wait_until(done, timeout, f"the worker to commit {ends}", worker)


def read_topic(settings: Settings, topic: str) -> list[ConsumerRecord]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_brokers, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records: list[ConsumerRecord] = []
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            for batch in consumer.poll(timeout_ms=1000).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def start_worker(settings: Settings, name: str = "worker") -> WorkerProcess:
    worker = WorkerProcess(settings.to_env(), settings.data_dir / f"{name}.log", settings.web_port)
    worker.start()
    worker.wait_healthy()
    return worker


def consume_all(settings: Settings, name: str = "worker", timeout: float = 300.0) -> None:
    """Run a worker until its group has committed every invoice partition's end, then stop it."""
    worker = start_worker(settings, name=name)
    try:
        wait_consumed(settings, worker, timeout=timeout)
    finally:
        worker.stop()


def open_store(settings: Settings) -> ClickHouseStore:
    """chDB belongs to one process: open it only while no worker runs."""
    return ClickHouseStore(settings.clickhouse_dsn)


def set_dedup_window(store: ClickHouseStore, blocks: int) -> None:
    """Every deduplicating table keeps only its last ``blocks`` insert ids (the window tests: 10 against 10,000)."""
    tables = store.query_rows(
        "SELECT name FROM system.tables WHERE database = currentDatabase() "
        "AND create_table_query LIKE '%non_replicated_deduplication_window%'"
    )
    assert len(tables) >= 5, tables  # invoices, its three aggregates and the chain at least
    for (table,) in tables:
        store.call(
            store.client.command, f"ALTER TABLE {table} MODIFY SETTING non_replicated_deduplication_window = {blocks}"
        )


def expected_totals(records: list, registered_sellers: dict[str, tuple[str, str]]) -> dict[tuple, list[int]]:
    """Per (local day, vsic, unit, registered): [invoices, amount, vat], computed from what was published."""
    totals: dict[tuple, list[int]] = {}
    for record in records:
        if record.kind != "valid":
            continue
        vsic, unit = registered_sellers.get(record.seller_id, ("", ""))
        key = (record.issued_at.date(), vsic, unit, 1 if record.seller_id in registered_sellers else 0)
        row = totals.setdefault(key, [0, 0, 0])
        row[0] += 1
        row[1] += record.amount_vnd
        row[2] += record.vat_amount_vnd
    return totals


def segment_totals(store: ClickHouseStore) -> dict[tuple, list[int]]:
    rows = store.query_rows(
        "SELECT issue_date, vsic_code, admin_unit_code, registered, sum(invoices), sum(amount_vnd), "
        "sum(vat_amount_vnd) FROM segment_daily GROUP BY issue_date, vsic_code, admin_unit_code, registered"
    )
    return {(d, v, u, r): [int(n), int(a), int(t)] for d, v, u, r, n, a, t in rows}


def seller_daily_totals(store: ClickHouseStore) -> dict[tuple, list[int]]:
    rows = store.query_rows(
        "SELECT issue_date, vsic_code, admin_unit_code, registered, sum(invoices), sum(amount_vnd), "
        "sum(vat_amount_vnd) FROM seller_daily GROUP BY issue_date, vsic_code, admin_unit_code, registered"
    )
    return {(d, v, u, r): [int(n), int(a), int(t)] for d, v, u, r, n, a, t in rows}


class PublishedFeed:
    """A simulated feed as published: the ground truth the assertions count against."""

    def __init__(self, settings: Settings, sellers: int, invoices: int, seed: int, unregistered: int = 0,
                 days: int = 3, mix: Callable[[list], list] | None = None, start: dt.date = dt.date(2024, 6, 1),
                 scenarios: tuple[Path, ...] = (), hold_back: float = 0.0) -> None:  # fmt: skip
        from simulator.engine import Simulation, SimulationConfig, registry_scale
        from simulator.publish import publish_registry

        # about `sellers` businesses in the registry, `unregistered` more issuing without a registration,
        # about `invoices` valid invoices, malformed records of every kind the validator rejects;
        # `mix` turns the simulated records into what is published (other records interleaved);
        # `hold_back`: the share of the feed (its end) left for publish_rest(), e.g. after a broker restart
        sim = Simulation(
            SimulationConfig(
                scale=registry_scale(sellers), start=start, days=days, seed=seed,
                target_invoices=invoices, unregistered=unregistered, scenarios=scenarios,
            )
        )  # fmt: skip
        self.simulation = sim
        self.population = sim.population.businesses
        self.in_registry = [b for b in self.population if b.in_registry]
        self.registered = {b.seller_id: (b.vsic_code, b.admin_unit_code) for b in self.in_registry}
        self.records = list(sim.feed_records())
        publish_registry(settings.kafka_brokers or "", settings.topics.registry, sim.registrations(),
                         sim.registry_codec, sim.registry_timestamp_ms)  # fmt: skip
        self.published = mix(self.records) if mix else self.records
        self._settings = settings
        self._held = round(len(self.published) * hold_back)
        self._publish(self.published[: len(self.published) - self._held])

    def _publish(self, records: list) -> None:
        from simulator.publish import publish_invoices

        publish_invoices(self._settings.kafka_brokers or "", self._settings.topics.invoices, records)

    def publish_rest(self) -> None:
        """Publish what ``hold_back`` kept back."""
        self.publish_more(1.0)

    def publish_more(self, share: float) -> None:
        """Publish the next ``share`` of the whole feed from what ``hold_back`` kept back (at most all of it)."""
        count = min(self._held, max(1, round(len(self.published) * share)))
        if self._held:
            start = len(self.published) - self._held
            self._publish(self.published[start : start + count])
            self._held -= count

    @property
    def published_count(self) -> int:
        return len(self.published) - self._held

    @property
    def valid(self) -> list:
        return [r for r in self.records if r.kind == "valid"]

    @property
    def malformed(self) -> list:
        return [r for r in self.records if r.kind.startswith("malformed:")]


def run_cli(settings: Settings, *args: str):
    """``einvoice-monitor ARGS`` in this process, with the deployment's environment (exit code, stdout, stderr)."""
    from typer.testing import CliRunner

    from cli.main import app

    return CliRunner().invoke(app, list(args), env=settings.to_env(), catch_exceptions=False)


def chaos_full() -> bool:
    """``EINVOICE_CHAOS=full`` (``make chaos``): the full-size chaos cases; otherwise the fast ones CI runs."""
    return os.environ.get("EINVOICE_CHAOS", "").lower() == "full"


def assert_exact_accounting(settings: Settings, feed: PublishedFeed, context: object = "") -> None:
    """After a chaos case, with no worker running: nothing lost, nothing counted twice.

    Valid invoices are in ``invoices`` once each; ``segment_daily`` and ``seller_daily`` totals per
    (day, sector, unit, registered) and the issuers equal an independent count of what was published;
    the DLQ holds every malformed record exactly once (by value, and one letter per source offset).
    ``context`` (kill offsets, timings) is shown when an assertion fails.
    """
    valid = feed.valid
    store = open_store(settings)
    try:
        count, distinct = store.query_rows("SELECT count(), uniqExact(seller_id, invoice_code) FROM invoices")[0]
        assert (count, distinct) == (len(valid), len(valid)), context
        expected = expected_totals(feed.records, feed.registered)
        assert segment_totals(store) == expected, context
        assert seller_daily_totals(store) == expected, context
        issuers = store.query_rows("SELECT uniqExactMerge(issuers) FROM segment_daily")[0][0]
        assert issuers == len({r.seller_id for r in valid}), context
        receipts = store.query_rows("SELECT sum(invoices) FROM receipts_hourly")[0][0]
        assert receipts == len(valid), context
        report = store.call(verify_store, store)  # no doubled start, no view off, the chain whole
        assert report.ok, (report, context)
    finally:
        store.close()

    dlq = read_topic(settings, settings.topics.invoices_dlq)
    assert Counter(r.value for r in dlq) == Counter(r.value for r in feed.malformed), context
    assert len({(r.partition, int(dict(r.headers)[H_SOURCE_OFFSET])) for r in dlq}) == len(dlq), context

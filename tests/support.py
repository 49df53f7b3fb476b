"""Test helpers that read real Kafka and ClickHouse state (no fakes)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from deploy.kafka import free_port
from deploy.worker_process import WorkerProcess
from sinks.clickhouse import ClickHouseStore
from streams import offsets
from streams.config import Settings
from streams.topics import create_topics


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


def wait_until(condition: Callable[[], bool], timeout: float, what: str, worker: WorkerProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if worker is not None and not worker.running:
            raise AssertionError(f"worker died while waiting for {what}:\n{worker.tail()}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f"\n{worker.tail()}" if worker else ""))


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


def open_store(settings: Settings) -> ClickHouseStore:
    """chDB belongs to one process: open it only while no worker runs."""
    return ClickHouseStore(settings.clickhouse_dsn)


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
                 days: int = 3, mix: Callable[[list], list] | None = None) -> None:  # fmt: skip
        import datetime as dt

        from simulator.engine import Simulation, SimulationConfig, registry_scale
        from simulator.publish import publish_invoices, publish_registry

        # about `sellers` businesses in the registry, `unregistered` more issuing without a registration,
        # about `invoices` valid invoices, malformed records of every kind the validator rejects;
        # `mix` turns the simulated records into what is published (other records interleaved)
        sim = Simulation(
            SimulationConfig(
                scale=registry_scale(sellers), start=dt.date(2024, 6, 1), days=days, seed=seed,
                target_invoices=invoices, unregistered=unregistered,
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
        publish_invoices(settings.kafka_brokers or "", settings.topics.invoices, self.published)

    @property
    def valid(self) -> list:
        return [r for r in self.records if r.kind == "valid"]

    @property
    def malformed(self) -> list:
        return [r for r in self.records if r.kind.startswith("malformed:")]


def run_cli(settings: Settings, *args: str):
    """``einvoice-monitor ARGS`` in this process, with the deployment's environment (exit code, stdout, stderr)."""
    from typer.testing import CliRunner

    from streams.cli import app

    return CliRunner().invoke(app, list(args), env=settings.to_env(), catch_exceptions=False)

"""``einvoice-monitor demo``: the embedded default end to end, on real components.

Starts the local Kafka broker, creates the topics, publishes a simulated Thanh Hóa feed, runs
the real worker (a child process) until the feed is ingested, then reads ClickHouse (chDB).
"""

from __future__ import annotations

import datetime as dt
import shutil
import time

from rich.console import Console
from rich.table import Table

from deploy.kafka import LocalBroker, free_port
from deploy.worker_process import WorkerProcess
from simulator.feed import generate_invoices
from simulator.population import build_population
from simulator.publish import publish_invoices, publish_registry
from sinks.clickhouse import ClickHouseStore
from streams.codec import AvroCodec, SchemaRegistry
from streams.config import INVOICE_SUBJECT, REGISTRY_SUBJECT, Settings
from streams.progress import progress_bar
from streams.topics import create_topics

BY_UNIT = """
SELECT u.name, sum(s.invoices) AS invoices, uniqExactMerge(s.issuers) AS issuers, sum(s.amount_vnd) AS revenue,
       sum(s.non_cash_invoices) / sum(s.invoices) AS non_cash
FROM segment_daily AS s LEFT JOIN admin_units AS u ON u.code = s.admin_unit_code
WHERE s.registered = 1
GROUP BY u.name ORDER BY invoices DESC
"""
BY_SECTOR = """
SELECT s.vsic_code, any(c.name) AS sector, sum(s.invoices) AS invoices, uniqExactMerge(s.issuers) AS issuers,
       sum(s.amount_vnd) AS revenue, sum(s.non_cash_invoices) / sum(s.invoices) AS non_cash
FROM segment_daily AS s LEFT JOIN sectors AS c ON c.vsic_code = s.vsic_code
WHERE s.registered = 1
GROUP BY s.vsic_code ORDER BY invoices DESC
"""


def _vnd(amount: float) -> str:
    return f"{amount / 1e9:,.2f} bn"


def run_demo(settings: Settings, *, sellers: int, invoices: int, keep: bool, console: Console) -> None:
    if not keep and settings.data_dir.exists():
        LocalBroker(settings.broker_dir).stop()
        shutil.rmtree(settings.data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker = None
    if settings.kafka_brokers:
        bootstrap = settings.kafka_brokers
    else:
        broker = LocalBroker(settings.broker_dir)
        with console.status("starting Apache Kafka (KRaft) on 127.0.0.1; the first run fetches it from Maven Central"):
            bootstrap = broker.start()
        settings = settings.replace(kafka_brokers=bootstrap)
    console.print(f"[green]✓[/] Kafka broker at {bootstrap}")
    try:
        _run(settings, bootstrap, sellers, invoices, console)
    finally:
        if broker is not None:
            broker.stop()
            console.print(f"[green]✓[/] broker stopped (data kept in {settings.data_dir})")


def _run(settings: Settings, bootstrap: str, sellers: int, invoices: int, console: Console) -> None:
    created = create_topics(bootstrap, settings)
    console.print(f"[green]✓[/] topics: {', '.join(created)}")

    schemas = SchemaRegistry.load()
    population = build_population(sellers, seed=2024)
    publish_registry(bootstrap, settings.topics.registry, population, AvroCodec(schemas, REGISTRY_SUBJECT))
    records = list(
        generate_invoices(
            population, AvroCodec(schemas, INVOICE_SUBJECT), start=dt.date(2024, 6, 1), days=7, total=invoices,
            seed=2024,
        )
    )  # fmt: skip
    with progress_bar(console) as bar:
        task = bar.add_task("publishing invoices", total=len(records), rate="")
        publish_invoices(bootstrap, settings.topics.invoices, records, lambda n: bar.update(task, advance=n))
    console.print(f"[green]✓[/] published {len(population):,} registrations and {len(records):,} invoice records")

    port = free_port()
    worker = WorkerProcess(settings.to_env(), settings.data_dir / "worker.log", port)
    worker.start()
    started = time.monotonic()
    try:
        with console.status("worker starting (joins the consumer group, applies ClickHouse migrations)"):
            worker.wait_healthy()
        with progress_bar(console) as bar:
            task = bar.add_task("ingesting", total=len(records), rate="")
            done = 0.0
            while done < len(records):
                if not worker.running:
                    raise RuntimeError(f"the worker stopped; see {worker.log_path}:\n{worker.tail()}")
                done = worker.metric_sum("einvoice_events_total", topic=settings.topics.invoices)
                elapsed = time.monotonic() - started
                bar.update(task, completed=done, rate=f"{done / elapsed:,.0f} ev/s")
                time.sleep(0.3)
        metrics = worker.metrics()
    finally:
        worker.stop()
    seconds = time.monotonic() - started
    console.print(f"[green]✓[/] worker ingested {len(records):,} records in {seconds:.1f} s (incl. start-up)")

    def metric(name: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for (sample, labels), value in metrics.items():
            if sample == name:
                out[dict(labels).get("reason", "")] = out.get(dict(labels).get("reason", ""), 0) + value
        return out

    store = ClickHouseStore(settings.clickhouse_dsn)
    try:
        _print_tables(store, console)
    finally:
        store.close()
    rejected = metric("einvoice_rejected_total")
    dupes = sum(metric("einvoice_duplicates_total").values())
    console.print(
        f"Dead-letter topic {settings.topics.invoices_dlq}: {sum(rejected.values()):,.0f} records — "
        + ", ".join(f"{reason} {n:,.0f}" for reason, n in sorted(rejected.items()))
    )
    console.print(f"Feed duplicates dropped: {dupes:,.0f}. Worker log: {worker.log_path}")


def _print_tables(store: ClickHouseStore, console: Console) -> None:
    units = Table(title="Cash-register e-invoices by district (simulated week, Thanh Hóa)")
    for column in ("district", "invoices", "issuers", "revenue (VND)", "non-cash"):
        units.add_column(column, justify="left" if column == "district" else "right")
    for name, n, issuers, revenue, non_cash in store.query_rows(BY_UNIT):
        units.add_row(name, f"{n:,}", f"{issuers:,}", _vnd(revenue), f"{non_cash:.0%}")
    console.print(units)
    sectors = Table(title="By sector (VSIC 2018)")
    for column in ("VSIC", "sector", "invoices", "issuers", "revenue (VND)", "non-cash"):
        sectors.add_column(column, justify="left" if column in ("VSIC", "sector") else "right")
    for code, name, n, issuers, revenue, non_cash in store.query_rows(BY_SECTOR):
        sectors.add_row(code, name, f"{n:,}", f"{issuers:,}", _vnd(revenue), f"{non_cash:.0%}")
    console.print(sectors)

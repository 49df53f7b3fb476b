"""``einvoice-monitor demo``: the embedded default end to end, on real components.

Starts the local Kafka broker, creates the topics, publishes a simulated Thanh Hóa feed (four
weeks of June 2024 with the drop of ``scenarios/demo.yaml``), runs the real worker (a child
process) until the feed is ingested, then reads ClickHouse (chDB).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path

import yaml
from rich.console import Console

from alerts.rules import DEFAULT_RULES
from analytics.report import adoption_table, period_report
from base.config import Settings
from base.tables import NO_COMPARISON, Field, FittedTable
from cli.progress import progress_bar
from deploy.kafka import LocalBroker, free_port
from deploy.worker_process import WorkerProcess
from harness.webhook_receiver import demo_receiver
from kafka_io.topics import create_topics
from simulator.archive import GROUND_TRUTH, write_ground_truth
from simulator.engine import Simulation, SimulationConfig, registry_scale
from simulator.publish import publish_simulation
from simulator.scenarios import load_scenario
from sinks.clickhouse import ClickHouseStore

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
SEGMENT_BY_WEEK = """
SELECT toMonday(issue_date) AS week, uniqExactMerge(issuers) AS issuers, sum(invoices) AS invoices
FROM segment_daily
WHERE registered = 1 AND vsic_code = {vsic:String} AND admin_unit_code = {unit:String}
GROUP BY week ORDER BY week
"""
DEMO_SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "demo.yaml"


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

    # the simulator's feed: `sellers` businesses, about `invoices` valid invoices over the scenario's window
    scenario = load_scenario(DEMO_SCENARIO)
    config = SimulationConfig(
        scale=registry_scale(sellers), start=scenario.run["start"], days=scenario.run["days"], seed=2024,
        target_invoices=invoices, scenarios=(DEMO_SCENARIO,),
    )  # fmt: skip
    sim = Simulation(config, [scenario])
    with progress_bar(console) as bar:
        task = bar.add_task("publishing invoices", total=sim.expected_records(), rate="")
        registered, total = publish_simulation(
            sim, bootstrap, settings.topics.registry, settings.topics.invoices,
            on_progress=lambda n: bar.update(task, advance=n),
        )  # fmt: skip
        bar.update(task, completed=total, total=total)
    truth = write_ground_truth(sim, settings.data_dir / GROUND_TRUTH)
    console.print(
        f"[green]✓[/] published {registered:,} registrations and {total:,} invoice records "
        f"({config.days} days from {config.start}; ground truth in {settings.data_dir / GROUND_TRUTH})"
    )

    # fast evaluation for the demo: the same rules, looked at every second instead of every 30
    rules = yaml.safe_load(DEFAULT_RULES.read_text(encoding="utf-8"))
    rules["evaluation"]["interval_s"] = 1
    rules_file = settings.data_dir / "rules.demo.yaml"
    rules_file.write_text(yaml.safe_dump(rules, allow_unicode=True), encoding="utf-8")
    settings = settings.replace(rules_file=rules_file, web_port=free_port())
    # the last issue day ends near midnight; 48 h of allowed lateness leave the day three before it complete
    newest_complete = (config.start + dt.timedelta(days=config.days - 4)).isoformat()

    def echo(line: str) -> None:
        console.print(f"[cyan]webhook receiver[/] {line}")

    with demo_receiver(settings.data_dir, echo=echo) as (receiver, webhook_env):
        worker = WorkerProcess(
            {**settings.to_env(), **webhook_env}, settings.data_dir / "worker.log", settings.web_port
        )
        worker.start()
        started = time.monotonic()
        try:
            with console.status("worker starting (joins the consumer group, applies ClickHouse migrations)"):
                worker.wait_healthy()
            with progress_bar(console) as bar:
                task = bar.add_task("ingesting", total=total, rate="")
                done = 0.0
                while done < total:
                    _check(worker)
                    done = worker.metric_sum("einvoice_events_total", topic=settings.topics.invoices)
                    elapsed = time.monotonic() - started
                    bar.update(task, completed=done, rate=f"{done / elapsed:,.0f} ev/s")
                    time.sleep(0.3)
            ingest_seconds = time.monotonic() - started
            with console.status("the leader evaluates each complete day and sends the alerts to the webhook"):
                deadline = time.monotonic() + 300
                while worker.evaluated_day() != newest_complete and time.monotonic() < deadline:
                    _check(worker)
                    time.sleep(0.5)
                sent = worker.metric_sum("einvoice_alert_events_total")
                while len(receiver.accepted()) < min(sent, 1) and time.monotonic() < deadline:
                    time.sleep(0.5)
                time.sleep(3)  # the last deliveries
            metrics = worker.metrics()
        finally:
            worker.stop()
    console.print(f"[green]✓[/] worker ingested {total:,} records in {ingest_seconds:.1f} s (incl. start-up)")

    def metric(name: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for (sample, labels), value in metrics.items():
            if sample == name:
                out[dict(labels).get("reason", "")] = out.get(dict(labels).get("reason", ""), 0) + value
        return out

    store = ClickHouseStore(settings.clickhouse_dsn)
    try:
        _print_tables(store, console)
        _print_scenario(store, truth, console)
        _print_adoption(store, dt.date.fromisoformat(newest_complete), console)
        _print_alerts(store, console)
        report = _write_report(store, config.start, dt.date.fromisoformat(newest_complete), settings.data_dir, console)
    finally:
        store.close()
    rejected = metric("einvoice_rejected_total")
    dupes = sum(metric("einvoice_duplicates_total").values())
    console.print(
        f"Dead-letter topic {settings.topics.invoices_dlq}: {sum(rejected.values()):,.0f} records — "
        + ", ".join(f"{reason} {n:,.0f}" for reason, n in sorted(rejected.items()))
    )
    console.print(f"Feed duplicates dropped: {dupes:,.0f}. Worker log: {worker.log_path}")
    verified = sum(1 for r in receiver.accepted() if r.verified)
    console.print(f"Webhook receiver: {len(receiver.accepted())} deliveries, {verified} with a valid signature.")
    console.print(f"[bold]Offline report (the boards without Grafana):[/] {report}")
    console.print(
        f"Next: EINVOICE_DATA_DIR={settings.data_dir} einvoice-monitor report --from {config.start} "
        f"--to {newest_complete} --sort change   (or: alerts list)"
    )


def _write_report(store: ClickHouseStore, first: dt.date, last: dt.date, data_dir: Path, console: Console) -> Path:
    """The html page and the png charts of `einvoice-monitor report`, for the demo's four weeks."""
    from boards.offline import collect, default_path, write_html, write_png

    with console.status("drawing the offline report (the boards' queries, matplotlib)"):
        data = collect(store, first, last)
        page = write_html(data, default_path(data_dir / "reports", data, "html"))
        charts = default_path(data_dir / "reports", data, "png")
        images = write_png(data, charts)
    console.print(f"[green]✓[/] report: {page} and {len(images)} charts in {charts}")
    return page


def _check(worker: WorkerProcess) -> None:
    if not worker.running:
        raise RuntimeError(f"the worker stopped; see {worker.log_path}:\n{worker.tail()}")


def _print_adoption(store: ClickHouseStore, day: dt.date, console: Console) -> None:
    """The adoption table on the newest complete day: the segments that fell most first."""
    rows = period_report(store, day - dt.timedelta(days=6), day, sort="change")
    title = f"Adoption (7-day active / eligible), week to {day}; Δ pt against the week before, largest falls first"
    console.print(adoption_table(title, [r for r in rows if r.eligible >= 15][:12], rate_format=".0%",
                                 with_non_cash=False))  # fmt: skip


def _print_alerts(store: ClickHouseStore, console: Console) -> None:
    rows = store.query_rows(
        "SELECT day, type, rule, labels, values, suppressed_by FROM alert_events FINAL "
        "WHERE rule != 'pipeline_lag' ORDER BY day, rule, type"
    )
    console.print(alerts_table(rows))


def _baseline(baseline: float | None, spec: str) -> str:
    """A baseline in an alert's detail; "—" for none (the rules only fire with one, but say so if not)."""
    return NO_COMPARISON if baseline is None else format(baseline, spec)


def alerts_table(rows: list[tuple]) -> FittedTable:
    """The alert events (day, type, rule, labels, values as JSON, suppressed_by), the detail in words."""
    fields = [Field("day"), Field("type"), Field("rule"), Field("sector"), Field("unit"), Field("detail", wrap=True)]
    table = FittedTable("Alerts that fired (and resolved) on the demo's scenario", fields)
    for day, kind, rule, labels, values, suppressed in rows:
        detail = json.loads(values)
        if rule == "dormant_issuer":
            text = f"{detail['count']} silent: " + ", ".join(s["seller_id"] for s in detail["sellers"][:4])
        elif rule == "adoption_drop":
            text = f"issuing share {detail['issuing_share']:.0%} vs {_baseline(detail.get('baseline_share'), '.0%')}"
        elif rule == "volume_drop":
            text = f"{detail['invoices']:,} invoices vs {_baseline(detail.get('baseline_invoices'), ',.0f')}"
        else:
            text = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in detail.items())
        if suppressed:
            text += f" (not sent: {suppressed.split(':')[0]})"
        table.add_row(str(day), kind, rule, labels.get("sector", ""), labels.get("unit", ""), text)
    return table


def _print_tables(store: ClickHouseStore, console: Console) -> None:
    console.print(units_table(store.query_rows(BY_UNIT)))
    console.print(sectors_table(store.query_rows(BY_SECTOR)))


def units_table(rows: list[tuple]) -> FittedTable:
    """Invoices, issuers, revenue and non-cash share per district (rows of ``BY_UNIT``)."""
    fields = [Field("district", wrap=True), Field("invoices", "right"), Field("issuers", "right"),
              Field("revenue VND", "right"), Field("non-cash", "right")]  # fmt: skip
    table = FittedTable("Cash-register e-invoices by district (simulated, Thanh Hóa, June 2024)", fields)
    for name, n, issuers, revenue, non_cash in rows:
        table.add_row(name, f"{n:,}", f"{issuers:,}", _vnd(revenue), f"{non_cash:.0%}")
    return table


def sectors_table(rows: list[tuple]) -> FittedTable:
    """The same per VSIC sector, with its name (rows of ``BY_SECTOR``)."""
    fields = [Field("VSIC"), Field("sector", wrap=True), Field("invoices", "right"), Field("issuers", "right"),
              Field("revenue VND", "right"), Field("non-cash", "right")]  # fmt: skip
    table = FittedTable("By sector (VSIC 2018)", fields)
    for code, name, n, issuers, revenue, non_cash in rows:
        table.add_row(code, name, f"{n:,}", f"{issuers:,}", _vnd(revenue), f"{non_cash:.0%}")
    return table


def _print_scenario(store: ClickHouseStore, truth: dict, console: Console) -> None:
    """The injected drop, week by week: what the alert rules are there to catch."""
    for change in truth["changes"]:
        if change["kind"] != "sector_drop":
            continue
        details = change["details"]
        for segment in change["segments"]:
            title = (
                f"Scenario: {details['stopped']} of {details['issuers_before']} issuers of VSIC "
                f"{segment['vsic_code']} in unit {segment['admin_unit_code']} stop from {change['from']}"
            )
            params = {"vsic": segment["vsic_code"], "unit": segment["admin_unit_code"]}
            console.print(scenario_table(title, store.query_rows(SEGMENT_BY_WEEK, params)))


def scenario_table(title: str, rows: list[tuple]) -> FittedTable:
    """A segment's issuers and invoices week by week (rows of ``SEGMENT_BY_WEEK``)."""
    table = FittedTable(title, [Field("week of"), Field("issuers", "right"), Field("invoices", "right")])
    for week, issuers, n in rows:
        table.add_row(str(week), f"{issuers:,}", f"{n:,}")
    return table

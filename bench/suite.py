"""The benchmark table of the README: every measurement side by side, one broker, one simulated feed.

    .venv/bin/python bench/suite.py            # full: scale 1.0 (the whole Thanh Hóa registry), 4 days
    .venv/bin/python bench/suite.py --quick    # smoke run: scale 0.05, 4 days, short latency run

Run from the repository root. One local Kafka broker (or KAFKA_BROKERS) for everything; the main
feed (the simulator at ``--scale`` over ``--days`` days: 2% duplicates, 1% malformed) is published
once and read by:

1. the pipeline, one ``einvoice-monitor worker`` on embedded chDB, then two workers sharing one
   chDB behind the loopback ClickHouse HTTP endpoint (``harness/chdb_http.py``), each run with a
   consumer group and store of its own (bench/ingest.py ``run_workers``);
2. a bare aiokafka loop (no group, every partition assigned, ``getmany`` in batches) that only
   Avro-decodes, the Python limit of this machine;
3. ClickHouse alone: the rows the one worker stored, read back and inserted into a fresh chDB in
   batches of ``batch_size`` through ``InvoiceSink`` (same settings and dedup tokens);
4. the fence's cost: one worker with ``EINVOICE_FENCE=off`` and with it on, alternately
   (``--fence-pairs`` pairs, medians compared: the machine's noise is larger than the cost);
6. the one-worker run's peak RSS (process tree, sampled every 50 ms) and its dedup key count: at
   scale 1.0 over 4 days the dedup holds its full 3-day horizon.

On their own deployments of the same broker: 4. publish-to-visible latency at a steady rate
(the main feed's first records, paced); 5. alert latency (a sector drop, from the record that
completes the firing day to the webhook at a loopback receiver); 7. replay and archive rates
(bench/replay.py ``measure_replay``, same scale and seed); 8. rejected records against valid ones
(bench/rejections.py ``measure_rejections``: a valid feed and the same feed all rejected, drained by
one worker each, and the latency of a half-rejected feed). Prints one table; writes every number
to bench/results/suite.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Run as a script, bench/ is first on sys.path and bench/replay.py would hide the replay package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka import KafkaAdminClient
from scratch import machine, scratch_deployment

from alerts.rules import DEFAULT_RULES
from base.config import INVOICE_SUBJECT, Settings
from base.localtime import DAY_MS
from bench.ingest import print_result, run_workers, write_result
from bench.replay import measure_replay
from contracts.codec import AvroCodec, DecodeError, SchemaCatalog
from deploy.kafka import free_port
from deploy.worker_process import WorkerProcess
from harness.chdb_http import ChdbHttpServer
from harness.webhook_receiver import demo_receiver
from kafka_io.offsets import end_offsets, group_positions
from kafka_io.publish import MAX_BATCH_BYTES, partition_for
from kafka_io.topics import create_topics
from simulator.engine import Simulation, SimulationConfig
from simulator.feed import FeedRecord
from simulator.publish import publish_feed, publish_invoices, publish_registry
from sinks.clickhouse import ClickHouseStore, InvoiceSink, apply_migrations
from sinks.clickhouse.client import connect
from sinks.clickhouse.invoice_sink import INVOICE_COLUMNS

START = dt.date(2024, 6, 3)  # a Monday
GIB = 2**30


@dataclass(frozen=True)
class Plan:
    """The parameters of a run (written to the JSON)."""

    scale: float = 1.0
    days: int = 4
    seed: int = 1
    partitions: int = 4
    batch_size: int = Settings.batch_size
    latency_rate: int = 10_000
    latency_seconds: float = 30.0
    clickhouse_rows: int = 2_000_000
    replay_scale: float = 0.5
    replay_days: int = 1
    fence_pairs: int = 2
    rejection_events: int = 400_000  # records a feed of bench/rejections.py
    skip: tuple[str, ...] = ()
    keep: bool = False  # the scratch directory, after the run

    def config(self) -> SimulationConfig:
        return SimulationConfig(scale=self.scale, start=START, days=self.days, seed=self.seed)


QUICK = {"scale": 0.05, "latency_seconds": 10.0, "replay_scale": 0.05, "rejection_events": 60_000}
STEPS = ("one", "reference", "fence", "bare", "clickhouse", "two", "latency", "rejections", "alert", "replay")


def deployment(base: Settings, name: str, same_topics: bool = False) -> Settings:
    """Another deployment on the same broker: own group, data directory, web port and (unless same) topics."""
    own = base.replace(
        topic_prefix=base.topic_prefix if same_topics else f"{name}.{base.topic_prefix}",
        app_id=f"{base.app_id}-{name}", data_dir=base.data_dir.parent / name, web_port=free_port(),
    )  # fmt: skip
    create_topics(own.kafka_brokers or "", own)
    return own


def fence_overhead(base: Settings, total: int, pairs: int) -> dict[str, object]:
    """One worker unfenced then fenced, ``pairs`` times, each on a group and store of its own."""
    runs: dict[str, list[float]] = {"off": [], "on": []}
    for i in range(pairs):
        for fence in ("off", "on"):
            own = deployment(base, f"fence-{fence}-{i}", True).replace(fence=fence)
            runs[fence].append(run_workers(own, total, 1, "embedded")["events_per_s"])  # type: ignore[arg-type]
    on, off = float(np.median(runs["on"])), float(np.median(runs["off"]))
    return {"fenced_events_per_s": runs["on"], "unfenced_events_per_s": runs["off"],
            "events_per_s": round(on), "overhead": round(1 - on / off, 4)}  # fmt: skip


# -- 2. the Python limit ------------------------------------------------------------------------------------------
async def _bare_consume(bootstrap: str, topic: str, partitions: int, max_records: int) -> dict[str, object]:
    codec = AvroCodec(SchemaCatalog.load(), INVOICE_SUBJECT)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        begins, ends = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        total = sum(ends[tp] - begins[tp] for tp in tps)
        read = decoded = malformed = 0
        started = time.perf_counter()
        while read < total:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=max_records)
            for records in fetched.values():
                for record in records:
                    try:
                        codec.decode(record.value)
                        decoded += 1
                    except DecodeError:
                        malformed += 1
            read += sum(len(records) for records in fetched.values())
        seconds = time.perf_counter() - started
    finally:
        await consumer.stop()
    return {"events": read, "decoded": decoded, "malformed": malformed, "seconds": round(seconds, 2),
            "events_per_s": round(read / seconds), "max_records": max_records}  # fmt: skip


def bare_limit(settings: Settings) -> dict[str, object]:
    """Read and Avro-decode every invoice record, nothing else: the ceiling of a Python consumer here."""
    topic = settings.topics.invoices
    return asyncio.run(_bare_consume(settings.kafka_brokers or "", topic, settings.partitions, settings.batch_size))


# -- 3. ClickHouse alone ------------------------------------------------------------------------------------------
def clickhouse_alone(source: Path, target: Path, topic: str, batch_size: int, limit: int) -> dict[str, object]:
    """The stored rows, read back (untimed) through a loopback endpoint, inserted into ``target`` in batches.

    This process opens chDB once (``target``); the source is served by a child (``ChdbHttpServer``).
    Timed: each ``InvoiceSink.flush`` (rows to columns, the insert with its dedup token and settings).
    """
    columns = ", ".join(INVOICE_COLUMNS)
    partition, offset = INVOICE_COLUMNS.index("kafka_partition"), INVOICE_COLUMNS.index("kafka_offset")
    store = ClickHouseStore(f"chdb://{target}")
    loop = asyncio.new_event_loop()
    rows = batches = 0
    flush_s = insert_s = 0.0
    try:
        store.call(apply_migrations, store.client)
        sink = InvoiceSink(store, topic)

        def flush() -> None:
            nonlocal flush_s, insert_s, batches
            started = time.perf_counter()
            written = loop.run_until_complete(sink.flush())
            flush_s += time.perf_counter() - started
            insert_s += sum(w.seconds for w in written)
            batches += 1

        with ChdbHttpServer(source) as dsn:
            reader = connect(dsn)
            query = f"SELECT {columns} FROM invoices ORDER BY kafka_partition, kafka_offset LIMIT {int(limit)}"
            with reader.query_row_block_stream(query) as stream:
                pending = 0
                for block in stream:
                    for row in block:
                        sink.add(row[partition], row[offset], tuple(row))
                        rows += 1
                        pending += 1
                        if pending == batch_size:
                            flush()
                            pending = 0
                if pending:
                    flush()
            reader.close()
        stored = store.query_rows("SELECT count() FROM invoices")[0][0]
    finally:
        loop.close()
        store.close()
    return {"rows": rows, "rows_stored": int(stored), "batches": batches, "batch_size": batch_size,
            "seconds": round(flush_s, 2), "rows_per_s": round(rows / max(flush_s, 1e-9)),
            "insert_only_rows_per_s": round(rows / max(insert_s, 1e-9)),
            "method": "rows SELECTed back from the 1-worker store (ordered by partition, offset), InvoiceSink.add "
                      "+ flush per batch into a fresh chDB with the migrations applied; timed: flush (rows/s) and "
                      "the client insert inside it (insert_only_rows_per_s)"}  # fmt: skip


# -- 4. publish-to-visible latency --------------------------------------------------------------------------------
class Visibility(threading.Thread):
    """Every ``interval`` s: the newest visible offset per partition, when the answer arrived, how long it took.

    ``dsn``: ask the store (max(kafka_offset) per partition); ``None``: ask Kafka for the group's
    committed offsets (the worker commits right after each insert returns: visible, then committed).
    """

    def __init__(self, settings: Settings, dsn: str | None, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.settings, self.dsn, self.interval = settings, dsn, interval
        self.samples: list[tuple[float, list[int]]] = []
        self.query_s: list[float] = []
        self.stop = threading.Event()

    def probe(self) -> Callable[[], list[tuple[int, int]]]:
        topic = self.settings.topics.invoices
        if self.dsn:
            client = connect(self.dsn)
            sql = "SELECT kafka_partition, max(kafka_offset) FROM invoices WHERE kafka_topic = {t:String} GROUP BY 1"
            return lambda: client.query(sql, parameters={"t": topic}).result_rows
        admin = KafkaAdminClient(bootstrap_servers=self.settings.kafka_brokers, client_id="bench-latency")
        group = self.settings.app_id
        return lambda: [
            (tp.partition, meta.offset - 1)
            for tp, meta in admin.list_group_offsets(group).get(group, {}).items()
            if tp.topic == topic and meta.offset >= 0
        ]

    def run(self) -> None:
        probe = self.probe()
        while not self.stop.is_set():
            asked = time.perf_counter()
            newest = [-1] * self.settings.partitions
            for p, o in probe():
                newest[int(p)] = int(o)
            self.samples.append((time.perf_counter(), newest))
            self.query_s.append(self.samples[-1][0] - asked)
            time.sleep(self.interval)


def wait_committed(settings: Settings, worker: WorkerProcess, timeout: float = 300.0) -> None:
    """Until the worker's group has committed the end of every invoice partition."""
    bootstrap, topic, partitions = settings.kafka_brokers or "", settings.topics.invoices, range(settings.partitions)
    ends = end_offsets(bootstrap, topic, partitions)
    deadline = time.monotonic() + timeout
    while any(group_positions(bootstrap, settings.app_id, topic, partitions)[p] < ends[p] for p in ends):
        if time.monotonic() > deadline or not worker.running:
            raise TimeoutError(f"the worker did not commit {ends}:\n{worker.tail()}")
        time.sleep(0.1)


async def _paced_publish(
    bootstrap: str, topic: str, records: list[FeedRecord], rate: float, partitions: int
) -> list[tuple[int, int, int, float]]:
    """Records at ``rate``/s in 10 ms slices, a batch per partition and slice: (partition, base offset, count, sent)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                max_batch_size=MAX_BATCH_BYTES, compression_type="lz4")  # fmt: skip
    await producer.start()
    pending: list[tuple[int, asyncio.Future, int, float]] = []
    try:
        started = time.perf_counter()
        sent = 0
        while sent < len(records):
            due = min(len(records), int((time.perf_counter() - started) * rate) + 1)
            by_partition: dict[int, list[FeedRecord]] = {}
            for record in records[sent:due]:
                by_partition.setdefault(partition_for(record.key, partitions), []).append(record)
            for partition, part in by_partition.items():
                batch, count = producer.create_batch(), 0
                for record in part:
                    if batch.append(key=record.key, value=record.value, timestamp=record.timestamp_ms) is None:
                        batch.close()
                        pending.append((partition, await producer.send_batch(batch, topic, partition=partition),
                                        count, time.perf_counter()))  # fmt: skip
                        batch, count = producer.create_batch(), 0
                        batch.append(key=record.key, value=record.value, timestamp=record.timestamp_ms)
                    count += 1
                batch.close()
                stamp = time.perf_counter()
                pending.append((partition, await producer.send_batch(batch, topic, partition=partition), count, stamp))
            sent = due
            await asyncio.sleep(max(0.0, started + sent / rate - time.perf_counter()) or 0.01)
        return [(p, (await future).offset, count, stamp) for p, future, count, stamp in pending]
    finally:
        await producer.stop()


def latencies(sends: list[tuple[int, int, int, float]], samples: list[tuple[float, list[int]]]) -> np.ndarray:
    """Per record: the first sample whose partition's newest stored offset reaches it, minus its send time.

    Malformed and duplicate records never become rows: they count as visible with the next stored
    record of their partition (its batch carried them). Records never reached are left out (NaN).
    """
    times = np.array([t for t, _ in samples])
    out = []
    for partition, base, count, stamp in sends:
        newest = np.maximum.accumulate(np.array([s[partition] for _, s in samples]))
        offsets = base + np.arange(count)
        index = np.searchsorted(newest, offsets, side="left")
        seen = np.where(index < len(times), times[np.minimum(index, len(times) - 1)], np.nan)
        out.append(seen - stamp)
    return np.concatenate(out) if out else np.array([])


def visibility_latency(
    base: Settings, plan: Plan, via: str, name: str = "", alter: Callable[[list[FeedRecord]], list[FeedRecord]] = list
) -> dict[str, object]:
    """One worker on an empty topic, then a steady publish; visibility per record from ``via``.

    "store": the worker writes to a ChdbHttpServer (a shared store) that this process polls;
    "commits": the worker's own embedded chDB (the one-worker deployment), its commits polled.
    ``alter``: what becomes of the main feed's first records before they are published (bench/rejections.py).
    """
    settings = deployment(base, f"latency-{via}{name}")
    bootstrap, topic = settings.kafka_brokers or "", settings.topics.invoices
    sim = Simulation(plan.config())
    publish_registry(bootstrap, settings.topics.registry, sim.registrations(), sim.registry_codec)
    warm = plan.latency_rate  # one second's worth, first and all at once: see below
    records = alter(list(itertools.islice(sim.feed_records(), warm + int(plan.latency_rate * plan.latency_seconds))))
    endpoint = ChdbHttpServer(settings.data_dir / "clickhouse-http") if via == "store" else None
    with endpoint or contextlib.nullcontext():
        own = settings.replace(clickhouse_url=endpoint.dsn) if endpoint else settings
        worker = WorkerProcess(own.to_env(), settings.data_dir / "worker.log", settings.web_port)
        worker.start()
        try:
            worker.wait_healthy()
            deadline = time.monotonic() + 60
            while len((worker.get_json("/health") or {}).get("partitions", [])) < settings.partitions:  # type: ignore[union-attr]
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the worker was not assigned every partition:\n{worker.tail()}")
                time.sleep(0.2)
            # A partition's state (registry, dedup keys) is loaded on its first records: at scale 1.0 that
            # stalls the first batch for tens of seconds. Warm-up records take that first; timed apart.
            started = time.perf_counter()
            publish_invoices(bootstrap, topic, records[:warm])
            wait_committed(settings, worker)
            warmup_s = time.perf_counter() - started
            sampler = Visibility(settings, endpoint.dsn if endpoint else None)
            sampler.start()
            started = time.perf_counter()
            paced = records[warm:]
            sends = asyncio.run(_paced_publish(bootstrap, topic, paced, plan.latency_rate, settings.partitions))
            publish_s = time.perf_counter() - started
            wait_committed(settings, worker)  # until the newest stored rows settle
            time.sleep(0.2)
            sampler.stop.set()
            sampler.join()
        finally:
            worker.stop()
    assert sum(count for _, _, count, _ in sends) == len(paced)
    lat = latencies(sends, sampler.samples)
    seen = lat[~np.isnan(lat)]
    gaps = np.diff([t for t, _ in sampler.samples])
    observed = (
        "one worker writing to a ChdbHttpServer (shared store) so the bench can look; a thread polls "
        "max(kafka_offset) per partition (each poll queues with the worker's inserts on the endpoint's one thread)"
        if via == "store" else
        "one worker on its own embedded chDB (the one-worker deployment); a thread polls the group's committed "
        "offsets (the worker commits right after each insert returns: a record counts when its offset is committed)"
    )  # fmt: skip
    return {
        "via": via, "records": len(paced), "rate_target": plan.latency_rate,
        "rate_achieved": round(len(paced) / publish_s), "publish_s": round(publish_s, 2),
        "warmup_records": warm, "warmup_s": round(warmup_s, 2),
        "records_matched": len(seen), "p50_s": round(float(np.percentile(seen, 50)), 3),
        "p99_s": round(float(np.percentile(seen, 99)), 3), "max_s": round(float(seen.max()), 3),
        "poll_interval_s_median": round(float(np.median(gaps)), 3),
        "poll_query_s_median": round(float(np.median(sampler.query_s)), 4),
        "method": f"{observed}, every 50 ms; after a warm-up (the first {warm:,} records at once, until committed: "
                  "each partition's state loads on its first records, warmup_s), this process sends paced batches "
                  "(10 ms slices, one per partition; the records keep their simulated CreateTime, which the "
                  "validator needs) and notes each batch's send "
                  "time and base offset; a record's latency = the first poll answer reaching its offset - its send "
                  "time (an upper bound by one poll interval)",
    }  # fmt: skip


# -- 5. alert latency ---------------------------------------------------------------------------------------------
# ------------------------------------------------------------- rejected records (bench/rejections.py)

LATE_MS = 400 * DAY_MS  # far past the lateness limit (72 h by default), and still in the past: Kafka takes it


def too_late(record: FeedRecord) -> FeedRecord:
    """The record as if the feed had received it 400 days after it did: rejected as ``issued_too_old``."""
    return record._replace(timestamp_ms=record.timestamp_ms + LATE_MS)


def half_too_late(records: list[FeedRecord]) -> list[FeedRecord]:
    """Every other record moved by :func:`too_late`: a feed half rejected."""
    return [too_late(r) if i % 2 else r for i, r in enumerate(records)]


def all_too_late(records: list[FeedRecord]) -> list[FeedRecord]:
    """Every record moved by :func:`too_late`: a feed all rejected."""
    return [too_late(r) for r in records]


def drain(base: Settings, name: str, sim: Simulation, records: list[FeedRecord]) -> dict[str, object]:
    """The records published to topics of their own, then drained by one worker; with what reached the DLQ."""
    settings = deployment(base, name)
    bootstrap = settings.kafka_brokers or ""
    publish_registry(bootstrap, settings.topics.registry, sim.registrations(), sim.registry_codec,
                     sim.registry_timestamp_ms)  # fmt: skip
    publish_invoices(bootstrap, settings.topics.invoices, records)
    result = run_workers(settings, len(records), 1, "embedded")
    partitions = range(settings.partitions)
    result["dead_letters"] = sum(end_offsets(bootstrap, settings.topics.invoices_dlq, partitions).values())
    return result


def measure_rejections(base: Settings, plan: Plan, events: int, baseline: bool = False) -> dict[str, Any]:
    """(a), (b) and (c) of the module's docstring, on ``base``'s broker.

    ``baseline``: (c) also on the main feed unaltered, just before (bench/suite.py has it as its own step).
    """
    sim = Simulation(plan.config())
    valid: list[FeedRecord] = []
    for record in sim.feed_records():
        if record.kind == "valid":
            valid.append(record)
            if len(valid) == events:
                break
    rejected = [too_late(r) for r in valid]
    result: dict[str, Any] = {"events": len(valid)}
    result["valid"] = drain(base, "valid", sim, valid)
    result["rejected"] = drain(base, "too-late", sim, rejected)
    assert result["rejected"]["dead_letters"] == len(rejected), "not every record was dead-lettered"
    assert result["valid"]["dead_letters"] == 0, "a valid record was dead-lettered"
    ratio = result["rejected"]["events_per_s"] / result["valid"]["events_per_s"]
    result["ratio_rejected_to_valid"] = round(ratio, 3)
    if baseline:
        result["latency_valid"] = visibility_latency(base, plan, "commits", "-as-published")
    result["latency_half_rejected"] = visibility_latency(base, plan, "commits", "-half-rejected", half_too_late)
    result["latency_all_rejected"] = visibility_latency(base, plan, "commits", "-all-rejected", all_too_late)
    result["method"] = (
        f"(a) the simulator's first {len(valid):,} valid records, (b) the same with every Kafka timestamp "
        f"+{LATE_MS // DAY_MS} days (all issued_too_old), each published to topics of its own and drained by one "
        "worker (bench/ingest.py run_workers: default settings, compiled core, embedded chDB), measured from the "
        "first processed batch to the group's commit of the end; (c) bench/suite.py visibility_latency (commits "
        "polled) on the main feed with every other record moved the same way, and (d) with every record moved"
    )
    return result


DROP = dt.date(2024, 6, 17)
SCENARIO = {
    "name": "bench: restaurants of the city stop issuing",
    "changes": [{"kind": "sector_drop", "vsic_code": "5610", "admin_unit_code": "380", "share": 0.6,
                 "from": DROP.isoformat()}],
}  # fmt: skip


def alert_latency(base: Settings, interval_s: float = 1.0) -> dict[str, object]:
    """From the record that completes the firing day (the watermark passes its end) to the webhook.

    The feed up to that record is ingested and evaluated first; then that one record is published
    and the clock runs until the loopback receiver has the ``adoption_drop`` firing.
    """
    settings = deployment(base, "alert")
    bootstrap, topic = settings.kafka_brokers or "", settings.topics.invoices
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    rules = yaml.safe_load(DEFAULT_RULES.read_text(encoding="utf-8"))
    rules["evaluation"]["interval_s"] = interval_s
    settings = settings.replace(rules_file=settings.data_dir / "rules.yaml")
    settings.rules_file.write_text(yaml.safe_dump(rules), encoding="utf-8")  # type: ignore[union-attr]
    scenario = settings.data_dir / "scenario.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO, allow_unicode=True), encoding="utf-8")
    lateness = dt.timedelta(hours=rules["evaluation"]["allowed_lateness_hours"])
    firing_day = DROP + dt.timedelta(days=rules["adoption_drop"]["for"] - 1)  # the drop's `for`-th day
    complete_at = dt.datetime.combine(firing_day + dt.timedelta(days=1), dt.time()) + lateness
    days = (complete_at.date() - START).days + 1
    sim = Simulation(SimulationConfig(scale=0.025, start=START, days=days, seed=11, volume=0.1,
                                      scenarios=(scenario,)))  # fmt: skip
    publish_registry(bootstrap, settings.topics.registry, sim.registrations(), sim.registry_codec,
                     sim.registry_timestamp_ms)  # fmt: skip
    records = list(sim.feed_records())
    cut = next(i for i, r in enumerate(records) if r.kind == "valid" and r.issued_at >= complete_at)
    publish_invoices(bootstrap, topic, records[:cut])
    with demo_receiver(settings.data_dir, echo=lambda line: None) as (receiver, webhook_env):
        worker = WorkerProcess({**settings.to_env(), **webhook_env}, settings.data_dir / "worker.log",
                               settings.web_port)  # fmt: skip
        worker.start()
        try:
            worker.wait_healthy()
            before = (firing_day - dt.timedelta(days=1)).isoformat()
            deadline = time.monotonic() + 300
            while (worker.evaluated_day() or "") < before:
                if time.monotonic() > deadline or not worker.running:
                    raise TimeoutError(f"evaluation did not reach {before}:\n{worker.tail()}")
                time.sleep(0.2)

            def firings() -> list:
                return [r for r in receiver.accepted() if isinstance(r.payload, dict)
                        and r.payload.get("type") == "firing"
                        and (r.payload.get("alert") or {}).get("rule") == "adoption_drop"]  # fmt: skip

            early = len(firings())
            publish_invoices(bootstrap, topic, records[cut : cut + 1])
            published = time.time()
            while not firings() and time.time() - published < 120 and worker.running:
                time.sleep(0.01)
            got = firings()
        finally:
            worker.stop()
    alert = (got[0].payload.get("alert") or {}) if got else {}
    return {
        "seconds": round(got[0].at - published, 3) if got else None,
        "firing_day": firing_day.isoformat(), "alert_day": alert.get("day"),
        "fired_before_the_day_was_complete": early, "evaluation_interval_s": interval_s,
        "allowed_lateness_hours": lateness.total_seconds() / 3600, "records_before": cut,
        "method": "scale 0.025, volume 0.1, a 60% drop of restaurants (5610) in unit 380 from "
                  f"{DROP}; rules: alerts/default_rules.yaml with evaluation.interval_s={interval_s}; the feed up to "
                  f"the first valid invoice issued at {complete_at} (watermark - allowed lateness passes the end of "
                  f"{firing_day}, the drop's `for`-th day) is ingested and evaluated up to the day before; then that "
                  "record is published (clock starts when acked) and the clock stops when the loopback receiver "
                  "(demo_receiver, Standard Webhooks verified) accepts the adoption_drop firing",
    }  # fmt: skip


# -- the run ------------------------------------------------------------------------------------------------------
def row(name: str, value: float | None, unit: str, target: str = "", met: bool | None = None) -> dict[str, object]:
    return {"measurement": name, "value": value, "unit": unit, "target": target,
            "met": "" if met is None else ("yes" if met else "NO")}  # fmt: skip


def table(m: dict[str, dict]) -> list[dict[str, object]]:
    """The README's rows, with the issue's targets where it sets one."""
    rows = [row(f"{key} FAILED (see the JSON)", None, "") for key, v in m.items() if "error" in v]
    m = {key: v for key, v in m.items() if "error" not in v}
    one, two, bare = m.get("ingest_1_worker"), m.get("ingest_2_workers"), m.get("bare_limit")
    reference = m.get("ingest_1_worker_reference")
    if one:
        rows.append(row(f"ingest, 1 worker, {one.get('batch_core', 'compiled')} core", one["events_per_s"], "events/s"))
    if reference:
        rows.append(row("ingest, 1 worker, Python reference core", reference["events_per_s"], "events/s"))
    if two:
        rows.append(row("ingest, 2 workers (shared store over HTTP)", two["events_per_s"], "events/s"))
    if bare:
        rows.append(row("bare aiokafka read + Avro decode (limit)", bare["events_per_s"], "events/s"))
    if one and bare:
        ratio = round(one["events_per_s"] / bare["events_per_s"], 3)
        rows.append(row("pipeline (1 worker) / limit", ratio, "ratio", ">= 0.6", ratio >= 0.6))
    if reference and bare:
        ratio = round(reference["events_per_s"] / bare["events_per_s"], 3)
        rows.append(row("pipeline (1 worker, reference core) / limit", ratio, "ratio"))
    if fence := m.get("fence"):
        pairs = len(fence["fenced_events_per_s"])
        rows.append(row(f"ingest, 1 worker, fence off (median of {pairs})", round(float(np.median(
            fence["unfenced_events_per_s"]))), "events/s"))  # fmt: skip
        rows.append(row(f"ingest, 1 worker, fence on (median of {pairs})", fence["events_per_s"], "events/s"))
        overhead = fence["overhead"]
        rows.append(row("fence overhead (1 - on / off)", overhead, "ratio", "< 0.05", overhead < 0.05))
    if ch := m.get("clickhouse_alone"):
        rows.append(row(f"ClickHouse alone (batches of {ch['batch_size']:,})", ch["rows_per_s"], "rows/s"))
    for key, how in (("latency", "embedded, commits polled"), ("latency_shared_store", "shared store polled")):
        if lat := m.get(key):
            at = f"@ {lat['rate_target']:,}/s, {how}"
            rows.append(row(f"latency publish->visible p50 {at}", lat["p50_s"], "s"))
            rows.append(row(f"latency publish->visible p99 {at}", lat["p99_s"], "s", "< 1", lat["p99_s"] < 1))
    if rejections := m.get("rejections"):
        valid, rejected = rejections["valid"], rejections["rejected"]
        rows.append(row("ingest, 1 worker, valid invoices only", valid["events_per_s"], "events/s"))
        rows.append(row("ingest, 1 worker, every record rejected (too late)", rejected["events_per_s"], "events/s"))
        ratio = rejections["ratio_rejected_to_valid"]
        rows.append(row("rejected feed / valid feed", ratio, "ratio", ">= 0.5", ratio >= 0.5))
        for name, run in (("valid", valid), ("rejected", rejected)):
            rows.append(row(f"worker CPU per event, {name} feed", run["worker_cpu_us_per_event"], "µs"))
        for share, key in (("50%", "latency_half_rejected"), ("100%", "latency_all_rejected")):
            lat = rejections[key]
            at = f"@ {lat['rate_target']:,}/s, {share} rejected, commits polled"
            rows.append(row(f"latency publish->visible p99 {at}", lat["p99_s"], "s", "< 1", lat["p99_s"] < 1))
    if alert := m.get("alert_latency"):
        rows.append(row("alert latency (day complete -> webhook)", alert["seconds"], "s"))
    if one:
        rss = one["worker_peak_rss_mib"]
        rows.append(row("worker peak RSS (1 worker run)", rss, "MiB", "< 1,024", rss < 1024))
        rows.append(row("dedup keys held (max)", one["dedup_keys_max"], "keys"))
    for step, result in (m.get("replay") or {}).items():
        rows.append(row(f"replay: {step}", result["events_per_s"], "events/s"))
    return rows


def print_table(rows: list[dict[str, object]]) -> None:
    print("| measurement | value | unit | target | met |")
    print("|---|---:|---|---|---|")
    for r in rows:
        value = r["value"]
        shown = "-" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:,.3g}"
        print(f"| {r['measurement']} | {shown} | {r['unit']} | {r['target']} | {r['met']} |")


def step(plan: Plan, measurements: dict[str, object], name: str, key: str, fn: Callable[[], dict]) -> None:
    """One measurement unless skipped; printed as it ends."""
    if name in plan.skip:
        return
    t0 = time.perf_counter()
    try:
        result = measurements[key] = fn()
    except (Exception, SystemExit) as exc:  # a dead worker ends its measurement, not the run
        measurements[key] = {"error": f"{type(exc).__name__}: {str(exc)[-3000:]}"}
        print(f"\n{key} FAILED after {time.perf_counter() - t0:.0f} s: {measurements[key]['error']}", flush=True)
        return
    print(f"\n{key} ({time.perf_counter() - t0:.0f} s)", flush=True)
    print_result({k: (v.get("events_per_s") if isinstance(v, dict) else v) for k, v in result.items()
                  if k not in ("method", "config")})  # fmt: skip


def run(plan: Plan, measurements: dict[str, object]) -> None:
    """Every measurement not skipped, in an order that lets each reuse what the previous left."""
    with scratch_deployment(
        "einvoice-bench-suite-", plan.partitions, remove=not plan.keep, batch_size=plan.batch_size
    ) as base:
        bootstrap = base.kafka_brokers or ""
        create_topics(bootstrap, base)
        if not {"one", "bare", "two"} <= set(plan.skip):  # the main feed, for those that read it
            started = time.perf_counter()
            sim = Simulation(plan.config())
            publish_registry(bootstrap, base.topics.registry, sim.registrations(), sim.registry_codec,
                             sim.registry_timestamp_ms)  # fmt: skip
            publish_feed(sim, bootstrap, base.topics.invoices)
            total = sum(end_offsets(bootstrap, base.topics.invoices, range(plan.partitions)).values())
            measurements["feed"] = {"events": total, "registry_records": len(sim.registrations()),
                                    "generate_and_publish_s": round(time.perf_counter() - started, 1),
                                    "config": sim.config.as_dict()}  # fmt: skip
            print(f"feed: {total:,} events, {len(sim.registrations()):,} registry records", flush=True)
            del sim
            step(plan, measurements, "bare", "bare_limit", lambda: bare_limit(base))
            step(plan, measurements, "one", "ingest_1_worker", lambda: run_workers(base, total, 1, "embedded"))
            # the same worker on the Python reference path (the per-event code the compiled core replaces)
            reference = deployment(base, "reference", True).replace(batch_core="reference")
            step(plan, measurements, "reference", "ingest_1_worker_reference",
                 lambda: run_workers(reference, total, 1, "embedded"))  # fmt: skip
            step(plan, measurements, "fence", "fence", lambda: fence_overhead(base, total, plan.fence_pairs))
            if "one" not in plan.skip:
                source, target = base.data_dir / "clickhouse", base.data_dir.parent / "clickhouse-alone"
                topic, rows = base.topics.invoices, plan.clickhouse_rows
                step(plan, measurements, "clickhouse", "clickhouse_alone",
                     lambda: clickhouse_alone(source, target, topic, plan.batch_size, rows))  # fmt: skip
            two = lambda: run_workers(deployment(base, "two", True), total, 2, "http")  # noqa: E731
            step(plan, measurements, "two", "ingest_2_workers", two)
        step(plan, measurements, "latency", "latency", lambda: visibility_latency(base, plan, "commits"))
        step(plan, measurements, "latency", "latency_shared_store", lambda: visibility_latency(base, plan, "store"))

        step(plan, measurements, "rejections", "rejections",
             lambda: measure_rejections(base, plan, plan.rejection_events))  # fmt: skip
        step(plan, measurements, "alert", "alert_latency", lambda: alert_latency(base))
        replay = SimulationConfig(scale=plan.replay_scale, start=START, days=plan.replay_days, seed=plan.seed)
        step(plan, measurements, "replay", "replay", lambda: measure_replay(deployment(base, "replay"), replay))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK}")
    for name, default in asdict(Plan()).items():
        if name not in ("skip", "keep"):
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), help=f"default {default}")
    parser.add_argument("--skip", nargs="*", default=[], choices=STEPS, help="measurements left out")
    parser.add_argument("--out", type=str, default="suite", help="results name: bench/results/<out>.json")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (broker, chDB, worker logs)")
    args = parser.parse_args()
    chosen = {**(QUICK if args.quick else {}), "skip": tuple(args.skip), "keep": args.keep}
    given = {k: v for k, v in vars(args).items() if k in asdict(Plan()) and k not in ("skip", "keep") and v is not None}
    chosen.update(given)
    plan = Plan(**chosen)

    measurements: dict[str, object] = {}
    about = machine()  # the date is the start's
    started = time.perf_counter()
    try:
        run(plan, measurements)
    finally:  # what was measured before a failure is still written
        rows = table(measurements)  # type: ignore[arg-type]
        result = {**about, "command": " ".join(sys.argv), "mode": "quick" if args.quick else "full",
                  "parameters": asdict(plan), "wall_s": round(time.perf_counter() - started, 1), "table": rows,
                  "measurements": measurements}  # fmt: skip
        path = write_result(args.out, result)
        print(f"\n{result['machine']}, Python {result['python']}, {result['when']}; wall {result['wall_s']} s; "
              f"{path}")  # fmt: skip
        print_table(rows)


if __name__ == "__main__":
    main()

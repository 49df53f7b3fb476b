"""End-to-end ingest benchmark: publish N events, run the workers, report events/s and peak memory.

    .venv/bin/python bench/ingest.py --invoices 200000 --sellers 20000
    .venv/bin/python bench/ingest.py --invoices 200000 --sellers 20000 --workers 2

Several workers (or ``--store http``) share one store through ``harness/chdb_http.py``, the loopback
ClickHouse HTTP endpoint owning the chDB directory, as several workers share a server.

Uses the real pieces: the project's local Kafka broker (or KAFKA_BROKERS), the simulator's
feed (2% duplicates, 1% malformed), the `einvoice-monitor worker` child process and chDB.
The rate is measured from the first processed batch to the moment the group has committed
every partition's end (start-up and consumer-group join excluded, reported separately; with two
workers the join's rebalance happens while they read, as it does when a deployment starts).
Prints a table, writes JSON to bench/results/. ``run_workers`` is the measurement, also used by
bench/suite.py.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import threading
import time
from pathlib import Path

import psutil
from scratch import machine, scratch_deployment

from base.config import Settings
from deploy.kafka import free_port
from deploy.worker_process import WorkerProcess
from harness.chdb_http import ChdbHttpServer
from kafka_io.offsets import group_positions
from kafka_io.topics import create_topics
from simulator.engine import Simulation, SimulationConfig, registry_scale
from simulator.publish import publish_invoices, publish_registry

RESULTS = Path(__file__).parent / "results"


class PeakMemory(threading.Thread):
    """Samples the RSS of a process tree every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                proc = psutil.Process(self.pid)
                rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
                self.peak = max(self.peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.05)


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time of these processes and their children so far."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            for p in (proc, *proc.children(recursive=True)):
                times = p.cpu_times()
                total += times.user + times.system
    return total


def run_workers(settings: Settings, total: int, workers: int = 1, store: str = "embedded") -> dict[str, object]:
    """Run the workers on the deployment until its group has committed ``total`` invoice records.

    Topics must exist and hold the records. ``store`` "http": the workers share one chDB directory
    (``data_dir/clickhouse-http``) behind a loopback ``ChdbHttpServer``; "embedded": chDB in the one
    worker (``data_dir/clickhouse``), left there for the caller to read.
    """
    if store == "embedded" and workers > 1:
        raise ValueError("chDB belongs to one process: several workers need store='http'")
    bootstrap = settings.kafka_brokers or ""
    topic = settings.topics.invoices
    endpoint = ChdbHttpServer(settings.data_dir / "clickhouse-http") if store == "http" else None
    with endpoint or contextlib.nullcontext():
        shared = settings.replace(clickhouse_url=endpoint.dsn) if endpoint else settings
        deployments = [shared] if workers == 1 else [
            shared.replace(data_dir=shared.data_dir / f"w{i}", web_port=free_port()) for i in range(workers)
        ]  # fmt: skip
        procs = [WorkerProcess(own.to_env(), own.data_dir / "worker.log", own.web_port) for own in deployments]
        started = time.perf_counter()
        memories = []
        for worker in procs:
            worker.start()
            memories.append(PeakMemory(worker.proc.pid))  # type: ignore[union-attr]
            memories[-1].start()
        try:
            for worker in procs:
                worker.wait_healthy()
            core = procs[0].get_json("/health").get("batch_core") or {}
            first, cpu_first = None, 0.0
            dedup_keys, sampled = 0.0, 0.0
            partitions = range(settings.partitions)
            while sum(group_positions(bootstrap, settings.app_id, topic, partitions).values()) < total:
                if not all(w.running for w in procs):
                    raise SystemExit("a worker died:\n" + "\n".join(w.tail() for w in procs))
                if first is None:
                    done = sum(w.metric_sum("einvoice_events_total", topic=topic) for w in procs)
                    if done > 0:
                        first = (time.perf_counter(), done)
                        cpu_first = cpu_seconds([w.proc.pid for w in procs])  # type: ignore[union-attr]
                if time.perf_counter() - sampled > 1.0:  # the keys held peak before the end (expiry)
                    with contextlib.suppress(OSError):  # a busy worker's web page may not answer in time
                        dedup_keys = max(dedup_keys, sum(w.metric_sum("einvoice_dedup_keys") for w in procs))
                    sampled = time.perf_counter()
                time.sleep(0.1)
            finished = time.perf_counter()
            cpu_end = cpu_seconds([w.proc.pid for w in procs])  # type: ignore[union-attr]
            inserted = sum(w.metric_sum("einvoice_rows_inserted_total", table="invoices") for w in procs)
            dedup_end = sum(w.metric_sum("einvoice_dedup_keys") for w in procs)
        finally:
            for memory in memories:
                memory.stop.set()
            for worker in procs:
                worker.stop()
    assert first is not None
    return {
        "workers": workers,
        "batch_core": core.get("kind"),
        "store": "chDB over loopback HTTP (harness/chdb_http.py)" if endpoint else "chDB in the worker",
        "events": total,
        "rows_inserted": int(inserted),
        "events_per_s": round((total - first[1]) / max(finished - first[0], 1e-9)),  # all workers together
        "events_per_s_incl_startup": round(total / (finished - started)),
        # the workers' CPU time per event over the same span: what the rate costs, whatever else the machine runs
        "worker_cpu_us_per_event": round((cpu_end - cpu_first) / max(total - first[1], 1) * 1e6, 1),
        "seconds": round(finished - first[0], 2),
        "startup_s": round(first[0] - started, 2),
        "worker_peak_rss_mib": round(max(m.peak for m in memories) / 2**20),
        "dedup_keys_max": int(max(dedup_keys, dedup_end)),
        "dedup_keys_end": int(dedup_end),
    }


def print_result(result: dict[str, object]) -> None:
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value:,}" if isinstance(value, int | float) else f"{key:<{width}}  {value}")


def write_result(name: str, result: object) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=200_000)
    parser.add_argument("--sellers", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=Settings.batch_size)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--store", choices=("embedded", "http"), help="default: embedded for one worker, else http")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (broker, chDB, worker logs)")
    args = parser.parse_args()
    store = args.store or ("embedded" if args.workers == 1 else "http")
    if store == "embedded" and args.workers > 1:
        parser.error("chDB belongs to one process: several workers need --store http")

    with scratch_deployment(
        "einvoice-bench-", args.partitions, remove=not args.keep, batch_size=args.batch_size
    ) as settings:
        bootstrap = settings.kafka_brokers or ""
        create_topics(bootstrap, settings)
        sim = Simulation(
            SimulationConfig(scale=registry_scale(args.sellers), start=dt.date(2024, 6, 1), days=3, seed=1,
                             target_invoices=args.invoices)
        )  # fmt: skip
        publish_registry(bootstrap, settings.topics.registry, sim.registrations(), sim.registry_codec)
        t0 = time.perf_counter()
        records = list(sim.feed_records())
        generated_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        publish_invoices(bootstrap, settings.topics.invoices, records)
        published_s = time.perf_counter() - t0
        total = len(records)
        measured = run_workers(settings, total, args.workers, store)
    result = {
        **measured,
        "sellers": args.sellers,
        "partitions": args.partitions,
        "batch_size": args.batch_size,
        "generate_events_per_s": round(total / generated_s),
        "publish_events_per_s": round(total / published_s),
        **machine(),
    }
    print_result(result)
    write_result("ingest" if (args.workers, store) == (1, "embedded") else f"ingest-{args.workers}w-{store}", result)


if __name__ == "__main__":
    main()

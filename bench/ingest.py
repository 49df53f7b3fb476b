"""End-to-end ingest benchmark: publish N events, run the workers, report events/s and peak memory.

    .venv/bin/python bench/ingest.py --invoices 200000 --sellers 20000
    .venv/bin/python bench/ingest.py --invoices 200000 --sellers 20000 --workers 2

Several workers (or ``--store http``) share one store through ``deploy/chdb_http.py``, the loopback
ClickHouse HTTP endpoint owning the chDB directory, as several workers share a server.

Uses the real pieces: the project's local Kafka broker (or KAFKA_BROKERS), the simulator's
feed (2% duplicates, 1% malformed), the `einvoice-monitor worker` child process and chDB.
The rate is measured from the first processed batch to the moment the group has committed
every partition's end (start-up and consumer-group join excluded, reported separately; with two
workers the join's rebalance happens while they read, as it does when a deployment starts).
Prints a table, writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import platform
import threading
import time
from pathlib import Path

import psutil
from scratch import scratch_deployment

from deploy.chdb_http import ChdbHttpServer
from deploy.kafka import free_port
from deploy.worker_process import WorkerProcess
from simulator.engine import Simulation, SimulationConfig, registry_scale
from simulator.publish import publish_invoices, publish_registry
from streams.config import Settings
from streams.offsets import group_positions
from streams.topics import create_topics


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=200_000)
    parser.add_argument("--sellers", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=Settings.batch_size)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--store", choices=("embedded", "http"), help="default: embedded for one worker, else http")
    args = parser.parse_args()
    store = args.store or ("embedded" if args.workers == 1 else "http")
    if store == "embedded" and args.workers > 1:
        parser.error("chDB belongs to one process: several workers need --store http")

    with scratch_deployment("einvoice-bench-", args.partitions, batch_size=args.batch_size) as settings:
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

        endpoint = ChdbHttpServer(settings.data_dir / "clickhouse-http") if store == "http" else None
        with endpoint or contextlib.nullcontext():
            shared = settings.replace(clickhouse_url=endpoint.dsn) if endpoint else settings
            deployments = [shared] if args.workers == 1 else [
                shared.replace(data_dir=shared.data_dir / f"w{i}", web_port=free_port()) for i in range(args.workers)
            ]  # fmt: skip
            workers = [WorkerProcess(own.to_env(), own.data_dir / "worker.log", own.web_port) for own in deployments]
            started = time.perf_counter()
            memories = []
            for worker in workers:
                worker.start()
                memories.append(PeakMemory(worker.proc.pid))  # type: ignore[union-attr]
                memories[-1].start()
            for worker in workers:
                worker.wait_healthy()
            first = None
            partitions = range(args.partitions)
            while (
                sum(group_positions(bootstrap, settings.app_id, settings.topics.invoices, partitions).values()) < total
            ):
                if not all(w.running for w in workers):
                    raise SystemExit("a worker died:\n" + "\n".join(w.tail() for w in workers))
                if first is None:
                    done = sum(w.metric_sum("einvoice_events_total", topic=settings.topics.invoices) for w in workers)
                    if done > 0:
                        first = (time.perf_counter(), done)
                time.sleep(0.1)
            finished = time.perf_counter()
            inserted = sum(w.metric_sum("einvoice_rows_inserted_total", table="invoices") for w in workers)
            for memory in memories:
                memory.stop.set()
            for worker in workers:
                worker.stop()
        assert first is not None
        steady_rate = (total - first[1]) / max(finished - first[0], 1e-9)
        memory_gib = psutil.virtual_memory().total / 2**30
        result = {
            "workers": args.workers,
            "store": "chDB over loopback HTTP (deploy/chdb_http.py)" if endpoint else "chDB in the worker",
            "events": total,
            "rows_inserted": inserted,
            "sellers": args.sellers,
            "partitions": args.partitions,
            "batch_size": args.batch_size,
            "events_per_s": round(steady_rate),  # through all workers together
            "events_per_s_incl_startup": round(total / (finished - started)),
            "startup_s": round(first[0] - started, 2),
            "worker_peak_rss_mib": round(max(m.peak for m in memories) / 2**20),
            "generate_events_per_s": round(total / generated_s),
            "publish_events_per_s": round(total / published_s),
            "machine": f"{platform.machine()}, {psutil.cpu_count()} cores, {memory_gib:.0f} GiB",
            "python": platform.python_version(),
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        width = max(map(len, result))
        for key, value in result.items():
            print(f"{key:<{width}}  {value:,}" if isinstance(value, int | float) else f"{key:<{width}}  {value}")
        out = Path(__file__).parent / "results"
        out.mkdir(exist_ok=True)
        name = "ingest" if (args.workers, store) == (1, "embedded") else f"ingest-{args.workers}w-{store}"
        (out / f"{name}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""End-to-end ingest benchmark: publish N events, run one worker, report events/s and peak memory.

    .venv/bin/python bench/ingest.py --invoices 200000 --sellers 20000

Uses the real pieces: the project's local Kafka broker (or KAFKA_BROKERS), the simulator's
feed (2% duplicates, 1% malformed), the `einvoice-monitor worker` child process and chDB.
The rate is measured from the worker's first processed batch to its last (start-up and
consumer-group join excluded, reported separately). Prints a table, writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import threading
import time
from pathlib import Path

import psutil
from scratch import scratch_deployment

from deploy.worker_process import WorkerProcess
from simulator.engine import Simulation, SimulationConfig, registry_scale
from simulator.publish import publish_invoices, publish_registry
from streams.config import Settings
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
    args = parser.parse_args()

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

        worker = WorkerProcess(settings.to_env(), settings.data_dir / "worker.log", settings.web_port)
        started = time.perf_counter()
        worker.start()
        memory = PeakMemory(worker.proc.pid)  # type: ignore[union-attr]
        memory.start()
        worker.wait_healthy()
        first = None
        done = 0.0
        while done < total:
            if not worker.running:
                raise SystemExit(f"worker died:\n{worker.tail()}")
            done = worker.metric_sum("einvoice_events_total", topic=settings.topics.invoices)
            if first is None and done > 0:
                first = (time.perf_counter(), done)
            time.sleep(0.1)
        finished = time.perf_counter()
        inserted = worker.metric_sum("einvoice_rows_inserted_total", table="invoices")
        memory.stop.set()
        worker.stop()
        assert first is not None
        steady_rate = (total - first[1]) / max(finished - first[0], 1e-9)
        memory_gib = psutil.virtual_memory().total / 2**30
        result = {
            "events": total,
            "rows_inserted": inserted,
            "sellers": args.sellers,
            "partitions": args.partitions,
            "batch_size": args.batch_size,
            "events_per_s": round(steady_rate),
            "events_per_s_incl_startup": round(total / (finished - started)),
            "startup_s": round(first[0] - started, 2),
            "worker_peak_rss_mib": round(memory.peak / 2**20),
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
        (out / "ingest.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

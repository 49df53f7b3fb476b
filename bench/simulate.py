"""Generation benchmark: how fast the simulator writes its feed to Avro files and to Kafka.

    .venv/bin/python bench/simulate.py                 # scale 1.0: 2 days to files, 1 day to Kafka
    .venv/bin/python bench/simulate.py --scale 0.2 --days 3 --kafka-days 1

The generator must never be the bottleneck of the pipeline benchmarks (aim: 200,000 events/s to
file). Files are timed for both codecs; Kafka uses the project's local broker in a temporary
directory unless KAFKA_BROKERS is set. The rate counts invoice-feed records (valid, duplicates,
malformed) over the time spent generating, encoding and writing them; building the population
(and, for Kafka, publishing the registry) is reported apart. Prints a table, writes JSON to
bench/results/simulate.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import psutil

from base.config import Settings
from deploy.kafka import LocalBroker
from kafka_io.topics import create_topics
from simulator.archive import ArchiveOptions, write_archive
from simulator.engine import Simulation, SimulationConfig
from simulator.publish import publish_feed, publish_registry


def files_run(config: SimulationConfig, codec: str, out: Path) -> dict:
    started = time.perf_counter()
    sim = Simulation(config)
    built = time.perf_counter()
    manifest = write_archive(sim, ArchiveOptions(out, codec=codec))
    done = time.perf_counter()
    events = sim.stats.records
    size = sum(f["bytes"] for f in manifest["files"] if f["topic"] == "einvoice.issued")
    shutil.rmtree(out, ignore_errors=True)
    return {"events": events, "seconds": round(done - built, 2), "events_per_s": round(events / (done - built)),
            "population_s": round(built - started, 2), "bytes_per_event": round(size / events, 1)}  # fmt: skip


def kafka_run(config: SimulationConfig, bootstrap: str, partitions: int) -> dict:
    run = uuid.uuid4().hex[:6]
    settings = Settings(kafka_brokers=bootstrap, topic_prefix=f"benchsim{run}.", partitions=partitions)
    create_topics(bootstrap, settings)
    started = time.perf_counter()
    sim = Simulation(config)
    built = time.perf_counter()
    publish_registry(bootstrap, settings.topics.registry, sim.registrations(), sim.registry_codec)
    registry_done = time.perf_counter()
    publish_feed(sim, bootstrap, settings.topics.invoices)  # the invoices, timed on their own
    done = time.perf_counter()
    events = sim.stats.records
    return {"events": events, "seconds": round(done - registry_done, 2),
            "events_per_s": round(events / (done - registry_done)), "population_s": round(built - started, 2),
            "registry_records": len(sim.registrations()), "registry_s": round(registry_done - built, 2),
            "partitions": partitions}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--days", type=int, default=2, help="issue days written to files")
    parser.add_argument("--kafka-days", type=int, default=1, help="issue days published to Kafka (0: skip)")
    parser.add_argument("--start", default="2024-06-03")
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()

    start = dt.date.fromisoformat(args.start)
    work = Path(tempfile.mkdtemp(prefix="einvoice-bench-sim-"))
    result: dict = {"scale": args.scale, "start": args.start}
    try:
        for codec in ("null", "deflate"):
            config = SimulationConfig(scale=args.scale, start=start, days=args.days, seed=1)
            result[f"files_{codec}"] = files_run(config, codec, work / codec)
        if args.kafka_days:
            broker = None
            bootstrap = os.environ.get("KAFKA_BROKERS")
            if not bootstrap:
                broker = LocalBroker(work / "kafka")
                bootstrap = broker.start()
            try:
                config = SimulationConfig(scale=args.scale, start=start, days=args.kafka_days, seed=1)
                result["kafka"] = kafka_run(config, bootstrap, args.partitions)
            finally:
                if broker is not None:
                    broker.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    memory_gib = psutil.virtual_memory().total / 2**30
    result["machine"] = f"{platform.machine()}, {psutil.cpu_count()} cores, {memory_gib:.0f} GiB"
    result["python"] = platform.python_version()
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    result["when"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    for name in ("files_null", "files_deflate", "kafka"):
        if name in result:
            r = result[name]
            print(f"{name:<14} {r['events']:>11,} events  {r['seconds']:>7.1f} s  {r['events_per_s']:>9,} events/s")
    print(f"scale {args.scale}, population built in {result['files_null']['population_s']} s; {result['machine']}, "
          f"load average {result['load_average_1m']}")  # fmt: skip
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "simulate.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

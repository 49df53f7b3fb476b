"""Replay benchmark: archive, verify, publish and rewind-reprocess rates, in events per second.

    .venv/bin/python bench/replay.py --invoices 200000 --sellers 10000

Uses the real pieces: the project's local Kafka broker (or KAFKA_BROKERS), the simulator's feed
(2% duplicates, 1% malformed), the replay functions behind the CLI, and the `einvoice-monitor
worker` child process on chDB for the reprocessing after a rewind (records already in ClickHouse
are read, validated and skipped) and for a rebuild into a fresh chDB directory (a full ingest).
Prints a table and writes JSON to bench/results/replay.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

# Run as a script, bench/ is first on sys.path and this file would hide the replay package: the repository goes first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scratch import machine, scratch_deployment

from base.config import Settings
from deploy.worker_process import WorkerProcess
from kafka_io.offsets import end_offsets, group_positions
from kafka_io.topics import create_topics
from replay.archive import plan_archive, verify_archive, write_archive
from replay.publish import publish_archive
from replay.rebuild import create_rebuild, run_rebuild
from replay.rewind import Target, apply_rewind, plan_rewind
from simulator.engine import Simulation, SimulationConfig, registry_scale
from simulator.publish import publish_feed, publish_registry


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def run_worker(settings: Settings, name: str, total: int) -> tuple[float, float]:
    """Start the worker, wait until its group committed every offset; (steady seconds, seconds with start-up)."""
    topic = settings.topics.invoices
    ends = end_offsets(settings.kafka_brokers or "", topic, range(settings.partitions))
    worker = WorkerProcess(settings.to_env(), settings.data_dir / f"{name}.log", settings.web_port)
    started = time.perf_counter()
    worker.start()
    worker.wait_healthy()
    first = None
    try:
        while True:
            if not worker.running:
                raise SystemExit(f"worker died:\n{worker.tail()}")
            if first is None and worker.metric_sum("einvoice_events_total", topic=topic) > 0:
                first = time.perf_counter()
            done = group_positions(settings.kafka_brokers or "", settings.app_id, topic, range(settings.partitions))
            if all(done[p] >= ends[p] for p in ends):
                break
            time.sleep(0.2)
        finished = time.perf_counter()
        assert worker.metric_sum("einvoice_events_total", topic=topic) == total
    finally:
        worker.stop()
    return finished - (first or started), finished - started


def measure_replay(settings: Settings, config: SimulationConfig) -> dict[str, dict[str, object]]:
    """Every replay step on a fresh deployment of the broker: publish the feed, then time each step.

    ``settings`` names topics and a data directory of its own (a copy deployment is derived from it).
    Returns, per step, events, seconds, events/s and a note.
    """
    results: dict[str, tuple[int, float, str]] = {}
    bootstrap = settings.kafka_brokers or ""
    work = settings.data_dir.parent
    copy = settings.replace(topic_prefix=f"copy{settings.topic_prefix}", app_id=f"{settings.app_id}-copy")
    create_topics(bootstrap, settings)
    create_topics(bootstrap, copy)
    sim = Simulation(config)
    publish_registry(bootstrap, settings.topics.registry, sim.registrations(), sim.registry_codec)
    publish_feed(sim, bootstrap, settings.topics.invoices)
    topic = settings.topics.invoices
    total = sum(end_offsets(bootstrap, topic, range(settings.partitions)).values())

    out = work / f"archive-{settings.app_id}"
    plan = plan_archive(bootstrap, [topic], None)
    (manifest, _), seconds = timed(lambda: write_archive(bootstrap, plan, out))
    size = sum(f["bytes"] for f in manifest["files"])
    results["archive"] = (total, seconds, f"{size / total:.0f} B/event, deflate")
    report, seconds = timed(lambda: verify_archive(out))
    assert report.ok, report.problems
    results["verify"] = (total, seconds, "sha256 + every record read")
    mapping = {topic: copy.topics.invoices}
    published, seconds = timed(lambda: publish_archive(bootstrap, out, work / f"state-{settings.app_id}",
                                                       topic_map=mapping))  # fmt: skip
    assert published.sent == total
    results["publish"] = (total, seconds, "acks=all, idempotent, lz4")

    steady, with_startup = run_worker(settings, "ingest", total)
    results["ingest (first pass)"] = (total, steady, f"{total / with_startup:,.0f} ev/s with start-up")
    plan_all = plan_rewind(bootstrap, settings.app_id, [topic], None, Target("earliest"))
    _, seconds = timed(lambda: apply_rewind(bootstrap, plan_all))
    results["rewind (commit)"] = (plan_all.reprocess, seconds, "offsets moved, nothing read yet")
    steady, with_startup = run_worker(settings, "reprocess", plan_all.reprocess)
    results["rewind-reprocess"] = (plan_all.reprocess, steady, f"{plan_all.reprocess / with_startup:,.0f} ev/s "
                                   "with start-up; all skipped, 0 rows written")  # fmt: skip

    rebuild = create_rebuild(settings, bootstrap)
    _, seconds = timed(lambda: run_rebuild(settings, bootstrap, rebuild))
    results["rebuild (fresh chDB)"] = (total, seconds, "with worker start-up and stop")
    table = {}
    for step, (events, seconds, note) in results.items():
        rate = events / max(seconds, 1e-9)
        table[step] = {"events": events, "seconds": round(seconds, 2), "events_per_s": round(rate), "note": note}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=200_000)
    parser.add_argument("--sellers", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()

    config = SimulationConfig(scale=registry_scale(args.sellers), start=dt.date(2024, 6, 1), days=3, seed=1,
                              target_invoices=args.invoices)  # fmt: skip
    with scratch_deployment("einvoice-bench-replay-", args.partitions) as settings:
        table = measure_replay(settings, config)
    about = machine()
    print(f"{args.invoices:,} invoices requested, {args.sellers:,} sellers, {args.partitions} partitions; "
          f"{about['machine']}, Python {about['python']}")  # fmt: skip
    print(f"{'step':<22} {'events':>10} {'seconds':>8} {'events/s':>10}  note")
    for step, row in table.items():
        print(f"{step:<22} {row['events']:>10,} {row['seconds']:>8.2f} {row['events_per_s']:>10,}  {row['note']}")
    out_dir = Path(__file__).parent / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "replay.json").write_text(json.dumps({"args": vars(args), **about, "results": table}, indent=2))


if __name__ == "__main__":
    main()

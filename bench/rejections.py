"""Rejected records against valid ones: the dead-letter path's drain rate and latency (issue 23, point 5).

    .venv/bin/python bench/rejections.py            # 400,000 records a feed, scale 1.0, a 30 s latency run
    .venv/bin/python bench/rejections.py --quick    # 60,000 records a feed, scale 0.05, a 10 s latency run

Run from the repository root. One local Kafka broker (or KAFKA_BROKERS), topics of their own for each of:

(a) a feed of valid invoices only (the simulator's first ``--events`` records labelled valid), and
(b) the same records with every Kafka timestamp moved 400 days later, so that each one arrives
    long after its issue and is rejected as ``issued_too_old`` (one reason: each gets a detail and a
    dead letter), each published first, then drained by one ``einvoice-monitor worker`` (default
    settings, compiled core, embedded chDB; bench/ingest.py ``run_workers``): events/s each, and the
    ratio rejected / valid (the target: at least 0.5);
(c) publish->visible latency at a paced ``--latency-rate`` records/s of the main feed with every other
    record moved so (50 % rejected), measured as bench/suite.py measures it (``visibility_latency``:
    one worker, its committed offsets polled; a record counts when its offset is committed, after its
    batch's dead letters are acknowledged and its rows inserted); beside it, the same on the feed as
    published (1 % malformed), since this machine's noise moves the p99 by more than the rejections do;
(d) the same with every record moved (100 % rejected): the issue's case, where batches write in a few
    milliseconds and the commits, one a batch, once fell behind (streams/app.py ``CommitChain``).

bench/suite.py runs the same (``measure_rejections``) and puts its rows in the table. Prints the
numbers; writes JSON to bench/results/rejections.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

# Run as a script, bench/ is first on sys.path and bench/replay.py would hide the replay package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scratch import machine, scratch_deployment

from base.config import Settings
from base.localtime import DAY_MS
from bench.ingest import print_result, run_workers, write_result
from bench.suite import QUICK, Plan, deployment, visibility_latency
from simulator.engine import Simulation
from simulator.feed import FeedRecord
from simulator.publish import publish_invoices, publish_registry
from streams.offsets import end_offsets

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK}")
    parser.add_argument("--events", type=int, help="records a feed (default 400,000; quick 60,000)")
    parser.add_argument("--latency-rate", type=int, default=Plan.latency_rate)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (broker, chDB, worker logs)")
    args = parser.parse_args()
    plan = replace(Plan(**(QUICK if args.quick else {})), latency_rate=args.latency_rate)
    events = args.events or plan.rejection_events
    started = time.perf_counter()
    with scratch_deployment("einvoice-bench-rejections-", plan.partitions, remove=not args.keep) as base:
        result = measure_rejections(base, plan, events, baseline=True)
    latency, as_published = result["latency_half_rejected"], result["latency_valid"]
    print_result({
        "events a feed": result["events"],
        "valid feed, events/s": result["valid"]["events_per_s"],
        "all rejected (too late), events/s": result["rejected"]["events_per_s"],
        "ratio rejected / valid (target >= 0.5)": result["ratio_rejected_to_valid"],
        "worker CPU per event, valid / rejected, µs":
            f"{result['valid']['worker_cpu_us_per_event']} / {result['rejected']['worker_cpu_us_per_event']}",
        f"latency p50 / p99 @ {plan.latency_rate:,}/s, the feed as published, s":
            f"{as_published['p50_s']} / {as_published['p99_s']}",
        f"latency p50 / p99 @ {plan.latency_rate:,}/s, 50 % rejected, s":
            f"{latency['p50_s']} / {latency['p99_s']}",
        f"latency p50 / p99 @ {plan.latency_rate:,}/s, 100 % rejected, s":
            f"{result['latency_all_rejected']['p50_s']} / {result['latency_all_rejected']['p99_s']}",
        "wall, s": round(time.perf_counter() - started, 1),
    })  # fmt: skip
    print(f"written: {write_result('rejections', {**machine(), 'command': ' '.join(sys.argv), **result})}")


if __name__ == "__main__":
    main()

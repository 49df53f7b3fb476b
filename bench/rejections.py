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

The measurement is bench/suite.py's ``measure_rejections`` (its ``rejections`` step puts the rows in
its table). Prints the numbers; writes JSON to bench/results/rejections.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

# Run as a script, bench/ is first on sys.path and bench/replay.py would hide the replay package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scratch import machine, scratch_deployment

from bench.ingest import print_result, write_result
from bench.suite import QUICK, Plan, measure_rejections


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

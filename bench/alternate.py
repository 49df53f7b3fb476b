"""One worker against the bare loop, alternately, on one published feed: the figure to compare changes with.

    .venv/bin/python bench/alternate.py --invoices 3000000 --rounds 2
    .venv/bin/python bench/alternate.py --rounds 2 --variant reference EINVOICE_BATCH_CORE=reference

The machine is shared and noisy (±30 % between runs), so a change is measured as the worker's
ratio to the bare aiokafka + fastavro loop (``bench/suite.py``'s ``bare_limit``) read right before
it, on the same feed: the simulator's (40,000 sellers, three days, 2 % duplicates, 1 % malformed),
published once. Each round runs the bare loop, then the worker once per variant (the default
settings, plus any ``--variant NAME VAR=VALUE ...``: environment for that worker), each with a
consumer group and a chDB of its own (``bench/ingest.py``'s ``run_workers``). Prints each run and
the medians; to compare two commits, run it on each.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics

from ingest import run_workers
from scratch import scratch_deployment
from suite import bare_limit, deployment

from kafka_io.topics import create_topics
from simulator.engine import Simulation, SimulationConfig, registry_scale
from simulator.publish import publish_invoices, publish_registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=3_000_000)
    parser.add_argument("--sellers", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar=("NAME", "VAR=VALUE"))
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (broker, chDB, worker logs)")
    args = parser.parse_args()
    variants: dict[str, dict[str, str]] = {"default": {}}
    for name, *assignments in args.variant:
        variants[name] = dict(a.split("=", 1) for a in assignments)
    with scratch_deployment("einvoice-alternate-", 4, remove=not args.keep) as settings:
        bootstrap = settings.kafka_brokers or ""
        create_topics(bootstrap, settings)
        sim = Simulation(SimulationConfig(scale=registry_scale(args.sellers), start=dt.date(2024, 6, 1), days=3,
                                          seed=1, target_invoices=args.invoices))  # fmt: skip
        publish_registry(bootstrap, settings.topics.registry, sim.registrations(), sim.registry_codec)
        records = list(sim.feed_records())
        publish_invoices(bootstrap, settings.topics.invoices, records)
        total = len(records)
        del records, sim
        rates: dict[str, list[float]] = {"bare loop": [], **{name: [] for name in variants}}
        for round_ in range(args.rounds):
            rates["bare loop"].append(float(bare_limit(settings)["events_per_s"]))  # type: ignore[arg-type]
            print(f"round {round_ + 1}: bare loop {rates['bare loop'][-1]:,.0f} events/s", flush=True)
            for name, env in variants.items():
                saved = {k: os.environ.get(k) for k in env}
                os.environ.update(env)
                try:
                    measured = run_workers(deployment(settings, f"{name}-{round_}", True), total, 1, "embedded")
                finally:
                    for key, value in saved.items():
                        if value is None:
                            os.environ.pop(key, None)
                        else:
                            os.environ[key] = value
                rates[name].append(float(measured["events_per_s"]))  # type: ignore[arg-type]
                print(f"round {round_ + 1}: {name} {rates[name][-1]:,.0f} events/s, "
                      f"peak RSS {measured['worker_peak_rss_mib']} MiB", flush=True)  # fmt: skip
        limit = statistics.median(rates["bare loop"])
        print(f"\n{total:,} events, {args.rounds} round(s); medians:")
        for name, values in rates.items():
            median = statistics.median(values)
            print(f"  {name:12s} {median:>10,.0f} events/s   {median / limit:.3f} of the bare loop")


if __name__ == "__main__":
    main()

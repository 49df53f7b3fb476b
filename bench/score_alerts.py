"""Score the alert engine against the simulator's ground truth over many seeded scenarios.

    .venv/bin/python bench/score_alerts.py --runs 10

Each run: a random drop (sector × district, 40–80% of its issuers, from a random day), a silent
regular issuer, a six-hour feed outage and two registry changes, simulated for four weeks, sent
through Kafka and the real worker into chDB, then every complete day evaluated with the default
rules. An alert is a true positive when it points at what a scenario did (the dropped segment
for adoption_drop and volume_drop, a stopped seller for dormant_issuer, the outage day for
pipeline_silence); recall counts the scenario changes that were caught (`expect: alert`), and the
delay is from the change's first day to the day the alert fired. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

from alerts.evaluator import AlertEvaluator
from alerts.rules import load_rules
from deploy.kafka import LocalBroker, free_port
from deploy.worker_process import WorkerProcess
from simulator.engine import Simulation, SimulationConfig
from simulator.publish import publish_simulation
from sinks.clickhouse import ClickHouseStore
from streams.config import Settings
from streams.offsets import end_offsets, group_positions
from streams.topics import create_topics

START = dt.date(2024, 6, 3)
DAYS = 28
SEGMENTS = [("5610", "380"), ("4719", "380"), ("5630", "380"), ("4772", "380"), ("5610", "407"), ("4719", "382")]


def scenario(seed: int) -> dict:
    rng = random.Random(seed)
    sector, unit = rng.choice(SEGMENTS)
    drop = START + dt.timedelta(days=rng.randrange(14, 21))
    outage = START + dt.timedelta(days=rng.randrange(8, 24))
    return {
        "name": f"score run {seed}",
        "changes": [
            {"kind": "sector_drop", "vsic_code": sector, "admin_unit_code": unit,
             "share": round(rng.uniform(0.4, 0.8), 2), "from": drop.isoformat()},
            {"kind": "silent_issuer", "vsic_code": "4730", "min_invoices_per_day": 20,
             "from": (START + dt.timedelta(days=rng.randrange(15, 22))).isoformat()},
            {"kind": "feed_outage", "from": f"{outage.isoformat()}T{rng.randrange(8, 14):02d}:00", "hours": 6},
            {"kind": "registry_change", "action": "move", "vsic_code": "4772", "admin_unit_code": "380",
             "to_admin_unit_code": "405", "from": (START + dt.timedelta(days=5)).isoformat()},
            {"kind": "registry_change", "action": "close", "vsic_code": "4719", "admin_unit_code": "399", "count": 3,
             "from": (START + dt.timedelta(days=9)).isoformat()},
        ],
    }  # fmt: skip


def run_once(seed: int, bootstrap: str, work: Path) -> dict:
    run = uuid.uuid4().hex[:6]
    settings = Settings(
        data_dir=work / f"run-{seed}", kafka_brokers=bootstrap, topic_prefix=f"score{run}.",
        app_id=f"score-{run}", partitions=4, web_port=free_port(), session_timeout_s=10,
    )  # fmt: skip
    create_topics(bootstrap, settings)
    path = work / f"scenario-{seed}.yaml"
    path.write_text(yaml.safe_dump(scenario(seed), allow_unicode=True))
    sim = Simulation(SimulationConfig(scale=0.025, start=START, days=DAYS, seed=seed, volume=0.1, scenarios=(path,)))
    publish_simulation(sim, bootstrap, settings.topics.registry, settings.topics.invoices)
    truth = sim.ground_truth()["changes"]
    worker = WorkerProcess(settings.to_env(), settings.data_dir / "worker.log", settings.web_port).start()
    worker.wait_healthy()
    every = list(range(settings.partitions))
    ends = end_offsets(bootstrap, settings.topics.invoices, every)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        committed = group_positions(bootstrap, settings.app_id, settings.topics.invoices, every)
        if all(committed[p] >= e for p, e in ends.items()):
            break
        time.sleep(1)
    worker.stop()
    store = ClickHouseStore(settings.clickhouse_dsn)
    evaluator = AlertEvaluator(store, load_rules(), bootstrap, settings.topics.alerts, settings.topics.silences)
    while evaluator.run():
        pass  # the worker's own timer may have evaluated the first days already: read them all back
    evaluator.close()
    rows = store.query_rows(
        "SELECT type, rule, labels, day, values, suppressed_by FROM alert_events FINAL WHERE rule != 'pipeline_lag'"
    )
    store.close()
    events = [
        Event(t, r, dict(labels), day, json.loads(values), suppressed) for t, r, labels, day, values, suppressed in rows
    ]
    return score(events, truth)


@dataclass(frozen=True)
class Event:
    type: str
    rule: str
    labels: dict
    day: dt.date
    values: dict
    suppressed_by: str


def score(events: list[Event], truth: list[dict]) -> dict:
    fired = [e for e in events if e.type == "firing" and not e.suppressed_by]
    grown = [e for e in events if e.type == "repeat" and e.rule == "dormant_issuer" and not e.suppressed_by]
    drop = next(t for t in truth if t["kind"] == "sector_drop")
    silent = next(t for t in truth if t["kind"] == "silent_issuer")
    outage = next(t for t in truth if t["kind"] == "feed_outage")
    segment = (drop["segments"][0]["vsic_code"], drop["segments"][0]["admin_unit_code"])
    stopped = set(drop["sellers"]) | set(silent["sellers"])
    outage_day = outage["from"][:10]
    true_positive, delays = 0, {"sector_drop": None, "silent_issuer": None}
    per_rule: dict[str, list[int]] = {}
    for event in fired:
        day = event.day
        hit = False
        if event.rule in ("adoption_drop", "volume_drop"):
            hit = (event.labels["sector"], event.labels["unit"]) == segment
            if hit and event.rule == "adoption_drop" and delays["sector_drop"] is None:
                delays["sector_drop"] = (day - dt.date.fromisoformat(drop["from"])).days
        elif event.rule == "dormant_issuer":
            named = {s["seller_id"] for s in event.values["sellers"]}
            hit = bool(named & stopped) and named <= stopped
            if set(silent["sellers"]) & named and delays["silent_issuer"] is None:
                delays["silent_issuer"] = (day - dt.date.fromisoformat(silent["from"])).days
        elif event.rule == "pipeline_silence":
            hit = day.isoformat() == outage_day
        true_positive += hit
        counts = per_rule.setdefault(event.rule, [0, 0])
        counts[0] += 1
        counts[1] += hit
    for event in grown:  # a silent seller joining a unit's dormant alert that was already firing
        if (
            set(silent["sellers"]) & {s["seller_id"] for s in event.values["sellers"]}
            and delays["silent_issuer"] is None
        ):
            delays["silent_issuer"] = (event.day - dt.date.fromisoformat(silent["from"])).days
    caught = sum(d is not None for d in delays.values())
    return {"fired": len(fired), "true_positive": true_positive, "expected": 2, "caught": caught, "delays": delays,
            "segment": segment, "per_rule": per_rule}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="einvoice-score-"))
    broker = LocalBroker(work / "kafka")
    bootstrap = broker.start()
    rows = []
    try:
        for seed in range(args.first_seed, args.first_seed + args.runs):
            started = time.perf_counter()
            row = run_once(seed, bootstrap, work)
            row["seconds"] = round(time.perf_counter() - started)
            rows.append(row)
            print(f"seed {seed}: segment {row['segment']} fired {row['fired']} true {row['true_positive']} "
                  f"caught {row['caught']}/2 delays {row['delays']} per rule [fired, true] {row['per_rule']} "
                  f"({row['seconds']} s)", flush=True)  # fmt: skip
    finally:
        broker.stop()
    fired = sum(r["fired"] for r in rows)
    precision = sum(r["true_positive"] for r in rows) / fired if fired else 1.0
    recall = sum(r["caught"] for r in rows) / sum(r["expected"] for r in rows)
    drop_delays = [r["delays"]["sector_drop"] for r in rows if r["delays"]["sector_drop"] is not None]
    silent_delays = [r["delays"]["silent_issuer"] for r in rows if r["delays"]["silent_issuer"] is not None]
    by_rule: dict[str, list[int]] = {}
    for row in rows:
        for rule, (n, ok) in row["per_rule"].items():
            total = by_rule.setdefault(rule, [0, 0])
            total[0] += n
            total[1] += ok
    summary = {
        "runs": len(rows), "alerts_fired": fired, "precision": round(precision, 3), "recall": round(recall, 3),
        **{f"precision_{rule}": f"{ok}/{n}" for rule, (n, ok) in sorted(by_rule.items())},
        "sector_drop_delay_days_median": statistics.median(drop_delays) if drop_delays else None,
        "sector_drop_delay_days_max": max(drop_delays) if drop_delays else None,
        "silent_issuer_delay_days_median": statistics.median(silent_delays) if silent_delays else None,
        "silent_issuer_delay_days_max": max(silent_delays) if silent_delays else None,
    }  # fmt: skip
    print()
    for key, value in summary.items():
        print(f"{key:<34} {value}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "score_alerts.json").write_text(json.dumps({"summary": summary, "runs": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()

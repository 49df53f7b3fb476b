"""Score the alert engine against the simulator's ground truth over many seeded scenarios.

    .venv/bin/python bench/score_alerts.py --runs 18

Each run simulates 60 days at scale 0.025 (volume 0.1) in one of three seasons, in turn: May–June
2024, April–June (30/4–1/5 in the first weeks) and January–March (Tết in the first weeks, with
its pre-Tết peak), sends them through Kafka and the real worker (started on the whole backlog, as
after an outage) into chDB, then evaluates every complete day with the default rules. Every run
holds, at the same days of its window: a sudden drop (a sector × district, 40–80% of its issuers,
from a random day of the seventh week), a **slide** (one of four segments of the city, 23–118
issuers, losing 10–20% of those still issuing at a time, every 5–9 days, six times, from a random
day of the sixth week), a silent
regular issuer, a pure volume fall (the supermarkets of the city thinned to 30–50% of their invoices,
every one still issuing), a six-hour feed outage, a business moving district and three closing.

An alert is a true positive when it points at what a scenario did: adoption_drop and
adoption_slide at the dropped or sliding segment, volume_drop at those or at the thinned one,
dormant_issuer at stopped sellers only, pipeline_silence on the outage's day; pipeline_lag never
(the worker only catches up). Recall per rule counts the changes it is there for (the drop, the
slide, the volume fall, the silent station, the outage) that it caught; the delay runs from the
change's first day to the day the alert fired, in evaluated days (public holidays, never evaluated, are
not counted). A slide counts as told at its first adoption alert:
adoption_slide, or adoption_drop when a fast slide trips it first (it then mutes adoption_slide there);
slides are reported by size, 45+ issuers at the first step or fewer. Prints a table, writes
bench/results/score_alerts.json.

    .venv/bin/python bench/score_alerts.py --noise realistic --runs 3

``--noise realistic`` scores on the simulator's realistic world (simulator/README.md: lumpy,
closing, part-time and churning sellers, district shocks, the month turn, a holiday with closures)
in the season ``national-day``: 66 days from 15 July 2024, six weeks of history, then from the
seventh week a step drop of a restaurant segment (40–80% of its issuers), a slide (12% of a city
segment's issuers a week, four weeks), a silent filling station, the city's supermarkets halved
(every one still issuing), a six-hour outage, and National Day (2–3 September) in the middle of
it. ``--season national-day --noise poisson`` is the same run in the default world, the control.
A dormant_issuer alert is true only when every seller it names had stopped by its day (scenario
or churn, per the ground truth); one naming some stopped and some not counts false, and is counted
apart as partial, with the share of named sellers that really stopped. The sellers it names
wrongly are told apart by what the ground truth says they are (closed weekday, part-time, holiday
closure, started late, none of those). Alert changes at a dropped, sliding or halved segment
resolving while the change lasts (it lasts to the end) are counted. Every day is evaluated at its
own simulated time (its end plus the allowed lateness), so the 24-hour repeats a live recipient
gets are emitted; webhooks per week are counted for the endpoints of alerts/endpoints.example.yaml,
for one subscribing to everything, and for a bot per district (the busiest district and the
median). ``--volume`` sets each issuer's invoices relative to the model's (default 0.1, quick; at 1.0
the rules meet Thanh Hóa's real per-seller rates, and small segments reach volume_drop's minimum).
Writes bench/results/score_alerts_<noise>_<season>_v<volume>.json beside the default file.

``--noise harsh`` is the same season in the harsh world (the realistic world's noise pushed further,
[noise.harsh] in the reference file): rules developed on the realistic world, checked on one they
were not. ``--keep DIR`` keeps each run's ingested feed (chDB store and ground truth) in DIR; a later
run with the same DIR, seed, season, noise and volume rescores the current rules on it in a fraction
of the time (the alert tables are emptied first).
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
from analytics.public_holidays import is_holiday
from base.config import Settings
from base.localtime import LOCAL_TZ
from deploy.kafka import LocalBroker, free_port
from deploy.worker_process import WorkerProcess
from kafka_io.offsets import end_offsets, group_positions
from kafka_io.topics import create_topics
from simulator.engine import Simulation, SimulationConfig
from simulator.noise import NOISES
from simulator.publish import publish_simulation
from sinks.clickhouse import ClickHouseStore
from sinks.webhook.config import Subscription

# what an evaluation writes: emptied before the rules are rescored on a kept feed
KEPT_ALERT_TABLES = ("alert_instances", "alert_events", "dormant_issuers", "segment_adoption")

DAYS = 60
SCALE = 0.025  # the registry at 2.5%: the city's segments hold 20-120 businesses
VOLUME = 0.1  # each issuer's invoices at 10% of the model's (quick runs); --volume for more
# the first day of each season's window: the holidays (if any) fall in the first weeks, history for the rules
SEASONS = {"june": dt.date(2024, 5, 6), "may-day": dt.date(2024, 4, 15), "tet": dt.date(2024, 1, 22)}
# the realistic world's season: six weeks of history, then the events, National Day (2-3 September) among them
REALISTIC_SEASON = "national-day"
SEASONS[REALISTIC_SEASON] = dt.date(2024, 7, 15)
SEASON_DAYS = {REALISTIC_SEASON: 66}  # the slide's fourth weekly step (day 42-44 + 21) and a few days after it
RESTAURANTS = [("5610", "380"), ("5610", "407")]
ENDPOINTS_EXAMPLE = Path(__file__).parent.parent / "alerts" / "endpoints.example.yaml"
DEFAULT_RULES = Path(__file__).parent.parent / "alerts" / "default_rules.yaml"
SEGMENTS = [("5610", "380"), ("4719", "380"), ("5630", "380"), ("4772", "380"), ("5610", "407"), ("4719", "382")]
# slides on the segments of 60+ eligible at this scale (30+ issuers): smaller ones lose one or two businesses a step
SLIDE_SEGMENTS = [("4719", "380"), ("5610", "380"), ("5630", "380"), ("9602", "380")]
# the volume fall: the one segment outside the others with the 150 invoices a day volume_drop needs at this scale
VOLUME_SEGMENTS = [("4711", "380")]
WITHIN_DAYS = 10  # the slide target: an alert within ten days of the first step
LARGE = 45  # issuers at the first step from which a 10–20% step (5+ businesses) is significant on its own


def scenario(seed: int, start: dt.date) -> tuple[dict, dict]:
    """The run's changes (one file) and its slide (another file, so its steps are told apart)."""
    rng = random.Random(seed)
    day = lambda n: (start + dt.timedelta(days=n)).isoformat()  # noqa: E731
    sector, unit = rng.choice(SEGMENTS)
    slide_sector, slide_unit = rng.choice([s for s in SLIDE_SEGMENTS if s != (sector, unit)])
    volume_sector, volume_unit = rng.choice([s for s in VOLUME_SEGMENTS if s != (sector, unit)])
    outage = rng.randrange(36, 52)
    changes = {
        "name": f"score run {seed}",
        "changes": [
            {"kind": "sector_drop", "vsic_code": sector, "admin_unit_code": unit,
             "share": round(rng.uniform(0.4, 0.8), 2), "from": day(rng.randrange(42, 49))},
            {"kind": "silent_issuer", "vsic_code": "4730", "min_invoices_per_day": 20,
             "from": day(rng.randrange(43, 50))},
            {"kind": "volume_drop", "vsic_code": volume_sector, "admin_unit_code": volume_unit,
             "factor": round(rng.uniform(0.3, 0.5), 2), "from": day(rng.randrange(36, 46))},
            {"kind": "feed_outage", "from": f"{day(outage)}T{rng.randrange(8, 14):02d}:00", "hours": 6},
            {"kind": "registry_change", "action": "move", "vsic_code": "4772", "admin_unit_code": "380",
             "to_admin_unit_code": "405", "from": day(33)},
            {"kind": "registry_change", "action": "close", "vsic_code": "4719", "admin_unit_code": "399", "count": 3,
             "from": day(37)},
        ],
    }  # fmt: skip
    share, every, first = round(rng.uniform(0.10, 0.20), 2), rng.randrange(5, 10), rng.randrange(36, 43)
    slide = {
        "name": f"score run {seed}: slide",
        "changes": [
            {"kind": "sector_drop", "vsic_code": slide_sector, "admin_unit_code": slide_unit, "share": share,
             "from": day(first + step * every)}
            for step in range(6)
        ],
    }  # fmt: skip
    return changes, slide


def realistic_scenario(seed: int, start: dt.date) -> tuple[dict, dict]:
    """The realistic season's changes and its slide: everything from the seventh week (day 42) on."""
    rng = random.Random(seed)
    day = lambda n: (start + dt.timedelta(days=n)).isoformat()  # noqa: E731
    sector, unit = rng.choice(RESTAURANTS)
    slide_sector, slide_unit = rng.choice([s for s in SLIDE_SEGMENTS if s != (sector, unit)])
    volume_sector, volume_unit = VOLUME_SEGMENTS[0]
    outage = rng.randrange(42, 56)
    changes = {
        "name": f"score run {seed} (realistic world)",
        "changes": [
            {"kind": "sector_drop", "vsic_code": sector, "admin_unit_code": unit,
             "share": round(rng.uniform(0.4, 0.8), 2), "from": day(rng.randrange(42, 49))},
            {"kind": "silent_issuer", "vsic_code": "4730", "min_invoices_per_day": 20,
             "from": day(rng.randrange(43, 50))},
            {"kind": "volume_drop", "vsic_code": volume_sector, "admin_unit_code": volume_unit,
             "factor": 0.5, "from": day(rng.randrange(42, 47))},
            {"kind": "feed_outage", "from": f"{day(outage)}T{rng.randrange(8, 14):02d}:00", "hours": 6},
        ],
    }  # fmt: skip
    first = rng.randrange(42, 45)
    slide = {
        "name": f"score run {seed}: slide",
        "changes": [
            {"kind": "sector_drop", "vsic_code": slide_sector, "admin_unit_code": slide_unit, "share": 0.12,
             "from": day(first + step * 7)}
            for step in range(4)
        ],
    }  # fmt: skip
    return changes, slide


def evaluated_delay(first: dt.date, day: dt.date) -> int:
    """Evaluated days from a change's first day to an alert's: public holidays, never evaluated, not counted."""
    return sum(not is_holiday(first + dt.timedelta(days=i)) for i in range(1, (day - first).days + 1))


def evaluation_time(day: dt.date, lateness_hours: float) -> float:
    """When a live evaluator judges ``day``: its local end plus the allowed lateness (UTC epoch seconds)."""
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=LOCAL_TZ)
    return (end + dt.timedelta(hours=lateness_hours)).timestamp()


def ingest(
    seed: int, season: str, start: dt.date, days: int, noise: str, volume: float, settings: Settings,
    bootstrap: str, paths: tuple[Path, Path],
) -> dict:  # fmt: skip
    """Simulate the run's feed, publish it and let the real worker drain it into chDB; the ground truth."""
    create_topics(bootstrap, settings)
    changes, slide = (realistic_scenario if season == REALISTIC_SEASON else scenario)(seed, start)
    for path, body in zip(paths, (changes, slide), strict=True):
        path.write_text(yaml.safe_dump(body, allow_unicode=True))
    config = SimulationConfig(
        scale=SCALE, start=start, days=days, seed=seed, volume=volume, scenarios=paths, noise=noise
    )
    sim = Simulation(config)
    publish_simulation(sim, bootstrap, settings.topics.registry, settings.topics.invoices)
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
    return sim.ground_truth()


def run_once(
    seed: int, season: str, bootstrap: str, work: Path, noise: str = "poisson", volume: float = VOLUME
) -> dict:
    run = uuid.uuid4().hex[:6]
    start = SEASONS[season]
    days = SEASON_DAYS.get(season, DAYS)
    # the worker's own evaluation timer held off: every day is evaluated below, at its own simulated time
    quiet_rules = yaml.safe_load(DEFAULT_RULES.read_text())
    quiet_rules["evaluation"]["interval_s"] = 10**9
    rules_file = work / f"rules-{seed}.yaml"
    rules_file.write_text(yaml.safe_dump(quiet_rules))
    settings = Settings(
        data_dir=work / f"run-{seed}", kafka_brokers=bootstrap, topic_prefix=f"score{run}.",
        app_id=f"score-{run}", partitions=4, web_port=free_port(), session_timeout_s=10, rules_file=rules_file,
    )  # fmt: skip
    paths = (work / f"scenario-{seed}.yaml", work / f"slide-{seed}.yaml")
    kept = work / f"run-{seed}" / "ingested.json"  # --keep: the feed of an earlier run, rules rescored on it
    identity = {"season": season, "noise": noise, "volume": volume}
    if kept.exists() and json.loads(kept.read_text())["run"] == identity:
        ground = json.loads(kept.read_text())["ground"]
        create_topics(bootstrap, settings)
        store = ClickHouseStore(settings.clickhouse_dsn)
        for table in KEPT_ALERT_TABLES:  # a fresh evaluator: no alert state from the earlier rules
            store.query_rows(f"TRUNCATE TABLE {table}")
    else:
        ground = ingest(seed, season, start, days, noise, volume, settings, bootstrap, paths)
        kept.write_text(json.dumps({"run": identity, "ground": ground}, default=str))
        store = ClickHouseStore(settings.clickhouse_dsn)
    truth = ground["changes"]
    rules = load_rules()
    evaluator = AlertEvaluator(store, rules, bootstrap, settings.topics.alerts, settings.topics.silences)
    # day by day at each day's own time, as live: the 24-hour repeats a recipient gets are then emitted
    lateness = rules.evaluation.allowed_lateness_hours
    for day in (start + dt.timedelta(days=j) for j in range(days)):
        evaluator.run(now=evaluation_time(day, lateness), until=day)
    evaluator.close()
    rows = store.query_rows("SELECT type, rule, labels, day, values, suppressed_by, severity FROM alert_events FINAL")
    store.close()
    events = [Event(t, r, dict(labels), day, json.loads(values), suppressed, severity)
              for t, r, labels, day, values, suppressed, severity in rows]  # fmt: skip
    scored = score(events, truth, paths[1].name, ground.get("noise"))
    row = {"season": season, "noise": noise, "volume": volume, **scored}
    row["webhooks_per_week"] = webhooks_per_week(events, days / 7)
    return row


@dataclass(frozen=True)
class Event:
    type: str
    rule: str
    labels: dict
    day: dt.date
    values: dict
    suppressed_by: str
    severity: str = ""


def webhooks_per_week(events: list[Event], weeks: float) -> dict[str, float]:
    """Webhooks a recipient gets a week: every unsuppressed firing, resolved and repeat its subscription matches.

    The endpoints of alerts/endpoints.example.yaml (enabled or not), one subscribing to everything,
    and a bot per district (``units: [code]``): the busiest district's and the median district's.
    """
    sent = [e for e in events if not e.suppressed_by]
    as_payload = [{"rule": e.rule, "severity": e.severity, "type": e.type, "labels": e.labels} for e in sent]
    example = yaml.safe_load(ENDPOINTS_EXAMPLE.read_text())["endpoints"]
    subscriptions = {"everything": Subscription()}
    for endpoint in example:
        wanted = endpoint.get("subscribe") or {}
        subscriptions[endpoint["name"]] = Subscription(**{k: frozenset(str(x) for x in v) for k, v in wanted.items()})
    out = {name: round(sum(sub.matches(p) for p in as_payload) / weeks, 1) for name, sub in subscriptions.items()}
    by_unit: dict[str, int] = {}
    for p in as_payload:
        unit = p["labels"].get("unit")
        if unit and unit != "*":
            by_unit[unit] = by_unit.get(unit, 0) + 1
    counts = sorted(by_unit.values())
    out["busiest district bot"] = round(counts[-1] / weeks, 1) if counts else 0.0
    out["median district bot"] = round(statistics.median(counts) / weeks, 1) if counts else 0.0
    by_type: dict[str, int] = {}
    for e in sent:
        by_type[e.type] = by_type.get(e.type, 0) + 1
    out.update({f"everything: {kind}": round(n / weeks, 1) for kind, n in sorted(by_type.items())})
    return out


def stop_days(truth: list[dict], noise: dict | None) -> dict[str, dt.date]:
    """Every seller that stopped for good (a scenario or the realistic world's churn), and from when."""
    out: dict[str, dt.date] = {}
    for change in truth:
        if change["kind"] in ("sector_drop", "silent_issuer") and change["until"] is None:
            for seller in change["sellers"]:
                out[seller] = dt.date.fromisoformat(change["from"])
    for entry in (noise or {}).get("stopped", []):
        out[entry["seller_id"]] = dt.date.fromisoformat(entry["from"])
    return out


def what_they_are(noise: dict | None) -> dict[str, str]:
    """Seller -> the realistic world's trait that makes it look silent (the reason a dormant alert is false)."""
    if noise is None:
        return {}
    out = {s: "holiday closure" for s in noise["holiday"]["closed"]}
    out.update({e["seller_id"]: "closed weekday" for e in noise["closed_weekday"]})
    out.update({e["seller_id"]: "started late" for e in noise["started"]})
    out.update({e["seller_id"]: "part-time" for e in noise["part_time"]})
    return out


def score(events: list[Event], truth: list[dict], slide_file: str, noise: dict | None = None) -> dict:
    fired = [e for e in events if e.type == "firing" and not e.suppressed_by]
    grown = [e for e in events if e.type == "repeat" and e.rule == "dormant_issuer" and not e.suppressed_by]
    steps = [t for t in truth if t["file"] == slide_file]
    drop = next(t for t in truth if t["kind"] == "sector_drop" and t["file"] != slide_file)
    silent = next(t for t in truth if t["kind"] == "silent_issuer")
    outage = next(t for t in truth if t["kind"] == "feed_outage")
    thinned = next(t for t in truth if t["kind"] == "volume_drop")
    pair = lambda t: (t["segments"][0]["vsic_code"], t["segments"][0]["admin_unit_code"])  # noqa: E731
    segment, sliding, volume = pair(drop), pair(steps[0]), pair(thinned)
    slide_from = dt.date.fromisoformat(steps[0]["from"])
    stopped = stop_days(truth, noise)
    traits = what_they_are(noise)
    dormant = {"partial": 0, "named": 0, "named_stopped": 0, "wrongly_named": {}}
    outage_day = dt.date.fromisoformat(outage["from"][:10])
    # the change each rule is there for, its first day, and when the rule first fired for it
    targets = {
        "adoption_drop": ("sector_drop", dt.date.fromisoformat(drop["from"])),
        "adoption_slide": ("slide", slide_from),
        "volume_drop": ("volume_fall", dt.date.fromisoformat(thinned["from"])),
        "dormant_issuer": ("silent_issuer", dt.date.fromisoformat(silent["from"])),
        "pipeline_silence": ("feed_outage", outage_day),
    }
    caught: dict[str, int | None] = dict.fromkeys(targets)
    per_rule: dict[str, list[int]] = {}
    alerts: list[list] = []  # every alert sent: rule, sector, unit, day, true positive
    slide_by_drop: int | None = None  # when the daily rule noticed the slide, for comparison
    for event in sorted(fired, key=lambda e: e.day):
        day, labels = event.day, event.labels
        at = (labels.get("sector"), labels.get("unit"))
        hit, found = False, False
        if event.rule == "adoption_drop":
            hit, found = at in (segment, sliding), at == segment
            if at == sliding and slide_by_drop is None:
                slide_by_drop = evaluated_delay(slide_from, day)
        elif event.rule == "adoption_slide":
            hit, found = at in (segment, sliding), at == sliding
        elif event.rule == "volume_drop":
            hit, found = at in (segment, sliding, volume), at == volume
        elif event.rule == "dormant_issuer":
            named = {s["seller_id"] for s in event.values["sellers"]}
            really = {s for s in named if s in stopped and stopped[s] <= day}
            hit = bool(named) and really == named
            found = bool(set(silent["sellers"]) & named)
            dormant["partial"] += bool(really) and not hit
            dormant["named"] += len(named)
            dormant["named_stopped"] += len(really)
            for seller in named - really:
                why = traits.get(seller, "none of those (a regular seller)")
                dormant["wrongly_named"][why] = dormant["wrongly_named"].get(why, 0) + 1
        elif event.rule == "pipeline_silence":
            hit = found = day == outage_day
        if found and event.rule in caught and caught[event.rule] is None:
            caught[event.rule] = evaluated_delay(targets[event.rule][1], day)
        counts = per_rule.setdefault(event.rule, [0, 0])
        counts[0] += 1
        counts[1] += hit
        alerts.append([event.rule, *at, day.isoformat(), hit])
    # a silent seller joining a unit's dormant alert that was already firing (its first such event: with
    # the daily repeats there are many, in no order)
    for event in sorted(grown, key=lambda e: e.day):
        named = {s["seller_id"] for s in event.values["sellers"]}
        if set(silent["sellers"]) & named and caught["dormant_issuer"] is None:
            caught["dormant_issuer"] = evaluated_delay(targets["dormant_issuer"][1], event.day)
    # the slide's first alert: adoption_slide, or adoption_drop when a fast slide trips it first (its firing
    # alert then mutes adoption_slide on the segment: one decline, one message)
    told = [(d, rule) for d, rule in ((caught["adoption_slide"], "adoption_slide"), (slide_by_drop, "adoption_drop"))
            if d is not None]  # fmt: skip
    first_alert, first_rule = min(told) if told else (None, None)
    slide_stopped = None
    if first_alert is not None:  # the share of the first step's issuers gone by then
        fired_on = slide_from + dt.timedelta(days=first_alert)
        gone = sum(t["details"]["stopped"] for t in steps if dt.date.fromisoformat(t["from"]) <= fired_on)
        slide_stopped = round(gone / steps[0]["details"]["issuers_before"], 3)
    # an alert at a segment whose change lasts to the end of the window, resolving anyway
    lasting = {segment, sliding, volume}
    resolved_early = {}
    for event in events:
        at = (event.labels.get("sector"), event.labels.get("unit"))
        if (
            event.type == "resolved"
            and event.rule in ("adoption_drop", "adoption_slide", "volume_drop")
            and (at in lasting)
        ):
            resolved_early[event.rule] = resolved_early.get(event.rule, 0) + 1
    return {
        "fired": len(fired), "true_positive": sum(ok for _, ok in per_rule.values()), "per_rule": per_rule,
        "dormant": dormant, "resolved_while_lasting": resolved_early,
        "delays": caught, "segment": segment, "volume_segment": volume, "alerts": alerts, "slide": {
            "segment": sliding, "step_share": steps[0]["details"]["share"],
            "every_days": (dt.date.fromisoformat(steps[1]["from"]) - slide_from).days,
            "issuers_before": steps[0]["details"]["issuers_before"], "stopped_when_caught": slide_stopped,
            "first_alert_days": first_alert, "first_alert_rule": first_rule, "adoption_drop_delay": slide_by_drop,
        },
    }  # fmt: skip


def summarise(rows: list[dict]) -> dict:
    rules = ("adoption_drop", "adoption_slide", "volume_drop", "dormant_issuer", "pipeline_silence", "pipeline_lag")
    summary: dict = {
        "runs": len(rows),
        "seasons": sorted({r["season"] for r in rows}),
        "noise": sorted({r["noise"] for r in rows}),
        "volume": sorted({r["volume"] for r in rows}),
    }
    fired = sum(r["fired"] for r in rows)
    summary["alerts_fired"] = fired
    summary["precision"] = round(sum(r["true_positive"] for r in rows) / fired, 3) if fired else 1.0
    for rule in rules:
        n = sum(r["per_rule"].get(rule, [0, 0])[0] for r in rows)
        ok = sum(r["per_rule"].get(rule, [0, 0])[1] for r in rows)
        delays = [r["delays"][rule] for r in rows if r["delays"].get(rule) is not None]
        line = {"precision": f"{ok}/{n}" if n else "-"}
        if rule != "pipeline_lag":
            line["recall"] = f"{len(delays)}/{len(rows)}"
            line["delay_days"] = f"median {statistics.median(delays)}, max {max(delays)}" if delays else "-"
        summary[rule] = line
    slides = [r["slide"] for r in rows]
    for label, group in (
        (f"{LARGE}+ issuers", [x for x in slides if x["issuers_before"] >= LARGE]),
        (f"under {LARGE} issuers", [x for x in slides if x["issuers_before"] < LARGE]),
    ):
        days = [x["first_alert_days"] for x in group]
        within = sum(d is not None and d <= WITHIN_DAYS for d in days)
        summary[f"slides {label}: alert within {WITHIN_DAYS} days"] = (
            f"{within}/{len(group)}, first alert after {sorted(d for d in days if d is not None)} days"
        )
    gone = [x["stopped_when_caught"] for x in slides if x["stopped_when_caught"] is not None]
    summary["slide share gone at first alert"] = (
        f"median {statistics.median(gone):.0%}, max {max(gone):.0%}" if gone else "-"
    )
    first = [x["first_alert_rule"] for x in slides]
    summary["slide first told by"] = {rule: first.count(rule) for rule in ("adoption_slide", "adoption_drop", None)}
    named = sum(r["dormant"]["named"] for r in rows)
    summary["dormant_issuer: partial (some named stopped)"] = sum(r["dormant"]["partial"] for r in rows)
    summary["dormant_issuer: named sellers really stopped"] = (
        f"{sum(r['dormant']['named_stopped'] for r in rows)}/{named}" if named else "-"
    )
    wrong: dict[str, int] = {}
    for r in rows:
        for why, n in r["dormant"]["wrongly_named"].items():
            wrong[why] = wrong.get(why, 0) + n
    summary["dormant_issuer: wrongly named, as"] = dict(sorted(wrong.items(), key=lambda kv: -kv[1]))
    summary["false alerts by rule"] = {
        rule: sum(r["per_rule"].get(rule, [0, 0])[0] - r["per_rule"].get(rule, [0, 0])[1] for r in rows)
        for rule in rules
    }
    resolved: dict[str, int] = {}
    for r in rows:
        for rule, n in r["resolved_while_lasting"].items():
            resolved[rule] = resolved.get(rule, 0) + n
    summary["resolved while the change lasted"] = resolved
    names = sorted({k for r in rows for k in r["webhooks_per_week"]}, key=lambda k: (":" in k, k))
    summary["webhooks per week (mean of runs)"] = {
        k: round(statistics.mean(r["webhooks_per_week"].get(k, 0.0) for r in rows), 1) for k in names
    }
    by_drop = [x["adoption_drop_delay"] for x in slides]
    summary["slides seen by adoption_drop"] = (
        f"{sum(d is not None for d in by_drop)}/{len(rows)}, after {sorted(d for d in by_drop if d is not None)} days"
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=18)
    parser.add_argument("--first-seed", type=int, default=100)
    parser.add_argument("--season", choices=sorted(SEASONS), help="only this season (default: each in turn)")
    parser.add_argument("--volume", type=float, default=VOLUME,
                        help="each issuer's invoices relative to the model's (1.0: Thanh Hóa's rates)")  # fmt: skip
    parser.add_argument("--noise", choices=NOISES, default="poisson",
                        help=f"the simulated world; realistic and harsh: the {REALISTIC_SEASON} season")  # fmt: skip
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep each run's ingested feed in DIR; a later run with the same DIR, seeds, season, "
                        "noise and volume rescores the rules on it without simulating or ingesting again")  # fmt: skip
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="einvoice-score-"))
    broker = LocalBroker(work / "kafka")
    bootstrap = broker.start()
    if args.season:
        seasons = [args.season]
    elif args.noise != "poisson":
        seasons = [REALISTIC_SEASON]
    else:
        seasons = [s for s in SEASONS if s != REALISTIC_SEASON]
    rows = []
    try:
        for i, seed in enumerate(range(args.first_seed, args.first_seed + args.runs)):
            started = time.perf_counter()
            row = run_once(seed, seasons[i % len(seasons)], bootstrap, work, args.noise, args.volume)
            row["seed"], row["seconds"] = seed, round(time.perf_counter() - started)
            rows.append(row)
            print(f"seed {seed} ({row['season']}): drop {row['segment']} slide {row['slide']} fired {row['fired']} "
                  f"true {row['true_positive']} delays {row['delays']} per rule [fired, true] {row['per_rule']} "
                  f"({row['seconds']} s)", flush=True)  # fmt: skip
    finally:
        broker.stop()
    summary = summarise(rows)
    print()
    for key, value in summary.items():
        print(f"{key:<48} {value}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    plain = args.noise == "poisson" and REALISTIC_SEASON not in seasons
    plain = plain and args.volume == VOLUME
    name = "score_alerts.json" if plain else f"score_alerts_{args.noise}_{'_'.join(seasons)}_v{args.volume:g}.json"
    (out / name).write_text(json.dumps({"summary": summary, "runs": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()

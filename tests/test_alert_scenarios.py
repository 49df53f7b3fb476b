"""Scenario tests: the simulator's feed through Kafka and the real worker, alerts by its leader timer.

One four-week run combines the situations the monitor must tell apart: restaurants of the city
stop issuing (and recover), a regular filling station goes silent, the feed is down for six
hours, a business moves district and three close. Scored against the simulator's ground truth.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request

import pytest
import yaml

from alerts.rules import DEFAULT_RULES
from simulator.engine import Simulation, SimulationConfig
from simulator.publish import publish_simulation
from tests.support import start_worker, wait_until
from tests.test_alert_evaluator import alert_topic_events

START = dt.date(2024, 6, 3)
DROP = dt.date(2024, 6, 17)
RECOVERY = dt.date(2024, 6, 24)
OUTAGE = dt.date(2024, 6, 12)
LAST_COMPLETE = dt.date(2024, 6, 27)  # data to 30 June ~23:00, minus 48 h: 27 June is the last whole day

SCENARIO = {
    "name": "Test: drop and recovery, silent station, outage, registry changes",
    "changes": [
        {"kind": "sector_drop", "vsic_code": "5610", "admin_unit_code": "380", "share": 0.6,
         "from": DROP.isoformat(), "until": RECOVERY.isoformat()},
        {"kind": "silent_issuer", "vsic_code": "4730", "admin_unit_code": "399", "min_invoices_per_day": 20,
         "from": "2024-06-19"},
        {"kind": "feed_outage", "from": f"{OUTAGE.isoformat()}T09:00", "hours": 6},
        {"kind": "registry_change", "action": "move", "vsic_code": "5610", "admin_unit_code": "380",
         "to_admin_unit_code": "405", "from": "2024-06-05"},
        {"kind": "registry_change", "action": "close", "vsic_code": "4719", "admin_unit_code": "399", "count": 3,
         "from": "2024-06-08"},
    ],
}  # fmt: skip


def evaluated_day(settings) -> str | None:
    url = f"http://127.0.0.1:{settings.web_port}/alerts"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read()).get("last_evaluated_day")
    except OSError:
        return None


@pytest.mark.slow
def test_scenarios_through_the_worker_fire_exactly_the_expected_alerts(settings, tmp_path):
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO, allow_unicode=True))
    rules = yaml.safe_load(DEFAULT_RULES.read_text())
    rules["evaluation"]["interval_s"] = 1
    rules["evaluation"]["max_days_per_run"] = 5  # several ticks, so the restart lands mid-way
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rules))
    settings = settings.replace(rules_file=rules_file)

    sim = Simulation(SimulationConfig(scale=0.025, start=START, days=28, seed=11, volume=0.1, scenarios=(scenario,)))
    publish_simulation(sim, settings.kafka_brokers or "", settings.topics.registry, settings.topics.invoices)
    truth = sim.ground_truth()["changes"]
    dropped = set(truth[0]["sellers"])
    [silent_seller] = truth[1]["sellers"]

    worker = start_worker(settings, name="worker-1")
    try:
        # a restart in the middle of the evaluation must change nothing
        wait_until(lambda: (evaluated_day(settings) or "") >= "2024-06-19", 300, "evaluation past the drop", worker)
    finally:
        worker.stop()
    worker = start_worker(settings, name="worker-2")
    try:
        wait_until(lambda: evaluated_day(settings) == LAST_COMPLETE.isoformat(), 300, "all complete days", worker)
    finally:
        worker.stop()

    events = alert_topic_events(settings)
    assert len({e["event_id"] for e in events}) == len(events), "an event was sent twice"
    by_rule: dict[str, list[dict]] = {}
    for event in events:
        by_rule.setdefault(event["rule"], []).append(event)

    # the drop: exactly that segment, soon after the first complete affected day, then resolved
    adoption = by_rule.get("adoption_drop", [])
    assert {(e["labels"]["sector"], e["labels"]["unit"]) for e in adoption} == {("5610", "380")}
    fired = [e for e in adoption if e["type"] == "firing"]
    assert len(fired) == 1
    assert DROP < dt.date.fromisoformat(fired[0]["day"]) <= DROP + dt.timedelta(days=3)
    resolved = [e for e in adoption if e["type"] == "resolved"]
    assert len(resolved) == 1 and RECOVERY <= dt.date.fromisoformat(resolved[0]["day"]) <= RECOVERY + dt.timedelta(3)

    # the silent filling station and the stopped restaurants are named, per unit
    dormant = [e for e in by_rule.get("dormant_issuer", []) if e["type"] in ("firing", "repeat")]
    named = {s["seller_id"]: e["labels"]["unit"] for e in dormant for s in e["values"]["sellers"]}
    assert named.get(silent_seller) == "399"
    assert dropped & set(named), "the stopped restaurants are dormant issuers of their unit"
    assert set(named) <= dropped | {silent_seller}, "a seller was named dormant without cause"

    # volume fell with the issuers in the dropped segment, and nowhere else
    volume = by_rule.get("volume_drop", [])
    assert {(e["labels"]["sector"], e["labels"]["unit"]) for e in volume} <= {("5610", "380")}
    # the outage is a data problem on its day (province-wide), not a drop
    silence = [e for e in by_rule.get("pipeline_silence", []) if e["type"] == "firing" and e["labels"]["unit"] == "*"]
    assert [e["day"] for e in silence] == [OUTAGE.isoformat()]
    assert not [e for e in events if e["rule"] in ("adoption_drop",) and e["day"] == OUTAGE.isoformat()]
    # a restart did not re-fire: one firing per fingerprint and episode
    firing_keys = [(e["fingerprint"], e["started_day"]) for e in events if e["type"] == "firing"]
    assert len(firing_keys) == len(set(firing_keys))
    time.sleep(0)  # keep the broker quiet for the next test

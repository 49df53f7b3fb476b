"""A deployment filled the way a user's is: the simulator's feed through Kafka and the real worker.

Four weeks of June 2024 with a drop (restaurants of the city), a filling station gone silent,
a feed outage and registry changes; a webhook receiver takes the alerts and one silence is set.
The worker runs until every complete day is evaluated, then stops, so the tests can open chDB.
Shared by the board and report tests (session scope: it costs about a minute).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from alerts.rules import DEFAULT_RULES
from alerts.silences import add_silence
from base.config import Settings
from deploy.worker_process import WorkerProcess
from harness.webhook_receiver import demo_receiver
from simulator.engine import Simulation, SimulationConfig
from simulator.publish import publish_simulation
from tests.support import deployment_settings, wait_until

START = dt.date(2024, 6, 3)
DROP = dt.date(2024, 6, 17)
LAST_COMPLETE = dt.date(2024, 6, 27)
SCENARIO = {
    "name": "Boards: a drop, a silent station, an outage, registry changes",
    "changes": [
        {"kind": "sector_drop", "vsic_code": "5610", "admin_unit_code": "380", "share": 0.6,
         "from": DROP.isoformat()},
        {"kind": "silent_issuer", "vsic_code": "4730", "admin_unit_code": "399", "min_invoices_per_day": 20,
         "from": "2024-06-19"},
        {"kind": "feed_outage", "from": "2024-06-12T09:00", "hours": 6},
        {"kind": "registry_change", "action": "close", "vsic_code": "4719", "admin_unit_code": "399", "count": 3,
         "from": "2024-06-08"},
    ],
}  # fmt: skip


@dataclass(frozen=True)
class FilledDeployment:
    settings: Settings
    silent_seller: str
    dropped_sellers: frozenset[str]
    silence_id: str
    deliveries: int  # webhook requests the receiver accepted
    published: int  # invoice records published (valid, duplicates and malformed)


@pytest.fixture(scope="session")
def filled_deployment(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FilledDeployment]:
    directory: Path = tmp_path_factory.mktemp("filled")
    scenario = directory / "scenario.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO, allow_unicode=True), encoding="utf-8")
    rules = yaml.safe_load(DEFAULT_RULES.read_text(encoding="utf-8"))
    rules["evaluation"]["interval_s"] = 1
    rules_file = directory / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rules), encoding="utf-8")
    settings = deployment_settings(kafka_bootstrap, directory).replace(rules_file=rules_file)

    sim = Simulation(SimulationConfig(scale=0.025, start=START, days=28, seed=11, volume=0.1, scenarios=(scenario,)))
    _, published = publish_simulation(sim, kafka_bootstrap, settings.topics.registry, settings.topics.invoices)
    truth = sim.ground_truth()["changes"]
    silence = add_silence(
        kafka_bootstrap, settings.topics.silences, {"rule": "volume_drop", "unit": "399"}, 30 * 86400,
        "Hoằng Hóa: known road works", "analyst@thanhhoa",
    )  # fmt: skip
    with demo_receiver(settings.data_dir, echo=lambda line: None) as (receiver, webhook_env):
        worker = WorkerProcess(
            {**settings.to_env(), **webhook_env}, settings.data_dir / "worker.log", settings.web_port
        )
        worker.start()
        try:
            worker.wait_healthy()
            wait_until(lambda: worker.evaluated_day() == LAST_COMPLETE.isoformat(), 400, "evaluation", worker)
            sent = worker.metric_sum("einvoice_alert_events_total")
            assert sent > 0, "the scenario produced no alert"
            wait_until(lambda: len(receiver.accepted()) >= 1, 60, "a webhook delivery", worker)
            topic = settings.topics.invoices
            read = lambda: worker.metric_sum("einvoice_events_total", topic=topic)  # noqa: E731
            wait_until(lambda: read() >= published, 120, "every record read", worker)
        finally:
            worker.stop()
        deliveries = len(receiver.accepted())
    yield FilledDeployment(
        settings, truth[1]["sellers"][0], frozenset(truth[0]["sellers"]), silence.silence_id, deliveries, published
    )

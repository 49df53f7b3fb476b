"""The pipeline's Prometheus rules, checked and unit-tested by promtool itself (built from its Go module).

``deploy/prometheus/tests/*.yml`` hold the cases: for every alert, series that must fire it and series
that must not. Here promtool runs them, and then runs them again against broken copies of each alert
(one that never fires, one that always fires, one without its ``for``): each break must fail them, or
the cases could not tell a working rule from a broken one.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.prometheus import ALERTMANAGER_CONFIG, PROMETHEUS_CONFIG, RULE_TESTS, RULES
from deploy.prometheus.tools import install

CASE_FILES = sorted(RULE_TESTS.glob("*_test.yml"))


@pytest.fixture(scope="module")
def tools() -> Path:
    return install()  # built once into the cache (`make prometheus`); a no-op when they are there


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def cases() -> list[tuple[Path, dict[str, Any]]]:
    """Every (file, alert_rule_test entry) of the case files."""
    found = []
    for path in CASE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            found.extend((path, case) for case in group.get("alert_rule_test", []))
    return found


def promtool(tools: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tools / "promtool", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_rules_and_configs_are_valid(tools: Path) -> None:
    checked = promtool(tools, "check", "config", PROMETHEUS_CONFIG)  # and the rule file it names
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 17 rules found" in checked.stdout
    amtool = subprocess.run(
        [tools / "amtool", "check-config", ALERTMANAGER_CONFIG], capture_output=True, text=True, timeout=60
    )
    assert amtool.returncode == 0, amtool.stdout + amtool.stderr


def test_every_alert_has_cases_that_fire_it_and_cases_that_do_not() -> None:
    fired, quiet = Counter(), Counter()
    for _path, case in cases():
        (fired if case["exp_alerts"] else quiet)[case["alertname"]] += 1
    for rule in alerts():
        assert fired[rule["alert"]] >= 1, f"{rule['alert']}: no case where it fires"
        assert quiet[rule["alert"]] >= 1, f"{rule['alert']}: no case where it must stay quiet"
        assert rule["labels"]["severity"] in ("page", "ticket") and rule["annotations"]["runbook"]
    assert len(cases()) == 33  # the count the README and docs/operations.md quote


def test_promtool_rule_cases_pass(tools: Path) -> None:
    done = promtool(tools, "test", "rules", *CASE_FILES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(CASE_FILES)


BREAKS = {
    "never fires": lambda rule: {**rule, "expr": "vector(1) == 0"},
    "always fires": lambda rule: {**rule, "expr": "vector(1)"},
    "without its for": lambda rule: {k: v for k, v in rule.items() if k != "for"},
}


@pytest.mark.parametrize("name", [rule["alert"] for rule in alerts()])
def test_a_broken_alert_fails_its_cases(tools: Path, tmp_path: Path, name: str) -> None:
    files = [path for path in CASE_FILES if f"alertname: {name}\n" in path.read_text(encoding="utf-8")]
    original = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for kind, broken in BREAKS.items():
        rule = next(rule for group in original["groups"] for rule in group["rules"] if rule.get("alert") == name)
        if kind == "without its for" and "for" not in rule:
            continue
        rules = {
            "groups": [
                {**group, "rules": [broken(r) if r is rule else r for r in group["rules"]]}
                for group in original["groups"]
            ]
        }
        workdir = tmp_path / kind.replace(" ", "-")
        (workdir / "tests").mkdir(parents=True)
        (workdir / RULES.name).write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
        copies = []
        for path in files:
            copy = workdir / "tests" / path.name
            copy.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
            copies.append(copy)
        done = promtool(tools, "test", "rules", *copies)
        assert done.returncode != 0, f"{name} {kind}: its cases still pass\n{done.stdout}{done.stderr}"
        assert "FAILED" in done.stdout + done.stderr, done.stdout + done.stderr


def served_metric_names() -> set[str]:
    """Every sample name a worker's /metrics can carry (labelled families included before their first child)."""
    from prometheus_client.parser import text_string_to_metric_families

    from sinks.webhook.metrics import WebhookMetrics
    from streams.metrics import IngestMetrics

    metrics = IngestMetrics()
    WebhookMetrics(metrics.metrics_registry)
    metrics.evaluator_progress.evaluated_through = 1.0
    from prometheus_client import generate_latest

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names = set()
    for family in text_string_to_metric_families(generate_latest(metrics.metrics_registry).decode()):
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names | {"up"}  # what Prometheus adds per target


def test_rules_and_board_queries_parse_and_name_only_metrics_the_worker_serves(tools: Path, tmp_path: Path) -> None:
    """A rule or panel naming a metric nobody serves would never fire, or stay empty, without an error."""
    from boards.promql import PIPELINE, RATE_WINDOW

    board = [query.expr.replace(RATE_WINDOW, "5m") for queries in PIPELINE.values() for query in queries]
    rules = [
        rule["expr"] for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"] for rule in group["rules"]
    ]
    as_rules = {
        "groups": [{"name": "board", "rules": [{"record": f"board:q{i}", "expr": e} for i, e in enumerate(board)]}]
    }
    (tmp_path / "board.yml").write_text(yaml.safe_dump(as_rules), encoding="utf-8")
    checked = promtool(tools, "check", "rules", tmp_path / "board.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    served = served_metric_names()
    named = {name for expr in [*board, *rules] for name in re.findall(r"\b((?:einvoice|process)_[a-z_]+|up)\b", expr)}
    assert named - served == set(), f"named but never served: {named - served}"
    assert {"einvoice_group_lag", "einvoice_worker_ready", "process_start_time_seconds", "up"} <= named

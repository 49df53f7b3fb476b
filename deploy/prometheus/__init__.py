"""Prometheus and Alertmanager for the pipeline's own health: rules, configs, and their binaries.

``rules.yml`` pages when the worker dies, hangs or stops ingesting (the adoption alerts come from
the worker itself); ``tests/`` holds its ``promtool test rules`` cases. :mod:`deploy.prometheus.tools`
builds promtool, prometheus, alertmanager and amtool from their Go modules into the project's cache.
"""

from pathlib import Path

HERE = Path(__file__).parent
RULES = HERE / "rules.yml"
PROMETHEUS_CONFIG = HERE / "prometheus.yml"
ALERTMANAGER_CONFIG = HERE / "alertmanager.yml"
RULE_TESTS = HERE / "tests"

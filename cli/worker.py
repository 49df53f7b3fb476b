"""The worker as it runs: the ingest app of :mod:`streams.app`, with the adoption alerts and the report attached.

The alerts (``alerts/``) and the report (``analytics/``) read what the worker wrote; they sit above it,
so they are wired in here, at the top, on the app's leader timer and web server, and the worker
package knows nothing of them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import faust

from alerts.evaluator import AlertEvaluator
from alerts.rules import load_rules
from analytics.adoption import unregistered
from analytics.report import period_report
from base.config import Settings
from base.localtime import LOCAL_TZ
from streams.app import Pipeline, create_app

log = logging.getLogger(__name__)


def create_worker(settings: Settings, bootstrap: str) -> faust.App:
    """The app ``einvoice-monitor worker`` runs: ingest, plus the alert evaluator and the /alerts and /report pages."""
    app = create_app(settings, bootstrap)
    pipeline: Pipeline = app.pipeline  # type: ignore[attr-defined]
    attach_alerts(app, pipeline, settings, bootstrap)
    attach_report(app, pipeline)
    return app


class AlertsLeader:
    """The evaluator of the worker that leads the group (None elsewhere, and after a failure: reloaded next time)."""

    def __init__(self) -> None:
        self.evaluator: AlertEvaluator | None = None


def attach_alerts(app: faust.App, pipeline: Pipeline, settings: Settings, bootstrap: str) -> AlertsLeader:
    """The evaluator on the leader's timer, each newly complete day once; /alerts shows its state."""
    rules = load_rules(settings.rules_file)
    topics = settings.topics
    leader = AlertsLeader()
    metrics = pipeline.metrics

    @app.timer(interval=rules.evaluation.interval_s, on_leader=True)
    async def evaluate_alerts() -> None:
        """The alert evaluator: on the leader only, every interval, each newly complete day once."""
        if pipeline.store is None or not pipeline.live:
            return
        if leader.evaluator is None:
            leader.evaluator = AlertEvaluator(pipeline.store, rules, bootstrap, topics.alerts, topics.silences)
        evaluator = leader.evaluator
        try:  # an exception escaping a Faust timer crashes the app; Kafka or ClickHouse away is retried next time
            lag = await pipeline.read_group()  # Kafka's word on the group, not this worker's own bookkeeping
            results = await asyncio.to_thread(evaluator.run, lag)
        except Exception:
            log.exception("alert evaluation failed; retrying at the next interval")
            metrics.alert_evaluation_failures.inc()
            leader.evaluator = None  # reload state from ClickHouse next time
            return
        for result in results:
            metrics.alert_events.inc(len(result.events))
        if evaluator.last_day is not None:
            day_after = evaluator.last_day + dt.timedelta(days=1)
            metrics.evaluator_progress.evaluated_through = dt.datetime.combine(
                day_after, dt.time(), LOCAL_TZ
            ).timestamp()

    @app.page("/alerts")
    async def alerts_page(web: Any, request: Any) -> Any:
        """Alert instances and the last evaluated day (the leader's view)."""
        if leader.evaluator is None:
            return web.json({"leader": False, "instances": [], "last_evaluated_day": None})
        return web.json({"leader": True, **leader.evaluator.snapshot()})

    return leader


def attach_report(app: faust.App, pipeline: Pipeline) -> None:
    """/report: the adoption report, so `einvoice-monitor report` works while this worker owns chDB."""

    @app.page("/report")
    async def report_page(web: Any, request: Any) -> Any:
        if pipeline.store is None:
            return web.json({"error": "starting"}, status=503)
        query = request.query
        try:
            first, last = dt.date.fromisoformat(query["from"]), dt.date.fromisoformat(query["to"])
            rows = await asyncio.to_thread(
                period_report, pipeline.store, first, last, level=query.get("level", "district"),
                sectors=query.getall("sector", []) or None, units=query.getall("unit", []) or None,
                sort=query.get("sort", "rate"),
            )  # fmt: skip
            outside = await asyncio.to_thread(unregistered, pipeline.store, first, last)
        except (KeyError, ValueError) as exc:
            return web.json({"error": str(exc)}, status=400)
        return web.json(
            {"rows": [r.as_json() for r in rows], "unregistered": [[d.isoformat(), i, n] for d, i, n in outside]}
        )

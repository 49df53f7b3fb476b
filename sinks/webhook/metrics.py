"""Webhook counters on a Prometheus registry: the worker passes its own, so they appear on /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class WebhookMetrics:
    def __init__(self, metrics_registry: CollectorRegistry | None = None) -> None:
        self.metrics_registry = metrics_registry or CollectorRegistry()
        r = self.metrics_registry
        self.attempts = Counter(
            "einvoice_webhook_attempts", "HTTP attempts, by outcome (delivered, retry, rejected, gone, exhausted, "
            "unsafe_url)", ["endpoint", "outcome"], registry=r,
        )  # fmt: skip
        self.delivered = Counter(
            "einvoice_webhook_delivered", "Events a receiver accepted (2xx)", ["endpoint"], registry=r
        )
        self.dead_letters = Counter(
            "einvoice_webhook_dead_letters", "Events written to the alert DLQ, by reason", ["endpoint", "reason"],
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "einvoice_webhook_attempt_seconds", "Latency of one HTTP attempt", ["endpoint"], registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )  # fmt: skip
        self.disabled = Gauge(
            "einvoice_webhook_endpoint_disabled", "1 when the endpoint is disabled (410 Gone or configuration)",
            ["endpoint"], registry=r,
        )  # fmt: skip
        self.retrying = Gauge(
            "einvoice_webhook_retrying", "1 while the endpoint waits to retry an event", ["endpoint"], registry=r
        )

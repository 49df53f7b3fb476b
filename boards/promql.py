"""The pipeline board's Prometheus queries: what Prometheus holds and the ClickHouse copy does not.

The worker copies its counters and gauges into ``pipeline_metrics`` (the SQL panels of
:mod:`boards.queries`); latency histograms, whether each worker answers its scrape, the group's
offsets as the broker sees them and the pipeline's own health alerts exist only in Prometheus
(``deploy/prometheus/``). ``tests/deploy/test_prometheus_rules.py`` parses every expression with
promtool and checks that each metric it names is one the worker serves.
"""

from __future__ import annotations

from dataclasses import dataclass

# Grafana's window for rate(): at least four scrape intervals (the data source's timeInterval)
RATE_WINDOW = "$__rate_interval"


@dataclass(frozen=True)
class PromQuery:
    expr: str
    legend: str


# panel key -> its queries (one series each)
PIPELINE: dict[str, tuple[PromQuery, ...]] = {
    # 1 per worker that answers its scrape, 0 for one that is down or hung
    "workers_up": (PromQuery('up{job="einvoice-worker"}', "{{instance}}"),),
    "latency_p99": (
        PromQuery(
            f"histogram_quantile(0.99, sum by (le) (rate(einvoice_batch_seconds_bucket[{RATE_WINDOW}])))", "batch p99"
        ),
        PromQuery(
            f"histogram_quantile(0.99, sum by (le) (rate(einvoice_insert_seconds_bucket[{RATE_WINDOW}])))", "insert p99"
        ),
    ),
    # read from the broker by every worker: one value per partition, whoever read it
    "group_lag_by_partition": (PromQuery("max by (partition) (einvoice_group_lag)", "{{partition}}"),),
    "health_alerts": (
        PromQuery('count by (alertname) (ALERTS{alertstate="firing", alertname=~"Einvoice.+"})', "{{alertname}}"),
    ),
}

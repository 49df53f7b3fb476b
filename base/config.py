"""Settings from environment variables, with defaults for the embedded mode.

``ENVIRONMENT`` is the single list of variables: ``Settings.from_env`` reads it, ``to_env``
writes it (for child processes), and the README's configuration table is checked against it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

APP_ID = "einvoice-monitor"
INVOICE_SUBJECT = "einvoice.issued-value"
REGISTRY_SUBJECT = "business.registry-value"
DEFAULT_DATA_DIR = Path(".data")
DEFAULT_GRAFANA_URL = "http://localhost:3000/d/einvoice-drilldown"
# The worker's Faust table of registrations: Faust names its changelog topic after the app and the table.
REGISTRY_TABLE = "registry"


def registry_changelog(app_id: str) -> str:
    """The registry table's changelog topic, as Faust names it (``<app id>-<table>-changelog``)."""
    return f"{app_id}-{REGISTRY_TABLE}-changelog"


def leader_topic(app_id: str) -> str:
    """Faust's leader-election topic (the alert evaluator runs on the leader)."""
    return f"{app_id}-__assignor-__leader"


@dataclass(frozen=True)
class Topics:
    """Topic names; a prefix lets several deployments (provinces, test runs) share one cluster."""

    invoices: str = "einvoice.issued"
    registry: str = "business.registry"
    invoices_dlq: str = "einvoice.issued.dlq"
    registry_dlq: str = "business.registry.dlq"
    alerts: str = "adoption.alerts"
    silences: str = "adoption.silences"
    alerts_dlq: str = "adoption.alerts.dlq"

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        return cls(**{f.name: prefix + getattr(cls, f.name) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class Settings:
    """One snapshot of the configuration; build it with :meth:`from_env`."""

    data_dir: Path = DEFAULT_DATA_DIR
    kafka_brokers: str | None = None
    clickhouse_url: str | None = None
    topic_prefix: str = ""
    partitions: int = 4
    replication_factor: int = -1
    min_insync_replicas: int | None = None
    retention_bytes: int = 16 * 1024**3
    app_id: str = APP_ID
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    batch_size: int = 40_000
    batch_within_s: float = 0.5
    dedup_horizon_hours: int = 72
    max_lateness_hours: int = 72
    future_tolerance_minutes: int = 10
    max_amount_vnd: int = 2_000_000_000
    invoice_code_pattern: str = r"^M(\d)-(\d{2})-[0-9A-Z]{5}-\d{11}$"
    session_timeout_s: float = 30.0
    metrics_interval_s: float = 10.0
    kafka_probe_interval_s: float = 15.0
    rules_file: Path | None = None
    webhooks_file: Path | None = None
    webhook_http_allowlist: str = ""
    grafana_url: str = DEFAULT_GRAFANA_URL
    role: str = "live"
    batch_core: str = "auto"
    fence: str = "on"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for field_name, (var, _doc) in ENVIRONMENT.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            kind = types[field_name]
            try:
                if kind in ("int", "int | None"):
                    values[field_name] = int(raw)
                elif kind == "float":
                    values[field_name] = float(raw)
                elif kind in ("Path", "Path | None"):
                    values[field_name] = Path(raw).expanduser()
                else:
                    values[field_name] = raw
            except ValueError:
                raise ValueError(
                    f"{var} must be {'a whole number' if kind.startswith('int') else 'a number'}, got {raw!r}"
                ) from None
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The variables that reproduce these settings in a child process."""
        env = {}
        for field_name, (var, _doc) in ENVIRONMENT.items():
            value = getattr(self, field_name)
            if value is not None:
                env[var] = str(value)
        return env

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def clickhouse_dsn(self) -> str:
        """A server URL when configured, else chDB in process under the data directory."""
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def topics(self) -> Topics:
        return Topics.with_prefix(self.topic_prefix)

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "kafka"


# Variables outside Settings: the tools' and the tests', never a deployment's configuration. The README's
# table lists them too.
CACHE_DIR_VARIABLE = "EINVOICE_CACHE_DIR"
FAULT_POINTS_VARIABLE = "EINVOICE_FAULT_POINTS"
# The tests' fault points (streams/freeze.py, sinks/clickhouse/faults.py): armed by a file under
# <data dir>/chaos/, live only in a process started with EINVOICE_FAULT_POINTS=1.
FAULTS_DIR = "chaos"


def fault_points_enabled() -> bool:
    return os.environ.get(FAULT_POINTS_VARIABLE) == "1"


TOOL_ENVIRONMENT: dict[str, str] = {
    CACHE_DIR_VARIABLE: "Where Kafka's jars and the Prometheus tools are cached (never in git).",
    FAULT_POINTS_VARIABLE: "1: the tests' fault points (a frozen worker, ClickHouse refusing writes) are live.",
}

# field -> (environment variable, what it means); the README's table lists the same.
ENVIRONMENT: dict[str, tuple[str, str]] = {
    "data_dir": ("EINVOICE_DATA_DIR", "Local state: the embedded broker, chDB data, Faust data."),
    "kafka_brokers": ("KAFKA_BROKERS", "Bootstrap servers of a Kafka cluster; unset = the local broker."),
    "clickhouse_url": ("CLICKHOUSE_URL", "http(s)://user:password@host:port/database of a server; unset = chDB."),
    "topic_prefix": ("EINVOICE_TOPIC_PREFIX", "Prefix of every topic name (several deployments, one cluster)."),
    "partitions": ("EINVOICE_PARTITIONS", "Partitions of every topic (the keyed topics must agree)."),
    "replication_factor": (
        "EINVOICE_REPLICATION_FACTOR",
        "Replication factor of created topics; -1 = the cluster's default.replication.factor.",
    ),
    "min_insync_replicas": (
        "EINVOICE_MIN_INSYNC_REPLICAS",
        "min.insync.replicas of created topics; unset = the cluster's default.",
    ),
    "retention_bytes": ("EINVOICE_RETENTION_BYTES", "Size retention per partition of invoice and DLQ topics."),
    "app_id": ("EINVOICE_APP_ID", "Faust app id: consumer group and changelog topic names."),
    "web_port": ("EINVOICE_WEB_PORT", "Worker web port: /health and /metrics."),
    "web_host": ("EINVOICE_WEB_HOST", "Worker web bind address."),
    "batch_size": ("EINVOICE_BATCH_SIZE", "Most records processed (and inserted) per batch."),
    "batch_within_s": ("EINVOICE_BATCH_WITHIN_S", "Longest wait to fill a batch, seconds."),
    "dedup_horizon_hours": ("EINVOICE_DEDUP_HORIZON_HOURS", "How long invoice codes are remembered for dedup."),
    "max_lateness_hours": ("EINVOICE_MAX_LATENESS_HOURS", "Oldest accepted issue time, behind the receive time."),
    "future_tolerance_minutes": ("EINVOICE_FUTURE_TOLERANCE_MINUTES", "Clock skew allowed ahead of receive time."),
    "max_amount_vnd": ("EINVOICE_MAX_AMOUNT_VND", "Largest plausible invoice amount, VND."),
    "invoice_code_pattern": ("EINVOICE_INVOICE_CODE_PATTERN", "Regex of the cash-register code: (form)(yy) groups."),
    "session_timeout_s": ("EINVOICE_SESSION_TIMEOUT_S", "Kafka consumer session timeout, seconds."),
    "metrics_interval_s": ("EINVOICE_METRICS_INTERVAL_S", "How often metrics are copied to ClickHouse, seconds."),
    "kafka_probe_interval_s": (
        "EINVOICE_KAFKA_PROBE_INTERVAL_S",
        "How often the group's offsets are read from the broker for /metrics (Prometheus's rules), seconds.",
    ),
    "rules_file": ("EINVOICE_RULES_FILE", "Alert rules (YAML); unset = alerts/default_rules.yaml."),
    "webhooks_file": ("EINVOICE_WEBHOOKS_FILE", "Webhook endpoints (YAML, as alerts/endpoints.example.yaml)."),
    "webhook_http_allowlist": ("EINVOICE_WEBHOOK_HTTP_ALLOWLIST", "Hosts webhooks may reach over plain http (a,b)."),
    "grafana_url": ("EINVOICE_GRAFANA_URL", "Grafana board linked from each webhook payload."),
    "role": ("EINVOICE_ROLE", "live; rebuild = ClickHouse only: no DLQ, alerts or webhooks (`replay rebuild`)."),
    "batch_core": ("EINVOICE_BATCH_CORE", "auto (compiled if built), compiled (required) or reference (Python)."),
    "fence": (
        "EINVOICE_FENCE",
        "on: the store's fence and the group's lease against a frozen worker; store or lease keeps one alone, "
        "off neither (only to show what each prevents: tests/e2e/test_takeover.py).",
    ),
}

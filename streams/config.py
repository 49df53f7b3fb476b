"""Settings from environment variables, with defaults for the embedded mode.

Every variable is listed in the README's configuration table; keep the two in step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

INVOICE_TOPIC = "einvoice.issued"
REGISTRY_TOPIC = "business.registry"
INVOICE_DLQ_TOPIC = "einvoice.issued.dlq"
REGISTRY_DLQ_TOPIC = "business.registry.dlq"
APP_ID = "einvoice-monitor"
LOCAL_TZ = "Asia/Ho_Chi_Minh"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from exc


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def default_cache_dir() -> Path:
    """Where downloaded artefacts (the Kafka jars) live: never inside git."""
    explicit = os.environ.get("EINVOICE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "einvoice-monitor"


@dataclass(frozen=True)
class Settings:
    """One snapshot of the configuration; build it with :meth:`from_env`."""

    data_dir: Path = Path(".data")
    kafka_brokers: str | None = None
    clickhouse_url: str | None = None
    partitions: int = 4
    replication_factor: int = 1
    retention_bytes: int = 16 * 1024**3
    app_id: str = APP_ID
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    batch_size: int = 2000
    batch_within_s: float = 0.25
    dedup_horizon_hours: int = 72
    max_lateness_hours: int = 72
    future_tolerance_minutes: int = 10
    max_amount_vnd: int = 2_000_000_000
    invoice_code_pattern: str = r"^M(\d)-(\d{2})-[0-9A-Z]{5}-\d{11}$"
    registry_wait_s: float = 60.0
    metrics_interval_s: float = 10.0
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> Settings:
        base = cls()
        return cls(
            data_dir=Path(os.environ.get("EINVOICE_DATA_DIR", str(base.data_dir))).expanduser(),
            kafka_brokers=os.environ.get("KAFKA_BROKERS") or None,
            clickhouse_url=os.environ.get("CLICKHOUSE_URL") or None,
            partitions=_env_int("EINVOICE_PARTITIONS", base.partitions),
            replication_factor=_env_int("EINVOICE_REPLICATION_FACTOR", base.replication_factor),
            retention_bytes=_env_int("EINVOICE_RETENTION_BYTES", base.retention_bytes),
            app_id=os.environ.get("EINVOICE_APP_ID", base.app_id),
            web_port=_env_int("EINVOICE_WEB_PORT", base.web_port),
            web_host=os.environ.get("EINVOICE_WEB_HOST", base.web_host),
            batch_size=_env_int("EINVOICE_BATCH_SIZE", base.batch_size),
            batch_within_s=_env_float("EINVOICE_BATCH_WITHIN_S", base.batch_within_s),
            dedup_horizon_hours=_env_int("EINVOICE_DEDUP_HORIZON_HOURS", base.dedup_horizon_hours),
            max_lateness_hours=_env_int("EINVOICE_MAX_LATENESS_HOURS", base.max_lateness_hours),
            future_tolerance_minutes=_env_int("EINVOICE_FUTURE_TOLERANCE_MINUTES", base.future_tolerance_minutes),
            max_amount_vnd=_env_int("EINVOICE_MAX_AMOUNT_VND", base.max_amount_vnd),
            invoice_code_pattern=os.environ.get("EINVOICE_INVOICE_CODE_PATTERN", base.invoice_code_pattern),
            registry_wait_s=_env_float("EINVOICE_REGISTRY_WAIT_S", base.registry_wait_s),
            metrics_interval_s=_env_float("EINVOICE_METRICS_INTERVAL_S", base.metrics_interval_s),
        )

    @property
    def clickhouse_dsn(self) -> str:
        """A server URL when configured, else chDB in process under the data directory."""
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "kafka"

    @property
    def embedded_clickhouse(self) -> bool:
        return self.clickhouse_url is None

"""The webhook body: an alert event as a documented JSON payload (``schemas/alert_webhook.schema.json``).

Built from the ``adoption.alerts`` record (``AlertEvent.as_json()``), with sector and unit names added
and each rule's figures also mapped onto four common fields (``rate``, ``baseline``, ``eligible``,
``active``) so a receiver can show any alert without knowing the rule.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import schemas
from base.localtime import LOCAL_TZ
from sinks.clickhouse.client import ClickHouseStore

PAYLOAD_VERSION = 1
SCHEMA_PATH = Path(schemas.__file__).resolve().parent / "alert_webhook.schema.json"
ROLLUP = "*"
ALL_SECTORS = "Tất cả các ngành"
WHOLE_PROVINCE = "Toàn tỉnh"

# rule -> (measure, value key of rate, of baseline, of eligible, of active)
MEASURES: dict[str, tuple[str, str | None, str | None, str | None, str | None]] = {
    "adoption_drop": ("issuing_share", "issuing_share", "baseline_share", "eligible", "active_today"),
    "adoption_slide": ("lapsed_share", "lapsed_share", "usual_lapsed_share", "eligible", "active_7d"),
    "volume_drop": ("invoices_per_day", "invoices", "baseline_invoices", None, None),
    "dormant_issuer": ("silent_sellers", "count", None, None, None),
    "pipeline_silence": ("longest_silent_hours", "longest_silent_hours", None, None, None),
    "pipeline_lag": ("consumer_lag", "consumer_lag", "max_consumer_lag", None, None),
}


@dataclass(frozen=True)
class Names:
    """Sector (VSIC) and unit (GSO) names by code; ``'*'`` is the all-sector or whole-province roll-up."""

    sectors: Mapping[str, str] = field(default_factory=dict)
    units: Mapping[str, str] = field(default_factory=dict)
    province: str = WHOLE_PROVINCE

    def sector(self, code: str) -> str | None:
        return ALL_SECTORS if code == ROLLUP else self.sectors.get(code)

    def unit(self, code: str) -> str | None:
        return self.province if code == ROLLUP else self.units.get(code)


def load_names(store: ClickHouseStore) -> Names:
    """Read ``sectors`` and ``admin_units`` once (blocking; runs on the store's thread)."""
    sectors = dict(store.query_rows("SELECT vsic_code, any(name) FROM sectors GROUP BY vsic_code"))
    units: dict[str, str] = {}
    province = WHOLE_PROVINCE
    for code, name, level in store.query_rows("SELECT code, any(name), any(level) FROM admin_units GROUP BY code"):
        units[code] = name
        if level == "province":
            province = name
    return Names(sectors, units, province)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _number(values: Mapping[str, Any], key: str | None) -> float | int | None:
    value = values.get(key) if key else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def _utc(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _local_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), LOCAL_TZ)


def grafana_link(board_url: str, rule: str, labels: Mapping[str, str], first: dt.date, last: dt.date) -> str:
    """The board, filtered to the alert's segment, from a week before it started to the end of its day."""
    params = {"var-rule": rule, **{f"var-{k}": v for k, v in sorted(labels.items())}}
    params["from"] = str(int(_local_midnight(first - dt.timedelta(days=7)).timestamp() * 1000))
    params["to"] = str(int(_local_midnight(last + dt.timedelta(days=1)).timestamp() * 1000))
    return board_url + ("&" if "?" in board_url else "?") + urlencode(params)


def build_payload(event: Mapping[str, Any], names: Names | None, grafana_url: str) -> dict[str, Any]:
    """The documented payload of one alert event (a dict as in ``AlertEvent.as_json()``)."""
    names = names or Names()
    labels: dict[str, str] = {str(k): str(v) for k, v in (event.get("labels") or {}).items()}
    rule = str(event["rule"])
    day = dt.date.fromisoformat(str(event["day"]))
    started = dt.date.fromisoformat(str(event["started_day"])) if event.get("started_day") else None
    raw_values = event.get("values") or {}
    measure, rate, baseline, eligible, active = MEASURES.get(rule, (rule, None, None, None, None))
    payload_labels: dict[str, Any] = {
        "sector": {"code": labels["sector"], "name": names.sector(labels["sector"])} if "sector" in labels else None,
        "unit": {"code": labels["unit"], "name": names.unit(labels["unit"])} if "unit" in labels else None,
    }
    for key, value in labels.items():
        if key not in payload_labels:
            payload_labels[key] = value
    kind = str(event["type"])
    return {
        "version": PAYLOAD_VERSION,
        "event_id": str(event["event_id"]),
        "type": kind,
        "timestamp": _utc(float(event["emitted_at"])),
        "alert": {
            "fingerprint": str(event["fingerprint"]),
            "rule": rule,
            "severity": str(event["severity"]),
            "status": "resolved" if kind == "resolved" else "firing",
            "labels": payload_labels,
            "values": {
                "measure": measure,
                "rate": _number(raw_values, rate),
                "baseline": _number(raw_values, baseline),
                "eligible": _number(raw_values, eligible),
                "active": _number(raw_values, active),
                "detail": _finite(dict(raw_values)),
            },
            "day": day.isoformat(),
            "started_day": started.isoformat() if started else None,
            "starts_at": _local_midnight(started or day).isoformat(),
            "ends_at": _local_midnight(day + dt.timedelta(days=1)).isoformat() if kind == "resolved" else None,
        },
        "links": {"grafana": grafana_link(grafana_url, rule, labels, started or day, day)},
    }


def encode(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes that are signed and sent (UTF-8, compact, names unescaped)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))

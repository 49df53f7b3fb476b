"""Put the boards into a running Grafana over its HTTP API (grafana-client), idempotently by uid.

For a Grafana that is not provisioned from deploy/grafana (a shared company instance): creates or
updates the folder, the ClickHouse data source (uid ``einvoice-clickhouse``), with a Prometheus URL the
pipeline's Prometheus data source (uid ``einvoice-prometheus``, which the pipeline board's health panels
read), and every board.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from boards.grafana import DATASOURCE_UID, PLUGIN, PROMETHEUS_UID, dashboards
from boards.i18n import t

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClickHouseConnection:
    """How Grafana reaches ClickHouse: a read-only user (never the worker's)."""

    host: str
    port: int = 8123
    protocol: str = "http"
    username: str = "grafana"
    password: str = ""
    database: str = "einvoice"
    secure: bool = False


@dataclass(frozen=True)
class PublishResult:
    folder_uid: str
    datasource: str  # created or updated
    dashboards: dict[str, str]  # uid -> url
    prometheus: str | None = None  # created, updated, or None when no Prometheus URL was given


def datasource_model(connection: ClickHouseConnection) -> dict[str, Any]:
    return {
        "name": "ClickHouse (einvoice)",
        "uid": DATASOURCE_UID,
        "type": PLUGIN,
        "access": "proxy",
        "jsonData": {
            "host": connection.host, "port": connection.port, "protocol": connection.protocol,
            "secure": connection.secure, "username": connection.username,
            "defaultDatabase": connection.database,
        },
        "secureJsonData": {"password": connection.password},
    }  # fmt: skip


def prometheus_model(url: str) -> dict[str, Any]:
    """The pipeline's Prometheus, as deploy/grafana/provisioning/datasources/prometheus.yaml provisions it."""
    return {
        "name": "Prometheus (pipeline)", "uid": PROMETHEUS_UID, "type": "prometheus", "access": "proxy",
        "url": url, "jsonData": {"timeInterval": "15s"},
    }  # fmt: skip


def _missing(exc: GrafanaClientError) -> bool:
    return getattr(exc, "status_code", None) == 404


def _put_datasource(api: GrafanaApi, uid: str, model: dict[str, Any]) -> str:
    """Create the data source, or update it in place by uid: "created" or "updated"."""
    try:
        api.datasource.get_datasource_by_uid(uid)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        api.datasource.create_datasource(model)
        return "created"
    api.datasource.update_datasource_by_uid(uid, model)
    return "updated"


def publish(
    api: GrafanaApi, connection: ClickHouseConnection, lang: str = "vi", prometheus_url: str | None = None
) -> PublishResult:
    """Folder, data sources, boards; each created when missing, else updated in place."""
    folder_uid = "einvoice" if lang == "vi" else "einvoice-en"
    try:
        api.folder.get_folder(folder_uid)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        api.folder.create_folder(t("folder", lang), uid=folder_uid)
        log.info("grafana folder created", extra={"folder_uid": folder_uid})
    datasource = _put_datasource(api, DATASOURCE_UID, datasource_model(connection))
    prometheus = _put_datasource(api, PROMETHEUS_UID, prometheus_model(prometheus_url)) if prometheus_url else None
    urls = {}
    for board in dashboards(lang).values():
        answer = api.dashboard.update_dashboard(
            {"dashboard": {**board, "id": None}, "folderUid": folder_uid, "overwrite": True,
             "message": "einvoice-monitor dashboards publish"}
        )  # fmt: skip
        urls[board["uid"]] = str(answer.get("url", ""))
    return PublishResult(folder_uid, datasource, urls, prometheus)

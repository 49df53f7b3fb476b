"""Put the boards into a running Grafana over its HTTP API (grafana-client), idempotently by uid.

For a Grafana that is not provisioned from deploy/grafana (a shared company instance): creates or
updates the folder, the ClickHouse data source (uid ``einvoice-clickhouse``) and every board.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from boards.grafana import DATASOURCE_UID, PLUGIN, dashboards
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


def _missing(exc: GrafanaClientError) -> bool:
    return getattr(exc, "status_code", None) == 404


def publish(api: GrafanaApi, connection: ClickHouseConnection, lang: str = "vi") -> PublishResult:
    """Folder, data source, boards; each created when missing, else updated in place."""
    folder_uid = "einvoice" if lang == "vi" else "einvoice-en"
    try:
        api.folder.get_folder(folder_uid)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        api.folder.create_folder(t("folder", lang), uid=folder_uid)
        log.info("grafana folder created", extra={"folder_uid": folder_uid})
    model = datasource_model(connection)
    try:
        api.datasource.get_datasource_by_uid(DATASOURCE_UID)
        api.datasource.update_datasource_by_uid(DATASOURCE_UID, model)
        datasource = "updated"
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        api.datasource.create_datasource(model)
        datasource = "created"
    urls = {}
    for board in dashboards(lang).values():
        answer = api.dashboard.update_dashboard(
            {"dashboard": {**board, "id": None}, "folderUid": folder_uid, "overwrite": True,
             "message": "einvoice-monitor dashboards publish"}
        )  # fmt: skip
        urls[board["uid"]] = str(answer.get("url", ""))
    return PublishResult(folder_uid, datasource, urls)

"""`einvoice-monitor dashboards publish` over real HTTP, against a loopback server that keeps state like
Grafana's HTTP API (the folder, data source and dashboard endpoints grafana-client calls).

No Grafana server can run here; this proves the requests, their idempotence by uid and that the
ClickHouse password travels only in secureJsonData. It does not prove Grafana accepts the models:
the committed JSON is checked against the code, and every query against ClickHouse, elsewhere.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from typer.testing import CliRunner

from boards.grafana import DATASOURCE_UID, dashboards
from cli.main import app

TOKEN = "glsa_test_token_0123456789"


class GrafanaState:
    def __init__(self) -> None:
        self.folders: dict[str, dict[str, Any]] = {}
        self.datasources: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, str]] = []  # method, path, authorization


def handler_for(state: GrafanaState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _reply(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")

        def _route(self, method: str) -> None:
            state.requests.append((method, self.path, self.headers.get("Authorization", "")))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._reply(401, {"message": "Unauthorized"})
            body = self._body() if method in ("POST", "PUT") else {}
            if m := re.fullmatch(r"/api/folders/([\w-]+)", self.path):
                folder = state.folders.get(m[1])
                return self._reply(200, folder) if folder else self._reply(404, {"message": "folder not found"})
            if self.path == "/api/folders" and method == "POST":
                state.folders[body["uid"]] = body
                return self._reply(200, body)
            if m := re.fullmatch(r"/api/datasources/uid/([\w-]+)", self.path):
                if m[1] not in state.datasources:
                    return self._reply(404, {"message": "Data source not found"})
                if method == "PUT":
                    state.datasources[m[1]] = body
                return self._reply(200, state.datasources[m[1]])
            if self.path == "/api/datasources" and method == "POST":
                state.datasources[body["uid"]] = body
                return self._reply(200, {"datasource": body})
            if self.path == "/api/dashboards/db" and method == "POST":
                board = body["dashboard"]
                state.dashboards[board["uid"]] = body
                return self._reply(200, {"status": "success", "uid": board["uid"], "url": f"/d/{board['uid']}/x"})
            return self._reply(404, {"message": f"no route {method} {self.path}"})

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PUT(self) -> None:
            self._route("PUT")

    return Handler


@pytest.fixture
def grafana() -> Iterator[tuple[str, GrafanaState]]:
    state = GrafanaState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


def publish(url: str, *extra: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(
        app, ["dashboards", "publish", "--url", url, "--clickhouse-host", "ch.internal", *extra],
        env={"GRAFANA_TOKEN": TOKEN, "CLICKHOUSE_GRAFANA_PASSWORD": "ro-Secret-42", **(env or {})},
    )  # fmt: skip


def test_publish_creates_then_updates_in_place_by_uid(grafana):
    url, state = grafana
    first = publish(url)
    assert first.exit_code == 0, first.output
    assert "data source created" in first.output
    second = publish(url)
    assert second.exit_code == 0 and "data source updated" in second.output
    assert set(state.folders) == {"einvoice"}
    assert set(state.datasources) == {DATASOURCE_UID}
    expected = dashboards("vi")
    assert set(state.dashboards) == {b["uid"] for b in expected.values()}
    for board in expected.values():
        sent = state.dashboards[board["uid"]]
        assert sent["folderUid"] == "einvoice" and sent["overwrite"] is True
        assert sent["dashboard"].pop("id") is None  # by uid: a copy from another Grafana must not clash on id
        assert sent["dashboard"] == board
    ds = state.datasources[DATASOURCE_UID]
    assert ds["type"] == "grafana-clickhouse-datasource" and ds["jsonData"]["host"] == "ch.internal"
    assert ds["jsonData"]["username"] == "grafana" and ds["secureJsonData"] == {"password": "ro-Secret-42"}
    assert "ro-Secret-42" not in json.dumps(ds["jsonData"])
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in state.requests)
    # no secret on the terminal
    assert TOKEN not in first.output + second.output and "ro-Secret-42" not in first.output + second.output


def test_publish_with_a_prometheus_url_puts_the_pipeline_boards_second_data_source(grafana):
    from boards.grafana import PROMETHEUS_UID

    url, state = grafana
    without = publish(url)
    assert without.exit_code == 0 and "no --prometheus-url" in without.output
    assert PROMETHEUS_UID not in state.datasources
    first = publish(url, "--prometheus-url", "http://prometheus.internal:9090")
    second = publish(url, "--prometheus-url", "http://prometheus.internal:9091")
    assert "Prometheus data source created" in first.output and "Prometheus data source updated" in second.output
    ds = state.datasources[PROMETHEUS_UID]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus.internal:9091"
    # the uid the board's Prometheus panels read
    board = dashboards("vi")["pipeline"]
    uids = {t["datasource"]["uid"] for p in board["panels"] for t in p.get("targets", []) if "expr" in t}
    assert uids == {PROMETHEUS_UID}


def test_publish_all_languages_uses_one_folder_each(grafana):
    url, state = grafana
    result = publish(url, "--lang", "all")
    assert result.exit_code == 0, result.output
    assert set(state.folders) == {"einvoice", "einvoice-en"}
    assert len(state.dashboards) == 10


def test_publish_without_token_or_with_a_wrong_one_says_what_to_do(grafana):
    url, _ = grafana
    missing = CliRunner().invoke(app, ["dashboards", "publish", "--url", url], env={"GRAFANA_TOKEN": ""})
    assert missing.exit_code == 2 and "GRAFANA_TOKEN" in missing.output
    wrong = publish(url, env={"GRAFANA_TOKEN": "nope"})
    assert wrong.exit_code == 1 and "refused or failed" in wrong.output


def test_build_check_reports_stale_boards(tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["dashboards", "build", "--out", str(tmp_path)]).exit_code == 0
    assert runner.invoke(app, ["dashboards", "build", "--out", str(tmp_path), "--check"]).exit_code == 0
    (tmp_path / "vi" / "overview.json").write_text("{}", encoding="utf-8")
    stale = runner.invoke(app, ["dashboards", "build", "--out", str(tmp_path), "--check"])
    assert stale.exit_code == 1 and "overview.json" in stale.output

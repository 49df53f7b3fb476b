"""Prometheus and Alertmanager on loopback, from the shipped configs: for the end-to-end test and a look by hand.

The configs are the files docker-compose.yml mounts (``prometheus.yml``, ``alertmanager.yml``, ``rules.yml``),
rendered with loopback addresses only: the workers' ports as scrape targets, this Alertmanager as
Prometheus's, and one receiver URL for every Alertmanager receiver. Intervals, ``for`` and routing stay
as shipped, so what the test measures is what an operator gets.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from deploy.kafka import free_port
from deploy.prometheus import ALERTMANAGER_CONFIG, PROMETHEUS_CONFIG, RULES
from deploy.prometheus.tools import tool


class _Server:
    """A child process serving HTTP on 127.0.0.1:``port``, its output in ``log_path``."""

    name = ""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.log_path = directory / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _start(self, args: list[str], ready_path: str, timeout: float = 60.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            with (
                contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
                urllib.request.urlopen(self.url + ready_path, timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.tail()}")

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            return json.loads(response.read())

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class LocalAlertmanager(_Server):
    name = "alertmanager"

    def start(self, receiver_url: str) -> LocalAlertmanager:
        """Every receiver of the shipped config posts to ``receiver_url`` (instead of its url_file)."""
        config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
        for receiver in config["receivers"]:
            for webhook in receiver.get("webhook_configs", []):
                webhook.pop("url_file", None)
                webhook["url"] = receiver_url
        path = self.directory / "alertmanager.yml"
        self.directory.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        self._start(
            [str(tool("alertmanager")), f"--config.file={path}", f"--storage.path={self.directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],  # one node, no gossip port
            "/-/ready",
        )  # fmt: skip
        return self


class LocalPrometheus(_Server):
    name = "prometheus"

    def start(self, worker_ports: Sequence[int], alertmanager: LocalAlertmanager) -> LocalPrometheus:
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
        config["rule_files"] = [str(RULES)]
        config["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager.port}"]}]}]
        (job,) = (job for job in config["scrape_configs"] if job["job_name"] == "einvoice-worker")
        job["static_configs"] = [{"targets": [f"127.0.0.1:{port}" for port in worker_ports]}]
        path = self.directory / "prometheus.yml"
        self.directory.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        self._start(
            [str(tool("prometheus")), f"--config.file={path}", f"--storage.tsdb.path={self.directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            "/-/ready",
        )  # fmt: skip
        return self

    def scrape_interval_s(self) -> float:
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
        return duration_seconds(config["global"]["scrape_interval"])

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        page = self.get_json("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        return page["data"]["result"]


def duration_seconds(duration: str) -> float:
    """A Prometheus duration (15s, 1m) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for suffix in ("ms", "s", "m", "h"):
        if duration.endswith(suffix):
            return float(duration[: -len(suffix)]) * units[suffix]
    raise ValueError(f"not a Prometheus duration: {duration}")

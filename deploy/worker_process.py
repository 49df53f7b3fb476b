"""The worker as a child process: started, watched through its web port, stopped or killed.

The demo, the tests and the benchmarks all run the real ``einvoice-monitor worker`` this way,
so what they measure is what a user runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path, web_port: int) -> None:
        self.env = {**os.environ, **env, "EINVOICE_WEB_PORT": str(web_port)}
        self.log_path = log_path
        self.web_port = web_port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker"], env=self.env, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log_file.close()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.web_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"worker exited with {self.proc and self.proc.returncode}; log:\n{self.tail()}")
            try:
                status, _ = self._get("/health")
                if status == 200:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"worker not healthy after {timeout}s; log:\n{self.tail()}")

    def get_json(self, path: str) -> object | None:
        """A JSON page of the worker's web server; None when it does not answer 200."""
        import json

        try:
            status, body = self._get(path)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None
        return json.loads(body) if status == 200 else None

    def evaluated_day(self) -> str | None:
        """The newest day the alert evaluator finished (``/alerts``), ISO; None before the first."""
        page = self.get_json("/alerts")
        return page.get("last_evaluated_day") if isinstance(page, dict) else None

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, keyed by (name, sorted labels)."""
        _, body = self._get("/metrics")
        samples = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def metric_sum(self, name: str, **labels: str) -> float:
        total = 0.0
        for (sample_name, sample_labels), value in self.metrics().items():
            if sample_name == name and all(dict(sample_labels).get(k) == v for k, v in labels.items()):
                total += value
        return total

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if not self.running or self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the worker's whole process group: a crash, not a shutdown."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

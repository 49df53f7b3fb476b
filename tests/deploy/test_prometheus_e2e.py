"""A dead worker pages someone: real Prometheus and Alertmanager, built from their Go modules, on loopback.

Two workers run, each its own deployment on the session's broker. Prometheus scrapes both with the shipped
prometheus.yml and rules.yml; Alertmanager routes with the shipped alertmanager.yml to a webhook receiver on
loopback. One worker is SIGKILLed (a crash), the other SIGSTOPped (a hang: its port stays open and the
scrape times out). Both must page within the rule's ``for`` plus a scrape and an evaluation interval and
Alertmanager's group_wait; brought back, both must resolve.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from deploy.prometheus import ALERTMANAGER_CONFIG, PROMETHEUS_CONFIG, RULES
from deploy.prometheus.local import LocalAlertmanager, LocalPrometheus, duration_seconds
from deploy.prometheus.tools import install
from harness.webhook_receiver import WebhookReceiver
from tests.support import deployment_settings, start_worker, wait_until

ALERT = "EinvoiceWorkerDown"


def notifications(receiver: WebhookReceiver, status: str) -> dict[str, float]:
    """instance -> when the receiver first got ``ALERT`` in ``status`` for it."""
    first: dict[str, float] = {}
    for item in receiver.all():
        for alert in (item.payload or {}).get("alerts", []):
            if alert["labels"].get("alertname") == ALERT and alert["status"] == status:
                first.setdefault(alert["labels"]["instance"], item.at)
    return first


def shipped_timing() -> tuple[float, ...]:
    """(for, scrape interval, evaluation interval, group_wait, group_interval) as shipped, in seconds."""
    rule = next(
        rule
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if rule.get("alert") == ALERT
    )
    prometheus = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["global"]
    route = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())["route"]
    durations = (rule["for"], prometheus["scrape_interval"], prometheus["evaluation_interval"], route["group_wait"],
                 route["group_interval"])  # fmt: skip
    return tuple(duration_seconds(d) for d in durations)


@pytest.mark.slow
def test_a_killed_and_a_hung_worker_page_then_resolve(kafka_bootstrap: str, tmp_path: Path) -> None:
    install()
    for_s, scrape_s, evaluation_s, group_wait_s, group_interval_s = shipped_timing()
    killed_settings = deployment_settings(kafka_bootstrap, tmp_path / "killed")
    hung_settings = deployment_settings(kafka_bootstrap, tmp_path / "hung")
    receiver = WebhookReceiver(path="/alertmanager")
    receiver.start()
    alertmanager, prometheus = LocalAlertmanager(tmp_path / "am"), LocalPrometheus(tmp_path / "prom")
    killed = start_worker(killed_settings, name="killed")
    hung = start_worker(hung_settings, name="hung")
    hung_pid = hung.proc.pid if hung.proc else 0
    try:
        alertmanager.start(receiver.url)
        prometheus.start([killed_settings.web_port, hung_settings.web_port], alertmanager)
        wait_until(
            lambda: sum(float(s["value"][1]) for s in prometheus.query('up{job="einvoice-worker"}')) == 2,
            timeout=4 * scrape_s, what="Prometheus scraping both workers",
        )  # fmt: skip
        ready = prometheus.query("einvoice_worker_ready")
        assert sorted(float(s["value"][1]) for s in ready) == [1.0, 1.0]
        # what the ingest rules read: the group's offsets from the broker, per partition, from each worker
        partitions = killed_settings.partitions + hung_settings.partitions
        wait_until(
            lambda: len(prometheus.query("einvoice_group_lag")) == partitions, timeout=6 * scrape_s,
            what="the group's offsets probed from the broker",
        )  # fmt: skip
        contact = prometheus.query("time() - einvoice_kafka_last_contact_seconds")
        assert len(contact) == 2 and all(float(s["value"][1]) < 4 * scrape_s for s in contact), contact

        # -- the crash and the hang ------------------------------------------------------------------------------
        struck = time.time()
        killed.kill()
        os.killpg(hung_pid, signal.SIGSTOP)
        instances = {f"127.0.0.1:{killed_settings.web_port}": "killed", f"127.0.0.1:{hung_settings.web_port}": "hung"}
        page_bound = for_s + scrape_s + 2 * evaluation_s + group_wait_s + 15  # 15 s: the hung scrape's timeout slack
        wait_until(lambda: len(notifications(receiver, "firing")) == 2, timeout=page_bound + 60, what="both pages")
        paged = {instances[i]: at - struck for i, at in notifications(receiver, "firing").items()}
        print(f"page after: {paged} (for {for_s:.0f} s, scrape {scrape_s:.0f} s, bound {page_bound:.0f} s)")
        assert all(for_s <= delay <= page_bound for delay in paged.values()), paged
        # the pager route took it, and nothing else paged: one dead worker, one page each
        pages = [a for item in receiver.all() for a in (item.payload or {}).get("alerts", [])]
        assert {a["labels"]["alertname"] for a in pages} == {ALERT}
        assert {a["labels"]["severity"] for a in pages} == {"page"}

        # -- back ------------------------------------------------------------------------------------------------
        back = time.time()
        os.killpg(hung_pid, signal.SIGCONT)
        killed = start_worker(killed_settings, name="killed")
        resolve_bound = scrape_s + 2 * evaluation_s + group_interval_s + 30
        wait_until(
            lambda: len(notifications(receiver, "resolved")) == 2, timeout=resolve_bound + 60, what="both resolves"
        )
        resolved = {instances[i]: at - back for i, at in notifications(receiver, "resolved").items()}
        print(f"resolve after the worker is back: {resolved} (bound {resolve_bound:.0f} s)")
        assert all(delay <= resolve_bound for delay in resolved.values()), resolved
        assert hung.running, f"the hung worker did not survive its hang:\n{hung.tail()}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(hung_pid, signal.SIGCONT)
        for worker in (killed, hung):
            worker.stop()
        prometheus.stop()
        alertmanager.stop()
        receiver.stop()

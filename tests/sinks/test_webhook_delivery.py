"""Webhook delivery on real components: the session's Kafka broker, chDB, and HTTP servers on 127.0.0.1.

Every receiver is a real aiohttp server (``harness/webhook_receiver.py``) that verifies each request
with the ``standardwebhooks`` library; nothing is mocked. Retry schedules are shortened to
fractions of a second so the module runs in about a minute and a half.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from prometheus_client import CollectorRegistry

from alerts.lifecycle import AlertEvent, fingerprint
from base.config import Settings
from base.logs import LogfmtFormatter
from deploy.kafka import free_port
from harness.webhook_receiver import Received, Reply, WebhookReceiver
from sinks.clickhouse import ClickHouseStore, apply_migrations
from sinks.webhook import (
    EndpointConfig,
    RetryPolicy,
    Secret,
    Subscription,
    WebhookConfig,
    WebhookDispatcher,
    load_webhook_config,
    new_secret,
    redeliver,
)
from sinks.webhook.dead_letters import read_pending
from sinks.webhook.payload import load_schema
from tests.support import read_topic

FAST = RetryPolicy(initial_s=0.2, multiplier=2.0, max_s=1.0, horizon_s=60.0, jitter=0.1)
LOCAL = frozenset({"127.0.0.1"})
ROOT = Path(__file__).resolve().parents[2]


# -- helpers ------------------------------------------------------------------------------------------------------


def dlq_topic(settings: Settings) -> str:
    """The alert DLQ (created here until kafka_io/topics.py lists it)."""
    name = getattr(settings.topics, "alerts_dlq", None) or settings.topic_prefix + "adoption.alerts.dlq"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_brokers)
    try:
        admin.create_topics([NewTopic(name, settings.partitions, 1, topic_configs={"cleanup.policy": "compact"})])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()
    return name


@pytest.fixture
def store(settings: Settings) -> Iterator[ClickHouseStore]:
    opened = ClickHouseStore(settings.clickhouse_dsn)
    opened.call(apply_migrations, opened.client)
    try:
        yield opened
    finally:
        opened.close()


def alert(n: int = 0, rule: str = "adoption_drop", labels: dict[str, str] | None = None, severity: str = "critical",
          kind: str = "firing") -> AlertEvent:  # fmt: skip
    labels = {"sector": "4730", "unit": "399"} if labels is None else labels
    fp = fingerprint(rule, labels)
    day = dt.date(2024, 6, 10) + dt.timedelta(days=n)
    values = {"issuing_share": 0.5, "baseline_share": 0.8, "eligible": 40, "active_today": 20}
    return AlertEvent(
        event_id=f"{fp}-{kind}-{day}", type=kind, fingerprint=fp, rule=rule, labels=labels, severity=severity,
        day=day, started_day=day - dt.timedelta(days=1), values=values, emitted_at=time.time(),
    )  # fmt: skip


def publish(settings: Settings, events: list[AlertEvent]) -> None:
    """As ``AlertEvaluator._publish`` does: JSON value, key = fingerprint, header event_id."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_brokers, acks="all")
    try:
        for event in events:
            body = json.dumps(event.as_json(), ensure_ascii=False, default=str).encode()
            producer.send(settings.topics.alerts, key=event.fingerprint.encode(), value=body,
                          headers=[("event_id", event.event_id.encode())])  # fmt: skip
        producer.flush()
    finally:
        producer.close()


def endpoint(name: str, url: str, *secrets: str, **changes: object) -> EndpointConfig:
    values: dict[str, object] = {"timeout_s": 3.0, "retry": FAST, "allow_private": True, "backfill_s": 3600.0}
    values.update(changes)
    return EndpointConfig(name=name, url=url, secrets=tuple(Secret(s) for s in secrets), **values)  # type: ignore[arg-type]


def dispatcher(settings: Settings, store: ClickHouseStore | None, *endpoints: EndpointConfig,
               registry: CollectorRegistry | None = None) -> WebhookDispatcher:  # fmt: skip
    return WebhookDispatcher(
        bootstrap=settings.kafka_brokers or "", alerts_topic=settings.topics.alerts, dlq_topic=dlq_topic(settings),
        app_id=settings.app_id, config=WebhookConfig(tuple(endpoints), LOCAL), store=store, metrics_registry=registry,
        session_timeout_s=6.0,
    )  # fmt: skip


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def run_with(d: WebhookDispatcher, body: Callable[[], object]) -> None:
    """Start the dispatcher, run the async ``body``, stop it whatever happens."""

    async def scenario() -> None:
        await d.start()
        try:
            await body()  # type: ignore[misc]
        finally:
            await d.stop()

    asyncio.run(scenario())


def attempts(store: ClickHouseStore, endpoint_name: str | None = None) -> list[tuple]:
    where = "" if endpoint_name is None else f"WHERE endpoint = '{endpoint_name}'"
    return store.query_rows(
        f"SELECT endpoint, event_id, attempt, outcome, status, error, source FROM webhook_attempts {where} "
        "ORDER BY attempted_at, attempt"
    )


def failing(times: int, reply: Reply) -> Callable[[int, Received], Reply]:
    return lambda index, item: reply if index < times else Reply(200)


# -- tests --------------------------------------------------------------------------------------------------------


def test_signed_payloads_verified_by_standardwebhooks_each_endpoint_its_own_copy(settings, store):
    everything, new, old, warnings = new_secret(), new_secret(), new_secret(), new_secret()
    events = [
        alert(0),
        alert(1, labels={"sector": "4711", "unit": "380"}),
        alert(2, rule="dormant_issuer", labels={"unit": "399"}, severity="warning"),
    ]
    publish(settings, events)
    with (
        WebhookReceiver(everything) as all_rx,
        WebhookReceiver(old) as rotating_rx,  # the receiver still on the old secret during a rotation
        WebhookReceiver(warnings) as warning_rx,
    ):
        d = dispatcher(
            settings, store,
            endpoint("everything", all_rx.url, everything),
            endpoint("rotating", rotating_rx.url, new, old),
            endpoint("warnings", warning_rx.url, warnings, subscribe=Subscription(severities=frozenset({"warning"}))),
        )  # fmt: skip

        async def body() -> None:
            await until(
                lambda: (len(all_rx.accepted()), len(rotating_rx.accepted()), len(warning_rx.accepted())) == (3, 3, 1),
                60, "every endpoint's copy",
            )  # fmt: skip
            await asyncio.sleep(1.0)  # and nothing more

        run_with(d, body)
    validator = jsonschema.Draft202012Validator(load_schema(), format_checker=jsonschema.FormatChecker())
    for receiver in (all_rx, rotating_rx, warning_rx):
        for item in receiver.all():
            assert item.verified, item.error
            assert not list(validator.iter_errors(item.payload))
            assert item.webhook_id == item.payload["event_id"]
    assert len(all_rx.all()) == 3 and len(rotating_rx.all()) == 3 and len(warning_rx.all()) == 1
    assert sorted(r.webhook_id for r in all_rx.all()) == sorted(e.event_id for e in events)
    assert all(len(r.headers["webhook-signature"].split(" ")) == 2 for r in rotating_rx.all())
    assert warning_rx.all()[0].payload["alert"]["rule"] == "dormant_issuer"
    first = next(r.payload for r in all_rx.all() if r.webhook_id == events[0].event_id)
    assert first["alert"]["labels"] == {
        "sector": {"code": "4730", "name": "Bán lẻ nhiên liệu động cơ"},
        "unit": {"code": "399", "name": "Huyện Hoằng Hóa"},
    }  # names from the reference tables in ClickHouse
    assert (first["alert"]["values"]["rate"], first["alert"]["values"]["baseline"]) == (0.5, 0.8)
    rows = attempts(store)
    assert len(rows) == 7 and {r[3] for r in rows} == {"delivered"} and {r[6] for r in rows} == {"stream"}


def test_failing_three_times_with_500_then_accepted_delivers_once_under_one_id(settings, store):
    secret = new_secret()
    event = alert()
    publish(settings, [event])
    with WebhookReceiver(secret, respond=failing(3, Reply(500))) as rx:
        registry = CollectorRegistry()
        d = dispatcher(settings, store, endpoint("flaky", rx.url, secret), registry=registry)

        async def body() -> None:
            await until(lambda: len(rx.accepted()) == 1, 30, "the fourth attempt")
            await asyncio.sleep(1.0)

        run_with(d, body)
    requests = rx.all()
    assert [r.status for r in requests] == [500, 500, 500, 200]
    assert {r.webhook_id for r in requests} == {event.event_id} and all(r.verified for r in requests)
    assert len({r.headers["webhook-timestamp"] for r in requests}) >= 2  # each attempt is signed afresh
    gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
    assert gaps[0] >= 0.15 and gaps[2] > gaps[0]  # exponential backoff
    rows = attempts(store, "flaky")
    assert [(r[2], r[3], r[4]) for r in rows] == [(1, "retry", 500), (2, "retry", 500), (3, "retry", 500),
                                                  (4, "delivered", 200)]  # fmt: skip
    assert registry.get_sample_value("einvoice_webhook_delivered_total", {"endpoint": "flaky"}) == 1
    assert registry.get_sample_value("einvoice_webhook_attempts_total", {"endpoint": "flaky", "outcome": "retry"}) == 3


def test_429_with_retry_after_is_honoured(settings, store):
    secret = new_secret()
    publish(settings, [alert()])
    with WebhookReceiver(secret, respond=failing(1, Reply(429, {"Retry-After": "2"}))) as rx:
        d = dispatcher(settings, store, endpoint("throttled", rx.url, secret))

        def settled() -> bool:  # the recorded outcome, not the receiver's 200: the row follows the reply
            return [r[3] for r in attempts(store)][-1:] == ["delivered"]

        run_with(d, lambda: until(settled, 30, "the retry after Retry-After"))
    first, second = rx.all()
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 1.95  # the backoff alone would have been 0.2 s
    assert [r[3] for r in attempts(store)] == ["retry", "delivered"]


def test_a_timeout_is_retried_and_a_slow_endpoint_does_not_delay_the_others(settings, store):
    secret = new_secret()
    events = [alert(n) for n in range(3)]
    publish(settings, events)
    slow_reply = failing(3, Reply(200, delay_s=4.0))  # hangs past the 1 s timeout three times
    with WebhookReceiver(secret, respond=slow_reply) as slow, WebhookReceiver(secret) as fast:
        d = dispatcher(
            settings, store, endpoint("slow", slow.url, secret, timeout_s=1.0), endpoint("fast", fast.url, secret)
        )
        run_with(d, lambda: until(lambda: len(slow.accepted()) == 3, 40, "the slow endpoint's three events"))
    assert [r.status for r in slow.all()][:3] == [0, 0, 0]  # the sender had given up on those
    assert [r.webhook_id for r in slow.accepted()] == [e.event_id for e in events]  # in order, once each
    assert [r.webhook_id for r in fast.accepted()] == [e.event_id for e in events]
    assert fast.accepted()[-1].at < slow.accepted()[0].at  # the fast one never waited for the slow one
    slow_rows = attempts(store, "slow")
    assert [(r[3], r[5]) for r in slow_rows[:3]] == [("retry", "timeout after 1 s")] * 3


def test_410_disables_the_endpoint_for_good_and_a_new_url_enables_it(settings, store, caplog):
    secret = new_secret()
    first, second, third = alert(0), alert(1), alert(2)
    publish(settings, [first, second])
    with WebhookReceiver(secret, respond=lambda i, r: Reply(410)) as gone_rx:
        registry = CollectorRegistry()
        d = dispatcher(settings, store, endpoint("gone", gone_rx.url, secret), registry=registry)

        async def body() -> None:
            await until(lambda: d.workers["gone"].disabled, 30, "the endpoint to be disabled")
            await asyncio.sleep(1.0)

        with caplog.at_level(logging.INFO, logger="sinks.webhook"):
            run_with(d, body)
        assert [r.webhook_id for r in gone_rx.all()] == [first.event_id]  # one request, then nothing
        assert registry.get_sample_value("einvoice_webhook_endpoint_disabled", {"endpoint": "gone"}) == 1
        assert any("NOTICE webhook endpoint disabled" in r.getMessage() for r in caplog.records)
        assert store.query_rows("SELECT disabled FROM webhook_endpoint_state FINAL WHERE endpoint = 'gone'") == [(1,)]
        [letter] = asyncio.run(read_pending(settings.kafka_brokers, dlq_topic(settings)))
        assert (letter.event_id, letter.reason, letter.last_status) == (first.event_id, "gone", 410)

        # After a restart it stays disabled: no consumer, no request.
        publish(settings, [third])
        again = dispatcher(settings, store, endpoint("gone", gone_rx.url, secret))
        run_with(again, lambda: asyncio.sleep(3.0))
        assert "gone" not in again.workers and len(gone_rx.all()) == 1

    # A new URL enables it again; it resumes after the dead-lettered event.
    with WebhookReceiver(secret) as moved_rx:
        moved = dispatcher(settings, store, endpoint("gone", moved_rx.url, secret))
        run_with(moved, lambda: until(lambda: len(moved_rx.accepted()) == 2, 30, "the moved endpoint's events"))
    assert [r.webhook_id for r in moved_rx.accepted()] == [second.event_id, third.event_id]


def test_a_receiver_down_past_the_horizon_dead_letters_then_redeliver_sends_it_once(settings, store):
    secret = new_secret()
    event = alert()
    publish(settings, [event])
    port = free_port()  # nothing listens there yet
    url = f"http://127.0.0.1:{port}/hooks/einvoice"
    short = RetryPolicy(initial_s=0.3, multiplier=2.0, max_s=1.0, horizon_s=2.0, jitter=0.1)
    down = endpoint("down", url, secret, retry=short)
    d = dispatcher(settings, store, down)
    topic = dlq_topic(settings)

    async def body() -> None:
        await until(lambda: bool(read_topic_quick(settings, topic)), 30, "the DLQ record")

    run_with(d, body)
    [record] = read_topic_quick(settings, topic)
    letter = json.loads(record.value)
    assert record.key == f"down/{event.event_id}".encode()
    assert (letter["reason"], letter["last_status"], letter["event_id"]) == ("exhausted", 0, event.event_id)
    assert "ConnectError" in letter["last_error"] and letter["attempts"] >= 3
    assert dict(record.headers)["dlq.reason"] == b"exhausted"
    rows = attempts(store, "down")
    assert rows[-1][3] == "exhausted" and all(r[3] == "retry" for r in rows[:-1])
    assert letter["payload"]["event_id"] == event.event_id

    config = WebhookConfig((down,), LOCAL)
    with WebhookReceiver(secret, port=port) as rx:
        results = asyncio.run(redeliver(settings.kafka_brokers, topic, config, store=store))
        assert [(r.endpoint, r.event_id, r.outcome) for r in results] == [("down", event.event_id, "delivered")]
        assert asyncio.run(redeliver(settings.kafka_brokers, topic, config, store=store)) == []  # nothing pending
    [received] = rx.all()
    assert received.verified and received.webhook_id == event.event_id and received.status == 200
    assert json.loads(received.body) == letter["payload"]  # the same payload as first built
    redelivered = attempts(store, "down")[-1]
    assert (redelivered[2], redelivered[3], redelivered[6]) == (len(rows) + 1, "delivered", "redeliver")


def read_topic_quick(settings: Settings, topic: str) -> list:
    return [r for r in read_topic(settings, topic) if r.value is not None]


def test_a_secret_never_appears_in_logs_errors_tables_or_the_dlq(settings, store, tmp_path):
    current, previous, other = new_secret(), new_secret(), new_secret()
    port = free_port()
    with (
        WebhookReceiver(current, respond=failing(2, Reply(500, delay_s=0.0))) as flaky,
        WebhookReceiver(other, respond=lambda i, r: Reply(410)) as gone,
        WebhookReceiver(other, respond=lambda i, r: Reply(400)) as rejecting,
    ):
        path = tmp_path / "endpoints.yaml"
        path.write_text(
            f"""
http_allowlist: [127.0.0.1]
endpoints:
  - {{name: flaky, url: "{flaky.url}?token=abc", secret_env: FLAKY_SECRET, allow_private: true, timeout_s: 2,
      retry: {{initial_s: 0.2, max_s: 0.5, horizon_s: 30}}}}
  - {{name: gone, url: "{gone.url}", secret_env: OTHER_SECRET, allow_private: true}}
  - {{name: rejecting, url: "{rejecting.url}", secret_env: OTHER_SECRET, allow_private: true}}
  - {{name: down, url: "http://127.0.0.1:{port}/x", secret_file: down.secret, allow_private: true,
      retry: {{initial_s: 0.2, max_s: 0.5, horizon_s: 1}}}}
""",
            encoding="utf-8",
        )
        (tmp_path / "down.secret").write_text(other, encoding="utf-8")
        env = {"FLAKY_SECRET": f"{current} {previous}", "OTHER_SECRET": other}
        config = load_webhook_config(path, env)
        published = [alert(0), alert(1, labels={"sector": "4711", "unit": "380"})]
        publish(settings, published)
        buffer = io.StringIO()
        handler = logging.StreamHandler(buffer)
        handler.setFormatter(LogfmtFormatter())
        root = logging.getLogger()
        previous_level = root.level
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        try:
            d = WebhookDispatcher(
                bootstrap=settings.kafka_brokers or "", alerts_topic=settings.topics.alerts,
                dlq_topic=dlq_topic(settings), app_id=settings.app_id, config=config, store=store,
                session_timeout_s=6.0,
            )  # fmt: skip

            async def body() -> None:
                await until(lambda: len(flaky.accepted()) == 2, 40, "the flaky endpoint's events")
                await until(lambda: len(rejecting.all()) == 2 and d.workers["gone"].disabled, 20, "the others")
                await until(lambda: len(attempts(store, "down")) >= 4, 20, "the down endpoint's attempts")

            run_with(d, body)
            with pytest.raises(Exception) as bad:
                load_webhook_config(path, {**env, "OTHER_SECRET": other[:-6] + "!!!!!!"})
            logging.getLogger("test").error("configuration failed: %s", bad.value)
        finally:
            root.removeHandler(handler)
            root.setLevel(previous_level)
    text = buffer.getvalue()
    assert "webhook attempt" in text and "HTTP 500" in text and "NOTICE" in text and "ConnectError" in text
    stored = json.dumps(store.query_rows("SELECT * FROM webhook_attempts"), default=str)
    dead = b"".join((r.value or b"") + repr(r.headers).encode() for r in read_topic(settings, dlq_topic(settings)))
    shown = repr(config) + str(config.endpoints)
    for secret in (current, previous, other):
        key = Secret(secret).key
        forms = {secret, secret.removeprefix("whsec_"), secret.removeprefix("whsec_").rstrip("="), key.hex(),
                 repr(key)}  # fmt: skip
        for form in forms:
            assert form not in text, "a secret is in the logs"
            assert form not in stored, "a secret is in ClickHouse"
            assert form.encode() not in dead, "a secret is in the DLQ"
            assert form not in shown, "a secret is in a repr"
    assert "token=abc" not in text and "token=abc" not in stored  # nor is the URL's token


CHILD_ENDPOINTS = """
http_allowlist: [127.0.0.1]
endpoints:
  - name: flaky
    url: {url}
    secret_env: CHILD_SECRET
    allow_private: true
    timeout_s: 2
    retry: {{initial_s: 1.5, multiplier: 1, max_s: 1.5, horizon_s: 120, jitter: 0}}
"""


def start_child(settings: Settings, webhooks: Path, dsn: str, log_path: Path, secret: str) -> subprocess.Popen:
    args = [
        sys.executable, "-m", "sinks.webhook", "run", "--bootstrap", settings.kafka_brokers or "",
        "--alerts-topic", settings.topics.alerts, "--dlq-topic", dlq_topic(settings), "--app-id", settings.app_id,
        "--webhooks-file", str(webhooks), "--clickhouse", dsn,
    ]  # fmt: skip
    with log_path.open("ab") as out:
        return subprocess.Popen(
            args, cwd=ROOT, env={**os.environ, "CHILD_SECRET": secret}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def wait_for(condition: Callable[[], bool], timeout: float, what: str, child: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if child.poll() is not None:
            raise AssertionError(f"the dispatcher exited ({child.returncode}) waiting for {what}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def test_a_worker_killed_between_attempts_still_delivers_after_restart(settings, tmp_path):
    secret = new_secret()
    event = alert()
    publish(settings, [event])
    chdb_dir = tmp_path / "child-chdb"
    dsn = f"chdb://{chdb_dir}"
    log_path = tmp_path / "dispatcher.log"
    with WebhookReceiver(secret, respond=failing(3, Reply(503))) as rx:
        webhooks = tmp_path / "endpoints.yaml"
        webhooks.write_text(CHILD_ENDPOINTS.format(url=rx.url), encoding="utf-8")
        child = start_child(settings, webhooks, dsn, log_path, secret)
        try:
            wait_for(lambda: len(rx.all()) >= 2, 60, "two attempts", child, log_path)
            time.sleep(0.5)  # inside the 1.5 s wait before the third attempt
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(10)
            assert rx.accepted() == [] and len(rx.all()) == 2
            time.sleep(2.0)  # nobody retries while it is dead
            assert len(rx.all()) == 2
            child = start_child(settings, webhooks, dsn, log_path, secret)
            wait_for(lambda: len(rx.accepted()) == 1, 60, "delivery after the restart", child, log_path)
            time.sleep(2.0)  # no further request: the offset was committed
            child.send_signal(signal.SIGTERM)
            assert child.wait(20) == 0
        finally:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait(10)
    requests = rx.all()
    assert [r.status for r in requests] == [503, 503, 503, 200]
    assert {r.webhook_id for r in requests} == {event.event_id} and all(r.verified for r in requests)
    assert secret not in log_path.read_text()
    opened = ClickHouseStore(dsn)
    try:
        rows = opened.query_rows(
            "SELECT attempt, outcome, toUnixTimestamp64Milli(attempted_at) FROM webhook_attempts "
            "WHERE endpoint = 'flaky' ORDER BY attempt"
        )
    finally:
        opened.close()
    assert [(a, o) for a, o, _ in rows] == [(1, "retry"), (2, "retry"), (3, "retry"), (4, "delivered")]
    assert abs(rows[0][2] / 1000 - requests[0].at) < 1.0  # the horizon still counts from the first attempt

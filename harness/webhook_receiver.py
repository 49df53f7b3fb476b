"""A small webhook receiver on 127.0.0.1: verifies Standard Webhooks signatures and says what it got.

For the demo and the tests. It runs an aiohttp server on its own thread and event loop, so it can be
started and stopped from synchronous code next to anything else. Each request is verified with the
``standardwebhooks`` library (what a real receiver would use) and recorded; a ``respond`` function
can make it fail, throttle or hang, to exercise the sender's retries.

    python -m harness.webhook_receiver --secret-env EINVOICE_WEBHOOK_SECRET_DEMO   # prints one line per event
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from alerts.lifecycle import AlertEvent, fingerprint
from base.kafka import DURABLE_PRODUCER
from sinks.webhook.config import new_secret


@dataclass(frozen=True)
class Reply:
    """What to answer to one request: status, headers, and how long to wait first (a slow receiver)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Received:
    at: float
    headers: dict[str, str]
    body: bytes
    verified: bool
    error: str
    payload: Any
    status: int  # what this receiver answered (0 when the sender gave up waiting)

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


def describe(item: Received) -> str:
    """One line: type, rule, labels with names, id, and whether the signature verified."""
    payload = item.payload if isinstance(item.payload, dict) else {}
    alert = payload.get("alert") or {}
    labels = []
    for key, value in (alert.get("labels") or {}).items():
        if isinstance(value, dict):
            labels.append(f"{key}={value.get('code')} ({value.get('name') or '?'})")
        elif value is not None:
            labels.append(f"{key}={value}")
    verified = "yes" if item.verified else f"NO ({item.error})"
    return (
        f"webhook {payload.get('type', '?'):8} {alert.get('rule', '?'):17} {', '.join(labels) or '-'} "
        f"id={item.webhook_id} signature verified: {verified} -> {item.status}"
    )


class WebhookReceiver:
    """``start()`` returns the URL; ``received`` lists every request in arrival order."""

    def __init__(
        self,
        secret: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/hooks/einvoice",
        respond: Callable[[int, Received], Reply] | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.verifier = Webhook(secret) if secret else None
        self.host = host
        self.port = port
        self.path = path
        self.respond = respond or (lambda index, item: Reply())
        self.echo = echo
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def start(self) -> str:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close())
            loop.close()

        self._thread = threading.Thread(target=serve, name=f"webhook-receiver-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self.url

    async def _open(self) -> None:
        app = web.Application()
        app.router.add_post(self.path, self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> WebhookReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- requests -------------------------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified, error, payload = False, "", None
        try:
            payload = json.loads(body)
        except ValueError as exc:
            error = f"not JSON: {exc}"
        if self.verifier is not None:
            try:
                self.verifier.verify(body, headers)
                verified = True
            except WebhookVerificationError as exc:
                error = str(exc)
        item = Received(time.time(), headers, body, verified, error, payload, 0)
        with self._lock:
            index = len(self.received)
            reply = self.respond(index, item)
            self.received.append(item)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        status = reply.status if (verified or self.verifier is None) else 401
        transport = request.transport
        gone = transport is None or transport.is_closing()  # the sender timed out while we were slow
        item = Received(item.at, headers, body, verified, error, payload, 0 if gone else status)
        with self._lock:
            self.received[index] = item
        if self.echo is not None:
            self.echo(describe(item))
        return web.Response(status=status, headers=reply.headers, text="ok" if status < 300 else "no")

    # -- what arrived ---------------------------------------------------------------------------------------------
    def accepted(self) -> list[Received]:
        """Requests answered 2xx: what the receiver took."""
        with self._lock:
            return [r for r in self.received if 200 <= r.status < 300]

    def all(self) -> list[Received]:
        with self._lock:
            return list(self.received)


DEMO_SECRET_ENV = "EINVOICE_WEBHOOK_SECRET_DEMO"
DEMO_ENDPOINTS = """# Written by the demo: one endpoint, the local receiver (loopback over http, so allow-listed).
http_allowlist: [127.0.0.1]
endpoints:
  - name: demo
    url: {url}
    secret_env: {secret_env}
    allow_private: true
    timeout_s: 5
    retry: {{initial_s: 1, multiplier: 2, max_s: 10, horizon_s: 120}}
"""


@contextlib.contextmanager
def demo_receiver(
    data_dir: Path, echo: Callable[[str], None] = print
) -> Iterator[tuple[WebhookReceiver, dict[str, str]]]:
    """A receiver with a fresh secret and an endpoints file for it; yields it and the worker's extra environment."""
    secret = new_secret()
    receiver = WebhookReceiver(secret, echo=echo)
    url = receiver.start()
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "webhooks.demo.yaml"
    path.write_text(DEMO_ENDPOINTS.format(url=url, secret_env=DEMO_SECRET_ENV), encoding="utf-8")
    env = {"EINVOICE_WEBHOOKS_FILE": str(path.resolve()), "EINVOICE_WEBHOOK_HTTP_ALLOWLIST": "127.0.0.1",
           DEMO_SECRET_ENV: secret}  # fmt: skip
    try:
        yield receiver, env
    finally:
        receiver.stop()


def publish_sample_alert(bootstrap: str, topic: str) -> str:
    """One firing adoption_drop alert (fuel retail in Hoằng Hóa), published as the evaluator does; returns its id.

    The simulated week may not make any rule fire; this makes sure the demo shows a delivery.
    """
    from kafka import KafkaProducer  # only the sample alert needs a producer: not loaded for the tests' receivers

    labels = {"sector": "4730", "unit": "399"}
    fp = fingerprint("adoption_drop", labels)
    day = dt.date.today() - dt.timedelta(days=1)
    event = AlertEvent(
        event_id=f"{fp}-firing-sample-{int(time.time())}", type="firing", fingerprint=fp, rule="adoption_drop",
        labels=labels, severity="critical", day=day, started_day=day - dt.timedelta(days=1),
        values={"issuing_share": 0.55, "baseline_share": 0.97, "upper_bound": 0.71, "eligible": 38,
                "active_today": 21, "adoption_7d": 0.93, "active_7d": 35},
        emitted_at=time.time(),
    )  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=bootstrap, **DURABLE_PRODUCER)
    try:
        body = json.dumps(event.as_json(), ensure_ascii=False, default=str).encode()
        producer.send(topic, key=fp.encode(), value=body, headers=[("event_id", event.event_id.encode())])
        producer.flush()
    finally:
        producer.close()
    return event.event_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.webhook_receiver", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0 = a free port")
    parser.add_argument("--secret-env", help="environment variable holding the whsec_ secret")
    args = parser.parse_args(argv)
    secret = os.environ.get(args.secret_env, "") if args.secret_env else ""
    if args.secret_env and not secret:
        print(f"{args.secret_env} is not set", file=sys.stderr)
        return 2
    receiver = WebhookReceiver(secret or None, port=args.port, echo=lambda line: print(line, flush=True))
    print(f"listening on {receiver.start()}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

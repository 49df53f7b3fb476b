"""The dispatcher on its own: ``python -m sinks.webhook run|redeliver|new-secret``.

The worker runs the dispatcher itself; this entry point is for tests (a process to kill), for
running delivery apart from the worker, and for operators. Options default to the environment
(:class:`base.config.Settings`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from base import logs
from base.config import Settings
from sinks.clickhouse import ClickHouseStore, open_store
from sinks.webhook.config import WebhookConfigError, load_webhook_config, new_secret
from sinks.webhook.dispatcher import WebhookDispatcher
from sinks.webhook.redeliver import redeliver

log = logging.getLogger("sinks.webhook")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sinks.webhook", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "redeliver"):
        sub = commands.add_parser(name)
        sub.add_argument("--bootstrap", help="Kafka bootstrap servers (default KAFKA_BROKERS)")
        sub.add_argument("--alerts-topic", help="default: the prefixed adoption.alerts")
        sub.add_argument("--dlq-topic", help="default: the prefixed adoption.alerts.dlq")
        sub.add_argument("--app-id", help="consumer groups are <app id>-webhook-<endpoint> (default EINVOICE_APP_ID)")
        sub.add_argument("--webhooks-file", type=Path, help="endpoints YAML (default EINVOICE_WEBHOOKS_FILE)")
        sub.add_argument("--clickhouse", help="DSN of the attempts log (default: the configured ClickHouse)")
        sub.add_argument("--no-clickhouse", action="store_true", help="keep no attempts log")
        sub.add_argument("--http-allowlist", default=None, help="hosts allowed over plain http, comma-separated")
        sub.add_argument("--grafana-url", default=None, help="board URL for the payload links")
        sub.add_argument("--loglevel", default="info")
    again = commands.choices["redeliver"]
    again.add_argument("--endpoint", action="append", default=[], help="only this endpoint (repeatable)")
    again.add_argument("--event", action="append", default=[], help="only this event id (repeatable)")
    again.add_argument("--dry-run", action="store_true", help="list what is pending, send nothing")
    again.add_argument("--within", type=float, default=30.0, help="seconds of retrying per event")
    commands.add_parser("new-secret", help="print a fresh whsec_ secret")
    return parser.parse_args(argv)


def _resolve(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings.from_env()
    topics = settings.topics
    bootstrap = args.bootstrap or settings.kafka_brokers
    if not bootstrap:
        raise SystemExit("no Kafka bootstrap: pass --bootstrap or set KAFKA_BROKERS")
    allowlist = (
        args.http_allowlist if args.http_allowlist is not None else getattr(settings, "webhook_http_allowlist", "")
    )
    config = load_webhook_config(
        args.webhooks_file or getattr(settings, "webhooks_file", None),
        http_allowlist=[h.strip() for h in (allowlist or "").split(",") if h.strip()],
        grafana_url=args.grafana_url or getattr(settings, "grafana_url", None),
    )  # fmt: skip
    return {
        "bootstrap": bootstrap,
        "alerts_topic": args.alerts_topic or topics.alerts,
        "dlq_topic": args.dlq_topic or topics.alerts_dlq,
        "app_id": args.app_id or settings.app_id,
        "config": config,
        "dsn": None if args.no_clickhouse else (args.clickhouse or settings.clickhouse_dsn),
    }


async def _run(resolved: dict[str, Any], store: ClickHouseStore | None) -> None:
    dispatcher = WebhookDispatcher(
        bootstrap=resolved["bootstrap"], alerts_topic=resolved["alerts_topic"], dlq_topic=resolved["dlq_topic"],
        app_id=resolved["app_id"], config=resolved["config"], store=store,
    )  # fmt: skip
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await dispatcher.run_forever()


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if args.command == "new-secret":
        print(new_secret())
        return 0
    logs.configure(args.loglevel)
    try:
        resolved = _resolve(args)
    except WebhookConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    store = None
    if resolved["dsn"]:
        store = open_store(resolved["dsn"])
    try:
        if args.command == "run":
            asyncio.run(_run(resolved, store))
            return 0
        results = asyncio.run(
            redeliver(
                resolved["bootstrap"], resolved["dlq_topic"], resolved["config"], store=store,
                endpoints=args.endpoint, event_ids=args.event, dry_run=args.dry_run, within_s=args.within,
            )
        )  # fmt: skip
        for result in results:
            print(json.dumps(result.__dict__, ensure_ascii=False))
        return 1 if any(r.outcome == "failed" for r in results) else 0
    finally:
        if store is not None:
            store.close()


if __name__ == "__main__":
    sys.exit(main())

"""What every command shares: the consoles, the settings (a bad one is a red line, not a traceback), Kafka."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console

from base.config import Settings
from deploy.kafka import LocalBroker, LocalCluster

console = Console(stderr=True)


def stdout_console() -> Console:
    """Tables on stdout: the terminal's width (or ``COLUMNS``), else 130 columns when piped."""
    return Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 130)


def load_settings() -> Settings:
    """The settings from the environment, or exit 2 with the configuration error."""
    try:
        return Settings.from_env()
    except ValueError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None


def local_broker(settings: Settings) -> LocalBroker | LocalCluster:
    """What ``broker start`` launched under the data directory: one broker, or a cluster (``--nodes N``)."""
    if LocalCluster.exists(settings.broker_dir):
        return LocalCluster.open(settings.broker_dir)
    return LocalBroker(settings.broker_dir)


def resolve_bootstrap(settings: Settings) -> str:
    """KAFKA_BROKERS when set, else the local broker that ``broker start`` launched."""
    if settings.kafka_brokers:
        return settings.kafka_brokers
    status = local_broker(settings).status()
    if not status.running or not status.bootstrap:
        console.print(
            "[red]no Kafka broker:[/] run [bold]einvoice-monitor broker start[/] "
            f"(data dir {settings.broker_dir}) or set KAFKA_BROKERS=host:port"
        )
        raise typer.Exit(2)
    return status.bootstrap

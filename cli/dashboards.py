"""``einvoice-monitor dashboards``: build the boards' JSON from code, or publish them to a Grafana."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from boards.i18n import LANGUAGES

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards"
dashboards_app = typer.Typer(help="Grafana boards: generated from code (boards/), provisioned or published.",
                             no_args_is_help=True)  # fmt: skip
console = Console(stderr=True)


def _languages(lang: str) -> list[str]:
    if lang == "all":
        return list(LANGUAGES)
    if lang not in LANGUAGES:
        console.print(f"[red]--lang must be vi, en or all, not {lang!r}[/]")
        raise typer.Exit(2)
    return [lang]


@dashboards_app.command("build")
def build(
    lang: Annotated[str, typer.Option(help="vi (Vietnamese titles), en, or all.")] = "all",
    out: Annotated[Path, typer.Option(help="Directory; each language in a subdirectory.")] = DEFAULT_OUT,
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 if a file differs.")] = False,
) -> None:
    """Write every board as Grafana JSON (stable uids), one file per board: out/<lang>/<board>.json."""
    from boards.grafana import dashboards, to_json_text

    stale = []
    for language in _languages(lang):
        folder = out / language
        for name, board in dashboards(language).items():
            path = folder / f"{name}.json"
            text = to_json_text(board)
            if path.exists() and path.read_text(encoding="utf-8") == text:
                continue
            stale.append(path)
            if not check:
                folder.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
                console.print(f"[green]wrote[/] {path}")
    if check and stale:
        console.print("[red]stale:[/] " + ", ".join(map(str, stale)) + "\nrun: einvoice-monitor dashboards build")
        raise typer.Exit(1)
    if not stale:
        console.print("boards up to date")


@dashboards_app.command("publish")
def publish_command(
    url: Annotated[str, typer.Option(help="Grafana base URL, e.g. https://grafana.example.org.")],
    token: Annotated[
        str | None, typer.Option(help="Service-account token (default: $GRAFANA_TOKEN).", show_default=False)
    ] = None,
    clickhouse_host: Annotated[str, typer.Option(help="ClickHouse host as Grafana reaches it.")] = "clickhouse",
    clickhouse_port: Annotated[int, typer.Option(help="ClickHouse HTTP port.")] = 8123,
    clickhouse_user: Annotated[str, typer.Option(help="A read-only ClickHouse user.")] = "grafana",
    clickhouse_database: Annotated[str, typer.Option(help="The pipeline's database.")] = "einvoice",
    clickhouse_secure: Annotated[bool, typer.Option(help="HTTPS to ClickHouse.")] = False,
    lang: Annotated[str, typer.Option(help="vi, en or all.")] = "vi",
    prometheus_url: Annotated[
        str | None,
        typer.Option(
            help="The pipeline's Prometheus as Grafana reaches it (the pipeline board's health panels).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create or update (by uid) the folder, the data sources and the boards in a Grafana.

    The ClickHouse password is read from $CLICKHOUSE_GRAFANA_PASSWORD, never from the command line.
    """
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaClientError

    from boards.publish import ClickHouseConnection, publish

    token = token or os.environ.get("GRAFANA_TOKEN")
    if not token:
        console.print("[red]no token:[/] pass --token or set GRAFANA_TOKEN (a Grafana service-account token)")
        raise typer.Exit(2)
    connection = ClickHouseConnection(
        clickhouse_host, clickhouse_port, "http", clickhouse_user, os.environ.get("CLICKHOUSE_GRAFANA_PASSWORD", ""),
        clickhouse_database, clickhouse_secure,
    )  # fmt: skip
    api = GrafanaApi.from_url(url, credential=token)
    for language in _languages(lang):
        try:
            result = publish(api, connection, language, prometheus_url)
        except (GrafanaClientError, OSError) as exc:
            console.print(f"[red]Grafana at {url} refused or failed:[/] {exc}")
            raise typer.Exit(1) from None
        console.print(f"data source {result.datasource}; folder {result.folder_uid}")
        if result.prometheus is None:
            console.print(
                "[yellow]no --prometheus-url:[/] the pipeline board's health panels read a Prometheus data source "
                "with uid einvoice-prometheus; give its URL, or provision one with that uid"
            )
        else:
            console.print(f"Prometheus data source {result.prometheus}")
        for uid, path in result.dashboards.items():
            console.print(f"  {uid}: {url.rstrip('/')}{path}")

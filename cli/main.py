"""The one entry point, ``einvoice-monitor``: broker, topics, worker, simulate, demo, verify."""

# The commands import what they run inside their bodies: Faust, the ClickHouse and Kafka clients and
# numpy take seconds to import, and `--help` or `broker status` need none of them.

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from base.config import Settings
from base.tables import Field, FittedTable
from cli.common import console, load_settings, local_broker, resolve_bootstrap, stdout_console
from cli.dashboards import dashboards_app
from cli.replay import replay_app
from cli.simulate import simulate_command

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
broker_app = typer.Typer(help="The local Apache Kafka broker (embedded mode).", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics of the pipeline.", no_args_is_help=True)
app.add_typer(broker_app, name="broker")
app.add_typer(topics_app, name="topics")
alerts_app = typer.Typer(help="Falling-adoption alerts: state, silences, offline evaluation.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")
app.add_typer(dashboards_app, name="dashboards")
app.add_typer(replay_app, name="replay")


@broker_app.command("install")
def broker_install() -> None:
    """Fetch Apache Kafka's jars from Maven Central into the cache (idempotent; seconds once cached)."""
    settings = load_settings()
    with console.status("fetching Apache Kafka with Maven (first time only)"):
        libs = local_broker(settings).ensure_installed()
    typer.echo(str(libs))


@broker_app.command("start")
def broker_start(
    port: Annotated[int | None, typer.Option(help="Port for clients (one node only); a free one when omitted.")] = None,
    nodes: Annotated[
        int,
        typer.Option(
            min=1,
            help="Kafka nodes (each broker and controller). 3 gives a cluster whose topics are replicated 3 ways "
            "with min.insync.replicas 2, as production runs; its data dir keeps the size chosen.",
        ),
    ] = 1,
) -> None:
    """Fetch Kafka from Maven Central (once), format storage and start KRaft node(s) on 127.0.0.1."""
    from deploy.kafka import LocalBroker, LocalCluster

    settings = load_settings()
    existing = local_broker(settings)
    if isinstance(existing, LocalBroker) and nodes > 1 and (existing.data_dir / "kraft-logs").exists():
        console.print(
            f"[red]{settings.broker_dir} holds a one-node broker:[/] stop it and delete that directory for a "
            f"cluster, or set EINVOICE_DATA_DIR to another directory"
        )
        raise typer.Exit(2)
    target = LocalCluster(settings.broker_dir, nodes) if nodes > 1 or isinstance(existing, LocalCluster) else existing
    if port is not None and isinstance(target, LocalCluster):
        console.print("[red]--port is for a one-node broker:[/] a cluster's ports are chosen once and kept")
        raise typer.Exit(2)
    with console.status(f"fetching Apache Kafka with Maven (first time only) and starting {nodes} node(s)"):
        try:
            bootstrap = target.start() if isinstance(target, LocalCluster) else target.start(port=port)
        except RuntimeError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
    typer.echo(bootstrap)


@broker_app.command("stop")
def broker_stop() -> None:
    """Stop the local broker, or every node of the local cluster (controlled shutdown)."""
    was_running = local_broker(load_settings()).stop()
    console.print("stopped" if was_running else "not running")


@broker_app.command("status")
def broker_status() -> None:
    """Tell whether the local broker (every node of a cluster) runs, and where; exit code 1 when not."""
    status = local_broker(load_settings()).status()
    for node in status.nodes:
        state = f"running pid={node.pid} bootstrap={node.bootstrap}" if node.running else "not running"
        typer.echo(f"{node.data_dir.name}: {state}")
    if status.running:
        typer.echo(f"running pid={status.pid} bootstrap={status.bootstrap} data_dir={status.data_dir}")
    else:
        typer.echo(f"not running (data_dir={status.data_dir})")
        raise typer.Exit(1)


@topics_app.command("create")
def topics_create(
    allow_unreplicated: Annotated[
        bool,
        typer.Option(help="Create replication-factor-1 topics even on a cluster of 3 or more brokers."),
    ] = False,
) -> None:
    """Create every topic with its partitions and configs (idempotent), then show what the cluster holds.

    Replication factor and min.insync.replicas are the cluster's defaults unless
    EINVOICE_REPLICATION_FACTOR / EINVOICE_MIN_INSYNC_REPLICAS say otherwise; each topic's are read
    back and shown, with a warning for any that a lost broker would hurt.
    """
    from kafka_io.topics import create_topics

    settings = load_settings()
    try:
        report = create_topics(resolve_bootstrap(settings), settings, allow_unreplicated=allow_unreplicated)
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    fields = [Field("topic"), Field("status"), Field("partitions", "right"), Field("replication", "right"),
              Field("min ISR", "right")]  # fmt: skip
    table = FittedTable(f"Topics on a cluster of {report.brokers} broker(s)", fields)
    for t in report.topics.values():
        isr = "?" if t.min_insync_replicas is None else str(t.min_insync_replicas)
        table.add_row(t.name, t.status, str(t.partitions), str(t.replication_factor), isr)
    stdout_console().print(table)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}")


@app.command()
def worker(
    loglevel: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
) -> None:
    """Run the Faust worker: ingest invoices and the registry into ClickHouse until stopped."""
    from faust import Worker

    from base import logs
    from cli.worker import create_worker

    settings = load_settings()
    bootstrap = resolve_bootstrap(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        faust_app = create_worker(settings, bootstrap)
    except ValueError as exc:  # e.g. the webhooks file (WebhookConfigError); the message never holds a secret
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None
    faust_worker = Worker(
        faust_app, loglevel=loglevel, quiet=True, redirect_stdouts=False, logging_config=logs.logging_config(loglevel)
    )
    faust_worker.execute_from_commandline()


# `simulate` lives with the simulator (cli/simulate.py), next to the model its options describe.
app.command("simulate")(simulate_command)


def _report_from_worker(
    settings: Settings, day: str | None, start: str | None, end: str | None, level: str,
    sectors: list[str] | None, units: list[str] | None, sort: str,
) -> tuple[list, list] | None:  # fmt: skip
    """Ask a running embedded worker (it owns chDB); None when none answers or no day is given."""
    import json
    import urllib.parse
    import urllib.request

    from analytics.report import ReportRow

    if settings.clickhouse_url or (day is None and start is None):
        return None
    query = [("from", start or day), ("to", end or day or start), ("level", level), ("sort", sort)]
    query += [("sector", s) for s in sectors or []] + [("unit", u) for u in units or []]
    url = f"http://{settings.web_host}:{settings.web_port}/report?{urllib.parse.urlencode(query)}"
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            body = json.loads(response.read())
    except OSError:
        return None
    return [ReportRow(**row) for row in body["rows"]], [(d, i, n) for d, i, n in body.get("unregistered", [])]


@app.command()
def report(
    day: Annotated[
        str | None, typer.Option(help="One local day, YYYY-MM-DD (default: the newest day with data).")
    ] = None,
    start: Annotated[str | None, typer.Option("--from", help="First day of a period, YYYY-MM-DD.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Last day of a period, YYYY-MM-DD.")] = None,
    level: Annotated[str, typer.Option(help="Aggregation level: province, district or commune.")] = "district",
    sector: Annotated[list[str] | None, typer.Option(help="VSIC code(s) to show; '*' = all sectors.")] = None,
    unit: Annotated[list[str] | None, typer.Option(help="Unit code(s) to show; '*' = the province.")] = None,
    sort: Annotated[str, typer.Option(help="rate, change, eligible, invoices or segment.")] = "rate",
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for machines instead of a table.")] = False,
    limit: Annotated[int, typer.Option(help="Most rows in the table (0 = all).")] = 40,
    min_eligible: Annotated[int, typer.Option(help="Hide segments with fewer eligible businesses.")] = 10,
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="table or json on the terminal; html (one self-contained page) or png (one image per chart): "
            "the boards' key views, for the embedded mode that has no Grafana.",
        ),
    ] = "table",
    out: Annotated[
        Path | None, typer.Option(help="File (html) or directory (png); default under EINVOICE_DATA_DIR/reports.")
    ] = None,
    lang: Annotated[str, typer.Option(help="Language of html/png: vi or en.")] = "vi",
) -> None:
    """Adoption by sector and unit for a day or a period, with the change against the period before."""
    import json

    from analytics.adoption import unregistered
    from analytics.report import adoption_table, period_report
    from base.tables import NO_COMPARISON

    settings = load_settings()
    if output_format in ("html", "png"):
        path = offline_report(settings, start or day, end or day, lang, (sector or ["*"])[0], (unit or ["*"])[0],
                              output_format, out)  # fmt: skip
        typer.echo(str(path))
        return
    if output_format not in ("table", "json"):
        console.print(f"[red]--format must be table, json, html or png, not {output_format!r}[/]")
        raise typer.Exit(2)
    as_json = as_json or output_format == "json"
    answer = _report_from_worker(settings, day, start, end, level, sector, unit, sort)
    if answer is not None:
        rows, outside = answer
        first, last = dt.date.fromisoformat(start or day or ""), dt.date.fromisoformat(end or day or start or "")
    else:
        store = _open_store(settings)
        try:
            if day is None and start is None:
                newest = store.query_rows("SELECT max(issue_date) FROM seller_daily")[0][0]
                if newest is None or newest.year < 2000:
                    console.print("[yellow]no invoices in ClickHouse yet[/]: run the worker on a feed first")
                    raise typer.Exit(1)
                day = newest.isoformat()
            first = dt.date.fromisoformat(start or day or "")
            last = dt.date.fromisoformat(end or day or start or "")
            rows = period_report(store, first, last, level=level, sectors=sector, units=unit, sort=sort)
            outside = unregistered(store, first, last)
        except ValueError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from None
        finally:
            store.close()
    rows = [row for row in rows if row.eligible >= min_eligible]
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row.as_json(), ensure_ascii=False))
        for d, issuers, invoices in outside:
            record = {"unregistered": True, "day": str(d), "issuers": issuers, "invoices": invoices}
            typer.echo(json.dumps(record))
        return
    out = stdout_console()
    out.print(adoption_table(f"Adoption of cash-register e-invoices, {first} – {last}", rows[: limit or None]))
    out.print(
        f"rate: 7-day active / eligible. Δ pt: its change against the {(last - first).days + 1} day(s) before, "
        f"in percentage points; {NO_COMPARISON} where those had no data (no invoice yet, or no eligible business)."
    )
    if outside:
        most = max(issuers for _, issuers, _ in outside)
        total = sum(invoices for _, _, invoices in outside)
        typer.echo(f"Issuers not in the registry (no sector or unit): up to {most:,} a day, {total:,} invoices.")


def offline_report(
    settings: Settings, first: str | None, last: str | None, lang: str, sector: str, unit: str, output_format: str,
    out: Path | None,
) -> Path:  # fmt: skip
    """Render the html page or the png charts from ClickHouse; returns the file or directory written."""
    from boards.offline import collect, default_path, write_html, write_png

    if lang not in ("vi", "en"):
        console.print(f"[red]--lang must be vi or en, not {lang!r}[/]")
        raise typer.Exit(2)
    store = _open_store(settings)
    try:
        if last is None:
            newest = store.query_rows("SELECT max(day) FROM segment_adoption")[0][0]
            if newest is None or newest.year < 2000:
                console.print("[yellow]no evaluated day yet[/]: the worker evaluates complete days; run it on a feed")
                raise typer.Exit(1)
            last_day = newest
        else:
            last_day = dt.date.fromisoformat(last)
        first_day = dt.date.fromisoformat(first) if first else last_day - dt.timedelta(days=27)
        with console.status("running the boards' queries"):
            data = collect(store, first_day, last_day, lang=lang, sector=sector, unit=unit)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    finally:
        store.close()
    path = out or default_path(settings.data_dir / "reports", data, output_format)
    if output_format == "html":
        return write_html(data, path)
    write_png(data, path)
    return path


@app.command()
def verify(
    limit: Annotated[int, typer.Option(min=0, help="Most findings shown of each kind (0 = all).")] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="The whole report, every finding, as one JSON object on stdout.")
    ] = False,
) -> None:
    """Check the store after the fact: blocks landed twice, offsets stored twice, views that miscount.

    Checks that invoice_blocks holds one block per partition start;
    that invoices holds each Kafka offset once;
    that seller_daily, segment_daily and receipts_hourly count each record
    once, per day and source partition;
    that each insert token of invoices has one chain row, and each chain row
    its rows in invoices.

    It only reads (opening the store applies pending migrations, as every
    command does). In the embedded mode stop the worker first.

    Exit codes: 0 all is well; 1 something is doubled or off (the findings and
    what to do are printed); 2 bad options or no ClickHouse.
    """
    import json

    from sinks.clickhouse.verify import verify_store

    settings = load_settings()
    store = _open_store(settings)
    try:
        with console.status(f"checking {store.redacted_dsn}"):
            found = store.call(verify_store, store)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(found.as_json(), ensure_ascii=False))
    else:
        _print_store_report(found, limit)
    if not found.ok:
        _store_advice(found)
        raise typer.Exit(1)


def _counted(n: int, one: str, many: str) -> str:
    return "OK" if n == 0 else f"{n:,} {one if n == 1 else many}"


def _print_store_report(found: Any, limit: int) -> None:  # StoreReport, imported lazily
    """The summary, a line per check, then the first ``limit`` findings of each kind."""
    out = stdout_console()
    summary = FittedTable(
        f"Store check: {found.rows:,} invoice rows, {found.blocks:,} chain rows",
        [Field("check", wrap=True), Field("result", wrap=True)],
    )
    extra = sum(f.extra_rows for f in found.doubled_offsets)
    starts = _counted(len(found.doubled_starts), "start doubled", "starts doubled")
    days = _counted(len(found.doubled_offsets), "partition-day", "partition-days")
    summary.add_row("one block per start (invoice_blocks)", starts)
    summary.add_row("each offset once (invoices)", "OK" if not extra else f"{extra:,} extra rows on {days}")
    for view in ("seller_daily", "segment_daily", "receipts_hourly"):
        off = sum(1 for m in found.view_mismatches if m.view == view)
        summary.add_row(f"{view} counts each invoice once", _counted(off, "partition-day off", "partition-days off"))
    summary.add_row("one chain row per insert token", _counted(len(found.chain_mismatches), "token off", "tokens off"))
    out.print(summary)
    tables = [
        (
            "Blocks landed at one start",
            [Field("topic"), Field("partition", "right"), Field("start", "right"), Field("tokens", wrap=True)],
            [(f.kafka_topic, str(f.kafka_partition), str(f.block_start), " ".join(f.tokens))
             for f in found.doubled_starts],
        ),
        (
            "Offsets stored more than once",
            [Field("topic"), Field("partition", "right"), Field("issue day"), Field("extra rows", "right")],
            [(f.kafka_topic, str(f.kafka_partition), str(f.issue_date), f"{f.extra_rows:,}")
             for f in found.doubled_offsets],
        ),
        (
            "Views that miscount",
            [Field("view"), Field("day"), Field("partition", "right"), Field("held", "right"),
             Field("expected", "right"), Field("table rows", "right")],
            [(f.view, str(f.day), str(f.kafka_partition), f"{f.held:,}", f"{f.expected:,}", f"{f.stored:,}")
             for f in found.view_mismatches],
        ),
        (
            "Chain rows and insert tokens that disagree",
            [Field("topic"), Field("partition", "right"), Field("token", wrap=True), Field("problem", wrap=True)],
            [(f.kafka_topic, str(f.kafka_partition), f.insert_token, f.problem) for f in found.chain_mismatches],
        ),
    ]  # fmt: skip
    for title, fields, rows in tables:
        if not rows:
            continue
        out.print(FittedTable(title, fields, rows[: limit or None]))
        if limit and len(rows) > limit:
            typer.echo(f"… and {len(rows) - limit:,} more (--limit 0 shows all, --json too)")
        if title == "Views that miscount":
            out.print(
                "held: the view's count; expected: the records invoices holds, each once; table rows: its rows "
                "(equal to held: the view mirrors a doubled table)",
                highlight=False,
            )
    if found.ok:
        typer.echo("store ok: nothing doubled, every view counts each invoice once, the chain matches")


def _store_advice(found: Any) -> None:  # StoreReport, imported lazily
    """What ``verify`` found means and what to do about it, on stderr."""
    if found.doubled_starts or found.doubled_offsets or any(m.mirrors_table for m in found.view_mismatches):
        console.print(
            "[red]doubled:[/] a block landed twice, so invoices and the views behind it count its invoices twice "
            "(docs/architecture.md, Exactly once into ClickHouse, says what the fence relies on)."
        )
    if any(not m.mirrors_table for m in found.view_mismatches):
        console.print(
            "[red]a view disagrees with invoices:[/] a crash between the table and its views that the restore did "
            "not repair (it repairs a partition's newest block only), or a row written by hand."
        )
    if found.chain_mismatches:
        console.print(
            "[red]the chain (invoice_blocks) disagrees with invoices:[/] workers continue each partition after its "
            "newest chain row, so a missing or stray row can make them skip records or write them again."
        )
    console.print(
        "Nothing mends this in place. Rebuild the store from the topics while they still hold the records: "
        "[bold]einvoice-monitor replay rebuild[/], then [bold]replay compare[/] and [bold]replay switch[/] "
        "(docs/replay.md)."
    )


def _open_store(settings: Settings):  # noqa: ANN202 - ClickHouseStore, imported lazily
    from sinks.clickhouse import open_store

    try:
        return open_store(settings.clickhouse_dsn)
    except Exception as exc:  # chDB allows one process per directory
        console.print(
            f"[red]cannot open ClickHouse ({exc.__class__.__name__}).[/] In the embedded mode chDB belongs to one "
            "process: stop the worker first, or set CLICKHOUSE_URL to a server."
        )
        raise typer.Exit(2) from None


@alerts_app.command("list")
def alerts_list(
    state: Annotated[str | None, typer.Option(help="Only instances in this state: pending, firing, resolved.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for machines.")] = False,
) -> None:
    """Alert instances (from the running worker, else from ClickHouse) and the live silences."""
    import json
    import urllib.request

    from alerts.evaluator import AlertEvaluator, read_silences
    from alerts.rules import load_rules

    settings = load_settings()
    bootstrap = resolve_bootstrap(settings)
    snapshot = None
    try:
        url = f"http://{settings.web_host}:{settings.web_port}/alerts"
        with urllib.request.urlopen(url, timeout=3) as response:
            snapshot = json.loads(response.read())
        if not snapshot.get("leader"):
            snapshot = None
    except OSError:
        snapshot = None
    if snapshot is None:
        store = _open_store(settings)
        try:
            evaluator = AlertEvaluator(store, load_rules(settings.rules_file), bootstrap, "", "")
            evaluator.load()
            snapshot = evaluator.snapshot()
        finally:
            store.close()
    instances = [i for i in snapshot["instances"] if state is None or i["state"] == state]
    silences = read_silences(bootstrap, settings.topics.silences)
    if as_json:
        typer.echo(json.dumps({**snapshot, "instances": instances, "silences": [s.__dict__ for s in silences]},
                              ensure_ascii=False, default=str))  # fmt: skip
        return
    stdout_console().print(alerts_table(snapshot["last_evaluated_day"], instances))
    for silence in silences:
        until = dt.datetime.fromtimestamp(silence.ends_at).isoformat(timespec="minutes")
        who = f"{silence.comment} ({silence.created_by})"
        typer.echo(f"silence {silence.silence_id}: {silence.matchers} until {until} — {who}")


def _brief(values: dict | str) -> str:
    """An instance's values (a dict, or its JSON) in words that wrap: lists such as the silent sellers by
    their length, so that nothing needs cutting."""
    import json

    found = json.loads(values or "{}") if isinstance(values, str) else values
    return ", ".join(
        f"{k.replace('_', ' ')} {len(v) if isinstance(v, list | dict) else v}" for k, v in sorted(found.items())
    )


def alerts_table(last_day: str | None, instances: list[dict]) -> FittedTable:
    """The alert instances that are not inactive, for the terminal."""
    table = FittedTable(
        f"Alerts (last evaluated day: {last_day})",
        [Field("state"), Field("rule"), Field("labels", wrap=True), Field("since"), Field("values", wrap=True)],
    )
    for item in instances:
        if item["state"] == "inactive":
            continue
        labels = ", ".join(f"{k}={v}" for k, v in sorted(item["labels"].items()))
        table.add_row(item["state"], item["rule"], labels, str(item["started_day"] or ""), _brief(item["values"]))
    return table


@alerts_app.command("silence")
def alerts_silence(
    duration: Annotated[str, typer.Option(help="How long: 90m, 4h, 2d.")],
    comment: Annotated[str, typer.Option(help="Why (shown with the silence).")],
    rule: Annotated[str | None, typer.Option(help="Match this rule, e.g. adoption_drop.")] = None,
    sector: Annotated[str | None, typer.Option(help="Match this VSIC code ('*' = the all-sector roll-up).")] = None,
    unit: Annotated[str | None, typer.Option(help="Match this unit code ('*' = the province).")] = None,
    by: Annotated[str, typer.Option(help="Who silences.")] = os.environ.get("USER", "unknown"),
) -> None:
    """Mute notifications of matching alerts until the silence expires (state keeps being tracked)."""
    from alerts.silences import add_silence, parse_duration

    settings = load_settings()
    matchers = {k: v for k, v in (("rule", rule), ("sector", sector), ("unit", unit)) if v is not None}
    try:
        silence = add_silence(resolve_bootstrap(settings), settings.topics.silences, matchers,
                              parse_duration(duration), comment, by)  # fmt: skip
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    typer.echo(silence.silence_id)


@alerts_app.command("unsilence")
def alerts_unsilence(silence_id: Annotated[str, typer.Argument(help="The id `alerts silence` printed.")]) -> None:
    """Remove a silence before it expires."""
    from alerts.silences import remove_silence

    settings = load_settings()
    remove_silence(resolve_bootstrap(settings), settings.topics.silences, silence_id)
    typer.echo(f"removed {silence_id}")


@alerts_app.command("evaluate")
def alerts_evaluate(
    until: Annotated[
        str | None, typer.Option(help="Last day to evaluate, YYYY-MM-DD (default: newest complete).")
    ] = None,
) -> None:
    """Evaluate the complete days not evaluated yet, against ClickHouse (the worker does this on a timer)."""
    from alerts.evaluator import AlertEvaluator
    from alerts.rules import load_rules

    settings = load_settings()
    try:
        rules = load_rules(settings.rules_file)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    store = _open_store(settings)
    evaluator = AlertEvaluator(
        store, rules, resolve_bootstrap(settings), settings.topics.alerts, settings.topics.silences
    )
    try:
        limit = dt.date.fromisoformat(until) if until else None
        total = 0
        while True:
            results = evaluator.run(until=limit)
            if not results:
                break
            for result in results:
                total += 1
                for event in result.events:
                    mark = f" (suppressed: {event.suppressed_by})" if event.suppressed_by else ""
                    typer.echo(f"{result.day} {event.type:8} {event.rule:17} {event.labels}{mark}")
        typer.echo(f"evaluated {total} day(s); last evaluated day: {evaluator.last_day}")
    finally:
        evaluator.close()
        store.close()


@alerts_app.command("redeliver")
def alerts_redeliver(
    endpoint: Annotated[list[str] | None, typer.Option(help="Only this endpoint (repeatable).")] = None,
    event: Annotated[list[str] | None, typer.Option(help="Only this event id (repeatable).")] = None,
    dry_run: Annotated[bool, typer.Option(help="List the pending dead-lettered events; send nothing.")] = False,
    within: Annotated[float, typer.Option(help="Seconds of retrying per event before giving up again.")] = 30.0,
) -> None:
    """Send the events in the alert DLQ to their webhook endpoints again (same webhook-id); exit 1 if any fails."""
    from sinks.clickhouse import open_store
    from sinks.webhook import config_from_settings, redeliver_sync

    settings = load_settings()
    try:
        config = config_from_settings(settings)
    except ValueError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None
    bootstrap = resolve_bootstrap(settings)
    store = None
    if not dry_run:
        try:
            store = open_store(settings.clickhouse_dsn)
        except Exception as exc:  # chDB belongs to the running worker in the embedded mode
            console.print(f"[yellow]attempts are not logged in ClickHouse ({exc.__class__.__name__}); "
                          "in the embedded mode stop the worker first to keep them[/]")  # fmt: skip
            store = None
    try:
        results = redeliver_sync(
            bootstrap, settings.topics.alerts_dlq, config, store=store, endpoints=endpoint or (),
            event_ids=event or (), dry_run=dry_run, within_s=within,
        )  # fmt: skip
    finally:
        if store is not None:
            store.close()
    if not results:
        typer.echo("nothing pending in the alert DLQ")
    for result in results:
        typer.echo(f"{result.outcome:9} {result.endpoint:20} {result.event_id}  {result.detail}")
    if any(r.outcome == "failed" for r in results):
        raise typer.Exit(1)


@app.command()
def demo(
    sellers: Annotated[int, typer.Option(help="Businesses in the simulated registry.")] = 3000,
    invoices: Annotated[int, typer.Option(help="Valid invoices to simulate.")] = 60_000,
    keep: Annotated[bool, typer.Option(help="Keep the previous demo's data instead of starting afresh.")] = False,
) -> None:
    """The embedded default end to end: broker, topics, simulated feed, worker, adoption figures."""
    from cli.demo import run_demo

    settings = load_settings()
    if "EINVOICE_DATA_DIR" not in os.environ:
        settings = settings.replace(data_dir=Path(".data/demo"))
    run_demo(settings, sellers=sellers, invoices=invoices, keep=keep, console=console)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

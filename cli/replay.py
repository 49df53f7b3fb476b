"""``einvoice-monitor replay``: rewind consumer groups, archive and publish topics, rebuild ClickHouse.

Every command writes an entry to the audit log (``$EINVOICE_DATA_DIR/audit/replay.jsonl``: who,
when, what range, result). Exit codes: 0 done, 1 a check found problems, 2 bad options,
3 refused (unsafe now; the message says what to do), 130 interrupted (run it again to resume).

The ``replay`` modules are imported inside each command: they load Kafka, ClickHouse and numpy,
which ``einvoice-monitor --help`` does not need.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from base.tables import Field, FittedTable
from cli.common import console, load_settings, resolve_bootstrap, stdout_console
from cli.progress import progress_bar

if TYPE_CHECKING:
    from rich.console import Console

    from base.config import Settings
    from replay.audit import AuditLog

replay_app = typer.Typer(
    help="Replay and backfill: rewind consumer groups, archive topics, publish archives, rebuild ClickHouse. "
    "Every command is written to the audit log ($EINVOICE_DATA_DIR/audit/replay.jsonl). Exit codes: 0 done, "
    "1 a check found problems or the work failed, 2 bad options, 3 refused (the message says what to do), "
    "130 interrupted (run the same command again to go on).",
    no_args_is_help=True,
)

TopicOption = Annotated[
    list[str] | None,
    typer.Option("--topic", help="Topic by role (invoices, registry, invoices_dlq, ...) or full name. Repeatable."),
]
PartitionOption = Annotated[list[int] | None, typer.Option("--partition", help="Only this partition. Repeatable.")]


def _env() -> tuple[Settings, Console]:
    return load_settings(), console


def _audit(settings: Settings) -> AuditLog:
    from replay.audit import AuditLog

    return AuditLog(settings.data_dir, settings.clickhouse_url)


@contextlib.contextmanager
def _errors(console: Console) -> Iterator[None]:
    """Known failures as one red line and an exit code, never a traceback."""
    from replay.refused import Refused

    try:
        yield
    except Refused as exc:
        console.print(f"[red]refused:[/] {exc}")
        raise typer.Exit(3) from None
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    except (RuntimeError, TimeoutError) as exc:  # e.g. the rebuild worker died: the message holds its log's end
        console.print(f"[red]failed:[/] {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: what is done is kept; run the same command again to go on")
        raise typer.Exit(130) from None


@contextlib.contextmanager
def _bar(console: Console, description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """A progress bar with events per second and time left; yields ``advance(n, total=None)``."""
    started = time.perf_counter()
    done = 0
    with progress_bar(console) as bar:
        task = bar.add_task(description, total=total, rate="")

        def advance(n: int, total: int | None = None) -> None:
            nonlocal done
            done += n
            rate = f"{done / max(time.perf_counter() - started, 1e-9):,.0f} ev/s"
            bar.update(task, completed=done, rate=rate, **({"total": total} if total is not None else {}))

        yield advance


def _rate(count: int, seconds: float) -> str:
    return f"{count:,} records in {seconds:.1f} s ({count / max(seconds, 1e-9):,.0f} ev/s)"


@replay_app.command("rewind")
def rewind_command(
    group: Annotated[str | None, typer.Option(help="Consumer group (default: the worker's, EINVOICE_APP_ID).")] = None,
    topic: TopicOption = None,
    partition: PartitionOption = None,
    to_earliest: Annotated[bool, typer.Option("--to-earliest", help="To the first offset still in the log.")] = False,
    to_latest: Annotated[bool, typer.Option("--to-latest", help="To the end: skip everything unread.")] = False,
    to_time: Annotated[
        str | None,
        typer.Option(
            "--to-time",
            help="To the first record received at or after this time: 2024-06-03, 2024-06-03T08:00 "
            "(local, Asia/Ho_Chi_Minh) or with an offset, 2024-06-03T01:00Z.",
        ),
    ] = None,
    to_offset: Annotated[
        list[str] | None,
        typer.Option(
            "--to-offset", help="Explicit offset: OFFSET for every chosen partition or PARTITION=OFFSET. Repeatable."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Show current and target offsets and what would be read again.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The plan as JSON on stdout.")] = False,
    stop_workers: Annotated[
        bool,
        typer.Option(help="Stop this machine's worker processes of the group (SIGTERM) before moving its offsets."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            help="Move the offsets even while members are active: they are removed from the group and rejoin."
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Rewind (or move) a consumer group's offsets: earliest, a time, or explicit offsets.

    Refuses while the group has active members unless --stop-workers or --force. Records already in
    ClickHouse are read again but not written again (the sink skips them); to get corrected data
    after a fix, rebuild (`replay rebuild`).
    """
    from replay.ranges import parse_instant, topic_name
    from replay.rewind import Target, apply_rewind, plan_rewind

    settings, console = _env()
    chosen = [v for v in (to_earliest, to_latest, to_time, to_offset) if v]
    if len(chosen) != 1:
        console.print("[red]say where to: exactly one of --to-earliest, --to-latest, --to-time, --to-offset[/]")
        raise typer.Exit(2)
    bootstrap = resolve_bootstrap(settings)
    group = group or settings.app_id
    topics = [topic_name(t, settings.topics) for t in topic or ["invoices"]]
    audit = _audit(settings)
    with _errors(console):
        if to_time is not None:
            target = Target("time", at_ms=parse_instant(to_time))
        elif to_offset:
            target = Target("offsets", offsets=tuple(to_offset))
        else:
            target = Target("earliest" if to_earliest else "latest")
        plan = plan_rewind(bootstrap, group, topics, partition, target)
        what = {"group": group, "topics": topics, "partitions": partition or "all", "to": target.describe()}
        _print_plan(plan, as_json)
        if dry_run:
            audit.record("rewind", what, "dry_run", {"plan": plan.as_json()})
            return
        if not yes and not typer.confirm(f"Move the offsets of group {group} as shown?", err=True):
            audit.record("rewind", what, "cancelled", {"plan": plan.as_json()})
            raise typer.Exit(1)
        with audit.action("rewind", what) as detail:
            detail["plan"] = plan.as_json()
            detail.update(apply_rewind(bootstrap, plan, stop_workers=stop_workers, force=force))
    console.print(
        f"group {group}: offsets moved. When it runs again it reads {plan.reprocess:,} records again"
        + (f" and skips {plan.skip:,}" if plan.skip else "")
        + f" ({plan.to_read:,} to read up to today's end)."
    )
    if detail.get("stopped_pids"):
        console.print(f"stopped worker process(es) {detail['stopped_pids']}: start the worker again when you are ready")


def plan_table(plan: Any) -> Any:
    """A rewind plan (replay.rewind.RewindPlan) per partition, with the total, as a FittedTable."""
    numbers = ("partition", "current", "target", "end", "read again", "skipped")
    table = FittedTable(
        f"group {plan.group} → {plan.target.describe()}", [Field("topic"), *(Field(h, "right") for h in numbers)]
    )
    for p in plan.partitions:
        counts = (p.current, p.target, p.end, p.reprocess, p.skip)
        table.add_row(p.topic, str(p.partition), *(f"{n:,}" for n in counts))
    table.add_row("total", "", "", "", "", f"{plan.reprocess:,}", f"{plan.skip:,}", style="bold")
    return table


def _print_plan(plan: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(plan.as_json()))
        return
    out = stdout_console()
    out.print(plan_table(plan))
    if plan.members.active:
        out.print(
            f"[yellow]active members ({plan.members.state}):[/] "
            + "; ".join(m.describe() for m in plan.members.members)
        )
    else:
        out.print(f"group state: {plan.members.state} (no active member)")


@replay_app.command("archive")
def archive_command(
    out: Annotated[Path, typer.Option(help="Directory for the files and manifest.json (new, or an unfinished one).")],
    topic: TopicOption = None,
    partition: PartitionOption = None,
    start: Annotated[str | None, typer.Option("--from", help="Records received at or after this time (local).")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Records received before this time (local).")] = None,
    from_offset: Annotated[
        list[str] | None, typer.Option(help="First offset: OFFSET or PARTITION=OFFSET (inclusive). Repeatable.")
    ] = None,
    to_offset: Annotated[
        list[str] | None,
        typer.Option(help="End offset: OFFSET or PARTITION=OFFSET (exclusive, like Kafka's end). Repeatable."),
    ] = None,
    codec: Annotated[str, typer.Option(help="Avro block compression: deflate or null.")] = "deflate",
    file_records: Annotated[int, typer.Option(help="Most records per file.")] = 1_000_000,
) -> None:
    """Archive topic ranges (by time or offset; default everything now in the log) to Avro container files.

    Writes <topic>/p<partition>/<first>-<last>.avro and manifest.json (topic, partition, offset range,
    count and sha256 per file). Interrupted, it goes on where it stopped when run again with the same options.
    """
    from replay.archive import plan_archive, write_archive
    from replay.ranges import parse_instant, parse_offsets, topic_name

    settings, console = _env()
    bootstrap = resolve_bootstrap(settings)
    topics = [topic_name(t, settings.topics) for t in topic or ["invoices"]]
    audit = _audit(settings)
    with _errors(console):
        every = list(partition or range(settings.partitions))
        plan = plan_archive(
            bootstrap,
            topics,
            partition,
            from_ms=parse_instant(start) if start else None,
            to_ms=parse_instant(end) if end else None,
            from_offsets=parse_offsets(from_offset or [], every) or None,
            to_offsets=parse_offsets(to_offset or [], every) or None,
            codec=codec,
            file_records=file_records,
        )
        what = {
            "topics": topics,
            "partitions": partition or "all",
            "from": start,
            "to": end,
            "from_offset": from_offset,
            "to_offset": to_offset,
            "out": str(out),
        }
        started = time.perf_counter()
        with audit.action("archive", what) as detail, _bar(console, "archiving", plan.records) as advance:
            detail["ranges"] = [f"{r.topic}[{r.partition}] {r.start}-{r.end}" for r in plan.ranges]
            manifest, written = write_archive(bootstrap, plan, out, advance)
            detail.update(
                records=manifest["records"],
                files=len(manifest["files"]),
                written_now=written,
                events_per_s=round(written / max(time.perf_counter() - started, 1e-9)),
            )
    console.print(
        f"archived {manifest['records']:,} records in {len(manifest['files'])} files to {out} "
        f"(this run: {_rate(written, time.perf_counter() - started)})"
    )


@replay_app.command("verify")
def verify_command(
    archive: Annotated[Path, typer.Argument(help="Archive directory (with manifest.json).", exists=True)],
) -> None:
    """Check an archive against its manifest: every file present, its sha256, its record count and offsets.

    Exit code 1 when anything differs (each problem is printed).
    """
    from replay.archive import read_manifest, verify_archive

    settings, console = _env()
    audit = _audit(settings)
    with _errors(console):
        manifest = read_manifest(archive)
        started = time.perf_counter()
        with (
            audit.action("verify", {"archive": str(archive)}) as detail,
            _bar(console, "verifying", manifest["records"]) as advance,
        ):
            report = verify_archive(archive, advance)
            detail.update(files=report.files, records=report.records, problems=report.problems)
            if not report.ok:
                detail["result"] = "damaged"
    for problem in report.problems:
        console.print(f"[red]{problem}[/]")
    seconds = time.perf_counter() - started
    if not report.ok:
        console.print(f"[red]{len(report.problems)} problem(s)[/] in {report.files} files")
        raise typer.Exit(1)
    console.print(f"archive ok: {report.files} files, {_rate(report.records, seconds)} verified")


@replay_app.command("publish")
def publish_command(
    archive: Annotated[
        Path, typer.Argument(help="Archive directory (replay archive or simulate --to files).", exists=True)
    ],
    topic: Annotated[
        list[str] | None,
        typer.Option(
            "--topic",
            help="SOURCE=TARGET: publish the archive's topic SOURCE into TARGET (a role or a full name). "
            "Default: the same names; a simulator archive goes to this deployment's topics.",
        ),
    ] = None,
    rate: Annotated[float | None, typer.Option(help="Target events per second (default: as fast as possible).")] = None,
    again: Annotated[bool, typer.Option(help="Publish an archive that was published to these topics already.")] = False,
    allow_duplicates: Annotated[
        bool,
        typer.Option(help="Publish even though the topic still holds the archived records (they will be there twice)."),
    ] = False,
) -> None:
    """Publish an archive back into topics: keys, values, timestamps and headers kept, at a target rate.

    Interrupted (Ctrl-C, a crash, a kill), it goes on when run again without sending anything twice.
    """
    from replay.archive import read_manifest
    from replay.publish import publish_archive
    from replay.ranges import topic_name

    settings, console = _env()
    bootstrap = resolve_bootstrap(settings)
    audit = _audit(settings)
    with _errors(console):
        manifest = read_manifest(archive)
        mapping = {name: topic_name(role, settings.topics) for role, name in manifest.get("topics", {}).items()}
        for spec in topic or []:
            if "=" not in spec:
                raise ValueError(f"--topic {spec!r}: write SOURCE=TARGET")
            source, target = spec.split("=", 1)
            mapping[source] = topic_name(target, settings.topics)
        what = {"archive": str(archive), "topics": mapping or "same names", "rate": rate}
        started = time.perf_counter()
        with audit.action("publish", what) as detail, _bar(console, "publishing", manifest["records"]) as advance:
            result = publish_archive(
                bootstrap,
                archive,
                settings.data_dir / "replay" / "publish",
                topic_map=mapping,
                rate=rate,
                again=again,
                allow_duplicates=allow_duplicates,
                on_progress=advance,
            )
            detail.update(
                records=result.total,
                sent=result.sent,
                already_there=result.already_there,
                resumed=result.resumed,
                events_per_s=round(result.sent / max(time.perf_counter() - started, 1e-9)),
            )
    resumed = f"; resumed: {result.already_there:,} had landed before the interruption" if result.resumed else ""
    console.print(f"published {_rate(result.sent, time.perf_counter() - started)}{resumed}")


@replay_app.command("rebuild")
def rebuild_command(
    resume: Annotated[
        bool, typer.Option(help="Go on with the pending rebuild (after Ctrl-C, or to catch up).")
    ] = False,
    rebuild_id: Annotated[str | None, typer.Option("--id", help="Which rebuild to resume (default: newest).")] = None,
) -> None:
    """Replay the topics from the earliest offset into a fresh ClickHouse database, with the current code and rules.

    Runs a worker of its own (group <app id>-rebuild-<id>; ClickHouse only, no DLQ, alerts or webhooks) until
    it has read everything up to now; the live worker and the boards go on. Then: `replay compare`,
    `replay switch`, and later `replay drop`.
    """
    from replay.rebuild import create_rebuild, find, rebuilt_database, run_rebuild

    settings, console = _env()
    bootstrap = resolve_bootstrap(settings)
    audit = _audit(settings)
    with _errors(console):
        rebuild = (
            find(settings, rebuild_id, ("running", "caught_up")) if resume else create_rebuild(settings, bootstrap)
        )
        database = rebuilt_database(settings, rebuild).describe()
        console.print(f"rebuild {rebuild.id} into {database} (group {rebuild.app_id})")
        started = time.perf_counter()
        with (
            audit.action("rebuild", {"rebuild": rebuild.id, "database": database, "resume": resume}) as detail,
            _bar(console, "rebuilding", None) as advance,
        ):
            seen = [0]

            def progress(done: int, total: int) -> None:
                advance(done - seen[0], total=total)
                seen[0] = done

            run_rebuild(settings, bootstrap, rebuild, progress)
            detail.update(records=seen[0], targets=rebuild.targets)
    console.print(
        f"rebuild {rebuild.id} caught up: {_rate(seen[0], time.perf_counter() - started)}. "
        f"Next: einvoice-monitor replay compare, then replay switch"
    )


@replay_app.command("compare")
def compare_command(
    rebuild_id: Annotated[str | None, typer.Option("--id", help="Which rebuild (default: the newest).")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Every segment, not only those that differ.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines on stdout.")] = False,
    limit: Annotated[int, typer.Option(help="Most rows in the table (0 = all).")] = 50,
) -> None:
    """Counts per local day × sector × unit side by side, live and rebuilt (after a switch: live and retired).

    Embedded mode: stop the worker first (chDB allows one process per directory).
    """
    from replay.rebuild import compare, find

    settings, console = _env()
    audit = _audit(settings)
    with _errors(console):
        rebuild = find(settings, rebuild_id, ("caught_up", "running", "switched"))
        other = "retired" if rebuild.status == "switched" else "rebuilt"
        with audit.action("compare", {"rebuild": rebuild.id}) as detail:
            comparison = compare(settings, rebuild)
            differing = comparison.differences()
            (live_n, live_a), (other_n, other_a) = comparison.totals()
            detail.update(
                segments=len(comparison.rows()), differing=len(differing), live_invoices=live_n, other_invoices=other_n
            )
            if differing:
                detail["result"] = "differences"
    rows = comparison.rows() if show_all else differing
    if as_json:
        for (day, vsic, unit, registered), live, rebuilt in rows:
            typer.echo(
                json.dumps(
                    {
                        "day": day,
                        "sector": vsic,
                        "unit": unit,
                        "registered": registered,
                        "live": dict(zip(("invoices", "revenue", "issuers"), live, strict=True)),
                        other: dict(zip(("invoices", "revenue", "issuers"), rebuilt, strict=True)),
                    }
                )
            )
        return
    stdout_console().print(compare_table(rebuild.id, other, rows[: limit or None]))
    typer.echo(
        f"{len(differing)} of {len(comparison.rows())} segments differ; invoices live {live_n:,}, "
        f"{other} {other_n:,} ({other_n - live_n:+,}); revenue {other_a - live_a:+,} VND"
    )


def compare_table(rebuild_id: str, other: str, rows: list[tuple]) -> Any:
    """Invoices and issuers per (day, sector, unit, registered), live and ``other``, as a FittedTable."""
    fields = [Field("day"), Field("sector"), Field("unit", wrap=True)] + [
        Field(header, "right") for header in ("live", other, "Δ invoices", "live issuers", f"{other} issuers")
    ]
    table = FittedTable(f"live vs {other} ({rebuild_id}): invoices per local day × sector × unit", fields)
    for (day, vsic, unit, registered), live, rebuilt in rows:
        label = unit if registered else f"{unit or '-'} (unregistered)"
        counts = (f"{live[0]:,}", f"{rebuilt[0]:,}", f"{rebuilt[0] - live[0]:+,}", f"{live[2]:,}", f"{rebuilt[2]:,}")
        table.add_row(str(day), vsic or "-", label, *counts)
    return table


@replay_app.command("switch")
def switch_command(
    rebuild_id: Annotated[
        str | None, typer.Option("--id", help="Which rebuild (default: the newest caught up).")
    ] = None,
    stop_workers: Annotated[bool, typer.Option(help="Stop this machine's live worker processes first.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Make the rebuilt database the live one in one step; the old one is kept until `replay drop`.

    Needs the live worker stopped (start it again afterwards) and the rebuild caught up with it. Server: one
    EXCHANGE TABLES statement (the boards see old or new tables, never none). Embedded: a directory swap.
    """
    from replay.databases import Database
    from replay.rebuild import find, rebuilt_database, switch

    settings, console = _env()
    bootstrap = resolve_bootstrap(settings)
    audit = _audit(settings)
    with _errors(console):
        rebuild = find(settings, rebuild_id, ("caught_up", "running"))
        target = rebuilt_database(settings, rebuild).describe()
        if not yes and not typer.confirm(f"Switch the live database to rebuild {rebuild.id} ({target})?", err=True):
            raise typer.Exit(1)
        with audit.action("switch", {"rebuild": rebuild.id, "database": target}) as detail:
            detail.update(switch(settings, bootstrap, rebuild, stop_workers=stop_workers))
        if not settings.clickhouse_url:  # embedded: chDB is free while the worker is stopped, copy the log now
            Database(settings.clickhouse_dsn).run("sync_audit", entries=audit.entries())
    console.print(
        f"switched to rebuild {rebuild.id}; the old data is kept as {rebuild.retired} until "
        f"`einvoice-monitor replay drop {rebuild.id}`. Start the worker again."
    )


@replay_app.command("drop")
def drop_command(
    rebuild_id: Annotated[str, typer.Argument(help="The rebuild whose retired (or abandoned) database goes.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a rebuild's other database (after a switch: the old data), its consumer group and its topics."""
    from replay.rebuild import drop, find, rebuilt_database

    settings, console = _env()
    bootstrap = resolve_bootstrap(settings)
    audit = _audit(settings)
    with _errors(console):
        rebuild = find(settings, rebuild_id, ())
        doomed = rebuilt_database(settings, rebuild).describe()
        if not yes and not typer.confirm(f"Delete {doomed} for good?", err=True):
            raise typer.Exit(1)
        with audit.action("drop", {"rebuild": rebuild.id, "database": doomed}) as detail:
            detail.update(drop(settings, bootstrap, rebuild))
    console.print(f"dropped {doomed}")


@replay_app.command("status")
def status_command() -> None:
    """The rebuilds and their state (running, caught_up, switched, dropped)."""
    from replay.rebuild import load_all, rebuilt_database

    settings, _console = _env()
    rows = []
    for rebuild in load_all(settings):
        last = rebuild.history[-1] if rebuild.history else {}
        database = rebuilt_database(settings, rebuild).describe()
        event = f"{last.get('event', '')} {last.get('at', '')}"
        rows.append(
            (rebuild.id, rebuild.status, rebuild.mode, database, rebuild.retired or "-", rebuild.created_by, event)
        )
    stdout_console().print(rebuilds_table(rows))


def rebuilds_table(rows: list[tuple[str, ...]]) -> Any:
    """(id, status, mode, database, retired, created by, last event) per rebuild, as a FittedTable."""
    fields = [Field("id"), Field("status"), Field("mode"), Field("database", wrap=True), Field("retired", wrap=True),
              Field("created by", wrap=True), Field("last event", wrap=True)]  # fmt: skip
    return FittedTable("rebuilds", fields, rows)


@replay_app.command("audit")
def audit_command(
    limit: Annotated[int, typer.Option(help="The newest entries to show (0 = all).")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines on stdout.")] = False,
    sync: Annotated[bool, typer.Option(help="Copy the entries to ClickHouse's replay_audit table.")] = False,
) -> None:
    """The replay audit log: who did what, when, on which range, and the result."""
    from replay.databases import Database

    settings, console = _env()
    audit = _audit(settings)
    entries = audit.entries()
    if sync:
        with _errors(console):
            copied = Database(settings.clickhouse_dsn).run("sync_audit", entries=entries)
        console.print(f"{copied} entr{'y' if copied == 1 else 'ies'} copied to replay_audit")
    for entry in entries[-limit if limit else None :]:
        if as_json:
            typer.echo(json.dumps(entry, ensure_ascii=False))
        else:
            typer.echo(
                f"{entry['at']}  {entry['user']}@{entry['host']}  {entry['action']:8} {entry['result']:11} "
                f"{json.dumps(entry['target'], ensure_ascii=False)}"
            )

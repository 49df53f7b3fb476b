"""Rebuild ClickHouse from the topics into a fresh database; compare; switch in one step; drop the old.

The rebuild runs the real worker (``einvoice-monitor worker``, so a fixed enrichment or a changed
rule is exactly what runs) with a consumer group of its own (``<app id>-rebuild-<id>``) from the
earliest offsets, in the rebuild role: it writes ClickHouse only, never the DLQ, alerts or webhooks,
which the live worker owns. The live worker and the boards go on meanwhile.

Where the fresh database lives:

- server (``CLICKHOUSE_URL``): database ``<live db>_rebuild_<id>`` on the same server. The switch is
  one ``EXCHANGE TABLES`` statement over every table the rebuild wrote (materialized views included;
  each exchange is atomic and no table is ever missing, so a board query sees the old or the new
  table, never an error), then the rebuild database is renamed ``<live db>_retired_<id>``.
- embedded (chDB): the directory ``<data dir>/replay/rebuilds/<id>/clickhouse``. chDB belongs to one
  process per directory, so the switch happens while the worker is stopped: two directory renames,
  journaled by the filesystem itself (re-running ``switch`` completes a half-done one).

Operational tables (alert state, webhook attempts, pipeline metrics, the replay audit) are not
derived from the topics: they stay the live ones (copied into the rebuilt directory in the
embedded mode). The old data stays, as ``..._retired_<id>``, until ``replay drop``.

The switch needs the live worker stopped: its sink knows in memory how far each partition was
written, and that must be read again from the new tables. It also needs the rebuild to have read
at least as far as the live group, so that the restarted worker finds no hole.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kafka.admin import KafkaAdminClient

from base.config import ENVIRONMENT, Settings, leader_topic, registry_changelog
from deploy.kafka import free_port
from deploy.worker_process import WorkerProcess
from kafka_io.offsets import end_offsets, group_positions
from kafka_io.topics import create_topics
from replay.audit import who
from replay.databases import Database
from replay.members import describe_group, stop_local_workers
from replay.refused import Refused
from sinks.clickhouse import ClickHouseStore

# not derived from the topics (the evaluator's and the dispatcher's state, the boards' daily figures the
# evaluator wrote, metrics, the audit): a switch keeps the live ones
OPERATIONAL_TABLES = (
    "alert_instances", "alert_events", "alert_silences", "segment_adoption", "dormant_issuers", "webhook_attempts",
    "webhook_endpoint_state", "pipeline_metrics", "replay_audit",
)  # fmt: skip
STATE = "rebuild.json"
T = TypeVar("T")
Progress = Callable[[int, int], None]


@dataclass
class Rebuild:
    """A rebuild's state file; never a secret in it (the server URL comes from the environment)."""

    id: str
    mode: str  # "server" or "embedded"
    app_id: str
    database: str  # server: the rebuild database's name; embedded: the rebuilt chDB directory
    created_at: str
    created_by: str
    status: str = "running"  # running, caught_up, switched, dropped
    retired: str = ""  # after the switch: the old database (server) or directory (embedded)
    targets: dict[str, dict[str, int]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def note(self, event: str, **detail: Any) -> None:
        self.history.append({"at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "event": event, **detail})


def rebuilds_dir(settings: Settings) -> Path:
    return settings.data_dir / "replay" / "rebuilds"


def save(settings: Settings, rebuild: Rebuild) -> None:
    path = rebuilds_dir(settings) / rebuild.id / STATE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(rebuild), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def load_all(settings: Settings) -> list[Rebuild]:
    found = []
    for path in sorted(rebuilds_dir(settings).glob(f"*/{STATE}")):
        found.append(Rebuild(**json.loads(path.read_text(encoding="utf-8"))))
    return found


def find(settings: Settings, rebuild_id: str | None, statuses: tuple[str, ...]) -> Rebuild:
    """The rebuild with this id, else the newest one in one of ``statuses``."""
    every = load_all(settings)
    if rebuild_id:
        for rebuild in every:
            if rebuild.id == rebuild_id:
                return rebuild
        raise Refused(f"no rebuild {rebuild_id}; `replay status` lists them")
    candidates = [r for r in every if r.status in statuses]
    if not candidates:
        raise Refused(f"no rebuild is {' or '.join(statuses)}; `replay status` lists them")
    return candidates[-1]


def live_database(settings: Settings) -> Database:
    return Database(settings.clickhouse_dsn)


def rebuilt_database(settings: Settings, rebuild: Rebuild) -> Database:
    """Before the switch the fresh database; after it the retired one (the other side of the switch)."""
    name = rebuild.retired if rebuild.status == "switched" else rebuild.database
    if rebuild.mode == "server":
        return live_database(settings).sibling(name)
    return Database(f"chdb://{Path(name).resolve()}")


def on_server(database: Database, fn: Callable[[Any], T]) -> T:
    """``fn(client)`` against a ClickHouse server (DDL of the rebuild: create, exchange, rename, drop)."""
    store = ClickHouseStore(database.dsn)
    try:
        return store.call(fn, store.client)
    finally:
        store.close()


def worker_settings(settings: Settings, rebuild: Rebuild, bootstrap: str) -> Settings:
    """The live configuration (with its fixes), another group and database, the rebuild role."""
    server = live_database(settings).sibling(rebuild.database).dsn if rebuild.mode == "server" else None
    return settings.replace(
        app_id=rebuild.app_id,
        data_dir=rebuilds_dir(settings) / rebuild.id,
        kafka_brokers=bootstrap,
        clickhouse_url=server,
        web_port=free_port(),
        role="rebuild",
        webhooks_file=None,
    )


def create_rebuild(settings: Settings, bootstrap: str) -> Rebuild:
    """A new rebuild: its id, database and topics (the worker's changelog and leader topics)."""
    pending = [r for r in load_all(settings) if r.status in ("running", "caught_up")]
    if pending:
        raise Refused(
            f"rebuild {pending[-1].id} is {pending[-1].status}: go on with `replay rebuild --resume`, "
            f"or drop it with `replay drop {pending[-1].id}`"
        )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    user, host = who()
    live = live_database(settings)
    if live.embedded:
        database = str((rebuilds_dir(settings) / stamp / "clickhouse").resolve())
    else:
        database = f"{live.name}_rebuild_{stamp}"
        on_server(live, lambda client: client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`"))
    rebuild = Rebuild(
        stamp,
        "embedded" if live.embedded else "server",
        f"{settings.app_id}-rebuild-{stamp}",
        database,
        dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        f"{user}@{host}",
    )
    create_topics(bootstrap, worker_settings(settings, rebuild, bootstrap))
    rebuild.note("created")
    save(settings, rebuild)
    return rebuild


def _consumed(bootstrap: str, group: str, targets: dict[str, dict[str, int]]) -> tuple[int, bool]:
    """Records of the targets the group has committed, and whether it reached every target."""
    done, reached = 0, True
    for topic, by_partition in targets.items():
        partitions = [int(p) for p in by_partition]
        positions = group_positions(bootstrap, group, topic, partitions)
        for p in partitions:
            done += min(positions[p], by_partition[str(p)])
            reached &= positions[p] >= by_partition[str(p)]
    return done, reached


def run_rebuild(
    settings: Settings,
    bootstrap: str,
    rebuild: Rebuild,
    on_progress: Progress | None = None,
    timeout_s: float = 24 * 3600,
) -> Rebuild:
    """Run the rebuild worker until its group has read the topics up to their ends of now; then stop it."""
    topics = settings.topics
    rebuild.targets = {
        t: {str(p): o for p, o in end_offsets(bootstrap, t, range(settings.partitions)).items()}
        for t in (topics.invoices, topics.registry)
    }
    rebuild.status = "running"
    rebuild.note("worker started", targets=rebuild.targets)
    save(settings, rebuild)
    configured = worker_settings(settings, rebuild, bootstrap)
    worker = WorkerProcess(configured.to_env(), configured.data_dir / "worker.log", configured.web_port)
    for name, (variable, _doc) in ENVIRONMENT.items():
        if getattr(configured, name) is None:
            worker.env.pop(variable, None)  # unset means unset: not inherited from this process (CLICKHOUSE_URL)
    total = sum(sum(by_partition.values()) for by_partition in rebuild.targets.values())
    worker.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if not worker.running:
                raise RuntimeError(f"the rebuild worker exited; its log ({worker.log_path}) ends:\n{worker.tail(20)}")
            done, reached = _consumed(bootstrap, rebuild.app_id, rebuild.targets)
            if on_progress:
                on_progress(done, total)
            if reached:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the rebuild did not catch up within {timeout_s:.0f} s")
            time.sleep(0.5)
    finally:
        worker.stop()
    rebuild.status = "caught_up"
    rebuild.note("caught up", records=total)
    save(settings, rebuild)
    return rebuild


@dataclass
class Comparison:
    """Per local day × sector × unit: (invoices, revenue, issuers) in the live and the other database."""

    live: dict[tuple[str, str, str, int], tuple[int, int, int]]
    other: dict[tuple[str, str, str, int], tuple[int, int, int]]

    def rows(self) -> list[tuple[tuple[str, str, str, int], tuple[int, int, int], tuple[int, int, int]]]:
        keys = sorted(set(self.live) | set(self.other))
        zero = (0, 0, 0)
        return [(k, self.live.get(k, zero), self.other.get(k, zero)) for k in keys]

    def differences(self) -> list[tuple[tuple[str, str, str, int], tuple[int, int, int], tuple[int, int, int]]]:
        return [row for row in self.rows() if row[1] != row[2]]

    def totals(self) -> tuple[tuple[int, int], tuple[int, int]]:
        def total(side: dict[Any, tuple[int, int, int]]) -> tuple[int, int]:
            return sum(v[0] for v in side.values()), sum(v[1] for v in side.values())

        return total(self.live), total(self.other)


def compare(settings: Settings, rebuild: Rebuild) -> Comparison:
    def counts(database: Database) -> dict[tuple[str, str, str, int], tuple[int, int, int]]:
        return {(d, v, u, r): (n, a, i) for d, v, u, r, n, a, i in database.run("segment_counts")}

    return Comparison(counts(live_database(settings)), counts(rebuilt_database(settings, rebuild)))


def exchange_tables(client: Any, live_db: str, rebuild_db: str) -> list[str]:
    """One statement: every table of ``rebuild_db`` but the operational ones takes its place in ``live_db``.

    Tables only the rebuild has (a new migration) are moved in afterwards. Returns the tables switched.
    """

    def tables(db: str) -> list[str]:
        rows = client.query(
            "SELECT name FROM system.tables WHERE database = {db:String} ORDER BY name", parameters={"db": db}
        ).result_rows
        return [name for (name,) in rows if name not in OPERATIONAL_TABLES and not name.startswith(".inner")]

    live, rebuilt = set(tables(live_db)), tables(rebuild_db)
    swap = [t for t in rebuilt if t in live]
    if not swap:
        raise Refused(f"database {rebuild_db} holds no table to switch")
    client.command("EXCHANGE TABLES " + ", ".join(f"`{live_db}`.`{t}` AND `{rebuild_db}`.`{t}`" for t in swap))
    for table in (t for t in rebuilt if t not in live):
        client.command(f"RENAME TABLE `{rebuild_db}`.`{table}` TO `{live_db}`.`{table}`")
    return rebuilt


def check_switchable(settings: Settings, bootstrap: str, rebuild: Rebuild, stop_workers: bool) -> dict[str, Any]:
    """Refuses unless the live worker and the rebuild worker are stopped and the rebuild is not behind."""
    if rebuild.status not in ("caught_up", "running"):
        raise Refused(f"rebuild {rebuild.id} is {rebuild.status}; only a caught-up rebuild can be switched to")
    outcome: dict[str, Any] = {"stopped_pids": []}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="einvoice-replay")
    try:
        live = describe_group(admin, settings.app_id)
        if live.active and stop_workers:
            outcome["stopped_pids"], live = stop_local_workers(admin, settings.app_id)
        if live.active:
            members = "; ".join(m.describe() for m in live.members)
            raise Refused(
                f"the live worker runs ({members}); stop it first (Ctrl-C, `docker compose stop worker`) "
                "or pass --stop-workers: its sink must read the new tables when it starts again"
            )
        if describe_group(admin, rebuild.app_id).active:
            raise Refused(f"the rebuild worker of {rebuild.id} still runs; wait for `replay rebuild` to finish")
    finally:
        admin.close()
    behind = 0
    for topic in (settings.topics.invoices, settings.topics.registry):
        every = range(settings.partitions)
        live_at = group_positions(bootstrap, settings.app_id, topic, every)
        rebuilt_at = group_positions(bootstrap, rebuild.app_id, topic, every)
        behind += sum(max(0, live_at[p] - rebuilt_at[p]) for p in every)
    if behind:
        raise Refused(
            f"the rebuild is {behind:,} records behind the live worker; catch up with "
            "`replay rebuild --resume` (the live worker stays stopped meanwhile)"
        )
    return outcome


def switch(settings: Settings, bootstrap: str, rebuild: Rebuild, stop_workers: bool = False) -> dict[str, Any]:
    """Make the rebuilt database the live one; the old one is kept as the retired one."""
    outcome = check_switchable(settings, bootstrap, rebuild, stop_workers)
    live = live_database(settings)
    if rebuild.mode == "server":
        retired = f"{live.name}_retired_{rebuild.id}"

        def exchange(client: Any) -> list[str]:
            tables = exchange_tables(client, live.name, rebuild.database)
            client.command(f"RENAME DATABASE `{rebuild.database}` TO `{retired}`")
            return tables

        outcome["tables"] = on_server(live, exchange)
    else:
        rebuilt = Path(rebuild.database)
        retired = str(rebuilt.with_name("retired-clickhouse"))
        if rebuilt.exists():
            carry = str(rebuilt.with_name("carried"))
            outcome["carried"] = live.run("export_tables", tables=list(OPERATIONAL_TABLES), directory=carry)
            Database(f"chdb://{rebuilt}").run("import_tables", tables=list(OPERATIONAL_TABLES), directory=carry)
            shutil.rmtree(carry, ignore_errors=True)
        swap_directories(live.directory, rebuilt, Path(retired))
    rebuild.status, rebuild.retired = "switched", retired
    rebuild.note("switched", **outcome)
    save(settings, rebuild)
    return outcome


def swap_directories(live: Path, rebuilt: Path, retired: Path) -> None:
    """live → retired, rebuilt → live; each step a rename, so a crash leaves a state this completes."""
    if rebuilt.exists() and live.exists():
        if retired.exists():
            raise Refused(f"{retired} exists already; move it away first")
        os.rename(live, retired)
    if rebuilt.exists() and not live.exists():
        os.rename(rebuilt, live)
    if not live.exists():
        raise RuntimeError(f"{live} is missing after the switch; the old data is in {retired}")


def drop(settings: Settings, bootstrap: str, rebuild: Rebuild) -> dict[str, Any]:
    """Delete the retired database (or an abandoned rebuild's), its consumer group and its topics."""
    if rebuild.status == "dropped":
        raise Refused(f"rebuild {rebuild.id} was dropped already")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="einvoice-replay")
    try:
        if describe_group(admin, rebuild.app_id).active:
            raise Refused(f"the rebuild worker of {rebuild.id} still runs; stop `replay rebuild` first")
        doomed = rebuilt_database(settings, rebuild)
        if rebuild.mode == "server":
            on_server(
                live_database(settings), lambda client: client.command(f"DROP DATABASE IF EXISTS `{doomed.name}`")
            )
        else:
            shutil.rmtree(doomed.directory, ignore_errors=True)
            shutil.rmtree(rebuilds_dir(settings) / rebuild.id / "faust", ignore_errors=True)
        existing = set(admin.list_topics())
        internal = [t for t in (registry_changelog(rebuild.app_id), leader_topic(rebuild.app_id)) if t in existing]
        if internal:
            admin.delete_topics(internal)
        groups = {g["group_id"] for g in admin.list_groups()}
        if rebuild.app_id in groups:
            admin.delete_groups([rebuild.app_id])
    finally:
        admin.close()
    rebuild.status = "dropped"
    rebuild.note("dropped", database=doomed.describe(), topics=internal)
    save(settings, rebuild)
    return {"database": doomed.describe(), "topics": internal}

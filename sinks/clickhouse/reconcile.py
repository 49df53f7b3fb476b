"""A partition's newest block made whole in every view, from the table of record (the restore's repair).

A crash can cut an insert short between ``invoices`` and the materialized views behind it (chDB
dies with the worker; a server can fail a view). Only a partition's newest block can be partial:
inserts are sequential, each awaited, and each is one Native block, so one part in ``invoices``.

The repair asks the store, not the deduplication window, what is missing:

- a view that keeps the block's token (``invoice_blocks``, the chain) holds a row of the block
  or not; when not, the view's own SELECT over the block's rows is inserted;
- an aggregating view is keyed by ``kafka_partition`` (0008_views_by_partition.sql), so only
  the partition's writer adds to its keys: for each key the block touches, the view's sums must
  equal what its SELECT computes from ``invoices``. A key that falls short gets one row of the
  differences (sums) and of the values that merge idempotently (min, max, uniqExact states);
  a key the view holds more of than ``invoices`` is a doubled block, reported, never "fixed".

The views are read from the store (``system.tables``), not listed here: a view added by a later
migration is repaired too, or refused loudly if its columns cannot be reconciled.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from sinks.clickhouse.client import ClickHouseStore

log = logging.getLogger(__name__)

SOURCE = "invoices"
_TO_TARGET = re.compile(r"\bTO\s+(?:`?\w+`?\.)?`?(\w+)`?")
_SOURCE_IN_SELECT = re.compile(r" FROM `?\w+`?\.`?invoices`? ")  # as system.tables writes a view's source
_SUM = re.compile(r"^SimpleAggregateFunction\(sum, (\w+)\)$")
_IDEMPOTENT = re.compile(r"^(?:SimpleAggregateFunction\((?:min|max), |AggregateFunction\((?:uniqExact|uniq|min|max), )")


@dataclass(frozen=True)
class View:
    """A materialized view of ``invoices`` and what the repair needs of its target table."""

    name: str
    target: str
    select: str  # the view's SELECT, its source written ``{source}``
    columns: tuple[str, ...]  # the target's columns that the view writes (those without a default)
    keys: tuple[str, ...] = ()
    sums: tuple[str, ...] = ()  # SimpleAggregateFunction(sum, T) columns, with T
    unsigned: frozenset[str] = frozenset()
    idempotent: tuple[str, ...] = ()
    by_token: bool = False  # the target keeps insert_token: a block is there or not

    def over(self, rows_sql: str) -> str:
        """The view's SELECT over the rows ``rows_sql`` selects from ``invoices``."""
        return self.select.replace("{source}", f"({rows_sql}) AS {SOURCE}")


@dataclass
class Repair:
    """What the repair of one block found and did, per view."""

    token: str
    added: dict[str, int] = field(default_factory=dict)  # view -> keys (or chain rows) written
    doubled: dict[str, int] = field(default_factory=dict)  # view -> keys holding more than invoices


def views(store: ClickHouseStore) -> list[View]:
    """Blocking: the materialized views of ``invoices``, with their targets' keys and columns."""
    client = store.client
    rows = client.query(
        "SELECT name, as_select, create_table_query FROM system.tables WHERE database = currentDatabase() "
        "AND engine = 'MaterializedView' ORDER BY name"
    ).result_rows
    dependents = set(
        client.query(
            "SELECT arrayJoin(dependencies_table) FROM system.tables WHERE database = currentDatabase() "
            "AND name = {source:String}",
            parameters={"source": SOURCE},
        ).result_columns[0]
        or ()
    )
    found = []
    for name, select, create in rows:
        if name not in dependents:
            continue
        target = _TO_TARGET.search(create)
        source = _SOURCE_IN_SELECT
        if target is None or len(source.findall(select)) != 1:
            raise RuntimeError(f"view {name}: cannot read its target or its one source {SOURCE} from {create!r}")
        found.append(_describe(store, name, target.group(1), source.sub(" FROM {source} ", select)))
    return found


def _describe(store: ClickHouseStore, name: str, target: str, select: str) -> View:
    client = store.client
    key_sql = client.query(
        "SELECT sorting_key FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
        parameters={"t": target},
    ).result_rows[0][0]
    keys = tuple(k.strip() for k in key_sql.split(",") if k.strip())
    columns = client.query(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String} "
        "AND default_kind = '' ORDER BY position",
        parameters={"t": target},
    ).result_rows
    names = tuple(c for c, _ in columns)
    if "insert_token" in names:
        return View(name, target, select, names, keys, by_token=True)
    if "kafka_partition" not in keys:
        raise RuntimeError(f"view {name}: {target} is not keyed by kafka_partition, so a restore cannot repair it")
    sums, unsigned, idempotent = [], set(), []
    for column, kind in columns:
        if column in keys:
            continue
        if (summed := _SUM.match(kind)) is not None:
            sums.append(column)
            if summed.group(1).startswith("UInt"):
                unsigned.add(column)
        elif _IDEMPOTENT.match(kind):
            idempotent.append(column)
        else:
            raise RuntimeError(f"view {name}: column {column} {kind} of {target} has no known repair")
    return View(name, target, select, names, keys, tuple(sums), frozenset(unsigned), tuple(idempotent))


def repair_block(store: ClickHouseStore, partition: int, token: str, views_: list[View]) -> Repair:
    """Blocking: make the block whose rows carry ``token`` whole in every view; returns what it did."""
    repair = Repair(token)
    block_rows = "SELECT * FROM invoices WHERE insert_token = {token:String}"
    params = {"token": token, "partition": partition}
    for view in views_:
        if view.by_token:
            held = store.client.query(
                f"SELECT count() FROM {view.target} WHERE insert_token = {{token:String}}", parameters=params
            ).result_rows[0][0]
            if not held:
                view_columns = ", ".join(view.columns)
                store.client.command(
                    f"INSERT INTO {view.target} ({view_columns}) SELECT {view_columns} FROM ({view.over(block_rows)})",
                    parameters=params,
                )
                repair.added[view.name] = 1
            continue
        missing, doubled = _reconcile(store, view, block_rows, params)
        if missing:
            repair.added[view.name] = missing
        if doubled:
            repair.doubled[view.name] = doubled
    return repair


def _reconcile(store: ClickHouseStore, view: View, block_rows: str, params: dict[str, object]) -> tuple[int, int]:
    """Blocking: add what ``view`` lacks of the keys the block touches; (keys repaired, keys doubled)."""
    view_keys = ", ".join(view.keys)
    # every row of the partition that can share a key with the block: the block's issue days and received hours
    neighbours = (
        "SELECT * FROM invoices WHERE kafka_partition = {partition:UInt16} AND ("
        "issue_date IN (SELECT DISTINCT issue_date FROM invoices WHERE insert_token = {token:String}) OR "
        "toStartOfHour(received_at) IN (SELECT DISTINCT toStartOfHour(received_at) FROM invoices "
        "WHERE insert_token = {token:String}))"
    )
    view_held = ", ".join(f"sum({c}) AS {c}" for c in view.sums)
    view_deltas = ", ".join(f"toInt64(t.{c}) - toInt64(h.{c}) AS d_{c}" for c in view.sums)
    view_short = " OR ".join(f"d_{c} != 0" for c in view.sums)
    view_over = " OR ".join(f"d_{c} < 0" for c in view.sums if c in view.unsigned) or "0"
    view_truth_keys = ", ".join(f"t.{k} AS {k}" for k in view.keys)
    view_rest = ", ".join(f"t.{c} AS {c}" for c in view.idempotent) or "0 AS _none"
    view_compared = (
        f"WITH block AS ({view.over(block_rows)}), "
        f"truth AS ({view.over(neighbours)}), "
        f"held AS (SELECT {view_keys}, {view_held} FROM {view.target} WHERE kafka_partition = {{partition:UInt16}} "
        f"AND ({view_keys}) IN (SELECT {view_keys} FROM block) GROUP BY {view_keys}) "
        f"SELECT {view_truth_keys}, {view_deltas}, {view_rest}, ({view_over}) AS doubled "
        f"FROM truth AS t LEFT JOIN held AS h USING ({view_keys}) "
        f"WHERE ({view_keys}) IN (SELECT {view_keys} FROM block) AND ({view_short})"
    )
    counted = store.client.query(
        f"SELECT countIf(NOT doubled), countIf(doubled) FROM ({view_compared})", parameters=params
    )
    missing, doubled = (int(n) for n in counted.result_rows[0])
    if doubled:
        log.error(
            "a view holds more than invoices: a doubled block", extra={"view": view.name, "keys": doubled, **params}
        )
    if missing:
        view_insert_columns = ", ".join([*view.keys, *view.sums, *view.idempotent])
        view_insert_values = ", ".join([*view.keys, *(f"d_{c}" for c in view.sums), *view.idempotent])
        store.client.command(
            f"INSERT INTO {view.target} ({view_insert_columns}) SELECT {view_insert_values} FROM ({view_compared}) "
            "WHERE NOT doubled",
            parameters=params,
        )
    return missing, doubled

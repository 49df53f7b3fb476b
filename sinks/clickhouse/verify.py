"""A store checked after the fact: doubled blocks, offsets stored twice, views that miscount, the chain.

The fence (docs/architecture.md, Exactly once into ClickHouse) keeps each Kafka record once in
``invoices`` and in every view behind it. What it relies on (the deduplication window, the views
fed in the same insert) can still fail in ways no writer notices: a frozen worker past the window,
a crash between the table and its views that the restore did not repair, a hand-made insert. This
module reads the store and says what it finds; it changes nothing.

Four checks, each a few aggregate queries (never a row of ``invoices`` brought into Python):

- *doubled starts*: ``invoice_blocks`` holds at most one block per (topic, partition, start);
- *doubled offsets*: each (topic, partition, offset) is in ``invoices`` once, counted per issue
  day as ``count() - uniqExact(kafka_offset)``; the scan aggregates in the table's order (issue
  day first, ``optimize_aggregation_in_order``), so the offsets held at once are about a day's;
- *views*: per day and source partition, ``seller_daily`` and ``segment_daily`` (by issue day) and
  ``receipts_hourly`` (by local receipt day) count each record the table holds once. The view is
  held to the table's distinct offsets, not its row count: a block stored twice doubles the
  views with the table, and a view that agrees with a doubled table still counts invoices twice.
  Each mismatch carries the table's row count too (``stored``), which tells the two cases apart;
- *the chain*: each insert token of ``invoices`` has one ``invoice_blocks`` row counting its rows,
  and each chain row has its rows in ``invoices``. Tokens of rows ingested before the chain
  existed (migration 0007) or older than its 30-day TTL (less a day) are not held to a chain row.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from sinks.clickhouse.client import ClickHouseStore

VIEWS: tuple[str, ...] = ("seller_daily", "segment_daily", "receipts_hourly")
CHAIN_MIGRATION = 7  # 0007_blocks.sql: the chain starts with the inserts after it
CHAIN_TTL_DAYS = 29  # invoice_blocks keeps 30 days; a day less, so a row about to expire is not missed
IN_ORDER = {"optimize_aggregation_in_order": 1}
RECEIVED_DAY = "toDate(toStartOfHour(toTimeZone(received_at, 'Asia/Ho_Chi_Minh')))"


@dataclass(frozen=True)
class DoubledStart:
    """Two or more blocks landed at one start of a partition: the fence let a second writer through."""

    kafka_topic: str
    kafka_partition: int
    block_start: int
    tokens: tuple[str, ...]  # the row tokens of the blocks at this start, sorted


@dataclass(frozen=True)
class DoubledOffsets:
    """Rows of one partition and issue day beyond one per Kafka offset: records stored twice."""

    kafka_topic: str
    kafka_partition: int
    issue_date: dt.date
    extra_rows: int  # count() - uniqExact(kafka_offset)


@dataclass(frozen=True)
class ViewMismatch:
    """A view's invoice count for one day and source partition differs from the records the table holds."""

    view: str
    day: dt.date  # issue day (seller_daily, segment_daily) or local receipt day (receipts_hourly)
    kafka_partition: int
    held: int  # sum(invoices) in the view
    expected: int  # distinct offsets in invoices: each record once
    stored: int  # rows in invoices: equal to ``held`` when the view only mirrors a doubled table

    @property
    def mirrors_table(self) -> bool:
        """The view agrees with the table's rows: the fault is in ``invoices`` (doubled), not the view."""
        return self.held == self.stored


@dataclass(frozen=True)
class ChainMismatch:
    """An insert token whose chain rows (``invoice_blocks``) do not match its rows in ``invoices``."""

    kafka_topic: str
    kafka_partition: int
    insert_token: str
    stored: int  # rows of invoices under the token (0: a chain row without rows)
    chain_rows: int  # invoice_blocks rows of the token (0: rows without a chain row)
    chain_counted: int  # sum of those rows' ``rows``

    @property
    def problem(self) -> str:
        """The mismatch in a few words."""
        if self.stored == 0:
            return "chain row without invoices rows"
        if self.chain_rows == 0:
            return "invoices rows without a chain row"
        if self.chain_rows > 1:
            return f"{self.chain_rows} chain rows for one token"
        return f"chain counts {self.chain_counted}, invoices hold {self.stored}"


@dataclass(frozen=True)
class StoreReport:
    """Everything ``verify_store`` found; ``ok`` when nothing."""

    rows: int  # rows of invoices read
    blocks: int  # rows of invoice_blocks read
    chain_since: dt.datetime  # tokens of rows ingested before this (UTC) are not held to a chain row
    doubled_starts: tuple[DoubledStart, ...] = ()
    doubled_offsets: tuple[DoubledOffsets, ...] = ()
    view_mismatches: tuple[ViewMismatch, ...] = ()
    chain_mismatches: tuple[ChainMismatch, ...] = ()

    @property
    def ok(self) -> bool:
        """No block doubled, no offset stored twice, every view counts each record once, the chain matches."""
        return not (self.doubled_starts or self.doubled_offsets or self.view_mismatches or self.chain_mismatches)

    def as_json(self) -> dict[str, Any]:
        """The report as JSON-ready values (dates and times in ISO 8601)."""
        found = asdict(self)
        found["chain_since"] = self.chain_since.isoformat()
        for item in found["doubled_offsets"]:
            item["issue_date"] = item["issue_date"].isoformat()
        for item in found["view_mismatches"]:
            item["day"] = item["day"].isoformat()
        for item in found["doubled_starts"]:
            item["tokens"] = list(item["tokens"])
        return {"ok": self.ok, **found}


def verify_store(store: ClickHouseStore) -> StoreReport:
    """Blocking (run it on the store's thread, ``store.call``): check the store; changes nothing."""
    query = store.client.query
    doubled_starts = tuple(
        DoubledStart(topic, int(partition), int(start), tuple(tokens))
        for topic, partition, start, tokens in query(
            "SELECT kafka_topic, kafka_partition, block_start, arraySort(groupArray(insert_token)) "
            "FROM invoice_blocks GROUP BY kafka_topic, kafka_partition, block_start HAVING count() > 1 "
            "ORDER BY kafka_topic, kafka_partition, block_start",
            settings=IN_ORDER,
        ).result_rows
    )
    blocks = int(query("SELECT count() FROM invoice_blocks").result_rows[0][0])

    # one pass over invoices: rows and distinct offsets per issue day, receipt day and source partition
    per_day = query(
        f"SELECT issue_date, {RECEIVED_DAY} AS received_day, kafka_topic, kafka_partition, "
        "count(), uniqExact(kafka_offset) FROM invoices "
        "GROUP BY issue_date, received_day, kafka_topic, kafka_partition",
        settings=IN_ORDER,
    ).result_rows
    extra: dict[tuple[str, int, dt.date], int] = defaultdict(int)
    truth: dict[tuple[str, dt.date, int], list[int]] = defaultdict(lambda: [0, 0])  # (view, day, p) -> stored, distinct
    rows = 0
    for issue_date, received_day, topic, partition, stored, distinct in per_day:
        # the copies of one record share its receipt time: summing over receipt days is the per-day count
        extra[(topic, int(partition), issue_date)] += int(stored) - int(distinct)
        rows += int(stored)
        for view in VIEWS:
            counted = truth[(view, received_day if view == "receipts_hourly" else issue_date, int(partition))]
            counted[0] += int(stored)
            counted[1] += int(distinct)
    doubled_offsets = tuple(
        DoubledOffsets(topic, partition, day, n) for (topic, partition, day), n in sorted(extra.items()) if n
    )

    held = {
        (view, day, int(partition)): int(total)
        for view, day, partition, total in query(
            "SELECT 'seller_daily', issue_date, kafka_partition, sum(invoices) FROM seller_daily "
            "GROUP BY issue_date, kafka_partition "
            "UNION ALL SELECT 'segment_daily', issue_date, kafka_partition, sum(invoices) FROM segment_daily "
            "GROUP BY issue_date, kafka_partition "
            "UNION ALL SELECT 'receipts_hourly', toDate(received_hour), kafka_partition, sum(invoices) "
            "FROM receipts_hourly GROUP BY toDate(received_hour), kafka_partition"
        ).result_rows
    }
    order = sorted(held.keys() | truth.keys(), key=lambda k: (VIEWS.index(k[0]), k[1], k[2]))
    view_mismatches = tuple(
        ViewMismatch(*key, held.get(key, 0), truth[key][1], truth[key][0])
        for key in order
        if held.get(key, 0) != truth[key][1]
    )

    since = query(
        f"SELECT greatest(now64(3, 'UTC') - INTERVAL {CHAIN_TTL_DAYS} DAY, "
        "(SELECT toDateTime64(max(applied_at), 3, 'UTC') FROM schema_migrations WHERE version = {v:UInt32}))",
        parameters={"v": CHAIN_MIGRATION},
    ).result_rows[0][0]
    chain_mismatches = tuple(
        ChainMismatch(topic, int(partition), token, int(stored), int(chain_rows), int(counted))
        for topic, partition, token, stored, chain_rows, counted in query(
            "SELECT kafka_topic, kafka_partition, insert_token, stored, chain_rows, chain_counted FROM "
            "(SELECT kafka_topic, kafka_partition, toString(insert_token) AS insert_token, count() AS stored, "
            " max(ingested_at) AS newest FROM invoices GROUP BY kafka_topic, kafka_partition, insert_token) AS s "
            "FULL OUTER JOIN "
            "(SELECT kafka_topic, kafka_partition, insert_token, count() AS chain_rows, sum(rows) AS chain_counted "
            " FROM invoice_blocks GROUP BY kafka_topic, kafka_partition, insert_token) AS c "
            "USING (kafka_topic, kafka_partition, insert_token) "
            "WHERE stored = 0 OR chain_rows > 1 OR (chain_rows = 0 AND newest >= {since:DateTime64(3, 'UTC')}) "
            "OR (chain_rows = 1 AND chain_counted != stored) "
            "ORDER BY kafka_topic, kafka_partition, insert_token",
            parameters={"since": since},
            settings={"join_use_nulls": 0},
        ).result_rows
    )
    return StoreReport(
        rows=rows,
        blocks=blocks,
        chain_since=since if since.tzinfo else since.replace(tzinfo=dt.UTC),
        doubled_starts=doubled_starts,
        doubled_offsets=doubled_offsets,
        view_mismatches=view_mismatches,
        chain_mismatches=chain_mismatches,
    )

"""Two workers, one killed: the other takes its partitions over, and nothing is lost or doubled.

Both workers share one store, as production workers share a ClickHouse server: the loopback
endpoint of ``harness/chdb_http.py`` owns the chDB directory and each worker reaches it through
``CLICKHOUSE_URL`` with the same HTTP client it uses against a server. Each has its own Faust data
directory and web port, one consumer group. One is SIGKILLed while both are inserting; after the
session timeout the survivor is assigned the dead worker's partitions and must resume them from
what the store holds (``InvoiceIngest.restore``: written offset, dedup keys, repair of the newest
block), then the exact accounting of ``test_exactly_once`` holds.

The frozen-worker tests stop a worker at an exact fault point instead (``streams/freeze.py``:
SIGSTOP, as a VM or GC pause would): when it wakes up after the takeover, nothing it had in
flight may land on top of what the survivor wrote (the fence, docs/architecture.md); and with
the fence off, the same run doubles rows.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from base.config import FAULT_POINTS_VARIABLE, Settings
from deploy.kafka import free_port
from deploy.worker_process import WorkerProcess
from harness.chdb_http import ChdbHttpServer
from sinks.clickhouse import ClickHouseStore, InvoiceSink
from sinks.clickhouse.verify import verify_store
from sinks.dead_letter import H_SOURCE_OFFSET
from streams import freeze
from tests import support
from tests.harness.test_chdb_http import flush, invoice_rows
from tests.support import PublishedFeed

RESTORED = re.compile(
    r'msg="partition restored".*?\bpartition=(\d+)\b.*?\bwritten_offset=(-?\d+)\b.*?\bdedup_keys=(\d+)'
)


def log_since(worker: WorkerProcess, since: int) -> str:
    with worker.log_path.open("rb") as log:
        log.seek(since)
        return log.read().decode(errors="replace")


def restored(text: str) -> dict[int, tuple[int, int]]:
    """partition -> (written_offset, dedup_keys) of each "partition restored" line."""
    return {int(p): (int(o), int(k)) for p, o, k in RESTORED.findall(text)}


def owned(worker: WorkerProcess) -> list[int]:
    """The invoice partitions the worker holds state for (``/health``)."""
    page = worker.get_json("/health")
    return page.get("partitions", []) if isinstance(page, dict) else []


def inserted(worker: WorkerProcess) -> float:
    return worker.metric_sum("einvoice_rows_inserted_total", table="invoices")


@dataclass
class Pair:
    """Two workers on one shared store, both inserting a published feed."""

    shared: Settings
    feed: PublishedFeed
    workers: list[WorkerProcess]

    def victim_and_survivor(self) -> tuple[WorkerProcess, WorkerProcess]:
        """The one holding more partitions (more work to move) first."""
        victim, survivor = sorted(self.workers, key=lambda w: len(owned(w)), reverse=True)
        return victim, survivor


@contextlib.contextmanager
def two_workers_inserting(settings: Settings, tmp_path: Path, invoices: int = 60_000) -> Iterator[Pair]:
    with ChdbHttpServer(tmp_path / "store") as dsn:
        shared = settings.replace(clickhouse_url=dsn, session_timeout_s=10.0)
        workers = []
        try:
            for name in ("a", "b"):
                own = shared.replace(data_dir=tmp_path / name, web_port=free_port())
                workers.append(support.start_worker(own, name=f"worker-{name}"))
            # both in the group before any record: the first assignment splits the partitions between them
            time.sleep(2 * shared.session_timeout_s / 5)
            feed = PublishedFeed(shared, sellers=2000, invoices=invoices, seed=88, unregistered=30)
            assert len(feed.valid) >= invoices * 0.96 and len(feed.malformed) >= invoices // 120
            both_inserting = lambda: all(owned(w) and inserted(w) > 0 for w in workers)  # noqa: E731
            support.wait_until(both_inserting, 120, "both workers inserting")
            yield Pair(shared, feed, workers)
        finally:
            for worker in workers:
                worker.stop()


def count_and_distinct(shared: Settings) -> tuple[int, int]:
    store = support.open_store(shared)
    try:
        count, distinct = store.query_rows("SELECT count(), uniqExact(seller_id, invoice_code) FROM invoices")[0]
        return int(count), int(distinct)
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.parametrize(("batch_size", "invoices"), [(1000, 60_000), (Settings().batch_size, 240_000)])
def test_the_survivor_takes_over_a_killed_workers_partitions_exactly(
    settings: Settings, tmp_path: Path, batch_size: int, invoices: int
) -> None:
    """At the tests' small batches and at the default batch size (blocks of up to 40,000 rows)."""
    with two_workers_inserting(settings.replace(batch_size=batch_size), tmp_path, invoices) as pair:
        shared, feed = pair.shared, pair.feed
        topic = shared.topics.invoices
        # SIGKILL: no revocation, no goodbye to the group
        victim, survivor = pair.victim_and_survivor()
        moved = owned(victim)
        kept = owned(survivor)
        victim_rows = inserted(victim)
        log_mark = survivor.log_path.stat().st_size
        victim.kill()
        committed = support.committed_offsets(shared, topic)
        ends = support.end_offsets(shared, topic)
        at_kill = sum(committed.values())
        assert sorted(moved + kept) == list(range(shared.partitions)), (moved, kept)
        # moved partitions with records left: their resume must run on the survivor, or this proves nothing
        unfinished = {p for p in moved if committed.get(p, 0) < ends[p]}
        assert unfinished, (committed, ends, moved)

        support.wait_consumed(shared, survivor, timeout=240)
        # state is loaded lazily, on a partition's first records after an assignment: the moved ones had work left
        assert set(moved) <= set(owned(survivor))
        takeover_log = log_since(survivor, log_mark)
        resumed = restored(takeover_log)
        # the sink's per-partition resume ran on the survivor for every moved partition, from what the dead
        # worker had written (not from scratch): its written offset and dedup keys came from the store, and
        # the newest block was checked against every view (repaired where a view lacked it)
        assert unfinished <= set(resumed), (unfinished, resumed, survivor.tail())
        assert victim_rows > 0
        assert any(resumed[p][0] >= 0 and resumed[p][1] > 0 for p in unfinished), resumed

        for worker in pair.workers:
            worker.stop()
        valid = feed.valid
        assert count_and_distinct(shared) == (len(valid), len(valid)), (at_kill, ends, moved)
        store = support.open_store(shared)
        try:
            expected = support.expected_totals(feed.records, feed.registered)
            assert support.segment_totals(store) == expected
            assert support.seller_daily_totals(store) == expected
            issuers = store.query_rows("SELECT uniqExactMerge(issuers) FROM segment_daily")[0][0]
            assert issuers == len({r.seller_id for r in valid})
            per_partition = dict(store.query_rows("SELECT kafka_partition, count() FROM invoices GROUP BY 1"))
            assert sorted(per_partition) == list(range(shared.partitions))
            report = store.call(verify_store, store)
            assert report.ok, report
        finally:
            store.close()

    dlq = support.read_topic(shared, shared.topics.invoices_dlq)
    assert Counter(r.value for r in dlq) == Counter(r.value for r in feed.malformed)
    assert len({(r.partition, int(dict(r.headers)[H_SOURCE_OFFSET])) for r in dlq}) == len(dlq)


def stopped(worker: WorkerProcess) -> bool:
    """The worker froze itself (SIGSTOP at its fault point): state T in /proc."""
    assert worker.proc is not None
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{worker.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    return False


@dataclass(frozen=True)
class Frozen:
    """What a frozen-worker run left: the store's counts against the feed, and the woken worker's log."""

    count: int
    distinct: int
    valid: int
    segments: tuple[dict, dict, dict]  # segment_daily, seller_daily, expected totals
    dlq: list
    malformed: list
    woken_log: str
    blocks: int  # blocks that landed while a was frozen


FILLER_PARTITION = 900  # the window test's own blocks: partitions no deployment here has, removed after


def fill_the_window(dsn: str, blocks: int) -> None:
    """``blocks`` inserts of a few rows each, of partitions of their own, into the shared store."""
    admin = ClickHouseStore(dsn)
    try:
        sink = InvoiceSink(admin, "window.filler")
        for n in range(blocks):
            flush(
                sink, {FILLER_PARTITION + n: invoice_rows([("0100000009", "4711", "380")], 3, FILLER_PARTITION + n, 0)}
            )
    finally:
        admin.close()


def freeze_and_take_over(
    settings: Settings,
    tmp_path: Path,
    point: str,
    fence: str,
    window: int | None = None,
    survivor_batch: int | None = None,
) -> Frozen:
    """Worker a freezes itself at ``point`` of its third block; b takes its partitions over and writes on.

    Then a is woken (SIGCONT). Its batches are 700 records, b's up to 40,000: the two split a
    partition into different blocks, so without the fence their inserts' tokens differ and a's
    block lands a second time (the unfenced token names a block's first and last row).
    """
    with ChdbHttpServer(tmp_path / "store") as dsn:
        shared = settings.replace(clickhouse_url=dsn, session_timeout_s=10.0, fence=fence)
        victim_settings = shared.replace(data_dir=tmp_path / "a", web_port=free_port(), batch_size=700)
        env = {**victim_settings.to_env(), FAULT_POINTS_VARIABLE: "1"}
        victim = WorkerProcess(env, victim_settings.data_dir / "worker-a.log", victim_settings.web_port)
        # the survivor at the default batch size: its blocks of up to 40,000 rows meet a's of 700
        survivor_settings = shared.replace(
            data_dir=tmp_path / "b", web_port=free_port(), batch_size=Settings().batch_size
        )
        workers = [victim]
        try:
            victim.start().wait_healthy()
            if window is not None:  # the migrations ran: every deduplicating table keeps only `window` ids
                admin = ClickHouseStore(dsn)
                try:
                    support.set_dedup_window(admin, window)
                finally:
                    admin.close()
            workers.append(support.start_worker(survivor_settings, name="worker-b"))
            time.sleep(2 * shared.session_timeout_s / 5)  # both in the group before any record
            freeze.arm(victim_settings.data_dir, point, after=2)
            feed = PublishedFeed(shared, sellers=2000, invoices=60_000, seed=88, unregistered=30)
            support.wait_until(lambda: stopped(victim), 120, f"worker a to freeze at {point}", victim)
            frozen_at = time.time()
            topic = shared.topics.invoices
            committed, ends = support.committed_offsets(shared, topic), support.end_offsets(shared, topic)
            # the frozen worker holds partitions with records left: its block is in the middle of one
            assert any(committed.get(p, 0) < ends[p] for p in range(shared.partitions)), (committed, ends)
            # b is assigned everything after a's session times out, resumes a's partitions from the store
            # and writes every record to the end (the group commits each partition's end)
            support.wait_consumed(shared, workers[1], timeout=240)
            assert set(owned(workers[1])) == set(range(shared.partitions)), owned(workers[1])
            if window is not None:  # more inserts than the window, whatever the survivor's blocks were
                fill_the_window(dsn, 2 * window)
            mark = victim.log_path.stat().st_size
            assert victim.proc is not None
            os.kill(victim.proc.pid, signal.SIGCONT)
            support.wait_until(lambda: "fault point: woken" in log_since(victim, mark), 30, "a to wake", victim)
            time.sleep(8)  # a does whatever it still does: write, be refused, rejoin the group
            support.wait_consumed(shared, workers[1], timeout=120)
            woken_log = log_since(victim, mark)
            admin = ClickHouseStore(dsn)
            try:  # the blocks that landed while a was frozen: more than the window, in the window case
                after = admin.query_rows(
                    "SELECT count() FROM invoice_blocks WHERE inserted_at > fromUnixTimestamp64Milli({at:Int64})",
                    {"at": int(frozen_at * 1000)},
                )[0][0]
                for table in ("invoices", "seller_daily", "segment_daily", "receipts_hourly", "invoice_blocks"):
                    admin.call(admin.client.command, f"DELETE FROM {table} WHERE kafka_partition >= {FILLER_PARTITION}")
            finally:
                admin.close()
        finally:
            for worker in workers:
                worker.stop()
        count, distinct = count_and_distinct(shared)
        store = support.open_store(shared)
        try:
            expected = support.expected_totals(feed.records, feed.registered)
            segments = (support.segment_totals(store), support.seller_daily_totals(store), expected)
        finally:
            store.close()
        dlq = support.read_topic(shared, shared.topics.invoices_dlq)
        return Frozen(count, distinct, len(feed.valid), segments, dlq, feed.malformed, woken_log, after)


@pytest.mark.slow
@pytest.mark.parametrize("point", freeze.POINTS)
def test_a_worker_frozen_at_a_fault_point_loses_and_doubles_nothing(
    settings: Settings, tmp_path: Path, point: str
) -> None:
    """Frozen between "block prepared" and "insert sent", or between "insert sent" and "offsets committed".

    Before the insert: b's block at the same start lands first, a's insert is dropped by its token
    and a reads back that the start is b's. After the insert: a's block is the chain b resumes from,
    and a's next batch is refused by the group (its lease ran out). Either way: exactly once.
    """
    fence = os.environ.get("EINVOICE_TEST_FENCE", "on")  # =off shows this test fail without the fence
    run = freeze_and_take_over(settings, tmp_path, point, fence)
    print(f"{point}: {run.count} rows, {run.distinct} distinct, {run.valid} valid; woken log:\n{run.woken_log[-3000:]}")
    assert (run.count, run.distinct) == (run.valid, run.valid), "0 lost, 0 doubled in invoices"
    segment_daily, seller_daily, expected = run.segments
    assert segment_daily == expected and seller_daily == expected, "0 lost, 0 doubled in every view"
    if point == freeze.BEFORE_INSERT:
        assert "block start taken by another writer" in run.woken_log, run.woken_log
    # each malformed record of the feed once in the DLQ: a wrote its dead letters before it froze,
    # and b, resuming, skipped what the DLQ held (docs/architecture.md, Exactly once, on the DLQ)
    source = {(r.partition, int(dict(r.headers)[H_SOURCE_OFFSET])) for r in run.dlq}
    assert len(source) == len(run.malformed)
    assert Counter(r.value for r in run.dlq) == Counter(r.value for r in run.malformed)


@pytest.mark.slow
def test_a_worker_woken_after_more_inserts_than_the_window_doubles_nothing(settings: Settings, tmp_path: Path) -> None:
    """Every deduplicating table keeps 10 insert ids; the survivor writes many more blocks (1,000 records each)
    while a is frozen before its insert. The fenced insert is conditional on the chain in the statement
    itself, so a's woken insert adds nothing whatever the window (with tokens alone it would land)."""
    run = freeze_and_take_over(settings, tmp_path, freeze.BEFORE_INSERT, "on", window=10, survivor_batch=1000)
    print(f"window 10: {run.count} rows, {run.distinct} distinct, {run.valid} valid, {run.blocks} blocks")
    assert run.blocks > 10, "more blocks than the window landed while a was frozen"
    assert (run.count, run.distinct) == (run.valid, run.valid), "0 lost, 0 doubled in invoices"
    segment_daily, seller_daily, expected = run.segments
    assert segment_daily == expected and seller_daily == expected
    assert "block start taken by another writer" in run.woken_log, run.woken_log


@pytest.mark.slow
@pytest.mark.parametrize(
    ("point", "fence"), [(freeze.BEFORE_INSERT, "off"), (freeze.BEFORE_COMMIT, "off"), (freeze.BEFORE_INSERT, "lease")]
)
def test_without_the_fence_a_frozen_worker_doubles_rows(
    settings: Settings, tmp_path: Path, point: str, fence: str
) -> None:
    """EINVOICE_FENCE=off: the same run doubles what the woken worker writes (the test above can fail).

    EINVOICE_FENCE=lease keeps the group's lease and drops the store's fence alone: a worker frozen
    before its insert passed the lease already, so only the store's fence can stop its block, and
    without it the block doubles.
    """
    run = freeze_and_take_over(settings, tmp_path, point, fence=fence)
    print(f"{point}, fence {fence}: {run.count} rows, {run.distinct} distinct, {run.valid} valid")
    assert run.distinct == run.valid, "nothing lost"
    assert run.count > run.distinct, "a's block landed on top of b's"
    segment_daily, _, expected = run.segments
    assert segment_daily != expected

"""Two workers, one killed: the other takes its partitions over, and nothing is lost or doubled.

Both workers share one store, as production workers share a ClickHouse server: the loopback
endpoint of ``deploy/chdb_http.py`` owns the chDB directory and each worker reaches it through
``CLICKHOUSE_URL`` with the same HTTP client it uses against a server. Each has its own Faust data
directory and web port, one consumer group. One is SIGKILLed while both are inserting; after the
session timeout the survivor is assigned the dead worker's partitions and must resume them from
what the store holds (``InvoiceIngest.restore``: written offset, dedup keys, repair of the newest
block), then the exact accounting of ``test_exactly_once`` holds.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import pytest

from deploy.chdb_http import ChdbHttpServer
from deploy.kafka import free_port
from deploy.worker_process import WorkerProcess
from sinks.dead_letter import H_SOURCE_OFFSET
from streams.config import Settings
from tests.support import (
    PublishedFeed,
    committed_offsets,
    end_offsets,
    expected_totals,
    open_store,
    read_topic,
    segment_totals,
    seller_daily_totals,
    start_worker,
    wait_consumed,
    wait_until,
)

RESTORED = re.compile(
    r'msg="partition restored".*?\bpartition=(\d+)\b.*?\bwritten_offset=(-?\d+)\b.*?\bdedup_keys=(\d+)'
)
REPAIRED = re.compile(r'msg="restore done" partitions="\[([\d, ]*)\]" rows_reinserted=(\d+)')


def log_since(worker: WorkerProcess, since: int) -> str:
    with worker.log_path.open("rb") as log:
        log.seek(since)
        return log.read().decode(errors="replace")


def restored(text: str) -> dict[int, tuple[int, int]]:
    """partition -> (written_offset, dedup_keys) of each "partition restored" line."""
    return {int(p): (int(o), int(k)) for p, o, k in RESTORED.findall(text)}


def repaired(text: str) -> dict[int, int]:
    """partition -> rows read back and inserted again under their token, per "restore done" line."""
    return {int(p): int(n) for ps, n in REPAIRED.findall(text) for p in ps.split(",") if p.strip()}


def owned(worker: WorkerProcess) -> list[int]:
    """The invoice partitions the worker holds state for (``/health``)."""
    page = worker.get_json("/health")
    return page.get("partitions", []) if isinstance(page, dict) else []


def inserted(worker: WorkerProcess) -> float:
    return worker.metric_sum("einvoice_rows_inserted_total", table="invoices")


@pytest.mark.slow
def test_the_survivor_takes_over_a_killed_workers_partitions_exactly(settings: Settings, tmp_path: Path) -> None:
    with ChdbHttpServer(tmp_path / "store") as dsn:
        shared = settings.replace(clickhouse_url=dsn, session_timeout_s=10.0)
        workers = []
        for name in ("a", "b"):
            own = shared.replace(data_dir=tmp_path / name, web_port=free_port())
            workers.append(start_worker(own, name=f"worker-{name}"))
        try:
            # both in the group before any record: the first assignment splits the partitions between them
            time.sleep(2 * shared.session_timeout_s / 5)
            feed = PublishedFeed(shared, sellers=2000, invoices=60_000, seed=88, unregistered=30)
            assert len(feed.valid) >= 58_000 and len(feed.malformed) >= 500
            topic = shared.topics.invoices
            total = sum(end_offsets(shared, topic).values())

            wait_until(lambda: all(owned(w) and inserted(w) > 0 for w in workers), 120, "both workers inserting")
            # kill the one holding the most work left; SIGKILL: no revocation, no goodbye to the group
            victim, survivor = sorted(workers, key=lambda w: len(owned(w)), reverse=True)
            moved = owned(victim)
            kept = owned(survivor)
            victim_rows = inserted(victim)
            log_mark = survivor.log_path.stat().st_size
            victim.kill()
            at_kill = sum(committed_offsets(shared, topic).values())
            assert sorted(moved + kept) == list(range(shared.partitions)), (moved, kept)
            assert at_kill < total, "the survivor must have work left when the other dies, or this proves nothing"

            wait_consumed(shared, survivor, timeout=240)
            # state is loaded lazily, on a partition's first records after an assignment: the moved ones had work left
            assert set(moved) <= set(owned(survivor))
            takeover_log = log_since(survivor, log_mark)
            resumed = restored(takeover_log)
            # the sink's per-partition resume ran on the survivor for every moved partition, from what the dead
            # worker had written (not from scratch): its written offset and dedup keys came from the store, and
            # the newest block was re-inserted under its token (dropped where it had landed)
            assert set(moved) <= set(resumed), (moved, resumed, survivor.tail())
            assert victim_rows > 0
            assert any(resumed[p][0] >= 0 and resumed[p][1] > 0 for p in moved), resumed
            assert any(repaired(takeover_log).get(p, 0) > 0 for p in moved), takeover_log
        finally:
            for worker in workers:
                worker.stop()

        valid = feed.valid
        store = open_store(shared)
        try:
            count, distinct = store.query_rows("SELECT count(), uniqExact(seller_id, invoice_code) FROM invoices")[0]
            assert (count, distinct) == (len(valid), len(valid)), f"killed at {at_kill}/{total}, moved {moved}"
            expected = expected_totals(feed.records, feed.registered)
            assert segment_totals(store) == expected
            assert seller_daily_totals(store) == expected
            issuers = store.query_rows("SELECT uniqExactMerge(issuers) FROM segment_daily")[0][0]
            assert issuers == len({r.seller_id for r in valid})
            per_partition = dict(store.query_rows("SELECT kafka_partition, count() FROM invoices GROUP BY 1"))
            assert sorted(per_partition) == list(range(shared.partitions))
        finally:
            store.close()

    dlq = read_topic(shared, shared.topics.invoices_dlq)
    assert Counter(r.value for r in dlq) == Counter(r.value for r in feed.malformed)
    assert len({(r.partition, int(dict(r.headers)[H_SOURCE_OFFSET])) for r in dlq}) == len(dlq)

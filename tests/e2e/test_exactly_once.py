"""Exactly once, proven by killing the worker: SIGKILL at random moments, then exact accounting.

The chaos suite's first case. CI runs the fast size (60,000 invoices, 5 kills); ``make chaos``
(``EINVOICE_CHAOS=full``) runs 1,000,000 invoices and 20 kills. The kill moments are random
points of the feed, spread over the whole run: each worker is killed once it has read past its
point, after a random extra moment, so kills land in every stage of a batch (decode, insert,
commit) and at every depth of the feed.
"""

from __future__ import annotations

import random
import time

import pytest

from base.config import Settings
from tests.support import (
    PublishedFeed,
    assert_exact_accounting,
    chaos_full,
    committed_total,
    consume_all,
    end_offsets,
    kill_once_past,
    open_store,
    start_worker,
)

FULL = chaos_full()
DEFAULT_BATCH = Settings().batch_size  # 40,000: what a deployment runs unless told
INVOICES, KILLS, SELLERS = (1_000_000, 20, 10_000) if FULL else (60_000, 5, 3000)


@pytest.mark.slow
@pytest.mark.chaos
@pytest.mark.parametrize("batch_size", [1000, DEFAULT_BATCH])
def test_sigkill_at_random_moments_loses_nothing_and_counts_nothing_twice(settings, batch_size):
    """At the tests' small batches and at the default batch size (blocks past a client's ~2 MiB insert piece)."""
    settings = settings.replace(batch_size=batch_size)
    # a batch reads up to 40,000 records: the fast size's feed is made four times longer, so that work is left
    invoices = INVOICES if FULL or batch_size < DEFAULT_BATCH else 4 * INVOICES
    feed = PublishedFeed(settings, sellers=SELLERS, invoices=invoices, seed=2024, unregistered=40)
    assert len(feed.valid) >= invoices * 0.98
    assert sum(r.kind == "duplicate" for r in feed.records) >= invoices * 0.018
    assert len(feed.malformed) >= invoices * 0.01

    rng = random.Random(99)
    total = sum(end_offsets(settings, settings.topics.invoices).values())
    # random points of the feed, in order; kept short of its end so that work remains at each kill
    targets = sorted(rng.randint(total // 50, total * 2 // 3) for _ in range(KILLS))
    progress_at_kill = []
    started = time.monotonic()
    for kill, target in enumerate(targets):
        worker = start_worker(settings, name=f"worker-{kill}")
        try:
            kill_once_past(settings, worker, target, rng.uniform(0.0, 0.2), timeout=300)
        finally:
            worker.kill()  # already killed, or left behind by a failed wait: never a worker outliving its test
        progress_at_kill.append(committed_total(settings))
    # the kills must have landed while there was work left, and spread over the feed
    assert all(p < total for p in progress_at_kill), (progress_at_kill, total)
    assert progress_at_kill[-1] > total // 3, (progress_at_kill, total)
    assert all(p >= t - 10_000 for p, t in zip(progress_at_kill, targets, strict=True)), (progress_at_kill, targets)

    consume_all(settings, name="worker-final", timeout=1800 if FULL else 600)
    seconds = round(time.monotonic() - started)
    assert_exact_accounting(settings, feed, f"kills at committed offsets {progress_at_kill} of {total}, {seconds}s")


@pytest.mark.slow
def test_a_worker_killed_twice_at_the_default_batch_size_restores_its_big_blocks_exactly(settings):
    """The issue's run: a feed published ahead, a worker at the default batch size SIGKILLed twice.

    Its blocks are far past clickhouse-connect's ~2 MiB insert piece (16,384 rows), the size at which
    re-inserting a newest block at each restore doubled it. Each restart restores every partition
    from the store; nothing may land twice.
    """
    settings = settings.replace(batch_size=DEFAULT_BATCH)
    feed = PublishedFeed(settings, sellers=3000, invoices=240_000, seed=31, unregistered=40)
    total = sum(end_offsets(settings, settings.topics.invoices).values())
    for kill, target in enumerate((total // 4, total // 2)):
        worker = start_worker(settings, name=f"worker-{kill}")
        try:
            kill_once_past(settings, worker, target, 0.05 * kill, timeout=300)
        finally:
            worker.kill()
    store = open_store(settings)
    try:
        biggest = store.query_rows("SELECT max(rows) FROM invoice_blocks")[0][0]
    finally:
        store.close()
    assert biggest > 16_384, f"the newest blocks held {biggest} rows at most: not the size that doubled"
    consume_all(settings, name="worker-final", timeout=600)
    assert_exact_accounting(settings, feed, f"blocks of up to {biggest} rows")

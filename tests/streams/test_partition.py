"""streams.partition without Kafka or ClickHouse: one owner a partition, forgotten in one place.

The owner is the whole of what this worker knows of a partition; these pin that forgetting it drops
all of that (the owner, the sinks' buffers, the compiled core's state) and that a batch prepared
with an owner forgotten before its write writes nothing of that partition (the owner is its epoch),
with the real ingest on the in-memory stores.
"""

from __future__ import annotations

import asyncio

import pytest

from contracts.validation import InvoiceValidator, Rejection
from sinks.clickhouse.invoice_sink import InvoiceSink
from sinks.clickhouse.memory import MemoryInvoiceStore
from sinks.dead_letter import DeadLetter, DeadLetterSink, MemoryDeadLetterLog
from streams.ingest import InvoiceIngest, PartitionRecords
from streams.metrics import IngestMetrics
from streams.partition import NO_WATERMARK, Partitions
from tests.streams.test_ingest_unit import CODEC, HORIZON_MS, REGISTRY, TOPIC, Worker, malformed, valid_run


def test_forget_drops_the_owner_and_what_every_holder_keeps_of_the_partition_once():
    partitions, dropped = Partitions(), []
    partitions.holds(lambda p: dropped.append(("sink", p)))
    partitions.holds(lambda p: dropped.append(("core", p)))
    partitions.assigned = {0, 1}
    zero, one = partitions.start(0, 10), partitions.start(1, 0)
    assert (zero.next_offset, zero.committed_offset, zero.restored, zero.live) == (10, 10, False, True)
    assert dropped == []  # a partition started fresh has nothing to drop
    zero.restore(written_offset=41, dead_lettered_offset=7, watermark_local_ms=NO_WATERMARK, dedup=None)
    assert (zero.chain_start, partitions.restored()) == (42, [0])
    partitions.forget([0])
    assert not zero.live and one.live and list(partitions.owners) == [1]
    assert dropped == [("sink", 0), ("core", 0)] and partitions.assigned == {0, 1}  # assignment: the group's word
    again = partitions.start(0, 12)
    assert again is not zero and again.live and not again.restored and Partitions.current({0: zero, 1: one}) == [1]


def test_starting_a_partition_that_has_an_owner_ends_the_old_one():
    partitions, dropped = Partitions(), []
    partitions.holds(dropped.append)
    old = partitions.start(3, 0)
    new = partitions.start(3, 5)
    assert not old.live and new.live and dropped == [3] and partitions.owners[3] is new


def test_a_batch_prepared_before_its_partition_was_forgotten_writes_nothing_of_it():
    worker = Worker()
    feed = [*valid_run(0, 4, first_seq=1), malformed(4, "invalid_amount")]
    prepared = asyncio.run(worker.ingest.prepare(PartitionRecords.group(feed)))
    owner = prepared.owners[0]
    assert owner.restored and prepared.inserts and prepared.dead_letters
    worker.ingest.partitions.forget([0])  # revoked (or resynced) while the batch waited for its write
    outcome = asyncio.run(worker.ingest.write(prepared))
    assert (outcome.inserted, outcome.committable) == (0, {})
    assert worker.store.rows == [] and worker.dlq == []
    # its next records start a new owner, restored from the store (empty): all written once
    again = worker.process(feed)
    assert worker.ingest.partitions.owners[0] is not owner
    assert (again.inserted, again.committable, len(worker.dlq)) == (4, {0: 5}, 1)
    assert (worker.dlq[0].source_offset, worker.dlq[0].reason) == (4, "invalid_amount")


def test_the_ingest_gives_the_owners_its_buffers_and_the_compiled_cores_state_to_drop():
    pytest.importorskip("einvoice_core", reason="the compiled core is built by `make native`")
    from tests.streams.test_native_core import new_core

    store, log = MemoryInvoiceStore(), MemoryDeadLetterLog()
    sink, dead_letters = InvoiceSink(store, TOPIC), DeadLetterSink(log)
    ingest = InvoiceIngest(
        topic=TOPIC, codec=CODEC, validator=InvoiceValidator(), sink=sink, dead_letters=dead_letters,
        lookup_seller=REGISTRY.get, dedup_horizon_ms=HORIZON_MS, metrics=IngestMetrics(), core=new_core(),
    )  # fmt: skip
    assert ingest.core is not None
    asyncio.run(ingest.restore([ingest.partitions.start(0, 0)]))
    bad = malformed(0, "invalid_amount")
    dead_letters.add(DeadLetter.of(TOPIC, bad, Rejection("invalid_amount", "a test's letter")))
    sink.add(0, 0, ())
    assert ingest.core.has(0)
    ingest.partitions.forget([0])
    assert not ingest.core.has(0) and dead_letters.take() == {} and sink.take(0, 0, 0) is None

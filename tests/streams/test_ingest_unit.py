"""The ingest's rules, exactly, without Kafka or ClickHouse: the Python reference path over in-memory sinks.

Each test builds ``SourceRecord``s (by hand, or from the simulator's labelled feed), runs
:class:`streams.ingest.InvoiceIngest` with ``core=None`` over the real sinks on their in-memory stores
(:mod:`sinks.clickhouse.memory`, :class:`sinks.dead_letter.MemoryDeadLetterLog`), and
checks what the store and the dead-letter topic hold afterwards, and what the batch may commit.
The same protocol on the real broker and chDB: tests/e2e/test_ingest_e2e.py, test_takeover.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import pytest

from base.config import INVOICE_SUBJECT
from base.localtime import DAY_MS, HOUR_MS, LOCAL_OFFSET_MS, local_ms
from contracts.codec import AvroCodec, SchemaCatalog
from contracts.records import SourceRecord
from contracts.registry import as_version, merge_version
from contracts.validation import InvoiceValidator
from simulator.engine import Simulation, SimulationConfig
from simulator.feed import MALFORMED_KINDS, MALFORMED_REASON, TOO_OLD_DELAY_MS, corrupt
from sinks.clickhouse.invoice_sink import InvoiceSink
from sinks.clickhouse.memory import MemoryInvoiceStore
from sinks.dead_letter import DeadLetterSink, MemoryDeadLetterLog
from streams.dedup import invoice_key
from streams.freeze import BEFORE_INSERT
from streams.ingest import BatchOutcome, InvoiceIngest, PartitionRecords
from streams.metrics import IngestMetrics

T = TypeVar("T")

TOPIC = "einvoice.issued"
HORIZON_MS = 72 * HOUR_MS
CODEC = AvroCodec(SchemaCatalog.load(), INVOICE_SUBJECT)
SELLER = "2800000001"
KEY = SELLER.encode()
ISSUED = dt.datetime(2024, 6, 2, 18, 30, 5)  # local wall-clock time, as the schema carries it


def registration(valid_from: dt.date, unit: str, vsic: str = "5610") -> dict[str, Any]:
    return as_version({
        "seller_id": SELLER, "name": "Quán phở Bà Tư", "vsic_code": vsic, "admin_unit_code": unit,
        "obliged": True, "status": "ACTIVE", "valid_from": valid_from,
    })  # fmt: skip


# the seller moved from district 380 to 381 on 10 June: an invoice joins the version valid on its day
REGISTRY: dict[str, list[dict[str, Any]]] = {
    SELLER: merge_version(
        [registration(dt.date(2020, 1, 1), "380")], registration(dt.date(2024, 6, 10), "381", vsic="5630")
    )
}


def invoice(seq: int, issued: dt.datetime = ISSUED, **changes: Any) -> dict[str, Any]:
    """A valid cash-register invoice of SELLER (v2 schema); ``seq`` makes its code unique."""
    yy = f"{issued.year % 100:02d}"
    return {
        "seller_id": SELLER, "invoice_form": 1, "invoice_symbol": f"C{yy}MTT",
        "invoice_code": f"M1-{yy}-AB12C-{seq:011d}", "issued_at": issued,
        "amount_vnd": 250_000, "vat_rate": 8, "vat_amount_vnd": 20_000,
        "payment_method": "EWALLET", "register_id": "AB12C", "buyer_tax_code": None, **changes,
    }  # fmt: skip


def utc_ms(local: dt.datetime) -> int:
    return local_ms(local) - LOCAL_OFFSET_MS


def record(
    offset: int, value: dict[str, Any] | bytes | None, *, key: bytes | None = KEY, received_ms: int | None = None
) -> SourceRecord:
    """A record of partition 0; a dict is encoded, and received a minute after its issue unless told."""
    if isinstance(value, dict):
        if received_ms is None:
            received_ms = utc_ms(value["issued_at"]) + 60_000
        value = CODEC.encode(value)
    return SourceRecord(0, offset, key, value, received_ms if received_ms is not None else utc_ms(ISSUED))


def valid_run(first_offset: int, count: int, first_seq: int) -> list[SourceRecord]:
    return [record(first_offset + i, invoice(first_seq + i)) for i in range(count)]


def malformed(offset: int, kind: str, seq: int = 99) -> SourceRecord:
    """A record broken as the simulator breaks ``kind`` (the too-old one is sent five days late)."""
    received = utc_ms(ISSUED) + (TOO_OLD_DELAY_MS if kind == "issued_too_old" else 60_000)
    return record(offset, corrupt(kind, invoice(seq), CODEC, 2, received, noise=3), received_ms=received)


@dataclass
class Worker:
    """One worker's ingest over in-memory sinks; several share a store (and a DLQ list) to share a ClickHouse."""

    store: MemoryInvoiceStore = field(default_factory=MemoryInvoiceStore)
    dlq: list[Any] = field(default_factory=list)
    horizon_ms: int = HORIZON_MS
    lookup: Callable[[str], list[dict[str, Any]] | None] = REGISTRY.get
    fault_point: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        self.sink = InvoiceSink(self.store, TOPIC)
        self.dead_letters = DeadLetterSink(MemoryDeadLetterLog(self.dlq))
        self.metrics = IngestMetrics()
        self.ingest = InvoiceIngest(
            topic=TOPIC, codec=CODEC, validator=InvoiceValidator(), sink=self.sink, dead_letters=self.dead_letters,
            lookup_seller=self.lookup, dedup_horizon_ms=self.horizon_ms, metrics=self.metrics,
            fault_point=self.fault_point, core=None,
        )  # fmt: skip

    def process(self, records: Sequence[SourceRecord]) -> BatchOutcome:
        return run(self.ingest.process(records))

    def metric(self, name: str) -> float:
        return self.metrics.metrics_registry.get_sample_value(name) or 0.0


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def test_a_valid_invoice_is_one_row_joined_with_the_registration_of_its_day():
    calls: list[str] = []

    def lookup(seller_id: str) -> list[dict[str, Any]] | None:
        calls.append(seller_id)
        return REGISTRY.get(seller_id)

    worker = Worker(lookup=lookup)
    after_move = dt.datetime(2024, 6, 11, 9, 0)
    outcome = worker.process([record(0, invoice(1)), record(1, invoice(2, issued=after_move))])
    assert (outcome.inserted, outcome.duplicates, outcome.skipped, outcome.unregistered) == (2, 0, 0, 0)
    assert outcome.committable == {0: 2} and not outcome.rejected and not outcome.taken
    assert calls == [SELLER, SELLER]
    first, second = worker.store.rows_of(TOPIC)
    assert {k: first[k] for k in ("seller_id", "invoice_code", "admin_unit_code", "vsic_code", "registered")} == {
        "seller_id": SELLER, "invoice_code": "M1-24-AB12C-00000000001", "admin_unit_code": "380",
        "vsic_code": "5610", "registered": 1,
    }  # fmt: skip
    assert (second["admin_unit_code"], second["vsic_code"]) == ("381", "5630")
    assert first["invoice_key"] == invoice_key(SELLER, "M1-24-AB12C-00000000001")
    assert first["issued_at"] == utc_ms(ISSUED) and first["issue_date"] == local_ms(ISSUED) // DAY_MS
    assert (first["non_cash"], first["seller_kind"], first["kafka_offset"]) == (1, "enterprise", 0)
    assert first["received_at"] == utc_ms(ISSUED) + 60_000
    assert first["insert_token"] == second["insert_token"] == f"{TOPIC}/0/0..1"
    assert worker.dlq == []


def test_an_unregistered_seller_is_written_with_empty_codes_and_counted():
    worker = Worker(lookup=lambda _seller: None)
    outcome = worker.process([record(0, invoice(1))])
    assert (outcome.inserted, outcome.unregistered) == (1, 1)
    (row,) = worker.store.rows_of(TOPIC)
    assert (row["registered"], row["vsic_code"], row["admin_unit_code"]) == (0, "", "")


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_each_malformed_kind_is_dead_lettered_with_its_reason(kind):
    worker = Worker()
    bad = malformed(1, kind)
    outcome = worker.process([record(0, invoice(1)), bad, record(2, invoice(2))])
    reason = MALFORMED_REASON[kind]
    assert outcome.rejected == Counter({reason: 1})
    assert outcome.inserted == 2 and [r["kafka_offset"] for r in worker.store.rows_of(TOPIC)] == [0, 2]
    (letter,) = worker.dlq
    assert (letter.reason, letter.source_partition, letter.source_offset) == (reason, 0, 1)
    assert (letter.key, letter.value, letter.timestamp_ms) == (bad.key, bad.value, bad.timestamp_ms)
    assert letter.detail  # a reader of the DLQ sees why, not only the reason's name
    assert outcome.committable == {0: 3}
    assert worker.ingest.partitions.owners[0].dead_lettered_offset == 1


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (record(0, invoice(1), key=b"2800000002"), "invalid_key"),
        (record(0, invoice(1), key=None), "invalid_key"),
        (record(0, None), "malformed_bytes"),  # a tombstone
        (record(0, b""), "malformed_bytes"),
    ],
)
def test_a_record_under_another_key_or_without_a_value_is_dead_lettered(bad, reason):
    worker = Worker()
    outcome = worker.process([bad])
    assert outcome.rejected == Counter({reason: 1}) and outcome.inserted == 0
    assert [letter.reason for letter in worker.dlq] == [reason]
    assert worker.store.blocks_of(TOPIC) == [] and outcome.committable == {0: 1}


def test_a_resent_invoice_is_dropped_in_its_batch_and_in_the_next():
    worker = Worker()
    resent = invoice(1, amount_vnd=300_000, vat_amount_vnd=24_000)  # same seller and code, other contents
    first = worker.process([record(0, invoice(1)), record(1, resent), record(2, invoice(2))])
    assert (first.inserted, first.duplicates) == (2, 1)
    second = worker.process([record(3, resent), record(4, invoice(3))])
    assert (second.inserted, second.duplicates) == (1, 1)
    assert [r["invoice_code"][-1] for r in worker.store.rows_of(TOPIC)] == ["1", "2", "3"]
    assert worker.store.rows_of(TOPIC)[0]["amount_vnd"] == 250_000  # the first copy is the one kept
    assert worker.metric("einvoice_duplicates_total") == 2


def test_an_invoice_older_than_the_horizon_is_accepted_unchecked():
    """The dedup horizon (24 h here) bounds memory: an older resend is not looked up, so it lands twice.

    Its day is below the cutoff of the partition's watermark, whatever eviction has run; it is still
    within the validator's lateness (72 h), so it is valid.
    """
    worker = Worker(horizon_ms=24 * HOUR_MS)
    old = invoice(7, issued=ISSUED - dt.timedelta(hours=46))  # two days before the watermark's day
    late = utc_ms(ISSUED) + 120_000
    outcome = worker.process([
        record(0, invoice(1)), record(1, old, received_ms=late), record(2, old, received_ms=late),
        record(3, invoice(1)),  # within the horizon: still a duplicate
    ])  # fmt: skip
    assert (outcome.inserted, outcome.duplicates) == (3, 1)
    assert [r["kafka_offset"] for r in worker.store.rows_of(TOPIC)] == [0, 1, 2]
    assert worker.metric("einvoice_dedup_beyond_horizon_total") == 2


def test_blocks_chain_each_start_after_the_last_end_and_a_batch_without_rows_leaves_the_chain():
    worker = Worker()
    one = worker.process(valid_run(0, 5, first_seq=1))
    two = worker.process([malformed(5, "invalid_amount"), malformed(6, "vat_mismatch"), record(7, invoice(1))])
    assert (two.inserted, two.duplicates, sum(two.rejected.values())) == (0, 1, 2)
    assert [(b.start, b.end) for b in worker.store.blocks_of(TOPIC)] == [(0, 4)]  # no block for a batch without rows
    owner = worker.ingest.partitions.owners[0]
    assert owner.chain_start == 5 and owner.written_offset == 4
    three = worker.process(valid_run(8, 2, first_seq=10))
    assert [(b.start, b.end, b.rows) for b in worker.store.blocks_of(TOPIC)] == [(0, 4, 5), (5, 9, 2)]
    assert [b.row_token for b in worker.store.blocks_of(TOPIC)] == [f"{TOPIC}/0/0..4", f"{TOPIC}/0/5..9"]
    assert [o.committable for o in (one, two, three)] == [{0: 5}, {0: 8}, {0: 10}]
    assert worker.ingest.partitions.owners[0].written_offset == 9 and worker.store.dropped == []


def test_the_store_drops_a_second_insert_under_a_token_that_landed():
    """The fake keeps ClickHouse's insert_deduplication_token: the fence tests below rely on it."""
    store = MemoryInvoiceStore()
    sink = InvoiceSink(store, TOPIC)
    sink.add(0, 0, tuple(range(23)))
    block = sink.take(0, 0, 0)
    assert block is not None
    assert store.insert(block) is True and store.insert(block) is False
    assert len(store.rows) == 1 and store.dropped == [f"{TOPIC}/0/0..0"]
    assert store.landed_at(TOPIC, 0, 0) == (f"{TOPIC}/0/0..0",) and store.landed_at(TOPIC, 0, 1) == ()
    assert store.chain_moved_past(TOPIC, 0, 0) and not store.chain_moved_past(TOPIC, 0, 1)


def test_a_restarted_worker_resumes_after_what_the_store_and_the_dlq_hold():
    """A crash after the writes, before the commit: the new worker is given the same records again."""
    first = Worker()
    batch = [*valid_run(0, 4, first_seq=1), malformed(4, "invalid_symbol"), record(5, invoice(5))]
    first.process(batch)
    assert len(first.store.rows) == 5 and len(first.dlq) == 1

    again = Worker(store=first.store, dlq=first.dlq)
    resend = record(7, invoice(2))  # a resend of offset 1's invoice: the dedup state comes back from the store
    outcome = again.process([*batch, malformed(6, "invalid_symbol"), resend, record(8, invoice(9))])
    assert outcome.skipped == 5  # the valid records at or below the written offset 5
    assert outcome.rejected == Counter({"invalid_symbol": 2})
    assert [letter.source_offset for letter in again.dlq] == [4, 6]  # offset 4 not sent twice
    assert (outcome.inserted, outcome.duplicates) == (1, 1)
    assert [r["kafka_offset"] for r in again.store.rows] == [0, 1, 2, 3, 5, 8]
    assert [(b.start, b.end) for b in again.store.blocks_of(TOPIC)] == [(0, 5), (6, 8)]
    assert outcome.committable == {0: 9}


def test_restore_reads_the_watermark_and_keeps_only_the_dedup_keys_of_the_horizon():
    first = Worker()
    old = invoice(1, issued=ISSUED - dt.timedelta(days=4))  # its day is before the cutoff of ISSUED's watermark
    first.process([record(0, old), record(1, invoice(2))])
    again = Worker(store=first.store, dlq=first.dlq)
    state = again.ingest.partitions.start(0, 0)
    run(again.ingest.restore([state]))
    assert state.written_offset == 1 and state.watermark_local_ms == local_ms(ISSUED)
    assert state.dedup is not None and len(state.dedup) == 1  # the 4-day-old key is past the 72 h horizon
    assert again.process([record(2, invoice(2))]).duplicates == 1


def test_a_block_whose_start_another_writer_took_is_not_committed_and_the_partition_is_resynced():
    """Step 3 of the protocol: the chain moved past this block's start while it was prepared."""
    store, dlq = MemoryInvoiceStore(), []
    paused, other = Worker(store, dlq), Worker(store, dlq)
    feed = valid_run(0, 10, first_seq=1)
    prepared = run(paused.ingest.prepare(PartitionRecords.group(feed[:7])))
    assert other.process(feed[:5]).committable == {0: 5}  # the partition's new owner writes 0..4
    outcome = run(paused.ingest.write(prepared))
    assert outcome.taken == {0: []} and outcome.committable == {} and outcome.inserted == 0
    assert 0 not in paused.ingest.partitions.owners and paused.metric("einvoice_fenced_blocks_total") == 1
    assert [(b.start, b.end) for b in store.blocks] == [(0, 4)] and store.dropped == []
    # its next records restore the partition from the store: what the other wrote is skipped
    resumed = paused.process(feed)
    assert (resumed.skipped, resumed.inserted, resumed.committable) == (5, 5, {0: 10})
    assert [(b.start, b.end) for b in store.blocks] == [(0, 4), (5, 9)]
    assert [r["kafka_offset"] for r in store.rows] == list(range(10))


def test_a_block_dropped_for_a_start_taken_during_its_insert_resyncs_the_partition():
    """Step 5: both blocks start at 0 and share a token; the other one landed first, so this one is dropped."""
    store, dlq = MemoryInvoiceStore(), []
    other = Worker(store, dlq)
    feed = valid_run(0, 7, first_seq=1)
    theirs = run(other.ingest.prepare(PartitionRecords.group(feed[:5]))).inserts[0]

    def land_theirs(point: str) -> None:
        if point == BEFORE_INSERT:
            store.insert(theirs)

    paused = Worker(store, dlq, fault_point=land_theirs)
    outcome = paused.process(feed)
    assert outcome.taken == {0: [f"{TOPIC}/0/0..4"]}
    assert outcome.committable == {} and outcome.inserted == 0 and 0 not in paused.ingest.partitions.owners
    assert store.dropped == [f"{TOPIC}/0/0..6"]
    assert [r["kafka_offset"] for r in store.rows] == [0, 1, 2, 3, 4]


def test_two_blocks_read_back_at_one_start_are_a_fault_logged_and_counted(caplog: pytest.LogCaptureFixture):
    """Step 5 finds two blocks at its start (the fence failed elsewhere): an error and einvoice_doubled_blocks."""
    store, dlq = MemoryInvoiceStore(), []
    feed = valid_run(0, 7, first_seq=1)
    others = [
        run(Worker(MemoryInvoiceStore(), []).ingest.prepare(PartitionRecords.group(feed[:n]))).inserts[0]
        for n in (4, 5)
    ]

    def land_two(point: str) -> None:
        if point == BEFORE_INSERT:
            for block in others:  # two writers whose tokens differ (blocks of 0..3 and 0..4), both let through
                store.insert(replace(block, fenced=False, end=block.batch.last_offset))

    paused = Worker(store, dlq, fault_point=land_two)
    outcome = paused.process(feed)
    assert outcome.committable == {} and outcome.inserted == 0  # its own block was refused: resynced
    assert [(b.start, b.end) for b in store.blocks] == [(0, 3), (0, 4)]
    assert paused.metric("einvoice_doubled_blocks_total") == 1
    assert [r.message for r in caplog.records if r.levelname == "ERROR"] == ["two blocks landed at one start"]


def test_the_simulated_feed_lands_exactly_as_labelled():
    """Every label of a small simulated day (valid, duplicate, each malformed kind, unregistered) in batches of 97."""
    sim = Simulation(SimulationConfig(scale=0.002, days=1, seed=3, malformed_share=0.05, unregistered=4))
    registry: dict[str, list[dict[str, Any]]] = {}
    for value in sim.registrations():
        registry[value["seller_id"]] = merge_version(registry.get(value["seller_id"]), as_version(value))
    feed = list(sim.feed_records())
    worker = Worker(lookup=registry.get)
    records = [SourceRecord(0, i, r.key, r.value, r.timestamp_ms) for i, r in enumerate(feed)]
    total = BatchOutcome()
    for start in range(0, len(records), 97):
        outcome = worker.process(records[start : start + 97])
        total.inserted += outcome.inserted
        total.duplicates += outcome.duplicates
        total.unregistered += outcome.unregistered
        total.rejected += outcome.rejected
        assert outcome.committable == {0: min(start + 97, len(records))} and not outcome.taken
    labels = Counter(r.kind for r in feed)
    valid = [r for r in feed if r.kind == "valid"]
    assert total.inserted == labels["valid"] == len(worker.store.rows_of(TOPIC))
    assert total.duplicates == labels["duplicate"] > 0
    reasons = Counter(MALFORMED_REASON[r.kind.split(":", 1)[1]] for r in feed if r.kind.startswith("malformed:"))
    assert total.rejected == reasons and len(reasons) == len(set(MALFORMED_REASON.values()))
    assert total.unregistered == sum(r.seller_id not in registry for r in valid) > 0
    assert [(r["seller_id"], r["invoice_code"]) for r in worker.store.rows_of(TOPIC)] == [
        (r.seller_id, r.invoice_code) for r in valid
    ]
    for row in worker.store.rows_of(TOPIC):
        versions = registry.get(row["seller_id"])
        assert row["admin_unit_code"] == (versions[-1]["admin_unit_code"] if versions else "")
    assert len(worker.dlq) == sum(total.rejected.values())

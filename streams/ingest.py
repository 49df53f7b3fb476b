"""The invoice path of the worker, per batch: decode, validate, dedup, join, write.

Kept apart from Faust so that its rules can be read (and tested) in one place; the checkpoint
(:mod:`streams.checkpoint`) feeds it the batches :mod:`streams.batch_fetch` hands over, and commits
their offsets afterwards. What it knows of a partition lives in the partition's owner
(:mod:`streams.partition`).

Exactly-once effect: validity is a pure function of a record; dedup state and the watermark
are functions of what ClickHouse holds; each partition's dead letters are flushed before its
rows, both in offset order. So after any crash, a re-read record at or below the partition's
written offset is already accounted for, and one at or below the dead-lettered offset is
already in the DLQ.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from typing import TYPE_CHECKING, Any

from base.localtime import DAY_MS, LOCAL_OFFSET_MS, local_ms
from contracts.codec import AvroCodec, DecodeError
from contracts.records import SourceRecord
from contracts.validation import (
    MALFORMED_VALUE,
    NON_CASH_METHODS,
    InvoiceValidator,
    Rejection,
    check_key,
    nfc,
    seller_kind,
)
from sinks.clickhouse.invoice_sink import InvoiceSink, PendingInsert
from sinks.dead_letter import DeadLetter, DeadLetterSink
from streams.dedup import InvoiceDeduplicator, invoice_key
from streams.freeze import BEFORE_INSERT
from streams.metrics import IngestMetrics
from streams.partition import NO_WATERMARK, PartitionOwner, Partitions

if TYPE_CHECKING:
    from einvoice_core import InvoiceCore, KafkaRecords, Prepared

log = logging.getLogger(__name__)

_NON_CASH = frozenset(NON_CASH_METHODS)  # a set for the per-row test

RecordColumns = tuple[list[int], list[bytes | None], list[bytes | None], list[int], list[Sequence[Any]]]
SellerLookup = Callable[[str], list[dict[str, Any]] | None]


class PartitionRecords:
    """One partition's records of a batch, in offset order, as the batch core takes them.

    Either as fetched (``fetched``: einvoice_core.KafkaRecords, a fetch's records unpacked by the
    compiled core, which it reads with no Python object per record), or as records (``source``:
    aiokafka ConsumerRecords or SourceRecords), for which the columns are built, one list
    comprehension each. A record becomes a SourceRecord only when it is dead-lettered (its headers
    go with it) or on the reference path.
    """

    __slots__ = ("_offsets", "fetched", "keys", "partition", "source", "timestamps_ms", "values")

    def __init__(self, partition: int, source: Sequence[Any], fetched: Sequence[KafkaRecords] = ()) -> None:
        self.partition = partition
        self.source = source  # aiokafka ConsumerRecords or SourceRecords; empty when fetched
        self.fetched = fetched
        self._offsets: list[int] | None = None
        if fetched:
            return
        self._offsets = [r.offset for r in source]
        self.keys: list[bytes | None] = [r.key for r in source]
        self.values: list[bytes | None] = [r.value for r in source]
        if source and isinstance(source[0], SourceRecord):
            self.timestamps_ms: list[int] = [r.timestamp_ms for r in source]
        else:
            stamps = [r.timestamp for r in source]
            self.timestamps_ms = [-1 if t is None else t for t in stamps] if None in stamps else stamps

    @classmethod
    def of_chunks(cls, partition: int, chunks: Sequence[Sequence[Any]]) -> PartitionRecords:
        """From the chunks the consumer handed over: KafkaRecords, or lists of aiokafka's records."""
        if not any(isinstance(chunk, list) for chunk in chunks):
            return cls(partition, (), fetched=chunks)  # type: ignore[arg-type]
        if all(isinstance(chunk, list) for chunk in chunks):
            return cls(partition, [r for chunk in chunks for r in chunk])
        # both (fetched before and after the core took the topic over, or a fetch left to aiokafka): as records
        records: list[SourceRecord] = []
        for chunk in chunks:
            if isinstance(chunk, list):
                records.extend(r if isinstance(r, SourceRecord) else SourceRecord.from_kafka(r) for r in chunk)
            else:
                records.extend(cls(partition, (), fetched=[chunk]).records())
        return cls(partition, records)

    def __len__(self) -> int:
        if self.fetched:
            return sum(len(chunk) for chunk in self.fetched)
        return len(self.source)

    @property
    def offsets(self) -> list[int]:
        if self._offsets is None:
            self._offsets = [offset for chunk in self.fetched for offset in chunk.offsets()]
        return self._offsets

    @property
    def first_offset(self) -> int:
        return self.fetched[0].first_offset if self.fetched else self.offsets[0]

    @property
    def last_offset(self) -> int:
        return self.fetched[-1].last_offset if self.fetched else self.offsets[-1]

    def record(self, index: int) -> SourceRecord:
        if self.fetched:
            for chunk in self.fetched:
                if index < len(chunk):
                    offset, key, value, timestamp_ms, headers = chunk.record(index)
                    return SourceRecord(self.partition, offset, key, value, timestamp_ms, tuple(headers))
                index -= len(chunk)
            raise IndexError(index)
        record = self.source[index]
        return record if isinstance(record, SourceRecord) else SourceRecord.from_kafka(record)

    def records(self) -> list[SourceRecord]:
        return [self.record(i) for i in range(len(self))]

    def columns_at(self, indexes: Sequence[int]) -> RecordColumns:
        """(offsets, keys, values, timestamps ms, headers) of the records at these ascending indexes: a
        batch's dead letters, one core call per fetched chunk (columns: no Python container per record)."""
        if not self.fetched:
            records = [self.source[i] for i in indexes]
            headers = [r.headers or () for r in records]
            stamps = [self.timestamps_ms[i] for i in indexes]
            return [r.offset for r in records], [r.key for r in records], [r.value for r in records], stamps, headers
        columns: RecordColumns = ([], [], [], [], [])
        at = start = 0
        for chunk in self.fetched:
            end = start + len(chunk)
            stop = bisect_left(indexes, end, at)
            if stop > at:
                for column, more in zip(columns, chunk.columns([i - start for i in indexes[at:stop]]), strict=True):
                    column += more
            at, start = stop, end
        if at < len(indexes):
            raise IndexError(indexes[at])
        return columns

    @classmethod
    def group(cls, records: Iterable[SourceRecord]) -> list[PartitionRecords]:
        """A batch of records in any mix of partitions (each in offset order), one PartitionRecords a partition."""
        by_partition: dict[int, list[SourceRecord]] = {}
        for record in records:
            by_partition.setdefault(record.partition, []).append(record)
        return [cls(partition, part) for partition, part in by_partition.items()]


@dataclass
class BatchOutcome:
    inserted: int = 0
    duplicates: int = 0
    skipped: int = 0
    unregistered: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    # partitions whose block start another writer had taken (the fence): resynced from the store, not committed
    taken: dict[int, list[str]] = field(default_factory=dict)
    committable: dict[int, int] = field(default_factory=dict)  # the offsets the batch may commit


@dataclass
class PreparedBatch:
    """A batch decided and encoded, not yet written: what :meth:`InvoiceIngest.write` sends.

    Taken out of the sinks' buffers when preparation ends, so that the next batch can be
    prepared while this one is written.
    """

    events: int
    next_offsets: dict[int, int]  # per partition, the offset after the batch's last record
    outcome: BatchOutcome
    inserts: list[PendingInsert]  # one block per partition with rows
    dead_letters: dict[int, list[DeadLetter]]
    started: float
    owners: dict[int, PartitionOwner]  # the owners it was prepared with: a partition forgotten since is not written


def registration_as_of(versions: list[dict[str, Any]], day: int) -> dict[str, Any]:
    """The newest version valid on ``day``; the oldest one if the invoice predates them all."""
    chosen = versions[0]
    for version in versions:
        if version["valid_from"] <= day:
            chosen = version
        else:
            break
    return chosen


class InvoiceIngest:
    """Turns batches of raw invoice records into ClickHouse rows and dead letters."""

    def __init__(
        self,
        *,
        topic: str,
        codec: AvroCodec,
        validator: InvoiceValidator,
        sink: InvoiceSink,
        dead_letters: DeadLetterSink,
        lookup_seller: SellerLookup,
        dedup_horizon_ms: int,
        metrics: IngestMetrics,
        core: InvoiceCore | None = None,
        fault_point: Callable[[str], None] | None = None,
        partitions: Partitions | None = None,
    ) -> None:
        self.topic = topic
        self.codec = codec
        self.validator = validator
        self.sink = sink
        self.dead_letters = dead_letters
        self.lookup_seller = lookup_seller
        self.dedup_horizon_ms = dedup_horizon_ms
        self.metrics = metrics
        # the compiled batch core (native/, streams.batch_core) or None for the Python reference below
        self.core = core
        self.fault_point = fault_point  # streams.freeze: the tests' deterministic pauses
        # the partitions' owners, shared with the checkpoint; the buffers and the core's state go with them
        self.partitions = partitions if partitions is not None else Partitions()
        self.partitions.holds(sink.discard)
        self.partitions.holds(dead_letters.discard)
        if core is not None:
            self.partitions.holds(core.drop)
        self._restore_lock = asyncio.Lock()

    async def restore(self, owners: Sequence[PartitionOwner]) -> None:
        """Load what ClickHouse and the DLQ already hold for partitions new to this worker."""
        async with self._restore_lock:
            owners = [owner for owner in owners if not owner.restored]
            if not owners:
                return
            missing = [owner.partition for owner in owners]
            started = time.perf_counter()
            progress = await self.sink.store.run(self.sink.progress)
            repairs = await self.sink.repair({p: progress[p].last_token for p in missing if p in progress})
            for repair in repairs:
                if repair.added:
                    log.warning("newest block completed in its views", extra={"block": repair.token, **repair.added})
                if repair.doubled:
                    self.metrics.doubled_blocks.inc()
            dlq_progress = await self.dead_letters.progress(missing)
            for owner in owners:
                partition = owner.partition
                written = progress.get(partition)
                watermark = written.max_issued_local_ms if written and written.max_issued_local_ms else NO_WATERMARK
                dedup = InvoiceDeduplicator(self.dedup_horizon_ms)
                keys, days = (), ()
                if written is not None:
                    dedup.advance(watermark)
                    keys, days = await self.sink.store.run(self.sink.dedup_keys, partition, dedup.cutoff_day(watermark))
                written_offset, dlq_offset = written.max_offset if written else -1, dlq_progress.get(partition, -1)
                if self.core is not None:
                    self.core.restore(partition, written_offset, dlq_offset, watermark, keys, days)
                elif len(keys):
                    dedup.load_columns(keys, days)
                owner.restore(written_offset, dlq_offset, watermark, None if self.core is not None else dedup)
                log.info(
                    "partition restored",
                    extra={
                        "topic": self.topic, "partition": partition, "written_offset": written_offset,
                        "dead_lettered_offset": dlq_offset, "dedup_keys": self._dedup_keys(owner),
                    },
                )  # fmt: skip
            seconds = round(time.perf_counter() - started, 3)
            views_repaired = sum(len(r.added) for r in repairs)
            log.info(
                "restore done", extra={"partitions": missing, "views_repaired": views_repaired, "seconds": seconds}
            )

    def _resync(self, outcome: BatchOutcome, block: PendingInsert, why: str, landed: Sequence[str]) -> None:
        """Another writer holds the partition's chain: forget it here, restore it from the store on its next records."""
        log.warning(why, extra={"partition": block.partition, "block": block.row_token, "landed": landed})
        self.metrics.fenced_blocks.inc()
        outcome.taken[block.partition] = list(landed)
        self.partitions.forget([block.partition])

    async def process(self, records: Sequence[SourceRecord]) -> BatchOutcome:
        """Process one batch (any mix of partitions, each in offset order) to the end of its writes."""
        return await self.write(await self.prepare(PartitionRecords.group(records)))

    async def prepare(
        self, parts: Sequence[PartitionRecords], owners: Mapping[int, PartitionOwner] | None = None
    ) -> PreparedBatch:
        """Decide every record's fate and encode the rows (per-event work; no write).

        Batches must be written in the order they were prepared (:meth:`write`); the next one may
        be prepared while the previous one is written, since a record's fate never depends on
        whether the rows before it have reached the store yet.
        """
        started = time.perf_counter()
        if owners is None:  # a batch handed over alone (tests, tools): its partitions start where it starts
            owners = {part.partition: self.partitions.owner(part.partition, part.first_offset) for part in parts}
        else:  # the checkpoint's: kept as they were when it started, so a partition forgotten meanwhile is not written
            owners = {part.partition: owners[part.partition] for part in parts}
        await self.restore(list(owners.values()))
        outcome = BatchOutcome()
        prepare = self._prepare if self.core is None else self._prepare_compiled
        inserts = []
        for part in parts:
            owner = owners[part.partition]
            prepare(owner, part, outcome)
            block = self.sink.take(part.partition, owner.chain_start, part.last_offset)
            if block is not None:  # a batch without rows leaves the chain where it is: the next block starts there
                inserts.append(block)
                owner.chain_start = part.last_offset + 1
        return PreparedBatch(
            events=sum(len(part) for part in parts),
            next_offsets={part.partition: part.last_offset + 1 for part in parts if len(part)},
            outcome=outcome, inserts=inserts, dead_letters=self.dead_letters.take(), started=started, owners=owners,
        )  # fmt: skip

    async def write(self, batch: PreparedBatch) -> BatchOutcome:
        """Write a prepared batch: the exactly-once protocol in order (docs/architecture.md, Exactly once).

        1. Ownership: past the lease, the group confirms this worker still owns the partitions
           (the caller's step, :meth:`streams.checkpoint.Checkpoint.write`, before this one).
        2. Dead letters, sent and acknowledged (acks=all).
        3. The chain check: a block at or past this block's start already landed? Then resync.
        4. The insert of each partition's block, under the token of its start.
        5. The fence: the block that landed at that start is read back; another writer's? Resync.
        6. The offsets the caller commits (``outcome.committable``), after the store: none of a
           resynced partition, which is restored from the store on its next records.
        """
        current = Partitions.current(batch.owners)
        owners = batch.owners
        outcome = batch.outcome
        # 2.
        letters = {p: batch.dead_letters[p] for p in current if p in batch.dead_letters}
        for partition, offset in (await self.dead_letters.write(letters)).items():
            owners[partition].dead_lettered_offset = offset
            if self.core is not None:
                self.core.committed(partition, dead_lettered_offset=offset)
        before_insert = None if self.fault_point is None else partial(self.fault_point, BEFORE_INSERT)
        for block in batch.inserts:
            partition = block.partition
            if partition not in current:
                continue
            written = await self.sink.write(block, before_insert)  # 3., 4. and 5., one job on the ClickHouse thread
            if written.moved_past:
                self._resync(outcome, block, "the chain moved past the block's start; partition resynced", [])
                continue
            self.metrics.insert_seconds.observe(written.seconds)
            if len(written.landed) > 1:  # two blocks at one start: the fence failed somewhere (docs/architecture.md)
                log.error("two blocks landed at one start", extra={"partition": partition, "landed": written.landed})
                self.metrics.doubled_blocks.inc()
            if not written.ours(block):
                self._resync(outcome, block, "block start taken by another writer; partition resynced", written.landed)
                continue
            owners[partition].written_offset = written.last_offset
            if self.core is not None:
                self.core.committed(partition, written_offset=written.last_offset)
            outcome.inserted += written.rows
        # 6.
        outcome.committable = {p: batch.next_offsets[p] for p in current if p not in outcome.taken}
        for partition in current:
            if not (owner := owners[partition]).live:
                continue
            if owner.dedup is not None:  # the compiled core forgets old days itself
                owner.dedup.advance(owner.watermark_local_ms)
                owner.dedup.compact()
            if owner.watermark_local_ms != NO_WATERMARK:
                self.metrics.watermark.labels(str(partition)).set((owner.watermark_local_ms - LOCAL_OFFSET_MS) / 1000)
        m = self.metrics
        m.events.labels(self.topic).inc(batch.events)
        for reason, count in outcome.rejected.items():
            m.rejected.labels(self.topic, reason).inc(count)
        m.duplicates.inc(outcome.duplicates)
        m.unregistered.inc(outcome.unregistered)
        m.skipped.inc(outcome.skipped)
        m.rows_inserted.labels("invoices").inc(outcome.inserted)
        m.dedup_keys.set(sum(self._dedup_keys(owner) for owner in self.partitions.owners.values() if owner.restored))
        m.batch_seconds.observe(time.perf_counter() - batch.started)
        return outcome

    def _prepare(self, owner: PartitionOwner, part: PartitionRecords, outcome: BatchOutcome) -> None:
        """Decide each record's fate; buffer rows and dead letters (no I/O here)."""
        partition, records = part.partition, part.records()
        verdict = self._verdict
        dedup = owner.dedup
        assert dedup is not None, "the reference path keeps its dedup state in Python"
        cutoff_day = dedup.cutoff_day(owner.watermark_local_ms)  # moves only with the watermark
        topic = self.topic
        # first pass: decode, validate, key; then the keys of the batch meet the dedup arrays at once
        candidates: list[tuple[SourceRecord, int, dict[str, Any], str, str, int, int]] = []
        for record in records:
            schema_id, value, rejection = verdict(record)
            if rejection is not None:
                self._reject(owner, record, rejection, outcome)
                continue
            if record.offset <= owner.written_offset:
                outcome.skipped += 1
                continue
            seller_id, code = value["seller_id"], value["invoice_code"]
            candidates.append((record, schema_id, value, seller_id, code, local_ms(value["issued_at"]),
                               invoice_key(seller_id, code)))  # fmt: skip
        dedup.prefetch([c[-1] for c in candidates], cutoff_day)
        for record, schema_id, value, seller_id, code, issued_local, key in candidates:
            day = issued_local // DAY_MS
            if day < cutoff_day:
                self.metrics.beyond_horizon.inc()
            elif dedup.seen_or_add(key, day, cutoff_day):
                outcome.duplicates += 1
                continue
            versions = self.lookup_seller(seller_id)
            if versions:
                reg = registration_as_of(versions, day)
                registered, vsic, unit = 1, reg["vsic_code"], reg["admin_unit_code"]
            else:
                registered, vsic, unit = 0, "", ""
                outcome.unregistered += 1
            method = value["payment_method"]
            self.sink.add(
                partition,
                record.offset,
                (
                    seller_id, code, key, value["invoice_form"], value["invoice_symbol"],
                    issued_local - LOCAL_OFFSET_MS, day, value["amount_vnd"], value["vat_rate"],
                    value["vat_amount_vnd"], method, 1 if method in _NON_CASH else 0,
                    nfc(value["register_id"]), value.get("buyer_tax_code"), seller_kind(seller_id),
                    registered, vsic, unit, schema_id, topic, partition, record.offset, record.timestamp_ms,
                ),
            )  # fmt: skip
            if issued_local > owner.watermark_local_ms:
                owner.watermark_local_ms = issued_local
                cutoff_day = dedup.cutoff_day(issued_local)

    def _reject(self, owner: PartitionOwner, record: SourceRecord, rejection: Rejection, outcome: BatchOutcome) -> None:
        """Count a rejected record; dead-letter it unless the DLQ already has it (a re-read after a crash)."""
        outcome.rejected[rejection.reason] += 1
        if record.offset > owner.dead_lettered_offset:
            self.dead_letters.add(DeadLetter.of(self.topic, record, rejection))

    def _verdict(self, record: SourceRecord) -> tuple[int, dict[str, Any], None] | tuple[None, None, Rejection]:
        """The reference's verdict on one record: (schema id, value, None) when valid, else why it is rejected."""
        try:
            schema_id, value = self.codec.decode(record.value)
            rejection = self.validator.check(value, record.timestamp_ms) or check_key(value["seller_id"], record.key)
        except DecodeError as exc:
            rejection = Rejection(exc.reason, exc.detail)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            rejection = Rejection(MALFORMED_VALUE, f"{type(exc).__name__}: {exc}")
        return (None, None, rejection) if rejection is not None else (schema_id, value, None)

    def _prepare_compiled(self, owner: PartitionOwner, part: PartitionRecords, outcome: BatchOutcome) -> None:
        """:meth:`_prepare` by the compiled core: one call for the partition's records, per-event work in Rust.

        The core gives each rejected record's reason and detail, the same text the reference writes
        (``tests/streams/test_native_core.py`` holds them to it), so a rejection costs no Python decode.
        """
        assert self.core is not None
        partition = part.partition
        if part.fetched:
            prepared: Prepared = self.core.prepare_records(partition, list(part.fetched), self.lookup_seller)
        else:
            prepared = self.core.prepare(
                partition, part.offsets, part.keys, part.values, part.timestamps_ms, self.lookup_seller
            )
        if prepared.rejected_count:
            self._dead_letter(owner, part, prepared, outcome)
        outcome.duplicates += prepared.duplicates
        outcome.skipped += prepared.skipped
        outcome.unregistered += prepared.unregistered
        if prepared.beyond_horizon:
            self.metrics.beyond_horizon.inc(prepared.beyond_horizon)
        owner.watermark_local_ms = prepared.watermark_local_ms
        if prepared.rows:
            self.sink.add_block(partition, prepared)

    def _dead_letter(
        self, owner: PartitionOwner, part: PartitionRecords, prepared: Prepared, outcome: BatchOutcome
    ) -> None:
        """:meth:`_reject` for a batch's rejections at once: counted, and dead-lettered past the DLQ's offset.

        As columns, from the core to the letters: a rejected record costs one Python container (its
        DeadLetter), not one per step (the cyclic GC runs per so many containers made).
        """
        indexes, reasons, details = prepared.rejections()
        outcome.rejected.update(reasons)
        columns = (*part.columns_at(indexes), reasons, details)
        # offsets ascend: the letters past what the DLQ holds (all but after a crash) are a suffix
        cut = bisect_right(columns[0], owner.dead_lettered_offset)
        if cut == len(indexes):
            return
        offsets, keys, values, stamps, headers, reasons, details = (c[cut:] for c in columns) if cut else columns
        if min(stamps) < 0:
            stamps = [t if t >= 0 else None for t in stamps]
        n = len(offsets)
        self.dead_letters.extend(
            part.partition,
            list(map(DeadLetter, repeat(self.topic, n), repeat(part.partition, n), offsets, keys, values, stamps,
                     headers, reasons, details)),
        )  # fmt: skip

    def _dedup_keys(self, owner: PartitionOwner) -> int:
        if self.core is not None:
            return self.core.state(owner.partition)[3]
        return len(owner.dedup) if owner.dedup is not None else 0

"""A partition's life in one owner, and a block's from fetch to commit in one place: the checkpoint.

In the spirit of quixstreams' ``Checkpoint``: one object knows which invoice partitions this worker
owns and where each stands, and runs every batch through the same numbered steps
(:meth:`Checkpoint.prepare`, :meth:`Checkpoint.write`):

1. Take: what the consumer fetched, one batch, of the partitions still owned.
2. Start: a partition's first records: its registry partition caught up, its position read from the group.
3. Complete: holes filled from Kafka, records delivered again dropped (:mod:`kafka_io.offsets`).
4. Prepare: every record's fate decided and the rows encoded (:meth:`InvoiceIngest.prepare`, no I/O).
5. Write: the exactly-once protocol (:meth:`InvoiceIngest.write`: ownership, dead letters, chain
   check, insert, fence).
6. Commit: the offsets the write allows, to the group, after the write and in order (:class:`CommitChain`).

A batch is prepared while the one before is written (:class:`OrderedWriter`); a revocation waits for
both, then forgets the partitions everywhere at once (:meth:`Checkpoint.revoke`, through
:meth:`streams.partition.Partitions.forget`). Each partition's state is its owner's
(:class:`streams.partition.PartitionOwner`). Kafka is reached through one narrow seam, :class:`Group`,
so the checkpoint runs in unit tests without a broker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol

from contracts.records import SourceRecord
from kafka_io.offsets import missing_ranges
from streams import freeze
from streams.ingest import BatchOutcome, PartitionRecords, PreparedBatch
from streams.metrics import IngestMetrics
from streams.partition import PartitionOwner, Partitions

log = logging.getLogger(__name__)


def crash_without_commit(what: str) -> None:
    """Exit at once, before Faust acks the batch: an uncommitted batch is re-read after restart.

    Faust's batch iterator acks the buffered events even when the loop body raises, which
    would commit offsets of records never written; so an unexpected error ends the process
    (a supervisor restarts it) instead of being raised.
    """
    log.critical("unrecoverable error; exiting without committing", extra={"during": what}, exc_info=True)
    logging.shutdown()
    os._exit(70)


class PartitionsMoved(RuntimeError):
    """This worker no longer owns partitions of the batch it was about to write (it was paused past the lease)."""


class Group(Protocol):
    """The consumer group as the checkpoint needs it (Kafka in the worker, a dict in the unit tests)."""

    async def positions(self, partitions: Sequence[int]) -> dict[int, int]:
        """Where the group continues each partition: its committed offset, else the log start."""
        ...

    async def commit(self, offsets: dict[int, int]) -> bool:
        """Commit these next offsets; False when the group refused (the partitions moved)."""
        ...

    async def fetch(self, partition: int, start: int, end: int) -> list[SourceRecord]:
        """Records ``[start, end)`` of a partition, read straight from Kafka (a hole in what was delivered)."""
        ...

    def highwater(self, partition: int) -> int | None:
        """The partition's end as the consumer last saw it."""
        ...


class Ingest(Protocol):
    """The invoice pipeline the checkpoint drives (:class:`streams.ingest.InvoiceIngest`)."""

    async def prepare(
        self, parts: Sequence[PartitionRecords], owners: Mapping[int, PartitionOwner] | None = None
    ) -> PreparedBatch: ...

    async def write(self, batch: PreparedBatch) -> BatchOutcome: ...


class Fetched(Protocol):
    """The consumer's hand-over (:class:`streams.batch_fetch.FetchedBatches`)."""

    async def take(self, max_records: int) -> list[Any]: ...

    async def purge(self, partitions: Sequence[int]) -> int: ...


class CommitChain:
    """A batch's offset commit, off the write path: the next batch's insert need not wait for it.

    Commits still follow their batch's insert (they are added after it returned) and run one at a
    time, so a partition's committed offset only moves forward. Offsets added while a commit is
    under way are merged (a partition's newer next offset replaces its older one) and go out in one
    commit after it: batches that write quickly (a feed of rejected records: no insert) can come
    faster than a commit's round trip, and one commit a batch would fall ever further behind.
    """

    def __init__(
        self, commit: Callable[[dict[int, int]], Awaitable[bool]], crash: Callable[[str], None] = crash_without_commit
    ) -> None:
        self._commit = commit
        self._crash = crash
        self._pending: dict[int, int] = {}
        self._running: asyncio.Task[None] | None = None

    def add(self, offsets: dict[int, int]) -> None:
        self._pending.update(offsets)
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self._pending:
            offsets, self._pending = self._pending, {}
            try:
                await self._commit(offsets)
            except Exception:
                self._crash("offset commit")

    async def wait(self) -> None:
        """Until every offset added so far is committed (tests, shutdown)."""
        while self._running is not None and not self._running.done():
            await asyncio.shield(self._running)


class OrderedWriter:
    """The one batch being written while the next is prepared: writes stay sequential and in order.

    Sequential writes keep the store's invariant that only a partition's newest block can be cut
    short (InvoiceSink.repair); the overlap hides the insert's time behind the next preparation.
    """

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def start(self, write: Coroutine[Any, Any, None]) -> None:
        if self._task is not None and not self._task.done():
            raise RuntimeError("a batch is still being written")
        self._task = asyncio.create_task(write)

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)


class Checkpoint:
    """The invoice partitions this worker owns, and the steps of every batch of them, from fetch to commit."""

    def __init__(
        self,
        *,
        group: Group,
        fetched: Fetched,
        metrics: IngestMetrics,
        batch_size: int,
        session_timeout_s: float,
        topic: str,
        leased: bool = True,
        before_first_records: Callable[[Sequence[int]], Awaitable[None]] | None = None,
        fault_point: Callable[[str], None] | None = None,
        crash: Callable[[str], None] = crash_without_commit,
        partitions: Partitions | None = None,
    ) -> None:
        self.group = group
        self.fetched = fetched
        self.metrics = metrics
        self.batch_size = batch_size
        self.session_timeout_s = session_timeout_s
        self.topic = topic
        self.leased = leased  # the group's lease: confirm ownership before a write, past a third of the session
        self.before_first_records = before_first_records  # the registry's catch-up (streams.app)
        self.fault_point = fault_point or (lambda point: None)
        self.crash = crash
        self.ingest: Ingest | None = None
        # the invoice partitions assigned, and an owner each for those whose records have started
        self.partitions = partitions if partitions is not None else Partitions()
        self.confirmed_at = 0.0  # monotonic time of the last commit the group accepted
        self._in_flight = asyncio.Lock()  # held while a batch is prepared
        self._writer = OrderedWriter()  # the batch being written meanwhile
        self._commits = CommitChain(self.commit, crash)

    # -- the partitions' lives -----------------------------------------------------------------------------------
    def assign(self, partitions: Sequence[int]) -> None:
        self.partitions.assigned = set(partitions)

    async def revoke(self, partitions: Sequence[int]) -> None:
        """Partitions moved away: let the batches in flight finish, then forget them everywhere at once."""
        if self.ingest is None or not partitions:
            self.partitions.assigned.difference_update(partitions)
            return
        acquired = False
        try:  # the batches in flight finish their writes first; a commit may be refused, which is harmless
            async with asyncio.timeout(self.session_timeout_s / 2):
                acquired = await self._in_flight.acquire()
                await self._writer.wait()
        except TimeoutError:
            log.warning("batch still in flight at revocation", extra={"partitions": list(partitions)})
        self.partitions.assigned.difference_update(partitions)  # under the lock: no batch of these starts from here on
        if acquired:
            self._in_flight.release()
        dropped = await self.fetched.purge(partitions)
        self.partitions.forget(partitions)
        log.info("partitions revoked", extra={"partitions": list(partitions), "fetched_records_dropped": dropped})

    # -- the loop ------------------------------------------------------------------------------------------------
    async def run(self, ingest: Ingest) -> None:
        """Batch after batch, until cancelled: each prepared while the one before is written."""
        self.ingest = ingest
        while True:
            await self.step()

    async def step(self) -> None:
        """One batch: taken, prepared, and handed to the writer once the batch before is written."""
        chunks = await self.fetched.take(self.batch_size)
        async with self._in_flight:
            # 1. Take
            by_partition: dict[int, list[Any]] = {}
            for chunk in chunks:
                if chunk.partition in self.partitions.assigned:
                    by_partition.setdefault(chunk.partition, []).append(chunk.records)
            if not by_partition:
                return
            try:
                batch = await self.prepare([PartitionRecords.of_chunks(p, c) for p, c in by_partition.items()])
                await self._writer.wait()  # batches are written one at a time, in the order they were prepared
            except Exception:
                self.crash("invoice batch")
                return
            if batch is not None:
                self._writer.start(self.write(batch))

    async def prepare(self, parts: list[PartitionRecords]) -> PreparedBatch | None:
        """Steps 2 to 4: a batch's partitions started, its records completed, their fates decided."""
        assert self.ingest is not None
        # 2. Start
        owners = self.partitions.owners
        new = [part.partition for part in parts if part.partition not in owners]
        if new:
            if self.before_first_records is not None:
                await self.before_first_records(new)
            for partition, position in (await self.group.positions(new)).items():
                self.partitions.start(partition, position)
        started = {part.partition: owners[part.partition] for part in parts}  # the batch's owners, from here on
        # 3. Complete
        parts = await self.complete(parts, started)
        if not parts:
            return None
        # 4. Prepare
        batch = await self.ingest.prepare(parts, started)
        for partition, next_offset in batch.next_offsets.items():
            started[partition].next_offset = next_offset
        return batch

    async def write(self, batch: PreparedBatch) -> None:
        """Steps 5 and 6: the batch written, then its offsets committed, only after the store and the DLQ took it."""
        assert self.ingest is not None
        try:
            # 5. Write: past the lease, the group first confirms this worker still owns the batch's partitions
            #    (else PartitionsMoved, and nothing of the batch is written); then the ingest's protocol
            if self.leased and (current := Partitions.current(batch.owners)):
                await self.confirm_ownership(current)
            outcome = await self.ingest.write(batch)
            self.fault_point(freeze.BEFORE_COMMIT)
            # 6. Commit
            if outcome.committable:
                self._commits.add(outcome.committable)
        except Exception:
            self.crash("invoice batch")
            return
        # a partition resynced by the ingest (outcome.taken) was forgotten there: started again from the group
        for partition, next_offset in outcome.committable.items():
            if partition not in self.partitions.assigned:
                continue  # revoked while the batch ran: the consumer no longer knows its high watermark
            if highwater := self.group.highwater(partition):
                self.metrics.consumer_lag.labels(self.topic, str(partition)).set(highwater - next_offset)

    async def drain(self) -> None:
        """Until the batch being written and every commit so far are done (tests, shutdown)."""
        await self._writer.wait()
        await self._commits.wait()

    # -- step 3 --------------------------------------------------------------------------------------------------
    async def complete(
        self, parts: list[PartitionRecords], owners: Mapping[int, PartitionOwner]
    ) -> list[PartitionRecords]:
        """The batch as this worker must process it: holes filled from Kafka, records it processed already dropped.

        Holes: see kafka_io.offsets. Faust also delivers some records twice (seen: the last record of
        each partition after a start at a rewound offset); the sink would skip them, but they would
        count as events again. A partition's records that start where the last batch ended and run
        without a gap (nearly always) pass as they are; only the others are looked at record by record.
        """
        completed = []
        for part in parts:
            expected = owners[part.partition].next_offset
            if part.first_offset == expected and part.last_offset - expected + 1 == len(part):
                completed.append(part)
            elif (fixed := await self._complete(part, expected)) is not None:
                completed.append(fixed)
        return completed

    async def _complete(self, part: PartitionRecords, expected: int) -> PartitionRecords | None:
        partition = part.partition
        fresh: list[SourceRecord] = []
        for record in part.records():
            if record.offset < expected or (fresh and record.offset <= fresh[-1].offset):
                continue
            fresh.append(record)
        if len(fresh) < len(part):
            log.info("records delivered again; dropped", extra={"dropped": len(part) - len(fresh)})
        for start, end in missing_ranges([r.offset for r in fresh], expected):
            found = await self.group.fetch(partition, start, end)
            log.warning(
                "offsets missing from the stream; fetched from Kafka",
                extra={"partition": partition, "from": start, "to": end, "found": len(found)},
            )
            self.metrics.gaps_filled.inc(len(found))
            fresh.extend(found)
        fresh.sort(key=lambda r: r.offset)
        return PartitionRecords(partition, fresh) if fresh else None

    # -- step 6, and step 1 of the write's fence -----------------------------------------------------------------
    async def commit(self, offsets: dict[int, int]) -> bool:
        """Commit these next offsets, whatever Faust's ack bookkeeping thinks; False if the group refused."""
        accepted = await self.group.commit(offsets)
        if accepted:
            self.confirmed_at = time.monotonic()
            for partition, offset in offsets.items():
                if (owner := self.partitions.owners.get(partition)) is not None:
                    owner.committed_offset = offset
        return accepted

    async def confirm_ownership(self, partitions: Sequence[int]) -> None:
        """Before a batch is written: still the owner of its partitions? (Step 1 of the fence, docs/architecture.md.)

        Within the lease since the last accepted commit the partitions cannot have moved; past it,
        a commit of the offsets already committed asks the group coordinator, which refuses a
        member it evicted. A pause after this check is caught by the store (steps 3 and 5 of the write).
        """
        if time.monotonic() - self.confirmed_at <= self.session_timeout_s / 3:
            return
        if not await self.commit({p: self.partitions.owners[p].committed_offset for p in partitions}):
            raise PartitionsMoved(f"partitions {sorted(partitions)} moved to another worker; batch not written")

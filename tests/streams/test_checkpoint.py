"""streams.checkpoint without Kafka or ClickHouse: the partition owners and the steps of a batch, on in-memory fakes.

The end-to-end tests prove the same steps on a real broker and store (tests/e2e); these pin the order
and the bookkeeping, where a failure names the step: a batch committed only after its write, a partition
started at the group's position, a hole fetched, a refused commit, a revocation that waits for the write
in flight and then forgets the partition everywhere, a resynced partition read again from the group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from contracts.records import SourceRecord
from streams.checkpoint import Checkpoint, PartitionsMoved
from streams.ingest import BatchOutcome, PartitionRecords, PreparedBatch
from streams.metrics import IngestMetrics
from streams.partition import PartitionOwner, Partitions

TOPIC = "einvoice.issued"


def records(partition: int, offsets: Sequence[int]) -> list[SourceRecord]:
    return [SourceRecord(partition, o, b"k", b"v", 1_700_000_000_000) for o in offsets]


@dataclass
class Chunk:
    partition: int
    records: list[SourceRecord]


@dataclass
class FakeGroup:
    """The consumer group as a dict: committed positions, an on/off switch for refusals, a log of Kafka."""

    committed: dict[int, int] = field(default_factory=dict)
    log: dict[int, list[SourceRecord]] = field(default_factory=dict)
    accept: bool = True
    calls: list[tuple[str, object]] = field(default_factory=list)

    async def positions(self, partitions: Sequence[int]) -> dict[int, int]:
        self.calls.append(("positions", sorted(partitions)))
        return {p: self.committed.get(p, 0) for p in partitions}

    async def commit(self, offsets: dict[int, int]) -> bool:
        self.calls.append(("commit", dict(offsets)))
        if self.accept:
            self.committed.update(offsets)
        return self.accept

    async def fetch(self, partition: int, start: int, end: int) -> list[SourceRecord]:
        self.calls.append(("fetch", (partition, start, end)))
        return [r for r in self.log.get(partition, []) if start <= r.offset < end]

    def highwater(self, partition: int) -> int | None:
        return None


@dataclass
class FakeIngest:
    """Prepares a batch as the offsets it holds; writes it, optionally waiting, raising or losing a partition."""

    calls: list[tuple[str, object]] = field(default_factory=list)
    prepared: list[dict[int, list[int]]] = field(default_factory=list)
    hold: asyncio.Event | None = None
    taken: set[int] = field(default_factory=set)
    fail: bool = False
    partitions: Partitions = field(default_factory=Partitions)  # the checkpoint's: the real ingest shares them

    async def prepare(
        self, parts: Sequence[PartitionRecords], owners: dict[int, PartitionOwner] | None = None
    ) -> PreparedBatch:
        assert owners is not None and set(owners) == {part.partition for part in parts}
        self.prepared.append({part.partition: list(part.offsets) for part in parts})
        self.calls.append(("prepare", sorted(part.partition for part in parts)))
        next_offsets = {part.partition: part.last_offset + 1 for part in parts}
        return PreparedBatch(sum(map(len, parts)), next_offsets, BatchOutcome(), [], {}, 0.0, dict(owners))

    async def write(self, batch: PreparedBatch) -> BatchOutcome:
        self.calls.append(("write", sorted(batch.next_offsets)))
        if self.hold is not None:
            await self.hold.wait()
        if self.fail:
            raise RuntimeError("ClickHouse said no")
        outcome = batch.outcome
        outcome.taken = {p: ["another writer's block"] for p in self.taken if p in batch.next_offsets}
        self.partitions.forget(outcome.taken)  # as InvoiceIngest's resync does
        outcome.committable = {p: o for p, o in batch.next_offsets.items() if p not in self.taken}
        self.calls.append(("written", sorted(outcome.committable)))
        return outcome


@dataclass
class FakeFetched:
    batches: list[list[Chunk]] = field(default_factory=list)
    purged: list[list[int]] = field(default_factory=list)

    async def take(self, max_records: int) -> list[Chunk]:
        return self.batches.pop(0) if self.batches else []

    async def purge(self, partitions: Sequence[int]) -> int:
        self.purged.append(sorted(partitions))
        return 0


def checkpoint(
    group: FakeGroup, fetched: FakeFetched, crashes: list[str] | None = None, leased: bool = False
) -> Checkpoint:
    crashed = crashes if crashes is not None else []
    point = Checkpoint(
        group=group, fetched=fetched, metrics=IngestMetrics(), batch_size=1000, session_timeout_s=6.0, topic=TOPIC,
        crash=crashed.append, leased=leased,
    )  # fmt: skip
    point.assign([0, 1])
    return point


async def run_batches(point: Checkpoint, ingest: FakeIngest, n: int) -> None:
    point.ingest, ingest.partitions = ingest, point.partitions
    for _ in range(n):
        await point.step()
    await point.drain()


def test_a_batch_is_committed_only_after_its_write_and_starts_at_the_groups_position():
    group = FakeGroup(committed={0: 10})
    ingest = FakeIngest(calls=group.calls)  # one log of both, in the order things happened
    fetched = FakeFetched([[Chunk(0, records(0, range(10, 15))), Chunk(1, records(1, range(0, 3)))],
                           [Chunk(0, records(0, range(15, 17)))]])  # fmt: skip
    point = checkpoint(group, fetched)
    asyncio.run(run_batches(point, ingest, 2))
    assert group.calls[0] == ("positions", [0, 1])  # started once, at the group's position
    assert [c for c in group.calls if c[0] == "positions"] == [("positions", [0, 1])]
    # the second batch is prepared while the first is written; the writes and commits go in order
    steps = [c[0] for c in group.calls if c[0] != "prepare"]
    assert steps == ["positions", "write", "written", "commit", "write", "written", "commit"]
    assert next(c for c in group.calls if c[0] == "commit") == ("commit", {0: 15, 1: 3})
    assert group.committed == {0: 17, 1: 3}
    owner = point.partitions.owners[0]
    assert (owner.next_offset, owner.committed_offset) == (17, 17)


def test_a_hole_is_fetched_from_kafka_and_records_delivered_again_are_dropped():
    group = FakeGroup(committed={0: 10}, log={0: records(0, range(0, 20))})
    ingest = FakeIngest()
    fetched = FakeFetched([[Chunk(0, records(0, [8, 9, 10, 12, 13]))]])
    point = checkpoint(group, fetched)
    asyncio.run(run_batches(point, ingest, 1))
    assert ingest.prepared == [{0: [10, 11, 12, 13]}]
    assert ("fetch", (0, 11, 12)) in group.calls  # the hole [11, 12)
    assert point.metrics.gaps_filled._value.get() == 1


def test_a_refused_commit_leaves_the_committed_offset_and_the_lease_check_refuses_the_write():
    group, ingest = FakeGroup(committed={0: 0}, accept=False), FakeIngest()
    point = checkpoint(group, FakeFetched([[Chunk(0, records(0, range(0, 5)))]]))
    asyncio.run(run_batches(point, ingest, 1))
    owner = point.partitions.owners[0]
    assert owner.committed_offset == 0 and owner.next_offset == 5
    point.confirmed_at = 0.0  # past the lease: the group is asked, and says no
    with pytest.raises(PartitionsMoved):
        asyncio.run(point.confirm_ownership([0]))
    group.accept = True
    asyncio.run(point.confirm_ownership([0]))  # re-commits what was committed: 0, not the 5 prepared
    assert group.calls[-1] == ("commit", {0: 0})


def test_past_the_lease_a_batch_is_written_only_after_the_group_confirms_its_partitions():
    group, ingest, crashes = FakeGroup(committed={0: 3}), FakeIngest(), []
    point = checkpoint(group, FakeFetched([[Chunk(0, records(0, range(3, 8)))]]), crashes, leased=True)
    asyncio.run(run_batches(point, ingest, 1))  # never confirmed yet: past the lease
    assert [c for c in group.calls if c[0] == "commit"] == [("commit", {0: 3}), ("commit", {0: 8})]
    assert ingest.calls == [("prepare", [0]), ("write", [0]), ("written", [0])] and crashes == []
    group.accept, point.confirmed_at = False, 0.0  # evicted while paused past the lease
    point.fetched = FakeFetched([[Chunk(0, records(0, range(8, 10)))]])
    asyncio.run(run_batches(point, ingest, 1))
    assert [c[0] for c in ingest.calls].count("write") == 1 and crashes == ["invoice batch"]  # nothing written


def test_a_revocation_waits_for_the_write_in_flight_then_forgets_the_partition_everywhere():
    async def scenario() -> tuple[list[str], FakeIngest, FakeFetched, Checkpoint]:
        group, fetched = FakeGroup(), FakeFetched([[Chunk(0, records(0, range(0, 5)))]])
        ingest = FakeIngest(hold=asyncio.Event())
        point = checkpoint(group, fetched)
        point.ingest, ingest.partitions = ingest, point.partitions
        point.partitions.holds(lambda partition: ingest.calls.append(("discard", partition)))  # a sink's buffer
        await point.step()  # prepared, and its write started: held
        owner = point.partitions.owners[0]
        seen: list[str] = []
        revocation = asyncio.create_task(point.revoke([0]))
        await asyncio.sleep(0.05)
        seen.append("revoked" if revocation.done() else "waiting")
        assert ingest.hold is not None
        ingest.hold.set()
        await revocation
        seen.append("revoked" if revocation.done() else "waiting")
        fetched.batches.append([Chunk(0, records(0, range(5, 8)))])
        await point.step()  # records of a partition no longer assigned: not taken
        assert not owner.live  # a batch prepared with it would not be written
        return seen, ingest, fetched, point

    seen, ingest, fetched, point = asyncio.run(scenario())
    assert seen == ["waiting", "revoked"]
    assert ingest.calls == [("prepare", [0]), ("write", [0]), ("written", [0]), ("discard", 0)]
    assert fetched.purged == [[0]] and 0 not in point.partitions.owners and point.partitions.assigned == {1}


def test_a_partition_another_writer_took_is_read_again_from_the_groups_position():
    group = FakeGroup(committed={0: 0})
    ingest = FakeIngest(taken={0})
    fetched = FakeFetched([[Chunk(0, records(0, range(0, 5)))], [Chunk(0, records(0, range(0, 5)))]])
    point = checkpoint(group, fetched)
    asyncio.run(run_batches(point, ingest, 1))
    assert 0 not in point.partitions.owners and ("commit", {0: 5}) not in group.calls  # nothing of it committed
    ingest.taken = set()
    asyncio.run(run_batches(point, ingest, 1))
    assert [c for c in group.calls if c[0] == "positions"] == [("positions", [0]), ("positions", [0])]
    assert ingest.prepared[-1] == {0: [0, 1, 2, 3, 4]} and group.committed == {0: 5}


def test_a_failed_write_ends_the_worker_without_a_commit():
    group, ingest, crashes = FakeGroup(), FakeIngest(fail=True), []
    point = checkpoint(group, FakeFetched([[Chunk(0, records(0, range(0, 3)))]]), crashes)
    asyncio.run(run_batches(point, ingest, 1))
    assert crashes == ["invoice batch"]
    assert not [c for c in group.calls if c[0] == "commit"]

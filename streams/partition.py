"""A partition's life on this worker: one owner per invoice partition, and one place that forgets it.

An owner is made on a partition's first records (:meth:`Partitions.start`, the checkpoint's step 2)
and holds everything this worker knows of the partition: where the group continues it, where the
next batch must start, and, once restored from the store (:meth:`streams.ingest.InvoiceIngest.restore`),
what the store and the DLQ hold of it (the chain's end, the dead-lettered offset, the watermark, the
dedup keys). It is dropped in one place, :meth:`Partitions.forget`, on a revocation or a resync;
whatever else keeps per-partition state (the sinks' buffers, the compiled core) registers its
``discard`` there once (:meth:`Partitions.holds`). A batch keeps the owners it was prepared with: a
batch whose owner was dropped meanwhile is not written (:meth:`PartitionOwner.live`), so an owner is
its own epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from streams.dedup import InvoiceDeduplicator

NO_WATERMARK = -(2**62)  # a partition with nothing stored: any invoice moves its watermark


@dataclass(eq=False)  # compared by identity: a partition dropped and started again is another owner
class PartitionOwner:
    """One started invoice partition: its place in the group, in this worker's batches, in the store and the DLQ."""

    partition: int
    next_offset: int  # after the last record prepared: the next batch must start here
    committed_offset: int  # the next offset the group accepted: where a restart continues
    # what the store and the DLQ hold of it, restored on its first records (InvoiceIngest.restore)
    restored: bool = False
    written_offset: int = -1  # the end of the partition's chain: records at or below it are in the store
    dead_lettered_offset: int = -1  # records at or below it are in the DLQ
    watermark_local_ms: int = NO_WATERMARK  # the newest issue time seen, local ms: the dedup horizon follows it
    dedup: InvoiceDeduplicator | None = None  # None when the compiled core holds the dedup state
    chain_start: int = 0  # where this worker's next block begins: after the last one prepared
    live: bool = True  # False once forgotten: a batch prepared with this owner is then not written

    def restore(
        self, written_offset: int, dead_lettered_offset: int, watermark_local_ms: int, dedup: InvoiceDeduplicator | None
    ) -> None:
        """What the store and the DLQ hold, loaded on the partition's first records (or set by a test)."""
        self.written_offset, self.dead_lettered_offset = written_offset, dead_lettered_offset
        self.watermark_local_ms, self.dedup = watermark_local_ms, dedup
        self.chain_start = written_offset + 1
        self.restored = True


class Partitions:
    """The invoice partitions of this worker: those assigned, those started (an owner each), forgotten in one place."""

    def __init__(self) -> None:
        self.assigned: set[int] = set()  # assigned and not revoked since (not consumer.assignment(): it lags)
        self.owners: dict[int, PartitionOwner] = {}
        self._holders: list[Callable[[int], None]] = []

    def holds(self, discard: Callable[[int], None]) -> None:
        """Something else keeps per-partition state (a sink's buffer, the compiled core): drop it on forget."""
        self._holders.append(discard)

    def start(self, partition: int, position: int) -> PartitionOwner:
        """A partition's first records: its owner, continuing at the group's position."""
        if partition in self.owners:
            self.forget([partition])  # an owner it had is over, and so is what was kept for it
        owner = self.owners[partition] = PartitionOwner(partition, next_offset=position, committed_offset=position)
        return owner

    def owner(self, partition: int, position: int) -> PartitionOwner:
        """The partition's owner; started at ``position`` if it has none (a batch handed to the ingest alone)."""
        return self.owners.get(partition) or self.start(partition, position)

    def restored(self) -> list[int]:
        return sorted(p for p, owner in self.owners.items() if owner.restored)

    @staticmethod
    def current(owners: Mapping[int, PartitionOwner]) -> list[int]:
        """Of the owners a batch was prepared with, the partitions still held by them."""
        return [partition for partition, owner in owners.items() if owner.live]

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop what this worker holds of partitions: their owners and every holder's state (the one home of it)."""
        for partition in partitions:
            if (owner := self.owners.pop(partition, None)) is not None:
                owner.live = False
            for discard in self._holders:
                discard(partition)

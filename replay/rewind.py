"""Move a consumer group's committed offsets: to the earliest offset, a time, or explicit offsets.

The plan is computed first and is what ``--dry-run`` prints: per partition the group's current
position, the target, the end, and how many records will be read again (or skipped). Applying
it commits exactly the planned targets, so the dry run's numbers are what then happens.

Rewinding the worker's group below what ClickHouse holds is safe: when a partition is assigned
the sink reads the highest offset it wrote from ``invoices`` and skips every record at or below
it (counted in ``einvoice_replayed_skipped_total``), and the DLQ writer skips what the DLQ
already holds. So a replay re-reads and re-validates, but changes nothing that is already
there; a *corrected* result needs a rebuild into a fresh database (``replay rebuild``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from kafka.errors import NoError
from kafka.structs import OffsetAndMetadata, TopicPartition

from kafka_io.offsets import group_positions
from replay.members import GroupState, describe_group, remove_members, stop_local_workers
from replay.ranges import Offsets, check_within, format_instant, parse_offsets
from replay.refused import Refused


@dataclass(frozen=True)
class Target:
    """Where to move: ``earliest``, ``latest``, ``time`` (epoch ms in ``at_ms``) or ``offsets``."""

    kind: str
    at_ms: int | None = None
    offsets: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind == "time":
            return f"time {format_instant(self.at_ms)}"
        if self.kind == "offsets":
            return f"offsets {' '.join(self.offsets)}"
        return self.kind


@dataclass(frozen=True)
class PartitionPlan:
    topic: str
    partition: int
    current: int
    target: int
    end: int

    @property
    def reprocess(self) -> int:
        """Records the group read already and will read again."""
        return max(0, self.current - self.target)

    @property
    def skip(self) -> int:
        """Records the group has not read yet and never will (a move forward)."""
        return max(0, self.target - self.current)


@dataclass(frozen=True)
class RewindPlan:
    group: str
    target: Target
    partitions: tuple[PartitionPlan, ...]
    members: GroupState

    @property
    def reprocess(self) -> int:
        return sum(p.reprocess for p in self.partitions)

    @property
    def skip(self) -> int:
        return sum(p.skip for p in self.partitions)

    @property
    def to_read(self) -> int:
        """Everything the group will read after the move, up to today's end."""
        return sum(p.end - p.target for p in self.partitions)

    def as_json(self) -> dict[str, object]:
        return {
            "group": self.group,
            "target": self.target.describe(),
            "group_state": self.members.state,
            "active_members": [m.describe() for m in self.members.members] if self.members.active else [],
            "partitions": [{**asdict(p), "reprocess": p.reprocess, "skip": p.skip} for p in self.partitions],
            "reprocess": self.reprocess,
            "skip": self.skip,
            "to_read": self.to_read,
        }


def plan_rewind(
    bootstrap: str, group: str, topics: Sequence[str], partitions: Sequence[int] | None, target: Target
) -> RewindPlan:
    """Current, target and end offset of each chosen partition (nothing changes)."""
    plans = []
    with Offsets(bootstrap) as offsets:
        members = describe_group(offsets.admin, group)
        for topic in topics:
            chosen = offsets.partitions(topic, partitions)
            bounds = offsets.bounds(topic, chosen)
            current = group_positions(bootstrap, group, topic, chosen)
            if target.kind == "earliest":
                goal = {p: bounds[p].start for p in chosen}
            elif target.kind == "latest":
                goal = {p: bounds[p].end for p in chosen}
            elif target.kind == "time":
                assert target.at_ms is not None
                goal = offsets.at_time(topic, chosen, target.at_ms)
            else:
                given = parse_offsets(target.offsets, chosen)
                check_within(topic, given, bounds)
                goal = {p: given.get(p, current[p]) for p in chosen}
            plans += [PartitionPlan(topic, p, current[p], goal[p], bounds[p].end) for p in chosen]
    return RewindPlan(group, target, tuple(plans), members)


def apply_rewind(
    bootstrap: str, plan: RewindPlan, *, stop_workers: bool = False, force: bool = False, timeout_s: float = 60.0
) -> dict[str, object]:
    """Commit the plan's targets for the group; refuses (``Refused``) while it has active members.

    ``stop_workers`` stops this machine's worker processes of the group first; ``force`` removes
    the remaining members from the group and commits in the moment before they rejoin.
    """
    offsets = {TopicPartition(p.topic, p.partition): OffsetAndMetadata(p.target, "", -1) for p in plan.partitions}
    stopped: list[int] = []
    removed = 0
    with Offsets(bootstrap) as looked_up:
        admin = looked_up.admin
        state = describe_group(admin, plan.group)
        if state.active and stop_workers:
            stopped, state = stop_local_workers(admin, plan.group, timeout_s)
        if state.active and not force:
            raise Refused(_active_message(state, stopped=bool(stopped)))
        deadline = time.monotonic() + timeout_s
        while True:
            if state.active:
                remove_members(admin, state, "einvoice-monitor replay rewind --force")
                removed += len(state.members)
            answer = admin.alter_group_offsets(plan.group, offsets)
            errors = {tp: err for tp, err in answer.items() if err is not NoError}
            if not errors:
                return {"stopped_pids": stopped, "removed_members": removed}
            if time.monotonic() >= deadline:
                raise RuntimeError(f"the group kept rejecting the new offsets: {errors}")
            time.sleep(0.2)  # a member rejoined between removal and commit: remove it again
            state = describe_group(admin, plan.group)


def _active_message(state: GroupState, stopped: bool) -> str:
    members = "; ".join(m.describe() for m in state.members)
    first = f"group {state.group} has {len(state.members)} active member(s)"
    if stopped:
        first = "the group still has members after stopping this machine's workers"
    return (
        f"{first}: {members}. Stop the workers first (Ctrl-C, `docker compose stop worker`), or pass "
        "--stop-workers to stop this machine's workers, or --force to remove the members from the group "
        "(they rejoin at once and continue from the new offsets)."
    )

"""Which offsets: instants in local time, explicit offsets, and offset ranges of topic partitions.

Kafka finds offsets by *record timestamp*; here that is the moment the feed received an invoice
(not its issue time). A time without an offset is local time (Asia/Ho_Chi_Minh), as analysts say it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from kafka.admin import KafkaAdminClient, OffsetSpec
from kafka.structs import TopicPartition

from base.config import Topics
from base.localtime import LOCAL_TZ
from kafka_io.offsets import end_offsets

TIME_FORMS = "2024-06-03, 2024-06-03T08:00 or 2024-06-03T08:00+07:00 (no offset = Asia/Ho_Chi_Minh)"


def parse_instant(text: str) -> int:
    """UTC epoch milliseconds of a date or date-time; naive values are local time."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a date or time: use {TIME_FORMS}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=LOCAL_TZ)
    return int(value.timestamp() * 1000)


def format_instant(ms: int | None) -> str:
    """Local wall-clock time of epoch milliseconds, for people."""
    if ms is None or ms < 0:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, LOCAL_TZ).isoformat(timespec="seconds")


def topic_name(name: str, topics: Topics) -> str:
    """A topic by its role (``invoices``, ``registry``, ``invoices_dlq`` ...) or by its full name."""
    return getattr(topics, name) if name in topics.__dataclass_fields__ else name


def parse_offsets(specs: Iterable[str], partitions: Sequence[int]) -> dict[int, int]:
    """``1200`` (every chosen partition) or ``P=OFFSET`` (repeatable) into {partition: offset}."""
    chosen: dict[int, int] = {}
    for spec in specs:
        text = spec.strip()
        try:
            if "=" in text:
                partition, offset = (int(x) for x in text.split("=", 1))
                chosen[partition] = offset
            else:
                chosen.update(dict.fromkeys(partitions, int(text)))
        except ValueError:
            raise ValueError(f"offset {spec!r}: write OFFSET for every partition or PARTITION=OFFSET") from None
    outside = sorted(set(chosen) - set(partitions))
    if outside:
        raise ValueError(f"offsets given for partitions {outside}, which are not among the chosen {list(partitions)}")
    if any(offset < 0 for offset in chosen.values()):
        raise ValueError("offsets are never negative")
    return chosen


@dataclass(frozen=True)
class Bounds:
    """Where the log of one partition starts and ends now (end = the next offset to be written)."""

    start: int
    end: int


class Offsets:
    """Offset look-ups on one cluster through one admin client (blocking)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="einvoice-replay")

    def close(self) -> None:
        self.admin.close()

    def __enter__(self) -> Offsets:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def partitions(self, topic: str, chosen: Sequence[int] | None = None) -> list[int]:
        """The topic's partitions, or the ``chosen`` ones after checking that they exist."""
        described = self.admin.describe_topics([topic])[0]
        if described["error_code"] or not described["partitions"]:
            raise ValueError(f"topic {topic} does not exist (check EINVOICE_TOPIC_PREFIX, or run `topics create`)")
        available = sorted(p["partition_index"] for p in described["partitions"])
        unknown = sorted(set(chosen or ()) - set(available))
        if unknown:
            raise ValueError(f"topic {topic} has partitions {available}; there is no {unknown}")
        return list(chosen) if chosen else available

    def bounds(self, topic: str, partitions: Sequence[int]) -> dict[int, Bounds]:
        starts = self._lookup(topic, partitions, OffsetSpec.EARLIEST)
        ends = end_offsets(self.bootstrap, topic, partitions)
        return {p: Bounds(starts[p], ends[p]) for p in partitions}

    def at_time(self, topic: str, partitions: Sequence[int], epoch_ms: int) -> dict[int, int]:
        """The first offset whose record timestamp is at or after ``epoch_ms``; the end when none is."""
        found = self._lookup(topic, partitions, epoch_ms)
        missing = [p for p, offset in found.items() if offset < 0]
        if missing:
            found.update(end_offsets(self.bootstrap, topic, missing))
        return found

    def _lookup(self, topic: str, partitions: Sequence[int], spec: int) -> dict[int, int]:
        answer = self.admin.list_partition_offsets({TopicPartition(topic, p): spec for p in partitions})
        return {tp.partition: found.offset for tp, found in answer.items()}


def check_within(topic: str, offsets: Mapping[int, int], bounds: Mapping[int, Bounds]) -> None:
    """Explicit offsets must lie in the log: [start, end]."""
    for partition, offset in sorted(offsets.items()):
        b = bounds[partition]
        if not b.start <= offset <= b.end:
            raise ValueError(
                f"offset {offset} of {topic}[{partition}] is outside the log [{b.start}, {b.end}]; "
                "older records were deleted by retention, newer ones do not exist yet"
            )

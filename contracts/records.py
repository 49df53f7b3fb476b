"""A Kafka record as everything downstream of the consumer needs it, whoever read it."""

from __future__ import annotations

from typing import Any, NamedTuple


class SourceRecord(NamedTuple):
    """A Kafka record as the pipeline needs it (a tuple: built for every event, a frozen dataclass costs 3x)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def from_kafka(cls, record: Any) -> SourceRecord:
        """From an aiokafka ConsumerRecord."""
        timestamp = record.timestamp
        headers = record.headers
        return cls(
            record.partition, record.offset, record.key, record.value,
            timestamp if timestamp is not None else -1, tuple(headers) if headers else (),
        )  # fmt: skip

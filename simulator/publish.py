"""The simulator's feeds to Kafka: the registry first, then invoices keyed by seller id, in arrival order.

Pacing: as fast as possible, at a target rate (records/s), or replaying simulated time at a speed
factor (record timestamps; 1.0 = real time); the producer and the pacing are :mod:`kafka_io.publish`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from contracts.codec import AvroCodec
from kafka_io.publish import Clock, Pacing, Publisher, paced, partition_for
from simulator.feed import FeedRecord
from simulator.population import Business

Progress = Callable[[int], None]


def publish_registry(
    bootstrap: str, topic: str, registrations: Iterable[dict[str, Any] | Business], codec: AvroCodec,
    timestamp_ms: int | None = None,
) -> int:  # fmt: skip
    """Registrations (values or businesses), keyed by seller id; returns how many."""
    values = [r.registration() if isinstance(r, Business) else r for r in registrations]
    publisher = Publisher(bootstrap)
    try:
        n = publisher.partitions(topic)
        keys = [v["seller_id"].encode() for v in values]
        stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        parts = np.array([partition_for(k, n) for k in keys], dtype=np.int64)
        publisher.send(topic, parts, keys, [codec.encode(v) for v in values], [stamp] * len(values))
    finally:
        publisher.close()
    return len(values)


def publish_invoices(
    bootstrap: str, topic: str, records: Iterable[FeedRecord], on_progress: Progress | None = None,
    pacing: Pacing | None = None, chunk: int = 20_000,
) -> int:  # fmt: skip
    """Labelled records (tests, the demo), in the order given; returns how many were sent."""
    publisher = Publisher(bootstrap)
    clock = Clock(pacing or Pacing())
    sent = 0
    try:
        n = publisher.partitions(topic)
        cache: dict[bytes, int] = {}
        for part in _batched(records, chunk):
            keys = [r.key for r in part]
            parts = np.array([cache.get(k) if k in cache else cache.setdefault(k, partition_for(k, n)) for k in keys])
            values, stamps = [r.value for r in part], [r.timestamp_ms for r in part]

            def send(a: int, b: int, keys: list[bytes] = keys, values: list[bytes] = values,
                     stamps: list[int] = stamps, parts: np.ndarray = parts) -> None:  # fmt: skip
                publisher.send(topic, parts[a:b], keys[a:b], values[a:b], stamps[a:b])
                if on_progress:
                    on_progress(b - a)

            paced(clock, np.array(stamps, dtype=np.int64), send)
            sent += len(part)
    finally:
        publisher.close()
    return sent


def _batched(records: Iterable[FeedRecord], size: int) -> Iterator[list[FeedRecord]]:
    batch: list[FeedRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def publish_simulation(
    sim: Any, bootstrap: str, registry_topic: str, invoices_topic: str, pacing: Pacing | None = None,
    on_progress: Progress | None = None,
) -> tuple[int, int]:  # fmt: skip
    """A Simulation's registry, then its feed: (registrations, invoice records) sent."""
    registered = publish_registry(bootstrap, registry_topic, sim.registrations(), sim.registry_codec,
                                  sim.registry_timestamp_ms)  # fmt: skip
    return registered, publish_feed(sim, bootstrap, invoices_topic, pacing, on_progress)


def publish_feed(
    sim: Any, bootstrap: str, topic: str, pacing: Pacing | None = None, on_progress: Progress | None = None
) -> int:
    """The fast path: the feed straight from the encoder's buffers, in arrival order."""
    publisher = Publisher(bootstrap)
    clock = Clock(pacing or Pacing())
    sent = 0
    try:
        n = publisher.partitions(topic)
        keys = sim.population.key_bytes
        seller_partition = np.array([partition_for(k, n) for k in keys], dtype=np.int64)
        for _day, cols in sim.receive_days():
            for chunk in sim.chunks(cols, 50_000):
                values = sim.encode(chunk).values()
                chunk_keys = [keys[s] for s in chunk.seller.tolist()]
                stamps = chunk.arrival.tolist()
                parts = seller_partition[chunk.seller]

                def send(a: int, b: int, k: list[bytes] = chunk_keys, v: list[bytes] = values,
                         t: list[int] = stamps, p: np.ndarray = parts) -> None:  # fmt: skip
                    publisher.send(topic, p[a:b], k[a:b], v[a:b], t[a:b])
                    if on_progress:
                        on_progress(b - a)

                paced(clock, chunk.arrival, send)
                sent += len(chunk)
    finally:
        publisher.close()
    return sent

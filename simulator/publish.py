"""Publishing a simulated feed to Kafka: registry first, then invoices keyed by seller id."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from kafka import KafkaProducer

from simulator.feed import FeedRecord
from simulator.population import Business
from streams.codec import AvroCodec


def _producer(bootstrap: str) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=512 * 1024,
        compression_type="lz4", max_in_flight_requests_per_connection=5, enable_idempotence=True,
    )  # fmt: skip


def publish_registry(bootstrap: str, topic: str, population: Sequence[Business], codec: AvroCodec) -> int:
    producer = _producer(bootstrap)
    try:
        for business in population:
            producer.send(topic, key=business.seller_id.encode(), value=codec.encode(business.registration()))
        producer.flush()
    finally:
        producer.close()
    return len(population)


def publish_invoices(
    bootstrap: str, topic: str, records: Iterable[FeedRecord], on_progress: Callable[[int], None] | None = None
) -> int:
    producer = _producer(bootstrap)
    sent = 0
    try:
        for record in records:
            producer.send(topic, key=record.key, value=record.value, timestamp_ms=record.timestamp_ms)
            sent += 1
            if on_progress and sent % 5000 == 0:
                on_progress(5000)
        producer.flush()
        if on_progress:
            on_progress(sent % 5000)
    finally:
        producer.close()
    return sent

"""The compiled core's unpacking of fetched record batches against aiokafka's own, on a real broker.

The same topic is read twice from each start offset by aiokafka consumers: once with its
fetches handed to ``einvoice_core.KafkaRecords`` (``streams.batch_fetch.unpack_in_core``), once
as aiokafka reads them. Offsets, keys, values, timestamps, headers and the consumer's position
must be equal, for every codec a producer may use, transactions committed and aborted (control
batches), headers with null values, empty and null keys and values, a start in the middle of a
batch, and a topic stamped with the broker's LogAppendTime.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

einvoice_core = pytest.importorskip("einvoice_core")

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from aiokafka.record.default_records import DefaultRecordBatchBuilder  # noqa: E402
from aiokafka.record.memory_records import MemoryRecords  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from contracts.records import SourceRecord  # noqa: E402
from streams import batch_fetch  # noqa: E402
from streams.ingest import PartitionRecords  # noqa: E402

KafkaRecords = einvoice_core.KafkaRecords
CODECS = [None, "gzip", "snappy", "lz4", "zstd"]


def payloads(n: int, seed: int) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]]:
    out = []
    for i in range(n):
        key = None if i % 11 == 0 else (b"" if i % 13 == 0 else f"28{seed:04d}{i:06d}".encode())
        value = None if i % 17 == 0 and key is not None else bytes((i * 7 + j) % 256 for j in range(i % 300))
        headers = [("source", b"sim"), ("empty", None)] if i % 5 == 0 else []
        out.append((key, value, headers))
    return out


async def produce(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([
            NewTopic(topic, 1, 1),
            NewTopic(f"{topic}.append", 1, 1, topic_configs={"message.timestamp.type": "LogAppendTime"}),
        ])  # fmt: skip
    finally:
        await admin.close()
    for seed, codec in enumerate(CODECS):
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, linger_ms=50)
        await producer.start()
        try:
            sends = [
                await producer.send(topic, value, key=key, headers=headers, timestamp_ms=1_717_200_000_000 + i)
                for i, (key, value, headers) in enumerate(payloads(400, seed))
            ]
            await asyncio.gather(*sends)
            await producer.send_and_wait(f"{topic}.append", b"stamped by the broker", key=b"k")
        finally:
            await producer.stop()
    for commit in (True, False):  # a committed and an aborted transaction: their markers are control batches
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"t-{uuid.uuid4().hex}")
        await producer.start()
        try:
            await producer.begin_transaction()
            for key, value, headers in payloads(30, 9):
                await producer.send(topic, value, key=key, headers=headers)
            await (producer.commit_transaction() if commit else producer.abort_transaction())
        finally:
            await producer.stop()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        await producer.send_and_wait(topic, b"after the transaction")
        await producer.stop()


def as_tuples(items: list[Any]) -> list[tuple]:
    """Records as (offset, key, value, timestamp, headers), from aiokafka's or from KafkaRecords."""
    out = []
    for item in items:
        if isinstance(item, KafkaRecords):
            part = PartitionRecords(0, (), fetched=[item])
            out.extend(tuple(r)[1:] for r in part.records())
        else:
            out.append(tuple(SourceRecord.from_kafka(item))[1:])
    return out


async def read(bootstrap: str, topic: str, start: int, unpacked: bool) -> tuple[list[tuple], int, list[type]]:
    """Everything from ``start`` as aiokafka's getmany returns it, the position reached, and what came out."""
    if unpacked:
        batch_fetch.unpack_in_core(topic, KafkaRecords)
    else:
        batch_fetch._UNPACKED_TOPICS.pop(topic, None)
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=6_000)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        end = (await consumer.end_offsets([tp]))[tp]
        items: list[Any] = []
        while await consumer.position(tp) < end:
            for records in (await consumer.getmany(tp, timeout_ms=1_000)).values():
                items.extend(records)
        return as_tuples(items), await consumer.position(tp), sorted({type(i) for i in items}, key=str)
    finally:
        await consumer.stop()
        batch_fetch._UNPACKED_TOPICS.pop(topic, None)


@pytest.fixture(scope="module")
def topic(kafka_bootstrap: str) -> str:
    name = f"records-{uuid.uuid4().hex[:8]}"
    asyncio.run(produce(kafka_bootstrap, name))
    return name


@pytest.mark.parametrize("start", [0, 1, 137, 1_203, 2_000, 2_030])
def test_unpacked_fetches_equal_aiokafkas_records(kafka_bootstrap: str, topic: str, start: int) -> None:
    ours, our_position, kinds = asyncio.run(read(kafka_bootstrap, topic, start, unpacked=True))
    theirs, their_position, their_kinds = asyncio.run(read(kafka_bootstrap, topic, start, unpacked=False))
    assert kinds == [KafkaRecords] and their_kinds != kinds  # each side read the fetches its own way
    assert ours == theirs
    assert our_position == their_position
    assert len(ours) == 2_000 + 30 + 30 + 2 - min(start, 2_000 + 30 + 1 + 2)  # the control batches hold 2 offsets


def test_a_log_append_time_topic_carries_the_brokers_time(kafka_bootstrap: str, topic: str) -> None:
    ours, _, kinds = asyncio.run(read(kafka_bootstrap, f"{topic}.append", 0, unpacked=True))
    theirs, _, _ = asyncio.run(read(kafka_bootstrap, f"{topic}.append", 0, unpacked=False))
    assert kinds == [KafkaRecords] and ours == theirs and len(ours) == len(CODECS)
    assert all(ts > 1_800_000_000_000 - 10**12 and ts != 1_717_200_000_000 for _, _, _, ts, _ in ours)


def test_what_the_core_cannot_read_is_refused_with_its_reason() -> None:
    batch = bytearray(61 + 12)
    batch[11] = 61  # batchLength: the header past it
    batch[16] = 1  # magic 1: left to aiokafka
    with pytest.raises(ValueError, match="message format v1"):
        KafkaRecords.unpack(bytes(batch), 0)
    batch[16] = 2
    with pytest.raises(ValueError, match="CRC"):
        KafkaRecords.unpack(bytes(batch), 0)
    assert len(KafkaRecords.unpack(bytes(batch[:40]), 5)) == 0  # a partial batch: nothing yet
    assert KafkaRecords.unpack(b"", 5).next_offset == 5


def test_slices_are_views_on_the_same_records() -> None:
    records = KafkaRecords.from_columns(
        [10, 11, 12, 13], [b"a", None, b"c", b""], [b"1", b"2", None, b"4"], [100, 101, 102, 103],
        [[], [("h", b"v")], [], [("n", None)]], 14,
    )  # fmt: skip
    assert (len(records), records.first_offset, records.last_offset, records.next_offset) == (4, 10, 13, 14)
    tail = records[1:]
    assert (len(tail), tail.first_offset, tail.offsets()) == (3, 11, [11, 12, 13])
    assert tail.record(0) == (11, None, b"2", 101, [("h", b"v")])
    assert records[:2].last_offset == 11 and len(records[4:]) == 0 and records[4:].first_offset == -1
    assert records.record(3) == (13, b"", b"4", 103, [("n", None)])
    with pytest.raises(IndexError):
        tail.record(3)


def test_a_batch_of_fetched_records_and_aiokafkas_reads_as_one() -> None:
    """Fetched before the core took the topic over, or left to aiokafka, beside unpacked fetches."""
    fetched = KafkaRecords.from_columns([5, 6], [b"k5", b"k6"], [b"v5", None], [50, 60], [[("h", b"x")], []], 7)
    theirs = [SourceRecord(3, 4, b"k4", b"v4", 40, ())]
    for chunks in ([theirs, fetched], [fetched[:1], theirs, fetched[1:]]):
        part = PartitionRecords.of_chunks(3, chunks)
        assert not part.fetched and len(part) == 3
        assert sorted(part.records()) == [
            SourceRecord(3, 4, b"k4", b"v4", 40, ()),
            SourceRecord(3, 5, b"k5", b"v5", 50, (("h", b"x"),)),
            SourceRecord(3, 6, b"k6", None, 60, ()),
        ]
    part = PartitionRecords.of_chunks(3, [fetched[:1], fetched[1:]])
    assert part.fetched and len(part) == 2 and (part.first_offset, part.last_offset) == (5, 6)
    assert part.offsets == [5, 6] and part.record(1) == SourceRecord(3, 6, b"k6", None, 60, ())


# -- hostile bytes: built batches, then cut, flipped and spliced ---------------------------------------------------

record_strategy = st.tuples(
    st.one_of(st.none(), st.binary(max_size=40)),
    st.one_of(st.none(), st.binary(max_size=200)),
    st.lists(st.tuples(st.text(max_size=8), st.one_of(st.none(), st.binary(max_size=8))), max_size=3),
    st.integers(min_value=-1, max_value=2**41),
)


def build_batch(base_offset: int, codec: int, records: list[tuple]) -> bytes:
    """A v2 batch as aiokafka's producer builds it (codec: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd)."""
    builder = DefaultRecordBatchBuilder(2, codec, 0, -1, -1, -1, 1 << 22)
    for i, (key, value, headers, timestamp) in enumerate(records):
        builder.append(i, timestamp=timestamp, key=key, value=value, headers=headers)
    data = bytearray(builder.build())
    data[0:8] = base_offset.to_bytes(8, "big", signed=True)  # outside the CRC, as a broker assigns it
    return bytes(data)


def aiokafka_reads(data: bytes, fetch_offset: int) -> tuple[list[tuple], int]:
    """What aiokafka's fetcher yields for a fetch's record set (read_uncommitted), and its next position."""
    part = batch_fetch._ORIGINAL_PARTITION_RECORDS(
        TopicPartition("t", 0), MemoryRecords(data), None, fetch_offset, None, None, True, 0
    )
    return as_tuples(list(part)), part.next_fetch_offset


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(st.tuples(st.sampled_from([0, 1, 2, 3, 4]), st.lists(record_strategy, max_size=6)), max_size=3),
    fetch_offset=st.integers(min_value=0, max_value=40),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=4_000)),
    flips=st.lists(st.tuples(st.integers(min_value=0, max_value=4_000), st.integers(1, 255)), max_size=3),
)
def test_any_fetch_is_read_as_aiokafka_reads_it_or_refused(batches, fetch_offset, cut, flips) -> None:
    data, base = bytearray(), 0
    for codec, records in batches:
        if records:
            data += build_batch(base, codec, records)
            base += len(records)
    if cut is not None:
        del data[cut:]
    for at, mask in flips:
        if at < len(data):
            data[at] ^= mask
    try:
        ours = KafkaRecords.unpack(bytes(data), fetch_offset)
    except ValueError:
        return  # left to aiokafka, which reads it or raises its own error
    theirs, position = aiokafka_reads(bytes(data), fetch_offset)
    assert as_tuples([ours]) == theirs
    assert ours.next_offset == position

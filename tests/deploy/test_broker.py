"""Real-broker tests for deploy.kafka: a Kafka 4.x KRaft broker fetched with Maven and run with java.

No mocks: these start JVMs on loopback ports, talk to them with kafka-python (admin) and aiokafka
(produce/consume), and check that data survives a restart, also when the old port is taken.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from deploy.kafka import BrokerStatus, LocalBroker, free_port
from deploy.kafka.broker import _random_cluster_id

pytestmark = pytest.mark.timeout(240)

TOPIC = "invoices.test"
MESSAGES = [(f"k{i}".encode(), f"invoice-{i}".encode()) for i in range(9)]


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-admin")
    try:
        admin.create_topics([NewTopic(name=name, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


def topic_names(bootstrap: str) -> set[str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-admin")
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


async def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


Records = set[tuple[bytes, bytes]]


async def consume(bootstrap: str, topic: str, group: str, expected: int) -> tuple[Records, int]:
    """Read ``expected`` records as ``group``, commit, and return (records, total committed offset)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        seen: Records = set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(seen) < expected and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                seen.update((r.key, r.value) for r in records if r.key is not None and r.value is not None)
        await consumer.commit()
        committed = 0
        for partition in sorted(consumer.assignment()):
            committed += await consumer.committed(partition) or 0
        return seen, committed
    finally:
        await consumer.stop()


async def committed_total(bootstrap: str, topic: str, group: str, partitions: int) -> int:
    """Committed offsets of ``group`` read back without joining it (proves commits were persisted)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        total = 0
        for p in range(partitions):
            total += await consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    b = LocalBroker(tmp_path_factory.mktemp("kafka-a"))
    yield b
    b.stop()


def test_cluster_ids_never_look_like_an_option() -> None:
    """kafka-storage format takes a cluster id starting with "-" for an option (1 draw in 64 did, before)."""
    ids = [_random_cluster_id() for _ in range(5000)]
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids) and {len(i) for i in ids} == {22}


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_cluster_ids_never_start_with_a_dash() -> None:
    """kafka-storage's parser takes ``--cluster-id -abc`` for a missing value (one id in 64 did)."""
    ids = [_random_cluster_id() for _ in range(5000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids) and len(set(ids)) == len(ids)


def test_ensure_installed_is_idempotent(broker: LocalBroker) -> None:
    libs = broker.ensure_installed()
    assert (libs / f"kafka_2.13-{broker.kafka_version}.jar").exists()
    assert broker.ensure_installed() == libs


def test_produce_consume_and_status(broker: LocalBroker) -> None:
    bootstrap = broker.start()
    assert bootstrap.startswith("127.0.0.1:")
    assert broker.start() == bootstrap, "start() on a running broker must be idempotent"

    status = broker.status()
    assert status.running and status.pid and status.bootstrap == bootstrap
    assert status.data_dir == broker.data_dir

    create_topic(bootstrap, TOPIC, partitions=3)
    assert TOPIC in topic_names(bootstrap)
    asyncio.run(produce(bootstrap, TOPIC, MESSAGES))
    seen, committed = asyncio.run(consume(bootstrap, TOPIC, "g-main", len(MESSAGES)))
    assert seen == set(MESSAGES)
    assert committed == len(MESSAGES)


def test_second_broker_runs_alongside(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> None:
    first = broker.start()
    other = LocalBroker(tmp_path_factory.mktemp("kafka-b"))
    try:
        second = other.start()
        assert second != first
        assert other.status().running and broker.status().running
        create_topic(second, "only.on.b", partitions=1)
        assert "only.on.b" in topic_names(second)
        assert "only.on.b" not in topic_names(first)
    finally:
        assert other.stop() is True
    assert not other.status().running
    assert broker.status().running


def test_stop_then_restart_keeps_data(broker: LocalBroker) -> None:
    old = broker.start()
    assert broker.stop() is True
    assert broker.status() == BrokerStatus(running=False, pid=None, bootstrap=None, data_dir=broker.data_dir)
    assert broker.stop() is False

    again = broker.start()
    assert again == old, "a free old port is reused so clients keep their bootstrap"
    assert asyncio.run(committed_total(again, TOPIC, "g-main", 3)) == len(MESSAGES)
    seen, _ = asyncio.run(consume(again, TOPIC, "g-after-restart", len(MESSAGES)))
    assert seen == set(MESSAGES)


def test_restart_with_clients_connected_keeps_the_port(broker: LocalBroker) -> None:
    """A stop closes the clients' connections from the broker's side, leaving TIME_WAIT on its port."""
    old = broker.start()
    port = int(old.rsplit(":", 1)[1])
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        assert broker.stop() is True
    finally:
        for client in clients:
            client.close()
    assert broker.start() == old, "connected clients (a running worker) must find the broker again"


def test_restart_when_old_port_is_taken(broker: LocalBroker) -> None:
    old = broker.start()
    broker.stop()
    old_port = int(old.rsplit(":", 1)[1])
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the old port may be in TIME_WAIT
        squatter.bind(("127.0.0.1", old_port))
        squatter.listen()
        moved = broker.start()
        assert moved != old
        seen, _ = asyncio.run(consume(moved, TOPIC, "g-moved", len(MESSAGES)))
        assert seen == set(MESSAGES)
        status = broker.status()
        assert status.running and status.bootstrap == moved
        assert broker.stop() is True
    assert not broker.status().running


def test_start_failure_explains_itself(tmp_path: Path) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    try:
        with pytest.raises(RuntimeError, match="in use"):
            LocalBroker(tmp_path / "busy").start(port=squatter.getsockname()[1])
    finally:
        squatter.close()

"""A production topology: three Kafka nodes, replicated topics, nodes killed under a running worker.

Each node is broker and controller (``deploy.kafka.LocalCluster``); the topics are created as a user
creates them, without a replication variable, so they take the cluster's RF 3 and min ISR 2. The outage
test kills, with SIGKILL and while invoices flow, the node leading most invoice partitions and the one
coordinating the worker's group, and restarts them; then kills a second node and leaves it down, keeps
publishing, SIGKILLs the worker(s) during that outage and starts them again. Counted at the end, at the
default batch size, as every chaos case is: every valid invoice once, the views equal to an independent
count, every malformed record dead-lettered once. Then the same with two workers sharing one store.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaAdminClient

from base.config import Settings
from deploy.kafka import LocalCluster, free_port
from deploy.kafka.broker import offsets_partition
from deploy.worker_process import WorkerProcess
from harness.chdb_http import ChdbHttpServer
from kafka_io.publish import Publisher
from tests.support import (
    PublishedFeed,
    assert_exact_accounting,
    committed_total,
    deployment_settings,
    end_offsets,
    run_cli,
    start_worker,
    wait_consumed,
    wait_until,
)

DEFAULT_BATCH = Settings().batch_size


@pytest.fixture
def cluster_settings(kafka_cluster: LocalCluster, tmp_path: Path) -> Settings:
    """A deployment of its own on the cluster, its topics created with no replication variable set."""
    return deployment_settings(kafka_cluster.bootstrap, tmp_path).replace(batch_size=DEFAULT_BATCH)


def test_topics_take_the_clusters_replication_without_any_variable(cluster_settings: Settings) -> None:
    settings = cluster_settings
    assert settings.replication_factor == -1 and settings.min_insync_replicas is None  # the defaults
    result = run_cli(settings, "topics", "create")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if settings.topic_prefix in line]
    assert len(rows) == 7, result.stdout  # the prefixed topics; the rest are the app's own (changelog, leader)
    for row in rows:
        cells = [c.strip() for c in row.strip("│ ").split("│")]
        assert cells[1:] == ["exists", cells[2], "3", "2"], row
    assert "3 broker(s)" in result.stdout and "warning" not in result.output


def test_topics_refuse_an_unreplicated_factor_on_a_cluster_unless_allowed(cluster_settings: Settings) -> None:
    unreplicated = cluster_settings.replace(replication_factor=1, topic_prefix=cluster_settings.topic_prefix + "rf1.")
    refused = run_cli(unreplicated, "topics", "create")
    assert refused.exit_code == 1
    assert "EINVOICE_REPLICATION_FACTOR=1 on a cluster of 3 brokers" in refused.output
    assert unreplicated.topics.invoices not in set(
        KafkaAdminClient(bootstrap_servers=unreplicated.kafka_brokers).list_topics()
    )

    allowed = run_cli(unreplicated, "topics", "create", "--allow-unreplicated")
    assert allowed.exit_code == 0, allowed.output
    warned = " ".join(allowed.output.split())  # the console wraps long lines
    assert f"{unreplicated.topics.invoices} has replication factor 1 on a cluster of 3 brokers" in warned
    row = next(line for line in allowed.stdout.splitlines() if f" {unreplicated.topics.invoices} " in line)
    assert [c.strip() for c in row.strip("│ ").split("│")][1:] == ["created", "4", "1", "2"], row


def test_a_producer_finds_the_new_leader_when_its_leader_is_killed(
    kafka_cluster: LocalCluster, cluster_settings: Settings
) -> None:
    """A producer that knows the dead node as its partition's leader (the simulator's publisher, as the
    worker's dead-letter producer) carries on once the controller has moved the leadership."""
    settings = cluster_settings
    topic = settings.topics.invoices
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_brokers)
    try:
        (described,) = admin.describe_topics([topic])
    finally:
        admin.close()
    victim = next(p["leader_id"] for p in described["partitions"] if p["partition_index"] == 0)
    publisher = Publisher(settings.kafka_brokers or "")
    zeros = np.zeros(100, dtype=np.int64)
    keys, values, stamps = [b"k"] * 100, [b"v"] * 100, [1_700_000_000_000] * 100
    try:
        publisher.send(topic, zeros, keys, values, stamps)
        publisher.flush()  # the producer knows partition 0's leader: the node killed next
        kafka_cluster.kill_node(victim)
        started = time.monotonic()
        publisher.send(topic, zeros, keys, values, stamps)
        publisher.flush()
        seconds = time.monotonic() - started
    finally:
        publisher.close()
        kafka_cluster.start_node(victim)
        kafka_cluster.wait_in_sync()
    assert seconds < 30, seconds  # the controller fences a dead broker after ~9 s (broker.session.timeout.ms)
    assert sum(end_offsets(settings, topic).values()) == 200


# ---------------------------------------------------------------------------------------------- outages


def invoice_leaders(settings: Settings) -> Counter[int]:
    """How many invoice partitions each node leads."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_brokers)
    try:
        (topic,) = admin.describe_topics([settings.topics.invoices])
        return Counter(p["leader_id"] for p in topic["partitions"])
    finally:
        admin.close()


def coordinator(settings: Settings) -> int:
    """The node coordinating the worker's group: the leader of its ``__consumer_offsets`` partition."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_brokers)
    try:
        (offsets,) = admin.describe_topics(["__consumer_offsets"])
        wanted = offsets_partition(settings.app_id, len(offsets["partitions"]))
        return next(p["leader_id"] for p in offsets["partitions"] if p["partition_index"] == wanted)
    finally:
        admin.close()


CLIENT_LINE = re.compile(r" logger=(aiokafka|kafka|base\.outages)[. ]")


def log_lines(workers: list[WorkerProcess]) -> int:
    """The lines the Kafka clients (and the outage summaries) wrote: the noise an outage makes."""
    return sum(len(CLIENT_LINE.findall(w.log_path.read_text(errors="replace"))) for w in workers if w.log_path.exists())


def wait_committed(settings: Settings, share: float, total: int, workers: list[WorkerProcess]) -> None:
    target = int(total * share)
    wait_until(lambda: committed_total(settings) >= target, 300, f"the group to commit {target} records", workers[0])


def run_through_outages(
    cluster: LocalCluster, settings: Settings, feed: PublishedFeed, start: Callable[[str], list[WorkerProcess]]
) -> dict[str, object]:
    """The issue's sequence; returns what happened, for the assertions and a failure's message."""
    total = len(feed.published)
    seen: dict[str, object] = {}
    workers = start("first")
    down: list[int] = []
    try:
        # 1. kill -9 the node leading most invoice partitions, while the group reads; publish through it
        wait_committed(settings, 0.10, total, workers)
        leaders, coordinating = invoice_leaders(settings), coordinator(settings)
        victim = max(leaders, key=lambda node: (leaders[node], node == coordinating))
        seen |= {"leaders": dict(leaders), "coordinator": coordinating, "first_victim": victim}
        lines, outage_started = log_lines(workers), time.monotonic()
        cluster.kill_node(victim)
        down.append(victim)
        feed.publish_more(0.25)
        wait_committed(settings, 0.30, total, workers)
        seen["moved_leaders"] = dict(invoice_leaders(settings))
        seen["lines_per_second_first_outage"] = (log_lines(workers) - lines) / (time.monotonic() - outage_started)
        cluster.start_node(victim)
        down.remove(victim)
        cluster.wait_in_sync()  # as an operator's rolling restart does before the next node
        # ... and the group coordinator, when another node held it
        if coordinating != victim:
            cluster.kill_node(coordinating)
            down.append(coordinating)
            feed.publish_more(0.15)
            wait_committed(settings, 0.45, total, workers)
            cluster.start_node(coordinating)
            down.remove(coordinating)
            cluster.wait_in_sync()
        # 2. a second node down, left down; the rest of the feed published while it is
        second = next(node for node in (1, 2, 3) if node != victim)
        seen["left_down"] = second
        cluster.kill_node(second)
        down.append(second)
        feed.publish_rest()
        # 3. the worker(s) SIGKILLed during the outage, and started again
        wait_committed(settings, 0.60, total, workers)
        seen["committed_at_worker_kill"] = committed_total(settings)
        for worker in workers:
            worker.kill()
        workers = start("second")
        wait_consumed(settings, workers[0], timeout=600)
        for worker in workers:
            worker.stop()
        seen["log_tail"] = workers[0].tail(30)
    finally:
        for worker in workers:
            worker.kill()
        for node in down:
            cluster.start_node(node)
        cluster.wait_in_sync()  # the next test finds the cluster whole
    return seen


def feed_for(settings: Settings) -> PublishedFeed:
    """A quarter of the feed published now, the rest through the outages (duplicates and malformed included)."""
    feed = PublishedFeed(settings, sellers=3000, invoices=200_000, seed=23, unregistered=40, hold_back=0.75)
    assert len(feed.malformed) >= 2000 and sum(r.kind == "duplicate" for r in feed.records) >= 3600
    return feed


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_one_worker_counts_exactly_through_node_kills_and_a_lasting_outage(
    kafka_cluster: LocalCluster, cluster_settings: Settings
) -> None:
    settings = cluster_settings
    feed = feed_for(settings)
    started = time.monotonic()

    def one_worker(name: str) -> list[WorkerProcess]:
        return [start_worker(settings, name=f"worker-{name}")]

    seen = run_through_outages(kafka_cluster, settings, feed, one_worker)
    seen["seconds"] = round(time.monotonic() - started)
    assert seen["moved_leaders"].get(seen["first_victim"], 0) == 0, seen  # leadership left the dead node
    assert_exact_accounting(settings, feed, seen)
    # the outage said once per node (base/outages.py), not once per reconnect attempt: 50 lines a second without
    said = (Path(settings.data_dir) / "worker-first.log").read_text()
    unreachable = re.findall(r'msg="kafka node unreachable; its further client errors are counted" .* node=(\d+)', said)
    assert str(seen["first_victim"]) in unreachable, unreachable
    assert seen["lines_per_second_first_outage"] < 2, seen


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_two_workers_sharing_a_store_count_exactly_through_node_kills(
    kafka_cluster: LocalCluster, cluster_settings: Settings, tmp_path: Path
) -> None:
    with ChdbHttpServer(tmp_path / "store") as dsn:
        shared = cluster_settings.replace(clickhouse_url=dsn, session_timeout_s=10.0)
        feed = feed_for(shared)

        def two_workers(name: str) -> list[WorkerProcess]:
            workers = []
            for member in ("a", "b"):
                own = shared.replace(data_dir=tmp_path / member, web_port=free_port())
                workers.append(start_worker(own, name=f"worker-{member}-{name}"))
            return workers

        seen = run_through_outages(kafka_cluster, shared, feed, two_workers)
        assert_exact_accounting(shared, feed, seen)

"""Topic administration: every topic the app uses, created explicitly with its partitions and configs.

Faust would auto-create its changelog topics with whatever partition count it guesses; creating
them here (and telling Faust not to declare topics) avoids ``PartitionsMismatch`` later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from base.config import Settings, leader_topic, registry_changelog

KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588  # message.max.bytes of a broker left at its default
DLQ_MAX_MESSAGE_BYTES = 2 * KAFKA_DEFAULT_MAX_MESSAGE_BYTES  # max.message.bytes of the DLQ topics we create

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)
    doc: str = ""


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """All topics, with the same partition count for the co-partitioned ones (and their DLQs)."""
    n = settings.partitions
    t = settings.topics
    # Retention by size, not time: Kafka measures time retention on record timestamps, which
    # here are the feed's receive times; a backfill republished with 2024 timestamps would be
    # deleted the moment it landed.
    by_size = {"retention.ms": "-1", "retention.bytes": str(settings.retention_bytes)}
    # A dead letter is its source record plus headers: room for any record a default topic accepts.
    dlq = {**by_size, "max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)}
    return [
        TopicSpec(t.invoices, n, by_size, "cash-register invoices, Avro, key = seller id"),
        TopicSpec(t.registry, n, {"cleanup.policy": "compact"}, "business registry, Avro, compacted, key = seller id"),
        TopicSpec(t.invoices_dlq, n, dlq, "rejected invoices + reason headers"),
        TopicSpec(t.registry_dlq, n, dlq, "rejected registrations"),
        TopicSpec(registry_changelog(settings.app_id), n, {"cleanup.policy": "compact"}, "Faust registry table"),
        TopicSpec(leader_topic(settings.app_id), 1, {}, "Faust leader election (the alert evaluator)"),
        TopicSpec(t.alerts, n, by_size, "alert events (JSON), key = fingerprint"),
        TopicSpec(t.silences, 1, {"cleanup.policy": "compact"}, "alert silences (JSON), key = silence id"),
        TopicSpec(t.alerts_dlq, n, {"cleanup.policy": "compact"}, "alert events an endpoint did not take (JSON)"),
    ]


# A cluster this large or larger should replicate every topic: one machine lost must lose no invoice.
CLUSTER_MIN_BROKERS = 3
READ_BACK_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class TopicState:
    """One topic as the cluster holds it, read back after :func:`create_topics`."""

    name: str
    status: str  # "created" | "exists"
    partitions: int
    replication_factor: int
    min_insync_replicas: int | None  # None: could not be read


@dataclass(frozen=True)
class TopicsReport:
    """The topics and what they say about the cluster's safety; ``warnings`` are also logged."""

    brokers: int
    topics: dict[str, TopicState]
    warnings: list[str]

    def __iter__(self) -> Iterator[str]:  # the names, as callers listing what exists want them
        return iter(self.topics)

    def __getitem__(self, name: str) -> TopicState:
        return self.topics[name]


class UnreplicatedTopics(RuntimeError):
    """Replication factor 1 asked for on a cluster that could replicate: refused unless allowed."""


def create_topics(bootstrap: str, settings: Settings, *, allow_unreplicated: bool = False) -> TopicsReport:
    """Create what is missing, check what exists, and read back each topic's replication.

    The replication factor is the cluster's ``default.replication.factor`` unless
    ``EINVOICE_REPLICATION_FACTOR`` says otherwise (``-1`` asks the broker), and
    ``min.insync.replicas`` the cluster's unless ``EINVOICE_MIN_INSYNC_REPLICAS`` is set. Asking for
    RF 1 on a cluster of :data:`CLUSTER_MIN_BROKERS` or more raises :class:`UnreplicatedTopics` unless
    ``allow_unreplicated``; a topic that ends up unreplicated there, or whose min ISR leaves no room for
    a broker to be down, is a warning.
    """
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="einvoice-monitor-admin")
    try:
        brokers = len(admin.describe_cluster().get("brokers") or ())
        if settings.replication_factor == 1 and brokers >= CLUSTER_MIN_BROKERS and not allow_unreplicated:
            raise UnreplicatedTopics(
                f"EINVOICE_REPLICATION_FACTOR=1 on a cluster of {brokers} brokers: a single lost broker would "
                "lose invoices. Unset it (the cluster's default.replication.factor is used) or set 3; pass "
                "--allow-unreplicated to create unreplicated topics anyway."
            )
        existing = {t["name"]: len(t["partitions"]) for t in admin.describe_topics()}
        status: dict[str, str] = {}
        for spec in topic_specs(settings):
            if spec.name in existing:
                if existing[spec.name] != spec.partitions:
                    raise RuntimeError(
                        f"topic {spec.name} has {existing[spec.name]} partitions, the configuration says "
                        f"{spec.partitions}; co-partitioning needs them equal. Set EINVOICE_PARTITIONS="
                        f"{existing[spec.name]} or recreate the topics."
                    )
                status[spec.name] = "exists"
                continue
            configs = dict(spec.configs)
            if settings.min_insync_replicas is not None:
                configs["min.insync.replicas"] = str(settings.min_insync_replicas)
            try:
                admin.create_topics(
                    [NewTopic(spec.name, spec.partitions, settings.replication_factor, topic_configs=configs)]
                )
                status[spec.name] = "created"
            except TopicAlreadyExistsError:
                status[spec.name] = "exists"
        topics = _read_back(admin, status)
    finally:
        admin.close()
    report = TopicsReport(brokers, topics, _warnings(brokers, topics.values()))
    for warning in report.warnings:
        log.warning("topic replication", extra={"problem": warning})
    return report


def _read_back(admin: KafkaAdminClient, status: dict[str, str]) -> dict[str, TopicState]:
    """Partitions, replication factor and ``min.insync.replicas`` of these topics, as the cluster has them."""
    described: dict[str, dict] = {}
    deadline = time.monotonic() + READ_BACK_TIMEOUT_S
    while True:  # a topic just created may be described before its partitions have leaders and replicas
        described = {t["name"]: t for t in admin.describe_topics(list(status))}
        if time.monotonic() > deadline or all(_settled(described.get(name)) for name in status):
            break
        time.sleep(0.2)
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, {"min.insync.replicas": None}) for name in status]
    configs = admin.describe_configs(resources, config_filter="all").get("topic", {})
    topics = {}
    for name, state in status.items():
        partitions = described.get(name, {}).get("partitions") or []
        value = (configs.get(name) or {}).get("min.insync.replicas")
        raw = value.get("value") if isinstance(value, dict) else value
        topics[name] = TopicState(
            name, state, len(partitions),
            min((len(p["replica_nodes"]) for p in partitions), default=0),
            int(raw) if raw not in (None, "") else None,
        )  # fmt: skip
    return topics


def _settled(topic: dict | None) -> bool:
    partitions = (topic or {}).get("partitions") or []
    return bool(partitions) and all(p.get("replica_nodes") and p.get("leader_id", -1) >= 0 for p in partitions)


def _warnings(brokers: int, topics: Iterable[TopicState]) -> list[str]:
    problems = []
    for topic in topics:
        rf, isr = topic.replication_factor, topic.min_insync_replicas
        if brokers >= CLUSTER_MIN_BROKERS and rf < 2:
            problems.append(
                f"{topic.name} has replication factor {rf} on a cluster of {brokers} brokers: losing one broker "
                f"loses its data (recreate it with EINVOICE_REPLICATION_FACTOR=3)"
            )
        if isr is not None and rf > 1 and isr >= rf:
            problems.append(
                f"{topic.name}: min.insync.replicas {isr} with replication factor {rf}: one broker down stops "
                f"every write (set EINVOICE_MIN_INSYNC_REPLICAS={rf - 1})"
            )
        if isr is not None and brokers >= CLUSTER_MIN_BROKERS and rf > 2 and isr < 2:
            problems.append(
                f"{topic.name}: min.insync.replicas {isr}: an acknowledged write may live on one broker only "
                "(set EINVOICE_MIN_INSYNC_REPLICAS=2)"
            )
    return problems

"""Topic administration: every topic the app uses, created explicitly with its partitions and configs.

Faust would auto-create its changelog topics with whatever partition count it guesses; creating
them here (and telling Faust not to declare topics) avoids ``PartitionsMismatch`` later.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from base.config import Settings
from sinks.dead_letter import DLQ_MAX_MESSAGE_BYTES

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
        TopicSpec(f"{settings.app_id}-registry-changelog", n, {"cleanup.policy": "compact"}, "Faust registry table"),
        TopicSpec(f"{settings.app_id}-__assignor-__leader", 1, {}, "Faust leader election (the alert evaluator)"),
        TopicSpec(t.alerts, n, by_size, "alert events (JSON), key = fingerprint"),
        TopicSpec(t.silences, 1, {"cleanup.policy": "compact"}, "alert silences (JSON), key = silence id"),
        TopicSpec(t.alerts_dlq, n, {"cleanup.policy": "compact"}, "alert events an endpoint did not take (JSON)"),
    ]


def create_topics(bootstrap: str, settings: Settings) -> dict[str, str]:
    """Create what is missing; check what exists. Returns topic -> 'created' | 'exists'."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="einvoice-monitor-admin")
    try:
        existing = {t["name"]: len(t["partitions"]) for t in admin.describe_topics()}
        result: dict[str, str] = {}
        for spec in topic_specs(settings):
            if spec.name in existing:
                if existing[spec.name] != spec.partitions:
                    raise RuntimeError(
                        f"topic {spec.name} has {existing[spec.name]} partitions, the configuration says "
                        f"{spec.partitions}; co-partitioning needs them equal. Set EINVOICE_PARTITIONS="
                        f"{existing[spec.name]} or recreate the topics."
                    )
                result[spec.name] = "exists"
                continue
            try:
                admin.create_topics(
                    [NewTopic(spec.name, spec.partitions, settings.replication_factor, topic_configs=spec.configs)]
                )
                result[spec.name] = "created"
            except TopicAlreadyExistsError:
                result[spec.name] = "exists"
        return result
    finally:
        admin.close()

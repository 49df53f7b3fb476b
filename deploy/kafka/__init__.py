"""Local Kafka (KRaft) launcher for tests, benchmarks and dev: one node, or a cluster of N."""

from deploy.kafka.broker import (
    KAFKA_VERSION,
    BrokerStatus,
    LocalBroker,
    LocalCluster,
    Replication,
    default_cache_dir,
    free_port,
    replication,
)

__all__ = [
    "KAFKA_VERSION",
    "BrokerStatus",
    "LocalBroker",
    "LocalCluster",
    "Replication",
    "default_cache_dir",
    "free_port",
    "replication",
]

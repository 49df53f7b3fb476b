"""Local single-node Kafka (KRaft) broker launcher for tests, benchmarks and dev."""

from deploy.kafka.broker import KAFKA_VERSION, BrokerStatus, LocalBroker, default_cache_dir, free_port

__all__ = ["KAFKA_VERSION", "BrokerStatus", "LocalBroker", "default_cache_dir", "free_port"]

"""Fixtures: one real Kafka broker per test session, and an isolated deployment per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.kafka import LocalBroker, free_port
from streams.config import Settings
from streams.topics import create_topics


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The project's own broker launcher, as a user runs it; KAFKA_BROKERS overrides."""
    if os.environ.get("KAFKA_BROKERS"):
        yield os.environ["KAFKA_BROKERS"]
        return
    broker = LocalBroker(tmp_path_factory.mktemp("kafka"))
    bootstrap = broker.start()
    try:
        yield bootstrap
    finally:
        broker.stop()


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings of a deployment of its own: own topics, consumer group, chDB directory, web port."""
    run = uuid.uuid4().hex[:8]
    configured = Settings(
        data_dir=tmp_path / "data",
        kafka_brokers=kafka_bootstrap,
        topic_prefix=f"t{run}.",
        app_id=f"einvoice-test-{run}",
        partitions=4,
        web_port=free_port(),
        session_timeout_s=6.0,
        batch_size=1000,
        metrics_interval_s=2.0,
    )
    create_topics(kafka_bootstrap, configured)
    return configured

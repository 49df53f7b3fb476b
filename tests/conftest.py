"""Fixtures: one real Kafka broker per test session (and a three-node cluster for the tests that ask), and an
isolated deployment per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from base.config import Settings
from deploy.kafka import LocalBroker, LocalCluster
from tests.support import deployment_settings

# the simulated deployment the board and report tests read (session scope, built on first use)
pytest_plugins = ["tests.filled"]


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
    return deployment_settings(kafka_bootstrap, tmp_path)


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three Kafka nodes, each broker and controller, started for the tests that ask for them (~10 s).

    A test that kills nodes starts them again before it ends, so the next finds three running.
    """
    cluster = LocalCluster(tmp_path_factory.mktemp("kafka-cluster"), nodes=3)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()

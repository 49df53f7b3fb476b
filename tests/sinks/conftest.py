"""The sinks' tests share one fixture: a chDB store of their own with every migration applied."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sinks.clickhouse import ClickHouseStore, apply_migrations


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ClickHouseStore]:
    """An embedded store at the newest migration (a test module may define its own ``store``)."""
    store = ClickHouseStore(f"chdb://{tmp_path / 'ch'}")
    store.call(apply_migrations, store.client)
    yield store
    store.close()

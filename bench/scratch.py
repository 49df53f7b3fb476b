"""A throwaway deployment for a benchmark: its own directory, topics and consumer group.

The project's local Kafka broker is started in the directory unless KAFKA_BROKERS names one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from base.config import Settings
from deploy.kafka import LocalBroker, free_port


@contextlib.contextmanager
def scratch_deployment(prefix: str, partitions: int, remove: bool = True, **changes) -> Iterator[Settings]:
    """Settings of a fresh deployment (``data_dir`` under a new temporary directory); the broker stops after.

    The directory goes too, unless ``remove`` is False (a benchmark's ``--keep``): a run at scale 1.0
    leaves 2–9 GB of broker logs and chDB data.
    """
    work = Path(tempfile.mkdtemp(prefix=prefix))
    broker = None
    bootstrap = os.environ.get("KAFKA_BROKERS")
    if not bootstrap:
        broker = LocalBroker(work / "kafka")
        bootstrap = broker.start()
    run = uuid.uuid4().hex[:6]
    settings = Settings(
        data_dir=work / "data", kafka_brokers=bootstrap, topic_prefix=f"bench{run}.", app_id=f"einvoice-bench-{run}",
        partitions=partitions, web_port=free_port(), session_timeout_s=10,
    ).replace(**changes)  # fmt: skip
    try:
        yield settings
    finally:
        if broker is not None:
            broker.stop()
        if remove:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept: {work} (broker logs, chDB data and worker logs)", flush=True)


def machine() -> dict[str, str]:
    """What a result was measured on: every results file names it."""
    import datetime as dt
    import platform

    import psutil

    memory_gib = psutil.virtual_memory().total / 2**30
    return {
        "machine": f"{platform.machine()}, {psutil.cpu_count()} cores, {memory_gib:.0f} GiB",
        "python": platform.python_version(),
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }

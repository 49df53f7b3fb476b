"""Publishing an archive, interrupted by Ctrl-C and by SIGKILL, resumes without a single duplicate."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections import Counter

from kafka_io.publish import partition_for
from replay.archive import read_records
from replay.audit import AuditLog
from replay.publish import timestamp_ms
from simulator.archive import ArchiveOptions, write_archive
from simulator.engine import Simulation, SimulationConfig, registry_scale
from tests.support import end_offsets, read_topic, run_cli, wait_until

RATE = 1500  # events/s: slow enough to interrupt in the middle


def landed(settings):
    return sum(end_offsets(settings, settings.topics.invoices).values())


def beyond_checkpoint(settings, manifest):
    """Records on the topics that the publish state does not count as acknowledged yet."""
    (state_path,) = (settings.data_dir / "replay" / "publish").glob("*.json")
    index, record = json.loads(state_path.read_text())["cursor"]
    acknowledged = sum(f["records"] for f in manifest["files"][:index]) + record
    on_topics = landed(settings) + sum(end_offsets(settings, settings.topics.registry).values())
    return on_topics - acknowledged


def publish_process(settings, archive):
    env = {**os.environ, **settings.to_env()}
    command = [sys.executable, "-m", "cli.main", "replay", "publish", str(archive), "--rate", str(RATE)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_interrupted_publish_resumes_without_duplicates(settings, tmp_path):
    # a backfill from the simulator's own files (simulate --to files): registry first, then a file per day
    sim = Simulation(SimulationConfig(scale=registry_scale(120), start=dt.date(2024, 6, 1), days=3, seed=3,
                                      target_invoices=6000))  # fmt: skip
    archive = tmp_path / "sim"
    manifest = write_archive(sim, ArchiveOptions(archive))
    files = [(f["topic"], read_records(archive / f["path"])) for f in manifest["files"]]
    expected = {"einvoice.issued": [], "business.registry": []}
    for topic, records in files:
        expected[topic] += [(r["key"], r["value"], timestamp_ms(r["timestamp"])) for r in records]
    invoices = expected["einvoice.issued"]
    assert len(invoices) > 5000

    first = publish_process(settings, archive)
    wait_until(lambda: landed(settings) > 1500, 60, "the first records")
    first.send_signal(signal.SIGINT)  # Ctrl-C: flushes what was sent, keeps the state
    _out, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    assert "run the same command again" in " ".join(err.split())
    at_interrupt = landed(settings)
    assert 1500 < at_interrupt < len(invoices)

    second = publish_process(settings, archive)
    wait_until(lambda: landed(settings) > at_interrupt + 1500, 60, "more records")
    wait_until(lambda: beyond_checkpoint(settings, manifest) >= 300, 60, "records sent after a checkpoint")
    second.kill()  # SIGKILL: no flush, no state written after the last checkpoint
    second.wait(timeout=30)
    assert landed(settings) < len(invoices)
    unacknowledged = beyond_checkpoint(settings, manifest)
    assert unacknowledged >= 300

    landed_before_last = landed(settings) + sum(end_offsets(settings, settings.topics.registry).values())
    done = run_cli(settings, "replay", "publish", str(archive))
    assert done.exit_code == 0, done.output
    assert "had landed before the interruption" in " ".join(done.stderr.split())

    for topic, wanted in (
        (settings.topics.invoices, invoices),
        (settings.topics.registry, expected["business.registry"]),
    ):
        on_topic = sorted(read_topic(settings, topic), key=lambda r: (r.partition, r.offset))
        got = [(r.key, r.value, r.timestamp) for r in on_topic]
        assert Counter(got) == Counter(wanted), f"{topic}: every archived record exactly once"
        assert len(got) == len(wanted)
        for partition in range(settings.partitions):  # in archive order within each partition, keyed as producers do
            mine = [(r.key, r.value, r.timestamp) for r in on_topic if r.partition == partition]
            assert mine == [w for w in wanted if partition_for(w[0], settings.partitions) == partition]

    entries = [e for e in AuditLog(settings.data_dir).entries() if e["action"] == "publish"]
    assert [e["result"] for e in entries] == ["interrupted", "ok"]  # the SIGKILLed run could not write its entry
    # the records that landed after the last checkpoint were found on the topic and not sent again
    assert entries[-1]["detail"]["already_there"] == unacknowledged
    assert entries[-1]["detail"]["sent"] == len(invoices) + len(expected["business.registry"]) - landed_before_last

    again = run_cli(settings, "replay", "publish", str(archive))
    assert again.exit_code == 3, "published already: refused"

"""The simulator's outputs: Avro container files (with a manifest), Kafka, the command line; determinism."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections import Counter

import fastavro
import pytest
from kafka import KafkaConsumer, TopicPartition
from typer.testing import CliRunner

from base.config import REGISTRY_SUBJECT
from cli.main import app
from contracts.codec import AvroCodec, SchemaCatalog
from kafka_io.publish import Pacing, partition_for
from simulator.archive import ArchiveOptions, read_archive, write_archive
from simulator.engine import Simulation, SimulationConfig
from simulator.publish import publish_simulation

CONFIG = SimulationConfig(scale=0.004, start=dt.date(2024, 6, 1), days=3, seed=21)


def file_digests(root) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("codec", ["deflate", "null"])
def test_files_hold_the_feed_in_arrival_order_with_a_manifest(tmp_path, codec):
    expected = list(Simulation(CONFIG).feed_records())
    sim = Simulation(CONFIG)
    manifest = write_archive(sim, ArchiveOptions(tmp_path, codec=codec))
    invoice_files = [f for f in manifest["files"] if f["topic"] == "einvoice.issued"]
    # one file per local receive day: the three issue days, then the late arrivals' days
    assert [f["path"] for f in invoice_files][:3] == [f"einvoice.issued/2024-06-0{d}.avro" for d in (1, 2, 3)]
    got = []
    for entry in invoice_files:
        path = tmp_path / entry["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert path.stat().st_size == entry["bytes"]
        with path.open("rb") as fh:
            reader = fastavro.reader(fh)
            assert reader.codec == codec and reader.metadata["einvoice.topic"] == "einvoice.issued"
            records = list(reader)
        assert len(records) == entry["records"]
        day = dt.date.fromisoformat(path.stem)
        for r in records:
            assert (r["timestamp"] + dt.timedelta(hours=7)).date() == day  # local receive day
            assert r["headers"] == []
        got += [(r["key"], r["value"], int(r["timestamp"].timestamp() * 1000)) for r in records]
    assert got == [(r.key, r.value, r.timestamp_ms) for r in expected]
    assert manifest["records"] == len(expected) + len(sim.registrations())
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    # the registry: one file, every registered business, decodable
    codec_ = AvroCodec(SchemaCatalog.load(), REGISTRY_SUBJECT)
    registry = list(read_archive(tmp_path / "business.registry" / "registry.avro"))
    assert len(registry) == sum(b.in_registry for b in sim.population.businesses)
    assert {codec_.decode(r["value"])[1]["seller_id"] for r in registry} == {r["key"].decode() for r in registry}
    truth = json.loads((tmp_path / "ground_truth.json").read_text())
    assert truth["emitted"]["records"] == len(expected)


def test_same_seed_and_arguments_give_byte_identical_files(tmp_path):
    for run, seed in (("a", 21), ("b", 21), ("c", 22)):
        config = SimulationConfig(**{**CONFIG.__dict__, "seed": seed})
        write_archive(Simulation(config), ArchiveOptions(tmp_path / run, partition_by="hour"))
    first, second, other = (file_digests(tmp_path / run) for run in "abc")
    assert first == second and len(first) > 20
    assert other["einvoice.issued/2024-06-01T12.avro"] != first["einvoice.issued/2024-06-01T12.avro"]


def test_hourly_files_and_a_rerun_replaces_its_own_files(tmp_path):
    sim = Simulation(CONFIG)
    manifest = write_archive(sim, ArchiveOptions(tmp_path, partition_by="hour", codec="null"))
    names = [f["path"] for f in manifest["files"] if f["topic"] == "einvoice.issued"]
    assert "einvoice.issued/2024-06-01T00.avro" in names and "einvoice.issued/2024-06-01T19.avro" in names
    for entry in manifest["files"][1:4]:
        stamps = [r["timestamp"] + dt.timedelta(hours=7) for r in read_archive(tmp_path / entry["path"])]
        assert {s.strftime("%Y-%m-%dT%H") for s in stamps} == {entry["path"].split("/")[1][:-5]}
    write_archive(Simulation(CONFIG), ArchiveOptions(tmp_path, partition_by="day"))
    left = {p.name for p in (tmp_path / "einvoice.issued").iterdir()}
    assert left == {f"2024-06-0{d}.avro" for d in range(1, 1 + len(left))}


def test_the_simulate_command_writes_files_and_ground_truth(tmp_path, monkeypatch):
    monkeypatch.setenv("EINVOICE_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(
        app,
        ["simulate", "--to", "files", "--scale", "0.003", "--days", "2", "--start", "2024-06-10",
         "--scenario", "scenarios/feed_outage.yaml", "--partition-by", "hour", "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["partition_by"] == "hour" and manifest["codec"] == "deflate"
    truth = json.loads((tmp_path / "out" / "ground_truth.json").read_text())
    assert truth["config"]["scale"] == 0.003 and truth["config"]["days"] == 2
    assert [c["kind"] for c in truth["changes"]] == ["feed_outage"]
    # the scenario's run section fills what the options leave out
    result = CliRunner().invoke(app, ["simulate", "--to", "files", "--scenario", "scenarios/demo.yaml", "--days",
                                      "1", "--scale", "0.002", "--out", str(tmp_path / "demo")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "demo" / "ground_truth.json").read_text())["config"]["start"] == "2024-06-03"
    refused = CliRunner().invoke(app, ["simulate", "--to", "files", "--rate", "100", "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2
    both = CliRunner().invoke(app, ["simulate", "--to", "files", "--days", "2", "--end", "2024-06-03"])
    assert both.exit_code == 2


def read_all(bootstrap: str, topic: str, partitions: int) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list = []
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            for batch in consumer.poll(timeout_ms=1000).values():
                out.extend(batch)
        return out
    finally:
        consumer.close()


def test_publishing_to_kafka_registry_first_keyed_and_co_partitioned(settings):
    config = SimulationConfig(scale=0.003, start=dt.date(2024, 6, 1), days=2, seed=3)
    expected = list(Simulation(config).feed_records())
    sim = Simulation(config)
    registered, sent = publish_simulation(sim, settings.kafka_brokers, settings.topics.registry,
                                          settings.topics.invoices)  # fmt: skip
    assert sent == len(expected) and registered == len(sim.registrations())
    invoices = read_all(settings.kafka_brokers, settings.topics.invoices, settings.partitions)
    registry = read_all(settings.kafka_brokers, settings.topics.registry, settings.partitions)
    assert len(invoices) == len(expected) and len(registry) == registered
    partition_of = {r.key: r.partition for r in registry}
    for record in invoices + registry:
        assert record.partition == partition_for(record.key, settings.partitions)
    assert all(partition_of[r.key] == r.partition for r in invoices if r.key in partition_of)
    # each partition in arrival order, with the feed's timestamps and bytes
    order = {(r.key, r.value, r.timestamp_ms): i for i, r in enumerate(expected)}
    by_partition: dict[int, list[int]] = {}
    for record in invoices:
        by_partition.setdefault(record.partition, []).append(order[(record.key, record.value, record.timestamp)])
    for positions in by_partition.values():
        assert positions == sorted(positions)
    assert Counter((r.key, r.value) for r in invoices) == Counter((r.key, r.value) for r in expected)


def test_pacing_at_a_target_rate(settings):
    config = SimulationConfig(scale=0.002, start=dt.date(2024, 6, 1), days=1, seed=4, target_invoices=1500)
    sim = Simulation(config)
    started = time.monotonic()
    _, sent = publish_simulation(sim, settings.kafka_brokers, settings.topics.registry, settings.topics.invoices,
                                 Pacing(rate=5000))  # fmt: skip
    elapsed = time.monotonic() - started
    assert elapsed >= (sent - 1) / 5000 * 0.95
    with pytest.raises(ValueError):
        Pacing(rate=10, speed=2)

"""Avro container files of the simulated topics: one file per receive day (or hour), and a manifest.

Each record is ``simulator/archive_record.avsc`` (key, value, timestamp, headers): the Kafka
record as it would be on the topic, so later issues can archive real topics in the same format
and replay either. Files are written block by block from the encoder's buffers (the container
format is a header, then blocks of records each followed by the sync marker); the sync marker
is derived from the seed and the file name, so the same run gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from base.localtime import HOUR_MS, LOCAL_OFFSET_MS, TIME_ZONE
from simulator.encoding import EncodedBatch, avro_string, encode_archive_record, varint
from simulator.engine import CHUNK, Simulation

ARCHIVE_SCHEMA_PATH = Path(__file__).resolve().parent / "archive_record.avsc"
MAGIC = b"Obj\x01"
BLOCK_RECORDS = 8192
CODECS = ("null", "deflate")
PARTITIONS = ("day", "hour")
MANIFEST = "manifest.json"
GROUND_TRUTH = "ground_truth.json"


MAX_PENDING_BLOCKS = 64
_COMPRESSORS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="deflate")


def _deflate(data: bytes, level: int) -> bytes:
    packer = zlib.compressobj(level, zlib.DEFLATED, -15)  # Avro's deflate codec: raw deflate, no zlib header
    return packer.compress(data) + packer.flush()


def archive_schema_json() -> str:
    """The schema as stored in file headers: canonical-ish JSON without whitespace."""
    return json.dumps(json.loads(ARCHIVE_SCHEMA_PATH.read_text(encoding="utf-8")), separators=(",", ":"))


class ContainerWriter:
    """An Avro object container file written from pre-encoded record bytes."""

    def __init__(
        self, path: Path, codec: str, sync: bytes, metadata: dict[str, str], level: int = 1, schema: str | None = None
    ) -> None:
        """``schema``: the record schema's JSON for the header (default: ``archive_record.avsc``)."""
        if codec not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}")
        self.path = path
        self.codec = codec
        self.level = level
        self.sync = sync
        self.records = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.digest = hashlib.sha256()
        self.size = 0
        self._pending: deque[tuple[int, Future[bytes]]] = deque()
        self._fh: BinaryIO = path.open("wb")
        meta = {"avro.schema": schema or archive_schema_json(), "avro.codec": codec, **metadata}
        header = bytearray(MAGIC)
        header += varint(len(meta))
        for key, value in meta.items():
            header += avro_string(key) + varint(len(value.encode())) + value.encode()
        header += b"\x00" + sync
        self._write(bytes(header))

    def _write(self, data: bytes) -> None:
        self._fh.write(data)
        self.digest.update(data)
        self.size += len(data)

    def block(self, data: bytes | memoryview, count: int) -> None:
        """Append a block of ``count`` encoded records (compressed on a worker thread if deflate)."""
        if not count:
            return
        self.records += count
        if self.codec == "deflate":
            # zlib releases the GIL: blocks compress on threads while numpy encodes the next chunk
            self._pending.append((count, _COMPRESSORS.submit(_deflate, bytes(data), self.level)))
            while self._pending and (len(self._pending) > MAX_PENDING_BLOCKS or self._pending[0][1].done()):
                done, future = self._pending.popleft()
                self._write_block(done, future.result())
        else:
            self._write_block(count, data)

    def _write_block(self, count: int, data: bytes | memoryview) -> None:
        self._write(varint(count) + varint(len(data)))
        self._write(data)
        self._write(self.sync)

    def encoded(self, batch: EncodedBatch, timestamps: np.ndarray) -> None:
        """Write an encoder batch in blocks of BLOCK_RECORDS."""
        raw = memoryview(batch.buf)
        n = len(batch.start) - 1
        for a in range(0, n, BLOCK_RECORDS):
            b = min(a + BLOCK_RECORDS, n)
            self.block(raw[int(batch.start[a]) : int(batch.start[b])], b - a)
        if n:
            self.first_ts = int(timestamps[0]) if self.first_ts is None else self.first_ts
            self.last_ts = int(timestamps[-1])

    def close(self) -> dict[str, Any]:
        while self._pending:
            done, future = self._pending.popleft()
            self._write_block(done, future.result())
        self._fh.close()
        return {"records": self.records, "bytes": self.size, "sha256": self.digest.hexdigest(),
                "first_timestamp_ms": self.first_ts, "last_timestamp_ms": self.last_ts}  # fmt: skip


@dataclass(frozen=True)
class ArchiveOptions:
    out: Path
    partition_by: str = "day"
    codec: str = "deflate"
    invoices_topic: str = "einvoice.issued"
    registry_topic: str = "business.registry"

    def __post_init__(self) -> None:
        if self.partition_by not in PARTITIONS:
            raise ValueError(f"partition_by must be one of {PARTITIONS}")
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}")


def _sync_marker(seed: int, name: str) -> bytes:
    return hashlib.sha256(f"einvoice-monitor:{seed}:{name}".encode()).digest()[:16]


def _clear_previous(out: Path) -> None:
    """Delete the files a previous run listed in its manifest (never anything else)."""
    manifest = out / MANIFEST
    if not manifest.exists():
        return
    try:
        listed = json.loads(manifest.read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError):
        return
    for entry in listed:
        path = (out / entry["path"]).resolve()
        if path.is_relative_to(out.resolve()) and path.suffix == ".avro":
            path.unlink(missing_ok=True)


def _pieces(sim: Simulation, partition_by: str) -> Iterator[tuple[str, Any]]:
    """(file stem, records) in order: a receive day, or each hour of it that received anything."""
    for day, cols in sim.receive_days():
        if partition_by == "day":
            yield day.isoformat(), cols
            continue
        hours = (cols.arrival + LOCAL_OFFSET_MS) // HOUR_MS % 24
        bounds = np.flatnonzero(np.r_[True, hours[1:] != hours[:-1], True])
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            yield f"{day.isoformat()}T{int(hours[a]):02d}", cols.slice(a, b)


def write_archive(
    sim: Simulation, options: ArchiveOptions, on_progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Write the registry and the invoice feed of ``sim`` as container files; returns the manifest."""
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out)
    seed = sim.config.seed
    files: list[dict[str, Any]] = []

    def open_file(topic: str, stem: str) -> ContainerWriter:
        rel = f"{topic}/{stem}.avro"
        (out / topic).mkdir(parents=True, exist_ok=True)
        meta = {"einvoice.topic": topic, "einvoice.partition_by": options.partition_by}
        return ContainerWriter(out / rel, options.codec, _sync_marker(seed, rel), meta)

    def close(writer: ContainerWriter, topic: str) -> None:
        files.append({"path": writer.path.relative_to(out).as_posix(), "topic": topic, **writer.close()})

    writer = open_file(options.registry_topic, "registry")
    stamp = sim.registry_timestamp_ms
    records = [
        encode_archive_record(value["seller_id"].encode(), sim.registry_codec.encode(value), stamp)
        for value in sim.registrations()
    ]
    for a in range(0, len(records), BLOCK_RECORDS):
        writer.block(b"".join(records[a : a + BLOCK_RECORDS]), len(records[a : a + BLOCK_RECORDS]))
    writer.first_ts = writer.last_ts = stamp if records else None
    close(writer, options.registry_topic)

    for stem, cols in _pieces(sim, options.partition_by):
        writer = open_file(options.invoices_topic, stem)
        for a in range(0, len(cols), CHUNK):
            chunk = cols.slice(a, a + CHUNK)
            writer.encoded(sim.encode(chunk), chunk.arrival)
            if on_progress:
                on_progress(len(chunk))
        close(writer, options.invoices_topic)

    manifest = {
        "format": "einvoice-monitor archive", "version": 1, "record_schema": ARCHIVE_SCHEMA_PATH.name,
        "codec": options.codec, "partition_by": options.partition_by, "time_zone": TIME_ZONE,
        "partition_time": "record timestamp (receive time), local day/hour",
        "topics": {"invoices": options.invoices_topic, "registry": options.registry_topic},
        "records": sum(f["records"] for f in files), "files": files,
    }  # fmt: skip
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_ground_truth(sim, out / GROUND_TRUTH)
    return manifest


def write_ground_truth(sim: Simulation, path: Path) -> dict[str, Any]:
    truth = sim.ground_truth()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(truth, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return truth


def read_archive(path: Path) -> Iterator[dict[str, Any]]:
    """The records of one container file (fastavro; for tests and replay tools)."""
    import fastavro

    with path.open("rb") as fh:
        yield from fastavro.reader(fh)

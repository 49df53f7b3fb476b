"""Archive topic ranges to Avro container files with a manifest, and verify archives against theirs.

The format is the simulator's (``simulator/archive_record.avsc``: key and value bytes as on the
topic, timestamp, headers; files listed in ``manifest.json`` with a sha256 each) plus two fields,
``partition`` and ``offset``, with defaults: a reader with :data:`TOPIC_RECORD_SCHEMA` reads both
kinds, so ``replay publish`` backfills from either. Files hold one topic-partition's contiguous
offset range (``<topic>/p<partition>/<first>-<last>.avro``), at most ``file_records`` records each.

Resumable: the plan (the offset range of every partition, fixed when the archive starts) and each
finished file go to ``archive.state.json``; an interrupted run deletes its unfinished files and
goes on from the last finished one. Sync markers derive from the file's place, so the same range
gives byte-identical files however often it was interrupted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import fastavro
from aiokafka import AIOKafkaConsumer, TopicPartition

from base.localtime import TIME_ZONE
from replay.audit import who
from replay.ranges import Offsets
from replay.refused import Refused
from simulator.archive import ARCHIVE_SCHEMA_PATH, BLOCK_RECORDS, CODECS, MANIFEST, ContainerWriter
from simulator.encoding import encode_archive_record, varint

STATE = "archive.state.json"
FORMAT = "einvoice-monitor archive"
PARTIAL = ".partial"


def _topic_record_schema() -> dict[str, Any]:
    schema = json.loads(ARCHIVE_SCHEMA_PATH.read_text(encoding="utf-8"))
    schema["fields"] += [
        {"name": "partition", "type": "int", "default": -1, "doc": "Source partition; -1 when not from a topic."},
        {"name": "offset", "type": "long", "default": -1, "doc": "Source offset; -1 when not from a topic."},
    ]
    return schema


TOPIC_RECORD_SCHEMA = _topic_record_schema()
TOPIC_RECORD_JSON = json.dumps(TOPIC_RECORD_SCHEMA, separators=(",", ":"))
PARSED_SCHEMA = fastavro.parse_schema(TOPIC_RECORD_SCHEMA)

Progress = Callable[[int], None]


@dataclass(frozen=True)
class PartitionRange:
    """``[start, end)`` of one partition."""

    topic: str
    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


@dataclass(frozen=True)
class ArchivePlan:
    ranges: tuple[PartitionRange, ...]
    selection: dict[str, Any] = field(default_factory=dict)
    partitions: dict[str, int] = field(default_factory=dict)
    codec: str = "deflate"
    file_records: int = 1_000_000

    @property
    def records(self) -> int:
        return sum(r.size for r in self.ranges)

    def as_json(self) -> dict[str, Any]:
        return {
            "ranges": [asdict(r) for r in self.ranges],
            "selection": self.selection,
            "partitions": self.partitions,
            "codec": self.codec,
            "file_records": self.file_records,
        }


def plan_archive(
    bootstrap: str,
    topics: list[str],
    partitions: list[int] | None,
    *,
    from_ms: int | None = None,
    to_ms: int | None = None,
    from_offsets: dict[int, int] | None = None,
    to_offsets: dict[int, int] | None = None,
    codec: str = "deflate",
    file_records: int = 1_000_000,
) -> ArchivePlan:
    """The offset range of every chosen partition, from times or offsets (default: the whole log now)."""
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {', '.join(CODECS)}")
    if file_records < 1:
        raise ValueError("--file-records must be at least 1")
    ranges = []
    counts = {}
    with Offsets(bootstrap) as offsets:
        for topic in topics:
            counts[topic] = len(offsets.partitions(topic))
            chosen = offsets.partitions(topic, partitions)
            bounds = offsets.bounds(topic, chosen)
            starts = (
                offsets.at_time(topic, chosen, from_ms) if from_ms is not None else {p: bounds[p].start for p in chosen}
            )
            ends = offsets.at_time(topic, chosen, to_ms) if to_ms is not None else {p: bounds[p].end for p in chosen}
            for p in chosen:
                start = max(bounds[p].start, (from_offsets or {}).get(p, starts[p]))
                end = min(bounds[p].end, (to_offsets or {}).get(p, ends[p]))
                ranges.append(PartitionRange(topic, p, start, max(start, end)))
    selection = {"from": from_ms, "to": to_ms, "from_offsets": from_offsets or {}, "to_offsets": to_offsets or {}}
    return ArchivePlan(tuple(ranges), selection, counts, codec, file_records)


def encode_topic_record(
    key: bytes | None, value: bytes | None, timestamp_ms: int, headers: Any, partition: int, offset: int
) -> bytes:
    return encode_archive_record(key, value, timestamp_ms, headers) + varint(partition) + varint(offset)


class _FileWriter:
    """One container file of one partition, written under a temporary name until it is complete."""

    def __init__(self, out: Path, topic: str, partition: int, first_offset: int, codec: str) -> None:
        self.out = out
        self.topic = topic
        self.partition = partition
        self.first_offset = first_offset
        self.last_offset = first_offset
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.buffer: list[bytes] = []
        folder = out / topic / f"p{partition}"
        folder.mkdir(parents=True, exist_ok=True)
        self.partial = folder / f"{first_offset:012d}{PARTIAL}"
        sync = hashlib.sha256(f"einvoice-monitor:archive:{topic}/{partition}/{first_offset}".encode()).digest()[:16]
        meta = {"einvoice.topic": topic, "einvoice.partition": str(partition), "einvoice.partition_by": "offset"}
        self.writer = ContainerWriter(self.partial, codec, sync, meta, schema=TOPIC_RECORD_JSON)
        self.records = 0

    def add(self, record: Any) -> None:
        ts = record.timestamp if record.timestamp is not None else -1
        self.buffer.append(
            encode_topic_record(record.key, record.value, ts, record.headers, self.partition, record.offset)
        )
        self.records += 1
        self.last_offset = record.offset
        self.first_ts = ts if self.first_ts is None else self.first_ts
        self.last_ts = ts
        if len(self.buffer) >= BLOCK_RECORDS:
            self._block()

    def _block(self) -> None:
        if self.buffer:
            self.writer.block(b"".join(self.buffer), len(self.buffer))
            self.buffer = []

    def close(self) -> dict[str, Any]:
        self._block()
        summary = self.writer.close()
        final = self.partial.with_name(f"{self.first_offset:012d}-{self.last_offset:012d}.avro")
        os.replace(self.partial, final)
        return {
            "path": final.relative_to(self.out).as_posix(),
            "topic": self.topic,
            "partition": self.partition,
            "first_offset": self.first_offset,
            "last_offset": self.last_offset,
            "records": summary["records"],
            "bytes": summary["bytes"],
            "sha256": summary["sha256"],
            "first_timestamp_ms": self.first_ts,
            "last_timestamp_ms": self.last_ts,
        }

    def discard(self) -> None:
        self.writer.close()
        self.partial.unlink(missing_ok=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.exists():
        raise ValueError(f"{directory} holds no {MANIFEST}: not an archive (or an unfinished one: run archive again)")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not an einvoice-monitor archive manifest")
    return manifest


def write_archive(
    bootstrap: str, plan: ArchivePlan, out: Path, on_progress: Progress | None = None
) -> tuple[dict[str, Any], int]:
    """Archive (or finish archiving) ``plan`` into ``out``; returns the manifest and the records written now."""
    out.mkdir(parents=True, exist_ok=True)
    if (out / MANIFEST).exists():
        raise Refused(f"{out} already holds a finished archive; choose another --out")
    state_path = out / STATE
    if state_path.exists():
        state = json.loads(state_path.read_text(encoding="utf-8"))
        if state["plan"] != json.loads(json.dumps(plan.as_json())):  # as stored: JSON keys are strings
            raise Refused(
                f"{out} holds an unfinished archive of another range ({STATE}); finish it with the same "
                "options, or choose another --out"
            )
    else:
        user, host = who()
        state = {
            "plan": plan.as_json(),
            "files": [],
            "started_at": dt.datetime.now(dt.UTC).isoformat(),
            "created_by": f"{user}@{host}",
        }
        _write_json(state_path, state)
    for stale in out.glob(f"*/p*/*{PARTIAL}"):
        stale.unlink()
    resume_from = {}
    for entry in state["files"]:
        key = (entry["topic"], entry["partition"])
        resume_from[key] = max(resume_from.get(key, -1), entry["last_offset"] + 1)
    todo = [
        PartitionRange(r.topic, r.partition, max(r.start, resume_from.get((r.topic, r.partition), r.start)), r.end)
        for r in plan.ranges
    ]
    written = asyncio.run(_copy(bootstrap, [r for r in todo if r.size], plan, out, state, on_progress))
    manifest = {
        "format": FORMAT,
        "version": 2,
        "kind": "topic",
        "record_schema": TOPIC_RECORD_SCHEMA["name"] + " (simulator/archive_record.avsc + partition, offset)",
        "codec": plan.codec,
        "partition_by": "offset",
        "time_zone": TIME_ZONE,
        "created_at": state["started_at"],
        "created_by": state["created_by"],
        "finished_at": dt.datetime.now(dt.UTC).isoformat(),
        "selection": plan.selection,
        "ranges": [asdict(r) for r in plan.ranges],
        "partitions": plan.partitions,
        "records": sum(f["records"] for f in state["files"]),
        "files": sorted(
            state["files"], key=lambda f: (list(plan.partitions).index(f["topic"]), f["partition"], f["first_offset"])
        ),
    }
    _write_json(out / MANIFEST, manifest)
    state_path.unlink()
    return manifest, written


async def _copy(
    bootstrap: str,
    ranges: list[PartitionRange],
    plan: ArchivePlan,
    out: Path,
    state: dict[str, Any],
    on_progress: Progress | None,
) -> int:
    if not ranges:
        return 0
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    open_files: dict[TopicPartition, _FileWriter] = {}
    written = 0
    try:
        ends = {TopicPartition(r.topic, r.partition): r.end for r in ranges}
        consumer.assign(list(ends))
        for r in ranges:
            consumer.seek(TopicPartition(r.topic, r.partition), r.start)
        remaining = set(ends)
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=20_000)
            for tp, records in batches.items():
                count = 0
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    writer = open_files.get(tp)
                    if writer is None:
                        writer = open_files[tp] = _FileWriter(out, tp.topic, tp.partition, record.offset, plan.codec)
                    writer.add(record)
                    count += 1
                    if writer.records >= plan.file_records:
                        _finish(open_files.pop(tp), state, out)
                written += count
                if on_progress and count:
                    on_progress(count)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
                    if tp in open_files:
                        _finish(open_files.pop(tp), state, out)
        return written
    finally:
        for writer in open_files.values():
            writer.discard()
        await consumer.stop()


def _finish(writer: _FileWriter, state: dict[str, Any], out: Path) -> None:
    state["files"].append(writer.close())
    _write_json(out / STATE, state)


@dataclass
class VerifyReport:
    files: int = 0
    records: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_archive(directory: Path, on_progress: Progress | None = None) -> VerifyReport:
    """Recompute every file's sha256 and read every record; compare with the manifest."""
    manifest = read_manifest(directory)
    report = VerifyReport()
    listed = set()
    for entry in manifest["files"]:
        path = directory / entry["path"]
        listed.add(path.resolve())
        report.files += 1
        if not path.exists():
            report.problems.append(f"{entry['path']}: missing")
            continue
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != entry["sha256"]:
            report.problems.append(
                f"{entry['path']}: sha256 {digest.hexdigest()[:12]}… differs from the manifest's "
                f"{entry['sha256'][:12]}…"
            )
        try:
            count = _check_records(path, entry, on_progress)
        except Exception as exc:  # fastavro raises many kinds on damaged files
            report.problems.append(f"{entry['path']}: unreadable ({type(exc).__name__}: {exc})")
            continue
        if isinstance(count, str):
            report.problems.append(f"{entry['path']}: {count}")
            continue
        report.records += count
        if count != entry["records"]:
            report.problems.append(f"{entry['path']}: {count} records, the manifest says {entry['records']}")
    for path in sorted(directory.rglob("*.avro")):
        if path.resolve() not in listed:
            report.problems.append(f"{path.relative_to(directory).as_posix()}: not in the manifest")
    if report.records != manifest.get("records", report.records) and not report.problems:
        report.problems.append(f"{report.records} records in the files, the manifest's total is {manifest['records']}")
    return report


def _check_records(path: Path, entry: dict[str, Any], on_progress: Progress | None) -> int | str:
    """The record count, or what is wrong with the offsets (topic archives)."""
    count = 0
    previous = None
    for record in read_records(path):
        if "first_offset" in entry:
            offset = record["offset"]
            if record["partition"] != entry["partition"]:
                return f"a record of partition {record['partition']} in a file of partition {entry['partition']}"
            if previous is not None and offset <= previous:
                return f"offset {offset} after {previous}: not in order"
            if not entry["first_offset"] <= offset <= entry["last_offset"]:
                return f"offset {offset} outside the manifest's {entry['first_offset']}-{entry['last_offset']}"
            previous = offset
        count += 1
        if on_progress and count % 10_000 == 0:
            on_progress(10_000)
    if on_progress:
        on_progress(count % 10_000)
    return count


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a container file, simulator's or topic archive's, as topic records.

    Schema resolution halves fastavro's speed, so it is used only for files without partition and offset.
    """
    with path.open("rb") as fh:
        records = fastavro.reader(fh)
        fields = {f["name"] for f in records.writer_schema["fields"]}  # type: ignore[index]
        if {"partition", "offset"} <= fields:
            yield from records
            return
    with path.open("rb") as fh:
        yield from fastavro.reader(fh, reader_schema=PARSED_SCHEMA)

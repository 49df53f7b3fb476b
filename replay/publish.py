"""Publish an archive back into topics: keys, values, timestamps and headers kept; paced; resumable.

Backfill after retention dropped the history, recovery of a deleted topic, or a feed from the
simulator's files. Records keep their partition when the target topic has as many partitions as
the source had (else the key decides, as the producers' default partitioner does), and each
partition receives them in archive order.

Resuming without duplicates: after each flush (acks=all, idempotent producer) a state file under
the data directory records the cursor (file, record) and the end offset of every target partition.
After an interruption, even a SIGKILL, the records sent after the last checkpoint may or may not
have landed; so before going on, the records written to each target partition since its recorded
end are read back, and every archived record found there (same key, value and timestamp, in
order, whatever else was written in between) is not sent again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kafka_io.offsets import end_offsets, fetch_range
from kafka_io.publish import Clock, Pacing, Publisher, paced, partition_for
from replay.archive import read_manifest, read_records
from replay.ranges import Offsets
from replay.refused import Refused

CHUNK = 10_000
CHECKPOINT_EVERY_S = 2.0
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
Progress = Callable[[int], None]
Landed = tuple[bytes | None, bytes | None, int]


@dataclass
class PublishResult:
    total: int
    sent: int = 0
    already_there: int = 0
    resumed: bool = False


def timestamp_ms(value: Any) -> int:
    """fastavro hands timestamp-millis back as an aware datetime; exact integer milliseconds."""
    if isinstance(value, dt.datetime):
        return (value - EPOCH) // dt.timedelta(milliseconds=1)
    return int(value)


def state_file(state_dir: Path, archive: Path, bootstrap: str, topic_map: dict[str, str]) -> Path:
    """One state per (archive, cluster, topic mapping): publishing elsewhere is another publish."""
    manifest = hashlib.sha256((archive / "manifest.json").read_bytes()).hexdigest()
    key = json.dumps([str(archive.resolve()), manifest, bootstrap, sorted(topic_map.items())])
    return state_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def _save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class _Router:
    """Target topic and partition of each archived record."""

    def __init__(self, publisher: Publisher, manifest: dict[str, Any], topic_map: dict[str, str]) -> None:
        self.topic_map = topic_map
        self.source_counts: dict[str, int] = manifest.get("partitions", {})
        self.counts: dict[str, int] = {}
        for entry in manifest["files"]:
            target = self.target(entry["topic"])
            if target not in self.counts:
                try:
                    self.counts[target] = publisher.partitions(target)
                except RuntimeError as exc:
                    raise ValueError(str(exc)) from None

    def target(self, source_topic: str) -> str:
        return self.topic_map.get(source_topic, source_topic)

    def partition(self, source_topic: str, record: dict[str, Any], cache: dict[bytes, int]) -> int:
        n = self.counts[self.target(source_topic)]
        if record["partition"] >= 0 and self.source_counts.get(source_topic) == n:
            return int(record["partition"])
        key = record["key"]
        if key is None:
            return max(0, int(record["partition"])) % n
        found = cache.get(key)
        if found is None:
            found = cache[key] = partition_for(key, n)
        return found


def _chunks(path: Path, skip: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """(index of the chunk's first record, records) of a file, from record ``skip`` on."""
    chunk: list[dict[str, Any]] = []
    first = skip
    for i, record in enumerate(read_records(path)):
        if i < skip:
            continue
        chunk.append(record)
        if len(chunk) == CHUNK:
            yield first, chunk
            first, chunk = i + 1, []
    if chunk:
        yield first, chunk


def _already_there(bootstrap: str, archive: Path, manifest: dict[str, Any], router: _Router) -> str | None:
    """A sample archived record still on its own topic at its own offset: publishing would duplicate it."""
    seen = set()
    for entry in manifest["files"]:
        key = (entry["topic"], entry.get("partition"))
        if "first_offset" not in entry or key in seen or router.target(entry["topic"]) != entry["topic"]:
            continue
        seen.add(key)
        with Offsets(bootstrap) as offsets:
            bounds = offsets.bounds(entry["topic"], [entry["partition"]])[entry["partition"]]
        if not bounds.start <= entry["first_offset"] < bounds.end:
            continue
        found = asyncio.run(
            fetch_range(bootstrap, entry["topic"], entry["partition"], entry["first_offset"], entry["first_offset"] + 1)
        )
        if found:
            archived = next(read_records(archive / entry["path"]))
            if (found[0].key, found[0].value, found[0].timestamp_ms) == (
                archived["key"],
                archived["value"],
                timestamp_ms(archived["timestamp"]),
            ):
                return f"{entry['topic']}[{entry['partition']}] offset {entry['first_offset']}"
    return None


def _landed_since(bootstrap: str, ends: dict[str, dict[str, int]]) -> dict[tuple[str, int], deque[Landed]]:
    """Records written to each target partition since the last checkpoint (ours, maybe others')."""
    landed: dict[tuple[str, int], deque[Landed]] = {}
    for topic, by_partition in ends.items():
        partitions = [int(p) for p in by_partition]
        now = end_offsets(bootstrap, topic, partitions)
        for p in partitions:
            start = by_partition[str(p)]
            if now[p] > start:
                found = asyncio.run(fetch_range(bootstrap, topic, p, start, now[p]))
                landed[(topic, p)] = deque((r.key, r.value, r.timestamp_ms) for r in found)
    return landed


def _ends(bootstrap: str, router: _Router) -> dict[str, dict[str, int]]:
    return {t: {str(p): o for p, o in end_offsets(bootstrap, t, range(n)).items()} for t, n in router.counts.items()}


def publish_archive(
    bootstrap: str,
    archive: Path,
    state_dir: Path,
    *,
    topic_map: dict[str, str] | None = None,
    rate: float | None = None,
    again: bool = False,
    allow_duplicates: bool = False,
    on_progress: Progress | None = None,
) -> PublishResult:
    """Publish (or finish publishing) ``archive``; see the module docstring for resuming."""
    topic_map = topic_map or {}
    manifest = read_manifest(archive)
    path = state_file(state_dir, archive, bootstrap, topic_map)
    state: dict[str, Any] | None = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    if state and state.get("done") and not again:
        raise Refused(
            f"this archive was published to these topics already (finished {state['finished_at']}); publishing "
            "it again duplicates every record: pass --again only if that is what you want"
        )
    if state and state.get("done"):
        state = None
    files = manifest["files"]
    result = PublishResult(total=int(manifest["records"]), resumed=state is not None)
    publisher = Publisher(bootstrap)
    with publisher.interruptible():  # Ctrl-C between sends, never inside aiokafka's loop
        try:
            router = _Router(publisher, manifest, topic_map)
            landed: dict[tuple[str, int], deque[Landed]] = {}
            if state is None:
                if not allow_duplicates:
                    clash = _already_there(bootstrap, archive, manifest, router)
                    if clash:
                        raise Refused(
                            f"the topic still holds the archived records ({clash} is the archived record): publishing "
                            "would write them twice and the worker would count them twice. Publish into an empty or "
                            "recreated topic, or pass --allow-duplicates"
                        )
                state = {
                    "archive": str(archive.resolve()),
                    "topic_map": topic_map,
                    "cursor": [0, 0],
                    "ends": _ends(bootstrap, router),
                    "started_at": dt.datetime.now(dt.UTC).isoformat(),
                }
                _save(path, state)
            else:
                landed = _landed_since(bootstrap, state["ends"])
            cursor_file, cursor_record = state["cursor"]
            done_before = sum(f["records"] for f in files[:cursor_file]) + cursor_record
            if on_progress and done_before:
                on_progress(done_before)
            clock = Clock(Pacing(rate=rate))
            cache: dict[bytes, int] = {}
            last_checkpoint = time.monotonic()
            for index in range(cursor_file, len(files)):
                entry = files[index]
                topic = router.target(entry["topic"])
                skip = cursor_record if index == cursor_file else 0
                for first, records in _chunks(archive / entry["path"], skip):
                    parts = np.array([router.partition(entry["topic"], r, cache) for r in records], dtype=np.int64)
                    keep = [i for i, r in enumerate(records) if not _landed(landed.get((topic, int(parts[i]))), r)]
                    if len(keep) < len(records):
                        result.already_there += len(records) - len(keep)
                        if on_progress:
                            on_progress(len(records) - len(keep))
                    _send(publisher, clock, topic, records, parts, keep, on_progress)
                    result.sent += len(keep)
                    state["cursor"] = [index, first + len(records)]
                    if time.monotonic() - last_checkpoint >= CHECKPOINT_EVERY_S:
                        _checkpoint(publisher, bootstrap, router, state, path)
                        last_checkpoint = time.monotonic()
                state["cursor"] = [index + 1, 0]
            publisher.flush()
            state.update(done=True, finished_at=dt.datetime.now(dt.UTC).isoformat(), ends=_ends(bootstrap, router))
            _save(path, state)
        except BaseException:
            publisher.abort()  # bounded: whatever happened, never wait on the producer forever
            raise
    publisher.close()
    return result


def _landed(queue: deque[Landed] | None, record: dict[str, Any]) -> bool:
    """Whether this archived record is among those that landed after the checkpoint.

    Drops landed records up to and including it. Ours land in order, so once one is not found
    (the queue is then empty) none of the later ones of that partition landed either.
    """
    if not queue:
        return False
    wanted = (record["key"], record["value"], timestamp_ms(record["timestamp"]))
    while queue:
        if queue.popleft() == wanted:
            return True
    return False


def _send(
    publisher: Publisher,
    clock: Clock,
    topic: str,
    records: list[dict[str, Any]],
    parts: np.ndarray,
    keep: list[int],
    on_progress: Progress | None,
) -> None:
    if not keep:
        return
    chosen = [records[i] for i in keep]
    keys = [r["key"] for r in chosen]
    values = [r["value"] for r in chosen]
    stamps = [timestamp_ms(r["timestamp"]) for r in chosen]
    headers = [[(h["key"], h["value"]) for h in r["headers"]] for r in chosen]
    targets = parts[keep]

    def send(a: int, b: int) -> None:
        publisher.send(topic, targets[a:b], keys[a:b], values[a:b], stamps[a:b], headers[a:b])
        if on_progress:
            on_progress(b - a)

    paced(clock, np.array(stamps, dtype=np.int64), send)


def _checkpoint(publisher: Publisher, bootstrap: str, router: _Router, state: dict[str, Any], path: Path) -> None:
    """Everything before the cursor is acknowledged; remember where each target partition ends now."""
    publisher.flush()
    state["ends"] = _ends(bootstrap, router)
    _save(path, state)

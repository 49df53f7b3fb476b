"""Publishing raw records to Kafka, as fast as possible, at a rate, or at a speed of their own timestamps.

The producer is aiokafka's, fed whole record batches per partition (``create_batch`` /
``send_batch``): per-record ``send`` tops out near 20,000 records/s with kafka-python and 45,000
with aiokafka; batches reach ~150,000 (bench/simulate.py). The partition of a key is the Java
client's (murmur2 of the key bytes), which kafka-python and aiokafka use by default too, so the
registry and the invoices of one seller land in the same partition number (the join is local).
The simulator publishes its feeds through it, and replay its archives.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer
from kafka.partitioner.default import murmur2

from base.kafka import DURABLE_PRODUCER

MAX_BATCH_BYTES = 512 * 1024  # below the broker's default message.max.bytes (1 MiB)


def partition_for(key: bytes, partitions: int) -> int:
    """The default partitioner of the Java client, kafka-python and aiokafka."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class Pacing:
    """None and None: as fast as possible; ``rate``: records per second; ``speed``: simulated time × speed."""

    rate: float | None = None
    speed: float | None = None

    def __post_init__(self) -> None:
        if self.rate is not None and self.speed is not None:
            raise ValueError("choose a target rate or a replay speed, not both")
        if (self.rate is not None and self.rate <= 0) or (self.speed is not None and self.speed <= 0):
            raise ValueError("rate and speed must be positive")


class Clock:
    """When each record may leave, in seconds since the first one."""

    def __init__(self, pacing: Pacing) -> None:
        self.pacing = pacing
        self.started: float | None = None
        self.first_ts: int | None = None
        self.sent = 0

    def due(self, timestamps: np.ndarray) -> np.ndarray | None:
        if self.pacing.rate is not None:
            return (self.sent + np.arange(len(timestamps))) / self.pacing.rate
        if self.pacing.speed is not None:
            if self.first_ts is None and len(timestamps):
                self.first_ts = int(timestamps[0])
            return (timestamps - (self.first_ts or 0)) / 1000.0 / self.pacing.speed
        return None


class Publisher:
    """One aiokafka producer on a private event loop, fed synchronously (the generator is sync)."""

    def __init__(self, bootstrap: str, linger_ms: int = 20) -> None:
        self.loop = asyncio.new_event_loop()
        self._futures: list[asyncio.Future[Any]] = []
        self._interrupted = False

        async def start() -> AIOKafkaProducer:
            producer = AIOKafkaProducer(
                bootstrap_servers=bootstrap, **DURABLE_PRODUCER, linger_ms=linger_ms,
                max_batch_size=MAX_BATCH_BYTES, compression_type="lz4", request_timeout_ms=60_000,
            )  # fmt: skip
            await producer.start()
            return producer

        try:
            self.producer = self.loop.run_until_complete(start())
        except BaseException:
            self.loop.close()
            raise

    def partitions(self, topic: str) -> int:
        found = self.loop.run_until_complete(self.producer.partitions_for(topic))
        if not found:
            raise RuntimeError(f"topic {topic} does not exist: run `einvoice-monitor topics create`")
        return len(found)

    def send(
        self, topic: str, partitions: np.ndarray, keys: Sequence[bytes | None], values: Sequence[bytes | None],
        timestamps: Sequence[int], headers: Sequence[Sequence[tuple[str, bytes]]] | None = None,
    ) -> None:  # fmt: skip
        """Records in order; each partition's records keep their relative order."""
        self._run(self._send(topic, partitions, keys, values, timestamps, headers))

    def _run(self, coroutine: Any) -> Any:
        result = self.loop.run_until_complete(coroutine)
        if self._interrupted:
            raise KeyboardInterrupt
        return result

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Ctrl-C raises KeyboardInterrupt between event-loop runs, never inside one.

        Raised inside the loop it kills aiokafka's sender task: pending sends then never complete
        and the loop cannot run again, so the producer could not be stopped cleanly.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_sigint(signum: int, frame: Any) -> None:
            if self.loop.is_running():
                self._interrupted = True
            else:
                raise KeyboardInterrupt

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    async def _send(
        self, topic: str, partitions: np.ndarray, keys: Sequence[bytes | None], values: Sequence[bytes | None],
        timestamps: Sequence[int], headers: Sequence[Sequence[tuple[str, bytes]]] | None = None,
    ) -> None:  # fmt: skip
        producer = self.producer
        for partition in np.unique(partitions).tolist():
            batch = producer.create_batch()
            for i in np.flatnonzero(partitions == partition).tolist():
                extra = None if headers is None else list(headers[i])
                if batch.append(key=keys[i], value=values[i], timestamp=timestamps[i], headers=extra) is None:
                    batch.close()
                    self._futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=keys[i], value=values[i], timestamp=timestamps[i], headers=extra)
            batch.close()
            self._futures.append(await producer.send_batch(batch, topic, partition=partition))
        if len(self._futures) > 256:
            await self._settle()

    async def _settle(self) -> None:
        futures, self._futures = self._futures, []
        await asyncio.gather(*futures)

    def flush(self) -> None:
        self._run(self._settle())

    def close(self) -> None:
        try:
            self.flush()
            self.loop.run_until_complete(self.producer.stop())
        finally:
            self.loop.close()

    def abort(self, timeout_s: float = 10.0) -> None:
        """Stop after an error or Ctrl-C: in-flight batches may land or not, but this never hangs.

        A KeyboardInterrupt raised inside the loop can kill aiokafka's sender task, after which the
        pending futures never complete (seen as a publish that did not exit after Ctrl-C).
        """

        async def stop() -> None:
            pending, self._futures = self._futures, []
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), timeout_s)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.producer.stop(), timeout_s)

        try:
            self._interrupted = False
            with contextlib.suppress(RuntimeError):  # a loop broken by an interrupt elsewhere
                self.loop.run_until_complete(stop())
        finally:
            self.loop.close()


def paced(
    clock: Clock, timestamps: np.ndarray, send: Callable[[int, int], None]
) -> None:  # sends [a, b) slices when they are due
    due = clock.due(timestamps)
    n = len(timestamps)
    if due is None:
        send(0, n)
        clock.sent += n
        return
    if clock.started is None:
        clock.started = time.monotonic()
    a = 0
    while a < n:
        now = time.monotonic() - clock.started
        b = max(a + 1, int(np.searchsorted(due, now, side="right")))
        if due[a] > now:
            time.sleep(min(float(due[a]) - now, 0.5))
            continue
        send(a, b)
        clock.sent += b - a
        a = b

"""A Kafka node's outage said once, not thousands of times: the reconnect noise of the clients, summarised.

While a broker is down, aiokafka logs every reconnect attempt and every fetch that could not be sent
to it ("Unable connect to node with id 2", "Failed fetch messages from 2: NodeNotReadyError", …):
tens to thousands of lines a second, for as long as the outage lasts, burying what else happens.
:class:`OutageLog` is a logging filter on the worker's handler. The first client error naming a node
becomes one warning, ``kafka node unreachable``, carrying that error; the node's further errors are
counted, not printed, with a ``kafka node still unreachable`` line every ``summary_every_s``; once no
error has named the node for ``quiet_s``, one ``kafka node errors stopped`` line gives the outage's
length and how many lines it stood for. A client error naming no node (kafka-python's "Connection
failed: …") is said once and its repeats are counted the same way, until it stops repeating. Lines of
other loggers, and client lines below WARNING, are never filtered.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

CLIENT_LOGGERS = ("aiokafka", "kafka")
# how the clients name the node an error is about (aiokafka and kafka-python, as of aiokafka 0.14 / kafka-python 3.0)
_NODE = re.compile(
    r"node with id (\d+)|\(node id (\d+)\)|fetch \w+ from (\d+):|node_id=(\d+)\b|\(node (\d+)\)|to node (\d+)\b"
)


_REPEAT = "repeat:"  # the key of a client error that names no node (kafka-python's "Connection failed: …")


@dataclass
class _Outage:
    started: float
    last_error: float
    last_summary: float
    suppressed: int = 0


class OutageLog(logging.Filter):
    """Collapses the client errors about each unreachable Kafka node into a few lines (see the module)."""

    def __init__(
        self, summary_every_s: float = 60.0, quiet_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.summary_every_s = summary_every_s
        self.quiet_s = quiet_s
        self._clock = clock
        self._outages: dict[str, _Outage] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == __name__:
            return True  # our own lines
        now = self._clock()
        self.tick(now)
        key = self._key(record)
        if key is None:
            return True
        with self._lock:
            outage = self._outages.get(key)
            if outage is None:
                self._outages[key] = _Outage(started=now, last_error=now, last_summary=now)
            else:
                outage.last_error = now
                outage.suppressed += 1
                due = now - outage.last_summary >= self.summary_every_s
                if due:
                    outage.last_summary = now
        if outage is None:
            if key.startswith(_REPEAT):
                return True  # the first of a repeated client error, as it is
            # the first error about a node: said as the outage's start, with the client's own words
            record.client_error = record.getMessage()
            record.msg, record.args = "kafka node unreachable; its further client errors are counted", ()
            record.node = key
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            return True
        if due:
            message = "kafka client error repeating" if key.startswith(_REPEAT) else "kafka node still unreachable"
            extra = {**self._about(key), "seconds": round(now - outage.started, 1), "suppressed": outage.suppressed}
            log.warning(message, extra=extra)
        return False

    @staticmethod
    def _about(key: str) -> dict[str, str]:
        return {"client_error": key[len(_REPEAT) :]} if key.startswith(_REPEAT) else {"node": key}

    def tick(self, now: float | None = None) -> None:
        """Close the outages no error has named for ``quiet_s``; called on every record and by a timer."""
        now = self._clock() if now is None else now
        with self._lock:
            ended = {n: o for n, o in self._outages.items() if now - o.last_error >= self.quiet_s}
            for node in ended:
                del self._outages[node]
        for key, outage in ended.items():
            if key.startswith(_REPEAT) and not outage.suppressed:
                continue  # said once, never repeated: nothing to summarise
            log.warning(
                "kafka client error stopped repeating" if key.startswith(_REPEAT) else "kafka node errors stopped",
                extra={
                    **self._about(key), "seconds": round(outage.last_error - outage.started, 1),
                    "suppressed": outage.suppressed,
                },
            )  # fmt: skip

    @staticmethod
    def _key(record: logging.LogRecord) -> str | None:
        """What a client's warning or error is about: a node's id, else its own text (a repeated error)."""
        if record.levelno < logging.WARNING or not record.name.startswith(CLIENT_LOGGERS):
            return None
        if record.name.split(".", 1)[0] not in CLIENT_LOGGERS:
            return None  # e.g. "kafkaesque": a prefix, not the package
        message = record.getMessage()
        found = _NODE.search(message)
        node = next((group for group in found.groups() if group), None) if found else None
        return node if node is not None else _REPEAT + message


OUTAGES = OutageLog()  # the worker's one instance: its handler filters with it, its timer ticks it


def outage_log() -> OutageLog:
    """The factory ``logging.config.dictConfig`` calls for the filter (always the one instance)."""
    return OUTAGES

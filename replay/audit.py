"""Every replay action, written down: who, when, what range, with what result.

A JSON-lines file under the data directory (``audit/replay.jsonl``) is the log of record: it can
always be written, also while the embedded worker owns chDB. With a ClickHouse server the same
entries go to the ``replay_audit`` table at once (for the boards); in the embedded mode
``replay audit --sync`` and ``replay switch`` copy them when chDB is free. Entries never hold a
secret: URLs lose their credentials before anything is written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from base.redaction import without_url_credentials
from replay.databases import Database
from replay.refused import Refused

log = logging.getLogger(__name__)


def who() -> tuple[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = "unknown"
    return user, socket.gethostname()


class AuditLog:
    """Appends entries to the JSON-lines file; mirrors them to a ClickHouse server when configured."""

    def __init__(self, data_dir: Path, clickhouse_url: str | None = None) -> None:
        self.path = data_dir / "audit" / "replay.jsonl"
        self.clickhouse_url = clickhouse_url

    def record(
        self,
        action: str,
        target: dict[str, Any],
        result: str,
        detail: dict[str, Any] | None = None,
        duration_s: float = 0.0,
    ) -> dict[str, Any]:
        user, host = who()
        entry = without_url_credentials(
            {
                "id": uuid.uuid4().hex,
                "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                "user": user,
                "host": host,
                "action": action,
                "target": target,
                "result": result,
                "detail": detail or {},
                "duration_s": round(duration_s, 3),
            }
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
        if self.clickhouse_url:
            try:
                Database(self.clickhouse_url).run("sync_audit", entries=[entry])
            except Exception as exc:  # the file is the log of record; the table is a convenience
                log.warning("audit entry not copied to ClickHouse: %s", without_url_credentials(str(exc)))
        return entry

    @contextlib.contextmanager
    def action(self, name: str, target: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Record the action when it ends: ``ok`` (or ``detail['result']``), refused, interrupted or failed."""
        detail: dict[str, Any] = {}
        started = time.monotonic()
        try:
            yield detail
        except KeyboardInterrupt:
            self.record(name, target, "interrupted", detail, time.monotonic() - started)
            raise
        except Refused as exc:
            self.record(name, target, "refused", {**detail, "reason": str(exc)}, time.monotonic() - started)
            raise
        except BaseException as exc:
            failure = {**detail, "error": f"{type(exc).__name__}: {exc}"}
            self.record(name, target, "failed", failure, time.monotonic() - started)
            raise
        else:
            self.record(name, target, detail.pop("result", "ok"), detail, time.monotonic() - started)

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

"""Fault injection for chaos testing only: make ClickHouse inserts fail, switched on from outside the worker.

A chaos test cannot reach into a running worker, and chDB cannot be stopped apart from it (it runs
inside the worker's process). So the test writes a file, ``$EINVOICE_DATA_DIR/chaos/clickhouse-unavailable``,
holding a deadline in epoch seconds; while the file exists and the deadline is in the future, every
insert through :class:`~sinks.clickhouse.client.ClickHouseStore` raises :class:`ClickHouseUnavailable`,
as a server that refuses writes would. Removing the file, or the deadline passing, ends the outage.

The convention of every fault point (``streams/freeze.py`` too): a file under ``<data dir>/chaos/`` arms
it, and only a process started with ``EINVOICE_FAULT_POINTS=1`` reads it; in production the switch is off
and costs nothing. Where it is on, the cost is one ``stat`` a second at most, never one per insert.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from base.config import DEFAULT_DATA_DIR, ENVIRONMENT, FAULTS_DIR, fault_points_enabled

FAULT_FILE = Path(FAULTS_DIR) / "clickhouse-unavailable"
CHECK_INTERVAL_S = 1.0


class ClickHouseUnavailable(ConnectionError):
    """Raised in place of an insert while an injected ClickHouse outage lasts."""


def fault_path(data_dir: Path | str) -> Path:
    """Where the switch lives for a deployment's data directory."""
    return Path(data_dir) / FAULT_FILE


def default_data_dir() -> Path:
    """The data directory of this process, read as ``base.config.Settings`` reads it."""
    return Path(os.environ.get(ENVIRONMENT["data_dir"][0]) or DEFAULT_DATA_DIR).expanduser()


class FaultSwitch:
    """Reads the switch file at most once per :data:`CHECK_INTERVAL_S` and remembers its deadline."""

    def __init__(self, path: Path | None) -> None:
        self.path = path  # None: off (a process without EINVOICE_FAULT_POINTS=1)
        self._checked_at = float("-inf")
        self._deadline = 0.0

    @classmethod
    def from_environment(cls) -> FaultSwitch:
        return cls(fault_path(default_data_dir()) if fault_points_enabled() else None)

    def _refresh(self, now: float) -> None:
        self._checked_at = now
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except (FileNotFoundError, NotADirectoryError):
            self._deadline = 0.0
            return
        except OSError:
            return  # unreadable this second: keep what was known
        try:
            self._deadline = float(text)
        except ValueError:
            self._deadline = 0.0

    def check(self) -> None:
        """Raise :class:`ClickHouseUnavailable` while an injected outage lasts."""
        if self.path is None:
            return
        now = time.monotonic()
        if now - self._checked_at >= CHECK_INTERVAL_S:
            self._refresh(now)
        if self._deadline and time.time() < self._deadline:
            raise ClickHouseUnavailable(f"ClickHouse unavailable (chaos fault injected by {self.path})")


def inject_outage(data_dir: Path | str, seconds: float) -> float:
    """Make the deployment's inserts fail for ``seconds`` from now; returns the deadline (epoch seconds)."""
    path = fault_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + seconds
    temporary = path.with_suffix(".tmp")
    temporary.write_text(f"{deadline:.3f}\n", encoding="ascii")
    temporary.replace(path)  # never half-written when the worker reads it
    return deadline


def clear_outage(data_dir: Path | str) -> None:
    """End an injected outage now."""
    fault_path(data_dir).unlink(missing_ok=True)

"""Fault points that freeze the worker at an exact place: the deterministic proof of the store's fence.

A test arms one by writing its name (and how many passes to let by first) to
``<data dir>/chaos/freeze-at`` (the convention of every fault point: sinks/clickhouse/faults.py); the
worker, on reaching that point with ``EINVOICE_FAULT_POINTS=1`` in its environment, removes the file
and stops itself (SIGSTOP, the whole process), as a VM pause or a long GC pause would, until the test
sends SIGCONT. Without the variable the points cost nothing.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from base.config import FAULTS_DIR, fault_points_enabled

log = logging.getLogger(__name__)

BEFORE_INSERT = "before_insert"  # a block prepared and the ownership confirmed, its insert not sent
BEFORE_COMMIT = "before_commit"  # a block inserted, its offsets not committed
POINTS = (BEFORE_INSERT, BEFORE_COMMIT)
ENABLED = fault_points_enabled()


def arm_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / FAULTS_DIR / "freeze-at"


def arm(data_dir: Path | str, point: str, after: int = 0) -> None:
    """Make the worker of ``data_dir`` freeze at ``point`` once it has passed it ``after`` times."""
    if point not in POINTS:
        raise ValueError(f"no fault point {point!r}; one of {', '.join(POINTS)}")
    path = arm_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{point} {after}")


def reached(point: str, data_dir: Path) -> None:
    """Freeze here if this point is armed (the file is removed first: it fires once)."""
    if not ENABLED:
        return
    path = arm_path(data_dir)
    try:
        armed = path.read_text().strip()
    except FileNotFoundError:
        return
    name, _, after = armed.partition(" ")
    if name != point:
        return
    if int(after or 0) > 0:
        path.write_text(f"{point} {int(after) - 1}")
        return
    path.unlink(missing_ok=True)
    log.warning("fault point reached; freezing", extra={"point": point})
    for handler in logging.getLogger().handlers:
        handler.flush()
    # aimed at this thread: it takes the stop itself, before its next statement, and the whole process
    # stops with it; a point may be reached on the ClickHouse thread, and with os.kill that thread ran on
    # until another thread took the stop
    signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
    log.warning("fault point: woken", extra={"point": point})

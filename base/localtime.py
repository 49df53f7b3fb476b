"""Local time, once: the monitor counts days as analysts in Vietnam do, in Asia/Ho_Chi_Minh.

Invoices carry a naive local wall-clock time (Avro ``local-timestamp-millis``); days are counted
on it like an epoch, so a day number is ``local_ms // DAY_MS``. Vietnam has kept UTC+7 without
daylight saving since 1975, so the offset is a constant and UTC is ``local - LOCAL_OFFSET_MS``.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

TIME_ZONE = "Asia/Ho_Chi_Minh"  # the IANA name, as ClickHouse SQL and Grafana take it
LOCAL_TZ = ZoneInfo(TIME_ZONE)
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
LOCAL_OFFSET_MS = 7 * HOUR_MS  # UTC+7

_EPOCH = dt.datetime(1970, 1, 1)
_MS = dt.timedelta(milliseconds=1)


def local_ms(value: dt.datetime) -> int:
    """Milliseconds of a naive local wall-clock time, counted like an epoch (for day arithmetic)."""
    return (value - _EPOCH) // _MS


def local_day(local_wall_ms: int) -> int:
    """Days since 1970-01-01 of a local wall-clock time: the analyst's day."""
    return local_wall_ms // DAY_MS

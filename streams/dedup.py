"""Duplicate invoices from the feed (the same invoice sent twice), remembered for a bounded horizon.

Keys are 64-bit hashes of (seller_id, invoice_code), bucketed by the local issue day so that
whole days fall out of memory as the partition's watermark moves. At Thanh Hóa scale 1.0 (1.9 M
invoices a day, 3-day horizon plus the running day) that is about 8 M keys: in CPython sets
(~90 bytes a key) ~700 MiB, which took the worker past 1 GiB. So a day's keys move, once its set
holds ``FREEZE_AT`` of them, into a sorted numpy int64 array (8 bytes a key, ~65 MiB for 8 M), and
a batch looks its keys up in the arrays at once (:meth:`InvoiceDeduplicator.prefetch`, one
``searchsorted`` per day) before the per-record verdicts. A 64-bit hash makes a false duplicate
among 8 M keys about 2e-6 likely.

The state is a function of what was inserted into ClickHouse (it is reloaded from there when a
partition is assigned), and a key older than the horizon is never looked up, so the verdict for
a record does not depend on when the worker last restarted.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import blake2b

import numpy as np

from base.localtime import DAY_MS

FREEZE_AT = 50_000  # keys in a day's set before they move into its sorted array
_EMPTY = np.empty(0, dtype=np.int64)


def invoice_key(seller_id: str, invoice_code: str) -> int:
    """Signed 64-bit key (fits ClickHouse Int64 and a Python small-ish int)."""
    digest = blake2b(f"{seller_id}\x1f{invoice_code}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _members(frozen: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Mask of ``keys`` present in the sorted array ``frozen``."""
    at = np.searchsorted(frozen, keys)
    at[at == len(frozen)] = 0
    return frozen[at] == keys


class InvoiceDeduplicator:
    """Seen invoice keys of one partition, per local issue day: a set of recent keys and a sorted array."""

    def __init__(self, horizon_ms: int) -> None:
        self.horizon_ms = horizon_ms
        self._recent: dict[int, set[int]] = {}
        self._frozen: dict[int, np.ndarray] = {}
        self._cutoff_day = -(2**62)
        self._hits: dict[int, int] | None = None  # key -> newest frozen day holding it, for the batch at hand

    def cutoff_day(self, watermark_local_ms: int) -> int:
        """The oldest local day still remembered for a given watermark (local wall-clock ms)."""
        return (watermark_local_ms - self.horizon_ms) // DAY_MS

    def advance(self, watermark_local_ms: int) -> None:
        """Forget the days that left the horizon."""
        cutoff = self.cutoff_day(watermark_local_ms)
        if cutoff <= self._cutoff_day:
            return
        self._cutoff_day = cutoff
        for days in (self._recent, self._frozen):
            for day in [d for d in days if d < cutoff]:
                del days[day]

    def prefetch(self, keys: Sequence[int], cutoff_day: int) -> None:
        """Look a batch's keys up in the sorted arrays at once; :meth:`seen_or_add` then asks the result.

        ``cutoff_day`` is the batch's first; it only moves forward within a batch, and
        :meth:`seen_or_add` compares each hit's day with its own cutoff.
        """
        hits: dict[int, int] = {}
        if keys:
            wanted = np.fromiter(keys, dtype=np.int64, count=len(keys))
            for day, frozen in self._frozen.items():
                if day >= cutoff_day and len(frozen):
                    for key in wanted[_members(frozen, wanted)].tolist():
                        if hits.get(key, day) <= day:
                            hits[key] = day
        self._hits = hits

    def seen_or_add(self, key: int, day: int, cutoff_day: int) -> bool:
        """True when the key was seen on a day from ``cutoff_day`` on (a duplicate); else remember it.

        Days before the cutoff are never consulted, evicted yet or not: the verdict depends on
        the watermark only, never on when eviction last ran.
        """
        for bucket_day, bucket in self._recent.items():  # a resend may carry another issue time
            if bucket_day >= cutoff_day and key in bucket:
                return True
        frozen_day = self._hits.get(key) if self._hits is not None else self._frozen_day(key)
        if frozen_day is not None and frozen_day >= cutoff_day:
            return True
        self._recent.setdefault(day, set()).add(key)
        return False

    def _frozen_day(self, key: int) -> int | None:
        probe = np.array([key], dtype=np.int64)
        days = [day for day, frozen in self._frozen.items() if len(frozen) and _members(frozen, probe)[0]]
        return max(days) if days else None

    def compact(self) -> None:
        """After a batch: forget its lookups; move big sets of recent keys into their day's array."""
        self._hits = None
        for day, bucket in self._recent.items():
            if len(bucket) >= FREEZE_AT:
                fresh = np.fromiter(bucket, dtype=np.int64, count=len(bucket))
                self._frozen[day] = np.union1d(self._frozen.get(day, _EMPTY), fresh)
                bucket.clear()

    def load_columns(self, keys: np.ndarray, days: np.ndarray) -> None:
        """Restore (key, day) columns read back from ClickHouse (8 bytes a key on the way; tuples take ~100)."""
        keep = days >= self._cutoff_day
        keys, days = keys[keep].astype(np.int64, copy=False), days[keep]
        for day in np.unique(days).tolist():
            self._frozen[day] = np.union1d(self._frozen.get(day, _EMPTY), keys[days == day])

    def __len__(self) -> int:
        return sum(len(b) for b in self._recent.values()) + sum(len(a) for a in self._frozen.values())

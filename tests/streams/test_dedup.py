"""Dedup verdicts depend only on the watermark, never on when eviction ran."""

from __future__ import annotations

import numpy as np

from base.localtime import DAY_MS
from streams.dedup import InvoiceDeduplicator, invoice_key
from streams.ingest import registration_as_of

HORIZON = 72 * 3_600_000


def test_key_is_stable_and_distinguishes_sellers():
    assert invoice_key("2800000001", "M1-24-AB12C-00000000001") == invoice_key("2800000001", "M1-24-AB12C-00000000001")
    assert invoice_key("2800000001", "M1-24-AB12C-00000000001") != invoice_key("2800000002", "M1-24-AB12C-00000000001")


def test_duplicate_within_horizon_is_seen_even_under_another_day():
    dedup = InvoiceDeduplicator(HORIZON)
    assert dedup.seen_or_add(1, 100, cutoff_day=97) is False
    assert dedup.seen_or_add(1, 100, cutoff_day=97) is True
    assert dedup.seen_or_add(1, 101, cutoff_day=97) is True  # a resend with another issue time


def test_verdict_does_not_depend_on_eviction():
    evicted, kept = InvoiceDeduplicator(HORIZON), InvoiceDeduplicator(HORIZON)
    for dedup in (evicted, kept):
        dedup.seen_or_add(7, 100, cutoff_day=97)
    evicted.advance(104 * DAY_MS)  # cutoff day 101: day 100 leaves memory
    assert len(evicted) == 0 and len(kept) == 1
    assert evicted.seen_or_add(7, 100, cutoff_day=101) == kept.seen_or_add(7, 100, cutoff_day=101) is False


def test_restore_loads_only_the_horizon():
    dedup = InvoiceDeduplicator(HORIZON)
    dedup.advance(104 * DAY_MS)
    dedup.load_columns(np.array([1, 2, 3]), np.array([100, 101, 104]))
    assert len(dedup) == 2


def test_registration_as_of_the_issue_day():
    versions = [{"valid_from": 10, "admin_unit_code": "380"}, {"valid_from": 20, "admin_unit_code": "399"}]
    assert registration_as_of(versions, 5)["admin_unit_code"] == "380"
    assert registration_as_of(versions, 19)["admin_unit_code"] == "380"
    assert registration_as_of(versions, 20)["admin_unit_code"] == "399"


def test_missing_ranges_finds_holes_before_and_inside_a_batch():
    from kafka_io.offsets import missing_ranges

    assert missing_ranges([10, 11, 12], expected=10) == []
    assert missing_ranges([12, 13, 17], expected=10) == [(10, 12), (14, 17)]
    assert missing_ranges([5, 6, 10], expected=8) == [(8, 10)]  # re-delivered old offsets are no hole


def test_frozen_keys_give_the_same_verdicts_as_recent_ones_with_and_without_prefetch():
    from streams.dedup import FREEZE_AT

    dedup = InvoiceDeduplicator(HORIZON)
    keys = list(range(-FREEZE_AT, FREEZE_AT, 2))  # FREEZE_AT keys on day 100: the set moves into the array
    for key in keys:
        assert dedup.seen_or_add(key, 100, cutoff_day=97) is False
    dedup.compact()
    assert len(dedup) == len(keys) and not dedup._recent[100] and len(dedup._frozen[100]) == len(keys)
    assert dedup.seen_or_add(keys[7], 101, cutoff_day=97) is True  # unprefetched path
    dedup.prefetch([keys[8], 1, keys[9]], cutoff_day=97)
    assert dedup.seen_or_add(keys[8], 100, cutoff_day=97) is True
    assert dedup.seen_or_add(1, 100, cutoff_day=97) is False  # odd: never seen
    assert dedup.seen_or_add(1, 100, cutoff_day=97) is True  # now recent
    assert dedup.seen_or_add(keys[9], 100, cutoff_day=101) is False  # its day is past the cutoff: not consulted
    dedup.compact()

    restored = InvoiceDeduplicator(HORIZON)
    restored.advance(104 * DAY_MS)  # cutoff day 101
    restored.load_columns(np.array([5, 6, 7, 5]), np.array([100, 101, 104, 104]))
    assert len(restored) == 3  # key 5 of day 100 is outside the horizon
    assert restored.seen_or_add(7, 104, cutoff_day=101) and restored.seen_or_add(6, 102, cutoff_day=101)
    assert restored.seen_or_add(5, 104, cutoff_day=101) is True

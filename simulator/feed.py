"""What the feed carries, labelled: valid invoices, feed duplicates and malformed records.

The label (``kind``) is the ground truth the tests and the benchmarks count against. Each
malformed kind breaks exactly one rule of the decoder (:mod:`contracts.codec`) or the validator
(:mod:`contracts.validation`), so the dead-letter reason of every malformed record is known.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

from base.localtime import DAY_MS, HOUR_MS, LOCAL_OFFSET_MS
from contracts.codec import AvroCodec

_EPOCH = dt.datetime(1970, 1, 1)

# kind -> the reason the pipeline gives it (DecodeError.reason or Rejection.reason)
MALFORMED_REASON: dict[str, str] = {
    "truncated": "malformed_bytes",
    "bad_magic_byte": "bad_magic_byte",
    "unknown_schema_id": "unknown_schema_id",
    "invalid_seller_id": "invalid_seller_id",
    "invalid_symbol": "invalid_symbol",
    "invalid_invoice_code": "invalid_invoice_code",
    "invalid_amount": "invalid_amount",
    "vat_mismatch": "vat_mismatch",
    "issued_in_future": "issued_in_future",
    "issued_too_old": "issued_too_old",
    "wrong_subject": "wrong_subject",
    "invalid_invoice_form": "invalid_invoice_form",
    "invoice_code_mismatch": "invalid_invoice_code",
    "invalid_vat_rate": "invalid_vat_rate",
    "invalid_register_id": "invalid_register_id",
}
MALFORMED_KINDS: tuple[str, ...] = tuple(MALFORMED_REASON)
# The first ten, the kinds of the original feed (tests/e2e/test_ingest_e2e.py maps exactly these).
CLASSIC_MALFORMED_KINDS: tuple[str, ...] = MALFORMED_KINDS[:10]
# When a malformed record says it was received relative to its issue time
FUTURE_SKEW_MS = 6 * HOUR_MS  # issued_in_future: the register's clock runs six hours ahead
TOO_OLD_DELAY_MS = 5 * DAY_MS  # issued_too_old: received five days after issue
REGISTRY_SCHEMA_ID = 2  # business.registry-value: another subject's id for wrong_subject


class FeedRecord(NamedTuple):
    """One record as published, with what it is; ``issued_at`` etc. describe the clean invoice.

    A named tuple, not a dataclass: small runs build hundreds of thousands of them.
    """

    key: bytes
    value: bytes
    timestamp_ms: int
    kind: str  # "valid", "duplicate" or "malformed:<kind>"
    seller_id: str
    invoice_code: str
    issued_at: dt.datetime
    amount_vnd: int
    vat_amount_vnd: int


def local_datetime(local_ms: int) -> dt.datetime:
    """A naive local wall-clock datetime from milliseconds counted like an epoch."""
    return _EPOCH + dt.timedelta(milliseconds=local_ms)


def corrupt(
    kind: str, value: dict[str, Any], codec: AvroCodec, writer_version: int, received_ms: int, noise: int
) -> bytes:
    """The bytes of ``value`` broken in one way; ``noise`` (any non-negative int) picks the details.

    ``received_ms`` is the record timestamp (UTC ms); the time kinds are set relative to it:
    issued_too_old is *sent* late (the generator sets its timestamp), issued_in_future carries
    an issue time six hours after its receipt.
    """
    v = dict(value)
    if kind == "truncated":
        return codec.encode(v, writer_version)[: 1 + noise % 11]
    if kind == "bad_magic_byte":
        return b"\x07" + codec.encode(v, writer_version)[1:]
    if kind == "unknown_schema_id":
        return b"\x00\x00\x00\x03\xe7" + codec.encode(v, writer_version)[5:]
    if kind == "wrong_subject":
        return b"\x00" + REGISTRY_SCHEMA_ID.to_bytes(4, "big") + codec.encode(v, writer_version)[5:]
    if kind == "invalid_seller_id":
        v["seller_id"] = "12345"
    elif kind == "invalid_invoice_form":
        # form 0, and the code says 0 too, so only the form rule breaks
        v["invoice_form"] = 0
        v["invoice_code"] = "M0" + v["invoice_code"][2:]
    elif kind == "invalid_symbol":
        v["invoice_symbol"] = v["invoice_symbol"].replace("M", "T")
    elif kind == "invalid_invoice_code":
        v["invoice_code"] = "X" + v["invoice_code"][1:]
    elif kind == "invoice_code_mismatch":
        # a well-formed code whose year disagrees with the symbol's
        year = (int(v["invoice_code"][3:5]) + 99) % 100
        v["invoice_code"] = f"{v['invoice_code'][:3]}{year:02d}{v['invoice_code'][5:]}"
    elif kind == "invalid_amount":
        v["amount_vnd"] = -abs(v["amount_vnd"]) - 1000
        v["vat_amount_vnd"] = v["amount_vnd"] * v["vat_rate"] // 100
    elif kind == "invalid_vat_rate":
        v["vat_rate"] = 7
        v["vat_amount_vnd"] = v["amount_vnd"] * 7 // 100
    elif kind == "vat_mismatch":
        v["vat_amount_vnd"] = v["vat_amount_vnd"] + 5000
    elif kind == "invalid_register_id":
        v["register_id"] = ""
    elif kind == "issued_in_future":
        v["issued_at"] = local_datetime(received_ms + LOCAL_OFFSET_MS + FUTURE_SKEW_MS)
    elif kind != "issued_too_old":
        raise ValueError(f"unknown malformed kind {kind!r}; known: {', '.join(MALFORMED_KINDS)}")
    return codec.encode(v, writer_version)

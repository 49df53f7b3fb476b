"""Confluent framing and schema evolution against the file-based schemas."""

from __future__ import annotations

import datetime as dt

import pytest

from base.config import INVOICE_SUBJECT, REGISTRY_SUBJECT
from contracts.codec import AvroCodec, DecodeError, SchemaCatalog

INVOICE = {
    "seller_id": "2800000001",
    "invoice_form": 1,
    "invoice_symbol": "C24MTT",
    "invoice_code": "M1-24-AB12C-00000012345",
    "issued_at": dt.datetime(2024, 3, 1, 19, 30, 5, 123000),
    "amount_vnd": 250_000,
    "vat_rate": 8,
    "vat_amount_vnd": 20_000,
    "payment_method": "EWALLET",
    "register_id": "AB12C",
}


@pytest.fixture(scope="module")
def schemas() -> SchemaCatalog:
    return SchemaCatalog.load()


def test_frame_is_magic_byte_schema_id_body(schemas):
    encoded = AvroCodec(schemas, INVOICE_SUBJECT, reader_version=1).encode(INVOICE)
    assert encoded[0] == 0
    assert int.from_bytes(encoded[1:5], "big") == 1


def test_v1_reader_reads_v2_data_and_the_reverse(schemas):
    v1 = AvroCodec(schemas, INVOICE_SUBJECT, reader_version=1)
    v2 = AvroCodec(schemas, INVOICE_SUBJECT, reader_version=2)
    schema_id, from_v2 = v1.decode(v2.encode({**INVOICE, "buyer_tax_code": "0100109106"}))
    assert schema_id == 3
    assert from_v2 == INVOICE  # the new field is dropped by the old reader
    schema_id, from_v1 = v2.decode(v1.encode(INVOICE))
    assert schema_id == 1
    assert from_v1 == {**INVOICE, "buyer_tax_code": None}  # the default fills the missing field


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "malformed_bytes"),
        (b"\x00\x00\x00", "malformed_bytes"),
        (b"\x01\x00\x00\x00\x01abc", "bad_magic_byte"),
        (b"\x00\x00\x00\x03\xe7abc", "unknown_schema_id"),
        (b"\x00\x00\x00\x00\x02" + b"\x00" * 8, "wrong_subject"),
        (b"\x00\x00\x00\x00\x01\xff\xff\xff\xff\xff\xff", "malformed_bytes"),
    ],
)
def test_bad_frames_are_decode_errors_with_a_reason(schemas, payload, reason):
    with pytest.raises(DecodeError) as info:
        AvroCodec(schemas, INVOICE_SUBJECT).decode(payload)
    assert info.value.reason == reason


def test_trailing_bytes_are_rejected(schemas):
    codec = AvroCodec(schemas, INVOICE_SUBJECT)
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(codec.encode(INVOICE) + b"\x00")


def test_registration_round_trip_keeps_vietnamese_text(schemas):
    codec = AvroCodec(schemas, REGISTRY_SUBJECT)
    value = {
        "seller_id": "038123456789",
        "name": "Quán phở Bà Tư Mường Lát",
        "vsic_code": "5610",
        "admin_unit_code": "384",
        "obliged": True,
        "status": "ACTIVE",
        "valid_from": dt.date(2025, 6, 1),
    }
    assert codec.decode(codec.encode(value)) == (2, value)

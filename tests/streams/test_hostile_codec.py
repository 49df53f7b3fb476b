"""Hostile bytes through the decoder (hypothesis): only DecodeError with a known reason, never a hang.

The contract checked on every example is the fuzzer's (``fuzz/fuzz_decode_validate.py``): a
decode error with a documented reason, or a value with the reader's fields that the validator
then judges without raising, and that can be stored when found valid.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from contracts.codec import DecodeError
from fuzz.fuzz_decode_validate import (
    INVOICES,
    RECEIVED_MS,
    REGISTRY,
    TestOneInput,
    check_invoice_bytes,
    check_registration_bytes,
)
from simulator.encoding import avro_string, varint
from tests.streams.test_codec import INVOICE

FAST = settings(max_examples=1500, deadline=dt.timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow])
REGISTRATION = {
    "seller_id": "038123456789", "name": "Quán phở Bà Tư Mường Lát", "vsic_code": "5610", "admin_unit_code": "384",
    "obliged": True, "status": "ACTIVE", "valid_from": dt.date(2025, 6, 1),
}  # fmt: skip
V2_INVOICE = {**INVOICE, "buyer_tax_code": "0100109106"}
ENCODED = [
    INVOICES.encode(INVOICE, writer_version=1),
    INVOICES.encode(V2_INVOICE, writer_version=2),
    INVOICES.encode({**INVOICE, "buyer_tax_code": None}, writer_version=2),
    REGISTRY.encode(REGISTRATION),
]
valid_frames = st.sampled_from(ENCODED)


def reason_of(payload: bytes | None) -> str | None:
    """The verdict of both paths; raises AssertionError (or anything unexpected) on a broken contract."""
    invoice = check_invoice_bytes(payload, RECEIVED_MS)
    check_invoice_bytes(payload, -1)
    check_registration_bytes(payload)
    return invoice


@FAST
@given(st.binary(max_size=400))
def test_random_bytes_never_break_the_contract(payload):
    reason_of(payload)


@FAST
@given(st.integers(min_value=0, max_value=255), st.binary(max_size=300))
def test_random_bodies_behind_a_valid_frame_never_break_the_contract(schema_id, body):
    reason_of(b"\x00" + schema_id.to_bytes(4, "big") + body)
    for sid in (1, 2, 3):
        reason_of(b"\x00" + sid.to_bytes(4, "big") + body)


@FAST
@given(valid_frames, st.data())
def test_every_truncation_is_malformed_bytes(frame, data):
    cut = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
    subject = REGISTRY if frame[4] == 2 else INVOICES
    with pytest.raises(DecodeError) as info:
        subject.decode(frame[:cut])
    assert info.value.reason == "malformed_bytes"
    reason_of(frame[:cut])


def test_every_prefix_of_every_frame_is_malformed_bytes():
    """Exhaustive, not sampled: a strict prefix never decodes (the parse runs out of bytes)."""
    for frame in ENCODED:
        subject = REGISTRY if frame[4] == 2 else INVOICES
        for cut in range(len(frame)):
            with pytest.raises(DecodeError, match="malformed_bytes"):
                subject.decode(frame[:cut])


@FAST
@given(valid_frames, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from("sid")),
                              min_size=1, max_size=8))  # fmt: skip
def test_mutated_frames_never_break_the_contract(frame, edits):
    """Byte substitutions, insertions and deletions anywhere (header, lengths, varints, UTF-8)."""
    data = bytearray(frame)
    for position, byte, kind in edits:
        at = position % (len(data) + 1)
        if kind == "s" and at < len(data):
            data[at] = byte
        elif kind == "i":
            data.insert(at, byte)
        elif at < len(data):
            del data[at]
    reason_of(bytes(data))


@FAST
@given(valid_frames, st.binary(min_size=1, max_size=64))
def test_trailing_bytes_are_malformed_bytes(frame, tail):
    subject = REGISTRY if frame[4] == 2 else INVOICES
    with pytest.raises(DecodeError, match="trailing bytes"):
        subject.decode(frame + tail)
    reason_of(frame + tail)


@FAST
@given(valid_frames, st.integers(min_value=1, max_value=255))
def test_a_wrong_magic_byte_is_named_in_the_detail(frame, magic):
    with pytest.raises(DecodeError) as info:
        INVOICES.decode(bytes([magic]) + frame[1:])
    assert info.value.reason == "bad_magic_byte"
    assert f"magic byte {magic} " in info.value.detail  # unsigned: 255, not -1 (found by this test)


@FAST
@given(valid_frames, st.integers(min_value=0, max_value=2**32 - 1))
def test_schema_ids_outside_the_registry(frame, schema_id):
    assume(schema_id not in (1, 2, 3))
    with pytest.raises(DecodeError, match="unknown_schema_id"):
        INVOICES.decode(b"\x00" + schema_id.to_bytes(4, "big") + frame[5:])


def test_another_subjects_schema_is_wrong_subject():
    for frame in ENCODED:
        wrong = REGISTRY if frame[4] != 2 else INVOICES
        with pytest.raises(DecodeError, match="wrong_subject"):
            wrong.decode(frame)


def body(fields: list[bytes], schema_id: int = 3) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + b"".join(fields)


def invoice_fields(**raw: bytes) -> list[bytes]:
    """The v2 body field by field; strings as raw bytes so that they can be invalid UTF-8."""
    s = {k: varint(len(v)) + v for k, v in raw.items()}
    return [
        s.get("seller_id", avro_string("2800000001")), varint(1), s.get("invoice_symbol", avro_string("C24MTT")),
        s.get("invoice_code", avro_string("M1-24-AB12C-00000012345")), varint(1_709_321_405_123), varint(250_000),
        varint(8), varint(20_000), varint(3), s.get("register_id", avro_string("AB12C")),
        b"\x02" + s["buyer_tax_code"] if "buyer_tax_code" in s else b"\x00",
    ]  # fmt: skip


INVALID_UTF8 = [
    b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\x80", b"\xe1\xbb", b"H\xf3a", b"\xf4\x90\x80\x80",
]  # fmt: skip


def test_the_hand_built_body_decodes_to_the_reference_invoice():
    assert INVOICES.decode(body(invoice_fields())) == (3, {**INVOICE, "buyer_tax_code": None})


@pytest.mark.parametrize("field", ["seller_id", "invoice_symbol", "invoice_code", "register_id", "buyer_tax_code"])
@pytest.mark.parametrize("bad", INVALID_UTF8)
def test_invalid_utf8_in_any_string_is_malformed_bytes(field, bad):
    """Overlong forms, CESU surrogates, lone continuation bytes, Latin-1, beyond U+10FFFF: none decodes."""
    payload = body(invoice_fields(**{field: b"28" + bad + b"01"}))
    with pytest.raises(DecodeError) as info:
        INVOICES.decode(payload)
    assert info.value.reason == "malformed_bytes"
    assert f"field {field} at byte " in info.value.detail and "is not a valid " in info.value.detail
    reason_of(payload)


@pytest.mark.parametrize(
    "length", [2**31, 2**62, 2**63 - 1, -1, -(2**63)], ids=["2^31", "2^62", "2^63-1", "-1", "-2^63"]
)
def test_absurd_string_lengths_fail_fast_without_allocating(length):
    payload = body([varint(length), b"2800000001"])
    started = time.perf_counter()
    with pytest.raises(DecodeError, match="malformed_bytes"):
        INVOICES.decode(payload)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63), 2**40, -(2**40)])
def test_absurd_timestamps_are_decode_errors_or_values_the_validator_rejects(value):
    fields = invoice_fields()
    fields[4] = varint(value)
    assert reason_of(body(fields)) in {"malformed_bytes", "issued_too_old", "issued_in_future"}


@FAST
@given(st.integers(min_value=-(2**31), max_value=2**31 - 1))
def test_any_registration_date_is_decoded_or_rejected_never_stored_out_of_range(days):
    raw = REGISTRY.encode(REGISTRATION)
    head = raw[: raw.rindex(varint(20240))]  # 2025-06-01 is day 20240, the last field
    assert head + varint(20240) == raw
    assert check_registration_bytes(head + varint(days)) in {
        None, "malformed_bytes", "invalid_valid_from",
    }  # fmt: skip


@FAST
@given(st.binary(max_size=200))
def test_the_fuzz_target_itself_accepts_anything(payload):
    TestOneInput(payload)


def test_a_null_value_and_an_empty_one_are_malformed_bytes():
    assert reason_of(None) == reason_of(b"") == "malformed_bytes"

"""Hostile values through the validators (hypothesis): a verdict with a known reason, never an exception.

Values are drawn field by field from the Avro schema's types: every field at its limits (int and
long extremes, dates in year 1 and 9999, the one-off edges of each rule), huge strings, control
characters and lone surrogates, non-NFC Vietnamese, look-alike digits, and legal values with a
character too many. A valid verdict must mean storable (see ``fuzz/fuzz_decode_validate.py``).

Non-NFC Vietnamese (DOMAIN.md: "store and compare them in Unicode NFC"): free text is normalised,
never rejected, as registry names always were: a decomposed register id or name is valid and is
stored in NFC. The coded fields (tax codes, symbol, invoice code, VSIC, GSO) are ASCII by rule, so a
decomposed letter there is simply not a legal code.
"""

from __future__ import annotations

import datetime as dt
import unicodedata

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from base.localtime import LOCAL_OFFSET_MS, local_ms
from contracts.codec import DecodeError
from contracts.records import SourceRecord
from contracts.registry import decode_registry_batch
from contracts.validation import (
    EARLIEST_ISSUED,
    LATEST_ISSUED,
    MAX_NAME_CHARS,
    MAX_REGISTER_ID_CHARS,
    InvoiceValidator,
    check_key,
    check_registration,
    nfc,
)
from fuzz.fuzz_decode_validate import (
    INVOICES,
    REGISTRY,
    check_invoice_value,
    check_registration_value,
)
from tests.streams.test_hostile_codec import REGISTRATION
from tests.streams.test_validation import RECEIVED_MS
from tests.streams.test_validation import invoice as v1_invoice

PROPERTY = settings(
    max_examples=1000,
    deadline=dt.timedelta(seconds=2),
    suppress_health_check=list(HealthCheck),
)
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
HOA_NFD = unicodedata.normalize("NFD", "Hóa")  # 'o' + combining acute: what some register software sends
HUGE = 300_000  # characters: far beyond any rule, well inside a Kafka record


def invoice(**changes):
    """The reference invoice of test_validation as the v2 reader sees it (with buyer_tax_code)."""
    return v1_invoice(**{"buyer_tax_code": None, **changes})


def around(*values: int) -> st.SearchStrategy[int]:
    """The edges of a rule: each value and its neighbours."""
    return st.sampled_from(sorted({v + d for v in values for d in (-1, 0, 1)}))


def mutated(legal: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A legal value, or one with a character too many, too few, or swapped for a look-alike."""
    suffixes = st.sampled_from(["\n", "\r\n", " ", "\x00", "\t", "\u200b", "０", "٣", HOA_NFD, "\ud800"])
    return st.one_of(
        legal,
        st.tuples(legal, suffixes).map("".join),
        st.tuples(suffixes, legal).map("".join),
        legal.map(lambda s: s[:-1]),
        legal.map(lambda s: s.replace("0", "０", 1)),
    )


def hostile_text(legal: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        mutated(legal),
        st.text(max_size=40),
        st.text(st.characters(codec=None, categories=["Cc", "Cs", "Cf", "Zl", "Zp", "Mn"]), max_size=20),
        st.sampled_from(["", " ", HOA_NFD, "x" * HUGE, "9" * HUGE, "Quầy " * (HUGE // 5)]),
    )


def digits(n: int) -> st.SearchStrategy[str]:
    return st.text("0123456789", min_size=n, max_size=n)


def joined(*parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(*parts).map("".join)


# Legal values built from their parts (drawing from a regex is ten times slower)
ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
seller_ids = st.one_of(digits(10), digits(12), joined(digits(10), st.just("-"), digits(3)))
symbols = joined(st.sampled_from("CK"), digits(2), st.just("M"), st.text(ALNUM, min_size=2, max_size=2))
codes = joined(st.just("M"), digits(1), st.just("-"), digits(2), st.just("-"), st.text(ALNUM, min_size=5, max_size=5),
               st.just("-"), digits(11))  # fmt: skip
vietnamese = st.sampled_from(["Quầy 1", "Máy Hóa 2", HOA_NFD, "Thu ngân Hoằng Hóa", "Kệ số 3"])
register_ids = st.one_of(
    st.text(ALNUM, min_size=1, max_size=8), vietnamese, vietnamese.map(lambda s: unicodedata.normalize("NFD", s)),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), min_size=1, max_size=MAX_REGISTER_ID_CHARS),
    st.just("x" * MAX_REGISTER_ID_CHARS),
)  # fmt: skip
edge_times = st.sampled_from(
    [dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999000), dt.datetime(1970, 1, 1),
     EARLIEST_ISSUED - dt.timedelta(milliseconds=1), EARLIEST_ISSUED, LATEST_ISSUED - dt.timedelta(milliseconds=1),
     LATEST_ISSUED, dt.datetime(2149, 6, 6), dt.datetime(2149, 6, 7)]
)  # fmt: skip
ms = st.integers(0, 999).map(lambda m: dt.timedelta(milliseconds=m))  # Avro local-timestamp-millis: no microseconds
legal_times = st.tuples(st.datetimes(EARLIEST_ISSUED, LATEST_ISSUED - dt.timedelta(seconds=1)), ms).map(
    lambda t: t[0].replace(microsecond=0) + t[1]
)
any_times = st.one_of(edge_times, st.datetimes(dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59)).map(
    lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000)))  # fmt: skip

bad_register_ids = st.sampled_from(["", "x" * (MAX_REGISTER_ID_CHARS + 1), "A\nB", "\ud800", "A\u202eB", "\x7f"])
LEGAL_INVOICE = {
    "seller_id": seller_ids, "invoice_form": st.integers(1, 9), "invoice_symbol": symbols, "invoice_code": codes,
    "issued_at": legal_times, "amount_vnd": st.integers(0, 2_000_000_000), "vat_rate": st.sampled_from([0, 5, 8, 10]),
    "vat_amount_vnd": st.just(0), "payment_method": st.sampled_from(["CASH", "CARD", "TRANSFER", "EWALLET", "OTHER"]),
    "register_id": register_ids, "buyer_tax_code": st.one_of(st.none(), seller_ids),
}  # fmt: skip
HOSTILE_INVOICE = {
    "seller_id": hostile_text(seller_ids), "invoice_form": st.one_of(around(0, 1, 9), INT32),
    "invoice_symbol": hostile_text(symbols), "invoice_code": hostile_text(codes), "issued_at": any_times,
    "amount_vnd": st.one_of(around(0, 2_000_000_000, 2**63 - 1, -(2**63) + 1), INT64),
    "vat_rate": st.one_of(st.sampled_from([7, -8, 100]), INT32),
    "vat_amount_vnd": st.one_of(around(0, 1, 2**63 - 2, -(2**63) + 1), INT64),
    "payment_method": st.sampled_from(["CASH", "OTHER"]),
    "register_id": st.one_of(bad_register_ids, bad_register_ids, hostile_text(register_ids)),
    "buyer_tax_code": hostile_text(seller_ids),
}  # fmt: skip


def consistent(value: dict) -> dict:
    """A legal invoice's cross-field rules: the code carries the form digit and the symbol's year; VAT follows."""
    code, symbol, form = value["invoice_code"], value["invoice_symbol"], value["invoice_form"]
    return {
        **value, "invoice_code": f"M{form}-{symbol[1:3]}{code[5:]}",
        "vat_amount_vnd": value["amount_vnd"] * value["vat_rate"] // 100,
    }  # fmt: skip


@st.composite
def invoices(draw: st.DrawFn, max_broken: int = 3) -> dict:
    """A legal invoice with up to ``max_broken`` fields replaced by hostile ones (so every rule is reached)."""
    value = consistent({name: draw(legal) for name, legal in LEGAL_INVOICE.items()})
    for name in draw(st.sets(st.sampled_from(sorted(HOSTILE_INVOICE)), max_size=max_broken)):
        value[name] = draw(HOSTILE_INVOICE[name])
    return value


received = st.one_of(
    st.sampled_from([-1, 0, RECEIVED_MS, -62_135_596_800_000]), INT64, st.integers(-(10**15), 10**15),
)  # fmt: skip


def near(value: dict, offset_ms: int) -> int:
    """A receive time ``offset_ms`` after the issue time (UTC epoch ms)."""
    return local_ms(value["issued_at"]) - LOCAL_OFFSET_MS + offset_ms


@PROPERTY
@given(invoices(), received)
@example(invoice(seller_id="2800000001\n"), RECEIVED_MS)  # the fullmatch bug: was valid
@example(invoice(issued_at=dt.datetime(1, 1, 1)), -1)  # the Date overflow: was valid with no timestamp
def test_any_invoice_value_gets_a_verdict_never_an_exception(value, received_ms):
    verdict = check_invoice_value(value, received_ms)
    event(f"verdict: {verdict}")  # --hypothesis-show-statistics: every reason is reached, valid ones too
    event(f"verdict near: {check_invoice_value(value, near(value, 60_000) if value['issued_at'].year > 1 else -1)}")
    if verdict is None:
        assert value["seller_id"].isascii() and value["seller_id"].strip() == value["seller_id"]
        assert value["register_id"] and "\n" not in value["register_id"]
        assert EARLIEST_ISSUED <= value["issued_at"] < LATEST_ISSUED


@PROPERTY
@given(invoices(), st.integers(-600_000, 600_000))
def test_values_that_travel_through_avro_get_the_same_verdict(value, offset_ms):
    """Encode with the writer schema, decode, judge: the same verdict as judging the value itself."""
    try:
        frame = INVOICES.encode(value)
    except (ValueError, OverflowError, UnicodeEncodeError, TypeError):
        return  # not representable in Avro (a lone surrogate, an out-of-range long): cannot arrive
    try:
        _, decoded = INVOICES.decode(frame)
    except DecodeError as exc:  # fastavro writes some datetimes it cannot read back (year 1 before the epoch)
        assert exc.reason == "malformed_bytes"
        return
    assert decoded == value
    received_ms = near(value, offset_ms) if value["issued_at"].year > 1 else -1
    assert check_invoice_value(decoded, received_ms) == check_invoice_value(value, received_ms)


def test_a_trailing_newline_is_no_longer_a_legal_code():
    """Found by the property above: ``re.match`` with ``$`` accepts "...\\n"; the same invoice with a
    newline after its code was a *different* valid invoice (dedup bypass), and "2800000001\\n" a seller."""
    validator = InvoiceValidator()
    for field, legal in [("seller_id", "2800000001"), ("invoice_symbol", "C24MTT"),
                         ("invoice_code", "M1-24-AB12C-00000012345"), ("buyer_tax_code", "0100109106")]:  # fmt: skip
        rejection = validator.check(invoice(**{field: legal + "\n"}), RECEIVED_MS)
        assert rejection is not None, field
    for field, legal in [("seller_id", "2800000001"), ("vsic_code", "4711"), ("admin_unit_code", "380")]:
        assert check_registration({**REGISTRATION, field: legal + "\n"})[1] is not None, field


@pytest.mark.parametrize(
    ("issued_at", "received_ms", "reason"),
    [
        (dt.datetime(1, 1, 1), -1, "issued_too_old"),  # Kafka accepts timestamp -1: no receive-time check
        (dt.datetime(9999, 12, 31, 23, 59, 59), -1, "issued_in_future"),
        (dt.datetime(1, 1, 1), -62_135_596_800_000, "issued_too_old"),  # a record stamped in year 1
        (EARLIEST_ISSUED - dt.timedelta(milliseconds=1), -1, "issued_too_old"),
        (LATEST_ISSUED, -1, "issued_in_future"),
        (dt.datetime(2149, 6, 7), -1, "issued_in_future"),  # one day past ClickHouse's Date
    ],
)
def test_absurd_issue_times_are_rejected_whatever_the_record_timestamp(issued_at, received_ms, reason):
    """Found in the worker: such an invoice was valid, its insert failed (Date is 1970..2149) and the
    sink retried it for ever: the worker hung on one record."""
    rejection = InvoiceValidator().check(invoice(issued_at=issued_at), received_ms)
    assert rejection is not None and rejection.reason == reason


def test_the_edges_of_the_issue_window_are_valid_without_a_timestamp():
    for issued_at in (EARLIEST_ISSUED, LATEST_ISSUED - dt.timedelta(milliseconds=1)):
        value = invoice(issued_at=issued_at, invoice_symbol=f"C{issued_at.year % 100:02d}MTT",
                        invoice_code=f"M1-{issued_at.year % 100:02d}-AB12C-00000012345")  # fmt: skip
        assert check_invoice_value(value, -1) is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"register_id": "x" * (MAX_REGISTER_ID_CHARS + 1)}, "invalid_register_id"),
        ({"register_id": "x" * HUGE}, "invalid_register_id"),
        ({"register_id": "AB\n12C"}, "invalid_register_id"),
        ({"register_id": "AB\x0012C"}, "invalid_register_id"),
        ({"register_id": "\ud800"}, "invalid_register_id"),  # cannot be encoded for ClickHouse
        ({"register_id": "AB\u202e12C"}, "invalid_register_id"),  # a bidi override
        ({"buyer_tax_code": ""}, "invalid_buyer_tax_code"),
        ({"buyer_tax_code": "0" * HUGE}, "invalid_buyer_tax_code"),
        ({"buyer_tax_code": "010010910６"}, "invalid_buyer_tax_code"),
        ({"amount_vnd": 0, "vat_amount_vnd": -1}, "vat_mismatch"),  # within a dong of 0, but negative
        ({"amount_vnd": 2**63 - 1, "vat_amount_vnd": 0}, "invalid_amount"),
        ({"amount_vnd": -(2**63), "vat_amount_vnd": 0}, "invalid_amount"),
        ({"vat_amount_vnd": 2**63 - 1}, "vat_mismatch"),
        ({"vat_rate": -(2**31)}, "invalid_vat_rate"),
        ({"invoice_form": 2**31 - 1}, "invalid_invoice_form"),
        ({"seller_id": "9" * HUGE}, "invalid_seller_id"),
        ({"invoice_symbol": unicodedata.normalize("NFD", "C24MÓ")}, "invalid_symbol"),
        ({"invoice_code": "M1-24-AB12C-00000012345" * 10_000}, "invalid_invoice_code"),
    ],
)
def test_limits_of_every_free_field(changes, reason):
    rejection = InvoiceValidator().check(invoice(**changes), RECEIVED_MS)
    assert rejection is not None and rejection.reason == reason
    assert len(rejection.detail) < 500  # a detail never carries a huge value into the DLQ headers


def test_non_nfc_vietnamese_register_ids_are_valid_and_stored_in_nfc():
    decomposed = unicodedata.normalize("NFD", "Quầy Hoằng Hóa 1")
    assert decomposed != unicodedata.normalize("NFC", decomposed)
    assert InvoiceValidator().check(invoice(register_id=decomposed), RECEIVED_MS) is None
    assert nfc(decomposed) == "Quầy Hoằng Hóa 1" and nfc("AB12C") == "AB12C"


def test_the_record_key_must_be_the_seller_id():
    assert check_key("2800000001", b"2800000001") is None
    for key in (None, b"", b"2800000002", b"2800000001\n", "2800000001".encode("utf-16")):
        rejection = check_key("2800000001", key)
        assert rejection is not None and rejection.reason == "invalid_key"


unit_codes = st.text("0123456789", min_size=2, max_size=5)
names = st.one_of(
    vietnamese, vietnamese.map(lambda s: unicodedata.normalize("NFD", s)), st.text(min_size=1, max_size=80),
    st.just("x" * MAX_NAME_CHARS),
)  # fmt: skip
LEGAL_REGISTRATION = {
    "seller_id": seller_ids, "name": names, "vsic_code": digits(4), "admin_unit_code": unit_codes,
    "obliged": st.booleans(), "status": st.sampled_from(["ACTIVE", "SUSPENDED", "CLOSED"]),
    "valid_from": st.dates(dt.date(1970, 1, 1), dt.date(2099, 12, 31)),
}  # fmt: skip
HOSTILE_REGISTRATION = {
    "seller_id": hostile_text(seller_ids), "vsic_code": hostile_text(digits(4)),
    "admin_unit_code": hostile_text(unit_codes),
    "name": st.one_of(hostile_text(names), st.sampled_from(["x" * (MAX_NAME_CHARS + 1), "   ", "A\nB", "\u202e"])),
    "valid_from": st.one_of(st.dates(), st.sampled_from([dt.date(1, 1, 1), dt.date(9999, 12, 31),
                            dt.date(1969, 12, 31), dt.date(2100, 1, 1), dt.date(2149, 6, 7)])),
}  # fmt: skip


@st.composite
def registrations(draw: st.DrawFn) -> dict:
    """A legal registration with up to two fields replaced by hostile ones."""
    value = {name: draw(legal) for name, legal in LEGAL_REGISTRATION.items()}
    for name in draw(st.sets(st.sampled_from(sorted(HOSTILE_REGISTRATION)), max_size=2)):
        value[name] = draw(HOSTILE_REGISTRATION[name])
    return value


@PROPERTY
@given(registrations(), st.sampled_from([None, b"", b"2800000001", b"\x00seller", b"\x00seller"]))
@example({**REGISTRATION, "valid_from": dt.date(1, 1, 1)}, b"\x00seller")  # crashed the worker (Date)
@example({**REGISTRATION, "name": "x" * HUGE}, b"\x00seller")  # would overflow the changelog record
def test_any_registration_gets_a_verdict_never_an_exception(value, key):
    event(f"verdict: {check_registration_value(value, key)}")


@PROPERTY
@given(st.lists(registrations(), min_size=1, max_size=5), st.data())
def test_registry_batches_reject_what_they_cannot_store(values, data):
    """The registry agent's own decode path: every record ends up a version or a rejection, never an error."""
    records = []
    for offset, value in enumerate(values):
        try:
            frame = REGISTRY.encode(value)
        except (ValueError, OverflowError, UnicodeEncodeError, TypeError):
            frame = data.draw(st.binary(max_size=60))
        key = data.draw(st.sampled_from([None, value["seller_id"].encode("utf-8", "replace"), b"x"]))
        records.append(SourceRecord(0, offset, key, frame, -1))
    batch = decode_registry_batch(REGISTRY, records)
    assert len(batch.history_rows) + len(batch.rejected) == len(records)
    for row in batch.history_rows:
        assert dt.date(1970, 1, 1) <= row[1] < dt.date(2100, 1, 1)
        assert row[2] == nfc(row[2]) and len(row[2]) <= MAX_NAME_CHARS


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"valid_from": dt.date(1, 1, 1)}, "invalid_valid_from"),
        ({"valid_from": dt.date(9999, 12, 31)}, "invalid_valid_from"),
        ({"valid_from": dt.date(1969, 12, 31)}, "invalid_valid_from"),
        ({"name": ""}, "invalid_name"),
        ({"name": "x" * (MAX_NAME_CHARS + 1)}, "invalid_name"),
        ({"name": "Quán\nphở"}, "invalid_name"),
        ({"name": "Quán \u202ephở"}, "invalid_name"),
        ({"vsic_code": "4711\n"}, "invalid_vsic_code"),
        ({"vsic_code": "4711' OR 1=1 --"}, "invalid_vsic_code"),
        ({"admin_unit_code": "380;DROP TABLE invoices"}, "invalid_admin_unit"),
    ],
)
def test_registration_limits(changes, reason):
    value, rejection = check_registration({**REGISTRATION, **changes})
    assert value is None and rejection is not None and rejection.reason == reason


def test_registration_names_with_sql_metacharacters_are_kept_verbatim():
    """A name is data: quotes, comments and placeholders are legal in it (bound parameters store it)."""
    for name in ["Quán 'Bà Tư'", "A\\B", "x;-- DROP TABLE invoices", "' OR 1=1 --", "{start:Date}",
                 "$__timeFilter(issued_at)", "`sectors`", "🍜 Phở 24/7", "x" * MAX_NAME_CHARS]:  # fmt: skip
        value, rejection = check_registration({**REGISTRATION, "name": name})
        assert rejection is None and value is not None and value["name"] == name

"""The validator's rules, one by one (pure logic, no I/O)."""

from __future__ import annotations

import datetime as dt
import unicodedata

import pytest

from contracts.validation import InvoiceRules, InvoiceValidator, check_registration, seller_kind

ISSUED = dt.datetime(2024, 6, 1, 20, 0)
RECEIVED_MS = int(dt.datetime(2024, 6, 1, 13, 1, tzinfo=dt.UTC).timestamp() * 1000)  # 20:01 local


def invoice(**changes):
    value = {
        "seller_id": "2800000001",
        "invoice_form": 1,
        "invoice_symbol": "C24MTT",
        "invoice_code": "M1-24-AB12C-00000012345",
        "issued_at": ISSUED,
        "amount_vnd": 123_457,
        "vat_rate": 8,
        "vat_amount_vnd": 9_877,  # 8% of 123,457 = 9,876.56: rounding is allowed
        "payment_method": "CASH",
        "register_id": "AB12C",
    }
    value.update(changes)
    return value


@pytest.fixture(scope="module")
def validator():
    return InvoiceValidator()


def test_a_valid_invoice_passes(validator):
    assert validator.check(invoice(), RECEIVED_MS) is None


@pytest.mark.parametrize("seller_id", ["2800000001", "2800000001-001", "038123456789"])
def test_the_three_legal_seller_id_forms(validator, seller_id):
    assert validator.check(invoice(seller_id=seller_id), RECEIVED_MS) is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"seller_id": "28000000"}, "invalid_seller_id"),
        ({"seller_id": "2800000001-01"}, "invalid_seller_id"),
        ({"seller_id": "28000000０1"}, "invalid_seller_id"),  # a full-width digit
        ({"invoice_form": 0}, "invalid_invoice_form"),
        ({"invoice_symbol": "C24TTT"}, "invalid_symbol"),  # not M: not from a cash register
        ({"invoice_symbol": "X24MTT"}, "invalid_symbol"),
        ({"invoice_code": "M1-24-AB12C-0000012345"}, "invalid_invoice_code"),  # ten-digit sequence
        ({"invoice_code": "M2-24-AB12C-00000012345"}, "invalid_invoice_code"),  # form digit disagrees
        ({"invoice_code": "M1-23-AB12C-00000012345"}, "invalid_invoice_code"),  # year disagrees with symbol
        ({"amount_vnd": -1, "vat_amount_vnd": 0}, "invalid_amount"),
        ({"amount_vnd": 10**12, "vat_amount_vnd": 8 * 10**10}, "invalid_amount"),
        ({"vat_rate": 7, "vat_amount_vnd": 8_642}, "invalid_vat_rate"),
        ({"vat_amount_vnd": 9_900}, "vat_mismatch"),
        ({"register_id": ""}, "invalid_register_id"),
        ({"issued_at": ISSUED + dt.timedelta(minutes=30)}, "issued_in_future"),
        ({"issued_at": ISSUED - dt.timedelta(hours=73)}, "issued_too_old"),
    ],
)
def test_each_rule_rejects_with_its_reason(validator, changes, reason):
    rejection = validator.check(invoice(**changes), RECEIVED_MS)
    assert rejection is not None
    assert rejection.reason == reason
    assert rejection.detail


def test_late_but_within_the_limit_is_valid(validator):
    assert validator.check(invoice(issued_at=ISSUED - dt.timedelta(hours=47)), RECEIVED_MS) is None


def test_code_pattern_is_configurable():
    rules = InvoiceRules(invoice_code_pattern=r"^M(\d)(\d{2})[0-9A-Z]{5}\d{11}$")
    validator = InvoiceValidator(rules)
    assert validator.check(invoice(invoice_code="M124AB12C00000012345"), RECEIVED_MS) is None


def test_a_pattern_without_the_two_groups_is_a_clear_error():
    with pytest.raises(ValueError, match="two groups"):
        InvoiceValidator(InvoiceRules(invoice_code_pattern=r"^M.*$"))


def test_registration_names_are_normalised_to_nfc():
    decomposed = unicodedata.normalize("NFD", "Nhà thuốc Hoằng Hóa")
    value, rejection = check_registration(
        {"seller_id": "2800000001", "name": decomposed, "vsic_code": "4772", "admin_unit_code": "399",
         "obliged": True, "status": "ACTIVE", "valid_from": dt.date(2024, 1, 1)}
    )  # fmt: skip
    assert rejection is None
    assert value["name"] == unicodedata.normalize("NFC", decomposed) != decomposed


def test_seller_kind():
    assert [seller_kind(s) for s in ("2800000001", "2800000001-001", "038123456789")] == [
        "enterprise", "branch", "household",
    ]  # fmt: skip

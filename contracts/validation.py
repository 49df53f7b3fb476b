"""Validation of decoded invoice and registry values: pure functions of one record.

Validity never depends on worker state (the time checks compare the issue time with the
Kafka record's own timestamp, the moment the feed received it), so a record re-read after a
crash gets the same verdict: that is what makes the dead-letter topic exact.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple

from base.config import Settings
from base.localtime import HOUR_MS, LOCAL_OFFSET_MS, local_ms

# re.ASCII: \d must not match other scripts' digits (full-width, Arabic-Indic, ...).
# Always used with fullmatch: with match, `$` also matches before a trailing newline, so
# "2800000001\n" passed as a seller id and "M1-…-00000012345\n" as a new invoice code (a dedup bypass).
SELLER_ID_RE = re.compile(r"^(?:\d{10}|\d{10}-\d{3}|\d{12})$", re.ASCII)
SYMBOL_RE = re.compile(r"^[CK](\d{2})M[0-9A-Z]{2}$", re.ASCII)
VSIC_RE = re.compile(r"^\d{4}$", re.ASCII)
ADMIN_UNIT_RE = re.compile(r"^\d{2,5}$", re.ASCII)
VAT_RATES = frozenset({0, 5, 8, 10})
# payment_method values that count as non-cash (the adoption metric); the order is the simulator's split columns
NON_CASH_METHODS = ("CARD", "TRANSFER", "EWALLET")
# Control characters, surrogates and bidi overrides: never part of a register id or a name
# (a surrogate cannot even be encoded for ClickHouse; a bidi override spoofs what a board shows).
_UNPRINTABLE_RE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
MAX_REGISTER_ID_CHARS = 64
MAX_NAME_CHARS = 500  # registered names; 16 versions of one seller must fit a changelog record
# Absolute bounds, whatever the record timestamp says: Kafka accepts a timestamp of -1 or of
# year 1 (no receive-time check then), and ClickHouse's Date ends in 2149 (an insert of a day
# outside it fails, and the sink retries it for ever).
EARLIEST_ISSUED = datetime(2000, 1, 1)
LATEST_ISSUED = datetime(2100, 1, 1)  # exclusive
EARLIEST_VALID_FROM = date(1970, 1, 1)
LATEST_VALID_FROM = date(2100, 1, 1)  # exclusive

# Every reason a record can get, by where it is decided (the DLQ's dlq.reason header).
INVOICE_REASONS = frozenset({
    "invalid_seller_id", "invalid_invoice_form", "invalid_symbol", "invalid_invoice_code", "invalid_amount",
    "invalid_vat_rate", "vat_mismatch", "invalid_register_id", "invalid_buyer_tax_code", "issued_in_future",
    "issued_too_old", "invalid_key",
})  # fmt: skip
# A decoded value the validator cannot read: the code pattern's form group is not a number (a pattern
# that captures something else), or, on the reference path only, a field missing or of another type.
MALFORMED_VALUE = "malformed_value"
REGISTRATION_REASONS = frozenset({
    "invalid_seller_id", "invalid_vsic_code", "invalid_admin_unit", "invalid_name", "invalid_valid_from",
    "invalid_key",
})  # fmt: skip


class Rejection(NamedTuple):
    reason: str
    detail: str


def nfc(text: str) -> str:
    """Text as stored and compared (Unicode NFC, see DOMAIN.md); ASCII, the usual case, costs one check."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def seller_kind(seller_id: str) -> str:
    """The legal form of a seller id: enterprise, branch or household (personal id)."""
    if len(seller_id) == 14:
        return "branch"
    if len(seller_id) == 12:
        return "household"
    return "enterprise"


@dataclass(frozen=True)
class InvoiceRules:
    """The thresholds of the invoice checks; see Settings for the environment variables."""

    invoice_code_pattern: str = Settings.invoice_code_pattern
    future_tolerance_ms: int = Settings.future_tolerance_minutes * 60_000
    max_lateness_ms: int = Settings.max_lateness_hours * HOUR_MS
    max_amount_vnd: int = Settings.max_amount_vnd
    vat_tolerance_vnd: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> InvoiceRules:
        return cls(
            invoice_code_pattern=settings.invoice_code_pattern,
            future_tolerance_ms=settings.future_tolerance_minutes * 60_000,
            max_lateness_ms=settings.max_lateness_hours * HOUR_MS,
            max_amount_vnd=settings.max_amount_vnd,
        )


class InvoiceValidator:
    """Checks one decoded invoice against the Vietnamese rules and sanity bounds."""

    def __init__(self, rules: InvoiceRules | None = None) -> None:
        self.rules = rules or InvoiceRules()
        self._code_re = re.compile(self.rules.invoice_code_pattern, re.ASCII)
        if self._code_re.groups < 2:
            raise ValueError(
                "invoice code pattern needs two groups, (form digit) and (two-digit year): "
                f"{self.rules.invoice_code_pattern!r}"
            )

    def check(self, value: dict[str, Any], received_at_ms: int) -> Rejection | None:
        """None when valid; otherwise the first rule the record breaks.

        ``received_at_ms`` is the Kafka record timestamp (UTC epoch ms).
        """
        rules = self.rules
        seller_id = value["seller_id"]
        if not SELLER_ID_RE.fullmatch(seller_id):
            return Rejection(
                "invalid_seller_id", f"seller id {seller_id[:40]!r} is not 10 digits, 10-3 digits or 12 digits"
            )
        form = value["invoice_form"]
        if not 1 <= form <= 9:
            return Rejection("invalid_invoice_form", f"form number {form} is not one digit 1-9")
        symbol = value["invoice_symbol"]
        symbol_match = SYMBOL_RE.fullmatch(symbol)
        if symbol_match is None:
            return Rejection(
                "invalid_symbol", f"symbol {symbol[:40]!r} is not of the cash-register kind (C|K, yy, M, xx)"
            )
        code = value["invoice_code"]
        code_match = self._code_re.fullmatch(code)
        if code_match is None:
            return Rejection(
                "invalid_invoice_code", f"invoice code {code[:60]!r} does not match the configured pattern"
            )
        try:
            code_form = int(code_match.group(1))
        except (TypeError, ValueError):
            return Rejection(
                MALFORMED_VALUE, f"invoice code {code[:60]!r}: the configured pattern's form group is not a number"
            )
        if code_form != form or code_match.group(2) != symbol_match.group(1):
            return Rejection(
                "invalid_invoice_code",
                f"invoice code {code[:60]!r} disagrees with form {form} / symbol {symbol!r} (form digit or year)",
            )
        amount = value["amount_vnd"]
        if amount < 0 or amount > rules.max_amount_vnd:
            return Rejection("invalid_amount", f"amount {amount} VND outside 0..{rules.max_amount_vnd}")
        rate = value["vat_rate"]
        if rate not in VAT_RATES:
            return Rejection("invalid_vat_rate", f"VAT rate {rate}% is not one of 0, 5, 8, 10")
        vat = value["vat_amount_vnd"]
        expected = amount * rate / 100
        if vat < 0 or abs(vat - expected) > rules.vat_tolerance_vnd:
            return Rejection("vat_mismatch", f"VAT {vat} VND but {rate}% of {amount} is {expected:.0f}")
        register_id = value["register_id"]
        if not register_id or len(register_id) > MAX_REGISTER_ID_CHARS or _UNPRINTABLE_RE.search(register_id):
            return Rejection(
                "invalid_register_id",
                f"register id {register_id[:40]!r} ({len(register_id)} chars) is empty, longer than "
                f"{MAX_REGISTER_ID_CHARS} or holds control characters",
            )
        buyer = value.get("buyer_tax_code")
        if buyer is not None and not SELLER_ID_RE.fullmatch(buyer):
            return Rejection("invalid_buyer_tax_code", f"buyer tax code {buyer[:40]!r} is not a legal tax code form")
        issued_at = value["issued_at"]
        if not EARLIEST_ISSUED <= issued_at < LATEST_ISSUED:
            reason = "issued_too_old" if issued_at < EARLIEST_ISSUED else "issued_in_future"
            return Rejection(
                reason, f"issued at {issued_at.isoformat()}, outside {EARLIEST_ISSUED.year}-{LATEST_ISSUED.year}"
            )
        issued_utc_ms = local_ms(issued_at) - LOCAL_OFFSET_MS
        if received_at_ms >= 0:
            if issued_utc_ms > received_at_ms + rules.future_tolerance_ms:
                ahead_min = (issued_utc_ms - received_at_ms) / 60_000
                return Rejection("issued_in_future", f"issued {ahead_min:.0f} min after the feed received it")
            if issued_utc_ms < received_at_ms - rules.max_lateness_ms:
                late_h = (received_at_ms - issued_utc_ms) / HOUR_MS
                return Rejection(
                    "issued_too_old",
                    f"arrived {late_h:.1f} h after issue; the limit is {rules.max_lateness_ms / HOUR_MS:.0f} h",
                )
        return None


def check_key(seller_id: str, key: bytes | None) -> Rejection | None:
    """The record key must be the seller id: it decides the partition, where dedup and the join happen.

    An invoice published under another key (or none) lands on another partition than its seller's
    registrations and its own earlier copies, so it would be joined wrongly and counted twice.
    """
    if key is None or key != seller_id.encode():
        shown = None if key is None else key[:40]
        return Rejection("invalid_key", f"record key {shown!r} is not the seller id {seller_id[:40]!r}")
    return None


def check_registration(value: dict[str, Any]) -> tuple[dict[str, Any] | None, Rejection | None]:
    """Validate a registry record; returns the value with its name in Unicode NFC."""
    seller_id = value["seller_id"]
    if not SELLER_ID_RE.fullmatch(seller_id):
        return None, Rejection("invalid_seller_id", f"seller id {seller_id[:40]!r} is not a legal form")
    if not VSIC_RE.fullmatch(value["vsic_code"]):
        return None, Rejection("invalid_vsic_code", f"VSIC code {value['vsic_code'][:20]!r} is not four digits")
    if not ADMIN_UNIT_RE.fullmatch(value["admin_unit_code"]):
        return None, Rejection("invalid_admin_unit", f"unit code {value['admin_unit_code'][:20]!r} is not a GSO code")
    name = nfc(value["name"])
    if not name.strip() or len(name) > MAX_NAME_CHARS or _UNPRINTABLE_RE.search(name):
        return None, Rejection(
            "invalid_name",
            f"name {name[:40]!r} ({len(name)} chars) is blank, over {MAX_NAME_CHARS} chars or holds control characters",
        )
    valid_from = value["valid_from"]
    if not EARLIEST_VALID_FROM <= valid_from < LATEST_VALID_FROM:
        return None, Rejection(
            "invalid_valid_from",
            f"valid_from {valid_from.isoformat()} is outside {EARLIEST_VALID_FROM.year}-{LATEST_VALID_FROM.year - 1}",
        )
    return {**value, "name": name}, None

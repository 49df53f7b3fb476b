"""Validation of decoded invoice and registry values: pure functions of one record.

Validity never depends on worker state (the time checks compare the issue time with the
Kafka record's own timestamp, the moment the feed received it), so a record re-read after a
crash gets the same verdict: that is what makes the dead-letter topic exact.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from streams.config import Settings

LOCAL_OFFSET_MS = 7 * 3600 * 1000  # Asia/Ho_Chi_Minh: UTC+7, no daylight saving
DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)

# re.ASCII: \d must not match other scripts' digits (full-width, Arabic-Indic, ...).
SELLER_ID_RE = re.compile(r"^(?:\d{10}|\d{10}-\d{3}|\d{12})$", re.ASCII)
SYMBOL_RE = re.compile(r"^[CK](\d{2})M[0-9A-Z]{2}$", re.ASCII)
VSIC_RE = re.compile(r"^\d{4}$", re.ASCII)
ADMIN_UNIT_RE = re.compile(r"^\d{2,5}$", re.ASCII)
VAT_RATES = frozenset({0, 5, 8, 10})


class Rejection(NamedTuple):
    reason: str
    detail: str


def local_ms(value: datetime) -> int:
    """Milliseconds of a naive local wall-clock time, counted like an epoch (for day arithmetic)."""
    return (value - _EPOCH) // _MS


def local_day(local_wall_ms: int) -> int:
    """Days since 1970-01-01 of a local wall-clock time: the analyst's day."""
    return local_wall_ms // DAY_MS


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
    max_lateness_ms: int = Settings.max_lateness_hours * 3_600_000
    max_amount_vnd: int = Settings.max_amount_vnd
    vat_tolerance_vnd: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> InvoiceRules:
        return cls(
            invoice_code_pattern=settings.invoice_code_pattern,
            future_tolerance_ms=settings.future_tolerance_minutes * 60_000,
            max_lateness_ms=settings.max_lateness_hours * 3_600_000,
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
        if not SELLER_ID_RE.match(seller_id):
            return Rejection(
                "invalid_seller_id", f"seller id {seller_id[:40]!r} is not 10 digits, 10-3 digits or 12 digits"
            )
        form = value["invoice_form"]
        if not 1 <= form <= 9:
            return Rejection("invalid_invoice_form", f"form number {form} is not one digit 1-9")
        symbol = value["invoice_symbol"]
        symbol_match = SYMBOL_RE.match(symbol)
        if symbol_match is None:
            return Rejection(
                "invalid_symbol", f"symbol {symbol[:40]!r} is not of the cash-register kind (C|K, yy, M, xx)"
            )
        code = value["invoice_code"]
        code_match = self._code_re.match(code)
        if code_match is None:
            return Rejection(
                "invalid_invoice_code", f"invoice code {code[:60]!r} does not match the configured pattern"
            )
        if int(code_match.group(1)) != form or code_match.group(2) != symbol_match.group(1):
            return Rejection(
                "invalid_invoice_code",
                f"invoice code {code!r} disagrees with form {form} / symbol {symbol!r} (form digit or year)",
            )
        amount = value["amount_vnd"]
        if amount < 0 or amount > rules.max_amount_vnd:
            return Rejection("invalid_amount", f"amount {amount} VND outside 0..{rules.max_amount_vnd}")
        rate = value["vat_rate"]
        if rate not in VAT_RATES:
            return Rejection("invalid_vat_rate", f"VAT rate {rate}% is not one of 0, 5, 8, 10")
        vat = value["vat_amount_vnd"]
        expected = amount * rate / 100
        if abs(vat - expected) > rules.vat_tolerance_vnd:
            return Rejection("vat_mismatch", f"VAT {vat} VND but {rate}% of {amount} is {expected:.0f}")
        if not value["register_id"]:
            return Rejection("invalid_register_id", "register id is empty")
        issued_utc_ms = local_ms(value["issued_at"]) - LOCAL_OFFSET_MS
        if received_at_ms >= 0:
            if issued_utc_ms > received_at_ms + rules.future_tolerance_ms:
                ahead_min = (issued_utc_ms - received_at_ms) / 60_000
                return Rejection("issued_in_future", f"issued {ahead_min:.0f} min after the feed received it")
            if issued_utc_ms < received_at_ms - rules.max_lateness_ms:
                late_h = (received_at_ms - issued_utc_ms) / 3_600_000
                return Rejection(
                    "issued_too_old",
                    f"arrived {late_h:.1f} h after issue; the limit is {rules.max_lateness_ms / 3_600_000:.0f} h",
                )
        return None


def check_registration(value: dict[str, Any]) -> tuple[dict[str, Any] | None, Rejection | None]:
    """Validate a registry record; returns the value with its name in Unicode NFC."""
    seller_id = value["seller_id"]
    if not SELLER_ID_RE.match(seller_id):
        return None, Rejection("invalid_seller_id", f"seller id {seller_id[:40]!r} is not a legal form")
    if not VSIC_RE.match(value["vsic_code"]):
        return None, Rejection("invalid_vsic_code", f"VSIC code {value['vsic_code'][:20]!r} is not four digits")
    if not ADMIN_UNIT_RE.match(value["admin_unit_code"]):
        return None, Rejection("invalid_admin_unit", f"unit code {value['admin_unit_code'][:20]!r} is not a GSO code")
    return {**value, "name": unicodedata.normalize("NFC", value["name"])}, None

"""Invoice events for a population: valid ones, feed duplicates and malformed ones, each labelled.

The label (``kind``) is the ground truth the tests and the benchmarks count against.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from simulator.population import SECTORS, Business
from streams.codec import AvroCodec

HOUR_WEIGHTS = (
    0.2, 0.1, 0.1, 0.1, 0.2, 0.6, 1.6, 2.6, 2.6, 2.3, 2.4, 3.4,
    3.6, 2.4, 1.9, 1.9, 2.3, 3.1, 4.2, 4.6, 4.1, 3.0, 1.6, 0.6,
)  # fmt: skip
LOCAL_OFFSET = dt.timedelta(hours=7)
PAYMENT_METHODS = ("CARD", "TRANSFER", "EWALLET")

MALFORMED_KINDS = (
    "truncated", "bad_magic_byte", "unknown_schema_id", "invalid_seller_id", "invalid_symbol",
    "invalid_invoice_code", "invalid_amount", "vat_mismatch", "issued_in_future", "issued_too_old",
)  # fmt: skip


@dataclass(frozen=True)
class FeedRecord:
    key: bytes
    value: bytes
    timestamp_ms: int
    kind: str  # "valid", "duplicate" or "malformed:<kind>"
    seller_id: str
    invoice_code: str
    issued_at: dt.datetime
    amount_vnd: int
    vat_amount_vnd: int


def _utc_ms(local: dt.datetime) -> int:
    return int((local - LOCAL_OFFSET).replace(tzinfo=dt.UTC).timestamp() * 1000)


def generate_invoices(
    population: Sequence[Business],
    codec: AvroCodec,
    *,
    start: dt.date,
    days: int,
    total: int,
    seed: int,
    duplicate_share: float = 0.02,
    malformed_share: float = 0.01,
    late_share: float = 0.03,
) -> Iterator[FeedRecord]:
    """``total`` valid invoices over ``days`` days, plus duplicates and malformed records, in arrival order."""
    rng = random.Random(seed)
    profiles = {s.vsic_code: s for s in SECTORS}
    adopters = [b for b in population if b.adopter]
    if not adopters:
        raise ValueError("the population has no adopters")
    weights = [profiles[b.vsic_code].invoices_per_day for b in adopters]
    sequences: dict[tuple[str, str], int] = {}
    out: list[FeedRecord] = []
    malformed_every = int(1 / malformed_share) if malformed_share > 0 else 0
    for i in range(total):
        business = rng.choices(adopters, weights=weights)[0]
        profile = profiles[business.vsic_code]
        day = start + dt.timedelta(days=rng.randrange(days))
        hour = rng.choices(range(24), weights=HOUR_WEIGHTS)[0]
        issued = dt.datetime.combine(
            day, dt.time(hour, rng.randrange(60), rng.randrange(60), rng.randrange(1000) * 1000)
        )
        register = rng.choice(business.registers)
        seq = sequences[(business.seller_id, register)] = sequences.get((business.seller_id, register), 0) + 1
        yy = f"{issued.year % 100:02d}"
        form = 1 if business.seller_id[:2] == "28" else 2
        amount = max(1000, int(rng.lognormvariate(0, 0.6) * profile.ticket_vnd) // 1000 * 1000)
        rate = profile.vat_rate
        value = {
            "seller_id": business.seller_id,
            "invoice_form": form,
            "invoice_symbol": f"C{yy}MTT",
            "invoice_code": f"M{form}-{yy}-{register}-{seq:011d}",
            "issued_at": issued,
            "amount_vnd": amount,
            "vat_rate": rate,
            "vat_amount_vnd": round(amount * rate / 100),
            "payment_method": rng.choice(PAYMENT_METHODS) if rng.random() < profile.non_cash else "CASH",
            "register_id": register,
        }
        delay_ms = rng.randrange(200, 120_000)
        if rng.random() < late_share:
            delay_ms = rng.randrange(3_600_000, 48 * 3_600_000)
        arrival = _utc_ms(issued) + delay_ms
        kind = "valid"
        payload: bytes
        if malformed_every and i % malformed_every == malformed_every - 1:
            bad = MALFORMED_KINDS[(i // malformed_every) % len(MALFORMED_KINDS)]
            kind = f"malformed:{bad}"
            payload, arrival = _corrupt(bad, value, codec, arrival, _utc_ms(issued), rng)
        else:
            payload = codec.encode(value, writer_version=2 if rng.random() < 0.3 else 1)
        record = FeedRecord(
            business.seller_id.encode(), payload, arrival, kind, value["seller_id"], value["invoice_code"],
            issued, value["amount_vnd"], value["vat_amount_vnd"],
        )  # fmt: skip
        out.append(record)
        if kind == "valid" and rng.random() < duplicate_share:
            resent_at = arrival + rng.randrange(1_000, 600_000)
            out.append(dataclasses.replace(record, kind="duplicate", timestamp_ms=resent_at))
    out.sort(key=lambda r: r.timestamp_ms)
    yield from out


def _corrupt(
    bad: str, value: dict[str, object], codec: AvroCodec, arrival: int, issued_utc_ms: int, rng: random.Random
) -> tuple[bytes, int]:
    """Bytes that break exactly one rule of the decoder or validator."""
    v = dict(value)
    if bad == "truncated":
        return codec.encode(v)[: rng.randrange(1, 12)], arrival
    if bad == "bad_magic_byte":
        return b"\x07" + codec.encode(v)[1:], arrival
    if bad == "unknown_schema_id":
        return b"\x00\x00\x00\x03\xe7" + codec.encode(v)[5:], arrival
    if bad == "invalid_seller_id":
        v["seller_id"] = "12345"
    elif bad == "invalid_symbol":
        v["invoice_symbol"] = str(v["invoice_symbol"]).replace("M", "T")
    elif bad == "invalid_invoice_code":
        v["invoice_code"] = "X" + str(v["invoice_code"])[1:]
    elif bad == "invalid_amount":
        v["amount_vnd"] = -abs(int(v["amount_vnd"]))  # type: ignore[call-overload]
        v["vat_amount_vnd"] = round(int(v["amount_vnd"]) * int(v["vat_rate"]) / 100)  # type: ignore[call-overload]
    elif bad == "vat_mismatch":
        v["vat_amount_vnd"] = int(v["vat_amount_vnd"]) + 5000  # type: ignore[call-overload]
    elif bad == "issued_in_future":
        return codec.encode(v), issued_utc_ms - 6 * 3_600_000  # received six hours before it was issued
    elif bad == "issued_too_old":
        return codec.encode(v), issued_utc_ms + 5 * 24 * 3_600_000  # received five days after issue
    return codec.encode(v), arrival

"""Fuzz target: raw Kafka record values through the decoder and the validators (atheris / libFuzzer).

``python -m fuzz.fuzz_decode_validate [libFuzzer flags] [corpus dir]`` (``make fuzz``). Each input
is one record value, tried as an invoice (no record timestamp, and one received mid-feed) and as
a registration. The contract, which the hypothesis tests check too (they import it from here):

- decoding raises nothing but :class:`contracts.codec.DecodeError`, with a reason of ``DECODE_REASONS``;
- a decoded value has exactly the reader schema's fields, and validating it raises nothing: it is
  valid or rejected with a reason of ``INVOICE_REASONS`` / ``REGISTRATION_REASONS`` and a detail;
- a value found valid can be stored: its day and time fit ClickHouse's Date and DateTime64, its
  strings encode as UTF-8 and stay short, its registry version serialises for the Faust changelog;
- the compiled batch core (``einvoice_core``, ``make native``) gives every invoice the reference's
  verdict (the same reason, or valid), and never raises.

Any other exception is a finding: libFuzzer stops and writes the input to a crash file. The seed
corpus is written at start from the simulator (valid invoices and registrations, every malformed
kind) when the corpus directory is empty, so nothing binary is kept in git.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any

import contracts.codec
import contracts.validation
from base.config import INVOICE_SUBJECT, REGISTRY_SUBJECT
from base.localtime import DAY_MS, LOCAL_OFFSET_MS, local_ms
from contracts.codec import DECODE_REASONS, AvroCodec, DecodeError, SchemaCatalog
from contracts.registry import as_version
from contracts.validation import (
    INVOICE_REASONS,
    MAX_NAME_CHARS,
    MAX_REGISTER_ID_CHARS,
    REGISTRATION_REASONS,
    InvoiceValidator,
    Rejection,
    check_key,
    check_registration,
    nfc,
)
from streams import batch_core
from streams.partition import NO_WATERMARK

SCHEMAS = SchemaCatalog.load()
INVOICES = AvroCodec(SCHEMAS, INVOICE_SUBJECT)
REGISTRY = AvroCodec(SCHEMAS, REGISTRY_SUBJECT)
VALIDATOR = InvoiceValidator()
INVOICE_FIELDS = frozenset(f["name"] for f in INVOICES.reader.parsed["fields"])
REGISTRY_FIELDS = frozenset(f["name"] for f in REGISTRY.reader.parsed["fields"])
# Mid-feed of the seed corpus (simulated 2024-06-01..03): seeds are valid at this receive time.
RECEIVED_MS = int(dt.datetime(2024, 6, 2, 12, 0, tzinfo=dt.UTC).timestamp() * 1000)
SELLER_KEY = b"\x00seller"  # stands for "the record key is the value's own seller id"
# What ClickHouse can hold (Date: days 0..65535; DateTime64(3): 1900-01-01..2299-12-31)
_DATE_DAYS = range(0, 65536)
_DATETIME64_MS = range(-2_208_988_800_000, 10_413_792_000_000)
MAX_CHANGELOG_VERSION_BYTES = 8_192  # one registry version in the Faust table; 16 per seller
DEFAULT_CORPUS = Path(__file__).resolve().parent / "corpus"
# the compiled core, when built; fuzzed against the reference verdicts
COMPILED = batch_core.load(
    "auto", topic="einvoice.issued", subject=INVOICE_SUBJECT, schemas=SCHEMAS, rules=VALIDATOR.rules,
    dedup_horizon_ms=72 * 3_600_000,
).core  # fmt: skip


def check_compiled(data: bytes | None, received_ms: int, expected: str | None) -> None:
    """The compiled core's verdict on one record, alone in a fresh partition, is the reference's, detail and all."""
    if COMPILED is None:
        return
    try:
        seller_id = INVOICES.decode(data)[1]["seller_id"]
        key = seller_id.encode("utf-8", "surrogatepass")
    except (DecodeError, KeyError, TypeError):
        key = b"-"
    COMPILED.drop(0)
    COMPILED.restore(0, -1, -1, NO_WATERMARK, (), ())
    prepared = COMPILED.prepare(0, [0], [key], [data], [received_ms], lambda seller: None)
    got = prepared.rejected[0][1:] if prepared.rejected else None
    reference = _reference_rejection(data, received_ms, key)
    assert got == reference, f"compiled core: {got!r}, reference: {reference!r}"
    assert (reference and reference[0]) == expected
    assert prepared.rows == (1 if expected is None else 0)


def _reference_rejection(data: bytes | None, received_ms: int, key: bytes) -> tuple[str, str] | None:
    """The reference's (reason, detail), the DLQ's two headers, for one record with this key."""
    try:
        _, value = INVOICES.decode(data)
    except DecodeError as exc:
        return exc.reason, exc.detail
    rejection = VALIDATOR.check(value, received_ms) or check_key(value["seller_id"], key)
    return None if rejection is None else (rejection.reason, rejection.detail)


def _key(key: bytes | None, seller_id: str) -> bytes | None:
    return seller_id.encode() if key == SELLER_KEY else key


def _rejected(rejection: Rejection, reasons: frozenset[str]) -> str:
    assert rejection.reason in reasons, f"undocumented reason {rejection.reason!r}"
    assert rejection.detail, f"{rejection.reason} without a detail"
    return rejection.reason


def check_invoice_bytes(data: bytes | None, received_ms: int, key: bytes | None = SELLER_KEY) -> str | None:
    """The invoice path's verdict on one record value: a reason, or None when valid (asserts the contract)."""
    try:
        _, value = INVOICES.decode(data)
    except DecodeError as exc:
        assert exc.reason in DECODE_REASONS, f"undocumented decode reason {exc.reason!r}"
        return exc.reason
    return check_invoice_value(value, received_ms, key)


def check_invoice_value(value: dict[str, Any], received_ms: int, key: bytes | None = SELLER_KEY) -> str | None:
    """The validator's verdict on a decoded invoice (asserts the contract; valid means storable)."""
    assert frozenset(value) == INVOICE_FIELDS, f"decoded fields {sorted(value)}"
    rejection = VALIDATOR.check(value, received_ms) or check_key(value["seller_id"], _key(key, value["seller_id"]))
    if rejection is not None:
        return _rejected(rejection, INVOICE_REASONS)
    assert_invoice_storable(value)
    return None


def assert_invoice_storable(value: dict[str, Any]) -> None:
    """A valid invoice fits the ``invoices`` columns (an insert that fails is retried for ever)."""
    local = local_ms(value["issued_at"])
    assert local // DAY_MS in _DATE_DAYS, f"issue day of {value['issued_at']} is outside ClickHouse's Date"
    assert local - LOCAL_OFFSET_MS in _DATETIME64_MS, f"{value['issued_at']} is outside DateTime64"
    assert 1 <= value["invoice_form"] <= 9 and value["vat_rate"] in (0, 5, 8, 10)
    assert 0 <= value["amount_vnd"] < 2**63 and 0 <= value["vat_amount_vnd"] < 2**63
    for name in ("seller_id", "invoice_symbol", "invoice_code", "buyer_tax_code"):  # codes: ASCII letters, digits, -
        code = value[name] or "0"
        assert code.isascii() and code.replace("-", "").isalnum(), f"{name} {code[:40]!r} passed as a code"
    assert len(value["seller_id"]) <= 14 and len(value["invoice_symbol"]) == 6
    assert 1 <= len(value["register_id"]) <= MAX_REGISTER_ID_CHARS
    for text in (value["seller_id"], value["invoice_code"], nfc(value["register_id"]), value["buyer_tax_code"] or ""):
        text.encode("utf-8")  # raises on a lone surrogate, as the ClickHouse client would


def check_registration_bytes(data: bytes | None, key: bytes | None = SELLER_KEY) -> str | None:
    """The registry path's verdict on one record value (asserts the contract; valid means storable)."""
    try:
        _, value = REGISTRY.decode(data)
    except DecodeError as exc:
        assert exc.reason in DECODE_REASONS, f"undocumented decode reason {exc.reason!r}"
        return exc.reason
    return check_registration_value(value, key)


def check_registration_value(value: dict[str, Any], key: bytes | None = SELLER_KEY) -> str | None:
    assert frozenset(value) == REGISTRY_FIELDS, f"decoded fields {sorted(value)}"
    checked, rejection = check_registration(value)
    if rejection is None:
        assert checked is not None
        rejection = check_key(checked["seller_id"], _key(key, checked["seller_id"]))
    if rejection is not None:
        assert checked is None or rejection.reason == "invalid_key"
        return _rejected(rejection, REGISTRATION_REASONS)
    assert checked is not None
    assert (checked["valid_from"] - dt.date(1970, 1, 1)).days in _DATE_DAYS, "valid_from outside ClickHouse's Date"
    assert checked["name"] == nfc(checked["name"]) and len(checked["name"]) <= MAX_NAME_CHARS
    for name in ("seller_id", "vsic_code", "admin_unit_code"):  # codes: ASCII digits (and a branch's hyphen)
        assert checked[name].isascii() and checked[name].replace("-", "").isdigit(), name
    for text in (checked["seller_id"], checked["name"], checked["vsic_code"], checked["admin_unit_code"]):
        text.encode("utf-8")
    assert len(json.dumps(as_version(checked)).encode()) <= MAX_CHANGELOG_VERSION_BYTES
    return None


def TestOneInput(data: bytes) -> None:  # libFuzzer's name
    """One fuzz input: a record value, as an invoice (twice) and as a registration."""
    for received_ms in (-1, RECEIVED_MS):
        check_compiled(data, received_ms, check_invoice_bytes(data, received_ms))
    check_registration_bytes(data)


def seed_corpus(directory: Path, invoices: int = 300) -> int:
    """Valid and malformed records of a small simulated feed, plus registrations; returns files written."""
    from simulator.engine import Simulation, SimulationConfig

    sim = Simulation(SimulationConfig(scale=0.002, start=dt.date(2024, 6, 1), days=3, seed=8, target_invoices=invoices))
    directory.mkdir(parents=True, exist_ok=True)
    seeds = {r.value for r in sim.feed_records()}
    seeds |= {sim.registry_codec.encode(v) for v in sim.registrations()[:50]}
    for i, seed in enumerate(sorted(seeds)):
        (directory / f"seed-{i:04d}").write_bytes(seed)
    return len(seeds)


def _instrument(atheris: Any, module: ModuleType) -> None:
    """Coverage feedback from our own code only: instrumenting everything loaded takes a minute.

    fastavro's reader is compiled, so it stays opaque either way; the fuzzer steers by the
    branches of the codec and the validators.
    """
    for obj in vars(module).values():
        members = vars(obj).values() if isinstance(obj, type) and obj.__module__ == module.__name__ else (obj,)
        for member in members:
            func = getattr(member, "__func__", member)
            if isinstance(func, FunctionType) and func.__module__ == module.__name__:
                atheris.instrument_func(func)


def main(argv: list[str]) -> None:
    """libFuzzer's command line; the first positional argument is the corpus (seeded when empty)."""
    import atheris

    corpus = [Path(a) for a in argv[1:] if not a.startswith("-")]
    if not corpus:
        corpus = [DEFAULT_CORPUS]
        argv = [*argv, str(DEFAULT_CORPUS)]
    if not corpus[0].is_dir() or not any(corpus[0].iterdir()):
        print(f"seeding {corpus[0]} with {seed_corpus(corpus[0])} records from the simulator", file=sys.stderr)
    for module in (contracts.codec, contracts.validation, sys.modules[__name__]):
        _instrument(atheris, module)
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)

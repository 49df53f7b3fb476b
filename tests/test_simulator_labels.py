"""The simulator's labels are the ground truth of the ingest tests: check them against the validator."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from simulator.feed import MALFORMED_KINDS, generate_invoices
from simulator.population import build_population
from streams.codec import AvroCodec, DecodeError, SchemaRegistry
from streams.config import INVOICE_SUBJECT
from streams.validation import InvoiceValidator


def test_every_label_matches_the_validators_verdict():
    codec = AvroCodec(SchemaRegistry.load(), INVOICE_SUBJECT)
    population = build_population(300, seed=3)
    records = list(
        generate_invoices(population, codec, start=dt.date(2024, 6, 1), days=3, total=30_000, seed=5, late_share=0.2)
    )
    validator = InvoiceValidator()
    verdicts: Counter[tuple[str, str]] = Counter()
    for record in records:
        try:
            _, value = codec.decode(record.value)
            rejection = validator.check(value, record.timestamp_ms)
            verdict = rejection.reason if rejection else "ok"
        except DecodeError as exc:
            verdict = exc.reason
        label = "ok" if record.kind in ("valid", "duplicate") else record.kind.split(":", 1)[1]
        verdicts[(label, verdict)] += 1
    agreed = {("truncated", "malformed_bytes")}  # the one label named after what was done, not the verdict
    mismatched = {k: n for k, n in verdicts.items() if k[0] != k[1] and k not in agreed}
    assert not mismatched, mismatched
    assert {label for label, _ in verdicts} == {"ok", *MALFORMED_KINDS}


def test_same_seed_same_bytes():
    codec = AvroCodec(SchemaRegistry.load(), INVOICE_SUBJECT)
    population = build_population(50, seed=1)

    def run():
        feed = generate_invoices(population, codec, start=dt.date(2024, 6, 1), days=2, total=2000, seed=9)
        return [(r.key, r.value, r.timestamp_ms) for r in feed]

    assert run() == run()

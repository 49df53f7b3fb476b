"""The simulator's labels are the ground truth of the ingest tests: check them against the decoder and validator."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from contracts.codec import DecodeError
from contracts.validation import SELLER_ID_RE, InvoiceValidator
from simulator.engine import Simulation, SimulationConfig
from simulator.feed import CLASSIC_MALFORMED_KINDS, MALFORMED_KINDS, MALFORMED_REASON


def verdict(sim: Simulation, record) -> str:
    try:
        _, value = sim.codec.decode(record.value)
    except DecodeError as exc:
        return exc.reason
    rejection = InvoiceValidator().check(value, record.timestamp_ms)
    return rejection.reason if rejection else "ok"


@pytest.fixture(scope="module")
def labelled():
    sim = Simulation(SimulationConfig(scale=0.004, days=3, seed=5, late_share=0.2, malformed_share=0.02))
    return sim, list(sim.feed_records())


def test_every_label_matches_the_validators_verdict(labelled):
    sim, records = labelled
    verdicts: Counter[tuple[str, str]] = Counter()
    for record in records:
        label = "ok" if record.kind in ("valid", "duplicate") else MALFORMED_REASON[record.kind.split(":", 1)[1]]
        verdicts[(label, verdict(sim, record))] += 1
    mismatched = {k: n for k, n in verdicts.items() if k[0] != k[1]}
    assert not mismatched, mismatched
    kinds = Counter(r.kind for r in records if r.kind.startswith("malformed:"))
    assert set(kinds) == {f"malformed:{k}" for k in MALFORMED_KINDS}
    # in turn: every kind equally often, within one
    assert max(kinds.values()) - min(kinds.values()) <= 1


def test_each_malformed_record_breaks_one_rule_of_a_clean_invoice(labelled):
    """The labelled fields describe the clean invoice; the bytes differ from it in the labelled way only."""
    sim, records = labelled
    for record in records:
        if record.kind == "malformed:invalid_seller_id":
            _, value = sim.codec.decode(record.value)
            assert value["seller_id"] == "12345" and SELLER_ID_RE.match(record.seller_id)
            assert value["invoice_code"] == record.invoice_code and value["amount_vnd"] == record.amount_vnd
        if record.kind == "malformed:issued_too_old":
            issued_ms = (record.issued_at - dt.datetime(1970, 1, 1)).total_seconds() * 1000 - 7 * 3_600_000
            assert record.timestamp_ms - issued_ms > 4 * 86_400_000


def test_the_classic_kinds_only_when_asked():
    sim = Simulation(SimulationConfig(scale=0.003, days=2, seed=2, malformed_kinds=CLASSIC_MALFORMED_KINDS))
    kinds = {r.kind.split(":", 1)[1] for r in sim.feed_records() if r.kind.startswith("malformed:")}
    assert kinds == set(CLASSIC_MALFORMED_KINDS)


def test_valid_records_are_what_the_codec_would_write(labelled):
    """The bulk encoder's bytes equal AvroCodec.encode of the decoded value, v1 and v2, with and without buyer."""
    sim, records = labelled
    seen = Counter()
    for record in records:
        if record.kind != "valid":
            continue
        schema_id, value = sim.codec.decode(record.value)
        version = 1 if schema_id == 1 else 2
        assert sim.codec.encode(value, writer_version=version) == record.value
        assert value["invoice_code"] == record.invoice_code and value["issued_at"] == record.issued_at
        assert value["vat_amount_vnd"] == record.vat_amount_vnd == value["amount_vnd"] * value["vat_rate"] // 100
        seen[(version, value.get("buyer_tax_code") is not None)] += 1
    assert {(1, False), (2, False), (2, True)} <= set(seen)


def test_same_seed_same_bytes_other_seed_other_bytes():
    def run(seed: int) -> list[tuple[bytes, bytes, int, str]]:
        sim = Simulation(SimulationConfig(scale=0.003, days=2, seed=seed))
        return [(r.key, r.value, r.timestamp_ms, r.kind) for r in sim.feed_records()]

    first = run(9)
    assert first == run(9)
    assert first != run(10)


def test_records_leave_in_arrival_order_and_codes_are_unique(labelled):
    _, records = labelled
    stamps = [r.timestamp_ms for r in records]
    assert stamps == sorted(stamps)
    originals = [(r.seller_id, r.invoice_code) for r in records if r.kind != "duplicate"]
    assert len(set(originals)) == len(originals)
    # a register's sequence numbers follow its issue times
    by_register: dict[tuple[str, str], list[tuple[dt.datetime, int]]] = {}
    for r in records:
        if r.kind == "valid":
            register, seq = r.invoice_code.split("-")[2:4]
            by_register.setdefault((r.seller_id, register), []).append((r.issued_at, int(seq)))
    for pairs in by_register.values():
        pairs.sort()
        assert [s for _, s in pairs] == sorted(s for _, s in pairs)

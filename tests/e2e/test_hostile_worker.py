"""100,000 hostile records through the running worker, between 20,000 valid invoices.

Every hostile record is made from a valid one of the simulated feed, broken in one known way,
so its dead-letter reason is known in advance: bytes (truncated, random, wrong magic byte,
unknown or foreign schema id, trailing garbage, absurd lengths, invalid UTF-8, null values),
values that are valid Avro but break a rule at its limits (every field), absurd dates with and
without a record timestamp, wrong or missing keys, huge strings (up to 5 MB, compressed by the
producer below the broker's 1 MiB limit). Then: the worker never died nor hung, ``invoices``
holds exactly the valid invoices (also a few hundred whose register ids are non-NFC Vietnamese,
stored in NFC), and the DLQ holds each hostile record once, with its reason and its bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from base.config import INVOICE_SUBJECT
from base.localtime import LOCAL_OFFSET_MS
from contracts.codec import DECODE_REASONS, AvroCodec, SchemaCatalog
from contracts.validation import INVOICE_REASONS
from kafka_io.publish import Publisher, partition_for
from kafka_io.topics import DLQ_MAX_MESSAGE_BYTES
from simulator.encoding import varint
from simulator.feed import MALFORMED_REASON, FeedRecord, local_datetime
from sinks.dead_letter import (
    H_ORIGINAL,
    H_REASON,
    H_SOURCE_OFFSET,
    fit_record,
    record_size,
)
from tests.support import (
    PublishedFeed,
    expected_totals,
    open_store,
    read_topic,
    segment_totals,
    start_worker,
    wait_consumed,
)

CODEC = AvroCodec(SchemaCatalog.load(), INVOICE_SUBJECT)
WEIGHTED = 100_000  # hostile records drawn by weight; the fixed kinds below come on top
NFD_REGISTER_IDS = 400  # valid invoices whose register id is decomposed Vietnamese
BIG = 300_000  # characters of a huge string
NEAR_LIMIT = 1_048_400  # a compressible string: the record is 1 MiB before compression
MONSTER = 5_000_000  # compressible to ~20 KB, so the broker takes it; beyond the DLQ's limit uncompressed
YEAR_1_MS = -62_135_596_800_000
FULL_WIDTH = "０１２３４５６７８９"

Maker = Callable[[dict[str, Any], FeedRecord, random.Random], tuple[bytes | None, bytes | None, int] | dict]


def encode(value: dict[str, Any]) -> bytes:
    return CODEC.encode({"buyer_tax_code": None, **value})


def raw(fn: Callable[[bytes, random.Random], bytes | None]) -> Maker:
    """A kind that breaks the bytes of the template record."""
    return lambda value, template, rng: (template.key, fn(template.value, rng), template.timestamp_ms)


def changed(fn: Callable[[dict[str, Any], random.Random], dict[str, Any]]) -> Maker:
    """A kind that changes field values of the template invoice (and encodes them as valid Avro)."""
    return lambda value, template, rng: (template.key, encode({**value, **fn(value, rng)}), template.timestamp_ms)


def stamped(fn: Callable[[dict[str, Any], random.Random], dict[str, Any]], timestamp_ms: int) -> Maker:
    """Changed field values, and the record timestamp set (-1: none, which Kafka accepts)."""
    return lambda value, template, rng: (template.key, encode({**value, **fn(value, rng)}), timestamp_ms)


def keyed(fn: Callable[[FeedRecord, random.Random], bytes | None]) -> Maker:
    """The template record under another key."""
    return lambda value, template, rng: (fn(template, rng), template.value, template.timestamp_ms)


def random_bytes(data: bytes, rng: random.Random) -> bytes:
    """5 to 200 random bytes; the first is not 0, so the frame's magic byte is wrong."""
    return bytes([rng.randint(1, 255)]) + rng.randbytes(rng.randrange(4, 200))


def invalid_utf8(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    out[6 + rng.randrange(10)] = rng.choice([0xFF, 0xFE, 0x80, 0xC0])  # inside the seller id (>= 10 bytes)
    return bytes(out)


def received_plus(offset_ms: int) -> Maker:
    """Issued ``offset_ms`` after the feed received it (the template may itself have arrived late)."""

    def make(value: dict[str, Any], template: FeedRecord, rng: random.Random) -> tuple[bytes, bytes, int]:
        issued_at = local_datetime(template.timestamp_ms + LOCAL_OFFSET_MS + offset_ms)
        return template.key, encode({**value, "issued_at": issued_at}), template.timestamp_ms

    return make


def at(when: dt.datetime) -> Callable[[dict[str, Any], random.Random], dict[str, Any]]:
    return lambda v, rng: {"issued_at": when}


def pick(*values: Any) -> Callable[[dict[str, Any], random.Random], Any]:
    return lambda v, rng: rng.choice(values)


def field(name: str, choose: Callable[[dict[str, Any], random.Random], Any]) -> Maker:
    return changed(lambda v, rng: {name: choose(v, rng)})


# kind -> (expected reason, weight, maker); the weights share WEIGHTED records
KINDS: dict[str, tuple[str, int, Maker]] = {
    "truncated": ("malformed_bytes", 12, raw(lambda b, rng: b[: rng.randrange(len(b))])),
    "random_bytes": ("bad_magic_byte", 12, raw(random_bytes)),
    "short_bytes": ("malformed_bytes", 3, raw(lambda b, rng: rng.randbytes(rng.randint(0, 4)))),
    "null_value": ("malformed_bytes", 2, raw(lambda b, rng: None)),
    "wrong_magic_byte": ("bad_magic_byte", 5, raw(lambda b, rng: bytes([rng.randint(1, 255)]) + b[1:])),
    "unknown_schema_id": ("unknown_schema_id", 5, raw(
        lambda b, rng: b"\x00" + rng.choice([0, rng.randint(4, 2**32 - 1)]).to_bytes(4, "big") + b[5:])),
    "wrong_subject": ("wrong_subject", 3, raw(lambda b, rng: b"\x00\x00\x00\x00\x02" + b[5:])),
    "trailing_garbage": ("malformed_bytes", 4, raw(lambda b, rng: b + rng.randbytes(rng.randint(1, 20)))),
    "absurd_length": ("malformed_bytes", 3, raw(lambda b, rng: b[:5] + varint(rng.choice([2**31, 2**62, -5])) + b[6:])),
    "invalid_utf8": ("malformed_bytes", 5, raw(invalid_utf8)),
    "seller_id": ("invalid_seller_id", 6, field("seller_id", lambda v, rng: rng.choice(
        [v["seller_id"] + "\n", v["seller_id"][:9], FULL_WIDTH[int(v["seller_id"][0])] + v["seller_id"][1:], "",
         " " + v["seller_id"], v["seller_id"] + "-01"]))),
    "invoice_form": ("invalid_invoice_form", 3, field("invoice_form", pick(0, -1, 10, 2**31 - 1, -(2**31)))),
    "invoice_symbol": ("invalid_symbol", 3, field("invoice_symbol", lambda v, rng: rng.choice(
        [v["invoice_symbol"].replace("M", "T"), v["invoice_symbol"] + "\n", v["invoice_symbol"].lower(),
         unicodedata.normalize("NFD", v["invoice_symbol"][:4] + "Ó" + v["invoice_symbol"][5:])]))),
    "invoice_code": ("invalid_invoice_code", 4, field("invoice_code", lambda v, rng: rng.choice(
        [v["invoice_code"] + "\n", "X" + v["invoice_code"][1:], v["invoice_code"][:-1],
         v["invoice_code"][:3] + f"{(int(v['invoice_code'][3:5]) + 1) % 100:02d}" + v["invoice_code"][5:]]))),
    "amount": ("invalid_amount", 3, field("amount_vnd", pick(-1, -(2**63), 2_000_000_001, 2**63 - 1))),
    "vat_rate": ("invalid_vat_rate", 2, field("vat_rate", pick(7, -1, 2**31 - 1, 100))),
    "vat_amount": ("vat_mismatch", 3, field("vat_amount_vnd", lambda v, rng: rng.choice(
        [v["vat_amount_vnd"] + 2, 2**63 - 1, -(2**63), -1 - v["vat_amount_vnd"]]))),
    "negative_vat_of_zero": ("vat_mismatch", 1, changed(lambda v, rng: {"amount_vnd": 0, "vat_amount_vnd": -1})),
    "register_id": ("invalid_register_id", 3, field("register_id", pick("", "x" * 65, "A\nB", "A\x00B", "A\u202eB"))),
    "buyer_tax_code": ("invalid_buyer_tax_code", 3, field(
        "buyer_tax_code", pick("", "abc", "0100109106\n", "０100109106", "0100109106 "))),
    "issued_year_1": ("issued_too_old", 1, field("issued_at", pick(dt.datetime(1, 1, 1)))),
    "issued_year_9999": ("issued_in_future", 1, field("issued_at", pick(dt.datetime(9999, 12, 31, 23, 59, 59)))),
    "issued_11_min_ahead": ("issued_in_future", 2, received_plus(11 * 60_000)),
    "issued_73_h_before": ("issued_too_old", 2, received_plus(-73 * 3_600_000)),
    "no_timestamp_year_1": ("issued_too_old", 1, stamped(at(dt.datetime(1, 1, 1)), -1)),
    "no_timestamp_year_9999": ("issued_in_future", 1, stamped(at(dt.datetime(9999, 1, 1)), -1)),
    "no_timestamp_after_2149": ("issued_in_future", 1, stamped(at(dt.datetime(2149, 6, 7)), -1)),
    "timestamp_year_1": ("issued_too_old", 1, stamped(at(dt.datetime(1, 1, 1)), YEAR_1_MS)),
    "key_of_another_seller": ("invalid_key", 2, keyed(lambda t, rng: str(int(t.key[:10]) + 1).encode() + t.key[10:])),
    "key_with_newline": ("invalid_key", 1, keyed(lambda t, rng: t.key + b"\n")),
}  # fmt: skip
FIXED: dict[str, tuple[str, int, Maker]] = {
    "null_key": ("invalid_key", 500, keyed(lambda t, rng: None)),
    "huge_seller_id": ("invalid_seller_id", 20, field("seller_id", lambda v, rng: "9" * BIG)),
    "huge_register_id": ("invalid_register_id", 20, field("register_id", lambda v, rng: "Quầy " * (BIG // 5))),
    "huge_invoice_code": ("invalid_invoice_code", 10, field("invoice_code", lambda v, rng: "M1-24-" + "9" * BIG)),
    "huge_buyer_tax_code": ("invalid_buyer_tax_code", 10, field("buyer_tax_code", lambda v, rng: "0" * BIG)),
    "near_1_mib": ("invalid_seller_id", 3, field("seller_id", lambda v, rng: "9" * NEAR_LIMIT)),
    "monster_5_mb": ("invalid_seller_id", 2, field("seller_id", lambda v, rng: "8" * MONSTER)),
}  # fmt: skip
assert set(KINDS).isdisjoint(FIXED)
assert {r for r, _, _ in (*KINDS.values(), *FIXED.values())} <= DECODE_REASONS | INVOICE_REASONS


def hostile_records(valid: list[FeedRecord], rng: random.Random) -> list[FeedRecord]:
    """WEIGHTED records of the weighted kinds plus the fixed ones, each from a random valid template."""
    kinds = list(KINDS)
    drawn = rng.choices(kinds, weights=[KINDS[k][1] for k in kinds], k=WEIGHTED)
    drawn += [kind for kind, (_, count, _) in FIXED.items() for _ in range(count)]
    decoded: dict[int, dict[str, Any]] = {}
    out = []
    for kind in drawn:
        i = rng.randrange(len(valid))
        template = valid[i]
        if i not in decoded:
            decoded[i] = CODEC.decode(template.value)[1]
        make = KINDS[kind][2] if kind in KINDS else FIXED[kind][2]
        key, value, timestamp = make(decoded[i], template, rng)
        out.append(template._replace(key=key, value=value, timestamp_ms=timestamp, kind=f"hostile:{kind}"))
    return out


def nfd_register_ids(valid: list[FeedRecord], rng: random.Random) -> list[FeedRecord]:
    """Valid invoices of their own (new sequence numbers) whose register ids are decomposed Vietnamese."""
    out = []
    for n, template in enumerate(rng.sample(valid, NFD_REGISTER_IDS)):
        value = CODEC.decode(template.value)[1]
        code = value["invoice_code"][:-11] + f"{99_000_000_000 + n:011d}"
        register = unicodedata.normalize("NFD", f"Quầy Hoằng Hóa {n}")
        out.append(template._replace(value=encode({**value, "invoice_code": code, "register_id": register}),
                                     invoice_code=code, kind="valid"))  # fmt: skip
    return out


def reason(record: FeedRecord) -> str:
    kind = record.kind.split(":", 1)[1]
    if record.kind.startswith("malformed:"):
        return MALFORMED_REASON[kind]
    return KINDS[kind][0] if kind in KINDS else FIXED[kind][0]


def identity(record: FeedRecord) -> tuple:
    """How its dead letter is recognised: the bytes, or the SHA-256 of those too large for the DLQ."""
    if record.kind == "hostile:monster_5_mb":
        return record.key, "sha256", hashlib.sha256(record.value).hexdigest()
    return record.key, record.value


def test_100k_hostile_records_through_the_worker(settings):
    settings = settings.replace(batch_size=10_000)
    rng = random.Random(8)
    extra: dict[str, list[FeedRecord]] = {}

    def mix(records: list[FeedRecord]) -> list[FeedRecord]:
        """The simulated feed with the hostile records and the NFD-register invoices interleaved at random."""
        valid = [r for r in records if r.kind == "valid"]
        extra["hostile"] = hostile_records(valid, rng)
        extra["nfd"] = nfd_register_ids(valid, rng)
        others = [r for r in extra["hostile"] + extra["nfd"] if r.key is not None]
        rng.shuffle(others)
        order = [0] * len(records) + [1] * len(others)
        rng.shuffle(order)
        streams = (iter(records), iter(others))
        return [next(streams[o]) for o in order]

    started = time.perf_counter()
    feed = PublishedFeed(settings, sellers=2000, invoices=20_000, seed=31, unregistered=20, mix=mix)
    nulls = [r for r in extra["hostile"] if r.key is None]  # a null key needs an explicit partition
    publisher = Publisher(settings.kafka_brokers or "")
    try:
        partitions = np.array([partition_for(r.seller_id.encode(), settings.partitions) for r in nulls])
        publisher.send(settings.topics.invoices, partitions, [None] * len(nulls), [r.value for r in nulls],
                       [r.timestamp_ms for r in nulls])  # fmt: skip
    finally:
        publisher.close()
    published = len(feed.published) + len(nulls)
    publish_s = time.perf_counter() - started
    hostile = extra["hostile"]
    rejected = hostile + feed.malformed
    valid = feed.valid + extra["nfd"]
    assert len(hostile) >= 100_000 and len(valid) >= 20_000

    worker = start_worker(settings)
    pid = worker.proc.pid if worker.proc else None
    consumed_at = time.perf_counter()
    try:
        wait_consumed(settings, worker, timeout=900)
        consume_s = time.perf_counter() - consumed_at
        assert worker.running and worker.proc is not None and worker.proc.pid == pid  # never died, never restarted
        metrics = worker.metrics()
    finally:
        worker.stop()
    print(
        f"\npublished {published:,} records ({len(hostile):,} hostile) in {publish_s:.1f} s; the worker consumed them "
        f"in {consume_s:.1f} s after start-up: {published / consume_s:,.0f} records/s"
    )
    log = worker.log_path.read_text(errors="replace")
    assert "unrecoverable error" not in log and "Retrying" not in log, worker.tail()  # no crash, no stuck insert

    topic = settings.topics.invoices
    expected_reasons = Counter(reason(r) for r in rejected)
    by_reason = {
        dict(labels)["reason"]: int(v) for (name, labels), v in metrics.items()
        if name == "einvoice_rejected_total" and dict(labels).get("topic") == topic
    }  # fmt: skip
    assert {r: n for r, n in by_reason.items() if n} == dict(expected_reasons)
    events = sum(
        v for (name, labels), v in metrics.items() if name == "einvoice_events_total" and dict(labels)["topic"] == topic
    )
    assert events == published

    store = open_store(settings)
    try:
        rows = store.query_rows("SELECT seller_id, invoice_code, register_id FROM invoices")
        assert len(rows) == len(valid)
        assert {(s, c) for s, c, _ in rows} == {(r.seller_id, r.invoice_code) for r in valid}
        nfd_codes = {r.invoice_code for r in extra["nfd"]}
        stored = [reg for _, c, reg in rows if c in nfd_codes]
        assert len(stored) == NFD_REGISTER_IDS and all(reg == unicodedata.normalize("NFC", reg) for reg in stored)
        assert all(reg.startswith("Quầy Hoằng Hóa ") for reg in stored)
        assert segment_totals(store) == expected_totals(feed.records + extra["nfd"], feed.registered)
    finally:
        store.close()

    dlq = read_topic(settings, settings.topics.invoices_dlq)
    assert len(dlq) == len(rejected)
    assert len({(r.partition, int(dict(r.headers)[H_SOURCE_OFFSET])) for r in dlq}) == len(dlq)  # each once
    found = Counter()
    for record in dlq:
        headers = dict(record.headers)
        cut = headers.get(f"{H_ORIGINAL}.value.sha256")
        if cut is not None:  # cut down to fit: a prefix of the original, whose size and digest it names
            assert len(record.value) < int(headers[f"{H_ORIGINAL}.value.bytes"])
            found[(record.key, "sha256", cut.decode()), headers[H_REASON].decode()] += 1
        else:
            found[(record.key, record.value), headers[H_REASON].decode()] += 1
    assert found == Counter((identity(r), reason(r)) for r in rejected)
    assert sum(1 for r in dlq if f"{H_ORIGINAL}.value.sha256" in dict(r.headers)) == FIXED["monster_5_mb"][1]


def test_a_dead_letter_always_fits_the_dlq():
    """What the source topic took compressed can be far larger uncompressed: the letter is cut, and says so."""
    headers = [("dlq.reason", b"invalid_seller_id"), ("dlq.detail", b"x" * 2000), ("trace", b"t" * 50_000)]
    key, value = b"2800000001", b"9" * 5_000_000
    for limit in (1_048_588, DLQ_MAX_MESSAGE_BYTES):
        k, v, h = fit_record(key, value, headers, limit)
        assert record_size(k, v, h) <= limit and k == key and value.startswith(v)
        assert dict(h)[f"{H_ORIGINAL}.value.bytes"] == b"5000000"
        assert dict(h)[f"{H_ORIGINAL}.value.sha256"] == hashlib.sha256(value).hexdigest().encode()
    small = fit_record(key, b"abc", headers, 1_048_588)
    assert small == (key, b"abc", headers)  # what fits keeps its bytes and headers
    k, v, h = fit_record(b"k" * 3_000_000, b"v" * 10, [("trace", b"t" * 2_000_000)], 1_048_588)
    assert record_size(k, v, h) <= 1_048_588 and dict(h)[f"{H_ORIGINAL}.key.bytes"] == b"3000000"
    assert "trace" not in dict(h)  # the source's own headers go last, when nothing else is left to cut

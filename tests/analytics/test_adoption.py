"""Adoption per sector × unit × day, against an independent count of what was published."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from kafka import KafkaProducer

from analytics.adoption import adoption
from analytics.units import AdminUnit, UnitHierarchy
from base.config import REGISTRY_SUBJECT
from contracts.codec import AvroCodec, SchemaCatalog
from tests.support import PublishedFeed, consume_all, open_store

START = dt.date(2024, 6, 1)


def test_unit_hierarchy_maps_communes_up_to_the_configured_level():
    hierarchy = UnitHierarchy(
        [
            AdminUnit("38", "Tỉnh Thanh Hóa", "province", ""),
            AdminUnit("399", "Huyện Hoằng Hóa", "district", "38"),
            AdminUnit("15850", "Xã Hoằng Lộc", "commune", "399"),
        ]
    )
    assert hierarchy.ancestor("15850", "district") == "399"
    assert hierarchy.ancestor("15850", "province") == "38"
    assert hierarchy.ancestor("399", "commune") == ""
    assert hierarchy.ancestor("unknown", "district") == ""


def test_adoption_matches_an_independent_count_with_registry_as_of_each_day(settings):
    feed = PublishedFeed(settings, sellers=300, invoices=4000, seed=21, days=6)
    codec = AvroCodec(SchemaCatalog.load(), REGISTRY_SUBJECT)
    # registry changes inside the window: one seller moves district, one closes, one is new and silent
    mover, closer = feed.in_registry[0], feed.in_registry[1]
    changes = [
        {**mover.registration(), "admin_unit_code": "384", "valid_from": START + dt.timedelta(days=3)},
        {**closer.registration(), "status": "CLOSED", "valid_from": START + dt.timedelta(days=2)},
        {"seller_id": "2899999999", "name": "Cửa hàng mới", "vsic_code": "4711", "admin_unit_code": "380",
         "obliged": True, "status": "ACTIVE", "valid_from": START + dt.timedelta(days=4)},
    ]  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=settings.kafka_brokers, acks="all")
    for value in changes:
        producer.send(settings.topics.registry, key=value["seller_id"].encode(), value=codec.encode(value))
    producer.flush()
    producer.close()

    consume_all(settings, timeout=180)

    versions: dict[str, list[dict]] = defaultdict(list)
    for business in feed.in_registry:
        versions[business.seller_id].append(business.registration())
    for value in changes:
        versions[value["seller_id"]].append(value)
    issued_days: dict[str, set[dt.date]] = defaultdict(set)
    for record in feed.valid:
        if record.seller_id in feed.registered:
            issued_days[record.seller_id].add(record.issued_at.date())

    expected: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    end = START + dt.timedelta(days=5)
    day = START
    while day <= end:
        for seller_id, seller_versions in versions.items():
            current = max(
                (v for v in seller_versions if v["valid_from"] <= day), key=lambda v: v["valid_from"], default=None
            )
            if current is None or not current["obliged"] or current["status"] != "ACTIVE":
                continue
            active = any(day - dt.timedelta(days=6) <= d <= day for d in issued_days[seller_id])
            for key in [(day, current["vsic_code"], current["admin_unit_code"]), (day, "*", "*"),
                        (day, current["vsic_code"], "*"), (day, "*", current["admin_unit_code"])]:  # fmt: skip
                expected[key][0] += 1
                expected[key][1] += int(active)
        day += dt.timedelta(days=1)

    store = open_store(settings)
    try:
        rows = adoption(store, START, end)
        invoices_by_day = {
            d: n for d, n in store.query_rows(
                "SELECT issue_date, sum(invoices) FROM segment_daily WHERE registered = 1 GROUP BY issue_date"
            )
        }  # fmt: skip
    finally:
        store.close()
    got = {(r.day, r.sector, r.unit): [r.eligible, r.active_7d] for r in rows}
    assert got == dict(expected)
    province = {r.day: r for r in rows if r.sector == "*" and r.unit == "*"}
    assert {d: r.invoices for d, r in province.items()} == {d: invoices_by_day.get(d, 0) for d in province}
    # the closed seller stops counting on its closing day, the mover changes unit, the new one is eligible idle
    assert got[(START + dt.timedelta(days=4), "4711", "380")][0] >= 1
    assert all(0.0 <= r.adoption_7d <= 1.0 for r in rows)

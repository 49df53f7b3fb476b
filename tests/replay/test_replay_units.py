"""The pure pieces of replay: local times, offset specs, the audit log's who and its redaction, the record format."""

from __future__ import annotations

import datetime as dt
import getpass
import io
import json
import socket

import fastavro
import pytest

from base.config import Topics
from base.redaction import without_url_credentials
from replay.archive import PARSED_SCHEMA, encode_topic_record
from replay.audit import AuditLog
from replay.databases import Database
from replay.ranges import format_instant, parse_instant, parse_offsets, topic_name
from replay.refused import Refused

UTC_MIDNIGHT_JUNE_3 = int(dt.datetime(2024, 6, 3, tzinfo=dt.UTC).timestamp() * 1000)
HOUR = 3_600_000


def test_times_without_an_offset_are_local_time():
    assert parse_instant("2024-06-03") == UTC_MIDNIGHT_JUNE_3 - 7 * HOUR
    assert parse_instant("2024-06-03T08:00") == UTC_MIDNIGHT_JUNE_3 + HOUR
    assert parse_instant("2024-06-03 08:00:00") == UTC_MIDNIGHT_JUNE_3 + HOUR
    assert parse_instant("2024-06-03T08:00+07:00") == UTC_MIDNIGHT_JUNE_3 + HOUR
    assert parse_instant("2024-06-03T01:00Z") == UTC_MIDNIGHT_JUNE_3 + HOUR
    assert parse_instant("2024-06-03T10:00+09:00") == UTC_MIDNIGHT_JUNE_3 + HOUR
    assert format_instant(UTC_MIDNIGHT_JUNE_3 + HOUR) == "2024-06-03T08:00:00+07:00"
    with pytest.raises(ValueError, match="Asia/Ho_Chi_Minh"):
        parse_instant("3 June")


def test_offset_specs():
    assert parse_offsets(["1200"], [0, 1]) == {0: 1200, 1: 1200}
    assert parse_offsets(["0=5", "1=7"], [0, 1, 2]) == {0: 5, 1: 7}
    assert parse_offsets(["100", "1=7"], [0, 1]) == {0: 100, 1: 7}
    with pytest.raises(ValueError, match="not among the chosen"):
        parse_offsets(["3=5"], [0, 1])
    with pytest.raises(ValueError, match="PARTITION=OFFSET"):
        parse_offsets(["a=b"], [0])
    with pytest.raises(ValueError, match="never negative"):
        parse_offsets(["-1"], [0])
    topics = Topics.with_prefix("x.")
    assert topic_name("invoices", topics) == "x.einvoice.issued"
    assert topic_name("invoices_dlq", topics) == "x.einvoice.issued.dlq"
    assert topic_name("other.topic", topics) == "other.topic"


def test_audit_entries_say_who_and_hold_no_secret(tmp_path):
    log = AuditLog(tmp_path)
    secret_url = "http://einvoice:s3cr3t-pw@clickhouse:8123/einvoice"
    with log.action("switch", {"database": secret_url}) as detail:
        detail["note"] = f"reached {secret_url}"
    with pytest.raises(Refused), log.action("rewind", {"group": "g"}):
        raise Refused("group g has 1 active member(s)")
    with pytest.raises(KeyboardInterrupt), log.action("publish", {"archive": "/a"}) as detail:
        detail["sent"] = 10
        raise KeyboardInterrupt
    text = (tmp_path / "audit" / "replay.jsonl").read_text()
    assert "s3cr3t" not in text and "einvoice:" not in text
    entries = [json.loads(line) for line in text.splitlines()]
    assert [e["result"] for e in entries] == ["ok", "refused", "interrupted"]
    assert entries[0]["target"] == {"database": "http://***@clickhouse:8123/einvoice"}
    assert entries[1]["detail"]["reason"] == "group g has 1 active member(s)"
    assert entries[2]["detail"] == {"sent": 10}
    assert {(e["user"], e["host"]) for e in entries} == {(getpass.getuser(), socket.gethostname())}
    assert without_url_credentials({"a": ["https://u:p@h/x", 3]}) == {"a": ["https://***@h/x", 3]}


def test_database_names():
    server = Database("https://einvoice:pw@ch.example:8443/einvoice?compress=1")
    assert server.name == "einvoice" and not server.embedded
    assert (
        server.sibling("einvoice_rebuild_1").dsn == "https://einvoice:pw@ch.example:8443/einvoice_rebuild_1?compress=1"
    )
    assert server.describe() == "https://***@ch.example:8443/einvoice?compress=1"
    local = Database("chdb:///data/clickhouse")
    assert local.embedded and str(local.directory) == "/data/clickhouse"


def test_topic_records_are_standard_avro_and_read_simulator_files_too():
    headers = [("dlq.reason", b"invalid_amount"), ("empty", None)]
    body = encode_topic_record(b"0101234567", b"\x00\x00\x00\x00\x01abc", 1717372800123, headers, 3, 123456789)
    record = fastavro.schemaless_reader(io.BytesIO(body), PARSED_SCHEMA, PARSED_SCHEMA)
    assert record["key"] == b"0101234567" and record["value"] == b"\x00\x00\x00\x00\x01abc"
    assert record["timestamp"] == dt.datetime(2024, 6, 3, 0, 0, 0, 123000, tzinfo=dt.UTC)
    assert record["headers"] == [{"key": "dlq.reason", "value": b"invalid_amount"}, {"key": "empty", "value": None}]
    assert (record["partition"], record["offset"]) == (3, 123456789)

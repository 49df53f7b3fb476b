"""The business registry side: registrations decoded per batch into versions for the join table."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from contracts.codec import AvroCodec, DecodeError
from contracts.records import SourceRecord
from contracts.validation import MALFORMED_VALUE, Rejection, check_key, check_registration

_EPOCH_DATE = dt.date(1970, 1, 1)
MAX_VERSIONS = 16  # history kept per seller in the join table; older versions live on in ClickHouse


def as_version(value: dict[str, Any]) -> dict[str, Any]:
    """The compact form kept in the Faust table (JSON-serialisable)."""
    return {
        "valid_from": (value["valid_from"] - _EPOCH_DATE).days,
        "vsic_code": value["vsic_code"],
        "admin_unit_code": value["admin_unit_code"],
        "obliged": bool(value["obliged"]),
        "status": value["status"],
        "name": value["name"],
    }


def merge_version(versions: list[dict[str, Any]] | None, version: dict[str, Any]) -> list[dict[str, Any]]:
    """Insert or replace the version with the same valid_from, keep order by valid_from."""
    kept = [v for v in versions or () if v["valid_from"] != version["valid_from"]]
    kept.append(version)
    kept.sort(key=lambda v: v["valid_from"])
    return kept[-MAX_VERSIONS:]


@dataclass
class RegistryBatch:
    """What one batch of registry records amounts to."""

    ordered: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)
    history_rows: list[tuple[Any, ...]] = field(default_factory=list)
    rejected: list[tuple[SourceRecord, Rejection]] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)

    def apply_to(self, sellers: MutableMapping[str, Any]) -> int:
        """The batch's versions, in order, into a seller -> versions mapping (a tombstone removes the seller);
        returns how many versions were merged. Idempotent: merging a version twice keeps it once."""
        merged = 0
        for seller_id, version in self.ordered:
            if version is None:
                sellers.pop(seller_id, None)
            else:
                sellers[seller_id] = merge_version(sellers.get(seller_id), version)
                merged += 1
        return merged


REGISTRY_HISTORY_COLUMNS = (
    "seller_id", "valid_from", "name", "vsic_code", "admin_unit_code", "obliged", "status",
    "kafka_partition", "kafka_offset", "received_at",
)  # fmt: skip


def decode_registry_batch(codec: AvroCodec, records: Sequence[SourceRecord]) -> RegistryBatch:
    """Decode and validate; a null value is a tombstone that removes the seller (keyed by the record key)."""
    batch = RegistryBatch()
    for record in records:
        if record.value is None:
            if record.key:
                batch.ordered.append((record.key.decode("utf-8", "replace"), None))
            continue
        try:
            _, value = codec.decode(record.value)
            value, rejection = check_registration(value)
            if value is not None and (rejection := check_key(value["seller_id"], record.key)):
                value = None  # compaction and tombstones go by key: a registration under another key is unreachable
        except DecodeError as exc:
            value, rejection = None, Rejection(exc.reason, exc.detail)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            value, rejection = None, Rejection(MALFORMED_VALUE, f"{type(exc).__name__}: {exc}")
        if rejection is not None or value is None:
            assert rejection is not None
            batch.rejected.append((record, rejection))
            batch.reasons[rejection.reason] += 1
            continue
        batch.ordered.append((value["seller_id"], as_version(value)))
        batch.history_rows.append(
            (
                value["seller_id"], value["valid_from"], value["name"], value["vsic_code"], value["admin_unit_code"],
                int(value["obliged"]), value["status"], record.partition, record.offset, record.timestamp_ms,
            )
        )  # fmt: skip
    return batch

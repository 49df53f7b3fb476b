"""Confluent wire framing of Avro records, against the local file-based schema registry.

Frame: magic byte 0, a 4-byte big-endian schema id, the Avro body (schemaless).
The reader schema of a subject is its newest version, so a v1 reader and v2 data
(and the reverse) resolve by Avro's rules.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro

import schemas

SCHEMAS_DIR = Path(schemas.__file__).resolve().parent
MAGIC_BYTE = 0
_HEADER = struct.Struct(">BI")  # unsigned: a magic byte 0xff is 255, not -1, in the DLQ detail
# Every reason a DecodeError can carry (the DLQ's dlq.reason header).
DECODE_REASONS = frozenset({"malformed_bytes", "bad_magic_byte", "unknown_schema_id", "wrong_subject"})


class DecodeError(ValueError):
    """A record that cannot be turned into a value; ``reason`` is a stable code for the DLQ."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def type_label(avro_type: Any) -> str:
    """A field type's name in a DLQ detail: the primitive, the logical type, ``enum`` or ``union``."""
    if isinstance(avro_type, list):
        return "union"
    if isinstance(avro_type, dict):
        if "logicalType" in avro_type:
            return str(avro_type["logicalType"])
        return "enum" if avro_type.get("type") == "enum" else type_label(avro_type.get("type"))
    return str(avro_type)


@dataclass(frozen=True)
class RegisteredSchema:
    schema_id: int
    subject: str
    version: int
    parsed: Any
    source: str  # the schema's JSON text, as the compiled core (native/) parses it

    def body_error(self, payload: bytes) -> str:
        """Where an Avro body this writer schema cannot read goes wrong: the first field that does not decode.

        Read field by field (fastavro, each field's type alone), only once a whole-record read has
        failed. The text names the field, the byte (of the framed record) where it starts and its
        type: what a DLQ reader needs, and what the compiled core writes too, whatever fastavro's
        exception said (its messages differ between its versions and its compiled and pure readers).
        """
        buf = io.BytesIO(payload)
        buf.seek(_HEADER.size)
        for field in json.loads(self.source)["fields"]:
            at = buf.tell()
            try:
                fastavro.schemaless_reader(buf, fastavro.parse_schema(field["type"]), None)
            except Exception:  # fastavro raises many types on garbage input
                return (
                    f"Avro body does not decode: field {field['name']} at byte {at} is not a valid "
                    f"{type_label(field['type'])} (writer schema {self.schema_id})"
                )
        return f"Avro body does not decode with writer schema {self.schema_id}"


class SchemaCatalog:
    """Schemas by id and subject, read from ``schemas/registry.json``."""

    def __init__(self, entries: list[RegisteredSchema]) -> None:
        self._by_id = {e.schema_id: e for e in entries}
        self._latest: dict[str, RegisteredSchema] = {}
        for entry in sorted(entries, key=lambda e: e.version):
            self._latest[entry.subject] = entry

    @classmethod
    def load(cls, directory: Path = SCHEMAS_DIR) -> SchemaCatalog:
        index = json.loads((directory / "registry.json").read_text(encoding="utf-8"))
        named: dict[str, Any] = {}
        entries = []
        for item in index["schemas"]:
            source = (directory / item["file"]).read_text(encoding="utf-8")
            # Each version parses on its own: v1 and v2 share record names.
            parsed = fastavro.parse_schema(json.loads(source), named_schemas=dict(named))
            entries.append(RegisteredSchema(item["id"], item["subject"], item["version"], parsed, source))
        return cls(entries)

    def entries(self) -> list[RegisteredSchema]:
        """Every schema, oldest version first."""
        return sorted(self._by_id.values(), key=lambda e: (e.subject, e.version))

    def by_id(self, schema_id: int) -> RegisteredSchema:
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise DecodeError("unknown_schema_id", f"schema id {schema_id} is not in the registry") from None

    def latest(self, subject: str) -> RegisteredSchema:
        try:
            return self._latest[subject]
        except KeyError:
            raise KeyError(f"no schema registered for subject {subject!r}") from None

    def version(self, subject: str, version: int) -> RegisteredSchema:
        for entry in self._by_id.values():
            if entry.subject == subject and entry.version == version:
                return entry
        raise KeyError(f"subject {subject!r} has no version {version}")


def added_defaults(writer: Any, reader: Any) -> dict[str, Any] | None:
    """The fields a reader adds to a writer's record, with their defaults, when that is all resolution does.

    fastavro's schema resolution more than doubles the cost of a decode (4.3 µs to 9.4 µs for an
    invoice). When the reader only appends fields that have defaults (v1 to v2 adds
    ``buyer_tax_code``), decoding with the writer's schema and adding the defaults gives the same
    value; anything else (a field dropped, retyped, reordered into a union...) returns None and
    the full resolution runs.
    """
    if writer.get("type") != "record" or reader.get("type") != "record" or writer.get("name") != reader.get("name"):
        return None
    written = {f["name"]: f for f in writer["fields"]}
    added: dict[str, Any] = {}
    for field in reader["fields"]:
        same = written.pop(field["name"], None)
        if same is None:
            if "default" not in field:
                return None
            added[field["name"]] = field["default"]
        elif same["type"] != field["type"]:
            return None
    return None if written else added


class AvroCodec:
    """Encode and decode one subject's values; decoding accepts every registered version."""

    def __init__(self, schemas: SchemaCatalog, subject: str, reader_version: int | None = None) -> None:
        self.schemas = schemas
        self.subject = subject
        self.reader = schemas.latest(subject) if reader_version is None else schemas.version(subject, reader_version)
        self._added: dict[int, dict[str, Any] | None] = {}

    def encode(self, value: dict[str, Any], writer_version: int | None = None) -> bytes:
        writer = self.reader if writer_version is None else self.schemas.version(self.subject, writer_version)
        buf = io.BytesIO()
        buf.write(_HEADER.pack(MAGIC_BYTE, writer.schema_id))
        fastavro.schemaless_writer(buf, writer.parsed, value)
        return buf.getvalue()

    def decode(self, payload: bytes | None) -> tuple[int, dict[str, Any]]:
        """Return (writer schema id, value) or raise :class:`DecodeError`."""
        if not payload or len(payload) < _HEADER.size:
            raise DecodeError("malformed_bytes", f"{len(payload or b'')} bytes is shorter than the 5-byte frame header")
        magic, schema_id = _HEADER.unpack_from(payload)
        if magic != MAGIC_BYTE:
            raise DecodeError("bad_magic_byte", f"magic byte {magic} (expected {MAGIC_BYTE})")
        writer = self.schemas.by_id(schema_id)
        if writer.subject != self.subject:
            raise DecodeError("wrong_subject", f"schema id {schema_id} is {writer.subject}, expected {self.subject}")
        buf = io.BytesIO(payload)
        buf.seek(_HEADER.size)
        added = self._added_for(writer)
        try:
            reader = None if writer is self.reader or added is not None else self.reader.parsed
            value = fastavro.schemaless_reader(buf, writer.parsed, reader)
        except Exception:  # fastavro raises many types on garbage input
            raise DecodeError("malformed_bytes", writer.body_error(payload)) from None
        if buf.tell() != len(payload):
            raise DecodeError("malformed_bytes", f"{len(payload) - buf.tell()} trailing bytes after the Avro body")
        if not isinstance(value, dict):
            raise DecodeError("malformed_bytes", "Avro body is not a record")
        if added:
            for name, default in added.items():
                value.setdefault(name, default)
        return schema_id, value

    def _added_for(self, writer: RegisteredSchema) -> dict[str, Any] | None:
        if writer.schema_id not in self._added:
            same = writer is self.reader
            self._added[writer.schema_id] = {} if same else added_defaults(writer.parsed, self.reader.parsed)
        return self._added[writer.schema_id]

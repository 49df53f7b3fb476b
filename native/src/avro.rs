//! Confluent-framed Avro invoices, decoded as `contracts.codec.AvroCodec.decode` does with fastavro.
//!
//! Only what the invoice subject needs is supported: records of primitive fields, enums,
//! unions of those, and `long` with `logicalType: local-timestamp-millis`. A writer schema is
//! decoded on its own, then the reader's added fields get their defaults: exactly the
//! `added_defaults` fast path of the codec. A schema set that would need fastavro's full
//! resolution is refused when the core is built (never silently decoded another way).
//!
//! fastavro's compiled reader (`_read.pyx`, 1.13) is mirrored byte for byte:
//! - a varint has no length limit; each 7-bit group is shifted by `7 * i` and the C shift of a
//!   64-bit value masks the count to 6 bits, so group 10 lands on bit 6 again (`wrapping_shl`);
//!   a varint cut short is an error (an `IndexError` there);
//! - `int` is read as a `long` (no 32-bit range check);
//! - enum symbols and union branches are indexed like a Python list: -1 is the last one;
//! - strings are strict UTF-8 (`bytes.decode()`): the same acceptance as `std::str::from_utf8`;
//! - a negative or too long length is an error (fastavro reads what is left, then compares);
//! - `local-timestamp-millis` becomes `datetime(1970, 1, 1) + timedelta(ms)`, which raises outside
//!   years 1..9999.

use std::collections::HashMap;

use serde_json::Value;

use crate::detail::Rejection;

/// Milliseconds of 0001-01-01T00:00:00 and 9999-12-31T23:59:59.999 from 1970-01-01 (naive).
pub const MIN_LOCAL_MS: i64 = -62_135_596_800_000;
pub const MAX_LOCAL_MS: i64 = 253_402_300_799_999;

pub const MALFORMED_BYTES: &str = "malformed_bytes";
pub const BAD_MAGIC_BYTE: &str = "bad_magic_byte";
pub const UNKNOWN_SCHEMA_ID: &str = "unknown_schema_id";
pub const WRONG_SUBJECT: &str = "wrong_subject";

/// A byte cursor that never reads past its end.
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8], pos: usize) -> Self {
        Cursor { buf, pos }
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn byte(&mut self) -> Option<u64> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(u64::from(b))
    }

    /// fastavro's `read_long`: zigzag varint of any length, shift counts masked to 6 bits.
    pub fn long(&mut self) -> Option<i64> {
        let mut b = self.byte()?;
        let mut n = b & 0x7F;
        let mut shift: u32 = 7;
        while b & 0x80 != 0 {
            b = self.byte()?;
            n |= (b & 0x7F).wrapping_shl(shift);
            shift = shift.wrapping_add(7);
        }
        Some(((n >> 1) ^ 0u64.wrapping_sub(n & 1)) as i64)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    /// Length-prefixed bytes: the length is checked against what is left before anything is taken.
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let size = self.long()?;
        let size = usize::try_from(size).ok()?;
        if size > self.buf.len() - self.pos.min(self.buf.len()) {
            return None;
        }
        self.take(size)
    }

    pub fn string(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
}

/// Python list indexing of a list of `len` items: negative indexes count from the end.
fn py_index(index: i64, len: usize) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let at = if index < 0 {
        index.checked_add(len)?
    } else {
        index
    };
    if (0..len).contains(&at) {
        usize::try_from(at).ok()
    } else {
        None
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum FieldType {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    Str,
    LocalTimestampMillis,
    Enum(Vec<String>),
    Union(Vec<FieldType>),
}

/// Where a decoded field goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    SellerId,
    Form,
    Symbol,
    Code,
    IssuedAt,
    Amount,
    Rate,
    Vat,
    Method,
    Register,
    Buyer,
    Ignore,
}

impl Slot {
    fn of(name: &str) -> Slot {
        match name {
            "seller_id" => Slot::SellerId,
            "invoice_form" => Slot::Form,
            "invoice_symbol" => Slot::Symbol,
            "invoice_code" => Slot::Code,
            "issued_at" => Slot::IssuedAt,
            "amount_vnd" => Slot::Amount,
            "vat_rate" => Slot::Rate,
            "vat_amount_vnd" => Slot::Vat,
            "payment_method" => Slot::Method,
            "register_id" => Slot::Register,
            "buyer_tax_code" => Slot::Buyer,
            _ => Slot::Ignore,
        }
    }

    /// The validator reads these fields with `value[...]`: a reader without one of them cannot work.
    const REQUIRED: [Slot; 10] = [
        Slot::SellerId,
        Slot::Form,
        Slot::Symbol,
        Slot::Code,
        Slot::IssuedAt,
        Slot::Amount,
        Slot::Rate,
        Slot::Vat,
        Slot::Method,
        Slot::Register,
    ];

    fn accepts(self, ty: &FieldType) -> bool {
        match self {
            Slot::SellerId | Slot::Symbol | Slot::Code | Slot::Register => *ty == FieldType::Str,
            Slot::Form | Slot::Rate | Slot::Amount | Slot::Vat => {
                matches!(ty, FieldType::Int | FieldType::Long)
            }
            Slot::IssuedAt => *ty == FieldType::LocalTimestampMillis,
            Slot::Method => matches!(ty, FieldType::Enum(_)),
            Slot::Buyer => match ty {
                FieldType::Str => true,
                FieldType::Union(branches) => branches
                    .iter()
                    .all(|b| matches!(b, FieldType::Null | FieldType::Str)),
                _ => false,
            },
            Slot::Ignore => true,
        }
    }
}

fn parse_type(ty: &Value, in_union: bool) -> Result<FieldType, String> {
    match ty {
        Value::String(name) => match name.as_str() {
            "null" => Ok(FieldType::Null),
            "boolean" => Ok(FieldType::Boolean),
            "int" => Ok(FieldType::Int),
            "long" => Ok(FieldType::Long),
            "float" => Ok(FieldType::Float),
            "double" => Ok(FieldType::Double),
            "bytes" => Ok(FieldType::Bytes),
            "string" => Ok(FieldType::Str),
            other => Err(format!(
                "type {other:?} is not supported by the compiled core"
            )),
        },
        Value::Object(obj) => {
            let base = obj.get("type").and_then(Value::as_str).unwrap_or("");
            if let Some(logical) = obj.get("logicalType") {
                return match (base, logical.as_str()) {
                    ("long", Some("local-timestamp-millis")) => Ok(FieldType::LocalTimestampMillis),
                    _ => Err(format!(
                        "logical type {logical} on {base:?} is not supported by the compiled core"
                    )),
                };
            }
            match base {
                "enum" => {
                    let symbols = obj
                        .get("symbols")
                        .and_then(Value::as_array)
                        .ok_or("an enum without symbols")?;
                    let symbols = symbols
                        .iter()
                        .map(|s| {
                            s.as_str()
                                .map(str::to_owned)
                                .ok_or("an enum symbol that is not a string")
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(FieldType::Enum(symbols))
                }
                "record" | "array" | "map" | "fixed" | "error" => Err(format!(
                    "type {base:?} is not supported by the compiled core"
                )),
                _ => parse_type(obj.get("type").unwrap_or(&Value::Null), in_union),
            }
        }
        Value::Array(branches) if !in_union => Ok(FieldType::Union(
            branches
                .iter()
                .map(|b| parse_type(b, true))
                .collect::<Result<Vec<_>, _>>()?,
        )),
        other => Err(format!(
            "type {other} is not supported by the compiled core"
        )),
    }
}

struct RecordSchema {
    fullname: String,
    fields: Vec<(String, Value, Option<Value>)>, // name, type JSON, default
}

fn parse_record(text: &str) -> Result<RecordSchema, String> {
    let schema: Value =
        serde_json::from_str(text).map_err(|e| format!("schema is not JSON: {e}"))?;
    let obj = schema.as_object().ok_or("schema is not a JSON object")?;
    if obj.get("type").and_then(Value::as_str) != Some("record") {
        return Err("schema is not a record".into());
    }
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .ok_or("record without a name")?;
    let fullname = match obj.get("namespace").and_then(Value::as_str) {
        Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_owned(),
    };
    let mut fields = Vec::new();
    for field in obj
        .get("fields")
        .and_then(Value::as_array)
        .ok_or("record without fields")?
    {
        let name = field
            .get("name")
            .and_then(Value::as_str)
            .ok_or("field without a name")?;
        let ty = field.get("type").cloned().ok_or("field without a type")?;
        fields.push((name.to_owned(), ty, field.get("default").cloned()));
    }
    Ok(RecordSchema { fullname, fields })
}

/// How one writer schema's body is read.
#[derive(Debug)]
pub struct Plan {
    /// The writer's fields in order. The reader's fields it lacks are checked when the plan is made:
    /// only `buyer_tax_code` with default null (the invoice's default) or fields the validator ignores.
    ops: Vec<(FieldType, Slot, String)>,
    schema_id: u32,
}

/// One decoded invoice, borrowing its strings from the record bytes (and enum symbols from the plan).
#[derive(Debug, Default)]
pub struct Invoice<'a> {
    pub seller_id: &'a str,
    pub form: i64,
    pub symbol: &'a str,
    pub code: &'a str,
    pub issued_ms: i64,
    pub amount: i64,
    pub rate: i64,
    pub vat: i64,
    pub method: &'a str,
    pub register_id: &'a str,
    pub buyer: Option<&'a str>,
}

enum Read<'a> {
    Nothing,
    Int(i64),
    Str(&'a str),
}

fn read_value<'a>(cur: &mut Cursor<'a>, ty: &'a FieldType) -> Option<Read<'a>> {
    Some(match ty {
        FieldType::Null => Read::Nothing,
        FieldType::Boolean => {
            cur.take(1)?;
            Read::Nothing
        }
        FieldType::Int | FieldType::Long => Read::Int(cur.long()?),
        FieldType::Float => {
            cur.take(4)?;
            Read::Nothing
        }
        FieldType::Double => {
            cur.take(8)?;
            Read::Nothing
        }
        FieldType::Bytes => {
            cur.bytes()?;
            Read::Nothing
        }
        FieldType::Str => Read::Str(cur.string()?),
        FieldType::LocalTimestampMillis => {
            let ms = cur.long()?;
            if !(MIN_LOCAL_MS..=MAX_LOCAL_MS).contains(&ms) {
                return None; // OverflowError from datetime + timedelta
            }
            Read::Int(ms)
        }
        FieldType::Enum(symbols) => {
            Read::Str(symbols.get(py_index(cur.long()?, symbols.len())?)?.as_str())
        }
        FieldType::Union(branches) => {
            let branch = branches.get(py_index(cur.long()?, branches.len())?)?;
            read_value(cur, branch)?
        }
    })
}

impl FieldType {
    /// `contracts.codec.type_label`: the type's name in a DLQ detail.
    fn label(&self) -> &'static str {
        match self {
            FieldType::Null => "null",
            FieldType::Boolean => "boolean",
            FieldType::Int => "int",
            FieldType::Long => "long",
            FieldType::Float => "float",
            FieldType::Double => "double",
            FieldType::Bytes => "bytes",
            FieldType::Str => "string",
            FieldType::LocalTimestampMillis => "local-timestamp-millis",
            FieldType::Enum(_) => "enum",
            FieldType::Union(_) => "union",
        }
    }
}

impl Plan {
    /// Decode an Avro body; Err(detail) for anything fastavro would raise on (then `malformed_bytes`),
    /// the detail `RegisteredSchema.body_error` writes.
    pub fn decode<'a>(&'a self, body: &'a [u8], start: usize) -> Result<Invoice<'a>, String> {
        let mut cur = Cursor::new(body, start);
        let mut inv = Invoice::default();
        for (ty, slot, name) in &self.ops {
            let at = cur.pos;
            let not_valid = || {
                format!(
                    "Avro body does not decode: field {name} at byte {at} is not a valid {} (writer schema {})",
                    ty.label(),
                    self.schema_id
                )
            };
            let value = read_value(&mut cur, ty).ok_or_else(not_valid)?;
            match (slot, value) {
                (Slot::SellerId, Read::Str(s)) => inv.seller_id = s,
                (Slot::Symbol, Read::Str(s)) => inv.symbol = s,
                (Slot::Code, Read::Str(s)) => inv.code = s,
                (Slot::Register, Read::Str(s)) => inv.register_id = s,
                (Slot::Method, Read::Str(s)) => inv.method = s,
                (Slot::Buyer, Read::Str(s)) => inv.buyer = Some(s),
                (Slot::Buyer, Read::Nothing) => inv.buyer = None,
                (Slot::Form, Read::Int(v)) => inv.form = v,
                (Slot::Rate, Read::Int(v)) => inv.rate = v,
                (Slot::Amount, Read::Int(v)) => inv.amount = v,
                (Slot::Vat, Read::Int(v)) => inv.vat = v,
                (Slot::IssuedAt, Read::Int(v)) => inv.issued_ms = v,
                (Slot::Ignore, _) => {}
                _ => return Err(not_valid()), // cannot happen: plans are checked against slot types
            }
        }
        if !cur.at_end() {
            let trailing = body.len().saturating_sub(cur.pos);
            return Err(format!("{trailing} trailing bytes after the Avro body"));
        }
        Ok(inv)
    }
}

enum Entry {
    Ours(Plan),
    OtherSubject(String),
}

/// The registry as the codec sees it: writer plans of the reader's subject, other subjects' ids.
pub struct Schemas {
    subject: String,
    entries: HashMap<u32, Entry>,
}

/// A decode verdict: the writer schema id and the invoice, or a `DecodeError` (reason and detail).
pub type Decoded<'a> = Result<(u32, Invoice<'a>), Rejection>;

impl Schemas {
    /// `entries`: (schema id, subject, writer schema JSON) in the registry's order, oldest version
    /// first; the reader is the subject's last entry (`SchemaRegistry.latest`).
    pub fn new(subject: &str, entries: &[(i64, String, String)]) -> Result<Schemas, String> {
        let reader_text = entries
            .iter()
            .rev()
            .find(|(_, s, _)| s == subject)
            .map(|(_, _, text)| text)
            .ok_or_else(|| format!("no schema registered for subject {subject:?}"))?;
        let reader = parse_record(reader_text)?;
        let mut reader_slots = Vec::new();
        for (name, ty, _) in &reader.fields {
            let slot = Slot::of(name);
            let parsed = parse_type(ty, false).map_err(|e| format!("reader field {name}: {e}"))?;
            if !slot.accepts(&parsed) {
                return Err(format!(
                    "reader field {name} has a type the validator cannot take: {ty}"
                ));
            }
            reader_slots.push(slot);
        }
        for required in Slot::REQUIRED {
            if !reader_slots.contains(&required) {
                return Err(format!(
                    "the reader schema lacks a field the validator needs ({required:?})"
                ));
            }
        }
        let mut out = HashMap::new();
        for (id, entry_subject, text) in entries {
            let id = u32::try_from(*id)
                .map_err(|_| format!("schema id {id} is not a 4-byte unsigned id"))?;
            if entry_subject != subject {
                out.insert(id, Entry::OtherSubject(entry_subject.clone()));
                continue;
            }
            if id > u32::from(u16::MAX) {
                return Err(format!(
                    "schema id {id} does not fit the schema_id column (UInt16)"
                ));
            }
            let writer = parse_record(text)?;
            out.insert(
                id,
                Entry::Ours(Self::plan(id, &writer, &reader, text == reader_text)?),
            );
        }
        Ok(Schemas {
            subject: subject.to_owned(),
            entries: out,
        })
    }

    /// `added_defaults(writer, reader)`: the writer's fields, then the reader's defaults.
    fn plan(
        schema_id: u32,
        writer: &RecordSchema,
        reader: &RecordSchema,
        same: bool,
    ) -> Result<Plan, String> {
        let mut ops = Vec::new();
        for (name, ty, _) in &writer.fields {
            let slot = Slot::of(name);
            let parsed = parse_type(ty, false).map_err(|e| format!("field {name}: {e}"))?;
            if !slot.accepts(&parsed) {
                return Err(format!(
                    "field {name} has a type the validator cannot take: {ty}"
                ));
            }
            ops.push((parsed, slot, name.clone()));
        }
        if !same {
            let needs_resolution = || {
                format!(
                    "writer schema {} needs fastavro's full schema resolution against the reader; \
                     the compiled core only supports readers that add defaulted fields",
                    writer.fullname
                )
            };
            if writer.fullname != reader.fullname {
                return Err(needs_resolution());
            }
            let mut written: HashMap<&str, &Value> = writer
                .fields
                .iter()
                .map(|(n, t, _)| (n.as_str(), t))
                .collect();
            for (name, ty, default) in &reader.fields {
                match written.remove(name.as_str()) {
                    None => match (Slot::of(name), default) {
                        (_, None) => return Err(needs_resolution()),
                        (Slot::Buyer, Some(Value::Null)) => {}
                        (Slot::Ignore, Some(_)) => {}
                        (_, Some(d)) => {
                            return Err(format!(
                                "field {name} defaults to {d}: not supported by the compiled core"
                            ))
                        }
                    },
                    Some(wty) if wty != ty => return Err(needs_resolution()),
                    Some(_) => {}
                }
            }
            if !written.is_empty() {
                return Err(needs_resolution());
            }
        }
        Ok(Plan { ops, schema_id })
    }

    /// `AvroCodec.decode`: frame checks in the codec's order, then the body; details as the codec writes them.
    pub fn decode<'a>(&'a self, payload: Option<&'a [u8]>) -> Decoded<'a> {
        let payload = payload.unwrap_or(&[]);
        if payload.len() < 5 {
            let size = payload.len();
            return Err(Rejection::new(
                MALFORMED_BYTES,
                format!("{size} bytes is shorter than the 5-byte frame header"),
            ));
        }
        if payload[0] != 0 {
            let magic = payload[0];
            return Err(Rejection::new(
                BAD_MAGIC_BYTE,
                format!("magic byte {magic} (expected 0)"),
            ));
        }
        let schema_id = u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
        match self.entries.get(&schema_id) {
            None => Err(Rejection::new(
                UNKNOWN_SCHEMA_ID,
                format!("schema id {schema_id} is not in the registry"),
            )),
            Some(Entry::OtherSubject(other)) => Err(Rejection::new(
                WRONG_SUBJECT,
                format!(
                    "schema id {schema_id} is {other}, expected {}",
                    self.subject
                ),
            )),
            Some(Entry::Ours(plan)) => plan
                .decode(payload, 5)
                .map(|inv| (schema_id, inv))
                .map_err(|detail| Rejection::new(MALFORMED_BYTES, detail)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long(bytes: &[u8]) -> Option<i64> {
        Cursor::new(bytes, 0).long()
    }

    #[test]
    fn varints_like_fastavro() {
        assert_eq!(long(&[0x80]), None);
        assert_eq!(long(&[]), None);
        let mut b = vec![0xff; 9];
        b.push(1);
        assert_eq!(long(&b), Some(i64::MIN));
        let mut b = vec![0x80; 10];
        b.push(1);
        assert_eq!(long(&b), Some(32));
        let mut b = vec![0x80; 1000];
        b.push(3);
        assert_eq!(long(&b), Some(25_165_824));
    }

    #[test]
    fn python_indexing() {
        assert_eq!(py_index(-1, 5), Some(4));
        assert_eq!(py_index(-5, 5), Some(0));
        assert_eq!(py_index(-6, 5), None);
        assert_eq!(py_index(5, 5), None);
        assert_eq!(py_index(i64::MIN, 5), None);
    }
}

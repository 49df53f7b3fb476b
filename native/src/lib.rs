//! `einvoice_core`: the compiled batch core of the invoice ingest path.
//!
//! `InvoiceCore.prepare` does for one partition's records what `streams.ingest.InvoiceIngest._prepare`
//! does (decode, validate, key check, skip of what is written, dedup, registry join, rows) and gives
//! the same verdicts for any input bytes; the rows come out as Python tuples (tests) or as one
//! ClickHouse Native block. No `unsafe`; nothing in here panics on input (bytes from outside
//! are read through bounds-checked cursors, and lengths are checked before anything is taken).

#![forbid(unsafe_code)]

mod avro;
mod dedup;
mod detail;
mod kafka;
mod native;
mod pattern;
mod records;
mod registry;
mod rowbinary;
mod unicode;
mod unicode_tables;
mod validate;

use std::borrow::Cow;
use std::collections::HashMap;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::avro::{Invoice, Schemas};
use crate::dedup::Dedup;
use crate::detail::Rejection;
use crate::pattern::CodePattern;
use crate::records::KafkaRecords;
use crate::registry::Version;
use crate::rowbinary::Row;
use crate::validate::{check_key, seller_kind, Rules, DAY_MS, LOCAL_OFFSET_MS};

/// `streams.ingest.NO_WATERMARK`
const NO_WATERMARK: i64 = -(1i64 << 62);
const NON_CASH_METHODS: [&str; 3] = ["CARD", "TRANSFER", "EWALLET"];

/// One partition's records as `prepare` reads them, in offset order; keys and values borrowed.
pub struct Columns<'a> {
    pub offsets: Vec<i64>,
    pub keys: Vec<Option<&'a [u8]>>,
    pub values: Vec<Option<&'a [u8]>>,
    pub timestamps: Vec<i64>,
}

impl Columns<'_> {
    fn with_capacity(n: usize) -> Self {
        Columns {
            offsets: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
            timestamps: Vec::with_capacity(n),
        }
    }
}

struct PartitionState {
    written_offset: i64,
    dead_lettered_offset: i64,
    watermark_local_ms: i64,
    dedup: Dedup,
}

/// The invoice path of one worker: schemas, rules and the per-partition state of `InvoiceIngest`.
#[pyclass(module = "einvoice_core")]
pub struct InvoiceCore {
    topic: String,
    schemas: Schemas,
    rules: Rules,
    dedup_horizon_ms: i64,
    states: HashMap<i64, PartitionState>,
}

/// A record that passed decoding, validation and the key check and is past the written offset.
struct Candidate<'a> {
    index: usize,
    schema_id: u16,
    invoice: Invoice<'a>,
    register_id: Cow<'a, str>,
    key: i64,
}

fn int64_column(obj: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    if let Ok(buffer) = PyBuffer::<i64>::get(obj) {
        return buffer.to_vec(obj.py());
    }
    obj.try_iter()?.map(|item| item?.extract::<i64>()).collect()
}

fn state_of(
    states: &mut HashMap<i64, PartitionState>,
    partition: i64,
) -> PyResult<&mut PartitionState> {
    states
        .get_mut(&partition)
        .ok_or_else(|| PyKeyError::new_err(partition))
}

#[pymethods]
impl InvoiceCore {
    #[new]
    #[pyo3(signature = (
        topic, subject, schemas, invoice_code_pattern, future_tolerance_ms, max_lateness_ms,
        max_amount_vnd, vat_tolerance_vnd, dedup_horizon_ms,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        topic: String,
        subject: String,
        schemas: Vec<(i64, String, String)>,
        invoice_code_pattern: &str,
        future_tolerance_ms: i128,
        max_lateness_ms: i128,
        max_amount_vnd: i128,
        vat_tolerance_vnd: i128,
        dedup_horizon_ms: i64,
    ) -> PyResult<Self> {
        let schemas = Schemas::new(&subject, &schemas).map_err(PyValueError::new_err)?;
        let code = CodePattern::new(py, invoice_code_pattern)?;
        Ok(InvoiceCore {
            topic,
            schemas,
            rules: Rules {
                code,
                future_tolerance_ms,
                max_lateness_ms,
                max_amount_vnd,
                vat_tolerance_vnd,
            },
            dedup_horizon_ms,
            states: HashMap::new(),
        })
    }

    /// The partition's state as `InvoiceIngest.restore` builds it from the store and the DLQ.
    #[pyo3(signature = (partition, written_offset, dead_lettered_offset, watermark_local_ms, keys, days))]
    fn restore(
        &mut self,
        partition: i64,
        written_offset: i64,
        dead_lettered_offset: i64,
        watermark_local_ms: i64,
        keys: &Bound<'_, PyAny>,
        days: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let keys = int64_column(keys)?;
        let days = int64_column(days)?;
        if keys.len() != days.len() {
            return Err(PyValueError::new_err(format!(
                "{} keys but {} days",
                keys.len(),
                days.len()
            )));
        }
        let mut dedup = Dedup::new(self.dedup_horizon_ms);
        dedup.advance(watermark_local_ms);
        dedup.load(&keys, &days);
        self.states.insert(
            partition,
            PartitionState {
                written_offset,
                dead_lettered_offset,
                watermark_local_ms,
                dedup,
            },
        );
        Ok(())
    }

    fn has(&self, partition: i64) -> bool {
        self.states.contains_key(&partition)
    }

    fn drop(&mut self, partition: i64) {
        self.states.remove(&partition);
    }

    /// (written offset, dead-lettered offset, watermark (local ms), dedup keys held)
    fn state(&self, partition: i64) -> PyResult<(i64, i64, i64, usize)> {
        let s = self
            .states
            .get(&partition)
            .ok_or_else(|| PyKeyError::new_err(partition))?;
        Ok((
            s.written_offset,
            s.dead_lettered_offset,
            s.watermark_local_ms,
            s.dedup.len(),
        ))
    }

    /// What the flushes reached: the DLQ's last offset and the insert's last offset.
    #[pyo3(signature = (partition, written_offset=None, dead_lettered_offset=None))]
    fn committed(
        &mut self,
        partition: i64,
        written_offset: Option<i64>,
        dead_lettered_offset: Option<i64>,
    ) -> PyResult<()> {
        let state = state_of(&mut self.states, partition)?;
        if let Some(offset) = written_offset {
            state.written_offset = offset;
        }
        if let Some(offset) = dead_lettered_offset {
            state.dead_lettered_offset = offset;
        }
        Ok(())
    }

    /// `InvoiceIngest._prepare` for one partition's records, in offset order, as columns.
    #[pyo3(signature = (partition, offsets, keys, values, timestamps, lookup))]
    #[allow(clippy::too_many_arguments)]
    fn prepare<'py>(
        &mut self,
        py: Python<'py>,
        partition: i64,
        offsets: Vec<i64>,
        keys: Vec<Option<Bound<'py, PyBytes>>>,
        values: Vec<Option<Bound<'py, PyBytes>>>,
        timestamps: Vec<i64>,
        lookup: Bound<'py, PyAny>,
    ) -> PyResult<Prepared> {
        let n = offsets.len();
        if keys.len() != n || values.len() != n || timestamps.len() != n {
            return Err(PyValueError::new_err(
                "offsets, keys, values and timestamps differ in length",
            ));
        }
        let columns = Columns {
            keys: keys
                .iter()
                .map(|k| k.as_ref().map(|b| b.as_bytes()))
                .collect(),
            values: values
                .iter()
                .map(|v| v.as_ref().map(|b| b.as_bytes()))
                .collect(),
            offsets,
            timestamps,
        };
        self.prepare_columns(py, partition, &columns, &lookup)
    }

    /// `prepare` for one partition's records as fetched (KafkaRecords, in offset order): no per-record Python.
    fn prepare_records<'py>(
        &mut self,
        py: Python<'py>,
        partition: i64,
        chunks: Vec<PyRef<'py, KafkaRecords>>,
        lookup: Bound<'py, PyAny>,
    ) -> PyResult<Prepared> {
        let mut columns = Columns::with_capacity(chunks.iter().map(|c| c.len()).sum());
        for chunk in &chunks {
            chunk.append_to(&mut columns);
        }
        self.prepare_columns(py, partition, &columns, &lookup)
    }

    #[classattr]
    const NO_WATERMARK: i64 = crate::NO_WATERMARK;
}

impl InvoiceCore {
    fn prepare_columns(
        &mut self,
        py: Python<'_>,
        partition: i64,
        columns: &Columns<'_>,
        lookup: &Bound<'_, PyAny>,
    ) -> PyResult<Prepared> {
        let Columns {
            offsets,
            keys,
            values,
            timestamps,
        } = columns;
        let n = offsets.len();
        let kafka_partition = u16::try_from(partition)
            .map_err(|_| PyValueError::new_err(format!("partition {partition} is not a UInt16")))?;
        let InvoiceCore {
            topic,
            schemas,
            rules,
            states,
            ..
        } = self;
        let state = state_of(states, partition)?;
        let mut out = Prepared::new(partition, state.watermark_local_ms);

        // First pass: decode, validate, key (no state changes; everything that calls Python is here).
        let mut candidates: Vec<Candidate<'_>> = Vec::with_capacity(n);
        for index in 0..n {
            let value = values[index];
            let (schema_id, invoice) = match schemas.decode(value) {
                Ok(decoded) => decoded,
                Err(rejection) => {
                    out.rejected.push((index, rejection));
                    continue;
                }
            };
            let rejection = match rules.check(py, &invoice, timestamps[index])? {
                None => check_key(invoice.seller_id, keys[index]),
                rejected => rejected,
            };
            if let Some(rejection) = rejection {
                out.rejected.push((index, rejection));
                continue;
            }
            if offsets[index] <= state.written_offset {
                out.skipped += 1;
                continue;
            }
            let register_id = unicode::nfc(py, invoice.register_id)?;
            candidates.push(Candidate {
                index,
                schema_id: u16::try_from(schema_id).unwrap_or(u16::MAX), // ids are checked at construction
                key: dedup::invoice_key(invoice.seller_id, invoice.code),
                register_id,
                invoice,
            });
        }
        let mut registrations: HashMap<&str, Option<Vec<Version>>> = HashMap::new();
        for candidate in &candidates {
            let seller = candidate.invoice.seller_id;
            if !registrations.contains_key(seller) {
                registrations.insert(seller, registry::versions(lookup, seller)?);
            }
        }

        // Second pass: dedup against the partition's watermark, join, rows.
        let mut cutoff_day = state.dedup.cutoff_day(state.watermark_local_ms);
        for c in &candidates {
            let inv = &c.invoice;
            let issued_local = inv.issued_ms;
            let day = issued_local.div_euclid(DAY_MS);
            if day < cutoff_day {
                out.beyond_horizon += 1;
            } else if state.dedup.seen_or_add(c.key, day, cutoff_day) {
                out.duplicates += 1;
                continue;
            }
            let joined = registrations
                .get(inv.seller_id)
                .and_then(|v| v.as_deref())
                .and_then(|versions| registry::as_of(versions, day));
            let (registered, vsic, unit) = match joined {
                Some(reg) => (1, reg.vsic_code.as_str(), reg.admin_unit_code.as_str()),
                None => {
                    out.unregistered += 1;
                    (0, "", "")
                }
            };
            let offset = offsets[c.index];
            let row = Row {
                seller_id: inv.seller_id,
                invoice_code: inv.code,
                invoice_key: c.key,
                invoice_form: u8::try_from(inv.form).unwrap_or(0), // 1..9: validated
                invoice_symbol: inv.symbol,
                issued_at_ms: issued_local - LOCAL_OFFSET_MS,
                issue_date: u16::try_from(day).unwrap_or(0), // 2000..2100: validated
                amount_vnd: inv.amount,
                vat_rate: u8::try_from(inv.rate).unwrap_or(0), // 0, 5, 8, 10: validated
                vat_amount_vnd: inv.vat,
                payment_method: inv.method,
                non_cash: u8::from(NON_CASH_METHODS.contains(&inv.method)),
                register_id: &c.register_id,
                buyer_tax_code: inv.buyer,
                seller_kind: seller_kind(inv.seller_id),
                registered,
                vsic_code: vsic,
                admin_unit_code: unit,
                schema_id: c.schema_id,
                kafka_topic: topic.as_str(),
                kafka_partition,
                kafka_offset: offset as u64,
                received_at_ms: timestamps[c.index],
            };
            out.starts.push(out.data.len());
            row.encode(&mut out.data);
            out.row_offsets.push(offset);
            if issued_local > state.watermark_local_ms {
                state.watermark_local_ms = issued_local;
                cutoff_day = state.dedup.cutoff_day(issued_local);
            }
        }
        state.dedup.advance(state.watermark_local_ms); // forgetting never changes a verdict
        out.watermark_local_ms = state.watermark_local_ms;
        out.rows = out.row_offsets.len();
        out.rejected_count = out.rejected.len();
        out.first_offset = out.row_offsets.first().copied().unwrap_or(-1);
        out.last_offset = out.row_offsets.last().copied().unwrap_or(-1);
        Ok(out)
    }
}

/// What `prepare` decided for a batch: rows (tuples or a Native block), rejections, counts.
#[pyclass(module = "einvoice_core", frozen)]
pub struct Prepared {
    #[pyo3(get)]
    rows: usize,
    #[pyo3(get)]
    first_offset: i64,
    #[pyo3(get)]
    last_offset: i64,
    #[pyo3(get)]
    duplicates: usize,
    #[pyo3(get)]
    skipped: usize,
    #[pyo3(get)]
    unregistered: usize,
    #[pyo3(get)]
    beyond_horizon: usize,
    #[pyo3(get)]
    watermark_local_ms: i64,
    #[pyo3(get)]
    rejected_count: usize,
    rejected: Vec<(usize, Rejection)>,
    partition: i64,
    data: Vec<u8>,
    starts: Vec<usize>,
    row_offsets: Vec<i64>,
}

impl Prepared {
    fn new(partition: i64, watermark_local_ms: i64) -> Prepared {
        Prepared {
            rows: 0,
            first_offset: -1,
            last_offset: -1,
            duplicates: 0,
            skipped: 0,
            unregistered: 0,
            beyond_horizon: 0,
            watermark_local_ms,
            rejected_count: 0,
            rejected: Vec::new(),
            partition,
            data: Vec::new(),
            starts: Vec::new(),
            row_offsets: Vec::new(),
        }
    }

    fn row_bytes(&self, i: usize) -> &[u8] {
        let start = self.starts.get(i).copied().unwrap_or(self.data.len());
        let end = self.starts.get(i + 1).copied().unwrap_or(self.data.len());
        self.data.get(start..end).unwrap_or(&[])
    }

    /// Row `i` read back from its RowBinary bytes; None only if the buffer is not what `encode` wrote.
    fn decoded(&self, i: usize) -> Option<Row<'_>> {
        Row::decode(self.row_bytes(i))
    }

    fn rows(&self) -> PyResult<Vec<Row<'_>>> {
        (0..self.rows)
            .map(|i| self.decoded(i))
            .collect::<Option<_>>()
            .ok_or_else(|| PyValueError::new_err("corrupt row buffer"))
    }

    fn tuple<'py>(&self, py: Python<'py>, i: usize) -> PyResult<Bound<'py, PyTuple>> {
        let row = self
            .decoded(i)
            .ok_or_else(|| PyValueError::new_err("corrupt row buffer"))?;
        let s = |s: &str| PyString::new(py, s).into_any();
        let int = |v: i64| v.into_pyobject(py).map(Bound::into_any);
        let buyer = match row.buyer_tax_code {
            Some(b) => s(b),
            None => py.None().into_bound(py),
        };
        let items: [Bound<'py, PyAny>; 23] = [
            s(row.seller_id),
            s(row.invoice_code),
            int(row.invoice_key)?,
            int(row.invoice_form.into())?,
            s(row.invoice_symbol),
            int(row.issued_at_ms)?,
            int(row.issue_date.into())?,
            int(row.amount_vnd)?,
            int(row.vat_rate.into())?,
            int(row.vat_amount_vnd)?,
            s(row.payment_method),
            int(row.non_cash.into())?,
            s(row.register_id),
            buyer,
            s(row.seller_kind),
            int(row.registered.into())?,
            s(row.vsic_code),
            s(row.admin_unit_code),
            int(row.schema_id.into())?,
            s(row.kafka_topic),
            int(self.partition)?,
            int(*self.row_offsets.get(i).unwrap_or(&-1))?,
            int(row.received_at_ms)?,
        ];
        PyTuple::new(py, items)
    }
}

#[pymethods]
impl Prepared {
    /// (index into the input lists, reason, detail) of every rejected record, in input order: the
    /// detail is the text the Python reference writes (`dlq.detail`), byte for byte.
    #[getter]
    fn rejected(&self) -> Vec<(usize, &'static str, &str)> {
        self.rejected
            .iter()
            .map(|(i, r)| (*i, r.reason, r.detail.as_str()))
            .collect()
    }

    /// The rejections as columns: (indexes, reasons, details), the reasons interned. What the ingest
    /// dead-letters a batch from: no Python container object per rejected record (the GC scans those).
    fn rejections<'py>(&self, py: Python<'py>) -> RejectionColumns<'_, 'py> {
        let mut indexes = Vec::with_capacity(self.rejected.len());
        let mut reasons = Vec::with_capacity(self.rejected.len());
        let mut details = Vec::with_capacity(self.rejected.len());
        for (index, rejection) in &self.rejected {
            indexes.push(*index);
            reasons.push(PyString::intern(py, rejection.reason));
            details.push(rejection.detail.as_str());
        }
        (indexes, reasons, details)
    }

    /// Each row's Kafka offset (what the reference passes as `offset` to `sink.add`).
    fn offsets(&self) -> Vec<i64> {
        self.row_offsets.clone()
    }

    /// The rows as the tuples the reference passes to `sink.add` (INVOICE_COLUMNS order).
    fn tuples<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut out = Vec::with_capacity(self.rows);
        for i in 0..self.rows {
            out.push(self.tuple(py, i)?);
        }
        PyList::new(py, out)
    }

    /// The rows as one ClickHouse Native block for STORED_COLUMNS (INVOICE_COLUMNS + insert_token),
    /// `token` on each. Built without the GIL: the consumer's thread runs meanwhile.
    fn native<'py>(&self, py: Python<'py>, token: &str) -> PyResult<Bound<'py, PyBytes>> {
        let rows = self.rows()?;
        let block = py.detach(|| native::block(&rows, token));
        Ok(PyBytes::new(py, &block))
    }

    fn __repr__(&self) -> String {
        format!(
            "Prepared(rows={}, rejected={}, duplicates={}, skipped={}, unregistered={}, beyond_horizon={})",
            self.rows,
            self.rejected.len(),
            self.duplicates,
            self.skipped,
            self.unregistered,
            self.beyond_horizon
        )
    }
}

/// `streams.dedup.invoice_key`
#[pyfunction(name = "invoice_key")]
fn invoice_key_py(seller_id: &str, invoice_code: &str) -> i64 {
    dedup::invoice_key(seller_id, invoice_code)
}

/// Python's `nfc()` as the core computes it (the crate, or Python for text unassigned in its Unicode).
#[pyfunction(name = "_nfc")]
fn nfc_py(py: Python<'_>, text: &str) -> PyResult<String> {
    Ok(unicode::nfc(py, text)?.into_owned())
}

/// The crate's NFC alone (to compare with unicodedata).
#[pyfunction(name = "_nfc_crate")]
fn nfc_crate_py(text: &str) -> String {
    unicode::nfc_crate(text).into_owned()
}

/// (Python's unicodedata version the tables come from, the normalization crate's Unicode version)
#[pyfunction(name = "_unicode_versions")]
fn unicode_versions() -> (&'static str, String) {
    let (a, b, c) = unicode_normalization::UNICODE_VERSION;
    (
        unicode_tables::PYTHON_UNICODE_VERSION,
        format!("{a}.{b}.{c}"),
    )
}

/// The Rust pattern an invoice code pattern becomes, and its group count.
#[pyfunction(name = "_translate_pattern")]
fn translate_pattern(py: Python<'_>, pattern: &str) -> PyResult<(String, usize)> {
    let (rust, groups, _) = pattern::translate(py, pattern)?;
    Ok((rust, groups))
}

type RejectionColumns<'a, 'py> = (Vec<usize>, Vec<Bound<'py, PyString>>, Vec<&'a str>);

type GroupsOut = Option<(Option<String>, Option<String>)>;

/// Groups 1 and 2 of `fullmatch(pattern, text)` for each text, as the core matches (None: no match).
#[pyfunction(name = "_code_groups")]
fn code_groups(py: Python<'_>, pattern: &str, texts: Vec<String>) -> PyResult<Vec<GroupsOut>> {
    let compiled = CodePattern::new(py, pattern)?;
    Ok(texts
        .iter()
        .map(|t| {
            compiled
                .fullmatch(t)
                .map(|(a, b)| (a.map(str::to_owned), b.map(str::to_owned)))
        })
        .collect())
}

#[pymodule]
fn einvoice_core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // the facts the core shares with the Python side, checked when it is loaded (streams/batch_core.py)
    m.add(
        "STORED_COLUMNS",
        native::COLUMNS.map(|(name, _)| name).to_vec(),
    )?;
    m.add("DAY_MS", DAY_MS)?;
    m.add("LOCAL_OFFSET_MS", LOCAL_OFFSET_MS)?;
    m.add_class::<InvoiceCore>()?;
    m.add_class::<Prepared>()?;
    m.add_class::<KafkaRecords>()?;
    m.add_function(wrap_pyfunction!(invoice_key_py, m)?)?;
    m.add_function(wrap_pyfunction!(nfc_py, m)?)?;
    m.add_function(wrap_pyfunction!(nfc_crate_py, m)?)?;
    m.add_function(wrap_pyfunction!(unicode_versions, m)?)?;
    m.add_function(wrap_pyfunction!(translate_pattern, m)?)?;
    m.add_function(wrap_pyfunction!(code_groups, m)?)?;
    Ok(())
}

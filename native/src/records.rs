//! `KafkaRecords`: one partition's records of one fetch, unpacked by `kafka.rs`, as Python sees them.
//!
//! The invoice path hands these to `InvoiceCore.prepare_records` whole: no record becomes a Python
//! object unless it is asked for (`record(i)`: a dead letter needs its key, value and headers).
//! A slice is a view on the same unpacked fetch.

use std::ops::Range;
use std::sync::Arc;

use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PySlice, PyTuple};

use crate::kafka::{self, Unpacked};
use crate::Columns;

type Header<'py> = (String, Option<Bound<'py, PyBytes>>);
type RecordColumns<'py> = (
    Vec<i64>,
    Vec<Option<Bound<'py, PyBytes>>>,
    Vec<Option<Bound<'py, PyBytes>>>,
    Vec<i64>,
    Vec<Bound<'py, PyAny>>,
);
type Record<'py> = (
    i64,
    Option<Bound<'py, PyBytes>>,
    Option<Bound<'py, PyBytes>>,
    i64,
    Vec<Header<'py>>,
);

#[pyclass(module = "einvoice_core", frozen, sequence)]
pub struct KafkaRecords {
    all: Arc<Unpacked>,
    range: Range<usize>,
}

impl KafkaRecords {
    pub fn len(&self) -> usize {
        self.range.len()
    }

    fn bytes(&self, span: &Option<Range<usize>>) -> Option<&[u8]> {
        span.as_ref().and_then(|r| self.all.data.get(r.clone()))
    }

    /// Appends this view's columns (borrowed from its fetch) to the core's inputs.
    pub fn append_to<'a>(&'a self, columns: &mut Columns<'a>) {
        let r = self.range.clone();
        columns
            .offsets
            .extend_from_slice(&self.all.offsets[r.clone()]);
        columns
            .timestamps
            .extend_from_slice(&self.all.timestamps[r.clone()]);
        columns
            .keys
            .extend(self.all.keys[r.clone()].iter().map(|k| self.bytes(k)));
        columns
            .values
            .extend(self.all.values[r].iter().map(|v| self.bytes(v)));
    }
}

#[pymethods]
impl KafkaRecords {
    /// The records of a fetch response's record set at or past `fetch_offset`.
    ///
    /// Raises ValueError (with the reason) for what only aiokafka should read: another message
    /// format, a bad CRC, a codec not known here, a malformed batch.
    #[staticmethod]
    fn unpack(py: Python<'_>, fetch: &[u8], fetch_offset: i64) -> PyResult<KafkaRecords> {
        let unpacked = py
            .detach(|| kafka::unpack(fetch, fetch_offset))
            .map_err(PyValueError::new_err)?;
        let n = unpacked.offsets.len();
        Ok(KafkaRecords {
            all: Arc::new(unpacked),
            range: 0..n,
        })
    }

    /// Records given as columns (aiokafka's own records when it read the fetch; tests).
    #[staticmethod]
    #[pyo3(signature = (offsets, keys, values, timestamps, headers, next_offset))]
    fn from_columns(
        offsets: Vec<i64>,
        keys: Vec<Option<Vec<u8>>>,
        values: Vec<Option<Vec<u8>>>,
        timestamps: Vec<i64>,
        headers: Vec<Vec<(String, Option<Vec<u8>>)>>,
        next_offset: i64,
    ) -> PyResult<KafkaRecords> {
        let n = offsets.len();
        if keys.len() != n || values.len() != n || timestamps.len() != n || headers.len() != n {
            return Err(PyValueError::new_err("the columns differ in length"));
        }
        let mut all = Unpacked {
            offsets,
            timestamps,
            next_offset,
            ..Unpacked::default()
        };
        let put = |data: &mut Vec<u8>, bytes: Option<Vec<u8>>| {
            bytes.map(|b| {
                let start = data.len();
                data.extend(b);
                start..data.len()
            })
        };
        for ((key, value), record_headers) in keys.into_iter().zip(values).zip(headers) {
            let k = put(&mut all.data, key);
            all.keys.push(k);
            let v = put(&mut all.data, value);
            all.values.push(v);
            let first = all.header_items.len();
            for (name, value) in record_headers {
                let name = put(&mut all.data, Some(name.into_bytes())).unwrap_or_default();
                let value = put(&mut all.data, value);
                all.header_items.push((name, value));
            }
            all.headers.push(first..all.header_items.len());
        }
        Ok(KafkaRecords {
            all: Arc::new(all),
            range: 0..n,
        })
    }

    fn __len__(&self) -> usize {
        self.len()
    }

    /// A slice (step 1) as a view on the same records.
    fn __getitem__(&self, index: &Bound<'_, PySlice>) -> PyResult<KafkaRecords> {
        let found = index.indices(self.len() as isize)?;
        if found.step != 1 {
            return Err(PyValueError::new_err("only slices of step 1"));
        }
        let start = self.range.start + found.start as usize;
        let stop = (self.range.start + found.stop.max(found.start) as usize).min(self.range.end);
        Ok(KafkaRecords {
            all: Arc::clone(&self.all),
            range: start..stop,
        })
    }

    /// Offset of the first record (-1: none).
    #[getter]
    fn first_offset(&self) -> i64 {
        self.all
            .offsets
            .get(self.range.start)
            .copied()
            .filter(|_| !self.range.is_empty())
            .unwrap_or(-1)
    }

    /// Offset of the last record (-1: none).
    #[getter]
    fn last_offset(&self) -> i64 {
        match self.range.end.checked_sub(1) {
            Some(last) if !self.range.is_empty() => self.all.offsets[last],
            _ => -1,
        }
    }

    /// Where the consumer's next fetch of the partition starts, past this fetch's batches.
    #[getter]
    fn next_offset(&self) -> i64 {
        self.all.next_offset
    }

    fn offsets(&self) -> Vec<i64> {
        self.all.offsets[self.range.clone()].to_vec()
    }

    /// Record `index`: (offset, key, value, timestamp in ms, headers as (name, value) pairs).
    fn record<'py>(&self, py: Python<'py>, index: usize) -> PyResult<Record<'py>> {
        if index >= self.len() {
            return Err(PyIndexError::new_err(index));
        }
        Ok(self.record_at(py, self.range.start + index))
    }

    /// The records at `indexes` as columns (offsets, keys, values, timestamps, headers), in one call:
    /// the dead letters of a batch. A record without headers gets the empty tuple (no new object).
    fn columns<'py>(&self, py: Python<'py>, indexes: Vec<usize>) -> PyResult<RecordColumns<'py>> {
        if let Some(&bad) = indexes.iter().find(|&&i| i >= self.len()) {
            return Err(PyIndexError::new_err(bad));
        }
        let n = indexes.len();
        let mut out: RecordColumns<'py> = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for index in indexes {
            let (offset, key, value, timestamp, headers) =
                self.record_at(py, self.range.start + index);
            out.0.push(offset);
            out.1.push(key);
            out.2.push(value);
            out.3.push(timestamp);
            out.4.push(if headers.is_empty() {
                PyTuple::empty(py).into_any()
            } else {
                PyList::new(py, headers)?.into_any()
            });
        }
        Ok(out)
    }

    fn __repr__(&self) -> String {
        format!(
            "KafkaRecords({} records, offsets {}..{})",
            self.len(),
            self.first_offset(),
            self.last_offset()
        )
    }
}

impl KafkaRecords {
    /// Record `i` of the whole fetch (not of this view).
    fn record_at<'py>(&self, py: Python<'py>, i: usize) -> Record<'py> {
        let all = &self.all;
        let bytes = |span: &Option<Range<usize>>| self.bytes(span).map(|b| PyBytes::new(py, b));
        let headers = all.header_items[all.headers[i].clone()]
            .iter()
            .map(|(name, value)| {
                let name = String::from_utf8_lossy(&all.data[name.clone()]).into_owned();
                (name, bytes(value))
            })
            .collect();
        (
            all.offsets[i],
            bytes(&all.keys[i]),
            bytes(&all.values[i]),
            all.timestamps[i],
            headers,
        )
    }
}

//! Kafka record batches (message format v2) as a fetch response carries them, unpacked into columns.
//!
//! What aiokafka 0.14 does per record in Python (`aiokafka/consumer/fetcher.py`, `PartitionRecords.
//! _unpack_records` and `_consumer_record`; the batch layout of `aiokafka/record/default_records.py`,
//! which follows Kafka's `DefaultRecordBatch`), done here once per fetch. Anything this does not
//! read exactly as aiokafka would (another magic, a bad CRC, a codec it lacks, a truncated record
//! inside a whole batch) is `Err`: the caller then lets aiokafka read the fetch, with its own errors.
//!
//! A batch: baseOffset i64, batchLength i32, partitionLeaderEpoch i32, magic i8, crc u32 (CRC-32C
//! of everything after it), attributes i16 (codec in bits 0-2, LogAppendTime in bit 3, control in
//! bit 5), lastOffsetDelta i32, baseTimestamp i64, maxTimestamp i64, producerId i64, producerEpoch
//! i16, baseSequence i32, record count i32, then the records, compressed as a whole. Big-endian.
//! A record: length, attributes i8, timestampDelta, offsetDelta, key length, key, value length,
//! value, header count, headers (key length, key, value length, value); lengths and deltas are
//! zigzag varints, -1 a null.
//! A fetch may end in a partial batch (the broker cuts at the fetch size): it is left for the
//! next fetch, as aiokafka leaves it.

use std::io::Read;
use std::ops::Range;

const HEADER: usize = 61;
const LOG_OVERHEAD: usize = 12; // baseOffset + batchLength

/// Bytes of the records: key, value and header spans index `data`.
#[derive(Default)]
pub struct Unpacked {
    pub data: Vec<u8>,
    pub offsets: Vec<i64>,
    pub timestamps: Vec<i64>,
    pub keys: Vec<Option<Range<usize>>>,
    pub values: Vec<Option<Range<usize>>>,
    /// per record, its range in `header_items`
    pub headers: Vec<Range<usize>>,
    /// (key, value) spans; keys are UTF-8 (checked)
    pub header_items: Vec<(Range<usize>, Option<Range<usize>>)>,
    /// where the next fetch starts: past the last whole batch (control batches included)
    pub next_offset: i64,
}

fn be<const N: usize>(buf: &[u8], at: usize) -> Result<[u8; N], String> {
    buf.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| "batch header cut short".to_owned())
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn varlong(&mut self) -> Result<i64, String> {
        let mut raw: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.pos).ok_or("record cut short")?;
            self.pos += 1;
            raw |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err("varint longer than 10 bytes".to_owned())
    }

    fn take(&mut self, n: usize) -> Result<Range<usize>, String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or("record cut short")?;
        let span = self.pos..end;
        self.pos = end;
        Ok(span)
    }

    /// A length-prefixed field: None for length -1.
    fn field(&mut self) -> Result<Option<Range<usize>>, String> {
        match self.varlong()? {
            -1 => Ok(None),
            n if n >= 0 => Ok(Some(
                self.take(usize::try_from(n).map_err(|e| e.to_string())?)?,
            )),
            n => Err(format!("negative length {n}")),
        }
    }
}

fn decompress(codec: u16, body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(body.len() * 4);
    match codec {
        1 => flate2::read::MultiGzDecoder::new(body)
            .read_to_end(&mut out)
            .map_err(|e| format!("gzip: {e}"))?,
        2 => return snappy(body),
        3 => lz4_flex::frame::FrameDecoder::new(body)
            .read_to_end(&mut out)
            .map_err(|e| format!("lz4: {e}"))?,
        4 => ruzstd::decoding::StreamingDecoder::new(body)
            .map_err(|e| format!("zstd: {e}"))?
            .read_to_end(&mut out)
            .map_err(|e| format!("zstd: {e}"))?,
        other => return Err(format!("unknown codec {other}")),
    };
    Ok(out)
}

/// Snappy as Kafka's producers write it: raw, or in snappy-java's framing (a magic header, then blocks).
fn snappy(body: &[u8]) -> Result<Vec<u8>, String> {
    const XERIAL: &[u8] = b"\x82SNAPPY\x00";
    let raw = |block: &[u8]| {
        snap::raw::Decoder::new()
            .decompress_vec(block)
            .map_err(|e| format!("snappy: {e}"))
    };
    if !body.starts_with(XERIAL) {
        return raw(body);
    }
    let mut out = Vec::new();
    let mut pos = 16; // magic, version, compatible version
    while pos < body.len() {
        let len = u32::from_be_bytes(be::<4>(body, pos)?) as usize;
        let block = body
            .get(pos + 4..pos + 4 + len)
            .ok_or("snappy block cut short")?;
        out.extend(raw(block)?);
        pos += 4 + len;
    }
    Ok(out)
}

/// The records of `fetch` from `fetch_offset` on, as aiokafka's PartitionRecords yields them
/// (read_uncommitted: every data batch; control batches skipped). Its position moves as it does:
/// past each record yielded, then to the end of each batch; a record before the position is skipped.
pub fn unpack(fetch: &[u8], fetch_offset: i64) -> Result<Unpacked, String> {
    let mut out = Unpacked {
        next_offset: fetch_offset,
        ..Unpacked::default()
    };
    let mut pos = 0;
    while pos + LOG_OVERHEAD <= fetch.len() {
        let base_offset = i64::from_be_bytes(be::<8>(fetch, pos)?);
        let length = i32::from_be_bytes(be::<4>(fetch, pos + 8)?);
        let length = usize::try_from(length).map_err(|_| "negative batch length")?;
        let Some(batch) = fetch.get(pos..pos + LOG_OVERHEAD + length) else {
            break; // a partial batch at the end of the fetch
        };
        pos += LOG_OVERHEAD + length;
        if batch.len() < HEADER {
            return Err("batch shorter than its header".to_owned());
        }
        let magic = batch[16];
        if magic != 2 {
            return Err(format!("message format v{magic}"));
        }
        let crc = u32::from_be_bytes(be::<4>(batch, 17)?);
        if crc32c::crc32c(&batch[21..]) != crc {
            return Err("CRC mismatch".to_owned());
        }
        let attributes = u16::from_be_bytes(be::<2>(batch, 21)?);
        let last_offset_delta = i32::from_be_bytes(be::<4>(batch, 23)?);
        let base_timestamp = i64::from_be_bytes(be::<8>(batch, 27)?);
        let max_timestamp = i64::from_be_bytes(be::<8>(batch, 35)?);
        let count = i32::from_be_bytes(be::<4>(batch, 57)?);
        let next_offset = base_offset + i64::from(last_offset_delta) + 1;
        if attributes & 0x20 != 0 {
            out.next_offset = next_offset; // a control batch: skipped, as aiokafka does
            continue;
        }
        let log_append_time = attributes & 0x08 != 0;
        let body = &batch[HEADER..];
        let records: Vec<u8> = match attributes & 0x07 {
            0 => body.to_vec(),
            codec => decompress(codec, body)?,
        };
        let mut cur = Cursor {
            buf: &records,
            pos: 0,
        };
        let shift = out.data.len();
        let moved = |r: Range<usize>| r.start + shift..r.end + shift;
        for _ in 0..count {
            let length = usize::try_from(cur.varlong()?).map_err(|_| "negative record length")?;
            let end = cur.pos.checked_add(length).filter(|&e| e <= records.len());
            let end = end.ok_or("record cut short")?;
            cur.take(1)?; // attributes
            let timestamp_delta = cur.varlong()?;
            let offset = base_offset + cur.varlong()?;
            let key = cur.field()?;
            let value = cur.field()?;
            let header_count = cur.varlong()?;
            let first_header = out.header_items.len();
            for _ in 0..header_count {
                let name = cur.field()?.ok_or("null header key")?;
                std::str::from_utf8(&records[name.clone()]).map_err(|_| "header key not UTF-8")?;
                let value = cur.field()?;
                out.header_items.push((moved(name), value.map(moved)));
            }
            if cur.pos != end {
                return Err("record length does not match its fields".to_owned());
            }
            if offset < out.next_offset {
                out.header_items.truncate(first_header);
                continue; // before the position: a whole batch was returned
            }
            out.next_offset = offset + 1;
            out.offsets.push(offset);
            out.timestamps.push(if log_append_time {
                max_timestamp
            } else {
                base_timestamp + timestamp_delta
            });
            out.keys.push(key.map(moved));
            out.values.push(value.map(moved));
            out.headers.push(first_header..out.header_items.len());
        }
        if cur.pos != records.len() {
            return Err("bytes left after the batch's records".to_owned());
        }
        out.data.extend_from_slice(&records);
        out.next_offset = next_offset; // as aiokafka: past the batch, even past records compaction removed
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_or_partial_fetch_has_no_records() {
        let out = unpack(&[], 7).unwrap();
        assert!(out.offsets.is_empty() && out.next_offset == 7);
        let mut partial = vec![0u8; 12];
        partial[11] = 200; // a batch of 200 bytes of which none arrived
        let out = unpack(&partial, 7).unwrap();
        assert!(out.offsets.is_empty() && out.next_offset == 7);
    }

    #[test]
    fn zigzag_varints() {
        for (bytes, value) in [(&[0x01u8][..], -1i64), (&[0x02], 1), (&[0xac, 0x02], 150)] {
            let mut cur = Cursor { buf: bytes, pos: 0 };
            assert_eq!(cur.varlong().unwrap(), value);
        }
        let mut cur = Cursor {
            buf: &[0xff; 11],
            pos: 0,
        };
        assert!(cur.varlong().is_err());
    }
}

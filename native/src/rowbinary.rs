//! One row of the `invoices` table in ClickHouse RowBinary, column order `INVOICE_COLUMNS`: how
//! `prepare` keeps its rows until they are written out as one Native block (`native.rs`).
//!
//! String: LEB128 length + bytes; UInt8/UInt16/UInt64/Int64 little-endian; DateTime64(3) as Int64
//! milliseconds since the epoch (UTC); Date as UInt16 days; Nullable(String): 0 + string, or 1;
//! LowCardinality(String) as String.

/// One row as `InvoiceIngest._prepare` hands it to `sink.add` (the tuple's order).
pub struct Row<'a> {
    pub seller_id: &'a str,
    pub invoice_code: &'a str,
    pub invoice_key: i64,
    pub invoice_form: u8,
    pub invoice_symbol: &'a str,
    pub issued_at_ms: i64,
    pub issue_date: u16,
    pub amount_vnd: i64,
    pub vat_rate: u8,
    pub vat_amount_vnd: i64,
    pub payment_method: &'a str,
    pub non_cash: u8,
    pub register_id: &'a str,
    pub buyer_tax_code: Option<&'a str>,
    pub seller_kind: &'a str,
    pub registered: u8,
    pub vsic_code: &'a str,
    pub admin_unit_code: &'a str,
    pub schema_id: u16,
    pub kafka_topic: &'a str,
    pub kafka_partition: u16,
    pub kafka_offset: u64,
    pub received_at_ms: i64,
}

/// LEB128, as ClickHouse writes lengths and counts.
pub fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

impl<'a> Row<'a> {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, self.seller_id);
        put_str(out, self.invoice_code);
        out.extend_from_slice(&self.invoice_key.to_le_bytes());
        out.push(self.invoice_form);
        put_str(out, self.invoice_symbol);
        out.extend_from_slice(&self.issued_at_ms.to_le_bytes());
        out.extend_from_slice(&self.issue_date.to_le_bytes());
        out.extend_from_slice(&self.amount_vnd.to_le_bytes());
        out.push(self.vat_rate);
        out.extend_from_slice(&self.vat_amount_vnd.to_le_bytes());
        put_str(out, self.payment_method);
        out.push(self.non_cash);
        put_str(out, self.register_id);
        match self.buyer_tax_code {
            Some(buyer) => {
                out.push(0);
                put_str(out, buyer);
            }
            None => out.push(1),
        }
        put_str(out, self.seller_kind);
        out.push(self.registered);
        put_str(out, self.vsic_code);
        put_str(out, self.admin_unit_code);
        out.extend_from_slice(&self.schema_id.to_le_bytes());
        put_str(out, self.kafka_topic);
        out.extend_from_slice(&self.kafka_partition.to_le_bytes());
        out.extend_from_slice(&self.kafka_offset.to_le_bytes());
        out.extend_from_slice(&self.received_at_ms.to_le_bytes());
    }

    /// What [`Row::encode`] wrote; None only if the bytes are not a row.
    pub fn decode(bytes: &'a [u8]) -> Option<Row<'a>> {
        let mut r = Reader::new(bytes);
        Some(Row {
            seller_id: r.str()?,
            invoice_code: r.str()?,
            invoice_key: r.i64()?,
            invoice_form: r.u8()?,
            invoice_symbol: r.str()?,
            issued_at_ms: r.i64()?,
            issue_date: r.u16()?,
            amount_vnd: r.i64()?,
            vat_rate: r.u8()?,
            vat_amount_vnd: r.i64()?,
            payment_method: r.str()?,
            non_cash: r.u8()?,
            register_id: r.str()?,
            buyer_tax_code: r.nullable_str()?,
            seller_kind: r.str()?,
            registered: r.u8()?,
            vsic_code: r.str()?,
            admin_unit_code: r.str()?,
            schema_id: r.u16()?,
            kafka_topic: r.str()?,
            kafka_partition: r.u16()?,
            kafka_offset: r.u64()?,
            received_at_ms: r.i64()?,
        })
    }
}

/// A bounds-checked cursor over RowBinary bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(out)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn str(&mut self) -> Option<&'a str> {
        let mut n: u64 = 0;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            n |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        std::str::from_utf8(self.take(usize::try_from(n).ok()?)?).ok()
    }

    fn nullable_str(&mut self) -> Option<Option<&'a str>> {
        match self.u8()? {
            0 => Some(Some(self.str()?)),
            _ => Some(None),
        }
    }
}

//! `contracts.validation.InvoiceValidator.check` and `check_key`, rule by rule, in their order.
//!
//! Python semantics that matter here: `len()` counts code points; the VAT rule is Python's
//! `amount * rate / 100` (a correctly rounded true division of ints), `float(vat) - expected`,
//! and an exact comparison of that float with the int tolerance; the time rules compare Python
//! ints (i128 here, so `received + tolerance` cannot overflow).

use pyo3::exceptions::{PyKeyError, PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyInt;

use crate::avro::Invoice;
use crate::detail::{isoformat, repr_bytes, repr_str, true_div, Rejection};
use crate::pattern::CodePattern;

pub const INVALID_SELLER_ID: &str = "invalid_seller_id";
pub const INVALID_INVOICE_FORM: &str = "invalid_invoice_form";
pub const INVALID_SYMBOL: &str = "invalid_symbol";
pub const INVALID_INVOICE_CODE: &str = "invalid_invoice_code";
pub const INVALID_AMOUNT: &str = "invalid_amount";
pub const INVALID_VAT_RATE: &str = "invalid_vat_rate";
pub const VAT_MISMATCH: &str = "vat_mismatch";
pub const INVALID_REGISTER_ID: &str = "invalid_register_id";
pub const INVALID_BUYER_TAX_CODE: &str = "invalid_buyer_tax_code";
pub const ISSUED_IN_FUTURE: &str = "issued_in_future";
pub const ISSUED_TOO_OLD: &str = "issued_too_old";
pub const INVALID_KEY: &str = "invalid_key";
pub const MALFORMED_VALUE: &str = "malformed_value";

pub const LOCAL_OFFSET_MS: i64 = 7 * 3600 * 1000;
pub const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i128 = 3_600_000;
const MAX_REGISTER_ID_CHARS: usize = 64;
/// datetime(2000, 1, 1) and datetime(2100, 1, 1) as local epoch milliseconds.
const EARLIEST_ISSUED_MS: i64 = 946_684_800_000;
const LATEST_ISSUED_MS: i64 = 4_102_444_800_000;

pub struct Rules {
    pub code: CodePattern,
    pub future_tolerance_ms: i128,
    pub max_lateness_ms: i128,
    pub max_amount_vnd: i128,
    pub vat_tolerance_vnd: i128,
}

fn digits(b: &[u8]) -> bool {
    b.iter().all(u8::is_ascii_digit)
}

/// `SELLER_ID_RE.fullmatch`: `\d{10}|\d{10}-\d{3}|\d{12}`, ASCII digits only, nothing around.
pub fn is_tax_code(s: &str) -> bool {
    let b = s.as_bytes();
    match b.len() {
        10 | 12 => digits(b),
        14 => digits(&b[..10]) && b[10] == b'-' && digits(&b[11..]),
        _ => false,
    }
}

/// `SYMBOL_RE.fullmatch`: `[CK](\d{2})M[0-9A-Z]{2}`; returns group 1 (the two-digit year).
pub fn symbol_year(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let tail = |c: &u8| c.is_ascii_digit() || c.is_ascii_uppercase();
    (b.len() == 6
        && matches!(b[0], b'C' | b'K')
        && digits(&b[1..3])
        && b[3] == b'M'
        && tail(&b[4])
        && tail(&b[5]))
    .then(|| s.get(1..3))
    .flatten()
}

/// `_UNPRINTABLE_RE`: C0, DEL, C1, bidi embeddings/overrides and isolates (surrogates cannot occur).
fn unprintable(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn bad_register_id(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    if s.is_ascii() {
        return s.len() > MAX_REGISTER_ID_CHARS || s.bytes().any(|b| b < 0x20 || b == 0x7f);
    }
    s.chars().count() > MAX_REGISTER_ID_CHARS || s.chars().any(unprintable)
}

/// Python's `int / int` for 0 <= n < 2**67 and d = 100: the correctly rounded float quotient.
fn true_div_100(n: u128) -> f64 {
    const D: u128 = 100;
    if n < (1u128 << 53) {
        return n as f64 / D as f64; // both exact: IEEE division rounds the exact quotient once
    }
    // Candidates around an approximation, judged exactly (scaled by 2**16 to stay integral).
    let approx = n as f64 / D as f64;
    let mut best: Option<(u128, f64)> = None;
    let mut candidate = next_down(next_down(approx));
    for _ in 0..5 {
        let (mantissa, exp) = decompose(candidate);
        let shift = exp + 16;
        if (0..=60).contains(&shift) {
            let scaled = (mantissa as u128 * D) << shift;
            let target = n << 16;
            let dist = scaled.abs_diff(target);
            let better = match best {
                None => true,
                Some((d, prev)) => {
                    dist < d || (dist == d && decompose(prev).0 % 2 == 1 && mantissa % 2 == 0)
                }
            };
            if better {
                best = Some((dist, candidate));
            }
        }
        candidate = next_up(candidate);
    }
    best.map_or(approx, |(_, x)| x)
}

/// (mantissa, exponent) with x = mantissa * 2**exponent, for positive normal x.
fn decompose(x: f64) -> (u64, i32) {
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    if exp == 0 {
        (frac, -1074)
    } else {
        (frac | (1u64 << 52), exp - 1075)
    }
}

fn next_up(x: f64) -> f64 {
    f64::from_bits(x.to_bits() + 1) // positive finite x only
}

fn next_down(x: f64) -> f64 {
    f64::from_bits(x.to_bits() - 1)
}

/// Python's `float > int`, exact (no rounding of the int), for a finite float.
fn float_gt_int(x: f64, t: i128) -> bool {
    if (-(1i128 << 53)..=(1i128 << 53)).contains(&t) {
        return x > t as f64;
    }
    const TWO_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    let floor = x.floor();
    if floor >= TWO_127 {
        return true; // above every i128
    }
    if floor < -TWO_127 {
        return false;
    }
    let fi = floor as i128;
    fi > t || (fi == t && x > floor)
}

/// `amount * rate / 100`, Python's true division (0 <= amount, rate 0..10).
fn expected_vat(amount: i64, rate: i64) -> f64 {
    true_div_100((amount as i128 * rate as i128) as u128) // both non-negative here
}

/// The VAT rule: `vat < 0 or abs(vat - amount * rate / 100) > tolerance` (0 <= amount, rate 0..10).
pub fn vat_mismatch(amount: i64, rate: i64, vat: i64, tolerance: i128) -> bool {
    if vat < 0 {
        return true;
    }
    let diff = (vat as f64 - expected_vat(amount, rate)).abs();
    float_gt_int(diff, tolerance)
}

/// What `int(group(1)) != form` decides: Ok(true) when they differ; Err(()) when `int()` raises.
fn form_differs(py: Python<'_>, group: &str, form: i64) -> PyResult<Result<bool, ()>> {
    if !group.is_empty() && group.len() <= 30 && group.bytes().all(|b| b.is_ascii_digit()) {
        let value = group
            .bytes()
            .fold(0u128, |acc, b| acc * 10 + u128::from(b - b'0'));
        return Ok(Ok(
            i128::try_from(value).map_or(true, |v| v != i128::from(form))
        ));
    }
    // Anything else (signs, spaces, underscores, other scripts' digits, 4300+ digits): Python's int().
    match py.get_type::<PyInt>().call1((group,)) {
        Ok(number) => Ok(Ok(number.ne(form)?)),
        Err(err)
            if err.is_instance_of::<PyValueError>(py)
                || err.is_instance_of::<PyTypeError>(py)
                || err.is_instance_of::<PyOverflowError>(py)
                || err.is_instance_of::<PyKeyError>(py) =>
        {
            Ok(Err(()))
        }
        Err(err) => Err(err),
    }
}

impl Rules {
    /// `InvoiceValidator.check(value, received_at_ms)`: None when valid, else the reason and its detail.
    pub fn check(
        &self,
        py: Python<'_>,
        v: &Invoice<'_>,
        received_at_ms: i64,
    ) -> PyResult<Option<Rejection>> {
        let reject =
            |reason: &'static str, detail: String| Ok(Some(Rejection::new(reason, detail)));
        if !is_tax_code(v.seller_id) {
            let shown = repr_str(v.seller_id, 40);
            return reject(
                INVALID_SELLER_ID,
                format!("seller id {shown} is not 10 digits, 10-3 digits or 12 digits"),
            );
        }
        if !(1..=9).contains(&v.form) {
            let form = v.form;
            return reject(
                INVALID_INVOICE_FORM,
                format!("form number {form} is not one digit 1-9"),
            );
        }
        let Some(year) = symbol_year(v.symbol) else {
            let shown = repr_str(v.symbol, 40);
            return reject(
                INVALID_SYMBOL,
                format!("symbol {shown} is not of the cash-register kind (C|K, yy, M, xx)"),
            );
        };
        let code = || repr_str(v.code, 60);
        let Some((form_group, year_group)) = self.code.fullmatch(v.code) else {
            let code = code();
            return reject(
                INVALID_INVOICE_CODE,
                format!("invoice code {code} does not match the configured pattern"),
            );
        };
        let not_a_number = || {
            let code = code();
            reject(
                MALFORMED_VALUE,
                format!("invoice code {code}: the configured pattern's form group is not a number"),
            )
        };
        let Some(form_group) = form_group else {
            return not_a_number(); // int(None): TypeError
        };
        let differs = match form_differs(py, form_group, v.form)? {
            Err(()) => return not_a_number(),
            Ok(differs) => differs,
        };
        if differs || year_group != Some(year) {
            let (code, form, symbol) = (code(), v.form, repr_str(v.symbol, usize::MAX));
            return reject(
                INVALID_INVOICE_CODE,
                format!("invoice code {code} disagrees with form {form} / symbol {symbol} (form digit or year)"),
            );
        }
        if v.amount < 0 || i128::from(v.amount) > self.max_amount_vnd {
            let (amount, max) = (v.amount, self.max_amount_vnd);
            return reject(
                INVALID_AMOUNT,
                format!("amount {amount} VND outside 0..{max}"),
            );
        }
        if !matches!(v.rate, 0 | 5 | 8 | 10) {
            let rate = v.rate;
            return reject(
                INVALID_VAT_RATE,
                format!("VAT rate {rate}% is not one of 0, 5, 8, 10"),
            );
        }
        if vat_mismatch(v.amount, v.rate, v.vat, self.vat_tolerance_vnd) {
            let (vat, rate, amount) = (v.vat, v.rate, v.amount);
            let expected = expected_vat(amount, rate);
            return reject(
                VAT_MISMATCH,
                format!("VAT {vat} VND but {rate}% of {amount} is {expected:.0}"),
            );
        }
        if bad_register_id(v.register_id) {
            let shown = repr_str(v.register_id, 40);
            let chars = v.register_id.chars().count();
            return reject(
                INVALID_REGISTER_ID,
                format!(
                    "register id {shown} ({chars} chars) is empty, longer than \
                     {MAX_REGISTER_ID_CHARS} or holds control characters"
                ),
            );
        }
        if let Some(buyer) = v.buyer {
            if !is_tax_code(buyer) {
                let shown = repr_str(buyer, 40);
                return reject(
                    INVALID_BUYER_TAX_CODE,
                    format!("buyer tax code {shown} is not a legal tax code form"),
                );
            }
        }
        if !(EARLIEST_ISSUED_MS..LATEST_ISSUED_MS).contains(&v.issued_ms) {
            let reason = if v.issued_ms < EARLIEST_ISSUED_MS {
                ISSUED_TOO_OLD
            } else {
                ISSUED_IN_FUTURE
            };
            let issued = isoformat(v.issued_ms);
            return reject(reason, format!("issued at {issued}, outside 2000-2100"));
        }
        let issued_utc = i128::from(v.issued_ms - LOCAL_OFFSET_MS);
        let received = i128::from(received_at_ms);
        if received >= 0 {
            if issued_utc > received + self.future_tolerance_ms {
                let ahead_min = true_div(issued_utc - received, 60_000);
                return reject(
                    ISSUED_IN_FUTURE,
                    format!("issued {ahead_min:.0} min after the feed received it"),
                );
            }
            if issued_utc < received - self.max_lateness_ms {
                let late_h = true_div(received - issued_utc, HOUR_MS);
                let limit_h = true_div(self.max_lateness_ms, HOUR_MS);
                return reject(
                    ISSUED_TOO_OLD,
                    format!("arrived {late_h:.1} h after issue; the limit is {limit_h:.0} h"),
                );
            }
        }
        Ok(None)
    }
}

/// `check_key`: None when the record key is the seller id's UTF-8 bytes, else why not.
pub fn check_key(seller_id: &str, key: Option<&[u8]>) -> Option<Rejection> {
    if key_matches(seller_id, key) {
        return None;
    }
    let shown = key.map_or_else(|| "None".to_owned(), |k| repr_bytes(&k[..k.len().min(40)]));
    let seller = repr_str(seller_id, 40);
    Some(Rejection::new(
        INVALID_KEY,
        format!("record key {shown} is not the seller id {seller}"),
    ))
}

/// `check_key`: the record key must be the seller id's UTF-8 bytes.
pub fn key_matches(seller_id: &str, key: Option<&[u8]>) -> bool {
    key == Some(seller_id.as_bytes())
}

/// `seller_kind`: by length in code points (a valid seller id is ASCII, so bytes = code points).
pub fn seller_kind(seller_id: &str) -> &'static str {
    match seller_id.chars().count() {
        14 => "branch",
        12 => "household",
        _ => "enterprise",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tax_codes() {
        assert!(is_tax_code("2800000001"));
        assert!(is_tax_code("2800000001-001"));
        assert!(is_tax_code("280000000123"));
        assert!(!is_tax_code("2800000001\n"));
        assert!(!is_tax_code("28000000O1"));
        assert!(!is_tax_code("2800000001-0011"));
        assert!(!is_tax_code("2800000001_001"));
    }

    #[test]
    fn symbols() {
        assert_eq!(symbol_year("C24MTT"), Some("24"));
        assert_eq!(symbol_year("K99M0Z"), Some("99"));
        assert_eq!(symbol_year("C24TTT"), None);
        assert_eq!(symbol_year("C24Mtt"), None);
        assert_eq!(symbol_year("C24MT"), None);
    }

    #[test]
    fn division_is_correctly_rounded() {
        assert_eq!(true_div_100(250_000 * 8), 20_000.0);
        // 2**60 + 1 over 100: exact quotient 11529215046068469.77 -> nearest float
        let n: u128 = (1 << 60) + 1;
        let x = true_div_100(n);
        assert_eq!(x, 11_529_215_046_068_470.0);
        assert!(float_gt_int(1.5, 1));
        assert!(!float_gt_int(1.0, 1));
        assert!(!float_gt_int(1e30, i128::MAX / 2));
        assert!(float_gt_int(2.5e38, i128::MAX));
    }
}

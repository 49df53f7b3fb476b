//! The pieces of Python's formatting the dead-letter details use, reproduced exactly.
//!
//! A rejected record's detail (the DLQ's `dlq.detail` header) is the text the Python reference
//! (`contracts.validation`, `contracts.codec`) writes, byte for byte: `repr()` of a str or bytes,
//! `datetime.isoformat()`, the true division of two ints and `format(x, ".Nf")`.

use crate::unicode::in_ranges;
use crate::unicode_tables::NONPRINTABLE;

/// A rejection: the stable reason (`dlq.reason`) and the detail a DLQ reader sees (`dlq.detail`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: &'static str,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: &'static str, detail: String) -> Rejection {
        Rejection { reason, detail }
    }
}

/// Not printable in Python's Unicode version (`not str.isprintable()`): escaped by `repr()`.
fn nonprintable(c: char) -> bool {
    let cp = u32::from(c);
    if cp < 0x80 {
        return cp < 0x20 || cp == 0x7f;
    }
    in_ranges(&NONPRINTABLE, cp)
}

/// `repr(text[:max_chars])`: Python's quote choice and escapes (code points, not bytes, are counted).
pub fn repr_str(text: &str, max_chars: usize) -> String {
    let end = text
        .char_indices()
        .nth(max_chars)
        .map_or(text.len(), |(i, _)| i);
    let text = &text[..end];
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if nonprintable(c) => {
                let cp = u32::from(c);
                if cp < 0x100 {
                    out.push_str(&format!("\\x{cp:02x}"));
                } else if cp < 0x1_0000 {
                    out.push_str(&format!("\\u{cp:04x}"));
                } else {
                    out.push_str(&format!("\\U{cp:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// `repr(data)` of bytes: `b'...'`, printable ASCII as is, the rest as `\xNN`.
pub fn repr_bytes(data: &[u8]) -> String {
    let quote = if data.contains(&b'\'') && !data.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    let mut out = String::with_capacity(data.len() + 3);
    out.push('b');
    out.push(char::from(quote));
    for &b in data {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b if b == quote => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push(char::from(quote));
    out
}

/// `datetime(1970, 1, 1) + timedelta(milliseconds=ms)`, then `.isoformat()` (years 1..9999).
pub fn isoformat(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (seconds, millis) = (in_day / 1000, in_day % 1000);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
    if millis != 0 {
        out.push_str(&format!(".{:06}", millis * 1000));
    }
    out
}

/// Python's `n / d` for ints (|n| < 2**100, 0 < d < 2**64): the correctly rounded float quotient.
pub fn true_div(n: i128, d: i128) -> f64 {
    let magnitude = ratio(n.unsigned_abs(), d.unsigned_abs());
    if n < 0 {
        -magnitude
    } else {
        magnitude
    }
}

fn ratio(n: u128, d: u128) -> f64 {
    const EXACT: u128 = 1 << 53;
    if n < EXACT && d < EXACT {
        return n as f64 / d as f64; // both exact: IEEE division rounds the exact quotient once
    }
    let bits = |x: u128| 128 - i64::from(x.leading_zeros());
    // a quotient of 55 or 56 bits, then rounded to 53 (half to even, the remainder as a sticky bit)
    let shift = 55 - (bits(n) - bits(d));
    let (q, r) = if shift >= 0 {
        let scaled = n << shift;
        (scaled / d, scaled % d)
    } else {
        let scaled = d << -shift;
        (n / scaled, n % scaled)
    };
    let extra = bits(q) - 53;
    if extra <= 0 {
        return q as f64 * 2f64.powi(-shift as i32);
    }
    let mut mantissa = q >> extra;
    let rest = q & ((1u128 << extra) - 1);
    let half = 1u128 << (extra - 1);
    if rest > half || (rest == half && (r != 0 || mantissa & 1 == 1)) {
        mantissa += 1;
    }
    mantissa as f64 * 2f64.powi((extra - shift) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reprs_like_python() {
        assert_eq!(repr_str("ab'c", 40), "\"ab'c\"");
        assert_eq!(repr_str("a'b\"c", 40), "'a\\'b\"c'");
        assert_eq!(
            repr_str("x\n\t\u{7f}\u{85}\u{202e}é", 40),
            "'x\\n\\t\\x7f\\x85\\u202eé'"
        );
        assert_eq!(repr_str("abcdef", 3), "'abc'");
        assert_eq!(repr_bytes(b"a'\x00\xff\\"), "b\"a'\\x00\\xff\\\\\"");
    }

    #[test]
    fn isoformat_like_python() {
        assert_eq!(isoformat(0), "1970-01-01T00:00:00");
        assert_eq!(isoformat(946_684_799_999), "1999-12-31T23:59:59.999000");
        assert_eq!(isoformat(-62_135_596_800_000), "0001-01-01T00:00:00");
    }

    #[test]
    fn division_rounds_once() {
        assert_eq!(true_div(7, 2), 3.5);
        assert_eq!(true_div((1 << 60) + 1, 100), 11_529_215_046_068_470.0);
        assert_eq!(
            true_div(i128::from(i64::MAX), 3_600_000),
            2_562_047_788_015.215_3
        );
    }
}

//! `contracts.validation.nfc`: the text itself when ASCII, else `unicodedata.normalize("NFC", text)`.
//!
//! Python 3.11 normalises with Unicode 14.0; the `unicode-normalization` crate with a newer
//! Unicode. Unicode's normalization stability policy makes both agree on every string whose
//! characters are all assigned in 14.0; a string holding a code point unassigned there (so
//! possibly a new combining mark or a new composition in the crate) is normalised by Python
//! itself, so the result is Python's in every case.

use std::borrow::Cow;

use pyo3::prelude::*;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use crate::unicode_tables::UNASSIGNED;

/// Whether `cp` lies in one of `table`'s sorted, disjoint inclusive ranges (the generated tables).
pub fn in_ranges(table: &[(u32, u32)], cp: u32) -> bool {
    table
        .binary_search_by(|&(lo, hi)| {
            if hi < cp {
                std::cmp::Ordering::Less
            } else if lo > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Unassigned (general category Cn) in Python's Unicode version.
pub fn unassigned_in_python(c: char) -> bool {
    in_ranges(&UNASSIGNED, u32::from(c))
}

/// The crate's NFC (no fallback): for tests comparing it with Python's.
pub fn nfc_crate(text: &str) -> Cow<'_, str> {
    if text.is_ascii() || is_nfc_quick(text.chars()) == IsNormalized::Yes {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.nfc().collect())
    }
}

/// Python's `nfc(text)`.
pub fn nfc<'a>(py: Python<'_>, text: &'a str) -> PyResult<Cow<'a, str>> {
    if text.is_ascii() {
        return Ok(Cow::Borrowed(text));
    }
    if text.chars().any(unassigned_in_python) {
        let normalized: String = py
            .import("unicodedata")?
            .getattr("normalize")?
            .call1(("NFC", text))?
            .extract()?;
        return Ok(Cow::Owned(normalized));
    }
    Ok(nfc_crate(text))
}

//! The configured invoice code pattern: Python `re.fullmatch(pattern, code)` with `re.ASCII`.
//!
//! The default pattern is matched by hand (the hot path); any other is translated from Python's
//! own parse tree into Rust `regex` syntax by `pattern_translate.py` (see there for what is
//! supported and why `$` is only accepted where nothing can follow it).

use std::ffi::CString;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyModule;
use regex::{Regex, RegexBuilder};

pub const DEFAULT_PATTERN: &str = r"^M(\d)-(\d{2})-[0-9A-Z]{5}-\d{11}$";
const TRANSLATOR: &str = include_str!("pattern_translate.py");

pub enum CodePattern {
    /// `^M(\d)-(\d{2})-[0-9A-Z]{5}-\d{11}$`, by hand
    Default,
    /// Any other pattern, translated; the empty string's verdict is Python's (which groups take part).
    Translated {
        regex: Box<Regex>,
        on_empty: Option<(bool, bool)>,
    },
}

/// Groups 1 and 2 of a whole-string match (None for a group that did not take part).
pub type Groups<'a> = (Option<&'a str>, Option<&'a str>);

/// What Python says the empty string gives: None (no match) or whether groups 1 and 2 take part.
pub type OnEmpty = Option<(bool, bool)>;

/// Python's translation of `pattern`: (Rust pattern, number of groups, the empty string's verdict).
pub fn translate(py: Python<'_>, pattern: &str) -> PyResult<(String, usize, OnEmpty)> {
    let code = CString::new(TRANSLATOR).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let module = PyModule::from_code(
        py,
        &code,
        c"einvoice_core_pattern.py",
        c"einvoice_core_pattern",
    )?;
    module.getattr("translate")?.call1((pattern,))?.extract()
}

impl CodePattern {
    pub fn new(py: Python<'_>, pattern: &str) -> PyResult<CodePattern> {
        let (rust, groups, on_empty) = translate(py, pattern)?;
        if groups < 2 {
            return Err(PyValueError::new_err(format!(
                "invoice code pattern needs two groups, (form digit) and (two-digit year): {pattern:?}"
            )));
        }
        if pattern == DEFAULT_PATTERN {
            return Ok(CodePattern::Default);
        }
        let regex = RegexBuilder::new(&rust)
            .size_limit(64 << 20)
            .build()
            .map_err(|e| {
                PyValueError::new_err(format!("invoice code pattern {pattern:?}: Rust regex: {e}"))
            })?;
        if regex.captures_len() != groups + 1 {
            return Err(PyValueError::new_err(format!(
                "invoice code pattern {pattern:?}: {} groups in Rust, {groups} in Python",
                regex.captures_len() - 1
            )));
        }
        Ok(CodePattern::Translated {
            regex: Box::new(regex),
            on_empty,
        })
    }

    /// None when the code does not match as a whole; else groups 1 and 2.
    pub fn fullmatch<'a>(&self, code: &'a str) -> Option<Groups<'a>> {
        match self {
            CodePattern::Default => default_fullmatch(code),
            CodePattern::Translated { on_empty, .. } if code.is_empty() => {
                on_empty.map(|(a, b)| (a.then_some(""), b.then_some("")))
            }
            CodePattern::Translated { regex, .. } => {
                let caps = regex.captures(code)?;
                Some((
                    caps.get(1).map(|m| m.as_str()),
                    caps.get(2).map(|m| m.as_str()),
                ))
            }
        }
    }
}

fn default_fullmatch(code: &str) -> Option<Groups<'_>> {
    let b = code.as_bytes();
    let digit = |i: usize| b[i].is_ascii_digit();
    let alnum = |i: usize| b[i].is_ascii_digit() || b[i].is_ascii_uppercase();
    let ok = b.len() == 23
        && b[0] == b'M'
        && digit(1)
        && b[2] == b'-'
        && digit(3)
        && digit(4)
        && b[5] == b'-'
        && (6..11).all(alnum)
        && b[11] == b'-'
        && (12..23).all(digit);
    if ok {
        Some((code.get(1..2), code.get(3..5)))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pattern_by_hand() {
        assert_eq!(
            default_fullmatch("M1-24-AB12C-00000012345"),
            Some((Some("1"), Some("24")))
        );
        assert_eq!(default_fullmatch("M1-24-AB12C-00000012345\n"), None);
        assert_eq!(default_fullmatch("M1-24-ab12C-00000012345"), None);
        assert_eq!(default_fullmatch("M1-24-AB12C-0000001234５"), None);
    }
}

//! The registry join: `lookup(seller_id)` (the Faust table's `.get`) and `registration_as_of`.

use pyo3::exceptions::PyKeyError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// One registration version, as the join needs it.
pub struct Version {
    pub valid_from: i64,
    pub vsic_code: String,
    pub admin_unit_code: String,
}

/// `version[name]`: a dict's own lookup when it is a dict (the Faust table's values are), else `__getitem__`.
fn item<'py>(
    version: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    if let Ok(dict) = version.cast::<PyDict>() {
        return dict
            .get_item(name)?
            .ok_or_else(|| PyKeyError::new_err(name.clone().unbind()));
    }
    version.get_item(name)
}

/// `lookup(seller_id)` as a list of versions; None when the seller is not registered (`not versions`).
pub fn versions(lookup: &Bound<'_, PyAny>, seller_id: &str) -> PyResult<Option<Vec<Version>>> {
    let py = lookup.py();
    let found = lookup.call1((seller_id,))?;
    if found.is_none() || !found.is_truthy()? {
        return Ok(None);
    }
    let (valid_from, vsic_code, admin_unit_code) = (
        intern!(py, "valid_from"),
        intern!(py, "vsic_code"),
        intern!(py, "admin_unit_code"),
    );
    let mut out = Vec::new();
    for version in found.try_iter()? {
        let version = version?;
        out.push(Version {
            valid_from: item(&version, valid_from)?.extract()?,
            vsic_code: item(&version, vsic_code)?.extract()?,
            admin_unit_code: item(&version, admin_unit_code)?.extract()?,
        });
    }
    Ok(if out.is_empty() { None } else { Some(out) })
}

/// `registration_as_of`: the newest version valid on `day`, the oldest when the day predates them all.
pub fn as_of(versions: &[Version], day: i64) -> Option<&Version> {
    let mut chosen = versions.first()?;
    for version in versions {
        if version.valid_from <= day {
            chosen = version;
        } else {
            break;
        }
    }
    Some(chosen)
}

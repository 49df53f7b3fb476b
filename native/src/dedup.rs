//! `streams.dedup.InvoiceDeduplicator`, as its verdicts and its size see it.
//!
//! The reference keeps, per local issue day, a set of recent keys and a sorted array of older
//! ones; a key is a duplicate when any day from the cutoff on holds it, whatever eviction has
//! done. So the state is a set of (key, day) pairs: here the newest day of each key (enough for
//! the verdict: some day >= cutoff holds it iff the newest one does) plus each day's keys (for
//! eviction and for `len()`, which counts a key once per day holding it).

use std::collections::{BTreeMap, HashMap};

use blake2::digest::consts::U8;
use blake2::{Blake2b, Digest};

use crate::validate::DAY_MS;

/// `streams.dedup.invoice_key`: blake2b (digest_size=8) of "seller\x1fcode", big-endian signed.
pub fn invoice_key(seller_id: &str, invoice_code: &str) -> i64 {
    let mut hasher = Blake2b::<U8>::new();
    hasher.update(seller_id.as_bytes());
    hasher.update([0x1f]);
    hasher.update(invoice_code.as_bytes());
    let digest = hasher.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest);
    i64::from_be_bytes(out)
}

pub struct Dedup {
    horizon_ms: i64,
    newest: HashMap<i64, i64>,
    days: BTreeMap<i64, Vec<i64>>,
    cutoff_day: i64,
    held: usize,
}

impl Dedup {
    pub fn new(horizon_ms: i64) -> Dedup {
        Dedup {
            horizon_ms,
            newest: HashMap::new(),
            days: BTreeMap::new(),
            cutoff_day: -(1i64 << 62),
            held: 0,
        }
    }

    /// `(watermark - horizon) // DAY_MS`, floor division on Python ints.
    pub fn cutoff_day(&self, watermark_local_ms: i64) -> i64 {
        let day = (i128::from(watermark_local_ms) - i128::from(self.horizon_ms))
            .div_euclid(i128::from(DAY_MS));
        i64::try_from(day).unwrap_or(if day < 0 { i64::MIN } else { i64::MAX })
    }

    /// Forget the days before the watermark's cutoff (never changes a verdict).
    pub fn advance(&mut self, watermark_local_ms: i64) {
        let cutoff = self.cutoff_day(watermark_local_ms);
        if cutoff <= self.cutoff_day {
            return;
        }
        self.cutoff_day = cutoff;
        let kept = self.days.split_off(&cutoff);
        let gone = std::mem::replace(&mut self.days, kept);
        for (day, keys) in gone {
            self.held -= keys.len();
            for key in keys {
                if self.newest.get(&key) == Some(&day) {
                    self.newest.remove(&key);
                }
            }
        }
    }

    /// `seen_or_add`: true when a day from `cutoff_day` on holds the key; else remember it on `day`.
    pub fn seen_or_add(&mut self, key: i64, day: i64, cutoff_day: i64) -> bool {
        match self.newest.get_mut(&key) {
            Some(newest) if *newest >= cutoff_day => return true,
            Some(newest) => *newest = (*newest).max(day),
            None => {
                self.newest.insert(key, day);
            }
        }
        self.days.entry(day).or_default().push(key);
        self.held += 1;
        false
    }

    /// `load_columns`: (key, day) pairs read back from the store; days before the cutoff are dropped.
    pub fn load(&mut self, keys: &[i64], days: &[i64]) {
        let mut by_day: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for (&key, &day) in keys.iter().zip(days) {
            if day >= self.cutoff_day {
                by_day.entry(day).or_default().push(key);
            }
        }
        for (day, mut fresh) in by_day {
            let held = self.days.entry(day).or_default();
            fresh.extend_from_slice(held);
            fresh.sort_unstable();
            fresh.dedup();
            self.held = self.held - held.len() + fresh.len();
            for &key in &fresh {
                let newest = self.newest.entry(key).or_insert(day);
                *newest = (*newest).max(day);
            }
            *held = fresh;
        }
    }

    /// `len(dedup)`: keys held, counted once per day holding them.
    pub fn len(&self) -> usize {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_depend_on_the_cutoff_only() {
        let mut d = Dedup::new(3 * DAY_MS);
        assert!(!d.seen_or_add(1, 10, 8));
        assert!(d.seen_or_add(1, 11, 10));
        assert!(!d.seen_or_add(1, 12, 11)); // day 10 left the horizon: a new key again
        assert_eq!(d.len(), 2);
        d.advance(14 * DAY_MS + 3 * DAY_MS); // cutoff 14
        assert_eq!(d.len(), 0);
        assert!(!d.seen_or_add(1, 15, 14));
        d.load(&[1, 2, 2], &[16, 16, 13]);
        assert_eq!(d.len(), 3);
        assert!(d.seen_or_add(2, 17, 14));
    }
}

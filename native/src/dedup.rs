//! `streams.dedup.InvoiceDeduplicator`, as its verdicts and its size see it.
//!
//! As in the reference, each local issue day keeps a set of recent keys and a sorted array of
//! older ones; a key is a duplicate when any day from the cutoff on holds it, whatever eviction
//! has done, and `len()` counts a key once per day holding it.

use std::collections::{BTreeMap, HashSet};

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

/// Keys in a day's set before they move into its sorted array (`streams.dedup.FREEZE_AT`).
const FREEZE_AT: usize = 50_000;
/// A frozen day's index: the first position of each value of a key's top 16 bits.
const INDEX_BITS: u32 = 16;

/// One local issue day's keys: recent ones in a set, older ones in a sorted array with an index.
///
/// At scale 1.0 the horizon holds ~8 M keys: in one `HashMap<key, day>` and per-day lists
/// (~45 bytes a key) that took the worker past 1 GiB. Sorted, a key takes 8 bytes; the keys are
/// uniform hashes, so the index by top bits leaves a binary search over ~30 keys (one or two
/// cache lines) instead of 21 steps through the whole array.
#[derive(Default)]
struct Day {
    recent: HashSet<i64>,
    frozen: Vec<i64>,
    index: Vec<u32>,
}

fn bucket(key: i64) -> usize {
    // signed order = unsigned order of the key with its sign bit flipped
    ((key as u64 ^ (1 << 63)) >> (64 - INDEX_BITS)) as usize
}

impl Day {
    fn holds(&self, key: i64) -> bool {
        if self.recent.contains(&key) {
            return true;
        }
        if self.frozen.is_empty() {
            return false;
        }
        let b = bucket(key);
        let (lo, hi) = (self.index[b] as usize, self.index[b + 1] as usize);
        self.frozen[lo..hi].binary_search(&key).is_ok()
    }

    fn len(&self) -> usize {
        self.recent.len() + self.frozen.len()
    }

    /// Merge keys (sorted, unique, none already frozen) into the sorted array and rebuild the index.
    fn freeze(&mut self, fresh: &[i64]) {
        let mut merged = Vec::with_capacity(self.frozen.len() + fresh.len());
        let (mut i, mut j) = (0, 0);
        while i < self.frozen.len() && j < fresh.len() {
            if self.frozen[i] <= fresh[j] {
                merged.push(self.frozen[i]);
                i += 1;
            } else {
                merged.push(fresh[j]);
                j += 1;
            }
        }
        merged.extend_from_slice(&self.frozen[i..]);
        merged.extend_from_slice(&fresh[j..]);
        let mut index = vec![0u32; (1 << INDEX_BITS) + 1];
        for &key in &merged {
            index[bucket(key) + 1] += 1;
        }
        for b in 1..index.len() {
            index[b] += index[b - 1];
        }
        self.frozen = merged;
        self.index = index;
    }

    fn compact(&mut self) {
        if self.recent.is_empty() {
            return;
        }
        let mut fresh: Vec<i64> = self.recent.drain().collect();
        self.recent.shrink_to_fit();
        fresh.sort_unstable();
        self.freeze(&fresh);
    }
}

pub struct Dedup {
    horizon_ms: i64,
    days: BTreeMap<i64, Day>,
    cutoff_day: i64,
}

impl Dedup {
    pub fn new(horizon_ms: i64) -> Dedup {
        Dedup {
            horizon_ms,
            days: BTreeMap::new(),
            cutoff_day: -(1i64 << 62),
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
        self.days = self.days.split_off(&cutoff);
    }

    /// `seen_or_add`: true when a day from `cutoff_day` on holds the key; else remember it on `day`.
    pub fn seen_or_add(&mut self, key: i64, day: i64, cutoff_day: i64) -> bool {
        if self.days.range(cutoff_day..).any(|(_, d)| d.holds(key)) {
            return true;
        }
        let bucket = self.days.entry(day).or_default();
        bucket.recent.insert(key);
        if bucket.recent.len() >= FREEZE_AT {
            bucket.compact();
        }
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
            held.compact();
            fresh.sort_unstable();
            fresh.dedup();
            fresh.retain(|key| !held.holds(*key));
            held.freeze(&fresh);
        }
    }

    /// `len(dedup)`: keys held, counted once per day holding them.
    pub fn len(&self) -> usize {
        self.days.values().map(Day::len).sum()
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

#[cfg(test)]
mod compact_tests {
    use super::*;

    #[test]
    fn frozen_days_answer_like_recent_ones() {
        let mut d = Dedup::new(3 * DAY_MS);
        let keys: Vec<i64> = (0..120_000i64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as i64))
            .collect();
        for &k in &keys {
            assert!(!d.seen_or_add(k, 20, 18));
        }
        assert_eq!(d.len(), keys.len());
        assert!(d.days[&20].frozen.len() >= 100_000); // two compactions happened
        for &k in &keys {
            assert!(d.seen_or_add(k, 21, 18));
        }
        assert!(!d.seen_or_add(i64::MIN, 21, 18));
        assert!(!d.seen_or_add(i64::MAX, 21, 18));
        assert!(d.seen_or_add(i64::MIN, 21, 18) && d.seen_or_add(i64::MAX, 22, 18));
        assert_eq!(d.len(), keys.len() + 2);
    }
}

//! Sets of workers: which workers host subscribers of a topic, one bit each.

use crate::config::MAX_WORKERS;

/// A set of worker indices (the workers that have subscribers of a topic). Every owned topic
/// has one, so it is 16 bytes: workers 0–63 inline (any machine up to 64 cores), the rest
/// in a box made when one of them is first inserted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSet {
    low: u64,
    high: Option<Box<[u64; MAX_WORKERS / 64 - 1]>>,
}

impl WorkerSet {
    fn word(&self, i: usize) -> u64 {
        match i {
            0 => self.low,
            _ => self.high.as_ref().map_or(0, |h| h[i - 1]),
        }
    }

    pub fn insert(&mut self, w: usize) {
        let bit = 1 << (w % 64);
        match w / 64 {
            0 => self.low |= bit,
            i => self.high.get_or_insert_with(Default::default)[i - 1] |= bit,
        }
    }

    pub fn remove(&mut self, w: usize) {
        let bit = 1 << (w % 64);
        match w / 64 {
            0 => self.low &= !bit,
            i => {
                if let Some(h) = self.high.as_mut() {
                    h[i - 1] &= !bit;
                    if h.iter().all(|&b| b == 0) {
                        self.high = None;
                    }
                }
            }
        }
    }

    pub fn contains(&self, w: usize) -> bool {
        self.word(w / 64) & (1 << (w % 64)) != 0
    }

    pub fn is_empty(&self) -> bool {
        // `high` is never kept empty.
        self.low == 0 && self.high.is_none()
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        // Visits set bits only: this runs for every event an owner forwards.
        let words = if self.high.is_some() { MAX_WORKERS / 64 } else { 1 };
        (0..words).flat_map(|i| {
            let mut bits = self.word(i);
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(i * 64 + b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_sets() {
        let mut s = WorkerSet::default();
        assert!(s.is_empty());
        for w in [0, 63, 64, 200, 255] {
            s.insert(w);
        }
        assert_eq!(s.iter().collect::<Vec<_>>(), [0, 63, 64, 200, 255]);
        s.remove(64);
        assert!(!s.contains(64) && s.contains(63));
        assert_eq!(size_of::<WorkerSet>(), 16);
        for w in [200, 255, 63, 0] {
            s.remove(w);
        }
        assert!(s.is_empty() && s.high.is_none(), "empty again, with nothing boxed");
        s.insert(5);
        assert_eq!(s.iter().collect::<Vec<_>>(), [5]);
    }
}

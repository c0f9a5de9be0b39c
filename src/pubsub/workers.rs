//! Sets of workers: which workers host subscribers of a topic, one bit each.

use crate::config::MAX_WORKERS;

/// A set of worker indices (the workers that have subscribers of a topic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerSet([u64; MAX_WORKERS / 64]);

impl WorkerSet {
    pub fn insert(&mut self, w: usize) {
        self.0[w / 64] |= 1 << (w % 64);
    }
    pub fn remove(&mut self, w: usize) {
        self.0[w / 64] &= !(1 << (w % 64));
    }
    pub fn contains(&self, w: usize) -> bool {
        self.0[w / 64] & (1 << (w % 64)) != 0
    }
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        // Visits set bits only: this runs for every event an owner forwards.
        self.0.iter().enumerate().flat_map(|(i, &word)| {
            let mut bits = word;
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
    }
}

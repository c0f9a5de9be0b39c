//! Tombstones of forgotten topics: what an owner remembers of a topic it no longer keeps, in
//! eight bytes, so that a client resuming from the topic's last cursor is not told of a gap.
//!
//! A tombstone is 32 bits naming the topic and 32 bits checking the cursor of its last event
//! (both keyed hashes, made by `owner::Epochs`), packed in one `u64` with the name high, so
//! that sorting the words sorts them by name. Those put since the last settling are kept
//! unsorted in `fresh`; every `FRESH` puttings they are merged into the sorted `young`
//! generation, and when `young` reaches half the cap it becomes `old`, the previous `old`
//! being dropped whole: the oldest go first, and at least the newest half of the cap is
//! always kept. A taken tombstone has its check zeroed in place (sorting is by name only)
//! and is left out at the next merge, or with its generation.
//!
//! Eight bytes rather than a map entry and a queue place (~60 bytes): 100 000 forgotten
//! topics leave ~0.8 MB, not ~6 MB. The generations are single allocations, large enough to
//! be mapped on their own, so a dropped one goes back to the kernel at once.

/// Puttings gathered, unsorted, before they are merged into `young`: a taking scans them
/// all, so they stay few (2 KiB).
const FRESH: usize = 256;

pub struct Tombstones {
    /// Newest last.
    fresh: Vec<u64>,
    /// Sorted by name; newer than all of `old`.
    young: Box<[u64]>,
    old: Box<[u64]>,
    cap: usize,
}

fn name_of(word: u64) -> u32 {
    (word >> 32) as u32
}

fn check_of(word: u64) -> u32 {
    word as u32
}

impl Tombstones {
    /// Keeps at least the newest `cap / 2`, and fewer than `cap + 2 * FRESH`.
    pub fn new(cap: usize) -> Tombstones {
        Tombstones { fresh: Vec::new(), young: Box::default(), old: Box::default(), cap: cap.max(2) }
    }

    /// Remembers `check` (never 0) for the topic named `name`.
    pub fn put(&mut self, name: u32, check: u32) {
        debug_assert_ne!(check, 0, "0 marks a taken tombstone");
        self.fresh.push(u64::from(name) << 32 | u64::from(check));
        if self.fresh.len() >= FRESH.min(self.cap / 2) {
            self.settle();
        }
    }

    /// The newest check kept for `name`, which is forgotten here: the topic is being made
    /// again, and carries it from now on.
    pub fn take(&mut self, name: u32) -> Option<u32> {
        if let Some(i) = self.fresh.iter().rposition(|&w| name_of(w) == name) {
            return Some(check_of(self.fresh.remove(i)));
        }
        for generation in [&mut self.young, &mut self.old] {
            let from = generation.partition_point(|&w| name_of(w) < name);
            let same = generation[from..].iter_mut().take_while(|w| name_of(**w) == name);
            if let Some(w) = same.into_iter().find(|w| check_of(**w) != 0) {
                let check = check_of(*w);
                *w &= !u64::from(u32::MAX);
                return Some(check);
            }
        }
        None
    }

    /// Merges `fresh` into `young`, leaving taken ones out; rolls the generations over when
    /// `young` is full.
    fn settle(&mut self) {
        let mut fresh = std::mem::take(&mut self.fresh);
        fresh.sort_unstable_by_key(|&w| name_of(w));
        let live = |w: &u64| check_of(*w) != 0;
        let (mut a, mut b) = (self.young.iter().copied().filter(live).peekable(), fresh.into_iter().peekable());
        let mut merged = Vec::with_capacity(self.young.len() + FRESH);
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&x), Some(&y)) if name_of(x) <= name_of(y) => a.next(),
                (_, Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, None) => break,
            };
            merged.extend(next);
        }
        if merged.len() >= self.cap / 2 {
            self.old = merged.into_boxed_slice();
            self.young = Box::default();
        } else {
            self.young = merged.into_boxed_slice();
        }
    }

    /// Tombstones kept and not taken.
    #[cfg(test)]
    pub fn kept(&self) -> usize {
        let live = |w: &&u64| check_of(**w) != 0;
        self.fresh.len() + self.young.iter().filter(live).count() + self.old.iter().filter(live).count()
    }

    /// Bytes held, taken ones and spare room included.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        8 * (self.fresh.capacity() + self.young.len() + self.old.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_check_of_a_name_is_taken_once() {
        let mut t = Tombstones::new(1 << 10);
        t.put(7, 1);
        t.put(8, 2);
        t.put(7, 3);
        assert_eq!(t.take(7), Some(3));
        assert_eq!(t.take(7), Some(1), "two names may share 32 bits: each keeps its own");
        assert_eq!(t.take(7), None);
        assert_eq!(t.take(9), None);
        assert_eq!(t.kept(), 1);
    }

    #[test]
    fn settled_tombstones_are_found_and_taken_ones_left_out() {
        let mut t = Tombstones::new(1 << 16);
        for name in (0..10_000u32).rev() {
            t.put(name.wrapping_mul(2_654_435_761), name + 1);
        }
        assert!(t.fresh.len() < FRESH, "most were settled");
        for name in (0..10_000u32).step_by(2) {
            assert_eq!(t.take(name.wrapping_mul(2_654_435_761)), Some(name + 1));
        }
        assert_eq!(t.kept(), 5_000);
        for name in 20_000..20_000 + FRESH as u32 {
            t.put(name, 1);
        }
        assert!(t.young.iter().all(|&w| check_of(w) != 0), "a merge leaves taken ones out");
        assert!(t.young.is_sorted_by_key(|&w| name_of(w)));
        for name in (1..10_000u32).step_by(2) {
            assert_eq!(t.take(name.wrapping_mul(2_654_435_761)), Some(name + 1));
        }
    }

    #[test]
    fn the_oldest_are_dropped_first_and_the_newest_half_kept() {
        let cap = 4 * FRESH;
        let mut t = Tombstones::new(cap);
        let n = 10 * cap as u32;
        for name in 0..n {
            t.put(name, name + 1);
            assert!(t.kept() < cap + 2 * FRESH, "bounded: {} kept", t.kept());
            assert!(t.bytes() < 8 * (cap + 3 * FRESH), "{} bytes", t.bytes());
        }
        for name in n - cap as u32 / 2..n {
            assert_eq!(t.take(name), Some(name + 1), "the newest half is kept");
        }
        assert_eq!(t.take(0), None, "the oldest went first");
    }

    #[test]
    fn a_name_taken_and_put_again_has_its_newest_check() {
        let mut t = Tombstones::new(1 << 12);
        for round in 1..=20u32 {
            for name in 0..100 {
                t.put(name, round);
            }
            for name in 0..100 {
                assert_eq!(t.take(name), Some(round));
            }
        }
        assert_eq!(t.kept(), 0);
    }
}

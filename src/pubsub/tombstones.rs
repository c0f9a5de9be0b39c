//! Tombstones of forgotten topics: what an owner remembers of a topic it no longer keeps, in
//! twelve bytes, so that a client resuming from the topic's last cursor is not told of a gap.
//!
//! A tombstone is 64 bits naming the topic and 32 bits checking the cursor of its last event
//! (both keyed hashes, made by `owner::Epochs`), in a `Word` ordered by name. Those put since
//! the last settling are kept unsorted in `fresh`; every `FRESH` puttings they are merged into
//! the sorted `young` generation. When `young` reaches half the cap it is merged into `old` if
//! both together hold no more than the cap, and otherwise becomes `old`, the previous `old`
//! being dropped whole: none is dropped until more than the cap are kept, the oldest go first,
//! and at least the newest half of the cap is always kept. (Dropping by generation alone lost
//! tombstones with a third of the cap kept: a topic that comes back without events and is
//! forgotten again puts its tombstone back as a new one.) A taken tombstone has its check
//! zeroed in place (sorting is by name only) and is left out at the next merge.
//!
//! Twelve bytes rather than a map entry and a queue place (~60 bytes): 100 000 forgotten
//! topics leave ~1.2 MB, not ~6 MB. The name has 64 bits, not 32, because a tombstone is
//! found by its name alone: with 32, two of half a million tombstones shared a name about 32
//! times, and a new topic took a forgotten one's tombstone once in 8 000 (each a needless gap
//! notice for the topic that lost it); with 64, neither happens in practice. The generations
//! are single allocations, large enough to be mapped on their own, so a dropped one goes back
//! to the kernel at once.

/// `newer` and `older` (each sorted by name) in one list sorted by name, the newer first
/// among words of one name, so that `take` finds the newest.
fn merge(newer: impl IntoIterator<Item = Word>, older: impl IntoIterator<Item = Word>) -> Vec<Word> {
    let (mut a, mut b) = (newer.into_iter().peekable(), older.into_iter().peekable());
    let room = |hint: (usize, Option<usize>)| hint.1.unwrap_or(hint.0);
    let mut merged = Vec::with_capacity(room(a.size_hint()) + room(b.size_hint()));
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.name() <= y.name() => a.next(),
            (_, Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, None) => break,
        };
        merged.extend(next);
    }
    merged
}

/// Puttings gathered, unsorted, before they are merged into `young`: a taking scans them
/// all, so they stay few (3 KiB).
const FRESH: usize = 256;

pub struct Tombstones {
    /// Newest last.
    fresh: Vec<Word>,
    /// Sorted by name; newer than all of `old`.
    young: Box<[Word]>,
    old: Box<[Word]>,
    cap: usize,
    /// Generations dropped with tombstones in them.
    dropped: u64,
}

/// One tombstone: the name in two halves, so that a word is 12 bytes aligned to 4, not 16.
#[derive(Clone, Copy)]
struct Word {
    name_high: u32,
    name_low: u32,
    check: u32,
}

impl Word {
    fn new(name: u64, check: u32) -> Word {
        Word { name_high: (name >> 32) as u32, name_low: name as u32, check }
    }

    fn name(&self) -> u64 {
        u64::from(self.name_high) << 32 | u64::from(self.name_low)
    }

    fn live(&self) -> bool {
        self.check != 0
    }
}

impl Tombstones {
    /// Keeps every tombstone until more than `cap` are kept, then drops the oldest, keeping at
    /// least the newest `cap / 2`; holds fewer than `3 * cap / 2 + 2 * FRESH` words.
    pub fn new(cap: usize) -> Tombstones {
        Tombstones { fresh: Vec::new(), young: Box::default(), old: Box::default(), cap: cap.max(2), dropped: 0 }
    }

    /// How many times tombstones not taken were dropped: a name not found now may have had
    /// one before the last time this moved.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Remembers `check` (never 0) for the topic named `name`.
    pub fn put(&mut self, name: u64, check: u32) {
        debug_assert_ne!(check, 0, "0 marks a taken tombstone");
        self.fresh.push(Word::new(name, check));
        if self.fresh.len() >= FRESH.min(self.cap / 2) {
            self.settle();
        }
    }

    /// The newest check kept for `name`, which is forgotten here: the topic is being made
    /// again, and carries it from now on.
    pub fn take(&mut self, name: u64) -> Option<u32> {
        if let Some(i) = self.fresh.iter().rposition(|w| w.name() == name) {
            return Some(self.fresh.remove(i).check);
        }
        for generation in [&mut self.young, &mut self.old] {
            let from = generation.partition_point(|w| w.name() < name);
            let same = generation[from..].iter_mut().take_while(|w| w.name() == name);
            if let Some(w) = same.into_iter().find(|w| w.live()) {
                return Some(std::mem::take(&mut w.check));
            }
        }
        None
    }

    /// Merges `fresh` into `young`, leaving taken ones out; when `young` is full, merges it
    /// into `old` if all they hold fits in the cap, and otherwise drops `old`.
    fn settle(&mut self) {
        let mut fresh = std::mem::take(&mut self.fresh);
        fresh.sort_by_key(Word::name);
        let young = merge(fresh, self.young.iter().copied().filter(Word::live));
        if young.len() < self.cap / 2 {
            self.young = young.into_boxed_slice();
            return;
        }
        self.young = Box::default();
        let kept = self.old.iter().filter(|w| w.live()).count();
        self.old = if kept + young.len() <= self.cap {
            merge(young, self.old.iter().copied().filter(Word::live)).into_boxed_slice()
        } else {
            self.dropped += u64::from(kept > 0);
            young.into_boxed_slice()
        };
    }

    /// Tombstones kept and not taken.
    #[cfg(test)]
    pub fn kept(&self) -> usize {
        self.fresh.len() + self.young.iter().filter(|w| w.live()).count() + self.old.iter().filter(|w| w.live()).count()
    }

    /// Bytes held, taken ones and spare room included.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        size_of::<Word>() * (self.fresh.capacity() + self.young.len() + self.old.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names spread over all 64 bits, as the keyed hashes are.
    fn spread(n: u32) -> u64 {
        u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    #[test]
    fn the_newest_check_of_a_name_is_taken_once() {
        let mut t = Tombstones::new(1 << 10);
        t.put(7, 1);
        t.put(8, 2);
        t.put(7, 3);
        assert_eq!(t.take(7), Some(3));
        assert_eq!(t.take(7), Some(1));
        assert_eq!(t.take(7), None);
        assert_eq!(t.take(9), None);
        assert_eq!(t.kept(), 1);
    }

    #[test]
    fn names_alike_in_half_their_bits_keep_their_own() {
        let mut t = Tombstones::new(1 << 10);
        let (a, b, c) = (5 << 32 | 9, 6 << 32 | 9, 5 << 32 | 10);
        for (i, name) in [a, b, c].into_iter().enumerate() {
            t.put(name, i as u32 + 1);
        }
        t.settle();
        assert_eq!((t.take(b), t.take(c), t.take(a)), (Some(2), Some(3), Some(1)));
        assert_eq!(size_of::<Word>(), 12);
    }

    #[test]
    fn settled_tombstones_are_found_and_taken_ones_left_out() {
        let mut t = Tombstones::new(1 << 16);
        for n in (0..10_000u32).rev() {
            t.put(spread(n), n + 1);
        }
        assert!(t.fresh.len() < FRESH, "most were settled");
        for n in (0..10_000u32).step_by(2) {
            assert_eq!(t.take(spread(n)), Some(n + 1));
        }
        assert_eq!(t.kept(), 5_000);
        for n in 20_000..20_000 + FRESH as u32 {
            t.put(spread(n), 1);
        }
        assert!(t.young.iter().all(Word::live), "a merge leaves taken ones out");
        assert!(t.young.is_sorted_by_key(Word::name));
        for n in (1..10_000u32).step_by(2) {
            assert_eq!(t.take(spread(n)), Some(n + 1));
        }
    }

    #[test]
    fn the_oldest_are_dropped_first_and_the_newest_half_kept() {
        let cap = 4 * FRESH;
        let mut t = Tombstones::new(cap);
        let n = 10 * cap as u32;
        for name in 0..n {
            t.put(spread(name), name + 1);
            assert!(t.kept() <= cap + 2 * FRESH, "bounded: {} kept", t.kept());
            assert!(t.bytes() < 12 * (3 * cap / 2 + 3 * FRESH), "{} bytes", t.bytes());
        }
        for name in n - cap as u32 / 2..n {
            assert_eq!(t.take(spread(name)), Some(name + 1), "the newest half is kept");
        }
        assert_eq!(t.take(spread(0)), None, "the oldest went first");
    }

    #[test]
    fn none_is_dropped_until_more_than_the_cap_are_kept() {
        // An outside test's shape: a wave forgotten, a second one, then every topic of the
        // first comes back without events and is forgotten again (taken, then put back).
        let cap = 64 * FRESH;
        let mut t = Tombstones::new(cap);
        let (first, second) = (0..cap as u32 * 48 / 100, cap as u32..cap as u32 * 119 / 100);
        for n in first.clone().chain(second.clone()) {
            t.put(spread(n), n + 1);
        }
        for n in first.clone() {
            let check = t.take(spread(n));
            assert_eq!(check, Some(n + 1));
            t.put(spread(n), n + 1);
        }
        for n in second.chain(first) {
            assert_eq!(t.take(spread(n)), Some(n + 1), "{n}: two thirds of the cap are kept, none dropped");
        }
        assert_eq!(t.dropped(), 0);
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

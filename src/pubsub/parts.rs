//! An owner's topics in `PARTS` maps by a hash of the name, so that housekeeping visits a few
//! parts per tick instead of every topic at once: with a million topics, one pass over all of
//! them is a pause of ~100 ms on the worker, one part ~1.5 ms.

use std::collections::hash_map::Entry;
use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::HashMap;

/// How many parts (a power of two): a pass over one is 1/64 of a pass over all.
pub const PARTS: usize = 64;

pub struct Parts<V> {
    hasher: foldhash::quality::FixedState,
    parts: Box<[HashMap<Arc<str>, V>]>,
    /// A part gave room back since `take_shrunk` last asked.
    shrunk: bool,
}

impl<V> Parts<V> {
    /// `seed` keys the split: clients choosing names cannot crowd one part.
    pub fn new(seed: u64) -> Parts<V> {
        Parts {
            // Not the owner's other hashers' seed: the split is independent of the buckets.
            hasher: foldhash::quality::FixedState::with_seed(seed.rotate_left(32) ^ 0x0070_6172_7473),
            parts: (0..PARTS).map(|_| HashMap::default()).collect(),
            shrunk: false,
        }
    }

    fn part(&self, name: &str) -> usize {
        (self.hasher.hash_one(name) >> (64 - PARTS.trailing_zeros())) as usize
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        let i = self.part(name);
        self.parts[i].get_mut(name)
    }

    pub fn entry(&mut self, name: Arc<str>) -> Entry<'_, Arc<str>, V> {
        let i = self.part(&name);
        self.parts[i].entry(name)
    }

    pub fn remove(&mut self, name: &str) -> Option<V> {
        let i = self.part(name);
        self.parts[i].remove(name)
    }

    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(|p| p.is_empty())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &V)> {
        self.parts.iter().flat_map(|p| p.iter())
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.parts.iter().flat_map(|p| p.values())
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.parts.iter_mut().flat_map(|p| p.values_mut())
    }

    /// Keeps, in part `i`, the topics `keep` says to; gives back the room of a part that held
    /// far more. Returns how many went.
    pub fn retain_in(&mut self, i: usize, keep: impl FnMut(&Arc<str>, &mut V) -> bool) -> usize {
        let part = &mut self.parts[i % PARTS];
        let before = part.len();
        part.retain(keep);
        // A part is small (1/64 of the topics), so it gives its room back at a lower mark
        // than a whole map would; on a sweep only, so the room is not given and taken
        // back on every forgetting.
        if part.capacity() > 4 * part.len() + 16 {
            part.shrink_to(2 * part.len());
            self.shrunk = true;
        }
        before - part.len()
    }

    /// Whether a part gave room back since the last time this was asked.
    pub fn take_shrunk(&mut self) -> bool {
        std::mem::take(&mut self.shrunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_lives_in_one_part_and_the_parts_share_the_names() {
        let mut p: Parts<u32> = Parts::new(7);
        for i in 0..10_000u32 {
            p.entry(format!("user:{i}").into()).or_insert(i);
        }
        assert_eq!(p.len(), 10_000);
        assert_eq!(p.get_mut("user:42").copied(), Some(42));
        let biggest = p.parts.iter().map(|m| m.len()).max().unwrap_or(0);
        assert!(biggest < 10_000 / PARTS * 2, "one part holds {biggest}");
        let mut gone = 0;
        for i in 0..PARTS {
            gone += p.retain_in(i, |_, v| *v % 2 == 0);
        }
        assert_eq!((gone, p.len()), (5_000, 5_000));
        assert_eq!(p.remove("user:42"), Some(42));
        assert!(p.get_mut("user:43").is_none());
    }
}

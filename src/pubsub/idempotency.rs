//! The idempotency keys an owner has seen (API.md §8: `Idempotency-Key`): for each (topic,
//! key) published within `idempotency_ttl`, the cursor the event got and a fingerprint of the
//! event, so a retry is answered with the original cursor and delivered to no one again.
//!
//! Keys are kept as 128-bit keyed SipHash fingerprints of (topic, key), not as strings: an
//! entry is a few dozen bytes whatever the key's length, and without this process's random
//! keys nobody can make two (topic, key) pairs collide. A retry whose event differs from the
//! first (another type or data) is refused rather than answered as the first: the key was
//! reused, and answering with the first's cursor would silently drop the second.
//!
//! Bounded: at most `cap` entries per owner. Past it, a key of the topic holding the most
//! keys goes first (its oldest), before its TTL, and is counted (`/metrics` shows when the
//! bound bites: a retry after that is published again). So a publisher flooding its own
//! topic with keys pushes out its own, not those of topics publishing a few.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};

use crate::cursor::Cursor;

/// A (topic, key) fingerprint: 128 bits, as two words so entries align to 8 bytes.
type KeyPrint = [u64; 2];

/// What a keyed publish is, against the keys seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen within the TTL: publish it, then [`Idempotency::remember`] this ticket.
    New(Ticket),
    /// The same event was published under this key: answer with its cursor.
    Duplicate(Cursor),
    /// Another event was published under this key: refuse.
    Reused,
}

/// A new keyed publish's fingerprints, to remember once it has its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    key: KeyPrint,
    event: u64,
    topic: u64,
}

#[derive(Debug, Clone, Copy)]
struct Kept {
    cursor: Cursor,
    event: u64,
    topic: u64,
    /// In the owner's tenths of a second.
    expires: u32,
}

/// A place in an order of keys: the expiry the key was remembered with (a place whose key
/// was since forgotten, or remembered again, is stale and skipped) and the key.
type Place = (u32, KeyPrint);

pub struct Idempotency {
    ttl_tenths: u32,
    cap: usize,
    kept: HashMap<KeyPrint, Kept, foldhash::fast::FixedState>,
    /// Every key in the order it was remembered, which is the order keys expire in (one TTL
    /// for all).
    order: VecDeque<Place>,
    /// Each topic's keys, oldest first, and how many are kept.
    topics: HashMap<u64, (u32, VecDeque<Place>), foldhash::fast::FixedState>,
    /// Topics by how many keys they keep: the last holds the most.
    largest: BTreeSet<(u32, u64)>,
    /// Two independently keyed SipHash states make the 128-bit fingerprint.
    hi: std::hash::RandomState,
    lo: std::hash::RandomState,
    /// Keys dropped before their TTL to stay within `cap`.
    pub dropped: u64,
}

impl Idempotency {
    /// Keeps keys for `ttl_tenths` tenths of a second, at most `cap` of them.
    pub fn new(ttl_tenths: u32, cap: usize) -> Idempotency {
        // The fingerprints are keyed hashes already: any fixed mixing spreads them.
        let fixed = || foldhash::fast::FixedState::with_seed(0);
        Idempotency {
            ttl_tenths: ttl_tenths.max(1),
            cap: cap.max(1),
            kept: HashMap::with_hasher(fixed()),
            order: VecDeque::new(),
            topics: HashMap::with_hasher(fixed()),
            largest: BTreeSet::new(),
            hi: std::hash::RandomState::new(),
            lo: std::hash::RandomState::new(),
            dropped: 0,
        }
    }

    /// Keys kept now.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    fn hash(state: &std::hash::RandomState, parts: impl Hash) -> u64 {
        state.hash_one(parts)
    }

    /// What a publish of (`kind`, `data`) to `topic` under `key` is, at `now` (tenths).
    pub fn check(&mut self, topic: &str, key: &str, kind: Option<&str>, data: &[u8], now: u32) -> Seen {
        self.expire(now);
        let ticket = Ticket {
            key: [Self::hash(&self.hi, (topic, key)), Self::hash(&self.lo, (topic, key))],
            event: Self::hash(&self.hi, (kind, data)),
            topic: Self::hash(&self.lo, topic),
        };
        match self.kept.get(&ticket.key) {
            Some(k) if k.event == ticket.event => Seen::Duplicate(k.cursor),
            Some(_) => Seen::Reused,
            None => Seen::New(ticket),
        }
    }

    /// Remembers that `ticket`'s publish got `cursor`, at `now` (tenths).
    pub fn remember(&mut self, ticket: Ticket, cursor: Cursor, now: u32) {
        while self.kept.len() >= self.cap {
            let Some(&(_, topic)) = self.largest.last() else { break };
            if !self.forget_oldest_of(topic) {
                break;
            }
            self.dropped += 1;
        }
        // `now` is rounded down: one tenth more never forgets a key before its TTL.
        let expires = now.saturating_add(self.ttl_tenths).saturating_add(1);
        let Ticket { key, event, topic } = ticket;
        self.kept.insert(key, Kept { cursor, event, topic, expires });
        self.order.push_back((expires, key));
        let (count, places) = self.topics.entry(topic).or_default();
        self.largest.remove(&(*count, topic));
        *count += 1;
        places.push_back((expires, key));
        self.largest.insert((*count, topic));
    }

    /// Forgets every key whose TTL has run out by `now`.
    pub fn expire(&mut self, now: u32) {
        while let Some(&(expires, key)) = self.order.front() {
            if expires > now {
                break;
            }
            self.order.pop_front();
            if self.kept.get(&key).is_some_and(|k| k.expires == expires) {
                self.forget(key);
            }
        }
        if self.order.capacity() > 64 && self.order.len() < self.order.capacity() / 4 {
            self.order.shrink_to(self.order.len() * 2);
            self.kept.shrink_to(self.kept.len() * 2);
        }
    }

    /// Forgets the oldest key kept of `topic`; false if it keeps none.
    fn forget_oldest_of(&mut self, topic: u64) -> bool {
        match self.topics.get(&topic).and_then(|(_, places)| places.front()) {
            Some(&(_, key)) => {
                self.forget(key);
                true
            }
            None => false,
        }
    }

    /// Forgets `key`, which is kept. Its topic's places stay without stale ones in front, so
    /// the front is always its oldest kept key (expiry and eviction both take the oldest).
    fn forget(&mut self, key: KeyPrint) {
        let Some(k) = self.kept.remove(&key) else { return };
        let Some((count, places)) = self.topics.get_mut(&k.topic) else { return };
        self.largest.remove(&(*count, k.topic));
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.topics.remove(&k.topic);
            return;
        }
        self.largest.insert((*count, k.topic));
        while places.front().is_some_and(|&(expires, key)| self.kept.get(&key).is_none_or(|k| k.expires != expires)) {
            places.pop_front();
        }
        if places.capacity() > 64 && places.len() < places.capacity() / 4 {
            places.shrink_to(places.len() * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(seen: Seen) -> Ticket {
        match seen {
            Seen::New(t) => t,
            other => panic!("expected a new key, got {other:?}"),
        }
    }

    #[test]
    fn a_retry_gets_the_first_cursor_and_another_event_under_the_key_is_refused() {
        let mut ids = Idempotency::new(3000, 100);
        let t = ticket(ids.check("a", "k1", None, b"x", 0));
        ids.remember(t, Cursor::new(7, 1), 0);
        assert_eq!(ids.check("a", "k1", None, b"x", 10), Seen::Duplicate(Cursor::new(7, 1)));
        assert_eq!(ids.check("a", "k1", None, b"y", 10), Seen::Reused);
        assert_eq!(ids.check("a", "k1", Some("t"), b"x", 10), Seen::Reused);
        // The same key on another topic is another key; so is a name split differently.
        assert!(matches!(ids.check("b", "k1", None, b"x", 10), Seen::New(_)));
        assert!(matches!(ids.check("ak", "1", None, b"x", 10), Seen::New(_)));
    }

    #[test]
    fn keys_expire_after_their_ttl() {
        let mut ids = Idempotency::new(50, 100);
        let t = ticket(ids.check("a", "k", None, b"x", 100));
        ids.remember(t, Cursor::new(1, 1), 100);
        // Remembered somewhere in tenth 100: kept through tenth 150, the TTL never cut short.
        assert!(matches!(ids.check("a", "k", None, b"x", 150), Seen::Duplicate(_)));
        let t = ticket(ids.check("a", "k", None, b"x", 151));
        assert!(ids.is_empty());
        ids.remember(t, Cursor::new(1, 2), 151);
        assert_eq!(ids.check("a", "k", None, b"x", 160), Seen::Duplicate(Cursor::new(1, 2)));
        assert_eq!(ids.dropped, 0);
    }

    #[test]
    fn past_the_cap_the_oldest_go_first_and_are_counted() {
        let mut ids = Idempotency::new(3000, 1000);
        for i in 0..5000u64 {
            let t = ticket(ids.check("a", &i.to_string(), None, b"x", 0));
            ids.remember(t, Cursor::new(1, i), 0);
        }
        assert_eq!(ids.len(), 1000);
        assert_eq!(ids.dropped, 4000);
        assert!(matches!(ids.check("a", "3999", None, b"x", 1), Seen::New(_)));
        assert_eq!(ids.check("a", "4000", None, b"x", 1), Seen::Duplicate(Cursor::new(1, 4000)));
        // Everything expires; the order and the map give their room back.
        ids.expire(5000);
        assert!(ids.is_empty());
        assert!(ids.order.capacity() <= 64, "{}", ids.order.capacity());
    }

    #[test]
    fn a_topic_flooding_keys_pushes_out_its_own_not_those_of_others() {
        let mut ids = Idempotency::new(3000, 100);
        for (topic, n) in [("small", 3u64), ("medium", 20)] {
            for i in 0..n {
                let t = ticket(ids.check(topic, &i.to_string(), None, b"x", 0));
                ids.remember(t, Cursor::new(1, i), 0);
            }
        }
        for i in 0..10_000u64 {
            let t = ticket(ids.check("flood", &i.to_string(), None, b"x", 1));
            ids.remember(t, Cursor::new(2, i), 1);
        }
        assert_eq!(ids.len(), 100);
        for (topic, n) in [("small", 3u64), ("medium", 20)] {
            for i in 0..n {
                assert_eq!(ids.check(topic, &i.to_string(), None, b"x", 2), Seen::Duplicate(Cursor::new(1, i)));
            }
        }
        // The flood keeps its newest 77; past the TTL everything goes, topics included.
        assert!(matches!(ids.check("flood", "9999", None, b"x", 2), Seen::Duplicate(_)));
        assert!(matches!(ids.check("flood", "9922", None, b"x", 2), Seen::New(_)));
        assert_eq!(ids.dropped, 10_000 - 77);
        ids.expire(4000);
        assert!(ids.is_empty() && ids.topics.is_empty() && ids.largest.is_empty());
    }

    #[test]
    fn an_expired_place_in_the_order_does_not_take_a_newer_entry_with_it() {
        let mut ids = Idempotency::new(10, 100);
        let t = ticket(ids.check("a", "k", None, b"x", 0));
        ids.remember(t, Cursor::new(1, 1), 0);
        // Expired at 11, remembered again then (check expires first, so the old place is gone).
        let t = ticket(ids.check("a", "k", None, b"x", 11));
        ids.remember(t, Cursor::new(1, 2), 11);
        assert_eq!(ids.check("a", "k", None, b"x", 15), Seen::Duplicate(Cursor::new(1, 2)));
        // A place left behind without expiring through `check` (a cap drop races nothing
        // here, but the rule must hold): push a stale place by hand.
        ids.order.push_front((5, t.key));
        ids.expire(6);
        assert_eq!(ids.check("a", "k", None, b"x", 15), Seen::Duplicate(Cursor::new(1, 2)));
    }
}

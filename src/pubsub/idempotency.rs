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
//! Bounded: at most `cap` entries per owner; past it the oldest go first, before their TTL
//! (counted, so `/metrics` shows when the bound bites: a retry after that is published again).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};

use crate::cursor::Cursor;

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
    key: u128,
    event: u64,
}

#[derive(Debug, Clone, Copy)]
struct Kept {
    cursor: Cursor,
    event: u64,
    /// In the owner's tenths of a second.
    expires: u32,
}

pub struct Idempotency {
    ttl_tenths: u32,
    cap: usize,
    kept: HashMap<u128, Kept, foldhash::fast::FixedState>,
    /// Fingerprints in the order they were remembered, which is the order they expire in
    /// (one TTL for all), with the expiry they were remembered with.
    order: VecDeque<(u32, u128)>,
    /// Two independently keyed SipHash states make the 128-bit fingerprint.
    hi: std::hash::RandomState,
    lo: std::hash::RandomState,
    /// Keys dropped before their TTL to stay within `cap`.
    pub dropped: u64,
}

impl Idempotency {
    /// Keeps keys for `ttl_tenths` tenths of a second, at most `cap` of them.
    pub fn new(ttl_tenths: u32, cap: usize) -> Idempotency {
        Idempotency {
            ttl_tenths: ttl_tenths.max(1),
            cap: cap.max(1),
            // The fingerprints are keyed hashes already: any fixed mixing spreads them.
            kept: HashMap::with_hasher(foldhash::fast::FixedState::with_seed(0)),
            order: VecDeque::new(),
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

    fn fingerprint(&self, topic: &str, key: &str) -> u128 {
        let one = |state: &std::hash::RandomState| {
            let mut h = state.build_hasher();
            topic.hash(&mut h);
            key.hash(&mut h);
            h.finish()
        };
        (u128::from(one(&self.hi)) << 64) | u128::from(one(&self.lo))
    }

    fn event_fingerprint(&self, kind: Option<&str>, data: &[u8]) -> u64 {
        let mut h = self.hi.build_hasher();
        kind.hash(&mut h);
        data.hash(&mut h);
        h.finish()
    }

    /// What a publish of (`kind`, `data`) to `topic` under `key` is, at `now` (tenths).
    pub fn check(&mut self, topic: &str, key: &str, kind: Option<&str>, data: &[u8], now: u32) -> Seen {
        self.expire(now);
        let ticket = Ticket { key: self.fingerprint(topic, key), event: self.event_fingerprint(kind, data) };
        match self.kept.get(&ticket.key) {
            Some(k) if k.event == ticket.event => Seen::Duplicate(k.cursor),
            Some(_) => Seen::Reused,
            None => Seen::New(ticket),
        }
    }

    /// Remembers that `ticket`'s publish got `cursor`, at `now` (tenths).
    pub fn remember(&mut self, ticket: Ticket, cursor: Cursor, now: u32) {
        while self.kept.len() >= self.cap {
            let Some(oldest) = self.forget_oldest() else { break };
            if oldest {
                self.dropped += 1;
            }
        }
        let expires = now.saturating_add(self.ttl_tenths);
        self.kept.insert(ticket.key, Kept { cursor, event: ticket.event, expires });
        self.order.push_back((expires, ticket.key));
    }

    /// Forgets every key whose TTL has run out by `now`.
    pub fn expire(&mut self, now: u32) {
        while self.order.front().is_some_and(|&(expires, _)| expires <= now) {
            self.forget_oldest();
        }
        if self.order.capacity() > 64 && self.order.len() < self.order.capacity() / 4 {
            self.order.shrink_to(self.order.len() * 2);
            self.kept.shrink_to(self.kept.len() * 2);
        }
    }

    /// Forgets the oldest entry in `order`: `Some(true)` if it was still kept, `None` when
    /// there is none.
    fn forget_oldest(&mut self) -> Option<bool> {
        let (expires, key) = self.order.pop_front()?;
        // Only the entry this place in the order was made for (a key is remembered again
        // only once it has expired, so an older place may name a newer entry).
        let current = self.kept.get(&key).is_some_and(|k| k.expires == expires);
        if current {
            self.kept.remove(&key);
        }
        Some(current)
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
        assert!(matches!(ids.check("a", "k", None, b"x", 149), Seen::Duplicate(_)));
        let t = ticket(ids.check("a", "k", None, b"x", 150));
        assert!(ids.is_empty());
        ids.remember(t, Cursor::new(1, 2), 150);
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
    fn an_expired_place_in_the_order_does_not_take_a_newer_entry_with_it() {
        let mut ids = Idempotency::new(10, 100);
        let t = ticket(ids.check("a", "k", None, b"x", 0));
        ids.remember(t, Cursor::new(1, 1), 0);
        // Expired at 10, remembered again at 10 (check expires first, so the old place is gone).
        let t = ticket(ids.check("a", "k", None, b"x", 10));
        ids.remember(t, Cursor::new(1, 2), 10);
        assert_eq!(ids.check("a", "k", None, b"x", 15), Seen::Duplicate(Cursor::new(1, 2)));
        // A place left behind without expiring through `check` (a cap drop races nothing
        // here, but the rule must hold): push a stale place by hand.
        ids.order.push_front((5, t.key));
        ids.expire(6);
        assert_eq!(ids.check("a", "k", None, b"x", 15), Seen::Duplicate(Cursor::new(1, 2)));
    }
}

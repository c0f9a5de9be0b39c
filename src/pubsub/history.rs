//! A topic's history ring: its last `history` events for `history_ttl`, and what a resume
//! from a cursor gets out of it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::frames::Frame;

/// What a subscriber resuming after sequence `after` gets.
#[derive(Debug)]
pub struct Replay {
    /// Some events after the cursor are gone (count or TTL): the client must be told.
    pub gap: bool,
    /// The retained events after the cursor, oldest first.
    pub frames: Vec<Arc<Frame>>,
}

/// Eight bytes for a topic that holds nothing (most topics with subscribers and no history);
/// the ring and its byte count are boxed and made with the first event kept.
#[derive(Debug, Default)]
pub struct History {
    held: Option<Box<Held>>,
}

#[derive(Debug)]
struct Held {
    ring: VecDeque<(Instant, Arc<Frame>)>,
    /// What the events held cost (`Frame::cost`), for the owner's memory budget.
    bytes: usize,
}

impl Held {
    /// Drops the oldest event and what it cost; whether there was one.
    fn pop_front(&mut self) -> bool {
        let Some((_, f)) = self.ring.pop_front() else { return false };
        self.bytes -= f.cost();
        true
    }
}

impl History {
    /// Appends the newest event, dropping the oldest past `cap`.
    pub fn push(&mut self, frame: Arc<Frame>, now: Instant, cap: usize) {
        if cap == 0 {
            return;
        }
        // Most topics hold one or a few events (one topic per user or device): a ring starts
        // with room for one, not VecDeque's four, and doubles from there.
        let held = self.held.get_or_insert_with(|| Box::new(Held { ring: VecDeque::with_capacity(1), bytes: 0 }));
        // Made room for in place: a ring of one (`history = 1`) is not freed and made again
        // on every publish.
        while held.ring.len() >= cap && held.pop_front() {}
        held.bytes += frame.cost();
        held.ring.push_back((now, frame));
    }

    /// Drops the oldest event, and the ring with the last one.
    fn pop_oldest(&mut self) -> bool {
        let Some(held) = self.held.as_mut() else { return false };
        let popped = held.pop_front();
        if held.ring.is_empty() {
            self.held = None;
        }
        popped
    }

    fn oldest_at(&self) -> Option<Instant> {
        self.held.as_ref().and_then(|h| h.ring.front()).map(|(at, _)| *at)
    }

    fn frames(&self) -> impl Iterator<Item = &Arc<Frame>> {
        self.held.iter().flat_map(|h| h.ring.iter().map(|(_, f)| f))
    }

    /// Drops events older than `ttl`; returns how many went.
    pub fn expire(&mut self, now: Instant, ttl: Duration) -> usize {
        let mut n = 0;
        while let Some(at) = self.oldest_at() {
            if now.saturating_duration_since(at) < ttl {
                break;
            }
            self.pop_oldest();
            n += 1;
        }
        n
    }

    /// Drops the oldest events until what is held costs at most `bytes`; returns how many went.
    pub fn trim_to(&mut self, bytes: usize) -> usize {
        let mut n = 0;
        while self.bytes() > bytes && self.pop_oldest() {
            n += 1;
        }
        n
    }

    pub fn len(&self) -> usize {
        self.held.as_ref().map_or(0, |h| h.ring.len())
    }

    /// Whether an event held is younger than `ttl` (what the next expiry would leave).
    pub fn holds_any_younger_than(&self, now: Instant, ttl: Duration) -> bool {
        let newest = self.held.as_ref().and_then(|h| h.ring.back());
        newest.is_some_and(|(at, _)| now.saturating_duration_since(*at) < ttl)
    }

    /// The newest event held, and when it was kept.
    pub fn newest(&self) -> Option<(Instant, &Arc<Frame>)> {
        self.held.as_ref().and_then(|h| h.ring.back()).map(|(at, f)| (*at, f))
    }

    /// The bytes of the data of the events held (what a client would receive as `data`).
    pub fn data_bytes(&self) -> usize {
        self.frames().map(|f| f.data.len()).sum()
    }

    /// What the events held cost, in bytes.
    pub fn bytes(&self) -> usize {
        self.held.as_ref().map_or(0, |h| h.bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_none()
    }

    /// The events after sequence `after`, given the topic's newest sequence `head`.
    pub fn since(&self, after: u64, head: u64) -> Replay {
        if after >= head {
            return Replay { gap: false, frames: Vec::new() };
        }
        // Sequences in the ring are contiguous and end at `head`.
        let oldest = self.frames().next().map_or(head + 1, |f| f.cursor.seq);
        let gap = after + 1 < oldest;
        let skip = (after + 1).saturating_sub(oldest) as usize;
        let frames = self.frames().skip(skip).cloned().collect();
        Replay { gap, frames }
    }

    /// Every retained event (for a cursor from another epoch).
    pub fn all(&self) -> Vec<Arc<Frame>> {
        self.frames().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::Cursor;
    use bytes::Bytes;

    fn ring(seqs: std::ops::RangeInclusive<u64>, cap: usize, at: Instant) -> History {
        let mut h = History::default();
        for s in seqs {
            h.push(Arc::new(Frame::new("t".into(), Cursor::new(1, s), None, Bytes::new(), 0)), at, cap);
        }
        h
    }

    #[test]
    fn a_ring_holding_one_event_has_room_for_one() {
        // 100 000 topics of one event each took 917 bytes apiece with VecDeque's first
        // allocation of four slots, 562 with one (RSS growth, release build).
        let now = Instant::now();
        let capacity = |h: History| h.held.map_or(0, |h| h.ring.capacity());
        assert_eq!(capacity(ring(1..=1, 1000, now)), 1);
        assert!(capacity(ring(1..=5, 1000, now)) >= 5);
        assert_eq!(size_of::<History>(), 8, "a topic without events pays a pointer");
    }

    fn seqs(r: &Replay) -> Vec<u64> {
        r.frames.iter().map(|f| f.cursor.seq).collect()
    }

    #[test]
    fn exact_replay_without_gap() {
        let h = ring(1..=5, 10, Instant::now());
        let r = h.since(2, 5);
        assert!(!r.gap);
        assert_eq!(seqs(&r), [3, 4, 5]);
        assert!(h.since(5, 5).frames.is_empty() && !h.since(5, 5).gap);
        assert_eq!(seqs(&h.since(0, 5)), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn overflow_is_a_gap() {
        let h = ring(1..=10, 3, Instant::now());
        assert_eq!(h.len(), 3);
        let r = h.since(1, 10);
        assert!(r.gap);
        assert_eq!(seqs(&r), [8, 9, 10]);
        let r = h.since(7, 10);
        assert!(!r.gap);
        assert_eq!(seqs(&r), [8, 9, 10]);
    }

    #[test]
    fn ttl_expiry_is_a_gap_but_the_newest_cursor_is_not() {
        let t0 = Instant::now();
        let mut h = ring(1..=4, 10, t0);
        assert_eq!(h.expire(t0 + Duration::from_secs(2), Duration::from_secs(1)), 4);
        assert!(h.is_empty());
        let r = h.since(2, 4);
        assert!(r.gap && r.frames.is_empty());
        assert!(!h.since(4, 4).gap);
    }

    #[test]
    fn trimming_drops_the_oldest_and_what_they_cost() {
        let mut h = ring(1..=10, 100, Instant::now());
        let newest_four: usize = h.frames().skip(6).map(|f| f.cost()).sum();
        assert_eq!(h.bytes(), h.frames().map(|f| f.cost()).sum::<usize>());
        assert_eq!(h.trim_to(newest_four + 1), 6);
        assert_eq!(h.bytes(), newest_four);
        let r = h.since(3, 10);
        assert!(r.gap, "a resume that needed the evicted events is a gap");
        assert_eq!(seqs(&r), [7, 8, 9, 10]);
        h.expire(Instant::now() + Duration::from_secs(1), Duration::from_millis(1));
        assert_eq!(h.bytes(), 0);
    }

    #[test]
    fn zero_history_keeps_nothing() {
        let h = ring(1..=3, 0, Instant::now());
        assert!(h.is_empty());
        assert!(h.since(1, 3).gap);
    }
}

//! Questions about topics put to every worker and to the topics' owners at once (`GET
//! /topics`, API.md §9): each answers into shared memory and lets go of its part; the asker
//! wakes when the last part is gone.
//!
//! Nothing is counted on the way: a worker walks a topic's subscribers when asked, so a
//! subscribe, an unsubscribe and a delivery cost what they did. A part lets go when it is
//! dropped, answered or not (a message dropped with its inbox when a worker stops), so the
//! asker never waits for an answer that cannot come.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use atomic_waker::AtomicWaker;

use crate::cursor::Cursor;

/// How a subscriber is served, as `by_transport` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Sse,
    Ws,
    /// A long-poll, counted while it is held.
    Poll,
}

/// What the asker reads of one topic once every part has answered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Subscribers over SSE, WebSocket and long-poll.
    pub by_via: [u64; 3],
    /// The topic's newest cursor, if herald keeps the topic and it had an event.
    pub head: Option<Cursor>,
    /// Events in its history, and the bytes of their data.
    pub events: u64,
    pub bytes: u64,
}

pub struct TopicProbe {
    remaining: AtomicUsize,
    /// Three counts (`Via`) per topic asked about.
    by_via: Box<[AtomicU64]>,
    has_head: AtomicBool,
    head_epoch: AtomicU64,
    head_seq: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
    /// Names the owners list (`ToOwner::List`), and whether one of them had more.
    listed: Mutex<(Vec<Arc<str>>, bool)>,
    waker: AtomicWaker,
}

impl TopicProbe {
    /// A probe about `topics` topics that `parts` parts answer; the parts, to send one to
    /// each who answers.
    pub fn new(parts: usize, topics: usize) -> (Arc<TopicProbe>, Vec<ProbePart>) {
        let probe = Arc::new(TopicProbe {
            remaining: AtomicUsize::new(parts),
            by_via: (0..3 * topics).map(|_| AtomicU64::new(0)).collect(),
            has_head: AtomicBool::new(false),
            head_epoch: AtomicU64::new(0),
            head_seq: AtomicU64::new(0),
            events: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            listed: Mutex::new((Vec::new(), false)),
            waker: AtomicWaker::new(),
        });
        let parts = (0..parts).map(|_| ProbePart(probe.clone())).collect();
        (probe, parts)
    }

    /// Resolves once every part has let go.
    pub async fn answered(&self) {
        std::future::poll_fn(|cx| {
            // Acquire: every part's writes happened before its release of `remaining`.
            if self.remaining.load(Ordering::Acquire) == 0 {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.remaining.load(Ordering::Acquire) == 0 { Poll::Ready(()) } else { Poll::Pending }
        })
        .await
    }

    /// What was written about the `i`-th topic (the owner's share only for a single topic).
    pub fn answer(&self, i: usize) -> Answer {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let by = |via: usize| self.by_via.get(3 * i + via).map_or(0, load);
        Answer {
            by_via: [by(0), by(1), by(2)],
            head: self
                .has_head
                .load(Ordering::Relaxed)
                .then(|| Cursor::new(load(&self.head_epoch), load(&self.head_seq))),
            events: load(&self.events),
            bytes: load(&self.bytes),
        }
    }

    /// The names the owners listed, sorted, and whether any owner had more than it gave.
    pub fn listed(&self) -> (Vec<Arc<str>>, bool) {
        let mut listed = self.listed.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default();
        listed.0.sort_unstable();
        listed
    }
}

#[cfg(test)]
impl TopicProbe {
    /// The first topic's answer if every part has let go already: `answered` polled once,
    /// without a runtime.
    pub fn answered_now(&self) -> Option<Answer> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::pin!(self.answered()).poll(&mut cx) {
            Poll::Ready(()) => Some(self.answer(0)),
            Poll::Pending => None,
        }
    }
}

/// One answerer's share of a probe: written to, then dropped.
pub struct ProbePart(Arc<TopicProbe>);

impl ProbePart {
    /// Counts `n` subscribers of the `i`-th topic served `via`.
    pub fn count(&self, i: usize, via: Via, n: u64) {
        if let Some(c) = self.0.by_via.get(3 * i + via as usize) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The owner's share: the topic's newest cursor (none before its first event) and what its
    /// history holds.
    pub fn describe(&self, head: Option<Cursor>, events: usize, bytes: usize) {
        let p = &self.0;
        if let Some(c) = head {
            p.head_epoch.store(c.epoch, Ordering::Relaxed);
            p.head_seq.store(c.seq, Ordering::Relaxed);
            p.has_head.store(true, Ordering::Relaxed);
        }
        p.events.store(events as u64, Ordering::Relaxed);
        p.bytes.store(bytes as u64, Ordering::Relaxed);
    }

    /// An owner's share of a listing: names in any order, and whether it had more.
    pub fn list(&self, names: Vec<Arc<str>>, more: bool) {
        // Poisoned only if another owner panicked while pushing: then its names are lost,
        // nothing else.
        if let Ok(mut listed) = self.0.listed.lock() {
            listed.0.extend(names);
            listed.1 |= more;
        }
    }
}

impl Drop for ProbePart {
    fn drop(&mut self) {
        // Release: what this part wrote is seen by the asker that sees the count reach 0.
        if self.0.remaining.fetch_sub(1, Ordering::Release) == 1 {
            self.0.waker.wake();
        }
    }
}

impl std::fmt::Debug for ProbePart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProbePart")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_ready_when_every_part_let_go_answered_or_not() {
        let (probe, mut parts) = TopicProbe::new(3, 1);
        let owner = parts.pop().expect("three parts");
        owner.describe(Some(Cursor::new(9, 4)), 2, 10);
        parts[0].count(0, Via::Sse, 2);
        parts[1].count(0, Via::Poll, 1);
        parts[1].count(0, Via::Ws, 5);
        parts[1].count(1, Via::Ws, 5);
        drop(owner);
        drop(parts);
        let answer = probe.answered_now().expect("every part let go");
        assert_eq!(answer, Answer { by_via: [2, 5, 1], head: Some(Cursor::new(9, 4)), events: 2, bytes: 10 });
        let (probe, parts) = TopicProbe::new(2, 1);
        drop(parts);
        assert_eq!(probe.answered_now(), Some(Answer::default()), "dropped unanswered");
        let (probe, _parts) = TopicProbe::new(1, 1);
        assert_eq!(probe.answered_now(), None, "a part still held");
    }

    #[test]
    fn owners_lists_are_gathered_sorted() {
        let (probe, parts) = TopicProbe::new(2, 0);
        parts[0].list(vec!["b".into(), "d".into()], false);
        parts[1].list(vec!["c".into(), "a".into()], true);
        drop(parts);
        assert!(probe.answered_now().is_some());
        let (names, more) = probe.listed();
        let names: Vec<&str> = names.iter().map(|n| &**n).collect();
        assert_eq!((names, more), (vec!["a", "b", "c", "d"], true));
    }
}

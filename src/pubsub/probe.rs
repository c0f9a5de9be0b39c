//! A question about one topic put to every worker and to its owner at once (`GET
//! /topics/{topic}`, API.md §9): each answers into shared atomics and lets go of its part; the
//! asker wakes when the last part is gone.
//!
//! Nothing is counted on the way: a worker walks the topic's subscribers when asked, so a
//! subscribe, an unsubscribe and a delivery cost what they did. A part lets go when it is
//! dropped, answered or not (a message dropped with its inbox when a worker stops), so the
//! asker never waits for an answer that cannot come.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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

/// What the asker reads once every part has answered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Subscribers over SSE, WebSocket and long-poll.
    pub by_via: [u64; 3],
    /// The topic's newest cursor, if it ever had an event (in this life).
    pub head: Option<Cursor>,
    /// Events in its history, and the bytes of their data.
    pub events: u64,
    pub bytes: u64,
}

pub struct TopicProbe {
    remaining: AtomicUsize,
    by_via: [AtomicU64; 3],
    has_head: AtomicBool,
    head_epoch: AtomicU64,
    head_seq: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
    waker: AtomicWaker,
}

impl TopicProbe {
    /// A probe that `parts` parts answer; the parts, to send one to each who answers.
    pub fn new(parts: usize) -> (Arc<TopicProbe>, Vec<ProbePart>) {
        let probe = Arc::new(TopicProbe {
            remaining: AtomicUsize::new(parts),
            by_via: Default::default(),
            has_head: AtomicBool::new(false),
            head_epoch: AtomicU64::new(0),
            head_seq: AtomicU64::new(0),
            events: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            waker: AtomicWaker::new(),
        });
        let parts = (0..parts).map(|_| ProbePart(probe.clone())).collect();
        (probe, parts)
    }

    /// Resolves once every part has let go, with what they wrote.
    pub async fn answered(&self) -> Answer {
        std::future::poll_fn(|cx| {
            // Acquire: every part's writes happened before its release of `remaining`.
            if self.remaining.load(Ordering::Acquire) == 0 {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.remaining.load(Ordering::Acquire) == 0 { Poll::Ready(()) } else { Poll::Pending }
        })
        .await;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Answer {
            by_via: [load(&self.by_via[0]), load(&self.by_via[1]), load(&self.by_via[2])],
            head: self
                .has_head
                .load(Ordering::Relaxed)
                .then(|| Cursor::new(load(&self.head_epoch), load(&self.head_seq))),
            events: load(&self.events),
            bytes: load(&self.bytes),
        }
    }
}

#[cfg(test)]
impl TopicProbe {
    /// The answer if every part has let go already: `answered` polled once, without a runtime.
    pub fn answered_now(&self) -> Option<Answer> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::pin!(self.answered()).poll(&mut cx) {
            Poll::Ready(answer) => Some(answer),
            Poll::Pending => None,
        }
    }
}

/// One answerer's share of a probe: written to, then dropped.
pub struct ProbePart(Arc<TopicProbe>);

impl ProbePart {
    /// Counts `n` subscribers served `via`.
    pub fn count(&self, via: Via, n: u64) {
        self.0.by_via[via as usize].fetch_add(n, Ordering::Relaxed);
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
        let (probe, mut parts) = TopicProbe::new(3);
        let owner = parts.pop().expect("three parts");
        owner.describe(Some(Cursor::new(9, 4)), 2, 10);
        parts[0].count(Via::Sse, 2);
        parts[1].count(Via::Poll, 1);
        parts[1].count(Via::Ws, 5);
        drop(owner);
        drop(parts);
        let answer = probe.answered_now().expect("every part let go");
        assert_eq!(answer, Answer { by_via: [2, 5, 1], head: Some(Cursor::new(9, 4)), events: 2, bytes: 10 });
        let (probe, parts) = TopicProbe::new(2);
        drop(parts);
        assert_eq!(probe.answered_now(), Some(Answer::default()), "dropped unanswered");
        let (probe, _parts) = TopicProbe::new(1);
        assert_eq!(probe.answered_now(), None, "a part still held");
    }
}

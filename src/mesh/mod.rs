//! Bounded cross-core queues: the only way values move between workers.
//!
//! Every worker has two inboxes, each a bounded lock-free MPSC queue (crossbeam's
//! `ArrayQueue`; one producer's messages stay in order):
//! - `to_owner`: work for the worker as a topic *owner* (publish, subscribe, unsubscribe).
//!   Its consumer may wait for room in other workers' `to_worker` queues.
//! - `to_worker`: work for the worker as a *subscriber host* (events to fan out, replies).
//!   Its consumer never waits on any queue, so it always drains, and the owners waiting on it
//!   always make progress: the two classes cannot deadlock each other.
//!
//! A full queue is a decision made here: the sender yields to its own runtime and retries
//! with a short back-off (never blocking its thread), and the wait is counted. Consumers drain
//! in batches and are woken only when they registered a waker, i.e. only when parked.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use atomic_waker::AtomicWaker;
use crossbeam_queue::ArrayQueue;

use std::sync::Arc;

use crate::pubsub::msg::{ToOwner, ToWorker};
use crate::pubsub::probe::TopicProbe;
use crate::pubsub::topic::owner_of;

/// Capacity of each inbox.
pub const INBOX_CAPACITY: usize = 16 * 1024;

/// One worker's bounded inbox of `T`.
pub struct Inbox<T> {
    queue: ArrayQueue<T>,
    waker: AtomicWaker,
    /// Times a sender found the queue full and had to wait.
    pub full_waits: AtomicU64,
}

impl<T> Inbox<T> {
    fn new(capacity: usize) -> Inbox<T> {
        Inbox { queue: ArrayQueue::new(capacity), waker: AtomicWaker::new(), full_waits: AtomicU64::new(0) }
    }

    /// Enqueues without waking the consumer; call `wake` after a batch.
    pub fn try_send(&self, msg: T) -> Result<(), T> {
        self.queue.push(msg)
    }

    /// Wakes the consumer if it is parked.
    pub fn wake(&self) {
        self.waker.wake();
    }

    /// Enqueues and wakes, waiting (without blocking the thread) while the queue is full.
    pub async fn send(&self, msg: T) {
        match self.queue.push(msg) {
            Ok(()) => self.wake(),
            // The waiting path is boxed so the common case adds almost nothing to the
            // state of every task that sends.
            Err(msg) => Box::pin(self.send_when_room(msg)).await,
        }
    }

    async fn send_when_room(&self, mut msg: T) {
        let mut backoff = Duration::from_micros(50);
        loop {
            match self.queue.push(msg) {
                Ok(()) => {
                    self.wake();
                    return;
                }
                Err(back) => {
                    msg = back;
                    self.full_waits.fetch_add(1, Ordering::Relaxed);
                    self.wake();
                    monoio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(5));
                }
            }
        }
    }

    pub fn pop(&self) -> Option<T> {
        self.queue.pop()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Resolves once the queue has something; registers the waker before the last check so
    /// no wake-up can fall between.
    pub async fn ready(&self) {
        poll_fn(|cx| {
            if !self.queue.is_empty() {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.queue.is_empty() { Poll::Pending } else { Poll::Ready(()) }
        })
        .await
    }
}

/// All inboxes of all workers, plus the process-wide flags they share.
pub struct Mesh {
    pub workers: usize,
    pub to_owner: Box<[Inbox<ToOwner>]>,
    pub to_worker: Box<[Inbox<ToWorker>]>,
    shutdown: AtomicBool,
    shutdown_wakers: Box<[AtomicWaker]>,
    /// Open connections across all workers, against the connection cap.
    pub connections: AtomicUsize,
    /// Topics kept across all owners, against `max_topics`.
    pub topics: std::sync::Arc<crate::pubsub::owner::TopicCount>,
    /// Every worker's counters, for `/metrics`.
    pub metrics: crate::metrics::Metrics,
}

impl Mesh {
    pub fn new(workers: usize) -> Mesh {
        Mesh {
            workers,
            to_owner: (0..workers).map(|_| Inbox::new(INBOX_CAPACITY)).collect(),
            to_worker: (0..workers).map(|_| Inbox::new(INBOX_CAPACITY)).collect(),
            shutdown: AtomicBool::new(false),
            shutdown_wakers: (0..workers).map(|_| AtomicWaker::new()).collect(),
            connections: AtomicUsize::new(0),
            topics: Default::default(),
            metrics: crate::metrics::Metrics::new(workers),
        }
    }

    /// Each worker's inboxes, for `/metrics`.
    pub fn queues(&self) -> Vec<crate::metrics::Queues> {
        (0..self.workers)
            .map(|w| crate::metrics::Queues {
                owner_depth: self.to_owner[w].len(),
                delivery_depth: self.to_worker[w].len(),
                owner_full: self.to_owner[w].full_waits.load(Ordering::Relaxed),
                delivery_full: self.to_worker[w].full_waits.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Asks every worker to count `topics`' subscribers (and, with `owner_too`, the first
    /// topic's owner to describe it); resolves once all have answered.
    pub async fn count(&self, topics: Arc<[Arc<str>]>, owner_too: bool) -> Arc<TopicProbe> {
        let (probe, mut parts) = TopicProbe::new(self.workers + usize::from(owner_too), topics.len());
        let owner_part = if owner_too { parts.pop() } else { None };
        for (inbox, part) in self.to_worker.iter().zip(parts) {
            inbox.send(ToWorker::Count { topics: topics.clone(), part }).await;
        }
        if let (Some(part), Some(topic)) = (owner_part, topics.first()) {
            self.to_owner[owner_of(topic, self.workers)].send(ToOwner::Describe { topic: topic.clone(), part }).await;
        }
        probe.answered().await;
        probe
    }

    /// Starts the graceful stop on every worker.
    pub fn begin_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        for w in self.shutdown_wakers.iter() {
            w.wake();
        }
    }

    pub fn shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Resolves when the stop begins. One waiter per worker: it passes the stop on locally.
    pub async fn shutdown_signal(&self, worker: usize) {
        poll_fn(|cx| {
            if self.shutting_down() {
                return Poll::Ready(());
            }
            self.shutdown_wakers[worker].register(cx.waker());
            if self.shutting_down() { Poll::Ready(()) } else { Poll::Pending }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_is_bounded_and_fifo() {
        let q: Inbox<u32> = Inbox::new(4);
        for i in 0..4 {
            q.try_send(i).unwrap();
        }
        assert_eq!(q.try_send(9), Err(9));
        assert_eq!((0..4).map(|_| q.pop().unwrap()).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert!(q.pop().is_none());
    }
}

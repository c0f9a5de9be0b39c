//! The owner side of the pub/sub core: one task per worker that owns the topics hashed to it.
//!
//! For each owned topic it assigns cursors, keeps the history ring, knows which workers host
//! subscribers, and forwards each new event — one shared `Arc<Frame>` — to exactly those
//! workers. Everything for one topic happens on this one task, in inbox order, which is what
//! gives every subscriber the same order and makes "replay then go live" a single step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::HashMap;

use crate::config::Config;
use crate::frames::Frame;
use crate::mesh::{Mesh, WorkerSet};
use crate::pubsub::cursor::Cursor;
use crate::pubsub::history::History;
use crate::pubsub::msg::{SubscribeAck, ToOwner, ToWorker};

/// Most inbox messages handled before the task yields to the rest of its worker.
const BATCH: usize = 256;

struct OwnedTopic {
    epoch: u64,
    head: u64,
    history: History,
    workers: WorkerSet,
    last_publish: Instant,
}

/// The topics one worker owns.
pub struct Owner {
    id: usize,
    /// High half of every epoch this owner draws: random per run.
    run_epoch: u64,
    next_instance: u32,
    /// Keyed with foldhash: several times faster than SipHash on short names, and seeded per
    /// process, so clients choosing topic names cannot aim for one bucket.
    topics: HashMap<Arc<str>, OwnedTopic>,
    history: usize,
    history_ttl: Duration,
    /// Events held across this owner's rings (kept up to date, for the metrics gauge).
    held: usize,
    /// Events published through this owner.
    published: u64,
}

impl Owner {
    pub fn new(id: usize, run_epoch: u32, config: &Config) -> Owner {
        Owner {
            id,
            run_epoch: u64::from(run_epoch) << 32,
            next_instance: 0,
            topics: HashMap::default(),
            history: config.history,
            history_ttl: config.history_ttl,
            held: 0,
            published: 0,
        }
    }

    fn topic(&mut self, name: &Arc<str>, now: Instant) -> &mut OwnedTopic {
        let next_instance = &mut self.next_instance;
        let run_epoch = self.run_epoch;
        self.topics.entry(name.clone()).or_insert_with(|| {
            *next_instance = next_instance.wrapping_add(1);
            OwnedTopic {
                epoch: run_epoch | u64::from(*next_instance),
                head: 0,
                history: History::default(),
                workers: WorkerSet::default(),
                last_publish: now,
            }
        })
    }

    /// Events held in history across this owner's topics.
    pub fn history_len(&self) -> usize {
        self.held
    }

    /// Events published through this owner so far.
    pub fn published(&self) -> u64 {
        self.published
    }

    /// Handles one message, pushing what must go out into `out` as (worker, message).
    pub fn handle(&mut self, msg: ToOwner, now: Instant, out: &mut Vec<(usize, ToWorker)>) {
        match msg {
            ToOwner::Publish { topic, kind, data, ts_micros, reply } => {
                let (history, ttl) = (self.history, self.history_ttl);
                let t = self.topic(&topic, now);
                let before = t.history.len();
                t.history.expire(now, ttl);
                t.head += 1;
                let cursor = Cursor::new(t.epoch, t.head);
                let frame = Arc::new(Frame::new(topic, cursor, kind, data, ts_micros));
                t.history.push(frame.clone(), now, history);
                let after = t.history.len();
                t.last_publish = now;
                for w in t.workers.iter() {
                    out.push((w, ToWorker::Event(frame.clone())));
                }
                out.push((usize::from(reply.worker), ToWorker::Published { reply, cursor }));
                // Expiry and eviction above never take more than the ring held.
                self.held = self.held + after - before;
                self.published += 1;
            }
            ToOwner::Subscribe { topic, from, reply } => {
                let ttl = self.history_ttl;
                let t = self.topic(&topic, now);
                let expired = t.history.expire(now, ttl);
                t.workers.insert(usize::from(reply.worker));
                let head = Cursor::new(t.epoch, t.head);
                let (gap, replay) = match from {
                    None => (None, Vec::new()),
                    Some(c) if c.epoch != t.epoch => (Some(c), t.history.all()),
                    Some(c) => {
                        let r = t.history.since(c.seq, t.head);
                        (r.gap.then_some(c), r.frames)
                    }
                };
                let ack = SubscribeAck { reply, topic, from, head, gap, replay };
                out.push((usize::from(reply.worker), ToWorker::Subscribed(Box::new(ack))));
                self.held -= expired;
            }
            ToOwner::Unsubscribe { topic, worker } => {
                if let Some(t) = self.topics.get_mut(&topic) {
                    t.workers.remove(usize::from(worker));
                }
            }
            ToOwner::Tick => self.housekeep(now),
        }
    }

    /// Expires history by TTL and forgets topics nobody listens to that hold nothing and
    /// have been quiet for a TTL: their memory must not grow with every name ever used.
    fn housekeep(&mut self, now: Instant) {
        let ttl = self.history_ttl;
        let mut expired = 0;
        self.topics.retain(|_, t| {
            expired += t.history.expire(now, ttl);
            !(t.workers.is_empty() && t.history.is_empty() && now.saturating_duration_since(t.last_publish) >= ttl)
        });
        self.held -= expired;
    }

    pub fn id(&self) -> usize {
        self.id
    }
}

/// The owner task of worker `owner.id()`: drains its `to_owner` inbox forever.
pub async fn run(mut owner: Owner, mesh: Arc<Mesh>) {
    let id = owner.id();
    let inbox = &mesh.to_owner[id];
    let mut out: Vec<(usize, ToWorker)> = Vec::with_capacity(BATCH * 2);
    loop {
        inbox.ready().await;
        let now = Instant::now();
        let mut handled = 0;
        while handled < BATCH {
            let Some(msg) = inbox.pop() else { break };
            owner.handle(msg, now, &mut out);
            handled += 1;
        }
        let metrics = &mesh.metrics.workers[id];
        metrics.published.add(owner.published() - metrics.published.get());
        metrics.history_events.set(owner.history_len() as i64);
        let mut touched = WorkerSet::default();
        for (w, msg) in out.drain(..) {
            let target = &mesh.to_worker[w];
            if let Err(msg) = target.try_send(msg) {
                // Full: wake it so it drains, then wait for room. Order is kept because this
                // task forwards nothing else meanwhile.
                target.wake();
                target.send(msg).await;
            }
            touched.insert(w);
        }
        for w in touched.iter() {
            mesh.to_worker[w].wake();
        }
        if handled == BATCH {
            crate::shard::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::msg::ReplyTo;
    use bytes::Bytes;

    fn owner(history: usize) -> Owner {
        let config = Config { history, history_ttl: Duration::from_secs(60), ..Config::default() };
        Owner::new(0, 0xabcd, &config)
    }

    fn reply(worker: u16) -> ReplyTo {
        ReplyTo { worker, token: 1, index: 0 }
    }

    fn publish(o: &mut Owner, topic: &str, out: &mut Vec<(usize, ToWorker)>) -> Cursor {
        let msg = ToOwner::Publish {
            topic: topic.into(),
            kind: None,
            data: Bytes::from_static(b"x"),
            ts_micros: 0,
            reply: reply(0),
        };
        o.handle(msg, Instant::now(), out);
        match out.pop() {
            Some((0, ToWorker::Published { cursor, .. })) => cursor,
            other => panic!("no publish reply: {other:?}"),
        }
    }

    fn subscribe(o: &mut Owner, topic: &str, worker: u16, from: Option<Cursor>) -> SubscribeAck {
        let mut out = Vec::new();
        o.handle(ToOwner::Subscribe { topic: topic.into(), from, reply: reply(worker) }, Instant::now(), &mut out);
        match out.pop() {
            Some((_, ToWorker::Subscribed(ack))) => *ack,
            other => panic!("no ack: {other:?}"),
        }
    }

    #[test]
    fn events_go_only_to_registered_workers() {
        let mut o = owner(10);
        let mut out = Vec::new();
        publish(&mut o, "t", &mut out);
        assert!(out.is_empty());
        subscribe(&mut o, "t", 1, None);
        subscribe(&mut o, "t", 3, None);
        publish(&mut o, "t", &mut out);
        let targets: Vec<usize> = out.iter().map(|(w, _)| *w).collect();
        assert_eq!(targets, [1, 3]);
        o.handle(ToOwner::Unsubscribe { topic: "t".into(), worker: 1 }, Instant::now(), &mut Vec::new());
        out.clear();
        publish(&mut o, "t", &mut out);
        assert_eq!(out.iter().map(|(w, _)| *w).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn resume_replays_then_registers() {
        let mut o = owner(10);
        let mut out = Vec::new();
        let c: Vec<Cursor> = (0..5).map(|_| publish(&mut o, "t", &mut out)).collect();
        let ack = subscribe(&mut o, "t", 1, Some(c[1]));
        assert_eq!(ack.gap, None);
        assert_eq!(ack.replay.iter().map(|f| f.cursor).collect::<Vec<_>>(), &c[2..]);
        assert_eq!(ack.head, c[4]);
    }

    #[test]
    fn stale_epochs_and_overflow_are_gaps() {
        let mut o = owner(2);
        let mut out = Vec::new();
        let c: Vec<Cursor> = (0..5).map(|_| publish(&mut o, "t", &mut out)).collect();
        let ack = subscribe(&mut o, "t", 1, Some(c[0]));
        assert_eq!(ack.gap, Some(c[0]));
        assert_eq!(ack.replay.len(), 2);
        let stale = Cursor::new(c[0].epoch ^ 1, 3);
        let ack = subscribe(&mut o, "t", 1, Some(stale));
        assert_eq!(ack.gap, Some(stale));
        assert_eq!(ack.replay.len(), 2);
        let ack = subscribe(&mut o, "t", 1, Some(c[4]));
        assert_eq!(ack.gap, None);
        assert!(ack.replay.is_empty());
    }

    #[test]
    fn held_events_are_counted_exactly() {
        let mut o = owner(3);
        let mut out = Vec::new();
        for _ in 0..5 {
            publish(&mut o, "a", &mut out);
        }
        publish(&mut o, "b", &mut out);
        assert_eq!(o.history_len(), 4);
        assert_eq!(o.published(), 6);
        o.handle(ToOwner::Tick, Instant::now() + Duration::from_secs(120), &mut out);
        assert_eq!(o.history_len(), 0);
    }

    #[test]
    fn a_forgotten_topic_comes_back_with_a_new_epoch() {
        let config = Config { history: 10, history_ttl: Duration::from_millis(1), ..Config::default() };
        let mut o = Owner::new(0, 7, &config);
        let mut out = Vec::new();
        let first = publish(&mut o, "t", &mut out);
        o.handle(ToOwner::Tick, Instant::now() + Duration::from_secs(1), &mut out);
        assert!(o.topics.is_empty());
        let again = publish(&mut o, "t", &mut out);
        assert_ne!(first.epoch, again.epoch);
        let ack = subscribe(&mut o, "t", 0, Some(first));
        assert_eq!(ack.gap, Some(first));
    }
}

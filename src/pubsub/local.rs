//! The subscriber side of the pub/sub core: each worker's index topic → local subscribers,
//! joining and leaving topics, and the delivery task that fans events out.
//!
//! A worker is *registered* for a topic once the topic's owner has acknowledged it; from then
//! on the owner forwards every event of the topic to this worker, in order, so the index's
//! `head` is the topic's newest cursor as seen here. A subscriber joining a registered topic
//! live joins at once; anyone else (first subscriber, or a resume) asks the owner, and joins
//! when the acknowledgement — carrying the replay — comes back through the same ordered queue
//! as the events, so nothing is missed or delivered twice.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use indexmap::IndexMap;

use crate::conn::outbox::Outbox;
use crate::frames::Frame;
use crate::mesh::WorkerSet;
use crate::proto::sse;
use crate::pubsub::cursor::Cursor;
use crate::pubsub::msg::{ReplyTo, SubscribeAck, ToOwner, ToWorker};
use crate::pubsub::topic::owner_of;
use crate::shard::state::{ConnKey, Shard, ShardRef, flags};

/// Most inbox messages handled per batch before flushing.
const BATCH: usize = 128;
/// Most connections flushed before the delivery task yields to the rest of the worker.
const FLUSHES_PER_YIELD: usize = 2048;

/// One stream's subscription.
#[derive(Debug)]
pub struct Subscription {
    pub topics: Box<[Arc<str>]>,
    /// Per topic, the cursor of the last event this stream was given (or its starting point).
    pub positions: Box<[Cursor]>,
    pub types: Option<Box<[Box<str>]>>,
    /// HTTP/1.1 chunked framing (else HTTP/1.0, bare bytes until close).
    pub chunked: bool,
    /// Topics still waiting for their owner's acknowledgement.
    pub pending_acks: usize,
    /// What arrived while acknowledgements were outstanding, in arrival order. It is
    /// rendered once all are in, when every topic's starting position is known, so the ids
    /// of a multi-topic stream are right from its first event.
    prelude: Vec<Prelude>,
}

#[derive(Debug)]
enum Prelude {
    Gap { idx: usize, missed: Cursor, resume_at: Cursor },
    Event { idx: usize, frame: Arc<Frame>, replay: bool },
}

/// Most events a stream may collect while waiting for its acknowledgements.
const MAX_PRELUDE: usize = 1 << 16;

impl Subscription {
    pub fn new(topics: Vec<Arc<str>>, types: Option<Box<[Box<str>]>>, chunked: bool) -> Subscription {
        let n = topics.len();
        Subscription {
            topics: topics.into(),
            positions: vec![Cursor::new(0, 0); n].into(),
            types,
            chunked,
            pending_acks: 0,
            prelude: Vec::new(),
        }
    }

    /// Queues `frame` on `outbox`: a single-topic stream shares the frame's bytes as they are;
    /// a multi-topic stream sends its own id (every topic's position) in front of them.
    fn queue(&mut self, idx: usize, frame: &Frame, replay: bool, outbox: &mut Outbox) {
        self.positions[idx] = frame.cursor;
        if !frame.passes(self.types.as_deref()) {
            return;
        }
        if self.topics.len() == 1 {
            push(outbox, frame.sse(self.chunked), replay);
        } else {
            push(outbox, self.id_chunk(), replay);
            push(outbox, frame.sse_anonymous(self.chunked), replay);
        }
    }

    /// The stream's id line for its current positions (multi-topic streams only).
    fn id_chunk(&self) -> Bytes {
        sse::id_chunk(&Cursor::join(&self.positions)).for_version(self.chunked)
    }

    /// Renders the prelude into `outbox`, now that every starting position is known.
    fn render_prelude(&mut self, outbox: &mut Outbox) {
        for item in std::mem::take(&mut self.prelude) {
            match item {
                Prelude::Gap { idx, missed, resume_at } => {
                    self.positions[idx] = resume_at;
                    let id = if self.topics.len() == 1 { resume_at.to_string() } else { Cursor::join(&self.positions) };
                    let gap = sse::gap_chunk(&self.topics[idx], &missed.to_string(), &id);
                    outbox.push_replay(gap.for_version(self.chunked));
                }
                Prelude::Event { idx, frame, replay } => self.queue(idx, &frame, replay, outbox),
            }
        }
    }
}

fn push(outbox: &mut Outbox, b: Bytes, replay: bool) {
    if replay { outbox.push_replay(b) } else { outbox.push(b) }
}

/// A topic as one worker sees it.
#[derive(Debug, Default)]
pub struct LocalTopic {
    /// Live subscribers: connection token → index of the topic in its subscription.
    subs: IndexMap<u64, usize>,
    /// The owner forwards this topic's events here.
    registered: bool,
    /// Subscribe requests sent and not yet acknowledged.
    pending: usize,
    /// Newest cursor seen here (valid while registered).
    head: Cursor,
}

impl Shard {
    /// Puts the connection's subscription into the index. Topics this worker is registered
    /// for (and not resumed) are joined at once; for the others the returned requests must be
    /// sent to their owners. The stream becomes `READY` when the last one is acknowledged.
    pub fn join(&mut self, key: ConnKey, mut sub: Subscription, from: &[Option<Cursor>]) -> Vec<(usize, ToOwner)> {
        let mut requests = Vec::new();
        let workers = self.mesh.workers;
        let id = self.id;
        for (i, topic) in sub.topics.iter().enumerate() {
            // A subscribe overtakes a not-yet-sent unsubscribe of the same topic.
            self.deferred.retain(|m| !matches!(m, ToOwner::Unsubscribe { topic: t, .. } if t == topic));
            let t = self.topics.entry(topic.clone()).or_default();
            match from[i] {
                None if t.registered => {
                    sub.positions[i] = t.head;
                    t.subs.insert(key.to_token(), i);
                }
                from => {
                    // A resumed topic starts at the client's cursor; a fresh one at the head
                    // its acknowledgement brings.
                    if let Some(c) = from {
                        sub.positions[i] = c;
                    }
                    t.pending += 1;
                    sub.pending_acks += 1;
                    let reply = ReplyTo { worker: id as u16, token: key.to_token(), index: i as u32 };
                    requests.push((owner_of(topic, workers), ToOwner::Subscribe { topic: topic.clone(), from, reply }));
                }
            }
        }
        if let Some(c) = self.conn(key) {
            if sub.pending_acks == 0 {
                c.flags |= flags::READY;
            }
            c.sub = Some(Box::new(sub));
        }
        requests
    }

    /// Takes the connection out of every topic it was in.
    pub fn leave(&mut self, key: ConnKey) {
        let Some(sub) = self.conn(key).and_then(|c| c.sub.take()) else { return };
        for topic in sub.topics.iter() {
            if let Some(t) = self.topics.get_mut(topic) {
                t.subs.swap_remove(&key.to_token());
            }
            self.release(topic);
        }
        self.send_deferred();
    }

    /// Forgets a topic nobody here listens to or waits for, telling its owner to stop.
    fn release(&mut self, topic: &Arc<str>) {
        let Some(t) = self.topics.get(topic) else { return };
        if !t.subs.is_empty() || t.pending > 0 {
            return;
        }
        let registered = t.registered;
        self.topics.remove(topic);
        if registered {
            self.deferred.push(ToOwner::Unsubscribe { topic: topic.clone(), worker: self.id as u16 });
        }
    }

    /// Sends queued unsubscribes that fit in their owners' inboxes; the rest wait for the ticker.
    pub fn send_deferred(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        let mut woken = WorkerSet::default();
        let mut keep = Vec::new();
        for msg in self.deferred.drain(..) {
            let owner = match &msg {
                ToOwner::Unsubscribe { topic, .. } => owner_of(topic, self.mesh.workers),
                _ => self.id,
            };
            match self.mesh.to_owner[owner].try_send(msg) {
                Ok(()) => woken.insert(owner),
                Err(msg) => keep.push(msg),
            }
        }
        self.deferred = keep;
        for w in woken.iter() {
            self.mesh.to_owner[w].wake();
        }
    }

    /// One message from an owner.
    pub fn handle(&mut self, msg: ToWorker) {
        match msg {
            ToWorker::Event(frame) => self.deliver(&frame),
            ToWorker::Published { reply, cursor } => {
                if let Some(p) = self.publishes.get_mut(reply.token as usize)
                    && let Some(slot) = p.cursors.get_mut(reply.index as usize)
                    && slot.is_none()
                {
                    *slot = Some(cursor);
                    p.missing -= 1;
                    if p.missing == 0
                        && let Some(w) = p.waker.take()
                    {
                        w.wake();
                    }
                }
            }
            ToWorker::Subscribed(ack) => self.on_subscribed(*ack),
        }
    }

    /// Appends `frame` to the outbox of every local subscriber of its topic.
    fn deliver(&mut self, frame: &Arc<Frame>) {
        let Shard { topics, conns, dirty, stats, config, .. } = self;
        let Some(t) = topics.get_mut(&frame.topic) else { return };
        t.head = frame.cursor;
        let cap = config.max_pending_bytes;
        for (&token, &idx) in t.subs.iter() {
            let key = ConnKey::from_token(token);
            let Some(c) = conns.get_mut(key.index as usize) else { continue };
            if c.generation() != key.generation || c.has(flags::CLOSED | flags::CLOSING) {
                continue;
            }
            let Some(sub) = c.sub.as_mut() else { continue };
            if sub.pending_acks > 0 {
                if sub.prelude.len() >= MAX_PRELUDE {
                    c.flags |= flags::CLOSED;
                    c.wake();
                    stats.slow_consumer_closes += 1;
                } else {
                    sub.prelude.push(Prelude::Event { idx, frame: frame.clone(), replay: false });
                }
                continue;
            }
            sub.queue(idx, frame, false, &mut c.outbox);
            stats.deliveries += 1;
            if c.outbox.over(cap) {
                // A slow consumer: cut it rather than let its queue grow. It can resume.
                c.flags |= flags::CLOSED;
                c.outbox.clear();
                c.wake();
                stats.slow_consumer_closes += 1;
            } else if !c.has(flags::DIRTY) {
                c.flags |= flags::DIRTY;
                dirty.push(key);
            }
        }
    }

    /// The owner registered us for a topic: replay, then join live.
    fn on_subscribed(&mut self, ack: SubscribeAck) {
        let key = ConnKey::from_token(ack.reply.token);
        let idx = ack.reply.index as usize;
        let t = self.topics.entry(ack.topic.clone()).or_default();
        t.pending = t.pending.saturating_sub(1);
        t.registered = true;
        if t.head.epoch != ack.head.epoch || t.head.seq < ack.head.seq {
            t.head = ack.head;
        }
        let Some(c) = self.conn(key) else {
            self.release(&ack.topic);
            self.send_deferred();
            return;
        };
        let closed = c.has(flags::CLOSED);
        let Some(sub) = c.sub.as_mut().filter(|_| !closed) else {
            self.release(&ack.topic);
            self.send_deferred();
            return;
        };
        if ack.from.is_none() {
            sub.positions[idx] = ack.head;
        }
        if let Some(missed) = ack.gap {
            // The gap event's id is the position just before the first retained event, so a
            // client cut right after it resumes without being told about the gap twice.
            let resume_at = ack.replay.first().map_or(ack.head, |f| Cursor::new(f.cursor.epoch, f.cursor.seq - 1));
            sub.prelude.push(Prelude::Gap { idx, missed, resume_at });
        }
        sub.prelude.extend(ack.replay.into_iter().map(|frame| Prelude::Event { idx, frame, replay: true }));
        sub.pending_acks -= 1;
        let ready = sub.pending_acks == 0;
        if ready {
            sub.render_prelude(&mut c.outbox);
            c.flags |= flags::READY;
            c.wake();
        }
        if let Some(t) = self.topics.get_mut(&ack.topic) {
            t.subs.insert(key.to_token(), idx);
        }
        if ready {
            self.mark_dirty(key);
        }
    }

    /// Live subscribers of `topic` on this worker.
    pub fn local_subscribers(&self, topic: &str) -> usize {
        self.topics.get(topic).map_or(0, |t| t.subs.len())
    }

    pub fn topic_heads(&self) -> HashMap<Arc<str>, Cursor> {
        self.topics.iter().map(|(k, t)| (k.clone(), t.head)).collect()
    }
}

/// The delivery task of one worker: drains its `to_worker` inbox forever, fanning events out
/// and flushing every touched connection once per batch.
pub async fn run(shard: ShardRef) {
    let mesh = shard.borrow().mesh.clone();
    let id = shard.borrow().id;
    let inbox = &mesh.to_worker[id];
    loop {
        inbox.ready().await;
        let mut handled = 0;
        {
            let mut s = shard.borrow_mut();
            while handled < BATCH {
                let Some(msg) = inbox.pop() else { break };
                s.handle(msg);
                handled += 1;
            }
        }
        flush_all(&shard).await;
        if handled == BATCH {
            crate::shard::yield_now().await;
        }
    }
}

/// Flushes every dirty connection, yielding now and then so one huge broadcast cannot
/// starve accepts and heartbeats on this core.
pub async fn flush_all(shard: &ShardRef) {
    loop {
        let more = {
            let mut s = shard.borrow_mut();
            let n = s.dirty.len().min(FLUSHES_PER_YIELD);
            let batch: Vec<ConnKey> = s.dirty.drain(..n).collect();
            for key in batch {
                s.flush(key);
            }
            !s.dirty.is_empty()
        };
        if !more {
            return;
        }
        crate::shard::yield_now().await;
    }
}

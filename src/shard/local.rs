//! The subscriber side of the pub/sub core: each worker's index topic → local subscribers,
//! joining and leaving topics, and the delivery task that fans events out.
//!
//! A worker is *registered* for a topic once the topic's owner has acknowledged it; from then
//! on the owner forwards every event of the topic to this worker, in order, so the index's
//! `head` is the topic's newest cursor as seen here. A subscriber joining a registered topic
//! live joins at once; anyone else (first subscriber, or a resume) asks the owner, and joins
//! when the acknowledgement — carrying the replay — comes back through the same ordered queue
//! as the events, so nothing is missed or delivered twice.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use indexmap::IndexMap;
use smallvec::SmallVec;

use crate::clock::Stamp;
use crate::cursor::{Cursor, Resume};
use crate::frames::Frame;
use crate::proto::{longpoll, sse, ws};
use crate::pubsub::msg::{ReplyTo, SubscribeAck, ToOwner, ToWorker};
use crate::pubsub::topic::owner_of;
use crate::pubsub::workers::WorkerSet;
use crate::shard::outbox::Outbox;
use crate::shard::state::{ConnKey, Shard, ShardRef, flags};

/// Most inbox messages handled in one go.
const BATCH: usize = 128;
/// Most connections flushed before the delivery task takes in again and gives the rest of
/// the worker a turn (about 2 ms of writes).
const FLUSH_CHUNK: usize = 256;
/// Most events waiting to have their delivery latency recorded.
const MAX_TIMED: usize = 4096;

/// How a subscription's events reach its connection.
#[derive(Debug)]
pub enum Delivery {
    /// An event stream: each event goes to the outbox as it comes. `chunked` is HTTP/1.1
    /// framing (else HTTP/1.0, bare bytes until close).
    Sse { chunked: bool },
    /// A held long-poll: events are collected, up to its `max`, for one answer.
    Held(Held),
    /// A WebSocket: each event goes to the outbox as a text frame; topics come and go.
    Ws,
    /// A WebSocket that is sent each event's data as it is (the chat events API).
    WsRaw,
}

/// What a held long-poll has collected. Inline in the subscription, not boxed: a box made
/// while the connection's request-phase allocations are live stays behind when they are
/// freed and pins their memory (about 500 bytes per held poll, measured).
#[derive(Debug)]
pub struct Held {
    pub items: Vec<HeldItem>,
    /// When to answer `204` if nothing came.
    pub deadline: Stamp,
    max: u32,
    /// The answer stops growing past this many bytes of event data (`max_pending_bytes`):
    /// the same cap a stream's queue has. What is left comes with the next poll.
    max_bytes: u32,
    events: u32,
    bytes: u32,
}

#[derive(Debug)]
pub enum HeldItem {
    Event(Arc<Frame>),
    /// A gap notice, already encoded.
    Gap(Bytes),
}

impl Held {
    pub fn new(max: usize, max_bytes: usize, deadline: Stamp) -> Held {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Held { items: Vec::new(), deadline, max: clamp(max), max_bytes: clamp(max_bytes), events: 0, bytes: 0 }
    }

    fn full(&self) -> bool {
        self.events >= self.max || self.bytes >= self.max_bytes
    }

    fn push(&mut self, frame: &Arc<Frame>) {
        self.events += 1;
        self.bytes = self.bytes.saturating_add(u32::try_from(frame.data.len()).unwrap_or(u32::MAX));
        self.items.push(HeldItem::Event(frame.clone()));
    }
}

/// Per topic of a subscription; most subscriptions have one, kept inline (no allocation).
pub type PerTopic<T> = SmallVec<[T; 1]>;

/// One connection's subscription.
#[derive(Debug)]
pub struct Subscription {
    pub topics: PerTopic<Arc<str>>,
    /// Per topic, the cursor of the last event this connection was given (or its start).
    pub positions: PerTopic<Cursor>,
    pub types: Option<Box<[Box<str>]>>,
    pub delivery: Delivery,
    /// Topics still waiting for their owner's acknowledgement.
    pub pending_acks: usize,
    /// What is still to be rendered, in order: what arrived while acknowledgements were
    /// outstanding (rendered once all are in, when every topic's starting position is known,
    /// so the ids of a multi-topic stream are right from its first event), and the replays
    /// of a resume, which are pulled into the outbox as the socket drains (see
    /// `RENDER_AHEAD`), with the live events that came meanwhile behind them.
    prelude: VecDeque<Prelude>,
    /// What few subscriptions have (a pause's groups, a token's expiry), boxed so that the
    /// others pay 8 bytes for it.
    pub rare: Option<Box<Rare>>,
}

/// What few subscriptions have.
#[derive(Debug, Default)]
pub struct Rare {
    /// Set on streams an admin pause may close: the groups that can spare them.
    pub pausable: Option<Box<[String]>>,
    /// When the token the subscription was opened with expires (Unix milliseconds): the stream
    /// ends then, and its client comes back with a fresh one.
    pub expires: Option<u64>,
}

#[derive(Debug)]
enum Prelude {
    /// A reply that must reach the client before what follows (a WebSocket `subscribed`).
    Reply(Bytes),
    Gap {
        idx: usize,
        missed: Arc<str>,
        resume_at: Cursor,
    },
    /// A resume's replay of one topic: the events still to send are `frames[next..]`. The
    /// frames are history's; only the pointers are the subscription's own.
    Replay {
        idx: usize,
        frames: Vec<Arc<Frame>>,
        next: usize,
    },
    /// A live event that came while acknowledgements or a replay were outstanding.
    Event {
        idx: usize,
        frame: Arc<Frame>,
    },
}

/// An item handed to a subscription, by reference (the fanout must not touch the frame's
/// reference count more than the bytes it queues already do).
enum Item<'a> {
    Gap { idx: usize, missed: &'a str, resume_at: Cursor },
    Event { idx: usize, frame: &'a Arc<Frame>, replay: bool },
}

/// Most bytes a stream's prelude is rendered ahead of what its socket has taken: a resume of
/// 64 topics × 1000 events is pulled as the socket drains, not queued whole.
const RENDER_AHEAD: usize = 64 * 1024;

/// Where `Subscription::take` put an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    Nothing,
    /// Queued on the outbox: flush it.
    Outbox,
    /// Collected by a held poll: wake its task to answer.
    Held,
}

/// The last multi-topic `id:` chunk built during one fanout. Subscribers of the same topic
/// list that have seen the same events stand at the same positions, so they share one
/// encoded id instead of each formatting its own.
#[derive(Default)]
struct IdMemo {
    positions: Vec<Cursor>,
    chunked: bool,
    chunk: Option<Bytes>,
}

impl IdMemo {
    fn id_chunk(&mut self, positions: &[Cursor], chunked: bool) -> Bytes {
        match &self.chunk {
            Some(c) if self.chunked == chunked && self.positions == positions => c.clone(),
            _ => {
                let c = sse::id_chunk(&Cursor::join(positions)).for_version(chunked);
                self.positions.clear();
                self.positions.extend_from_slice(positions);
                self.chunked = chunked;
                self.chunk = Some(c.clone());
                c
            }
        }
    }
}

/// Most events a subscription may collect while waiting for its acknowledgements.
const MAX_PRELUDE: usize = 1 << 16;

impl Subscription {
    pub fn new(topics: Vec<Arc<str>>, types: Option<Box<[Box<str>]>>, delivery: Delivery) -> Subscription {
        let n = topics.len();
        Subscription {
            topics: topics.into_iter().collect(),
            positions: smallvec::smallvec![Cursor::new(0, 0); n],
            types,
            delivery,
            pending_acks: 0,
            prelude: VecDeque::new(),
            rare: None,
        }
    }

    /// Ends the subscription's stream at `expires` (Unix milliseconds), when its token expires.
    pub fn expires_at(&mut self, expires: Option<u64>) {
        if let Some(at) = expires {
            self.rare.get_or_insert_with(Box::default).expires = Some(at);
        }
    }

    /// When the subscription's token expires (Unix milliseconds), if it does.
    pub fn expires(&self) -> Option<u64> {
        self.rare.as_ref().and_then(|r| r.expires)
    }

    /// The id that resumes this subscription where it stands: the topic's cursor for one
    /// topic, the list of every topic's cursor for several.
    pub fn resume_id(&self) -> String {
        Cursor::join(&self.positions)
    }

    /// Takes one event or gap notice: an event stream queues it on `outbox` (a single-topic
    /// stream shares the frame's bytes as they are; a multi-topic stream sends its own id —
    /// every topic's position — in front of them); a held poll collects it up to its `max`,
    /// and once full takes nothing more, so its positions stay those of what it answers with.
    fn take(&mut self, item: Item<'_>, outbox: &mut Outbox, ids: &mut IdMemo) -> Taken {
        let multi = self.topics.len() > 1;
        match (&mut self.delivery, item) {
            (Delivery::Held(held), _) if held.full() => Taken::Nothing,
            (Delivery::Held(held), Item::Gap { idx, missed, resume_at }) => {
                self.positions[idx] = resume_at;
                let now = crate::clock::now_micros();
                held.items.push(HeldItem::Gap(longpoll::gap_object(&self.topics[idx], resume_at, missed, now)));
                Taken::Held
            }
            (Delivery::Held(held), Item::Event { idx, frame, .. }) => {
                self.positions[idx] = frame.cursor;
                if !frame.passes(self.types.as_deref()) {
                    return Taken::Nothing;
                }
                held.push(frame);
                Taken::Held
            }
            (Delivery::Ws | Delivery::WsRaw, Item::Gap { idx, missed, .. }) => {
                let gap = serde_json::json!({"event": "gap", "topic": &*self.topics[idx], "missed_from": missed});
                outbox.push_replay(ws::encode_frame(ws::Opcode::Text, gap.to_string().as_bytes()));
                Taken::Outbox
            }
            (Delivery::Ws | Delivery::WsRaw, Item::Event { idx, frame, replay }) => {
                self.positions[idx] = frame.cursor;
                if !frame.passes(self.types.as_deref()) {
                    return Taken::Nothing;
                }
                let raw = matches!(self.delivery, Delivery::WsRaw);
                push(outbox, if raw { frame.ws_raw() } else { frame.ws() }, replay);
                Taken::Outbox
            }
            (&mut Delivery::Sse { chunked }, Item::Gap { idx, missed, resume_at }) => {
                self.positions[idx] = resume_at;
                let id = Cursor::join(&self.positions);
                let gap = sse::gap_chunk(&self.topics[idx], missed, &id);
                outbox.push_replay(gap.for_version(chunked));
                Taken::Outbox
            }
            (&mut Delivery::Sse { chunked }, Item::Event { idx, frame, replay }) => {
                self.positions[idx] = frame.cursor;
                if !frame.passes(self.types.as_deref()) {
                    return Taken::Nothing;
                }
                if multi {
                    push(outbox, ids.id_chunk(&self.positions, chunked), replay);
                    push(outbox, frame.sse_anonymous(chunked), replay);
                } else {
                    push(outbox, frame.sse(chunked), replay);
                }
                Taken::Outbox
            }
        }
    }

    /// Renders the prelude, once every starting position is known: a held poll takes what
    /// it can answer with; a stream up to `RENDER_AHEAD` bytes queued, the rest when its
    /// socket has taken them (`Shard::flush` calls again).
    fn render_prelude(&mut self, outbox: &mut Outbox) -> Taken {
        let ahead = if matches!(self.delivery, Delivery::Held(_)) { usize::MAX } else { RENDER_AHEAD };
        let mut taken = Taken::Nothing;
        let mut ids = IdMemo::default();
        let mut note = |t: Taken| {
            if t != Taken::Nothing {
                taken = t;
            }
        };
        while outbox.queued() < ahead {
            let Some(entry) = self.prelude.pop_front() else { break };
            match entry {
                Prelude::Reply(reply) => {
                    outbox.push(reply);
                    note(Taken::Outbox);
                }
                Prelude::Gap { idx, missed, resume_at } => {
                    note(self.take(Item::Gap { idx, missed: &missed, resume_at }, outbox, &mut ids))
                }
                Prelude::Event { idx, frame } => {
                    note(self.take(Item::Event { idx, frame: &frame, replay: false }, outbox, &mut ids))
                }
                Prelude::Replay { idx, frames, mut next } => {
                    while next < frames.len() && outbox.queued() < ahead {
                        note(self.take(Item::Event { idx, frame: &frames[next], replay: true }, outbox, &mut ids));
                        next += 1;
                    }
                    if next < frames.len() {
                        self.prelude.push_front(Prelude::Replay { idx, frames, next });
                    }
                }
            }
        }
        taken
    }

    /// Whether something is still to be rendered once the outbox drains.
    pub fn rendering(&self) -> bool {
        self.pending_acks == 0 && !self.prelude.is_empty()
    }

    /// Renders more of the prelude into `outbox`, which the socket has just emptied.
    pub fn render_more(&mut self, outbox: &mut Outbox) -> bool {
        self.render_prelude(outbox) != Taken::Nothing
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
    /// sent to their owners. The subscription becomes `READY` when the last one is answered.
    pub fn join(&mut self, key: ConnKey, sub: Subscription, from: &[Resume]) -> Vec<(usize, ToOwner)> {
        let n = sub.topics.len();
        let Some(c) = self.conn(key) else { return Vec::new() };
        c.sub = Some(sub);
        let requests = self.attach(key, 0..n, from);
        if let Some(c) = self.conn(key)
            && c.sub.as_ref().is_some_and(|s| s.pending_acks == 0)
        {
            c.flags |= flags::READY;
        }
        requests
    }

    /// Adds topics to a WebSocket's subscription. `reply` reaches the client before any
    /// event of the new topics. Returns the requests for the owners (none when every topic
    /// could be joined here at once, in which case the reply is already queued).
    pub fn join_more(
        &mut self,
        key: ConnKey,
        topics: Vec<Arc<str>>,
        from: &[Resume],
        reply: Bytes,
    ) -> Vec<(usize, ToOwner)> {
        let Some(sub) = self.conn(key).and_then(|c| c.sub.as_mut()) else { return Vec::new() };
        let start = sub.topics.len();
        sub.positions.extend(std::iter::repeat_n(Cursor::default(), topics.len()));
        sub.topics.extend(topics);
        let end = sub.topics.len();
        sub.prelude.push_front(Prelude::Reply(reply));
        let requests = self.attach(key, start..end, from);
        if let Some(c) = self.conn(key)
            && let Some(sub) = c.sub.as_mut()
            && sub.pending_acks == 0
        {
            sub.render_prelude(&mut c.outbox);
            if sub.rendering() {
                c.flags |= flags::RENDERING;
            }
        }
        requests
    }

    /// Whether the connection's subscription has every acknowledgement it waits for.
    pub fn acked(&mut self, key: ConnKey) -> bool {
        self.conn(key).and_then(|c| c.sub.as_ref()).is_none_or(|s| s.pending_acks == 0)
    }

    /// Removes topics from a WebSocket's subscription; returns those it was not in.
    pub fn leave_some(&mut self, key: ConnKey, names: &[Arc<str>]) -> Vec<Arc<str>> {
        let token = key.to_token();
        let mut missing = Vec::new();
        for name in names {
            let Some(sub) = self.conn(key).and_then(|c| c.sub.as_mut()) else { return missing };
            let Some(idx) = sub.topics.iter().position(|t| t == name) else {
                missing.push(name.clone());
                continue;
            };
            sub.topics.swap_remove(idx);
            sub.positions.swap_remove(idx);
            let moved = sub.topics.get(idx).cloned();
            if let Some(t) = self.topics.get_mut(name) {
                t.subs.swap_remove(&token);
            }
            // The topic that took the freed place must be found there from now on.
            if let Some(moved) = moved
                && let Some(t) = self.topics.get_mut(&moved)
                && let Some(slot) = t.subs.get_mut(&token)
            {
                *slot = idx;
            }
            self.release(name);
        }
        self.send_deferred();
        missing
    }

    /// Joins `range` of the connection's topics (see `join`).
    fn attach(&mut self, key: ConnKey, range: std::ops::Range<usize>, from: &[Resume]) -> Vec<(usize, ToOwner)> {
        let mut requests = Vec::new();
        let (workers, id) = (self.mesh.workers, self.id);
        let Shard { conns, topics, deferred, .. } = self;
        let Some(sub) =
            conns.get_mut(key.index as usize).filter(|c| c.generation() == key.generation).and_then(|c| c.sub.as_mut())
        else {
            return requests;
        };
        for (i, resume) in range.zip(from.iter()) {
            let entry = topics.entry(sub.topics[i].clone());
            // Every subscriber of a topic shares the index's copy of its name.
            sub.topics[i] = entry.key().clone();
            let t = entry.or_default();
            let topic = &sub.topics[i];
            // A subscribe overtakes a not-yet-sent unsubscribe of the same topic.
            deferred.retain(|m| !matches!(m, ToOwner::Unsubscribe { topic: t, .. } if t == topic));
            // Live, or resuming from exactly the newest event seen here: nothing to replay,
            // so no need to ask the owner.
            if t.registered && (*resume == Resume::Live || resume.is_at(t.head)) {
                sub.positions[i] = t.head;
                t.subs.insert(key.to_token(), i);
                continue;
            }
            // Its starting position comes with the acknowledgement.
            t.pending += 1;
            sub.pending_acks += 1;
            let reply = ReplyTo { worker: id as u16, token: key.to_token(), index: i as u32 };
            let msg = ToOwner::Subscribe { topic: topic.clone(), resume: resume.clone(), reply };
            requests.push((owner_of(topic, workers), msg));
        }
        requests
    }

    /// Takes the connection out of every topic it was in, and hands back its subscription.
    pub fn leave(&mut self, key: ConnKey) -> Option<Subscription> {
        let sub = self.conn(key).and_then(|c| c.sub.take())?;
        for topic in sub.topics.iter() {
            if let Some(t) = self.topics.get_mut(topic) {
                t.subs.swap_remove(&key.to_token());
            }
            self.release(topic);
        }
        self.send_deferred();
        Some(sub)
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
            ToWorker::Event(frame) => {
                self.deliver(&frame);
            }
            ToWorker::Published { reply, cursor } => {
                self.on_published(reply.token as usize, reply.index as usize, cursor)
            }
            ToWorker::Subscribed(ack) => self.on_subscribed(*ack),
            ToWorker::Pause { delay_ms, except } => self.pause(delay_ms, &except),
        }
    }

    /// Sends `retry: delay_ms` to every pausable stream not spared by `except`, ends it and
    /// closes it; its client comes back after the delay and resumes from its last id.
    fn pause(&mut self, delay_ms: u64, except: &[String]) {
        let retry = sse::preamble(delay_ms, false);
        let mut paused = Vec::new();
        let Shard { conns, parked, .. } = self;
        for (i, c) in conns.iter_mut() {
            let Some(sub) = c.sub.as_ref() else { continue };
            let Some(groups) = sub.rare.as_ref().and_then(|r| r.pausable.as_ref()) else { continue };
            if groups.iter().any(|g| except.contains(g))
                || !c.has(flags::READY)
                || c.has(flags::CLOSED | flags::CLOSING)
            {
                continue;
            }
            if let Delivery::Sse { chunked } = sub.delivery {
                c.outbox.push(retry.for_version(chunked));
                if chunked {
                    c.outbox.push(Bytes::from_static(sse::TERMINATOR));
                }
            }
            c.flags |= flags::CLOSING;
            let key = ConnKey { index: i as u32, generation: c.generation() };
            c.notify(key, parked);
            paused.push(key);
        }
        for key in paused {
            self.flush(key);
        }
    }

    /// Appends `frame` to the outbox of every local subscriber of its topic; whether it has
    /// any here.
    fn deliver(&mut self, frame: &Arc<Frame>) -> bool {
        let metrics = &self.mesh.metrics.workers[self.id];
        let Shard { topics, conns, dirty, config, parked, .. } = self;
        let Some(t) = topics.get_mut(&frame.topic) else { return false };
        t.head = frame.cursor;
        let cap = config.max_pending_bytes;
        let mut ids = IdMemo::default();
        for (&token, &idx) in t.subs.iter() {
            let key = ConnKey::from_token(token);
            let Some(c) = conns.get_mut(key.index as usize) else { continue };
            if c.generation() != key.generation || c.has(flags::CLOSED | flags::CLOSING) {
                continue;
            }
            let Some(sub) = c.sub.as_mut() else { continue };
            // Behind what is still to be rendered: acknowledgements awaited, a replay.
            if sub.pending_acks > 0 || !sub.prelude.is_empty() {
                if sub.prelude.len() >= MAX_PRELUDE {
                    c.cut_slow(key, parked);
                    metrics.slow_consumers.inc();
                    metrics.drops.inc();
                } else {
                    sub.prelude.push_back(Prelude::Event { idx, frame: frame.clone() });
                }
                continue;
            }
            match sub.take(Item::Event { idx, frame, replay: false }, &mut c.outbox, &mut ids) {
                Taken::Nothing => continue,
                Taken::Held => {
                    metrics.deliveries.inc();
                    // One notice per poll, not per event: a parked poll's notices are queued.
                    if !c.has(flags::DATA) {
                        c.flags |= flags::DATA;
                        c.notify(key, parked);
                    }
                    continue;
                }
                Taken::Outbox => metrics.deliveries.inc(),
            }
            if c.outbox.over(cap) {
                c.cut_slow(key, parked);
                metrics.slow_consumers.inc();
                metrics.drops.inc();
            } else if !c.has(flags::DIRTY) {
                c.flags |= flags::DIRTY;
                dirty.push(key);
            }
        }
        !t.subs.is_empty()
    }

    /// The owner registered us for a topic: replay, then join live.
    fn on_subscribed(&mut self, ack: SubscribeAck) {
        let key = ConnKey::from_token(ack.reply.token);
        let idx = ack.reply.index as usize;
        let t = self.topics.entry(ack.topic.clone()).or_default();
        t.pending = t.pending.saturating_sub(1);
        if !ack.refused {
            t.registered = true;
            if t.head.epoch != ack.head.epoch || t.head.seq < ack.head.seq {
                t.head = ack.head;
            }
        }
        let Some(c) = self.conn(key) else {
            self.release(&ack.topic);
            self.send_deferred();
            return;
        };
        if ack.created {
            c.naming.charge();
        }
        let (closed, refused) = (c.has(flags::CLOSED), c.has(flags::REFUSED));
        let Some(sub) = c.sub.as_mut().filter(|_| !closed) else {
            self.release(&ack.topic);
            self.send_deferred();
            return;
        };
        if ack.refused {
            // The node keeps `max_topics`: the subscription is refused whole, with 503 (or,
            // on a WebSocket already open, a close).
            sub.pending_acks -= 1;
            sub.prelude.clear();
            c.flags |= flags::REFUSED;
            self.release(&ack.topic);
            self.send_deferred();
            self.notify(key);
            return;
        }
        sub.positions[idx] = ack.start;
        if let Some(gap) = ack.gap {
            sub.prelude.push_back(Prelude::Gap { idx, missed: gap.missed, resume_at: gap.resume_at });
        }
        if !ack.replay.is_empty() {
            sub.prelude.push_back(Prelude::Replay { idx, frames: ack.replay, next: 0 });
        }
        sub.pending_acks -= 1;
        let ready = sub.pending_acks == 0 && !refused;
        if ready {
            if sub.render_prelude(&mut c.outbox) == Taken::Held {
                c.flags |= flags::DATA;
            }
            if sub.rendering() {
                c.flags |= flags::RENDERING;
            }
            c.flags |= flags::READY;
        }
        if let Some(t) = self.topics.get_mut(&ack.topic) {
            t.subs.insert(key.to_token(), idx);
        }
        if ready {
            self.notify(key);
            self.mark_dirty(key);
        }
    }
}

/// The delivery task of one worker: takes in its `to_worker` inbox (fanning events out into
/// outboxes, handing publishers their cursors) and flushes the connections that got
/// something, in alternation: a bounded batch of messages, then a bounded chunk of
/// connections, then a turn for the rest of the worker.
///
/// Taking in never waits for a whole round of writes to finish. While events come faster than
/// 10 000 writes go out, a connection's frames pile up until its turn comes and leave in one
/// write; and publishers get their cursors between chunks, so a burst of publishes is taken
/// in at once rather than one round of writes each.
pub async fn run(shard: ShardRef) {
    let mesh = shard.borrow().mesh.clone();
    let id = shard.borrow().id;
    let inbox = &mesh.to_worker[id];
    let metrics = &mesh.metrics.workers[id];
    // Publish times of the events fanned out and not yet written everywhere, for the
    // latency histogram: recorded when the connections they reached have been flushed.
    let mut published_at: Vec<u64> = Vec::with_capacity(BATCH);
    loop {
        let (took, flushed, idle) = {
            let mut s = shard.borrow_mut();
            let mut took = 0;
            while took < BATCH {
                let Some(msg) = inbox.pop() else { break };
                match msg {
                    ToWorker::Event(f) => {
                        if s.deliver(&f) {
                            published_at.push(f.ts_micros);
                        }
                    }
                    msg => s.handle(msg),
                }
                took += 1;
            }
            let n = s.dirty.len().min(FLUSH_CHUNK);
            for i in 0..n {
                let key = s.dirty[i];
                s.flush(key);
            }
            s.dirty.drain(..n);
            (took, n, s.dirty.is_empty())
        };
        if !published_at.is_empty() && (idle || published_at.len() >= MAX_TIMED) {
            let now = crate::clock::now_micros();
            for ts in published_at.drain(..) {
                metrics.latency(std::time::Duration::from_micros(now.saturating_sub(ts)));
            }
        }
        if took == 0 && flushed == 0 {
            inbox.ready().await;
        } else {
            crate::shard::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_at_the_same_positions_share_one_id_chunk() {
        let mut memo = IdMemo::default();
        let at = [Cursor::new(1, 5), Cursor::new(2, 0)];
        let a = memo.id_chunk(&at, true);
        let b = memo.id_chunk(&at, true);
        assert_eq!(a.as_ptr(), b.as_ptr(), "the same bytes, not a second encoding");
        let c = memo.id_chunk(&[Cursor::new(1, 5), Cursor::new(2, 1)], true);
        assert_ne!(a, c);
        assert!(c.ends_with(b"id: 1-5,2-1\n\r\n"));
        let bare = memo.id_chunk(&[Cursor::new(1, 5), Cursor::new(2, 1)], false);
        assert_eq!(&bare[..], b"id: 1-5,2-1\n");
    }
}

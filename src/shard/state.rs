//! What one worker owns, and every operation on it in one `impl`: its connections (a slab
//! with generations), its index of local subscribers per topic (joining, leaving, fanning an
//! event out to each subscriber's outbox, flushing), and the publishes waiting for their
//! owner's reply.
//!
//! A worker is *registered* for a topic once the topic's owner has acknowledged it; from then
//! on the owner forwards every event of the topic to this worker, in order, so the index's
//! `head` is the topic's newest cursor as seen here. A subscriber joining a registered topic
//! live joins at once; anyone else (first subscriber, or a resume) asks the owner, and joins
//! when the acknowledgement — carrying the replay — comes back through the same ordered queue
//! as the events, so nothing is missed or delivered twice.
//!
//! A `Shard` lives on its worker's thread only, behind `Rc<RefCell<_>>`; no borrow of it is
//! ever held across an `.await`.

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use foldhash::HashMap;
use slab::Slab;

use crate::clock::Stamp;
use crate::config::Config;
use crate::cursor::Cursor;
use crate::cursor::Resume;
use crate::frames::Frame;
use crate::keys::{Generations, PublishKey, SubscriptionKey};
use crate::mesh::Mesh;
use crate::metrics::Transport;
use crate::proto::ws::frame::close_frame;
use crate::pubsub::msg::{Assigned, Refusal, ReplyTo, SubscribeAck, ToOwner, ToWorker};
use crate::pubsub::probe::{ProbePart, Via};
use crate::pubsub::topic::{occupancy_of, owner_of, shrink_if_sparse};
use crate::shard::conn::{Conn, ConnKey, Notices, Phase, TOO_MANY_TOPICS};
use crate::shard::outbox::Flushed;
use crate::shard::presence::Present;
use crate::shard::subscription::{Delivery, IdMemo, Item, LocalTopic, MAX_PRELUDE, Prelude, Subscription, Taken};
use crate::shard::unsubscribes::Unsubscribes;
use crate::shard::waitset::WaitSet;
use crate::shard::watching::Watching;

pub type ShardRef = Rc<RefCell<Shard>>;

/// Most connection slots reserved per worker at startup (the slab grows past it if needed).
const CONN_SLOTS_RESERVED: usize = 1 << 17;

/// A publish (or batch) waiting for its owners' cursors.
pub struct PendingPublish {
    generation: u32,
    pub cursors: smallvec::SmallVec<[Option<Result<Assigned, Refusal>>; 1]>,
    pub missing: usize,
    pub waker: Option<Waker>,
    /// Whoever waited for the cursors is gone (its connection closed, its task dropped): the
    /// slot is freed when the last cursor arrives.
    abandoned: bool,
}

pub struct Shard {
    pub id: usize,
    pub config: Arc<Config>,
    pub mesh: Arc<Mesh>,
    pub conns: Slab<Conn>,
    generations: Generations,
    pub topics: HashMap<Arc<str>, LocalTopic>,
    pub publishes: Slab<PendingPublish>,
    /// Connections with queued output to flush at the end of the current batch.
    pub dirty: Vec<ConnKey>,
    /// Unsubscribes owed to owners, sent as their inboxes have room.
    pub unsubscribes: Unsubscribes,
    /// Bytes of room held by request bodies being read, and the most there may be: this
    /// worker's share of `max_body_memory`.
    bodies: usize,
    body_budget: usize,
    /// The epoll set of parked connections, the notices for its watcher, and what each
    /// parked long-poll or WebSocket's next task will need (see `shard::parked`).
    pub parked: WaitSet,
    pub notices: Notices,
    pub kept: HashMap<ConnKey, Box<dyn Kept>>,
    /// The `$occupancy:` topics this worker owns that have subscribers (`shard::occupancy`).
    pub watching: Watching,
    /// Users' subscriptions here on topics under `presence_prefixes` (`shard::presence`).
    presence: Present,
}

/// What follows for a connection `Shard::each_conn` acted on (whoever looks after it was
/// told of any transition by the transition itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    Nothing,
    /// Its outbox is flushed.
    Flush,
}

/// What a parked connection's next task needs, kept while it waits without one (a held
/// poll's framing, a WebSocket's session). The connection layer implements it; the watcher
/// only calls it, when the connection has something to do.
pub trait Kept {
    /// Starts the task that takes the connection back, with its socket.
    fn resume(self: Box<Self>, shard: ShardRef, key: ConnKey, stream: monoio::net::TcpStream);
}

impl Shard {
    pub fn new(id: usize, config: Arc<Config>, mesh: Arc<Mesh>, parked: WaitSet) -> Shard {
        let slots = config.max_connections.div_ceil(config.workers).min(CONN_SLOTS_RESERVED);
        let body_budget = usize::try_from(config.max_body_memory / config.workers as u64).unwrap_or(usize::MAX);
        Shard {
            id,
            config,
            mesh,
            // Address space for the worker's share of connections, reserved up front: the
            // pages are touched only as connections arrive, and the slab never grows by
            // copying (which would leave the old copy's pages behind in the heap).
            conns: Slab::with_capacity(slots),
            generations: Generations::default(),
            topics: HashMap::default(),
            publishes: Slab::new(),
            dirty: Vec::new(),
            unsubscribes: Unsubscribes::default(),
            bodies: 0,
            body_budget,
            parked,
            notices: Notices::default(),
            kept: HashMap::default(),
            watching: Watching::default(),
            presence: Present::default(),
        }
    }

    /// Holds room for a request body of up to `bytes`, if the budget has it.
    pub fn reserve_body(&mut self, bytes: usize) -> bool {
        if self.bodies.saturating_add(bytes) > self.body_budget {
            return false;
        }
        self.bodies += bytes;
        true
    }

    /// Gives back room held for a body.
    pub fn release_body(&mut self, bytes: usize) {
        self.bodies = self.bodies.saturating_sub(bytes);
    }

    /// A slot for a publish of `n` events whose cursors are still to come.
    pub fn open_publish(&mut self, n: usize) -> PublishKey {
        let cursors = smallvec::smallvec![None; n];
        let generation = self.generations.take();
        let slot =
            self.publishes.insert(PendingPublish { generation, cursors, missing: n, waker: None, abandoned: false });
        PublishKey::new(slot, generation)
    }

    /// The publish `key` names, if it is still waiting for cursors or for its publisher.
    pub fn publish(&mut self, key: PublishKey) -> Option<&mut PendingPublish> {
        self.publishes.get_mut(key.slot()).filter(|p| p.generation == key.generation)
    }

    /// Frees the publish `key` names, every cursor in; its cursors, in order.
    pub fn close_publish(&mut self, key: PublishKey) -> Option<PendingPublish> {
        self.publish(key)?;
        Some(self.publishes.remove(key.slot()))
    }

    /// A cursor for the publish `key`, event `index`, arrived from its owner.
    pub fn on_published(&mut self, key: PublishKey, index: usize, cursor: Result<Assigned, Refusal>) {
        let slot = key.slot();
        let Some(p) = self.publish(key) else { return };
        let Some(c) = p.cursors.get_mut(index).filter(|c| c.is_none()) else { return };
        *c = Some(cursor);
        p.missing -= 1;
        if p.missing > 0 {
            return;
        }
        if p.abandoned {
            self.publishes.remove(slot);
        } else if let Some(w) = p.waker.take() {
            w.wake();
        }
    }

    /// Nobody waits for the publish `key` any more: free it now if every cursor is in, else
    /// when the last one arrives.
    pub fn abandon_publish(&mut self, key: PublishKey) {
        match self.publish(key) {
            Some(p) if p.missing > 0 => {
                p.abandoned = true;
                p.waker = None;
            }
            Some(_) => {
                self.publishes.remove(key.slot());
            }
            None => {}
        }
    }

    /// This worker's counters.
    pub fn metrics(&self) -> &crate::metrics::WorkerMetrics {
        &self.mesh.metrics.workers[self.id]
    }

    pub fn add_conn(&mut self, fd: RawFd) -> ConnKey {
        let generation = self.generations.take();
        let index = self.conns.insert(Conn::new(generation, fd));
        ConnKey::new(index, generation)
    }

    pub fn conn(&mut self, key: ConnKey) -> Option<&mut Conn> {
        self.conns.get_mut(key.index as usize).filter(|c| c.generation() == key.generation)
    }

    /// The connection that holds subscription `key`, if it still holds that one.
    fn subscriber(&self, key: SubscriptionKey) -> Option<ConnKey> {
        let c = self.conns.get(key.slot())?;
        c.sub.as_ref().filter(|s| s.serial == key.generation)?;
        Some(ConnKey::new(key.slot(), c.generation()))
    }

    /// The connection, the parked set (to notify whoever looks after it) and this worker's
    /// counters, borrowed together.
    fn conn_parts(&mut self, key: ConnKey) -> Option<(&mut Conn, &mut Notices, &crate::metrics::WorkerMetrics)> {
        let Shard { conns, notices, mesh, id, .. } = self;
        let c = conns.get_mut(key.index as usize).filter(|c| c.generation() == key.generation)?;
        Some((c, notices, &mesh.metrics.workers[*id]))
    }

    /// The connection is gone: out of its topics, out of the slab (a parked one's descriptor
    /// closed), out of the gauges.
    pub fn drop_conn(&mut self, key: ConnKey, doing: Transport) {
        self.leave(key);
        let Some(c) = self.conn(key) else { return };
        let parked = c.is_parked();
        // A parked connection's socket closes with it.
        self.conns.remove(key.index as usize);
        if parked && !self.kept.is_empty() {
            self.kept.remove(&key);
        }
        self.metrics().connection(doing, -1);
        self.mesh.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// The connection needs no owner's word (a WebSocket without a subscription): it is live.
    pub fn go_live(&mut self, key: ConnKey) {
        if let Some((c, notices, _)) = self.conn_parts(key) {
            c.go_live(key, notices);
        }
    }

    /// Ends the connection cleanly after what is queued (see `Conn::end`).
    pub fn end_conn(&mut self, key: ConnKey) {
        if let Some((c, notices, _)) = self.conn_parts(key) {
            c.end(key, notices);
        }
    }

    /// Tells whoever looks after the connection that it changed.
    pub fn notify(&mut self, key: ConnKey) {
        if let Some((c, notices, _)) = self.conn_parts(key) {
            c.notify(key, notices);
        }
    }

    /// Queues `bytes` for the connection and flushes. Output the peer provokes (pongs,
    /// replies, echoes) is capped like deliveries, but as a backlog: a reply is queued
    /// whatever its size while what is queued before it is within `max_pending_bytes`, so a
    /// peer that sends but never reads is cut like any slow consumer, while one large reply
    /// the peer asked for (a 16 MiB echo) is not a backlog. A connection that is ending takes
    /// nothing more: its last word is queued.
    pub fn send(&mut self, key: ConnKey, bytes: Bytes) {
        let cap = self.config.max_pending_bytes;
        let Some((c, notices, metrics)) = self.conn_parts(key) else { return };
        if c.is_ending() {
            return;
        }
        if c.outbox.over(cap) {
            c.cut_slow(key, notices, metrics, false);
            return;
        }
        c.outbox.push(bytes);
        self.flush(key);
    }

    /// Queues `key` for the end-of-batch flush.
    pub fn mark_dirty(&mut self, key: ConnKey) {
        if let Some(c) = self.conn(key)
            && !c.queued
        {
            c.queued = true;
            self.dirty.push(key);
        }
    }

    /// Flushes one connection now, unless its task is already waiting to.
    pub fn flush(&mut self, key: ConnKey) {
        let Some((c, notices, metrics)) = self.conn_parts(key) else { return };
        c.queued = false;
        if !c.may_write() {
            return;
        }
        loop {
            match c.outbox.flush(c.fd()) {
                Ok((n, done)) => {
                    if n > 0 {
                        c.last_write = Stamp::now();
                        metrics.bytes_written.add(n as u64);
                    }
                    if done == Flushed::Blocked {
                        c.block_writes(key, notices);
                        return;
                    }
                    // The socket took everything: a replay still to send is pulled now.
                    if c.phase() != Phase::Ending
                        && let Some(sub) = c.sub.as_mut().filter(|s| s.rendering())
                        && sub.render_more(&mut c.outbox)
                    {
                        continue;
                    }
                    if c.phase() == Phase::Ending {
                        // Its task (or the watcher) finishes the close once all is out.
                        c.notify(key, notices);
                    }
                    return;
                }
                Err(_) => {
                    c.close(key, notices);
                    return;
                }
            }
        }
    }

    /// Polls until `until` holds for the connection, registering the task's waker; answers
    /// its phase then (`Closed` once it is gone).
    pub fn poll_until(&mut self, key: ConnKey, until: impl Fn(&Conn) -> bool, cx: &mut Context<'_>) -> Poll<Phase> {
        match self.conn(key) {
            None => Poll::Ready(Phase::Closed),
            Some(c) => c.poll_until(until, cx),
        }
    }

    /// Puts the connection's subscription into the index. Topics this worker is registered
    /// for (and not resumed) are joined at once; for the others the returned requests must be
    /// sent to their owners. The connection goes live when the last one is answered.
    pub fn join(&mut self, key: ConnKey, mut sub: Subscription, from: &[Resume]) -> Vec<(usize, ToOwner)> {
        let n = sub.topics.len();
        sub.serial = self.generations.take();
        let Some(c) = self.conn(key) else { return Vec::new() };
        c.sub = Some(sub);
        let requests = self.attach(key, 0..n, from);
        // Listed as present as soon as the owner hears, not at the next tick.
        self.presence.send(&self.mesh, self.id);
        if let Some((c, notices, _)) = self.conn_parts(key)
            && c.sub.as_ref().is_some_and(|s| s.pending_acks == 0)
        {
            c.go_live(key, notices);
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
        user: Option<Arc<str>>,
    ) -> Vec<(usize, ToOwner)> {
        let kept = topics.iter().any(|t| self.config.keeps_presence(t));
        let Some(sub) = self.conn(key).and_then(|c| c.sub.as_mut()) else { return Vec::new() };
        if kept {
            sub.present_as(user);
        }
        let start = sub.topics.len();
        sub.positions.extend(std::iter::repeat_n(Cursor::default(), topics.len()));
        sub.topics.extend(topics);
        let end = sub.topics.len();
        sub.prelude.push_front(Prelude::Reply(reply));
        let requests = self.attach(key, start..end, from);
        self.presence.send(&self.mesh, self.id);
        if let Some(c) = self.conn(key)
            && let Some(sub) = c.sub.as_mut()
            && sub.pending_acks == 0
        {
            sub.render_prelude(&mut c.outbox);
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
            let kept = self.config.keeps_presence(name);
            let Some(sub) = self.conn(key).and_then(|c| c.sub.as_mut()) else { return missing };
            let Some(idx) = sub.topics.iter().position(|t| t == name) else {
                missing.push(name.clone());
                continue;
            };
            let user = sub.user().filter(|_| kept).cloned();
            sub.topics.swap_remove(idx);
            sub.positions.swap_remove(idx);
            let moved = sub.topics.get(idx).cloned();
            if let Some(user) = user {
                self.presence.depart(name, &user);
            }
            if let Some(t) = self.topics.get_mut(name) {
                t.subs.remove(token);
            }
            // The topic that took the freed place must be found there from now on.
            if let Some(moved) = moved
                && let Some(t) = self.topics.get_mut(&moved)
            {
                t.subs.reindex(token, idx);
            }
            self.release(name);
        }
        self.send_unsubscribes();
        missing
    }

    /// Joins `range` of the connection's topics (see `join`).
    fn attach(&mut self, key: ConnKey, range: std::ops::Range<usize>, from: &[Resume]) -> Vec<(usize, ToOwner)> {
        let mut requests = Vec::new();
        let (workers, id) = (self.mesh.workers, self.id);
        let Shard { conns, topics, unsubscribes, presence, config, .. } = self;
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
            unsubscribes.take_back(topic);
            if let Some(user) = sub.user()
                && config.keeps_presence(topic)
            {
                presence.arrive(topic, user);
            }
            // Live, or resuming from exactly the newest event seen here: nothing to replay,
            // so no need to ask the owner. Except live on an `$occupancy:` topic: its newest
            // value is given at once, and the owner has it.
            let live = *resume == Resume::Live && occupancy_of(topic).is_none();
            if t.registered && (live || resume.is_at(t.head)) {
                sub.positions[i] = t.head;
                t.subs.insert(key.to_token(), i);
                continue;
            }
            // Its starting position comes with the acknowledgement.
            t.pending += 1;
            sub.pending_acks += 1;
            let reply =
                ReplyTo { worker: id as u16, key: SubscriptionKey::new(key.slot(), sub.serial), index: i as u32 };
            let open_name = sub.names.made_up(topic);
            let msg = ToOwner::Subscribe { topic: topic.clone(), resume: resume.clone(), reply, open_name };
            requests.push((owner_of(topic, workers), msg));
        }
        requests
    }

    /// Takes the connection out of every topic it was in, and hands back its subscription.
    pub fn leave(&mut self, key: ConnKey) -> Option<Subscription> {
        let sub = self.conn(key).and_then(|c| c.sub.take())?;
        for topic in sub.topics.iter() {
            if let Some(t) = self.topics.get_mut(topic) {
                t.subs.remove(key.to_token());
            }
            if let Some(user) = sub.user()
                && self.config.keeps_presence(topic)
            {
                self.presence.depart(topic, user);
            }
            self.release(topic);
        }
        self.send_unsubscribes();
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
            self.unsubscribes.owe(owner_of(topic, self.mesh.workers), topic.clone());
        }
    }

    /// Gives back the room of a topic index that held far more topics than it does now
    /// (clients that named many topics and left): a map keeps its capacity otherwise.
    pub fn trim(&mut self) {
        shrink_if_sparse(&mut self.topics);
    }

    /// Sends the unsubscribes owed that fit in their owners' inboxes; the rest wait for the
    /// ticker.
    pub fn send_unsubscribes(&mut self) {
        self.unsubscribes.send(&self.mesh, self.id);
        self.presence.send(&self.mesh, self.id);
    }

    /// One message from an owner.
    pub fn handle(&mut self, msg: ToWorker) {
        match msg {
            ToWorker::Event(frame) => {
                self.deliver(&frame);
            }
            ToWorker::Published { reply, cursor } => self.on_published(reply.key, reply.index as usize, cursor),
            ToWorker::Subscribed(ack) => self.on_subscribed(*ack),
            ToWorker::Shed { delay_ms, except } => self.shed(delay_ms, &except),
            ToWorker::Count { topics, part } => {
                for (i, topic) in topics.iter().enumerate() {
                    self.count(i, topic, &part);
                }
            }
            ToWorker::Watched { meta } => self.watching.watch(meta),
            ToWorker::Unwatched { meta } => self.watching.unwatch(&meta),
        }
    }

    /// Counts the subscribers of `topic` (the `i`-th asked about) here by transport: a walk
    /// over its subscribers when asked, so nothing is counted on subscribing, leaving or
    /// delivering.
    fn count(&self, i: usize, topic: &str, part: &ProbePart) {
        let Some(t) = self.topics.get(topic) else { return };
        let mut by_via = [0; 3];
        for (token, _) in t.subs.iter() {
            let key = ConnKey::from_token(token);
            let conn = self.conns.get(key.index as usize).filter(|c| c.generation() == key.generation);
            if let Some(sub) = conn.and_then(|c| c.sub.as_ref()) {
                by_via[sub.delivery.via() as usize] += 1;
            }
        }
        for (via, n) in [Via::Sse, Via::Ws, Via::Poll].into_iter().zip(by_via) {
            part.count(i, via, n);
        }
    }

    /// Sends `retry: delay_ms` to every stream that may be shed and is not spared by `except`,
    /// ends it and closes it; its client comes back after the delay and resumes from its last
    /// id.
    fn shed(&mut self, delay_ms: u64, except: &[String]) {
        self.each_conn(|key, c, notices| {
            let Some(sub) = c.sub.as_ref() else { return Then::Nothing };
            let Some(groups) = sub.rare.as_ref().and_then(|r| r.shed_groups.as_ref()) else { return Then::Nothing };
            if groups.iter().any(|g| except.contains(g)) || c.phase() != Phase::Live {
                return Then::Nothing;
            }
            sub.sse_last_word(Some(delay_ms), &mut c.outbox);
            c.end(key, notices);
            Then::Flush
        });
    }

    /// Acts on every connection: `act` changes it (queues bytes, makes transitions, which
    /// tell whoever looks after it) and says whether its outbox is to be flushed, which
    /// happens here, for each, once the walk is over.
    pub fn each_conn(&mut self, mut act: impl FnMut(ConnKey, &mut Conn, &mut Notices) -> Then) {
        let mut flush = Vec::new();
        let Shard { conns, notices, .. } = self;
        for (i, c) in conns.iter_mut() {
            let key = ConnKey::new(i, c.generation());
            if act(key, c, notices) == Then::Flush {
                flush.push(key);
            }
        }
        for key in flush {
            self.flush(key);
        }
    }

    /// Appends `frame` to the outbox of every local subscriber of its topic; whether it has
    /// any here.
    pub fn deliver(&mut self, frame: &Arc<Frame>) -> bool {
        let metrics = &self.mesh.metrics.workers[self.id];
        let Shard { topics, conns, dirty, config, notices, .. } = self;
        let Some(t) = topics.get_mut(&frame.topic) else { return false };
        t.head = frame.cursor;
        let cap = config.max_pending_bytes;
        let mut ids = IdMemo::default();
        for (token, idx) in t.subs.iter() {
            let key = ConnKey::from_token(token);
            let Some(c) = conns.get_mut(key.index as usize) else { continue };
            if c.generation() != key.generation || !c.takes_events() {
                continue;
            }
            let Some(sub) = c.sub.as_mut() else { continue };
            // Behind what is still to be rendered: acknowledgements awaited, a replay.
            if sub.pending_acks > 0 || !sub.prelude.is_empty() {
                if sub.prelude.len() >= MAX_PRELUDE {
                    c.cut_slow(key, notices, metrics, true);
                } else {
                    sub.prelude.push_back(Prelude::Event { idx, frame: frame.clone() });
                }
                continue;
            }
            // One notice per poll, not per event: a parked poll's notices are queued.
            let first_held = matches!(&sub.delivery, Delivery::Held(h) if h.items.is_empty());
            match sub.take(Item::Event { idx, frame, replay: false }, &mut c.outbox, &mut ids) {
                Taken::Nothing => continue,
                Taken::Held => {
                    metrics.deliveries.inc();
                    if first_held {
                        c.notify(key, notices);
                    }
                    continue;
                }
                Taken::Outbox => metrics.deliveries.inc(),
            }
            if c.outbox.over(cap) {
                c.cut_slow(key, notices, metrics, true);
            } else if !c.queued {
                c.queued = true;
                dirty.push(key);
            }
        }
        !t.subs.is_empty()
    }

    /// The owner registered us for a topic: replay, then join live.
    fn on_subscribed(&mut self, ack: SubscribeAck) {
        let idx = ack.reply.index as usize;
        let t = self.topics.entry(ack.topic.clone()).or_default();
        t.pending = t.pending.saturating_sub(1);
        if !ack.refused {
            t.registered = true;
            if t.head.epoch != ack.head.epoch || t.head.seq < ack.head.seq {
                t.head = ack.head;
            }
        }
        // The subscription that asked, not whatever the connection holds now (a long-poll
        // answered meanwhile, and the next one begun on the same connection).
        let found = self.subscriber(ack.reply.key);
        let Some((key, (c, notices, _))) = found.and_then(|key| Some((key, self.conn_parts(key)?))) else {
            self.release(&ack.topic);
            self.send_unsubscribes();
            return;
        };
        if ack.created {
            c.naming.charge();
        }
        let phase = c.phase();
        let Some(sub) = c.sub.as_mut().filter(|_| phase != Phase::Closed) else {
            self.release(&ack.topic);
            self.send_unsubscribes();
            return;
        };
        if ack.refused {
            // The node keeps `max_topics`: the subscription is refused whole, with 503; a
            // WebSocket already open that asked for more topics is closed instead, as it
            // cannot stand as asked and an open socket has no status to answer with.
            sub.pending_acks -= 1;
            sub.prelude.clear();
            if phase == Phase::Live && c.websocket {
                c.outbox.push(close_frame(TOO_MANY_TOPICS.code(), "max_topics reached; try again later"));
                c.end(key, notices);
            } else {
                c.refuse(key, notices);
            }
            self.release(&ack.topic);
            self.send_unsubscribes();
            self.flush(key);
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
        // Nothing more is rendered for a connection that is ending (after its close frame) or
        // refused.
        let ready = sub.pending_acks == 0 && matches!(phase, Phase::Open | Phase::Live);
        if ready {
            sub.render_prelude(&mut c.outbox);
            c.go_live(key, notices);
        }
        if let Some(t) = self.topics.get_mut(&ack.topic) {
            t.subs.insert(key.to_token(), idx);
        }
        if ready {
            self.mark_dirty(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::waitset::WaitSet;

    fn ack(reply: ReplyTo<SubscriptionKey>, topic: Arc<str>) -> ToWorker {
        let c = Cursor::new(7, 0);
        ToWorker::Subscribed(Box::new(SubscribeAck {
            reply,
            topic,
            start: c,
            head: c,
            gap: None,
            replay: Vec::new(),
            created: false,
            refused: false,
        }))
    }

    #[test]
    fn an_owners_late_answer_never_lands_in_the_connections_next_subscription() {
        // A review: acknowledgements were addressed to the connection, so one for a long-poll
        // answered meanwhile reached the next poll on the connection, indexing its topics
        // with the old poll's (a panic past its end).
        let config = Arc::new(Config::default());
        let mesh = Arc::new(Mesh::new(1));
        let mut s = Shard::new(0, config, mesh, WaitSet::new().expect("an epoll set"));
        let key = s.add_conn(-1);
        let topics: Vec<Arc<str>> = (0..4).map(|i| format!("t{i}").into()).collect();
        let first = Subscription::new(topics.clone(), None, Delivery::Sse { chunked: true });
        let asked = s.join(key, first, &vec![Resume::Live; 4]);
        assert_eq!(asked.len(), 4, "every topic is asked of its owner");
        let late: Vec<ReplyTo<SubscriptionKey>> = asked
            .iter()
            .map(|(_, m)| match m {
                ToOwner::Subscribe { reply, .. } => *reply,
                other => panic!("{other:?}"),
            })
            .collect();
        s.leave(key);
        let next = Subscription::new(vec!["other".into()], None, Delivery::Sse { chunked: true });
        s.join(key, next, &[Resume::Live]);
        for (reply, topic) in late.into_iter().zip(topics) {
            s.handle(ack(reply, topic));
        }
        let sub = s.conn(key).and_then(|c| c.sub.as_ref()).expect("the next subscription");
        assert_eq!(sub.pending_acks, 1, "still waiting for its own owner");
        assert_eq!(sub.positions.len(), 1);
        assert!(s.topics.get("t3").is_none_or(|t| t.subs.is_empty()), "the old topics are not joined");
    }
}

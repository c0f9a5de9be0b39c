//! What one worker owns: its connections (a slab with generations), its index of local
//! subscribers per topic, and the publishes waiting for their owner's reply.
//!
//! A `Shard` lives on its worker's thread only, behind `Rc<RefCell<_>>`; no borrow of it is
//! ever held across an `.await`.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
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
use crate::mesh::Mesh;
use crate::metrics::Transport;
use crate::pubsub::msg::{Refusal, ToOwner};
use crate::shard::local::{Delivery, LocalTopic, Subscription};
use crate::shard::outbox::{Flushed, Outbox};
use crate::shard::parked::Parked;

pub type ShardRef = Rc<RefCell<Shard>>;

/// The close code a WebSocket cut as a slow consumer is sent.
pub const SLOW_CLOSE: crate::proto::ws::CloseCode = crate::proto::ws::CloseCode::Policy;

/// Most connection slots reserved per worker at startup (the slab grows past it if needed).
const CONN_SLOTS_RESERVED: usize = 1 << 17;

/// A connection's slab index plus the generation it was given, so a key held by a message
/// in flight can never reach a later connection that reuses the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub index: u32,
    pub generation: u32,
}

impl ConnKey {
    pub fn to_token(self) -> u64 {
        u64::from(self.index) << 32 | u64::from(self.generation)
    }
    pub fn from_token(t: u64) -> ConnKey {
        ConnKey { index: (t >> 32) as u32, generation: t as u32 }
    }
}

/// Connection state bits.
pub mod flags {
    /// Queued in the shard's dirty list for the next flush.
    pub const DIRTY: u16 = 1;
    /// A stream whose head may go out: every topic is registered with its owner.
    pub const READY: u16 = 2;
    /// The socket buffer is full; the connection's task (or the parked-stream watcher)
    /// waits for writability.
    pub const WANT_WRITE: u16 = 4;
    /// Must close now: slow consumer, write error.
    pub const CLOSED: u16 = 8;
    /// Ending cleanly: flush what is queued (the stream's end included), then close.
    pub const CLOSING: u16 = 16;
    /// A held long-poll has collected something to answer with.
    pub const DATA: u16 = 32;
    /// A held long-poll reached its timeout.
    pub const EXPIRED: u16 = 64;
    /// The connection speaks WebSocket (with or without a subscription).
    pub const WEBSOCKET: u16 = 128;
    /// A topic owner refused the subscription (the node keeps `max_topics`): it is answered
    /// with 503, not opened.
    pub const REFUSED: u16 = 256;
    /// The subscription's prelude still has something to render once the outbox drains (a
    /// replay being pulled): a flag, so that flushing everyone else never looks.
    pub const RENDERING: u16 = 512;
}

pub struct Conn {
    generation: u32,
    /// The socket, for writes from the fanout. While a task serves the connection the
    /// task's stream owns it; while it is parked, `parked` does.
    pub fd: RawFd,
    /// Set while the connection has no task (see `shard::parked`): its socket, owned here
    /// and closed with the connection.
    parked: Option<OwnedFd>,
    pub outbox: Outbox,
    pub flags: u16,
    waker: Option<Waker>,
    pub last_write: Stamp,
    /// When the peer last sent something (WebSocket liveness).
    pub last_read: Stamp,
    /// How fast it may name topics that did not exist.
    pub naming: Naming,
    /// Set once the connection has become a stream. Inline, not boxed: streams are most
    /// connections, and their long-lived state belongs in the slab, not scattered through
    /// the heap between the request-phase allocations that come and go.
    pub sub: Option<Subscription>,
}

impl Conn {
    pub fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }

    /// What the connection counts as in the connections gauge once it is a stream, a
    /// WebSocket or a held poll (parked connections are one of those).
    pub fn transport(&self) -> Transport {
        match self.sub.as_ref().map(|s| &s.delivery) {
            _ if self.has(flags::WEBSOCKET) => Transport::Ws,
            Some(Delivery::Held(_)) => Transport::LongPoll,
            _ => Transport::Sse,
        }
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The connection's task hands it to the parked-stream watcher, with the descriptor it
    /// now owns. The task's waker goes: a waker keeps its (finished) task's memory alive.
    pub fn park(&mut self, fd: OwnedFd) {
        self.fd = fd.as_raw_fd();
        self.parked = Some(fd);
        self.waker = None;
    }

    /// Whether the connection has no task (the watcher looks after it).
    pub fn is_parked(&self) -> bool {
        self.parked.is_some()
    }

    /// Takes the socket back for a task to own.
    pub fn unpark(&mut self) -> Option<OwnedFd> {
        self.parked.take()
    }

    /// Cuts a connection that fell behind (its queue passed `max_pending_bytes`) rather than
    /// let its queue grow; its client can resume from its last id. A WebSocket gets a last
    /// word — close 1008 "slow consumer", after the frame it has begun to receive, if any —
    /// and the close deadline to take it; anything else is closed at once.
    pub fn cut_slow(&mut self, key: ConnKey, parked: &mut Parked) {
        if self.has(flags::WEBSOCKET) {
            self.outbox.replace_with(crate::proto::ws::frame::close_frame(SLOW_CLOSE.code(), "slow consumer"));
            self.flags |= flags::CLOSING;
        } else {
            self.flags |= flags::CLOSED;
            self.outbox.clear();
        }
        self.notify(key, parked);
    }

    /// Tells whoever looks after the connection that its flags changed: its task, or the
    /// parked-stream watcher.
    pub fn notify(&mut self, key: ConnKey, parked: &mut Parked) {
        if self.is_parked() {
            parked.notify(key);
        } else if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// How fast a connection may name topics that did not exist — each costs a topic's memory
/// until it is forgotten, and anyone may name topics by subscribing: a bucket of
/// `NAMING_BURST` names, refilled at `NAMING_RATE` a second, charged for each topic an owner
/// made for the connection. Past it, the connection's next subscriptions are refused (429)
/// until the bucket has refilled.
#[derive(Debug, Clone, Copy)]
pub struct Naming {
    tokens: f32,
    at: Stamp,
}

/// New topic names a connection may make at once…
pub const NAMING_BURST: f32 = 256.0;
/// …and a second after that.
pub const NAMING_RATE: f32 = 64.0;

impl Naming {
    fn new() -> Naming {
        Naming { tokens: NAMING_BURST, at: Stamp::now() }
    }

    /// Whether the connection may name topics now; when not, how long until it may.
    pub fn allows(&mut self, now: Stamp) -> Result<(), std::time::Duration> {
        let refill = now.since(self.at).as_secs_f32() * NAMING_RATE;
        self.tokens = (self.tokens + refill).min(NAMING_BURST);
        self.at = now;
        if self.tokens > 0.0 {
            Ok(())
        } else {
            Err(std::time::Duration::from_secs_f32((1.0 - self.tokens) / NAMING_RATE))
        }
    }

    /// An owner made a topic for this connection.
    pub fn charge(&mut self) {
        self.tokens -= 1.0;
    }
}

/// A publish (or batch) waiting for its owners' cursors.
pub struct PendingPublish {
    pub cursors: smallvec::SmallVec<[Option<Result<Cursor, Refusal>>; 1]>,
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
    next_gen: u32,
    pub topics: HashMap<Arc<str>, LocalTopic>,
    pub publishes: Slab<PendingPublish>,
    /// Connections with queued output to flush at the end of the current batch.
    pub dirty: Vec<ConnKey>,
    /// Unsubscribes that found the owner's inbox full; retried by the ticker.
    pub deferred: Vec<ToOwner>,
    /// Bytes of room held by request bodies being read, and the most there may be: this
    /// worker's share of `max_body_memory`.
    bodies: usize,
    body_budget: usize,
    pub parked: Parked,
}

impl Shard {
    pub fn new(id: usize, config: Arc<Config>, mesh: Arc<Mesh>, parked: Parked) -> Shard {
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
            next_gen: 0,
            topics: HashMap::default(),
            publishes: Slab::new(),
            dirty: Vec::new(),
            deferred: Vec::new(),
            bodies: 0,
            body_budget,
            parked,
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
    pub fn open_publish(&mut self, n: usize) -> usize {
        let cursors = smallvec::smallvec![None; n];
        self.publishes.insert(PendingPublish { cursors, missing: n, waker: None, abandoned: false })
    }

    /// A cursor for the publish in slot `slot`, event `index`, arrived from its owner.
    pub fn on_published(&mut self, slot: usize, index: usize, cursor: Result<Cursor, Refusal>) {
        let Some(p) = self.publishes.get_mut(slot) else { return };
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

    /// Nobody waits for the publish in `slot` any more: free it now if every cursor is in,
    /// else when the last one arrives.
    pub fn abandon_publish(&mut self, slot: usize) {
        match self.publishes.get_mut(slot) {
            Some(p) if p.missing > 0 => {
                p.abandoned = true;
                p.waker = None;
            }
            Some(_) => {
                self.publishes.remove(slot);
            }
            None => {}
        }
    }

    /// This worker's counters.
    pub fn metrics(&self) -> &crate::metrics::WorkerMetrics {
        &self.mesh.metrics.workers[self.id]
    }

    pub fn add_conn(&mut self, fd: RawFd) -> ConnKey {
        self.next_gen = self.next_gen.wrapping_add(1);
        let generation = self.next_gen;
        let index = self.conns.insert(Conn {
            generation,
            fd,
            parked: None,
            outbox: Outbox::default(),
            flags: 0,
            waker: None,
            last_write: Stamp::now(),
            last_read: Stamp::now(),
            naming: Naming::new(),
            sub: None,
        });
        ConnKey { index: index as u32, generation }
    }

    pub fn conn(&mut self, key: ConnKey) -> Option<&mut Conn> {
        self.conns.get_mut(key.index as usize).filter(|c| c.generation == key.generation)
    }

    /// The connection, the parked set (to notify whoever looks after it) and this worker's
    /// counters, borrowed together.
    fn conn_parts(&mut self, key: ConnKey) -> Option<(&mut Conn, &mut Parked, &crate::metrics::WorkerMetrics)> {
        let Shard { conns, parked, mesh, id, .. } = self;
        let c = conns.get_mut(key.index as usize).filter(|c| c.generation == key.generation)?;
        Some((c, parked, &mesh.metrics.workers[*id]))
    }

    /// The connection is gone: out of its topics, out of the slab (a parked one's descriptor
    /// closed), out of the gauges.
    pub fn drop_conn(&mut self, key: ConnKey, doing: Transport) {
        self.leave(key);
        let Some(c) = self.conn(key) else { return };
        let parked = c.is_parked();
        // A parked connection's socket closes with it.
        self.conns.remove(key.index as usize);
        if parked {
            self.parked.forget(key);
        }
        self.metrics().connection(doing, -1);
        self.mesh.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Tells whoever looks after the connection that its flags changed.
    pub fn notify(&mut self, key: ConnKey) {
        if let Some((c, parked, _)) = self.conn_parts(key) {
            c.notify(key, parked);
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
        let Some((c, parked, metrics)) = self.conn_parts(key) else { return };
        if c.has(flags::CLOSED | flags::CLOSING) {
            return;
        }
        if c.outbox.over(cap) {
            c.cut_slow(key, parked);
            metrics.slow_consumers.inc();
            return;
        }
        c.outbox.push(bytes);
        self.flush(key);
    }

    /// Queues `key` for the end-of-batch flush.
    pub fn mark_dirty(&mut self, key: ConnKey) {
        if let Some(c) = self.conn(key)
            && !c.has(flags::DIRTY)
        {
            c.flags |= flags::DIRTY;
            self.dirty.push(key);
        }
    }

    /// Flushes one connection now, unless its task is already waiting to.
    pub fn flush(&mut self, key: ConnKey) {
        let Some((c, parked, metrics)) = self.conn_parts(key) else { return };
        c.flags &= !flags::DIRTY;
        if c.has(flags::WANT_WRITE | flags::CLOSED) || (c.sub.is_some() && !c.has(flags::READY)) {
            return;
        }
        loop {
            match c.outbox.flush(c.fd) {
                Ok((n, done)) => {
                    if n > 0 {
                        c.last_write = Stamp::now();
                        metrics.bytes_written.add(n as u64);
                    }
                    if done == Flushed::Blocked {
                        c.flags |= flags::WANT_WRITE;
                        c.notify(key, parked);
                        return;
                    }
                    // The socket took everything: a replay still to send is pulled now.
                    if c.has(flags::RENDERING) && !c.has(flags::CLOSING) {
                        let more =
                            c.sub.as_mut().filter(|s| s.rendering()).is_some_and(|s| s.render_more(&mut c.outbox));
                        if !c.sub.as_ref().is_some_and(|s| s.rendering()) {
                            c.flags &= !flags::RENDERING;
                        }
                        if more {
                            continue;
                        }
                    }
                    if c.has(flags::CLOSING) {
                        c.notify(key, parked);
                    }
                    return;
                }
                Err(_) => {
                    c.flags |= flags::CLOSED;
                    c.outbox.clear();
                    c.notify(key, parked);
                    return;
                }
            }
        }
    }

    /// Polls for any of `wanted` flags on the connection, registering the task's waker.
    pub fn poll_flags(&mut self, key: ConnKey, wanted: u16, cx: &mut Context<'_>) -> Poll<u16> {
        match self.conn(key) {
            None => Poll::Ready(flags::CLOSED),
            Some(c) if c.flags & wanted != 0 => Poll::Ready(c.flags),
            Some(c) => {
                if !c.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    c.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naming_new_topics_is_limited_per_connection() {
        let mut n = Naming::new();
        let t0 = Stamp::now();
        for _ in 0..NAMING_BURST as usize {
            assert!(n.allows(t0).is_ok());
            n.charge();
        }
        let wait = n.allows(t0).expect_err("the burst is spent");
        assert!(wait <= std::time::Duration::from_millis(100), "{wait:?}");
        let later = Stamp::at(std::time::Instant::now() + std::time::Duration::from_secs(1));
        assert!(n.allows(later).is_ok(), "refilled");
    }

    #[test]
    fn sizes_that_every_connection_pays() {
        // `cargo test sizes -- --nocapture` shows what an idle stream's slab entry costs; a
        // parked SSE stream costs this plus its place in its topics' indexes (README, M1).
        println!("Conn: {} bytes, Subscription: {} bytes", size_of::<Conn>(), size_of::<Subscription>());
        assert!(size_of::<Conn>() <= 288, "the slab entry every connection pays grew");
    }
}

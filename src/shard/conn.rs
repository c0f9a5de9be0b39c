//! One connection's entry in its worker's slab: its socket, its outbox, its flags, its
//! subscription once it is a stream, and how whoever looks after it (its task, or the
//! parked-connection watcher) is told that something changed.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::task::{Context, Poll, Waker};

use crate::clock::Stamp;
use crate::metrics::{Transport, WorkerMetrics};
use crate::shard::outbox::Outbox;
use crate::shard::subscription::{Delivery, Subscription};

/// The close code a WebSocket cut as a slow consumer is sent.
pub const SLOW_CLOSE: crate::proto::ws::CloseCode = crate::proto::ws::CloseCode::Policy;

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
    /// A new connection (generation `generation`) on socket `fd`, served by a task.
    pub fn new(generation: u32, fd: RawFd) -> Conn {
        Conn {
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
        }
    }

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
    pub fn cut_slow(&mut self, key: ConnKey, notices: &mut Notices, metrics: &WorkerMetrics, dropped: bool) {
        metrics.slow_consumers.inc();
        if dropped {
            metrics.drops.inc();
        }
        if self.has(flags::WEBSOCKET) {
            self.outbox.replace_with(crate::proto::ws::frame::close_frame(SLOW_CLOSE.code(), "slow consumer"));
            self.flags |= flags::CLOSING;
        } else {
            self.flags |= flags::CLOSED;
            self.outbox.clear();
        }
        self.notify(key, notices);
    }

    /// Tells whoever looks after the connection that its flags changed: its task, or the
    /// parked-stream watcher.
    pub fn notify(&mut self, key: ConnKey, notices: &mut Notices) {
        if self.is_parked() {
            notices.push(key);
        } else if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Polls for any of `wanted` flags, registering the task's waker.
    pub fn poll_flags(&mut self, wanted: u16, cx: &mut Context<'_>) -> Poll<u16> {
        if self.flags & wanted != 0 {
            return Poll::Ready(self.flags);
        }
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
        Poll::Pending
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

/// Parked connections whose flags changed since the watcher last looked, and the watcher's
/// waker.
#[derive(Default)]
pub struct Notices {
    pub keys: Vec<ConnKey>,
    pub waker: Option<Waker>,
}

impl Notices {
    /// The flags of parked connection `key` changed: the watcher looks at it next.
    pub fn push(&mut self, key: ConnKey) {
        self.keys.push(key);
        if let Some(w) = self.waker.take() {
            w.wake();
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

//! One connection's entry in its worker's slab: who owns its socket, its phase and the
//! transitions between phases, its outbox, its subscription once it is a stream, and how
//! whoever looks after it (its task, or the parked-connection watcher) is told that something
//! changed.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::task::{Context, Poll, Waker};

use crate::clock::Stamp;
use crate::metrics::{Transport, WorkerMetrics};
use crate::shard::outbox::Outbox;
use crate::shard::subscription::{Delivery, Subscription};

/// The close code a WebSocket cut as a slow consumer is sent.
pub const SLOW_CLOSE: crate::proto::ws::CloseCode = crate::proto::ws::CloseCode::Policy;
/// The close code a WebSocket gets when an owner refuses a topic it asked to add (the node
/// keeps `max_topics`): an open socket has no status to answer with.
pub const TOO_MANY_TOPICS: crate::proto::ws::CloseCode = crate::proto::ws::CloseCode::TryAgainLater;

pub use crate::keys::ConnKey;

/// Where a connection is in its life. A connection starts `Open` (serving requests, or
/// waiting for its subscription's owners), becomes `Live` once every owner has registered its
/// subscription (or, a WebSocket without one, once upgraded), and ends `Ending` (what is queued
/// goes out, then it closes) or `Closed` (at once). `Refused` stands for a subscription an
/// owner would not take; a held poll answered goes back to `Open` for the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading or answering requests; or a subscription waiting for its owners, whose head
    /// may not go out yet.
    Open,
    /// A stream, WebSocket or held poll registered everywhere: its head may go out, events
    /// flow to it.
    Live,
    /// A topic owner refused the subscription (the node keeps `max_topics`): it is answered
    /// with 503, not opened.
    Refused,
    /// Ending cleanly, having been live: flush what is queued (its last word included), then
    /// close. A held poll in this phase is answered now, and the connection closes after.
    Ending,
    /// Must close now: slow consumer, write error, peer gone, or the stop of a connection
    /// that never went live.
    Closed,
}

/// Who owns the connection's socket. While a task serves the connection, the task's stream
/// owns it and the slab only borrows its number for the fanout's writes; while the
/// connection is parked (no task, see `shard::parked`), the slab owns it and closes it with
/// the connection.
#[derive(Debug)]
enum Socket {
    Served(RawFd),
    Parked(OwnedFd),
}

pub struct Conn {
    generation: u32,
    socket: Socket,
    phase: Phase,
    /// The socket buffer is full: its task (or the parked-connection watcher) waits for
    /// writability, and nothing is written until then.
    write_blocked: bool,
    /// In the shard's dirty list for the next flush.
    pub queued: bool,
    /// It speaks WebSocket (with or without a subscription).
    pub websocket: bool,
    pub outbox: Outbox,
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
            socket: Socket::Served(fd),
            phase: Phase::Open,
            write_blocked: false,
            queued: false,
            websocket: false,
            outbox: Outbox::default(),
            waker: None,
            last_write: Stamp::now(),
            last_read: Stamp::now(),
            naming: Naming::new(),
            sub: None,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether it is ending or closed: it takes nothing more.
    pub fn is_ending(&self) -> bool {
        matches!(self.phase, Phase::Ending | Phase::Closed)
    }

    /// Whether events may still go to it: not ending, and not refused (its task answers 503
    /// and closes it).
    pub fn takes_events(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::Live)
    }

    /// Whether the socket buffer filled up and writes wait for writability.
    pub fn write_blocked(&self) -> bool {
        self.write_blocked
    }

    /// Whether its outbox may be written now: not blocked, not closed, and not a subscription
    /// whose head must wait for its owners.
    pub fn may_write(&self) -> bool {
        !self.write_blocked
            && self.phase != Phase::Closed
            && !(self.sub.is_some() && matches!(self.phase, Phase::Open | Phase::Refused))
    }

    /// The socket's number, for writes and for the parked set.
    pub fn fd(&self) -> RawFd {
        match &self.socket {
            Socket::Served(fd) => *fd,
            Socket::Parked(fd) => fd.as_raw_fd(),
        }
    }

    /// What the connection counts as in the connections gauge once it is a stream, a
    /// WebSocket or a held poll (parked connections are one of those).
    pub fn transport(&self) -> Transport {
        match self.sub.as_ref().map(|s| &s.delivery) {
            _ if self.websocket => Transport::Ws,
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
        self.socket = Socket::Parked(fd);
        self.waker = None;
    }

    /// Whether the connection has no task (the watcher looks after it).
    pub fn is_parked(&self) -> bool {
        matches!(self.socket, Socket::Parked(_))
    }

    /// Takes the socket back for a task to own.
    pub fn unpark(&mut self) -> Option<OwnedFd> {
        let raw = self.fd();
        match std::mem::replace(&mut self.socket, Socket::Served(raw)) {
            Socket::Parked(fd) => Some(fd),
            Socket::Served(_) => None,
        }
    }

    // Transitions. Each tells whoever looks after the connection (its task, or the parked
    // watcher) that it changed; flushing is the caller's, who may have more to queue first.

    /// Every owner has registered its subscription (or it needs none): its head may go out.
    /// For a live WebSocket that asked for more topics, the addition is complete: its task is
    /// told all the same.
    pub fn go_live(&mut self, key: ConnKey, notices: &mut Notices) {
        if matches!(self.phase, Phase::Open | Phase::Live) {
            self.phase = Phase::Live;
            self.notify(key, notices);
        }
    }

    /// An owner refused its subscription.
    pub fn refuse(&mut self, key: ConnKey, notices: &mut Notices) {
        if self.phase == Phase::Open {
            self.phase = Phase::Refused;
            self.notify(key, notices);
        }
    }

    /// Ends it cleanly after what is queued, if it went live; a connection that never did has
    /// nothing to finish and closes now. A refused one keeps its answer (503) to give.
    pub fn end(&mut self, key: ConnKey, notices: &mut Notices) {
        match self.phase {
            Phase::Live => self.phase = Phase::Ending,
            Phase::Ending | Phase::Closed | Phase::Refused => return,
            Phase::Open => {
                self.phase = Phase::Closed;
                self.outbox.clear();
            }
        }
        self.notify(key, notices);
    }

    /// Closes it now; what is queued is dropped. A refused one keeps its answer (503) to give:
    /// its task answers it and closes the connection.
    pub fn close(&mut self, key: ConnKey, notices: &mut Notices) {
        if !matches!(self.phase, Phase::Closed | Phase::Refused) {
            self.phase = Phase::Closed;
            self.outbox.clear();
            self.notify(key, notices);
        }
    }

    /// A held poll answered: the connection reads its next request (or, ending, closes).
    pub fn answered(&mut self) {
        if matches!(self.phase, Phase::Live | Phase::Refused) {
            self.phase = Phase::Open;
        }
    }

    /// The socket took less than was queued: writes wait for writability.
    pub fn block_writes(&mut self, key: ConnKey, notices: &mut Notices) {
        self.write_blocked = true;
        self.notify(key, notices);
    }

    /// The socket takes bytes again (the caller flushes).
    pub fn unblock_writes(&mut self) {
        self.write_blocked = false;
    }

    /// A held poll is due: answered now with what it has (its timeout, its token's expiry).
    pub fn poll_due(&mut self, key: ConnKey, notices: &mut Notices) {
        if let Some(Delivery::Held(held)) = self.sub.as_mut().map(|s| &mut s.delivery)
            && !held.due
        {
            held.due = true;
            self.notify(key, notices);
        }
    }

    /// Whether a held poll has something to answer with, or is due.
    pub fn poll_answerable(&self) -> bool {
        matches!(self.sub.as_ref().map(|s| &s.delivery), Some(Delivery::Held(h)) if h.due || !h.items.is_empty())
    }

    /// Cuts a connection that fell behind (its queue passed `max_pending_bytes`) rather than
    /// let its queue grow; its client can resume from its last id. A live WebSocket gets a
    /// last word — close 1008 "slow consumer", after the frame it has begun to receive, if
    /// any — and the close deadline to take it; anything else is closed at once.
    pub fn cut_slow(&mut self, key: ConnKey, notices: &mut Notices, metrics: &WorkerMetrics, dropped: bool) {
        metrics.slow_consumers.inc();
        if dropped {
            metrics.drops.inc();
        }
        if self.websocket && self.phase == Phase::Live {
            self.outbox.replace_with(crate::proto::ws::frame::close_frame(SLOW_CLOSE.code(), "slow consumer"));
            self.end(key, notices);
        } else {
            self.close(key, notices);
        }
    }

    /// Tells whoever looks after the connection that it changed: its task, or the
    /// parked-stream watcher.
    pub fn notify(&mut self, key: ConnKey, notices: &mut Notices) {
        if self.is_parked() {
            notices.push(key);
        } else if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Polls until `until` holds for the connection, registering the task's waker; answers
    /// its phase then.
    pub fn poll_until(&mut self, until: impl Fn(&Conn) -> bool, cx: &mut Context<'_>) -> Poll<Phase> {
        if until(self) {
            return Poll::Ready(self.phase);
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

/// Parked connections that changed since the watcher last looked, and the watcher's waker.
#[derive(Default)]
pub struct Notices {
    pub keys: Vec<ConnKey>,
    pub waker: Option<Waker>,
}

impl Notices {
    /// Parked connection `key` changed: the watcher looks at it next.
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
    fn phases_move_only_forward_and_tell_whoever_looks_after_the_connection() {
        let key = ConnKey::new(0, 1);
        let mut n = Notices::default();
        // A connection that never went live has nothing to finish: ending it closes it.
        let mut c = Conn::new(1, -1);
        c.outbox.push(bytes::Bytes::from_static(b"head"));
        c.end(key, &mut n);
        assert_eq!(c.phase(), Phase::Closed);
        assert!(c.outbox.is_empty(), "nothing queued goes out of a connection that never went live");
        c.go_live(key, &mut n);
        assert_eq!(c.phase(), Phase::Closed, "closed is final");

        // A live one ends after what is queued; ending twice changes nothing.
        let mut c = Conn::new(1, -1);
        c.go_live(key, &mut n);
        c.outbox.push(bytes::Bytes::from_static(b"last word"));
        c.end(key, &mut n);
        assert_eq!(c.phase(), Phase::Ending);
        assert!(!c.outbox.is_empty());
        c.answered();
        assert_eq!(c.phase(), Phase::Ending, "an ending connection stays ending after its answer");
        c.close(key, &mut n);
        assert_eq!(c.phase(), Phase::Closed);

        // A refused subscription never goes live; an answered poll reads its next request.
        let mut c = Conn::new(1, -1);
        c.refuse(key, &mut n);
        c.go_live(key, &mut n);
        assert_eq!(c.phase(), Phase::Refused);
        // Cut or stopped meanwhile, it still has its 503 to give (a review found it dropped
        // without an answer).
        c.close(key, &mut n);
        c.end(key, &mut n);
        assert_eq!(c.phase(), Phase::Refused);
        assert!(!c.takes_events());
        c.answered();
        assert_eq!(c.phase(), Phase::Open);
        // Transitions of a connection with a task wake the task, not the parked watcher.
        assert!(n.keys.is_empty());
    }

    #[test]
    fn a_parked_connection_owns_its_socket_until_a_task_takes_it_back() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let fd = OwnedFd::from(a);
        let raw = fd.as_raw_fd();
        let key = ConnKey::new(3, 7);
        let mut c = Conn::new(7, raw);
        assert!(!c.is_parked() && c.unpark().is_none(), "a served connection owns nothing");
        c.park(fd);
        assert!(c.is_parked());
        assert_eq!(c.fd(), raw);
        let mut n = Notices::default();
        c.block_writes(key, &mut n);
        assert_eq!(n.keys, vec![key], "a parked connection's change is a notice for the watcher");
        let back = c.unpark().expect("the parked socket");
        assert_eq!(back.as_raw_fd(), raw);
        assert!(!c.is_parked());
        assert_eq!(c.fd(), raw, "the task's stream owns it now; the slab still writes to it");
    }

    #[test]
    fn sizes_that_every_connection_pays() {
        // `cargo test sizes -- --nocapture` shows what an idle stream's slab entry costs; a
        // parked SSE stream costs this plus its place in its topics' indexes (README, M1).
        println!("Conn: {} bytes, Subscription: {} bytes", size_of::<Conn>(), size_of::<Subscription>());
        assert!(size_of::<Conn>() <= 288, "the slab entry every connection pays grew");
    }
}

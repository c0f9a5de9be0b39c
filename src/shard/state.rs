//! What one worker owns: its connections (a slab with generations), its index of local
//! subscribers per topic, and the publishes waiting for their owner's reply.
//!
//! A `Shard` lives on its worker's thread only, behind `Rc<RefCell<_>>`; no borrow of it is
//! ever held across an `.await`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use slab::Slab;

use crate::config::Config;
use crate::conn::outbox::{Flushed, Outbox};
use crate::mesh::Mesh;
use crate::pubsub::cursor::Cursor;
use crate::pubsub::local::{LocalTopic, Subscription};
use crate::pubsub::msg::ToOwner;

pub type ShardRef = Rc<RefCell<Shard>>;

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
    pub const DIRTY: u8 = 1;
    /// A stream whose head may go out: every topic is registered with its owner.
    pub const READY: u8 = 2;
    /// The socket buffer is full; the connection task waits for writability.
    pub const WANT_WRITE: u8 = 4;
    /// Must close now: slow consumer, write error.
    pub const CLOSED: u8 = 8;
    /// Ending cleanly: flush what is queued (the stream's end included), then close.
    pub const CLOSING: u8 = 16;
    /// A held long-poll has collected something to answer with.
    pub const DATA: u8 = 32;
    /// A held long-poll reached its timeout.
    pub const EXPIRED: u8 = 64;
    /// The connection speaks WebSocket (with or without a subscription).
    pub const WEBSOCKET: u8 = 128;
}

pub struct Conn {
    generation: u32,
    pub fd: RawFd,
    pub outbox: Outbox,
    pub flags: u8,
    waker: Option<Waker>,
    pub last_write: Instant,
    /// When the peer last sent something (WebSocket liveness).
    pub last_read: Instant,
    /// Set once the connection has become a stream.
    pub sub: Option<Box<Subscription>>,
}

impl Conn {
    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// A publish (or batch) waiting for its owners' cursors.
pub struct PendingPublish {
    pub cursors: Vec<Option<Cursor>>,
    pub missing: usize,
    pub waker: Option<Waker>,
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
}

impl Shard {
    pub fn new(id: usize, config: Arc<Config>, mesh: Arc<Mesh>) -> Shard {
        Shard {
            id,
            config,
            mesh,
            conns: Slab::new(),
            next_gen: 0,
            topics: HashMap::new(),
            publishes: Slab::new(),
            dirty: Vec::new(),
            deferred: Vec::new(),
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
            outbox: Outbox::default(),
            flags: 0,
            waker: None,
            last_write: Instant::now(),
            last_read: Instant::now(),
            sub: None,
        });
        ConnKey { index: index as u32, generation }
    }

    pub fn conn(&mut self, key: ConnKey) -> Option<&mut Conn> {
        self.conns.get_mut(key.index as usize).filter(|c| c.generation == key.generation)
    }

    /// Removes the connection; the caller has already left its topics.
    pub fn remove_conn(&mut self, key: ConnKey) {
        if self.conn(key).is_some() {
            self.conns.remove(key.index as usize);
        }
    }

    /// Queues `bytes` for the connection and flushes. Output the peer provokes (pongs,
    /// replies) counts against the same cap as deliveries: a peer that sends but never reads
    /// is cut like any slow consumer instead of growing its queue.
    pub fn send(&mut self, key: ConnKey, bytes: Bytes) {
        let cap = self.config.max_pending_bytes;
        let metrics = &self.mesh.metrics.workers[self.id];
        let Some(c) = self.conns.get_mut(key.index as usize).filter(|c| c.generation == key.generation) else { return };
        if c.has(flags::CLOSED) {
            return;
        }
        c.outbox.push(bytes);
        if c.outbox.over(cap) {
            c.flags |= flags::CLOSED;
            c.outbox.clear();
            c.wake();
            metrics.slow_consumers.inc();
            return;
        }
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
        let metrics = &self.mesh.metrics.workers[self.id];
        let Some(c) = self.conns.get_mut(key.index as usize).filter(|c| c.generation == key.generation) else { return };
        c.flags &= !flags::DIRTY;
        if c.has(flags::WANT_WRITE | flags::CLOSED) || (c.sub.is_some() && !c.has(flags::READY)) {
            return;
        }
        match c.outbox.flush(c.fd) {
            Ok((n, done)) => {
                if n > 0 {
                    c.last_write = Instant::now();
                    metrics.bytes_written.add(n as u64);
                }
                if done == Flushed::Blocked {
                    c.flags |= flags::WANT_WRITE;
                    c.wake();
                } else if c.has(flags::CLOSING) {
                    c.wake();
                }
            }
            Err(_) => {
                c.flags |= flags::CLOSED;
                c.outbox.clear();
                c.wake();
            }
        }
    }

    /// Polls for any of `wanted` flags on the connection, registering the task's waker.
    pub fn poll_flags(&mut self, key: ConnKey, wanted: u8, cx: &mut Context<'_>) -> Poll<u8> {
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
    fn sizes_that_every_connection_pays() {
        // Not a limit, a report: `cargo test sizes -- --nocapture` shows what an idle
        // stream's slab entry costs.
        println!("Conn: {} bytes, Subscription: {} bytes", size_of::<Conn>(), size_of::<Subscription>());
        println!("TcpStream: {} bytes", size_of::<monoio::net::TcpStream>());
        assert!(size_of::<Conn>() <= 128);
    }
}

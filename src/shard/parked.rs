//! Event streams without a task of their own.
//!
//! Once an SSE stream is open, nothing about it needs a task: deliveries and heartbeats are
//! written to its socket by the delivery task and the ticker. What is left to watch — the
//! peer leaving, the socket taking bytes again after it filled up, and the flags others set
//! on the connection (cut, ending) — is watched for every parked stream of the worker at
//! once: their sockets sit in one epoll set of the worker's own, and one task waits for that
//! set and for notices. An idle stream then costs its slab entry and its subscription: no
//! task, no runtime registration, no buffer.
//!
//! Held long-polls and WebSockets wait the same way. A poll's task ends once its owners have
//! registered it, and the watcher spawns a new one when the poll has something to answer
//! (events, its timeout, the server stopping) or its peer sends something. A WebSocket's task
//! ends between messages, and the watcher spawns one when the peer sends something or the
//! connection is closing. What those tasks need is kept here meanwhile.
//!
//! A parked connection owns its descriptor (a duplicate taken from the task's stream when it
//! parked); removing the connection from the slab closes it.

use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::pin::pin;
use std::task::{Poll, Waker};

use foldhash::HashMap;
use monoio::net::TcpStream;

use super::state::{ConnKey, Shard, ShardRef, flags};
use crate::metrics::Transport;
use crate::sys;

/// Interest of a parked socket: the peer sent something or left.
const READ: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
/// …and the socket takes bytes again.
const READ_WRITE: u32 = READ | libc::EPOLLOUT as u32;
/// Events taken from the set per system call.
const EVENTS_PER_CALL: usize = 256;
/// Events handled before the watcher gives the rest of the worker a turn.
const EVENTS_PER_YIELD: usize = 4096;
/// Most bytes read and dropped from one parked socket per event (streams take no input).
const DRAIN_PER_EVENT: usize = 64 * 1024;

/// One worker's parked streams: the epoll set and the notices waiting for the watcher.
pub struct Parked {
    epoll: OwnedFd,
    /// Parked connections whose flags changed since the watcher last looked.
    notified: Vec<ConnKey>,
    waker: Option<Waker>,
    /// Parked long-polls and WebSockets, with what their next task will need.
    kept: HashMap<ConnKey, Box<dyn Resume>>,
}

/// What a parked connection's next task needs, kept while it waits without one (a held
/// poll's framing, a WebSocket's session). The connection layer implements it; the watcher
/// only calls it, when the connection has something to do.
pub trait Resume {
    /// Starts the task that takes the connection back, with its socket.
    fn resume(self: Box<Self>, shard: ShardRef, key: ConnKey, stream: TcpStream);
}

impl Parked {
    pub fn new() -> io::Result<Parked> {
        Ok(Parked { epoll: sys::epoll_create()?, notified: Vec::new(), waker: None, kept: HashMap::default() })
    }

    /// A handle on the epoll set that the runtime can wait on; made on the worker's thread,
    /// inside its runtime.
    pub fn handle(&self) -> io::Result<TcpStream> {
        sys::readiness_handle(self.epoll.as_fd()).and_then(TcpStream::from_std)
    }

    /// Starts watching `fd` for the connection `key`.
    pub fn watch(&self, fd: RawFd, key: ConnKey) -> io::Result<()> {
        sys::epoll_ctl(self.epoll.as_fd(), libc::EPOLL_CTL_ADD, fd, READ, key.to_token())
    }

    /// Watches `fd` for writability too, or no longer.
    fn want_write(&self, fd: RawFd, key: ConnKey, write: bool) -> io::Result<()> {
        let interest = if write { READ_WRITE } else { READ };
        sys::epoll_ctl(self.epoll.as_fd(), libc::EPOLL_CTL_MOD, fd, interest, key.to_token())
    }

    fn unwatch(&self, fd: RawFd) {
        let _ = sys::epoll_ctl(self.epoll.as_fd(), libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// The connection is gone: forget what was kept for its next task.
    pub fn forget(&mut self, key: ConnKey) {
        if !self.kept.is_empty() {
            self.kept.remove(&key);
        }
    }

    /// The flags of parked connection `key` changed: the watcher looks at it next.
    pub fn notify(&mut self, key: ConnKey) {
        self.notified.push(key);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// Hands the stream's socket over to the worker's parked set; the task that served it can
/// end. When it cannot (the connection is cut, or no descriptor is left) the connection is
/// left unparked and the caller closes it.
pub fn park(shard: &ShardRef, key: ConnKey, stream: TcpStream) -> bool {
    park_with(shard, key, stream, flags::WANT_WRITE | flags::CLOSING)
}

/// Parks a held long-poll's connection (see `park`), keeping `waiting` for the task that will
/// answer it.
pub fn park_poll(shard: &ShardRef, key: ConnKey, stream: TcpStream, waiting: Box<dyn Resume>) -> bool {
    shard.borrow_mut().parked.kept.insert(key, waiting);
    park_keeping(shard, key, stream, flags::CLOSING | flags::DATA | flags::EXPIRED | flags::REFUSED)
}

/// Parks a WebSocket between messages (see `park`), keeping `session` for the task that will
/// serve the next one.
pub fn park_ws(shard: &ShardRef, key: ConnKey, stream: TcpStream, session: Box<dyn Resume>) -> bool {
    shard.borrow_mut().parked.kept.insert(key, session);
    park_keeping(shard, key, stream, flags::WANT_WRITE | flags::CLOSING)
}

/// `park_with` for a connection whose next task's needs were just kept: forgotten again if
/// it cannot be parked.
fn park_keeping(shard: &ShardRef, key: ConnKey, stream: TcpStream, wake_on: u16) -> bool {
    let parked = park_with(shard, key, stream, wake_on);
    if !parked {
        shard.borrow_mut().parked.forget(key);
    }
    parked
}

/// Parks the connection; `wake_on` are the flags that, already set, need the watcher now.
fn park_with(shard: &ShardRef, key: ConnKey, stream: TcpStream, wake_on: u16) -> bool {
    let mut s = shard.borrow_mut();
    let Some(c) = s.conn(key) else { return false };
    if c.has(flags::CLOSED) {
        return false;
    }
    // A duplicate, because monoio hands out its descriptor only when no operation of the
    // stream is left in flight; dropping the stream closes the original.
    let Ok(fd) = sys::duplicate(c.fd) else { return false };
    if s.parked.watch(fd.as_raw_fd(), key).is_err() {
        return false;
    }
    let Some(c) = s.conn(key) else { return false };
    c.park(fd);
    // Something may have happened before it was parked (the socket filled up, the stream
    // began to end, the poll got an event).
    let notice = c.has(wake_on);
    drop(stream);
    if notice {
        s.parked.notify(key);
    }
    true
}

/// Takes the connection out of the parked set, back into a stream a task can own.
fn unpark(s: &mut Shard, key: ConnKey, fd: RawFd) -> Option<TcpStream> {
    s.parked.unwatch(fd);
    let owned = s.conn(key)?.unpark()?;
    TcpStream::from_std(std::net::TcpStream::from(owned)).ok()
}

/// A task takes over a parked connection (its WebSocket peer sent something, its poll has
/// something to answer, …) with what was kept for it; without that, or its stream, the
/// connection is dropped.
fn resume(shard: &ShardRef, s: &mut Shard, key: ConnKey, fd: RawFd) {
    let transport = s.conn(key).map_or(Transport::Sse, |c| c.transport());
    let kept = s.parked.kept.remove(&key);
    match (unpark(s, key, fd), kept) {
        (Some(stream), Some(kept)) => kept.resume(shard.clone(), key, stream),
        _ => s.drop_conn(key, transport),
    }
}

/// The watcher of one worker's parked streams; `set` is the runtime's handle on the epoll set
/// (see `Parked::handle`).
pub async fn run(shard: ShardRef, set: TcpStream) {
    let mut readable = pin!(set.readable(false));
    let mut events = Vec::with_capacity(EVENTS_PER_CALL);
    let mut notices = Vec::new();
    loop {
        let ready = poll_fn(|cx| {
            let mut s = shard.borrow_mut();
            if !s.parked.notified.is_empty() {
                return Poll::Ready(false);
            }
            if !s.parked.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                s.parked.waker = Some(cx.waker().clone());
            }
            readable.as_mut().poll(cx).map(|_| true)
        })
        .await;
        if ready {
            readable.set(set.readable(false));
        }
        // Swapped, not taken: both lists keep their capacity from round to round.
        std::mem::swap(&mut shard.borrow_mut().parked.notified, &mut notices);
        for key in notices.drain(..) {
            on_notice(&shard, key);
        }
        let mut handled = 0;
        loop {
            events.clear();
            if sys::epoll_ready(shard.borrow().parked.epoll.as_fd(), &mut events, EVENTS_PER_CALL).is_err() {
                break;
            }
            for &(ev, token) in &events {
                on_event(&shard, ConnKey::from_token(token), ev);
            }
            handled += events.len();
            if events.len() < EVENTS_PER_CALL {
                break;
            }
            if handled >= EVENTS_PER_YIELD {
                handled = 0;
                super::yield_now().await;
            }
        }
    }
}

/// Acts on what others set on a parked connection.
fn on_notice(shard: &ShardRef, key: ConnKey) {
    let mut s = shard.borrow_mut();
    let Some(c) = s.conn(key).filter(|c| c.is_parked()) else { return };
    let (fd, f, t) = (c.fd, c.flags, c.transport());
    if f & flags::CLOSED != 0 {
        s.drop_conn(key, t);
    } else if t == Transport::LongPoll {
        if f & (flags::CLOSING | flags::DATA | flags::EXPIRED | flags::REFUSED) != 0 {
            resume(shard, &mut s, key, fd);
        }
    } else if f & flags::CLOSING != 0 && t == Transport::Ws {
        // The close handshake needs the task.
        resume(shard, &mut s, key, fd);
    } else if f & flags::CLOSING != 0 {
        // Ending cleanly takes a flush under a deadline and a lingering close: a task again,
        // for the few moments it lasts.
        match unpark(&mut s, key, fd) {
            Some(stream) => {
                monoio::spawn(super::closing::end(shard.clone(), key, stream));
            }
            None => s.drop_conn(key, Transport::Sse),
        }
    } else if f & flags::WANT_WRITE != 0 && s.parked.want_write(fd, key, true).is_err() {
        s.drop_conn(key, t);
    }
}

/// Acts on what the epoll set reported for a parked connection.
fn on_event(shard: &ShardRef, key: ConnKey, ev: u32) {
    let mut s = shard.borrow_mut();
    let Some((fd, t)) = s.conn(key).filter(|c| c.is_parked()).map(|c| (c.fd, c.transport())) else { return };
    let readable = ev & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
    if readable && t == Transport::LongPoll {
        // A poll's peer may send its next request before the answer (pipelining): that is
        // input for the task, not to be dropped.
        match sys::peek(fd) {
            Ok(0) => s.drop_conn(key, t),
            Ok(_) => resume(shard, &mut s, key, fd),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(_) => s.drop_conn(key, t),
        }
        return;
    }
    if readable && t == Transport::Sse && !peer_still_there(fd) {
        s.drop_conn(key, t);
        return;
    }
    if ev & libc::EPOLLOUT as u32 != 0 {
        if let Some(c) = s.conn(key) {
            c.flags &= !flags::WANT_WRITE;
        }
        s.flush(key);
        let Some(c) = s.conn(key) else { return };
        let (closed, drained) = (c.has(flags::CLOSED), !c.has(flags::WANT_WRITE));
        if closed || (drained && s.parked.want_write(fd, key, false).is_err()) {
            s.drop_conn(key, t);
            return;
        }
    }
    if readable && t == Transport::Ws {
        // Messages (or the peer leaving) are the task's to read.
        resume(shard, &mut s, key, fd);
    }
}

/// Streams take no input: reads only tell whether the peer left; anything sent is dropped.
pub fn peer_still_there(fd: RawFd) -> bool {
    let mut scratch = [0u8; 4096];
    let mut drained = 0;
    while drained < DRAIN_PER_EVENT {
        match sys::recv_nonblocking(fd, &mut scratch) {
            Ok(0) => return false,
            Ok(n) => drained += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return e.kind() == io::ErrorKind::WouldBlock,
        }
    }
    true
}

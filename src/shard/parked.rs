//! Event streams without a task of their own.
//!
//! Once an SSE stream is open, nothing about it needs a task: deliveries and heartbeats are
//! written to its socket by the delivery task and the ticker. What is left to watch — the
//! peer leaving, the socket taking bytes again after it filled up, and the transitions others make
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
use std::os::fd::{AsRawFd, RawFd};
use std::pin::pin;
use std::task::Poll;

use monoio::net::TcpStream;

use super::conn::{Conn, ConnKey, Phase};
use super::state::{Kept, Shard, ShardRef};
use crate::metrics::Transport;
use crate::sys;

/// Events taken from the set per system call.
const EVENTS_PER_CALL: usize = 256;
/// Events handled before the watcher gives the rest of the worker a turn.
const EVENTS_PER_YIELD: usize = 4096;

/// Hands the stream's socket over to the worker's parked set; the task that served it can
/// end. When it cannot (the connection is cut, or no descriptor is left) the connection is
/// left unparked and the caller closes it.
pub fn park(shard: &ShardRef, key: ConnKey, stream: TcpStream) -> bool {
    park_with(shard, key, stream, writes_or_ending)
}

/// What a parked stream or WebSocket needs the watcher for: its socket full, or its end.
fn writes_or_ending(c: &Conn) -> bool {
    c.write_blocked() || c.phase() == Phase::Ending
}

/// What a parked poll needs the watcher for: something to answer with (events, its
/// timeout, its end, a refusal).
fn poll_to_answer(c: &Conn) -> bool {
    matches!(c.phase(), Phase::Ending | Phase::Refused) || c.poll_answerable()
}

/// Parks a held long-poll's connection (see `park`), keeping `waiting` for the task that will
/// answer it.
pub fn park_poll(shard: &ShardRef, key: ConnKey, stream: TcpStream, waiting: Box<dyn Kept>) -> bool {
    shard.borrow_mut().kept.insert(key, waiting);
    park_keeping(shard, key, stream, poll_to_answer)
}

/// Parks a WebSocket between messages (see `park`), keeping `session` for the task that will
/// serve the next one.
pub fn park_ws(shard: &ShardRef, key: ConnKey, stream: TcpStream, session: Box<dyn Kept>) -> bool {
    shard.borrow_mut().kept.insert(key, session);
    park_keeping(shard, key, stream, writes_or_ending)
}

/// `park_with` for a connection whose next task's needs were just kept: forgotten again if
/// it cannot be parked.
fn park_keeping(shard: &ShardRef, key: ConnKey, stream: TcpStream, wake_on: fn(&Conn) -> bool) -> bool {
    let parked = park_with(shard, key, stream, wake_on);
    if !parked {
        shard.borrow_mut().kept.remove(&key);
    }
    parked
}

/// Parks the connection; `wake_on` says whether, as it is, it needs the watcher now.
fn park_with(shard: &ShardRef, key: ConnKey, stream: TcpStream, wake_on: fn(&Conn) -> bool) -> bool {
    let mut s = shard.borrow_mut();
    let Some(c) = s.conn(key) else { return false };
    if c.phase() == Phase::Closed {
        return false;
    }
    // A duplicate, because monoio hands out its descriptor only when no operation of the
    // stream is left in flight; dropping the stream closes the original.
    let Ok(fd) = sys::duplicate(c.fd()) else { return false };
    if s.parked.watch(fd.as_raw_fd(), key).is_err() {
        return false;
    }
    let Some(c) = s.conn(key) else { return false };
    c.park(fd);
    // Something may have happened before it was parked (the socket filled up, the stream
    // began to end, the poll got an event).
    let notice = wake_on(c);
    drop(stream);
    if notice {
        s.notices.push(key);
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
    let kept = s.kept.remove(&key);
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
            if !s.notices.keys.is_empty() {
                return Poll::Ready(false);
            }
            if !s.notices.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                s.notices.waker = Some(cx.waker().clone());
            }
            readable.as_mut().poll(cx).map(|_| true)
        })
        .await;
        if ready {
            readable.set(set.readable(false));
        }
        // Swapped, not taken: both lists keep their capacity from round to round.
        std::mem::swap(&mut shard.borrow_mut().notices.keys, &mut notices);
        for key in notices.drain(..) {
            on_notice(&shard, key);
        }
        let mut handled = 0;
        loop {
            events.clear();
            if shard.borrow().parked.ready(&mut events, EVENTS_PER_CALL).is_err() {
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
    let (fd, phase, t) = (c.fd(), c.phase(), c.transport());
    if phase == Phase::Closed {
        s.drop_conn(key, t);
    } else if t == Transport::LongPoll {
        if poll_to_answer(c) {
            resume(shard, &mut s, key, fd);
        }
    } else if phase == Phase::Ending && t == Transport::Ws {
        // The close handshake needs the task.
        resume(shard, &mut s, key, fd);
    } else if phase == Phase::Ending {
        // Ending cleanly takes a flush under a deadline and a lingering close: a task again,
        // for the few moments it lasts.
        match unpark(&mut s, key, fd) {
            Some(stream) => {
                monoio::spawn(super::closing::end(shard.clone(), key, stream));
            }
            None => s.drop_conn(key, Transport::Sse),
        }
    } else if c.write_blocked() && s.parked.want_write(fd, key, true).is_err() {
        s.drop_conn(key, t);
    }
}

/// Acts on what the epoll set reported for a parked connection.
fn on_event(shard: &ShardRef, key: ConnKey, ev: u32) {
    let mut s = shard.borrow_mut();
    let Some((fd, t)) = s.conn(key).filter(|c| c.is_parked()).map(|c| (c.fd(), c.transport())) else { return };
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
    if readable && t == Transport::Sse && !super::closing::peer_still_there(fd) {
        s.drop_conn(key, t);
        return;
    }
    if ev & libc::EPOLLOUT as u32 != 0 {
        if let Some(c) = s.conn(key) {
            c.unblock_writes();
        }
        s.flush(key);
        let Some(c) = s.conn(key) else { return };
        let (closed, drained) = (c.phase() == Phase::Closed, !c.write_blocked());
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

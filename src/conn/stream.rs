//! A connection that has become an event stream (SSE).
//!
//! The task writes the response head and the stream's opening into the outbox, joins the
//! subscription's topics (asking their owners where needed), and from then on only waits:
//! for the peer to close (a read-readiness wait kept armed for the stream's whole life, with
//! no buffer pinned), for the socket to take more bytes after it filled up, or to be told to
//! close. The fanout itself writes to the socket from the delivery task (see `outbox`).
//!
//! Memory per idle stream is what this task holds while it waits, so the waiting loop keeps
//! only the readiness wait inline; setting up and closing are boxed futures that exist only
//! while they run.

use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::AsRawFd;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use monoio::net::TcpStream;
use monoio::time::{Instant, timeout_at};

use super::Ctx;
use super::wake::{self, Wake, Writable};
use crate::api::subscribe::StreamRequest;
use crate::proto::sse;
use crate::pubsub::local::{Delivery, Subscription};
use crate::shard::state::flags;
use crate::sys;

/// How long a closing stream may take to flush what is queued.
const CLOSE_FLUSH: Duration = Duration::from_secs(3);

/// Runs an SSE stream until the peer leaves, the stream is cut, or the server stops.
pub async fn run(ctx: &Ctx, stream: &TcpStream, req: StreamRequest, chunked: bool, cors: Vec<(&'static str, String)>) {
    if !Box::pin(open(ctx, req, chunked, cors)).await {
        return;
    }
    let fd = stream.as_raw_fd();
    let mut readable = pin!(stream.readable(false));
    let mut writable: Writable = None;
    loop {
        match wake::next(ctx, readable.as_mut(), &mut writable).await {
            Wake::Readable(Ok(())) if peer_still_there(fd) => readable.set(stream.readable(false)),
            Wake::Readable(_) | Wake::Writable(Err(_)) => return,
            Wake::Writable(Ok(())) => wake::writable_again(ctx, &mut writable),
            Wake::Flags(f) if f & flags::CLOSED != 0 => return,
            Wake::Flags(f) if f & flags::CLOSING != 0 => {
                return Box::pin(close(ctx, stream, readable.as_mut())).await;
            }
            Wake::Flags(_) => wake::arm(stream, &mut writable),
        }
    }
}

/// Streams take no input: reads only tell whether the peer left; anything sent is dropped.
fn peer_still_there(fd: std::os::fd::RawFd) -> bool {
    let mut scratch = [0u8; 512];
    match sys::recv_nonblocking(fd, &mut scratch) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted),
    }
}

/// Queues the head and the stream's opening, joins the topics, and waits until every owner
/// has registered the subscription: it is live before its head goes out (API.md §7).
async fn open(ctx: &Ctx, req: StreamRequest, chunked: bool, cors: Vec<(&'static str, String)>) -> bool {
    let key = ctx.key;
    let worker = ctx.worker.to_string();
    let mut extra: Vec<(&str, &str)> = vec![("Herald-Worker", &worker)];
    extra.extend(cors.iter().map(|(k, v)| (*k, v.as_str())));
    let head = sse::stream_head(chunked, &extra);
    let retry_ms = ctx.config.sse_retry.as_millis() as u64;
    let requests = {
        let mut s = ctx.shard.borrow_mut();
        let Some(c) = s.conn(key) else { return false };
        c.outbox.push(head);
        c.outbox.push(sse::preamble(retry_ms, req.padding).for_version(chunked));
        let mut sub = Subscription::new(req.topics, req.types, Delivery::Sse { chunked });
        sub.pausable = req.pausable;
        s.join(key, sub, &req.from)
    };
    for (owner, msg) in requests {
        ctx.mesh.to_owner[owner].send(msg).await;
    }
    let f =
        poll_fn(|cx| ctx.shard.borrow_mut().poll_flags(key, flags::READY | flags::CLOSED | flags::CLOSING, cx)).await;
    if f & flags::CLOSED != 0 {
        return false;
    }
    ctx.shard.borrow_mut().flush(key);
    true
}

/// Ends the stream cleanly: flush what is queued (the stream's end included) within a
/// deadline, then half-close and drain until the peer closes too, so the close is a FIN and
/// never a reset.
pub(super) async fn close<F: Future<Output = io::Result<()>>>(
    ctx: &Ctx,
    stream: &TcpStream,
    mut readable: Pin<&mut F>,
) {
    let key = ctx.key;
    let fd = stream.as_raw_fd();
    let deadline = Instant::now() + CLOSE_FLUSH;
    loop {
        let blocked = {
            let mut s = ctx.shard.borrow_mut();
            let Some(c) = s.conn(key) else { return };
            c.flags &= !flags::WANT_WRITE;
            s.flush(key);
            let Some(c) = s.conn(key) else { return };
            if c.has(flags::CLOSED) {
                return;
            }
            if c.outbox.is_empty() {
                break;
            }
            c.has(flags::WANT_WRITE)
        };
        if !blocked {
            continue;
        }
        let mut writable = pin!(stream.writable(false));
        let ready = poll_fn(|cx| {
            if let Poll::Ready(r) = readable.as_mut().poll(cx) {
                return Poll::Ready(r.is_ok() && peer_still_there(fd));
            }
            writable.as_mut().poll(cx).map(|r| r.is_ok())
        });
        match timeout_at(deadline, ready).await {
            Ok(true) => {}
            _ => return,
        }
    }
    super::request::linger(stream).await;
}

//! A connection that has become an event stream (SSE).
//!
//! The task writes the response head and the stream's opening into the outbox, joins the
//! subscription's topics (asking their owners where needed), and from then on only waits:
//! for the peer to close (a read-readiness wait kept armed for the stream's whole life, with
//! no buffer pinned), for the socket to take more bytes after it filled up, or to be told to
//! close. The fanout itself writes to the socket from the delivery task (see `outbox`).

use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::AsRawFd;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use monoio::net::TcpStream;
use monoio::time::{Instant, timeout_at};

use super::Ctx;
use crate::api::subscribe::StreamRequest;
use crate::proto::sse;
use crate::pubsub::local::Subscription;
use crate::shard::state::flags;
use crate::sys;

/// How long a closing stream may take to flush what is queued.
const CLOSE_FLUSH: Duration = Duration::from_secs(3);

enum Event {
    Readable(io::Result<()>),
    Writable(io::Result<()>),
    Flags(u8),
}

/// Runs an SSE stream until the peer leaves, the stream is cut, or the server stops.
pub async fn run(ctx: &Ctx, stream: TcpStream, req: StreamRequest, chunked: bool) {
    let key = ctx.key;
    let worker = ctx.worker.to_string();
    let head = sse::stream_head(chunked, &[("Herald-Worker", &worker)]);
    let retry_ms = ctx.config.sse_retry.as_millis() as u64;
    let requests = {
        let mut s = ctx.shard.borrow_mut();
        let Some(c) = s.conn(key) else { return };
        c.outbox.push(head);
        c.outbox.push(sse::preamble(retry_ms, req.padding).for_version(chunked));
        let sub = Subscription::new(req.topics, req.types, chunked);
        s.join(key, sub, &req.from)
    };
    for (owner, msg) in requests {
        ctx.mesh.to_owner[owner].send(msg).await;
    }
    // Registered with every owner before the head goes out (API.md §7).
    let f =
        poll_fn(|cx| ctx.shard.borrow_mut().poll_flags(key, flags::READY | flags::CLOSED | flags::CLOSING, cx)).await;
    if f & flags::CLOSED != 0 {
        return;
    }
    ctx.shard.borrow_mut().flush(key);

    let fd = stream.as_raw_fd();
    let mut readable = pin!(stream.readable(false));
    let mut writable: Option<Pin<Box<dyn Future<Output = io::Result<()>> + '_>>> = None;
    let mut close_deadline: Option<Instant> = None;
    loop {
        let wanted = flags::CLOSED | flags::CLOSING | if writable.is_none() { flags::WANT_WRITE } else { 0 };
        let closing = close_deadline.is_some();
        let event = poll_fn(|cx| {
            if let Poll::Ready(r) = readable.as_mut().poll(cx) {
                return Poll::Ready(Event::Readable(r));
            }
            if let Some(w) = writable.as_mut()
                && let Poll::Ready(r) = w.as_mut().poll(cx)
            {
                return Poll::Ready(Event::Writable(r));
            }
            // While closing, only the socket matters; the flags are already seen.
            if closing {
                return Poll::Pending;
            }
            ctx.shard.borrow_mut().poll_flags(key, wanted, cx).map(Event::Flags)
        });
        let event = match close_deadline {
            Some(deadline) => match timeout_at(deadline, event).await {
                Ok(e) => e,
                Err(_) => return,
            },
            None => event.await,
        };
        match event {
            Event::Readable(Err(_)) => return,
            Event::Readable(Ok(())) => {
                // Streams take no input: read to see whether the peer left, discard the rest.
                let mut scratch = [0u8; 512];
                match sys::recv_nonblocking(fd, &mut scratch) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
                readable.set(stream.readable(false));
            }
            Event::Writable(Err(_)) => return,
            Event::Writable(Ok(())) => {
                writable = None;
                let mut s = ctx.shard.borrow_mut();
                if let Some(c) = s.conn(key) {
                    c.flags &= !flags::WANT_WRITE;
                }
                s.flush(key);
            }
            Event::Flags(f) => {
                if f & flags::CLOSED != 0 {
                    return;
                }
                if f & flags::WANT_WRITE != 0 && writable.is_none() {
                    writable = Some(Box::pin(stream.writable(false)));
                }
                if f & flags::CLOSING != 0 && close_deadline.is_none() {
                    close_deadline = Some(Instant::now() + CLOSE_FLUSH);
                    // A blocked socket keeps its writability wait; otherwise flush now.
                    if writable.is_none() {
                        ctx.shard.borrow_mut().flush(key);
                    }
                }
            }
        }
        if close_deadline.is_some() {
            let mut s = ctx.shard.borrow_mut();
            let Some(c) = s.conn(key) else { return };
            if c.has(flags::CLOSED) {
                return;
            }
            if c.outbox.is_empty() {
                drop(s);
                // A clean end: half-close after the last byte, then drain until the peer
                // closes too (bounded), so the close is a FIN and never a reset.
                return super::request::linger(&stream).await;
            }
            if c.has(flags::WANT_WRITE) && writable.is_none() {
                writable = Some(Box::pin(stream.writable(false)));
            }
        }
    }
}

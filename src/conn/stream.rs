//! A connection that becomes an event stream (SSE): opening it, and ending it cleanly.
//!
//! The connection's task writes the response head and the stream's opening into the outbox,
//! joins the subscription's topics (asking their owners where needed) and, once every owner
//! has registered it, parks it (see `shard::parked`) and ends: an open stream has no task.
//! The fanout writes to its socket from the delivery task (see `outbox`). Ending cleanly —
//! a flush under a deadline and a lingering close — takes a task again while it lasts.

use std::future::{Future, poll_fn};
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use monoio::net::TcpStream;
use monoio::time::{Instant, timeout_at};

use super::Ctx;
use crate::api::subscribe::StreamRequest;
use crate::metrics::Transport;
use crate::proto::sse;
use crate::shard::local::{Delivery, Rare, Subscription};
use crate::shard::parked::peer_still_there;
use crate::shard::state::{ConnKey, ShardRef, flags};

/// How long a closing stream may take to flush what is queued.
const CLOSE_FLUSH: Duration = Duration::from_secs(3);

/// Ends a stream that was parked and is closing (the server stopping, an admin pause): the
/// flush and the lingering close, then the connection is gone.
pub async fn end(shard: ShardRef, key: ConnKey, stream: TcpStream) {
    close(&shard, key, &stream).await;
    shard.borrow_mut().drop_conn(key, Transport::Sse);
}

/// Queues the head and the stream's opening, joins the topics, and waits until every owner
/// has registered the subscription: it is live before its head goes out (API.md §7). An
/// owner that refuses (the node keeps `max_topics`) has it answered 503 instead.
pub async fn open(
    ctx: &Ctx,
    stream: &TcpStream,
    req: StreamRequest,
    chunked: bool,
    cors: Vec<(&'static str, String)>,
) -> bool {
    let key = ctx.key;
    let worker = ctx.worker.to_string();
    let mut extra: Vec<(&str, &str)> = vec![("Herald-Worker", &worker)];
    extra.extend(cors.iter().map(|(k, v)| (*k, v.as_str())));
    let head = sse::stream_head(chunked, &extra);
    let retry_ms = ctx.config.sse_retry.as_millis() as u64;
    let refusal_headers = cors.clone();
    let requests = {
        let mut s = ctx.shard.borrow_mut();
        let Some(c) = s.conn(key) else { return false };
        c.outbox.push(head);
        c.outbox.push(sse::preamble(retry_ms, req.padding).for_version(chunked));
        let mut sub = Subscription::new(req.topics, req.types, Delivery::Sse { chunked });
        if req.pausable.is_some() {
            sub.rare = Some(Box::new(Rare { pausable: req.pausable, expires: None }));
        }
        sub.expires_at(req.expires);
        s.join(key, sub, &req.from)
    };
    for (owner, msg) in requests {
        ctx.mesh.to_owner[owner].send(msg).await;
    }
    let wanted = flags::READY | flags::CLOSED | flags::CLOSING | flags::REFUSED;
    let f = poll_fn(|cx| ctx.shard.borrow_mut().poll_flags(key, wanted, cx)).await;
    if f & flags::REFUSED != 0 {
        super::answer_refused(ctx, stream, u8::from(chunked), refusal_headers).await;
        return false;
    }
    if f & flags::CLOSED != 0 {
        return false;
    }
    ctx.shard.borrow_mut().flush(key);
    true
}

/// Ends the stream cleanly: flush what is queued (the stream's end included) within a
/// deadline, then half-close and drain until the peer closes too, so the close is a FIN and
/// never a reset. A peer that keeps sending does not extend the deadline.
pub(super) async fn close(shard: &ShardRef, key: ConnKey, stream: &TcpStream) {
    let fd = stream.as_raw_fd();
    let deadline = Instant::now() + CLOSE_FLUSH;
    let mut readable = pin!(stream.readable(false));
    loop {
        let blocked = {
            let mut s = shard.borrow_mut();
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
        if Instant::now() >= deadline {
            return;
        }
        if !blocked {
            continue;
        }
        let mut writable = pin!(stream.writable(false));
        let ready = poll_fn(|cx| {
            if let Poll::Ready(r) = readable.as_mut().poll(cx) {
                return Poll::Ready(Wake::Peer(r.is_ok() && peer_still_there(fd)));
            }
            writable.as_mut().poll(cx).map(|r| Wake::Writable(r.is_ok()))
        });
        match timeout_at(deadline, ready).await {
            Ok(Wake::Peer(true)) => readable.set(stream.readable(false)),
            Ok(Wake::Writable(true)) => {}
            _ => return,
        }
    }
    super::request::linger(stream).await;
}

/// What a closing stream woke up for: the peer sent something (`true`: and is still there),
/// or the socket takes bytes again (`true`: without error).
enum Wake {
    Peer(bool),
    Writable(bool),
}

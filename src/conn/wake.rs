//! What a WebSocket's task waits for while it has something half-done (a message partly
//! read, a close to finish): the peer (read readiness), the socket taking more bytes after it
//! filled up, and its flags (cut, closing, socket full). Between messages it has no task:
//! `shard::parked` watches it, as it does open event streams.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::Poll;

use monoio::net::TcpStream;

use crate::api::ctx::Ctx;
use crate::shard::conn::flags;

/// A writability wait, boxed: it exists only while the socket is full.
pub type Writable<'a> = Option<Pin<Box<dyn Future<Output = io::Result<()>> + 'a>>>;

pub enum Wake {
    Readable(io::Result<()>),
    Writable(io::Result<()>),
    Flags(u16),
}

/// Waits for the next thing to act on. While a writability wait is armed, `WANT_WRITE` is not
/// reported again.
pub async fn next<R: Future<Output = io::Result<()>>>(
    ctx: &Ctx,
    mut readable: Pin<&mut R>,
    writable: &mut Writable<'_>,
) -> Wake {
    let wanted = flags::CLOSED | flags::CLOSING | if writable.is_none() { flags::WANT_WRITE } else { 0 };
    poll_fn(|cx| {
        if let Poll::Ready(r) = readable.as_mut().poll(cx) {
            return Poll::Ready(Wake::Readable(r));
        }
        if let Some(w) = writable.as_mut()
            && let Poll::Ready(r) = w.as_mut().poll(cx)
        {
            return Poll::Ready(Wake::Writable(r));
        }
        ctx.shard.borrow_mut().poll_flags(ctx.key, wanted, cx).map(Wake::Flags)
    })
    .await
}

/// The socket takes bytes again: drop the wait and flush what is queued.
pub fn writable_again(ctx: &Ctx, writable: &mut Writable<'_>) {
    *writable = None;
    let mut s = ctx.shard.borrow_mut();
    if let Some(c) = s.conn(ctx.key) {
        c.flags &= !flags::WANT_WRITE;
    }
    s.flush(ctx.key);
}

/// Arms the writability wait.
pub fn arm<'a>(stream: &'a TcpStream, writable: &mut Writable<'a>) {
    *writable = Some(Box::pin(stream.writable(false)));
}

//! What a WebSocket's task waits for while it has something half-done (a message partly
//! read, a close to finish): the peer (read readiness), the socket taking more bytes after it
//! filled up, and its connection changing (cut, ending, socket full). Between messages it has no task:
//! `shard::parked` watches it, as it does open event streams.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::Poll;

use monoio::net::TcpStream;

use crate::api::ctx::Ctx;
use crate::shard::conn::{Conn, Phase};

/// A writability wait, boxed: it exists only while the socket is full.
pub type Writable<'a> = Option<Pin<Box<dyn Future<Output = io::Result<()>> + 'a>>>;

pub enum Wake {
    Readable(io::Result<()>),
    Writable(io::Result<()>),
    /// The connection was cut or is ending (its phase), or its socket filled up.
    Changed(Phase),
}

/// Waits for the next thing to act on. While a writability wait is armed, a full socket is not
/// reported again.
pub async fn next<R: Future<Output = io::Result<()>>>(
    ctx: &Ctx,
    mut readable: Pin<&mut R>,
    writable: &mut Writable<'_>,
) -> Wake {
    let watch_writes = writable.is_none();
    let until = move |c: &Conn| c.is_ending() || (watch_writes && c.write_blocked());
    poll_fn(|cx| {
        if let Poll::Ready(r) = readable.as_mut().poll(cx) {
            return Poll::Ready(Wake::Readable(r));
        }
        if let Some(w) = writable.as_mut()
            && let Poll::Ready(r) = w.as_mut().poll(cx)
        {
            return Poll::Ready(Wake::Writable(r));
        }
        ctx.shard.borrow_mut().poll_until(ctx.key, until, cx).map(Wake::Changed)
    })
    .await
}

/// The socket takes bytes again: drop the wait and flush what is queued.
pub fn writable_again(ctx: &Ctx, writable: &mut Writable<'_>) {
    *writable = None;
    let mut s = ctx.shard.borrow_mut();
    if let Some(c) = s.conn(ctx.key) {
        c.unblock_writes();
    }
    s.flush(ctx.key);
}

/// Arms the writability wait.
pub fn arm<'a>(stream: &'a TcpStream, writable: &mut Writable<'a>) {
    *writable = Some(Box::pin(stream.writable(false)));
}

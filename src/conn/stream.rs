//! A connection that becomes an event stream (SSE): opening it, and ending it cleanly.
//!
//! The connection's task writes the response head and the stream's opening into the outbox,
//! joins the subscription's topics (asking their owners where needed) and, once every owner
//! has registered it, parks it (see `shard::parked`) and ends: an open stream has no task.
//! The fanout writes to its socket from the delivery task (see `outbox`). Ending cleanly —
//! a flush under a deadline and a lingering close — takes a task again while it lasts.

use std::future::poll_fn;

use monoio::net::TcpStream;

use crate::api::ctx::Ctx;
use crate::api::subscribe::StreamRequest;
use crate::proto::sse;
use crate::pubsub::msg::ToOwner;
use crate::shard::conn::Phase;
use crate::shard::subscription::{Delivery, Subscription};

/// Queues the head and the stream's opening, joins the topics, and waits until every owner
/// has registered the subscription: it is live before its head goes out (API.md §7). An
/// owner that refuses (the node keeps `max_topics`) has it answered 503 instead.
///
/// The future must be awaited: the subscription is joined when it is made, and only the
/// future sends the owners their requests (a joined topic waiting for an acknowledgement that
/// never comes is never released).
///
/// Not an `async fn`: the joining is done before the future is made, so the future holds
/// only the wait. Every stream of a burst of new subscriptions waits in it at once (their
/// owners' acknowledgements come a loop turn or more later); a large waiting state, freed
/// among the topics' long-lived allocations, left pages behind (~5 KiB per stream opened on
/// a topic of its own, measured).
pub fn open<'a>(
    ctx: &'a Ctx,
    stream: &'a TcpStream,
    req: StreamRequest,
    chunked: bool,
    cors: Vec<(&'static str, String)>,
) -> impl Future<Output = bool> + 'a {
    let joined = join(ctx, req, chunked, &cors);
    async move {
        match joined {
            Some(requests) => wait_for_owners(ctx, stream, requests, u8::from(chunked), cors).await,
            None => false,
        }
    }
}

/// Queues the head and the opening; joins the subscription's topics. `None` when the
/// connection is gone.
fn join(
    ctx: &Ctx,
    req: StreamRequest,
    chunked: bool,
    cors: &[(&'static str, String)],
) -> Option<Vec<(usize, ToOwner)>> {
    let worker = ctx.worker.to_string();
    let mut extra: Vec<(&str, &str)> = vec![("Herald-Worker", &worker)];
    extra.extend(cors.iter().map(|(k, v)| (*k, v.as_str())));
    let head = sse::stream_head(chunked, &extra);
    let retry_ms = ctx.config.sse_retry.as_millis() as u64;
    let mut s = ctx.shard.borrow_mut();
    let c = s.conn(ctx.key)?;
    c.outbox.push(head);
    c.outbox.push(sse::preamble(retry_ms, req.padding).for_version(chunked));
    let user = req.presence(&ctx.config);
    let mut sub = Subscription::new(req.topics, req.types, Delivery::Sse { chunked });
    sub.present_as(user);
    if req.sheddable.is_some() {
        // Beside the presence user set above, not over it.
        sub.rare.get_or_insert_with(Box::default).shed_groups = req.sheddable;
    }
    sub.expires_at(req.expires);
    sub.names = req.names;
    Some(s.join(ctx.key, sub, &req.from))
}

/// Sends a new subscription's requests to their owners and waits until every owner has
/// registered it; then the head queued before it goes out. When an owner refused it (the
/// node keeps `max_topics`), the connection is answered 503 instead; `false` when it will
/// not go on.
pub(super) async fn wait_for_owners(
    ctx: &Ctx,
    stream: &TcpStream,
    requests: Vec<(usize, ToOwner)>,
    minor_version: u8,
    refusal_headers: Vec<(&'static str, String)>,
) -> bool {
    for (owner, msg) in requests {
        ctx.mesh.to_owner[owner].send(msg).await;
    }
    match poll_fn(|cx| ctx.shard.borrow_mut().poll_until(ctx.key, |c| c.phase() != Phase::Open, cx)).await {
        Phase::Refused => {
            // Boxed: the refusal's write and lingering close are most of this future's size,
            // and every subscription waiting for its owners would carry them.
            Box::pin(super::request::answer_refused(ctx, stream, minor_version, refusal_headers)).await;
            return false;
        }
        Phase::Closed => return false,
        Phase::Open | Phase::Live | Phase::Ending => {}
    }
    ctx.shard.borrow_mut().flush(ctx.key);
    true
}

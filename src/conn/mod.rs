//! A connection's life: read requests, answer them in order, and maybe become a stream.
//!
//! Each connection is one monoio task on the worker that accepted it. While it speaks
//! request/response it owns a read buffer; once it becomes an event stream the buffer is
//! dropped, the stream is parked with the worker's watcher and the task ends. A held
//! long-poll is parked the same way until it has something to answer; then a new task
//! (`resume_poll`) answers it and goes on reading requests. A WebSocket is parked between
//! messages, and a new task (`resume_ws`) serves the next ones.

mod answers;
mod dispatch;
mod limits;
pub mod longpoll;
mod request;
pub mod stream;
mod wake;
pub mod ws;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use monoio::net::TcpStream;

use crate::api::ctx::Ctx;
use crate::api::{self};
use crate::auth;
use crate::metrics::Transport as Doing;
use crate::proto::http1::{BodyKind, Method, Response, Wire};
use crate::route::{Route, route};
use crate::shard::conn::ConnKey;
use crate::shard::parked;
use crate::shard::state::{Kept, ShardRef};
use answers::Answers;
use dispatch::{Admitted, Become, Decided, Dispatched, admit, dispatch};
use request::{ReadError, RequestReader};

/// How long a keep-alive connection may sit idle between requests.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// Serves one accepted connection until it closes.
pub async fn serve(shard: ShardRef, stream: TcpStream, peer: SocketAddr) {
    let key = shard.borrow_mut().add_conn(stream.as_raw_fd());
    let ctx = Ctx::new(shard, key, crate::api::publish::is_loopback(peer), None);
    ctx.mesh.metrics.workers[ctx.worker].connection(Doing::Http, 1);
    serve_from(ctx, stream, None).await;
}

impl Kept for longpoll::Waiting {
    fn resume(self: Box<Self>, shard: ShardRef, key: ConnKey, stream: TcpStream) {
        monoio::spawn(resume_poll(shard, key, stream, *self));
    }
}

impl Kept for ws::Session {
    fn resume(self: Box<Self>, shard: ShardRef, key: ConnKey, stream: TcpStream) {
        monoio::spawn(resume_ws(shard, key, stream, *self));
    }
}

/// Takes a parked long-poll back into a task (the watcher saw it get something to answer,
/// or its peer send something): answers it, then serves the connection's next requests.
async fn resume_poll(shard: ShardRef, key: ConnKey, stream: TcpStream, waiting: longpoll::Waiting) {
    let (framing, stopped_at, loopback) = waiting.into_parts();
    let ctx = Ctx::new(shard, key, loopback, stopped_at);
    serve_from(ctx, stream, Some(framing)).await;
}

/// Takes a parked WebSocket back into a task (its peer sent something, or it is closing):
/// serves it until it is idle again (parked anew) or closes.
async fn resume_ws(shard: ShardRef, key: ConnKey, stream: TcpStream, session: ws::Session) {
    let ctx = Ctx::new(shard, key, session.loopback(), None);
    if let ws::Ending::Idle(session) = Box::pin(ws::serve(&ctx, &stream, session, true)).await
        && parked::park_ws(&ctx.shard, key, stream, Box::new(session))
    {
        return;
    }
    ctx.shard.borrow_mut().drop_conn(key, Doing::Ws);
}

/// The connection's life from a request boundary, or from a held poll to answer.
async fn serve_from(ctx: Ctx, stream: TcpStream, mut held: Option<longpoll::Framing>) {
    let key = ctx.key;
    let mut stream = stream;
    let mut reader = RequestReader::new();
    let mut first = held.is_none();
    let metrics = &ctx.mesh.metrics.workers[ctx.worker];
    // What the connection is doing, for the connections gauge.
    let mut doing = if held.is_some() { Doing::LongPoll } else { Doing::Http };
    let mut now_doing = |t: Doing| {
        metrics.connection(doing, -1);
        metrics.connection(t, 1);
        doing = t;
    };
    loop {
        if let Some(framing) = held.take() {
            // A poll that was parked: its peer may have left meanwhile, which the answer's
            // write finds out.
            let stays = Box::pin(longpoll::answer_when_ready(&ctx, &stream, framing, false)).await;
            now_doing(Doing::Http);
            if !stays {
                break;
            }
        }
        // Boxed: request handling needs more state than a waiting stream or a held poll,
        // and those should not carry it.
        let f = Box::pin(serve_requests(&ctx, &mut stream, &mut reader, first));
        match f.await {
            Next::Close => break,
            // Each kind of long-lived connection is its own boxed future, so each costs only
            // its own waiting state, not the largest of the three, and the connection's task
            // stays small: a burst of new subscriptions holds thousands of tasks at once while
            // their owners' acknowledgements come, and the memory a burst frees among the
            // topics' long-lived allocations is not all given back.
            Next::Become(Become::Stream { req, chunked, cors }) => {
                drop(reader);
                now_doing(Doing::Sse);
                metrics.response(200);
                if Box::pin(stream::open(&ctx, &stream, req, chunked, cors)).await
                    && parked::park(&ctx.shard, key, stream)
                {
                    // The worker's parked-stream watcher looks after it from now on.
                    return;
                }
                break;
            }
            Next::Become(Become::WebSocket { mode, accept }) => {
                drop(reader);
                now_doing(Doing::Ws);
                metrics.response(101);
                if let ws::Ending::Idle(session) = Box::pin(ws::run(&ctx, &stream, mode, accept)).await
                    && parked::park_ws(&ctx.shard, key, stream, Box::new(session))
                {
                    return;
                }
                break;
            }
            Next::Become(Become::Poll { req, framing }) => {
                reader.release();
                now_doing(Doing::LongPoll);
                // A poll with nothing else buffered behind it waits without a task.
                let parkable = reader.is_empty();
                match Box::pin(longpoll::hold(&ctx, &stream, req, framing, parkable)).await {
                    longpoll::Outcome::Answered { stays: true } => now_doing(Doing::Http),
                    longpoll::Outcome::Answered { stays: false } => break,
                    longpoll::Outcome::Waiting(framing) => {
                        let waiting = longpoll::Waiting::new(framing, ctx.stopped_at.take(), ctx.loopback);
                        if parked::park_poll(&ctx.shard, key, stream, Box::new(waiting)) {
                            return;
                        }
                        break;
                    }
                }
            }
        }
        first = false;
    }
    ctx.shard.borrow_mut().drop_conn(key, doing);
}

/// Requests a connection answers before the rest of the worker gets a turn.
const REQUESTS_PER_TURN: u32 = 32;

/// What a connection does after its plain requests.
enum Next {
    Close,
    Become(Become),
}

/// Answers requests in order until the connection closes, becomes a stream or holds a poll.
async fn serve_requests(ctx: &Ctx, stream: &mut TcpStream, reader: &mut RequestReader, first: bool) -> Next {
    let mut answers = Answers::default();
    let next = answer_requests(ctx, stream, reader, first, &mut answers).await;
    // Answers held back for pipelined requests go out before anything else does.
    if !answers.write(ctx, stream).await {
        return Next::Close;
    }
    next
}

/// The request loop of `serve_requests`. While the next request of a pipelining client is
/// already here, an answer waits in `answers` and leaves with the following ones in one
/// write, and a single publish goes to its owner without waiting for its cursor: a publisher
/// sending requests back to back pays one write and one wait per batch, not one each.
async fn answer_requests(
    ctx: &Ctx,
    stream: &mut TcpStream,
    reader: &mut RequestReader,
    mut first: bool,
    answers: &mut Answers,
) -> Next {
    let metrics = &ctx.mesh.metrics.workers[ctx.worker];
    let mut served = 0u32;
    loop {
        served = served.wrapping_add(1);
        if served.is_multiple_of(REQUESTS_PER_TURN) {
            // Requests already buffered are read and answered without waiting on anything,
            // so a client pipelining cheap requests non-stop would otherwise keep the worker.
            crate::shard::yield_now().await;
        }
        let idle = if first { ctx.config.head_timeout } else { KEEPALIVE_IDLE };
        first = false;
        // Each step is boxed: its timer alone is 640 bytes, and none of it may stay in the
        // state of a connection that goes on to wait as a stream.
        let head = match Box::pin(reader.read_head(stream, idle, ctx.config.head_timeout)).await {
            Ok(head) => head,
            Err(ReadError::Closed) | Err(ReadError::TimedOut) | Err(ReadError::Io) => return Next::Close,
            Err(ReadError::Refused(resp, version)) => {
                metrics.response(resp.status.code());
                if answers.write(ctx, stream).await {
                    Box::pin(request::refuse(stream, resp, version)).await;
                }
                return Next::Close;
            }
        };
        let path = head.path();
        let route = route(&head.method, path, ctx.config.member_events_prefix.as_deref());
        let head_only = head.method == Method::Head;
        let keep_alive = head.keep_alive && !ctx.mesh.shutting_down();
        let cors = auth::cors::headers(&ctx.config.cors_origins, &head);
        // Everything the head decides — rights, limits, room for the body — before any of
        // the body is read (API.md §7). A refused request's body is never read: the refusal
        // goes out and the connection closes (lingering, so the client can read it), unless
        // no body was coming.
        let admitted = match admit(ctx, &head, &route) {
            Ok(a) => a,
            Err(r) if head.body == BodyKind::None => Admitted::Refused(r),
            Err(r) => {
                metrics.response(r.status.code());
                if answers.write(ctx, stream).await {
                    Box::pin(request::refuse(stream, r.with_headers(cors), head.minor_version)).await;
                }
                return Next::Close;
            }
        };
        if head.expect_continue && !answers.is_empty() && !answers.write(ctx, stream).await {
            // `100 Continue` goes straight to the socket: what is owed before it goes first.
            return Next::Close;
        }
        let body = match &admitted {
            Admitted::Refused(_) => Ok(bytes::Bytes::new()),
            Admitted::Body(room, _) => Box::pin(reader.read_body(stream, &head, room)).await,
        };
        let body = match body {
            Ok(body) => body,
            Err(ReadError::Refused(resp, _)) => {
                metrics.response(resp.status.code());
                if answers.write(ctx, stream).await {
                    Box::pin(request::refuse(stream, resp.with_headers(cors), head.minor_version)).await;
                }
                return Next::Close;
            }
            Err(_) => return Next::Close,
        };
        let (room, decided) = match admitted {
            Admitted::Refused(r) => (None, Err(r)),
            Admitted::Body(room, decided) => (Some(room), Ok(decided)),
        };
        // The body is read: its room goes back to the worker's budget.
        drop(room);
        let mut response = match decided {
            Err(refused) | Ok(Decided::Invalid(refused)) => refused,
            Ok(Decided::One(prepared))
                if matches!(route, Route::Publish(_))
                    && keep_alive
                    && answers.may_defer()
                    && reader.next_head_ready(stream.as_raw_fd()) =>
            {
                match api::publish::with_body(prepared, body) {
                    Ok((publisher, ev)) => {
                        answers.defer(ctx, publisher, ev, head.minor_version, keep_alive, cors).await;
                        continue;
                    }
                    Err(refused) => refused,
                }
            }
            Ok(decided) => {
                // Whatever this request does, the publishes before it are done first.
                answers.settle(ctx).await;
                match Box::pin(dispatch(ctx, &head, path, route, decided, body, cors.clone())).await {
                    Ok(Dispatched::Become(next)) => return Next::Become(next),
                    Ok(Dispatched::Respond(response)) | Err(response) => response,
                }
            }
        };
        response.headers.extend(cors);
        answers.add(ctx, response, Wire { minor_version: head.minor_version, keep_alive, head_only }).await;
        if !keep_alive {
            return Next::Close;
        }
        if (answers.full() || !reader.holds_next_head()) && !answers.write(ctx, stream).await {
            return Next::Close;
        }
    }
}

/// Answers `resp` on a connection that will not be served, then closes it cleanly.
pub async fn refuse_now(stream: &TcpStream, resp: Response) {
    request::refuse(stream, resp, 1).await;
}

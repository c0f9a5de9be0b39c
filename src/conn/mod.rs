//! A connection's life: read requests, answer them in order, and maybe become a stream.
//!
//! Each connection is one monoio task on the worker that accepted it. While it speaks
//! request/response it owns a read buffer; once it becomes an event stream the buffer is
//! dropped, the stream is parked with the worker's watcher and the task ends. A held
//! long-poll is parked the same way until it has something to answer; then a new task
//! (`resume_poll`) answers it and goes on reading requests. A WebSocket is parked between
//! messages, and a new task (`resume_ws`) serves the next ones.

mod answers;
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
use crate::api::subscribe::{PollRequest, StreamRequest, Transport};
use crate::api::{self};
use crate::auth;
use crate::metrics::Transport as Doing;
use crate::proto;
use crate::proto::http1::{BodyKind, Method, RequestHead, Response, Status};
use crate::route::{Route, route};
use crate::seeds;
use crate::shard::parked;
use crate::shard::state::{ConnKey, ShardRef};
use answers::Answers;
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

impl parked::Resume for longpoll::Waiting {
    fn resume(self: Box<Self>, shard: ShardRef, key: ConnKey, stream: TcpStream) {
        monoio::spawn(resume_poll(shard, key, stream, *self));
    }
}

impl parked::Resume for ws::Session {
    fn resume(self: Box<Self>, shard: ShardRef, key: ConnKey, stream: TcpStream) {
        monoio::spawn(resume_ws(shard, key, stream, *self));
    }
}

/// Takes a parked long-poll back into a task (the watcher saw it get something to answer,
/// or its peer send something): answers it, then serves the connection's next requests.
async fn resume_poll(shard: ShardRef, key: ConnKey, stream: TcpStream, waiting: longpoll::Waiting) {
    let (framing, resume, loopback) = waiting.into_parts();
    let ctx = Ctx::new(shard, key, loopback, resume);
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
            let stays = longpoll::answer_when_ready(&ctx, &stream, framing, false).await;
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
            // its own waiting state, not the largest of the three.
            Next::Stream(req, chunked, cors) => {
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
            Next::WebSocket(mode, accept) => {
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
            Next::Poll(req, framing) => {
                reader.release();
                now_doing(Doing::LongPoll);
                // A poll with nothing else buffered behind it waits without a task.
                let parkable = reader.is_empty();
                match longpoll::hold(&ctx, &stream, req, framing, parkable).await {
                    longpoll::Outcome::Answered(true) => now_doing(Doing::Http),
                    longpoll::Outcome::Answered(false) => break,
                    longpoll::Outcome::Waiting(framing) => {
                        let waiting = longpoll::Waiting::new(framing, ctx.resume.take(), ctx.loopback);
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
    /// Becomes an event stream (`true`: HTTP/1.1 chunked), with these CORS headers.
    Stream(StreamRequest, bool, Vec<(&'static str, String)>),
    /// Upgrades to a WebSocket (the accept key is computed).
    WebSocket(ws::Mode, String),
    /// Holds a long-poll, then reads requests again if the connection stays.
    Poll(PollRequest, longpoll::Framing),
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
                    Ok(next) => return next,
                    Err(response) => response,
                }
            }
        };
        response.headers.extend(cors);
        answers.add(ctx, response, head.minor_version, keep_alive, head_only).await;
        if !keep_alive {
            return Next::Close;
        }
        if (answers.full() || !reader.holds_next_head()) && !answers.write(ctx, stream).await {
            return Next::Close;
        }
    }
}

/// What the request head decided, before any body is read.
enum Admitted {
    /// Refused, and no body is coming: the refusal is the answer, the connection goes on.
    Refused(Response),
    /// The body may be read, into `BodyRoom`; what was decided goes to the handler.
    Body(BodyRoom, Decided),
}

/// What a route's handler is given from the head.
enum Decided {
    Nothing,
    /// A bad request from a publisher with rights: the answer, once the body is read.
    Invalid(Response),
    /// A publish to one topic (`POST /pub/{topic}`, a seed route's POST): checked.
    One(api::publish::Prepared),
    /// A publisher whose topics come with the body (the batch, checked per line when it is
    /// published), or one with the right to `/admin/pause`.
    Publisher(api::publish::Publisher),
}

impl Decided {
    /// A single publish's head: prepared, to be answered after its body, or refused now.
    fn one(prepared: Result<api::publish::Prepared, api::publish::NotPrepared>) -> Result<Decided, Response> {
        match prepared {
            Ok(p) => Ok(Decided::One(p)),
            Err(api::publish::NotPrepared::Invalid(r)) => Ok(Decided::Invalid(r)),
            Err(api::publish::NotPrepared::Refused(r)) => Err(r),
        }
    }
}

/// Decides from the head alone: the publish rights of the routes that publish, the body's
/// size against the route's limit, and room for it in the worker's budget for bodies being
/// read.
fn admit(ctx: &Ctx, head: &RequestHead, route: &Route<'_>) -> Result<Admitted, Response> {
    let post = head.method == Method::Post;
    let decided = match *route {
        Route::Publish(raw) => Decided::one(api::publish::prepare(ctx, head, raw))?,
        Route::PublishBatch => Decided::Publisher(api::publish::check_rights(ctx, head)?),
        Route::WaveEvents(token) if post => Decided::one(seeds::wave::prepare(ctx, head, token))?,
        Route::MemberEvents if post => Decided::one(seeds::member::prepare(ctx, head))?,
        Route::AdminPause => Decided::Publisher(seeds::push::admit_pause(ctx, head)?),
        _ => Decided::Nothing,
    };
    let limit = route.body_limit(&head.method, ctx.config.max_event_bytes, ctx.config.max_batch_bytes);
    let room = match head.body {
        BodyKind::None => 0,
        BodyKind::Length(n) if limit == 0 => return Err(no_body_here(route, n)),
        BodyKind::Length(n) if n > limit as u64 => {
            return Err(Response::error(
                Status::PayloadTooLarge,
                &format!("request body larger than {limit} bytes"),
                "/body",
            ));
        }
        BodyKind::Length(n) => n as usize,
        // Its size is found as it comes: room for the most it may be.
        BodyKind::Chunked => limit,
    };
    let room = BodyRoom::take(ctx, room, limit).ok_or_else(|| {
        Response::error(Status::Unavailable, "too many request bodies being read; try again shortly", "/body")
            .with_header("Retry-After", "1")
    })?;
    Ok(Admitted::Body(room, decided))
}

/// The refusal of a body on a route that takes none.
fn no_body_here(route: &Route<'_>, len: u64) -> Response {
    match route {
        Route::NotFound => Response::error(Status::NotFound, "no such route", "/path"),
        Route::MethodNotAllowed(allow) => {
            Response::error(Status::MethodNotAllowed, &format!("method not allowed; allowed: {allow}"), "/method")
                .with_header("Allow", *allow)
        }
        _ => Response::error(
            Status::PayloadTooLarge,
            &format!("this route takes no request body ({len} bytes sent)"),
            "/body",
        ),
    }
}

/// Room held in the worker's budget for a request body being read (`max_body_memory`, split
/// between workers), given back when dropped. A body is refused with 503 rather than read
/// past the budget: bodies arriving slowly cannot add up to unbounded memory.
pub struct BodyRoom {
    shard: crate::shard::state::ShardRef,
    bytes: usize,
    /// The body's deadline: `body_timeout`, plus a second per 64 KiB it may hold.
    pub deadline: monoio::time::Instant,
    /// Its limit.
    pub limit: usize,
}

/// The slowest rate a large body is given time for, in bytes per second.
pub const BODY_MIN_RATE: usize = 64 * 1024;

impl BodyRoom {
    fn take(ctx: &Ctx, bytes: usize, limit: usize) -> Option<BodyRoom> {
        let timeout = ctx.config.body_timeout + Duration::from_secs((limit.max(bytes) / BODY_MIN_RATE) as u64);
        let deadline = monoio::time::Instant::now() + timeout;
        if !ctx.shard.borrow_mut().reserve_body(bytes) {
            return None;
        }
        Some(BodyRoom { shard: ctx.shard.clone(), bytes, deadline, limit })
    }
}

impl Drop for BodyRoom {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shard.try_borrow_mut() {
            s.release_body(self.bytes);
        }
    }
}

/// Runs the handler `route` names: either the connection goes on as something else
/// (`Ok(Next)`: a stream, a WebSocket, a held poll) or the request gets a response.
async fn dispatch(
    ctx: &Ctx,
    head: &RequestHead,
    path: &str,
    route: Route<'_>,
    decided: Decided,
    body: bytes::Bytes,
    cors: Vec<(&'static str, String)>,
) -> Result<Next, Response> {
    let keep_alive = head.keep_alive && !ctx.mesh.shutting_down();
    if head.method == Method::Options
        && let Route::MethodNotAllowed(allow) = route
    {
        // A CORS preflight (or a plain OPTIONS): what the path allows, and the CORS grant
        // when the origin is allowed.
        let mut r = Response::new(Status::NoContent, "text/plain", "").with_header("Allow", allow);
        r.headers.extend(auth::cors::preflight(&ctx.config.cors_origins, head, allow).unwrap_or_default());
        return Err(r);
    }
    if route.subscribes(&head.method) {
        may_name_topics(ctx).map_err(|e| e.response())?;
    }
    Err(match route {
        Route::Health => Response::new(Status::Ok, "text/plain", "ok"),
        Route::Metrics => {
            Response::new(Status::Ok, "text/plain; version=0.0.4", ctx.mesh.metrics.render(&ctx.mesh.queues()))
        }
        Route::Publish(_) | Route::PublishBatch | Route::AdminPause => match decided {
            Decided::One(prepared) => api::publish::single(ctx, prepared, body).await,
            Decided::Publisher(who) if route == Route::PublishBatch => api::publish::batch(ctx, &who, body).await,
            Decided::Publisher(_) => seeds::push::pause(ctx, head).await,
            // Invalid requests are answered before dispatch.
            Decided::Invalid(_) | Decided::Nothing => Response::error(Status::Internal, "request not admitted", "/"),
        },
        Route::Subscribe(topics) => match api::subscribe::transport(head) {
            Transport::EventStream => {
                let mut req = api::subscribe::event_stream(head, topics)?;
                req.expires = api::subscribe::authorize(&ctx.config, head, &req.topics)?.expires();
                return Ok(Next::Stream(req, head.minor_version == 1, cors));
            }
            Transport::LongPoll => {
                let mut req = api::subscribe::long_poll(head, topics)?;
                req.stream.expires = api::subscribe::authorize(&ctx.config, head, &req.stream.topics)?.expires();
                let style = longpoll::Style::Events;
                let framing = longpoll::Framing { minor_version: head.minor_version, keep_alive, cors, style };
                return Ok(Next::Poll(req, framing));
            }
            Transport::WebSocket => {
                // Every refusal is an HTTP answer, before anything is upgraded.
                let accept = proto::ws::handshake::check(head)?;
                let cookie_ok = websocket_origin(ctx, head)?;
                let mut req = api::subscribe::event_stream(head, topics)?;
                let identity = api::subscribe::authorize_from(&ctx.config, head, &req.topics, cookie_ok)?;
                req.expires = identity.expires();
                // Publish rights: the key (or loopback) at the handshake, else the token's
                // `publish` claim, wherever the token came from (a browser cannot set
                // `Authorization` on a WebSocket).
                let publisher = api::publish::check_rights(ctx, head).ok().or_else(|| match &identity {
                    auth::rights::Identity::Token(c) if !c.publish.is_empty() => {
                        Some(api::publish::Publisher::Token(c.clone()))
                    }
                    _ => None,
                });
                return Ok(Next::WebSocket(ws::Mode::PubSub { req, publisher, identity }, accept));
            }
        },
        Route::WsEcho if ctx.config.ws_echo => {
            let accept = proto::ws::handshake::check(head)?;
            return Ok(Next::WebSocket(ws::Mode::Echo, accept));
        }
        Route::WsEcho => Response::error(Status::NotFound, "no route for /ws/echo (start with --ws-echo)", "/path"),
        Route::WaveEvents(_) if head.method == Method::Post => match decided {
            Decided::One(prepared) => seeds::wave::send(ctx, prepared, body).await,
            _ => Response::error(Status::Internal, "request not admitted", "/"),
        },
        Route::WaveEvents(token) => {
            let remembered = ctx.resume.borrow().clone();
            let req = seeds::wave::poll(head, token, remembered)?;
            let style = longpoll::Style::Raw;
            let framing = longpoll::Framing { minor_version: head.minor_version, keep_alive, cors, style };
            return Ok(Next::Poll(req, framing));
        }
        Route::MemberEvents if head.method == Method::Post => match decided {
            Decided::One(prepared) => seeds::member::send(ctx, prepared, body).await,
            _ => Response::error(Status::Internal, "request not admitted", "/"),
        },
        Route::MemberEvents if api::subscribe::transport(head) == Transport::WebSocket => {
            let accept = proto::ws::handshake::check(head)?;
            let cookie_ok = websocket_origin(ctx, head)?;
            return Ok(Next::WebSocket(ws::Mode::Chat(seeds_chat_identity(ctx, head, cookie_ok)), accept));
        }
        Route::MemberEvents => {
            let req = seeds::member::subscribe(ctx, head)?;
            return Ok(Next::Stream(req, head.minor_version == 1, cors));
        }
        Route::EventSource(types) => {
            let req = seeds::push::subscribe(ctx, head, types)?;
            return Ok(Next::Stream(req, head.minor_version == 1, cors));
        }
        Route::NotFound => Response::error(Status::NotFound, &format!("no route for {path}"), "/path"),
        Route::MethodNotAllowed(allow) => {
            Response::error(Status::MethodNotAllowed, &format!("method not allowed; allowed: {allow}"), "/method")
                .with_header("Allow", allow)
        }
    })
}

/// A WebSocket upgrade's `Origin` (see `auth::cors::websocket`): refused with 403, or
/// whether the `token` cookie may identify it.
fn websocket_origin(ctx: &Ctx, head: &RequestHead) -> Result<bool, Response> {
    match auth::cors::websocket(&ctx.config.cors_origins, head) {
        auth::cors::WsOrigin::Trusted => Ok(true),
        auth::cors::WsOrigin::WithoutCookie => Ok(false),
        auth::cors::WsOrigin::Refused => Err(Response::error(
            Status::Forbidden,
            "a WebSocket from this origin is not allowed (cors_origins lists the origins that may)",
            "/headers/origin",
        )),
    }
}

/// The chat events API needs a session: the user topic of a valid token and when the token
/// expires, or why not.
fn seeds_chat_identity(
    ctx: &Ctx,
    head: &RequestHead,
    cookie_ok: bool,
) -> Result<(std::sync::Arc<str>, Option<u64>), String> {
    use auth::rights::{Identity, Refused};
    let now = crate::clock::now_micros() as f64 / 1e6;
    let who = auth::rights::identify(head, &ctx.config, now, cookie_ok).map_err(|Refused(e)| e.to_string())?;
    let Identity::Token(c) = &who else {
        return Err("no token (Authorization: Bearer, cookie token, or ?token=)".into());
    };
    match c.sub.as_deref().map(|sub| format!("user:{sub}")) {
        Some(topic) if crate::pubsub::topic::valid_topic(&topic) => Ok((topic.into(), who.expires())),
        _ => Err("the token names no user (sub)".into()),
    }
}

/// Whether the connection may name new topics now (see `shard::state::Naming`).
pub fn may_name_topics(ctx: &Ctx) -> Result<(), NamingTooFast> {
    let mut s = ctx.shard.borrow_mut();
    let Some(c) = s.conn(ctx.key) else { return Ok(()) };
    c.naming.allows(crate::clock::Stamp::now()).map_err(NamingTooFast)
}

/// A connection named new topics faster than it may; it may again after this long.
pub struct NamingTooFast(Duration);

impl NamingTooFast {
    pub fn message(&self) -> String {
        use crate::shard::state::{NAMING_BURST, NAMING_RATE};
        format!(
            "this connection names new topics too fast (at most {NAMING_BURST} at once, then {NAMING_RATE} a second)"
        )
    }

    /// The refusal: 429, and when to come back.
    pub fn response(&self) -> Response {
        Response::error(Status::TooManyRequests, &self.message(), "/topics")
            .with_header("Retry-After", (self.0.as_secs() + 1).to_string())
    }
}

/// The answer to a subscription an owner refused: the node keeps `max_topics`.
pub fn too_many_topics() -> Response {
    Response::error(Status::Unavailable, "a topic would be new and the server keeps max_topics already", "/topics")
        .with_header("Retry-After", "5")
}

/// Answers a stream or WebSocket whose subscription an owner refused (`flags::REFUSED`):
/// nothing of it has gone out (its head waits for the owners), so it gets the 503 instead,
/// and the connection closes.
async fn answer_refused(ctx: &Ctx, stream: &TcpStream, minor_version: u8, cors: Vec<(&'static str, String)>) {
    if let Some(c) = ctx.shard.borrow_mut().conn(ctx.key) {
        c.outbox.clear();
    }
    ctx.mesh.metrics.workers[ctx.worker].response(503);
    request::refuse(stream, too_many_topics().with_headers(cors), minor_version).await;
}

/// Answers `resp` on a connection that will not be served, then closes it cleanly.
pub async fn refuse_now(stream: &TcpStream, resp: Response) {
    request::refuse(stream, resp, 1).await;
}

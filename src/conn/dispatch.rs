//! From a request's head to its handler: what the head alone decides before any body is
//! read (rights, limits, room for the body: `admit`), then the handler the route names
//! (`dispatch`), which answers or says what the connection becomes.

use super::limits::{BodyRoom, may_name_topics};
use super::{longpoll, ws};
use crate::api::ctx::Ctx;
use crate::api::subscribe::{PollRequest, StreamRequest, Transport};
use crate::api::{self};
use crate::auth;
use crate::proto;
use crate::proto::http1::{BodyKind, Method, RequestHead, Response, Status};
use crate::route::Route;
use crate::seeds;

/// What the request head decided, before any body is read.
pub enum Admitted {
    /// Refused, and no body is coming: the refusal is the answer, the connection goes on.
    Refused(Response),
    /// The body may be read, into `BodyRoom`; what was decided goes to the handler.
    Body(BodyRoom, Decided),
}

/// What a route's handler is given from the head.
pub enum Decided {
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
pub fn admit(ctx: &Ctx, head: &RequestHead, route: &Route<'_>) -> Result<Admitted, Response> {
    let post = head.method == Method::Post;
    let decided = match *route {
        Route::Publish(raw) => Decided::one(api::publish::prepare(ctx, head, raw))?,
        Route::PublishBatch => Decided::Publisher(api::publish::check_rights(ctx, head)?),
        Route::WaveEvents(token) if post => Decided::one(seeds::wave::prepare(ctx, head, token))?,
        Route::MemberEvents if post => Decided::one(seeds::member::prepare(ctx, head))?,
        Route::AdminPause => Decided::Publisher(seeds::push::admit_pause(ctx, head)?),
        Route::TopicInfo(raw) | Route::TopicPresence(raw) => Decided::one(api::topics::prepare(ctx, head, raw))?,
        Route::TopicList => Decided::Publisher(api::topics::admit_list(ctx, head)?),
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

/// What a request's handler decided: an answer, or what the connection becomes.
pub enum Dispatched {
    Respond(Response),
    Become(Become),
}

/// What a connection becomes instead of answering.
pub enum Become {
    /// An event stream (`chunked`: HTTP/1.1 chunked framing), with these CORS headers.
    Stream { req: StreamRequest, chunked: bool, cors: Vec<(&'static str, String)> },
    /// A WebSocket, speaking `mode` (the handshake's accept key is computed).
    WebSocket { mode: ws::Mode, accept: String },
    /// A held long-poll; the connection reads requests again if it stays.
    Poll { req: PollRequest, framing: longpoll::Framing },
}

/// Runs the handler `route` names: the request is answered, or the connection becomes a
/// stream, a WebSocket or a held poll; or it is refused (`Err`, the refusal to answer with).
pub async fn dispatch(
    ctx: &Ctx,
    head: &RequestHead,
    path: &str,
    route: Route<'_>,
    decided: Decided,
    body: bytes::Bytes,
    cors: Vec<(&'static str, String)>,
) -> Result<Dispatched, Response> {
    let keep_alive = head.keep_alive && !ctx.mesh.shutting_down();
    if head.method == Method::Options
        && let Route::MethodNotAllowed(allow) = route
    {
        // A CORS preflight (or a plain OPTIONS): what the path allows, and the CORS grant
        // when the origin is allowed.
        let mut r = Response::new(Status::NoContent, "text/plain", "").with_header("Allow", allow);
        r.headers.extend(auth::cors::preflight(&ctx.config.cors_origins, head, allow).unwrap_or_default());
        return Ok(Dispatched::Respond(r));
    }
    if route.subscribes(&head.method) {
        may_name_topics(ctx).map_err(|e| e.response())?;
    }
    let stream = |req, cors| Ok(Dispatched::Become(Become::Stream { req, chunked: head.minor_version == 1, cors }));
    let poll = |req, framing| Ok(Dispatched::Become(Become::Poll { req, framing }));
    let websocket = |mode, accept| Ok(Dispatched::Become(Become::WebSocket { mode, accept }));
    Ok(Dispatched::Respond(match route {
        Route::Health => Response::new(Status::Ok, "text/plain", "ok"),
        // One node takes publishes whenever it answers: once a stop begins its listeners are
        // closed, so a probe is refused rather than answered.
        Route::Ready => Response::new(Status::Ok, "text/plain", "ready"),
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
                let who = api::subscribe::authorize(&ctx.config, head, &req.topics)?;
                req.opened_by(&who);
                return stream(req, cors);
            }
            Transport::LongPoll => {
                let mut req = api::subscribe::long_poll(head, topics)?;
                let who = api::subscribe::authorize(&ctx.config, head, &req.stream.topics)?;
                req.stream.opened_by(&who);
                let style = longpoll::Style::Events;
                let framing = longpoll::Framing { minor_version: head.minor_version, keep_alive, cors, style };
                return poll(req, framing);
            }
            Transport::WebSocket => {
                // Every refusal is an HTTP answer, before anything is upgraded.
                let accept = proto::ws::handshake::check(head)?;
                let cookie_ok = websocket_origin(ctx, head)?;
                let mut req = api::subscribe::event_stream(head, topics)?;
                let identity = api::subscribe::authorize_from(&ctx.config, head, &req.topics, cookie_ok)?;
                req.opened_by(&identity);
                // Publish rights: the key (or loopback) at the handshake, else the token's
                // `publish` claim, wherever the token came from (a browser cannot set
                // `Authorization` on a WebSocket).
                let publisher = api::publish::check_rights(ctx, head).ok().or_else(|| match &identity {
                    auth::rights::Identity::Token(c) if !c.publish.is_empty() => {
                        Some(api::publish::Publisher::Token(c.clone()))
                    }
                    _ => None,
                });
                return websocket(ws::Mode::PubSub { req, publisher, identity }, accept);
            }
        },
        Route::WsEcho if ctx.config.ws_echo => {
            let accept = proto::ws::handshake::check(head)?;
            return websocket(ws::Mode::Echo, accept);
        }
        Route::WsEcho => Response::error(Status::NotFound, "no route for /ws/echo (start with --ws-echo)", "/path"),
        Route::WaveEvents(_) if head.method == Method::Post => match decided {
            Decided::One(prepared) => seeds::wave::send(ctx, prepared, body).await,
            _ => Response::error(Status::Internal, "request not admitted", "/"),
        },
        Route::WaveEvents(token) => {
            let remembered = ctx.stopped_at.borrow().clone();
            let req = seeds::wave::poll(head, token, remembered)?;
            let style = longpoll::Style::DataOnly;
            let framing = longpoll::Framing { minor_version: head.minor_version, keep_alive, cors, style };
            return poll(req, framing);
        }
        Route::MemberEvents if head.method == Method::Post => match decided {
            Decided::One(prepared) => seeds::member::send(ctx, prepared, body).await,
            _ => Response::error(Status::Internal, "request not admitted", "/"),
        },
        Route::MemberEvents if api::subscribe::transport(head) == Transport::WebSocket => {
            let accept = proto::ws::handshake::check(head)?;
            let cookie_ok = websocket_origin(ctx, head)?;
            return websocket(ws::Mode::Chat(seeds_chat_identity(ctx, head, cookie_ok)), accept);
        }
        Route::MemberEvents => {
            let req = seeds::member::subscribe(ctx, head)?;
            return stream(req, cors);
        }
        Route::EventSource(types) => {
            let req = seeds::push::subscribe(ctx, head, types)?;
            return stream(req, cors);
        }
        Route::TopicInfo(_) => match decided {
            Decided::One(prepared) => api::topics::info(ctx, prepared.topic).await,
            _ => Response::error(Status::Internal, "request not admitted", "/"),
        },
        Route::TopicPresence(_) => match decided {
            Decided::One(prepared) => api::topics::presence(ctx, prepared.topic).await,
            _ => Response::error(Status::Internal, "request not admitted", "/"),
        },
        Route::TopicList => match decided {
            Decided::Publisher(who) => api::topics::list(ctx, head, &who).await,
            _ => Response::error(Status::Internal, "request not admitted", "/"),
        },
        Route::NotFound => Response::error(Status::NotFound, &format!("no route for {path}"), "/path"),
        Route::MethodNotAllowed(allow) => {
            Response::error(Status::MethodNotAllowed, &format!("method not allowed; allowed: {allow}"), "/method")
                .with_header("Allow", allow)
        }
    }))
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

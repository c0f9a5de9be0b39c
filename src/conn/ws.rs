//! A connection that has become a WebSocket.
//!
//! Like an event stream, the delivery task writes events into its outbox, and between messages
//! it has no task: it is parked with the worker's watcher (`shard::parked`), which keeps its
//! `Session` and spawns a task when the peer sends something or the connection is closing.
//! That task reads: frames go through the pure `proto::ws` reader (no read buffer is kept
//! between messages), text messages through the JSON protocol in `api::ws`, pings are
//! answered, and the close handshake is echoed. A broken rule closes with its RFC code.

use std::future::poll_fn;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::task::Poll;

use bytes::Bytes;
use monoio::net::TcpStream;
use serde_json::{Value, json};

use super::wake::{self, Wake, Writable};
use crate::api::ctx::Ctx;
use crate::api::publish::{NewEvent, Publisher, Refusal, publish};
use crate::api::subscribe::{StreamRequest, check_presence, check_topic};
use crate::api::ws::{Request, error_reply, parse, reply};
use crate::auth::rights::Identity;
use crate::clock::Stamp;
use crate::clock::now_micros;
use crate::proto::longpoll::ts_json;
use crate::proto::ws::frame::close_frame;
use crate::proto::ws::reader::Violation;
use crate::proto::ws::{CloseCode, Opcode, WsEvent, WsReader, encode_frame, handshake};
use crate::seeds::chat;
use crate::shard::conn::{Conn, Phase};
use crate::shard::subscription::{Delivery, Namer, Subscription};
use crate::sys;

/// Most topics one WebSocket may hold at once.
const MAX_TOPICS: usize = 256;
/// Slack on top of `max_event_bytes` for the JSON around a published event (API.md §7).
const ENVELOPE_SLACK: usize = 4096;
/// The echo endpoint exists for conformance suites, whose largest messages are 16 MiB.
const ECHO_MAX_MESSAGE: usize = 16 * 1024 * 1024 + 64 * 1024;

/// What the WebSocket is for.
pub enum Mode {
    /// `GET /sub/{topics}`: the pub/sub protocol, starting with these topics, for this
    /// subscriber (and publisher, if the handshake carried publish rights).
    PubSub { req: StreamRequest, publisher: Option<Publisher>, identity: Identity },
    /// `GET /ws/echo`: every message back, for conformance suites.
    Echo,
    /// `/events` upgraded: the chat events API (seed 002), pushing the user's own topic — or,
    /// without a session, the reason to send before closing.
    Chat(Result<(std::sync::Arc<str>, Option<u64>), String>),
}

/// What a WebSocket's task needs between messages. While the connection is parked (nothing
/// read is half-done) this is all that is kept of it, besides its slab entry.
pub struct Session {
    kind: Kind,
    reader: WsReader,
    loopback: bool,
}

enum Kind {
    PubSub { publisher: Option<Publisher>, identity: Identity },
    Echo,
    Chat,
}

impl Session {
    pub fn loopback(&self) -> bool {
        self.loopback
    }
}

/// How a WebSocket's task ends.
pub enum Ending {
    /// Closed (or cut): the connection is done.
    Closed,
    /// Nothing to do until the peer sends more: the connection can wait without a task.
    Idle(Session),
}

/// Opens the WebSocket and serves it until it closes or goes idle.
pub async fn run(ctx: &Ctx, stream: &TcpStream, mode: Mode, accept: String) -> Ending {
    let kind = match &mode {
        Mode::PubSub { publisher, identity, .. } => {
            Kind::PubSub { publisher: publisher.clone(), identity: identity.clone() }
        }
        Mode::Echo => Kind::Echo,
        Mode::Chat(_) => Kind::Chat,
    };
    let no_session = matches!(mode, Mode::Chat(Err(_)));
    let max_message =
        if matches!(kind, Kind::Echo) { ECHO_MAX_MESSAGE } else { ctx.config.max_event_bytes + ENVELOPE_SLACK };
    if !Box::pin(open(ctx, stream, mode, accept)).await {
        return Ending::Closed;
    }
    if no_session {
        // The error message went out with the upgrade; now the close.
        queue(ctx, close_frame(CloseCode::Policy.code(), "no session"));
        finish(ctx, stream).await;
        return Ending::Closed;
    }
    let session = Session { kind, reader: WsReader::new(max_message), loopback: ctx.loopback };
    serve(ctx, stream, session, false).await
}

/// Serves the WebSocket's messages until it closes or has nothing left to do. `must_read`: the
/// peer sent something (a parked connection's task starts by reading it).
pub async fn serve(ctx: &Ctx, stream: &TcpStream, mut session: Session, mut must_read: bool) -> Ending {
    let key = ctx.key;
    let fd = stream.as_raw_fd();
    let mut inbuf: Vec<u8> = Vec::new();
    let mut readable = pin!(stream.readable(false));
    let mut writable: Writable = None;
    loop {
        let wake = if must_read {
            must_read = false;
            Wake::Readable(Ok(()))
        } else if inbuf.is_empty()
            && session.reader.is_idle()
            && ctx.shard.borrow_mut().conn(key).is_some_and(|c| !c.is_ending())
        {
            // Between messages: the parked-stream watcher can wait for the next one.
            return Ending::Idle(session);
        } else {
            wake::next(ctx, readable.as_mut(), &mut writable).await
        };
        match wake {
            Wake::Readable(Err(_)) | Wake::Writable(Err(_)) => return Ending::Closed,
            Wake::Readable(Ok(())) => {
                let mut events = Vec::new();
                let read = read_frames(fd, &mut inbuf, &mut session.reader, &mut events);
                if !events.is_empty()
                    && let Some(c) = ctx.shard.borrow_mut().conn(key)
                {
                    c.last_read = Stamp::now();
                }
                for ev in events {
                    match (ev, &session.kind) {
                        (WsEvent::Text(text), Kind::Echo) => queue(ctx, encode_frame(Opcode::Text, text.as_bytes())),
                        (WsEvent::Binary(data), Kind::Echo) => queue(ctx, encode_frame(Opcode::Binary, &data)),
                        (WsEvent::Text(text), Kind::Chat) => {
                            if let Some(reply) = chat::on_message(&text, now_micros()) {
                                queue(ctx, reply);
                            }
                        }
                        (WsEvent::Text(text), Kind::PubSub { publisher, identity }) => {
                            Box::pin(on_message(ctx, &text, publisher.as_ref(), identity)).await
                        }
                        (WsEvent::Binary(_), _) => {
                            let errors = [(
                                "binary messages are not part of the protocol; send JSON text".into(),
                                "/".to_string(),
                            )];
                            queue(ctx, error_reply("error", &Default::default(), &errors));
                        }
                        (WsEvent::Ping(payload), _) => queue(ctx, encode_frame(Opcode::Pong, &payload)),
                        (WsEvent::Pong, _) => {}
                        (WsEvent::Close { code, .. }, _) => {
                            // Echo the close (its code, or none for an empty close), then end —
                            // unless this is the answer to our own close (the server stopping).
                            let ours = ctx.shard.borrow_mut().conn(key).is_some_and(|c| c.phase() == Phase::Ending);
                            if !ours {
                                let echo = match code {
                                    Some(code) => close_frame(code, ""),
                                    None => encode_frame(Opcode::Close, b""),
                                };
                                queue(ctx, echo);
                            }
                            finish(ctx, stream).await;
                            return Ending::Closed;
                        }
                    }
                }
                match read {
                    Ok(true) => readable.set(stream.readable(false)),
                    Ok(false) => return Ending::Closed,
                    Err(v) => {
                        queue(ctx, close_frame(v.code.code(), v.reason));
                        finish(ctx, stream).await;
                        return Ending::Closed;
                    }
                }
            }
            Wake::Writable(Ok(())) => wake::writable_again(ctx, &mut writable),
            Wake::Changed(Phase::Closed) => return Ending::Closed,
            Wake::Changed(Phase::Ending) => {
                finish(ctx, stream).await;
                return Ending::Closed;
            }
            // The socket filled up.
            Wake::Changed(_) => wake::arm(stream, &mut writable),
        }
    }
}

/// Sends what is queued (a close frame last), then closes cleanly.
async fn finish(ctx: &Ctx, stream: &TcpStream) {
    ctx.shard.borrow_mut().end_conn(ctx.key);
    Box::pin(crate::shard::closing::close(&ctx.shard, ctx.key, stream)).await
}

/// Queues a frame for this connection and flushes (within the outbox cap).
fn queue(ctx: &Ctx, frame: Bytes) {
    ctx.shard.borrow_mut().send(ctx.key, frame);
}

/// Reads what the socket has, parsing complete frames into `events`. `Ok(false)` when the
/// peer has gone. Only an unfinished frame stays in `inbuf` (bounded by the reader's cap).
fn read_frames(
    fd: i32,
    inbuf: &mut Vec<u8>,
    reader: &mut WsReader,
    events: &mut Vec<WsEvent>,
) -> Result<bool, Violation> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match sys::recv_nonblocking(fd, &mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                inbuf.extend_from_slice(&chunk[..n]);
                let used = reader.read(inbuf, events)?;
                inbuf.drain(..used);
                if inbuf.is_empty() {
                    *inbuf = Vec::new();
                }
                // Act on what arrived before reading more: a close ends reading, and many
                // messages at once get answered before more are taken in.
                if events.iter().any(|e| matches!(e, WsEvent::Close { .. })) || events.len() >= 64 {
                    return Ok(true);
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => return Ok(true),
            Err(_) => return Ok(false),
        }
    }
}

/// Queues the 101 and, for the pub/sub protocol, joins the URL's topics: the upgrade goes
/// out once every owner has registered the subscription; if one refuses (the node keeps
/// `max_topics`), a 503 goes out instead.
async fn open(ctx: &Ctx, stream: &TcpStream, mode: Mode, accept: String) -> bool {
    let key = ctx.key;
    let requests = {
        let mut s = ctx.shard.borrow_mut();
        let Some(c) = s.conn(key) else { return false };
        c.outbox.push(handshake::switching(&accept, &[("Herald-Worker", &ctx.worker.to_string())]));
        c.websocket = true;
        // Liveness counts from the upgrade, not from when the connection was accepted.
        c.last_read = Stamp::now();
        // Without a subscription it is live at once.
        match mode {
            Mode::Echo => {
                s.go_live(key);
                Vec::new()
            }
            Mode::Chat(Err(why)) => {
                c.outbox.push(chat::no_session(&why));
                s.go_live(key);
                Vec::new()
            }
            Mode::Chat(Ok((user, expires))) => {
                let mut sub = Subscription::new(vec![user], None, Delivery::WsData);
                sub.expires_at(expires);
                // The chat session says who it is.
                sub.names = Namer::Identity;
                s.join(key, sub, &[crate::cursor::Resume::Live])
            }
            Mode::PubSub { req, .. } => {
                let user = req.presence(&ctx.config);
                let mut sub = Subscription::new(req.topics, req.types, Delivery::Ws);
                sub.present_as(user);
                sub.expires_at(req.expires);
                sub.names = req.names;
                s.join(key, sub, &req.from)
            }
        }
    };
    super::stream::wait_for_owners(ctx, stream, requests, 1, Vec::new()).await
}

/// One message of the JSON protocol.
async fn on_message(ctx: &Ctx, text: &str, publisher: Option<&Publisher>, identity: &Identity) {
    let m = parse(text, ctx.config.max_event_bytes);
    let frame = match m.request {
        Err(errors) => error_reply(m.reply_event, &m.input, &errors),
        Ok(Request::Ping) => {
            let ts: Value = serde_json::from_str(&ts_json(now_micros())).unwrap_or(Value::Null);
            reply("pong", &m.input, json!({ "ts": ts }))
        }
        Ok(Request::Publish { .. }) if publisher.is_none() => {
            let why = "publishing needs rights: loopback, or the publish key (or a token with a publish claim) at the handshake";
            error_reply(m.reply_event, &m.input, &[(why.into(), "/topic".to_string())])
        }
        Ok(Request::Publish { topic, kind, data, key }) => {
            let who = publisher.unwrap_or(&Publisher::Trusted);
            match publish(ctx, who, smallvec::smallvec![NewEvent { topic, kind, data, key }]).await {
                Ok(cursors) if cursors[0].duplicate => reply(
                    "published",
                    &m.input,
                    json!({ "event_id": cursors[0].cursor.to_string(), "duplicate": true }),
                ),
                Ok(cursors) => reply("published", &m.input, json!({ "event_id": cursors[0].cursor.to_string() })),
                Err(refused) => {
                    let topic = &refused.topic;
                    let (why, path) = match refused.why {
                        Refusal::Forbidden => (format!("no right to publish to {topic:?}"), "/topic"),
                        Refusal::TooManyTopics => (
                            format!("{topic:?} would be a new topic and the server keeps max_topics already"),
                            "/topic",
                        ),
                        Refusal::KeyReused => (
                            format!(
                                "this idempotency key was used for another event to {topic:?} within idempotency_ttl"
                            ),
                            "/idempotency_key",
                        ),
                    };
                    error_reply(m.reply_event, &m.input, &[(why, path.to_string())])
                }
            }
        }
        Ok(Request::Unsubscribe { topics }) => {
            // All or nothing, as a subscribe: a topic not held leaves every one held.
            let held: Vec<std::sync::Arc<str>> = ctx
                .shard
                .borrow_mut()
                .conn(ctx.key)
                .and_then(|c| c.sub.as_ref())
                .map(|s| s.topics.to_vec())
                .unwrap_or_default();
            let mut missing: Vec<std::sync::Arc<str>> = topics.iter().filter(|t| !held.contains(t)).cloned().collect();
            if missing.is_empty() {
                missing = ctx.shard.borrow_mut().leave_some(ctx.key, &topics);
            }
            if missing.is_empty() {
                reply("unsubscribed", &m.input, json!({ "topics": m.input.get("topics") }))
            } else {
                let errors: Vec<_> = topics
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| missing.contains(t))
                    .map(|(i, t)| (format!("not subscribed to {t:?}"), format!("/topics/{i}")))
                    .collect();
                error_reply(m.reply_event, &m.input, &errors)
            }
        }
        Ok(Request::Subscribe { topics, from }) => return subscribe(ctx, &m.input, topics, from, identity).await,
    };
    queue(ctx, frame);
}

async fn subscribe(
    ctx: &Ctx,
    input: &serde_json::Map<String, Value>,
    topics: Vec<std::sync::Arc<str>>,
    from: Vec<crate::cursor::Resume>,
    identity: &Identity,
) {
    let key = ctx.key;
    let held: Vec<std::sync::Arc<str>> =
        ctx.shard.borrow_mut().conn(key).and_then(|c| c.sub.as_ref()).map(|s| s.topics.to_vec()).unwrap_or_default();
    let mut errors: Vec<(String, String)> = topics
        .iter()
        .enumerate()
        .filter(|(_, t)| held.contains(t))
        .map(|(i, t)| (format!("already subscribed to {t:?}"), format!("/topics/{i}")))
        .collect();
    for (i, t) in topics.iter().enumerate() {
        let checked = check_presence(&ctx.config, t).and_then(|()| check_topic(identity, t).map_err(|(_, m)| m));
        if let Err(message) = checked {
            errors.push((message, format!("/topics/{i}")));
        }
    }
    if held.len() + topics.len() > MAX_TOPICS {
        errors.push((format!("at most {MAX_TOPICS} topics per connection"), "/topics".into()));
    }
    if let Err(e) = super::limits::may_name_topics(ctx) {
        errors.push((e.message(), "/topics".into()));
    }
    if !errors.is_empty() {
        return queue(ctx, error_reply("subscribed", input, &errors));
    }
    let ack = reply("subscribed", input, json!({ "topics": input.get("topics") }));
    let user = identity.user().map(std::sync::Arc::from);
    let requests = ctx.shard.borrow_mut().join_more(key, topics, &from, ack, user);
    if requests.is_empty() {
        return ctx.shard.borrow_mut().flush(key);
    }
    for (owner, msg) in requests {
        ctx.mesh.to_owner[owner].send(msg).await;
    }
    // The reply (then any replay) is queued when the last owner has answered. An owner that
    // refuses a new topic (the node keeps `max_topics`) has the shard close the WebSocket.
    let mut acked = false;
    poll_fn(|cx| {
        let mut s = ctx.shard.borrow_mut();
        acked = s.acked(key);
        if acked {
            return Poll::Ready(Phase::Live);
        }
        s.poll_until(key, Conn::is_ending, cx)
    })
    .await;
    if acked {
        ctx.shard.borrow_mut().flush(key);
    }
}

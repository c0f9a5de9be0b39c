//! `POST /pub/{topic}` and the ndjson batch `POST /pub` (API.md §2).
//!
//! A publish is validated here, then handed to each topic's owner through the mesh; the
//! response waits for the cursors the owners assign.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};
use smallvec::SmallVec;

use super::bad_request;
use crate::api::ctx::Ctx;
use crate::auth::jwt::{self, Claims};
use crate::auth::{cors, rights};
use crate::clock::now_micros;
use crate::keys::PublishKey;
use crate::proto::http1::response::Head;
use crate::proto::http1::{RequestHead, Response, Status, Wire};
use crate::proto::query::{param, percent_decode};
pub use crate::pubsub::msg::Assigned;
pub use crate::pubsub::msg::Refusal;
use crate::pubsub::msg::{ReplyTo, ToOwner};
use crate::pubsub::topic::{owner_of, valid_topic, valid_type};
use crate::shard::state::ShardRef;

/// One event to publish, validated.
pub struct NewEvent {
    pub topic: Arc<str>,
    pub kind: Option<Box<str>>,
    pub data: Bytes,
    /// Its `Idempotency-Key` (API.md §8), if the publisher gave one.
    pub key: Option<Box<str>>,
}

impl NewEvent {
    /// An event without an idempotency key.
    pub fn new(topic: Arc<str>, kind: Option<Box<str>>, data: Bytes) -> NewEvent {
        NewEvent { topic, kind, data, key: None }
    }
}

/// Longest idempotency key accepted.
const MAX_KEY_LEN: usize = 256;

/// An `Idempotency-Key` as given (a header's value, a batch line's or WebSocket message's
/// `idempotency_key`): 1-256 visible ASCII characters, optionally in double quotes (the IETF
/// draft sends it as a structured-field string; quoted or not, it is the same key).
pub fn idempotency_key(raw: &[u8]) -> Option<Box<str>> {
    let raw = match raw {
        [b'"', inner @ .., b'"'] => inner,
        other => other,
    };
    let visible = |b: &u8| (0x21..=0x7e).contains(b);
    if raw.is_empty() || raw.len() > MAX_KEY_LEN || !raw.iter().all(visible) {
        return None;
    }
    std::str::from_utf8(raw).ok().map(Box::from)
}

/// What a bad idempotency key is told.
pub const BAD_KEY: &str = "invalid idempotency key: expected 1-256 visible ASCII characters";

/// The events of one publish request; most have one, kept inline.
pub type Events = SmallVec<[NewEvent; 1]>;

/// The cursors of one publish request, in the order of its events; most have one.
pub type Cursors = SmallVec<[Assigned; 1]>;

/// An event of a publish that was refused: its index among the request's events, its topic.
#[derive(Debug)]
pub struct Refused {
    pub index: usize,
    pub topic: Arc<str>,
    pub why: Refusal,
}

impl Refused {
    /// The answer, its error pointing at `path`.
    pub fn response(&self, path: &str) -> Response {
        let topic = &self.topic;
        match self.why {
            Refusal::Forbidden => {
                Response::error(Status::Forbidden, &format!("no right to publish to {topic:?}"), path)
            }
            Refusal::TooManyTopics => Response::error(
                Status::Unavailable,
                &format!("{topic:?} would be a new topic and the server keeps max_topics already"),
                path,
            )
            .with_header("Retry-After", "5"),
            Refusal::KeyReused => Response::error(
                Status::Unprocessable,
                &format!(
                    "this idempotency key was used for another event to {topic:?} within idempotency_ttl; \
                     a retry must repeat the event, a new event needs a new key"
                ),
                &key_path(path),
            ),
        }
    }
}

/// Where an event's idempotency key was, for an answer whose error was pointing at `path`:
/// a batch line's field, or the header.
fn key_path(path: &str) -> String {
    if path.starts_with("/line/") { format!("{path}/idempotency_key") } else { "/headers/idempotency-key".into() }
}

/// Publishes `events` for `who`, each to its topic's owner, and waits for their cursors.
pub async fn publish(ctx: &Ctx, who: &Publisher, events: Events) -> Result<Cursors, Refused> {
    let submitted = submit(ctx, who, events).await?;
    cursors(ctx, submitted).await
}

/// Publishes handed to their owners whose cursors are still to come, awaited with
/// [`cursors`]. Dropped without that (its task gone mid-publish), its slot is freed as the
/// cursors arrive.
#[must_use]
pub struct Submitted {
    slot: Option<PublishKey>,
    shard: ShardRef,
    /// The events' topics, to name the one an owner refused.
    topics: SmallVec<[Arc<str>; 1]>,
}

impl Drop for Submitted {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take()
            && let Ok(mut s) = self.shard.try_borrow_mut()
        {
            s.abandon_publish(slot);
        }
    }
}

/// Hands `events` to their owners without waiting for the cursors. Every publish, whatever
/// route it came by (`/pub`, the batch, a WebSocket's `publish`, the seed routes), goes
/// through here: the rights for each topic are checked here, for all the events before any
/// is sent.
pub async fn submit(ctx: &Ctx, who: &Publisher, events: Events) -> Result<Submitted, Refused> {
    if let Some((index, ev)) = events.iter().enumerate().find(|(_, ev)| !who.may(&ev.topic)) {
        return Err(Refused { index, topic: ev.topic.clone(), why: Refusal::Forbidden });
    }
    let slot = ctx.shard.borrow_mut().open_publish(events.len());
    let topics = events.iter().map(|ev| ev.topic.clone()).collect();
    let submitted = Submitted { slot: Some(slot), shard: ctx.shard.clone(), topics };
    let ts_micros = now_micros();
    for (i, ev) in events.into_iter().enumerate() {
        let owner = owner_of(&ev.topic, ctx.mesh.workers);
        let reply = ReplyTo { worker: ctx.worker as u16, key: slot, index: i as u32 };
        let msg = ToOwner::Publish { topic: ev.topic, kind: ev.kind, data: ev.data, ts_micros, key: ev.key, reply };
        ctx.mesh.to_owner[owner].send(msg).await;
    }
    Ok(submitted)
}

/// Waits for the cursors of a submitted publish, in the order its events were given; or the
/// first event an owner refused (the others were published).
pub async fn cursors(ctx: &Ctx, submitted: Submitted) -> Result<Cursors, Refused> {
    let topics = submitted.topics.clone();
    let mut out = Cursors::new();
    for (index, c) in results(ctx, submitted).await.into_iter().enumerate() {
        match c {
            Ok(c) => out.push(c),
            Err(why) => {
                let topic = topics.get(index).cloned().unwrap_or_else(|| "".into());
                return Err(Refused { index, topic, why });
            }
        }
    }
    Ok(out)
}

/// Waits for what each event of a submitted publish got, in the order they were given.
pub async fn results(ctx: &Ctx, mut submitted: Submitted) -> Vec<Result<Assigned, Refusal>> {
    let Some(slot) = submitted.slot else { return Vec::new() };
    poll_fn(|cx| {
        let mut s = ctx.shard.borrow_mut();
        let Some(p) = s.publish(slot) else { return Poll::Ready(()) };
        if p.missing == 0 {
            Poll::Ready(())
        } else {
            p.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    })
    .await;
    submitted.slot = None;
    // Every cursor is in: the slot is only freed here, or abandoned by a drop.
    let done = ctx.shard.borrow_mut().close_publish(slot);
    done.into_iter().flat_map(|d| d.cursors).flatten().collect()
}

/// Who is publishing, once their rights are established (API.md §6).
#[derive(Debug, Clone)]
pub enum Publisher {
    /// Loopback (when no key is configured) or the publish key: any topic.
    Trusted,
    /// A subscriber token whose `publish` claim lists topic patterns.
    Token(Box<Claims>),
}

impl Publisher {
    pub fn may(&self, topic: &str) -> bool {
        match self {
            Publisher::Trusted => true,
            Publisher::Token(c) => rights::token_may_publish(c, topic),
        }
    }

    /// May publish to some topic: a token without a `publish` claim may not.
    pub fn may_publish_somewhere(&self) -> bool {
        match self {
            Publisher::Trusted => true,
            Publisher::Token(c) => c.publish.iter().any(|p| !p.is_empty()),
        }
    }

    /// May act on every topic at once (`/admin/pause`): the publish key (or loopback when no
    /// key is set), or a token whose `publish` claim is `*`.
    pub fn may_administer(&self) -> bool {
        match self {
            Publisher::Trusted => true,
            Publisher::Token(c) => c.publish.iter().any(|p| p == "*"),
        }
    }
}

/// Publishing is allowed from loopback by default; with `publish_key` set, the request must
/// carry `Authorization: Bearer <key>` (missing: 401, wrong: 403). A valid subscriber JWT may
/// also publish to the topics its `publish` claim lists.
pub fn check_rights(ctx: &Ctx, head: &RequestHead) -> Result<Publisher, Response> {
    let bearer = rights::bearer(head);
    let header = "/headers/authorization";
    if let (Some(key), Some(given)) = (&ctx.config.publish_key, bearer)
        && rights::constant_time_eq(given.as_bytes(), key.as_bytes())
    {
        return Ok(Publisher::Trusted);
    }
    if let (Some(secret), Some(given)) = (&ctx.config.jwt_secret, bearer)
        && jwt::looks_like_jwt(given)
    {
        return match jwt::verify(given, secret.as_bytes(), now_micros() as f64 / 1e6) {
            Ok(claims) => Ok(Publisher::Token(Box::new(claims))),
            Err(e) => Err(Response::error(Status::Unauthorized, &e.to_string(), header)),
        };
    }
    match (&ctx.config.publish_key, bearer) {
        (Some(_), Some(_)) => Err(Response::error(Status::Forbidden, "wrong publish key", header)),
        (Some(_), None) => {
            Err(Response::error(Status::Unauthorized, "publishing needs Authorization: Bearer <key>", header))
        }
        // Loopback is trusted for local programs, not for a page of an origin nobody listed
        // that a browser on this host (or a proxy forwarding to herald) sends here.
        (None, _) if ctx.loopback && cors::unlisted_origin(&ctx.config.cors_origins, head) => Err(Response::error(
            Status::Forbidden,
            "a request from a page of an origin cors_origins does not list is not trusted as \
                 loopback; publish with the publish key or a token's publish claim",
            "/headers/origin",
        )),
        (None, _) if ctx.loopback => Ok(Publisher::Trusted),
        (None, _) => Err(Response::error(
            Status::Forbidden,
            "publishing is allowed from loopback only unless publish_key is set",
            "/",
        )),
    }
}

/// A single publish to `topic`, from its head: who publishes (refused first, before anything
/// about the request is looked at), whether the topic the request names is valid (`topic`
/// gives it, or the answer to a bad request), and whether they may publish there (403
/// pointing at `path`).
pub fn prepare_for(
    ctx: &Ctx,
    head: &RequestHead,
    topic: impl FnOnce() -> Result<Arc<str>, Response>,
    path: &str,
) -> Result<Prepared, NotPrepared> {
    let publisher = check_rights(ctx, head).map_err(NotPrepared::Refused)?;
    let topic = topic().map_err(NotPrepared::Invalid)?;
    if !publisher.may(&topic) {
        let r = Response::error(Status::Forbidden, &format!("no right to publish to {topic:?}"), path);
        return Err(NotPrepared::Refused(r));
    }
    Ok(Prepared { publisher, topic, kind: None, key: None })
}

pub fn is_loopback(peer: SocketAddr) -> bool {
    match peer {
        SocketAddr::V4(a) => a.ip().is_loopback(),
        SocketAddr::V6(a) => a.ip().is_loopback() || a.ip().to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// A single publish as its request head describes it: checked before its body is read.
pub struct Prepared {
    pub publisher: Publisher,
    pub topic: Arc<str>,
    pub kind: Option<Box<str>>,
    /// `Idempotency-Key`, on herald's own publish route (the seed routes take none).
    pub key: Option<Box<str>>,
}

/// Why a single publish cannot go ahead, found from its head.
pub enum NotPrepared {
    /// No right to publish there (401, 403): refused before any of the body is read.
    Refused(Response),
    /// A publisher with rights sent a bad request (a malformed topic or type): answered once
    /// its body (within the route's limit) is read and dropped, so the connection goes on.
    Invalid(Response),
}

/// The topic a path names (`raw`, still percent-encoded), or the 400 for a bad one.
pub fn path_topic(raw: &str) -> Result<Arc<str>, Response> {
    match percent_decode(raw, false) {
        Some(t) if valid_topic(&t) => Ok(Arc::from(&*t)),
        _ => Err(bad_request("invalid topic: expected 1-128 of [A-Za-z0-9_.:@-]", "/topic")),
    }
}

/// Validates the head of a `POST /pub/{topic}`: rights, topic and type.
pub fn prepare(ctx: &Ctx, head: &RequestHead, raw_topic: &str) -> Result<Prepared, NotPrepared> {
    let mut prepared = prepare_for(ctx, head, || path_topic(raw_topic), "/topic")?;
    prepared.kind = match param(head.query(), "type") {
        Some(Ok(t)) if valid_type(&t) => Some(t.into()),
        Some(_) => {
            let r = bad_request("invalid type: expected 1-64 of [A-Za-z0-9_.:-]", "/query/type");
            return Err(NotPrepared::Invalid(r));
        }
        None => match head.header("event-type") {
            None => None,
            Some(v) => match std::str::from_utf8(v).map(str::trim) {
                Ok(t) if valid_type(t) => Some(t.into()),
                _ => {
                    let r = bad_request("invalid Event-Type: expected 1-64 of [A-Za-z0-9_.:-]", "/headers/event-type");
                    return Err(NotPrepared::Invalid(r));
                }
            },
        },
    };
    let mut keys = head.headers("idempotency-key");
    prepared.key = match (keys.next(), keys.next()) {
        (None, _) => None,
        // Two fields are two keys, or one a proxy may have merged or split: which was meant
        // is not for herald to guess.
        (Some(_), Some(_)) => {
            let r = bad_request("more than one Idempotency-Key field", "/headers/idempotency-key");
            return Err(NotPrepared::Invalid(r));
        }
        // A field value's surrounding white space is not part of it (RFC 9110 §5.5).
        (Some(v), None) => match idempotency_key(v.trim_ascii()) {
            Some(k) => Some(k),
            None => return Err(NotPrepared::Invalid(bad_request(BAD_KEY, "/headers/idempotency-key"))),
        },
    };
    Ok(prepared)
}

/// `POST /pub/{topic}`: the body is the event data, verbatim.
pub async fn single(ctx: &Ctx, prepared: Prepared, body: Bytes) -> Response {
    let (publisher, ev) = match with_body(prepared, body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let topic = ev.topic.clone();
    match publish(ctx, &publisher, smallvec::smallvec![ev]).await {
        Ok(cursors) => published(cursors[0], &topic),
        Err(refused) => refused.response("/topic"),
    }
}

/// The event a prepared single publish makes with its body (which must be UTF-8), and its
/// publisher.
pub fn with_body(prepared: Prepared, body: Bytes) -> Result<(Publisher, NewEvent), Response> {
    if std::str::from_utf8(&body).is_err() {
        return Err(bad_request("event data is not valid UTF-8", "/body"));
    }
    let Prepared { publisher, topic, kind, key } = prepared;
    Ok((publisher, NewEvent { topic, kind, data: body, key }))
}

/// The answer to a single publish: the event's id and topic, and `"duplicate":true` when an
/// idempotency key found it published before.
pub fn published(assigned: Assigned, topic: &str) -> Response {
    let Assigned { cursor, duplicate } = assigned;
    if duplicate {
        return Response::json(Status::Ok, &json!({"id": cursor.to_string(), "topic": topic, "duplicate": true}));
    }
    if !json_safe(topic) {
        return Response::json(Status::Ok, &json!({"id": cursor.to_string(), "topic": topic}));
    }
    let id = cursor.text();
    let mut body = BytesMut::with_capacity(published_len(&id, topic));
    put_published(&mut body, &id, topic);
    Response::new(Status::Ok, "application/json", body.freeze())
}

/// Appends the whole answer to a single publish to `out`, with no allocation of its own:
/// how a pipelining publisher's answers are built, one after another in one buffer.
/// Returns the bytes written.
pub fn write_published(
    out: &mut BytesMut,
    assigned: Assigned,
    topic: &str,
    minor_version: u8,
    headers: &[(&'static str, String)],
) -> usize {
    let start = out.len();
    let cursor = assigned.cursor;
    if !json_safe(topic) || assigned.duplicate {
        let mut r = published(assigned, topic);
        r.headers.extend_from_slice(headers);
        r.encode_into(out, Wire::kept(minor_version));
        return out.len() - start;
    }
    let id = cursor.text();
    let head = Head {
        status: Status::Ok,
        content_type: "application/json",
        content_length: published_len(&id, topic),
        headers,
        minor_version,
        keep_alive: true,
    };
    head.write(out);
    put_published(out, &id, topic);
    out.len() - start
}

/// Whether `s` goes into a JSON string as it is. Topic names always do (their alphabet has
/// nothing to escape); anything else takes the general encoder.
fn json_safe(s: &str) -> bool {
    s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

fn published_len(id: &str, topic: &str) -> usize {
    r#"{"id":"","topic":""}"#.len() + id.len() + topic.len()
}

fn put_published(out: &mut BytesMut, id: &str, topic: &str) {
    out.put_slice(br#"{"id":""#);
    out.put_slice(id.as_bytes());
    out.put_slice(br#"","topic":""#);
    out.put_slice(topic.as_bytes());
    out.put_slice(br#""}"#);
}

/// `POST /pub`: one JSON object per line, validated whole before anything is published.
pub async fn batch(ctx: &Ctx, publisher: &Publisher, body: Bytes) -> Response {
    let lines = match parse_batch(&body, ctx.config.max_event_bytes) {
        Ok(events) => events,
        Err(r) => return r,
    };
    let numbers: Vec<usize> = lines.iter().map(|(n, _)| *n).collect();
    let events: Events = lines.into_iter().map(|(_, ev)| ev).collect();
    let topics: Vec<Arc<str>> = events.iter().map(|ev| ev.topic.clone()).collect();
    let results = match submit(ctx, publisher, events).await {
        Ok(submitted) => results(ctx, submitted).await,
        Err(refused) => {
            // No line was sent: the rights are checked for every line first.
            let line = numbers.get(refused.index).copied().unwrap_or(0);
            return refused.response(&format!("/line/{line}"));
        }
    };
    let ids: Vec<Value> =
        results.iter().map(|r| r.as_ref().map_or(Value::Null, |a| a.cursor.to_string().into())).collect();
    let Some((index, why)) = results.iter().enumerate().find_map(|(i, r)| r.as_ref().err().map(|w| (i, *w))) else {
        if results.iter().flatten().any(|a| a.duplicate) {
            // Which lines an idempotency key found published before, by their place in `ids`.
            let duplicate: Vec<bool> = results.iter().flatten().map(|a| a.duplicate).collect();
            return Response::json(Status::Ok, &json!({"ids": ids, "duplicate": duplicate}));
        }
        return Response::json(Status::Ok, &json!({"ids": ids}));
    };
    // Capacity and idempotency keys are found line by line, where each line's topic is kept:
    // the other lines were published, and `ids` says which (null for a refused line).
    let line = numbers.get(index).copied().unwrap_or(0);
    let topic = topics.get(index).cloned().unwrap_or_else(|| "".into());
    let refused = Refused { index, topic, why }.response(&format!("/line/{line}"));
    let error: Value = serde_json::from_slice(&refused.body).unwrap_or(Value::Null);
    let message = format!(
        "line {line}: {}; lines without null in ids were published",
        error["error"]["message"].as_str().unwrap_or_default()
    );
    let body = json!({"error": {"message": message, "path": error["error"]["path"]}, "ids": ids});
    let mut r = Response::json(refused.status, &body);
    r.headers = refused.headers;
    r
}

/// Parses and validates a whole ndjson batch; the first bad line rejects it all. Each event
/// comes with its 1-based line number.
pub fn parse_batch(body: &[u8], max_event_bytes: usize) -> Result<Vec<(usize, NewEvent)>, Response> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Err(bad_request("batch is not valid UTF-8", "/body"));
    };
    let mut events: Vec<(usize, NewEvent)> = Vec::new();
    // The first line of each (topic, idempotency key), by its place in `events`.
    let mut keyed: std::collections::HashMap<(Arc<str>, Box<str>), usize> = std::collections::HashMap::new();
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let n = i + 1;
        let bad = |what: &str| bad_request(format!("line {n}: {what}"), &format!("/line/{n}"));
        let mut obj = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(obj)) => obj,
            Ok(_) => return Err(bad("not a JSON object")),
            Err(e) => return Err(bad(&format!("not valid JSON: {e}"))),
        };
        let topic = match obj.remove("topic") {
            Some(Value::String(t)) if valid_topic(&t) => t,
            Some(_) => return Err(bad("invalid topic: expected 1-128 of [A-Za-z0-9_.:@-]")),
            None => return Err(bad("missing \"topic\"")),
        };
        let kind = match obj.remove("type") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) if valid_type(&t) => Some(t.into_boxed_str()),
            Some(_) => return Err(bad("invalid type: expected 1-64 of [A-Za-z0-9_.:-]")),
        };
        let data = match obj.remove("data") {
            None => return Err(bad("missing \"data\"")),
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
        };
        if data.len() > max_event_bytes {
            return Err(bad(&format!("data larger than max_event_bytes ({max_event_bytes})")));
        }
        let key = match obj.remove("idempotency_key") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => match idempotency_key(k.as_bytes()) {
                Some(k) => Some(k),
                None => return Err(bad_request(format!("line {n}: {BAD_KEY}"), &format!("/line/{n}/idempotency_key"))),
            },
            Some(_) => return Err(bad_request(format!("line {n}: {BAD_KEY}"), &format!("/line/{n}/idempotency_key"))),
        };
        let ev = NewEvent { topic: topic.into(), kind, data: Bytes::from(data), key };
        // A key given twice in one batch with two events: refused before any line is sent,
        // not found by the owner after the lines before it were published.
        if let Some(key) = &ev.key
            && let Some(&at) = keyed.get(&(ev.topic.clone(), key.clone()))
            && let Some((m, first)) = events.get(at)
            && (first.kind != ev.kind || first.data != ev.data)
        {
            return Err(bad_request(
                format!("line {n}: the idempotency key of line {m}, to the same topic, with another event"),
                &format!("/line/{n}/idempotency_key"),
            ));
        }
        if let Some(key) = &ev.key {
            keyed.entry((ev.topic.clone(), key.clone())).or_insert(events.len());
        }
        events.push((n, ev));
    }
    if events.is_empty() {
        return Err(bad_request("empty batch: send one JSON object per line", "/body"));
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::Cursor;

    fn assigned(epoch: u64, seq: u64) -> Result<Assigned, Refusal> {
        Ok(Assigned { cursor: Cursor::new(epoch, seq), duplicate: false })
    }

    fn err_path(r: Result<Vec<(usize, NewEvent)>, Response>) -> String {
        let body: Value = serde_json::from_slice(&r.err().expect("an error").body).unwrap();
        body["error"]["path"].as_str().unwrap().to_string()
    }

    #[test]
    fn publish_answers_are_json() {
        let cursor = Assigned { cursor: Cursor::new(0xab, 3), duplicate: false };
        for topic in ["news.eu:1@x-y_z", "odd \"topic\"\\"] {
            let r = published(cursor, topic);
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(body, json!({"id": "ab-3", "topic": topic}));
            let mut out = BytesMut::new();
            let cors = [("Access-Control-Allow-Origin", "*".to_string())];
            let n = write_published(&mut out, cursor, topic, 1, &cors);
            assert_eq!(n, out.len());
            let mut expected = r.clone();
            expected.headers.extend_from_slice(&cors);
            assert_eq!(out.freeze(), expected.encode(Wire::kept(1)));
        }
    }

    #[test]
    fn publishes_dropped_mid_flight_free_their_slots() {
        use crate::shard::state::Shard;
        use crate::shard::waitset::WaitSet;
        let config = Arc::new(crate::config::Config::default());
        let mesh = Arc::new(crate::mesh::Mesh::new(1));
        let parked = WaitSet::new().expect("an epoll set");
        let shard: ShardRef = std::rc::Rc::new(std::cell::RefCell::new(Shard::new(0, config, mesh, parked)));
        for i in 0..10_000u64 {
            // A batch of two whose task is dropped after one cursor came back (or none, or
            // both: the connection closed at any point of the publish).
            let slot = shard.borrow_mut().open_publish(2);
            let submitted = Submitted { slot: Some(slot), shard: shard.clone(), topics: SmallVec::new() };
            let early = (i % 3) as usize;
            for index in 0..early {
                shard.borrow_mut().on_published(slot, index, assigned(1, i));
            }
            drop(submitted);
            for index in early..2 {
                shard.borrow_mut().on_published(slot, index, assigned(1, i));
            }
        }
        assert!(shard.borrow().publishes.is_empty(), "{} slots left", shard.borrow().publishes.len());
        assert!(shard.borrow().publishes.capacity() <= 4, "the slab did not grow");
    }

    #[test]
    fn idempotency_keys_are_visible_ascii_quoted_or_not() {
        assert_eq!(idempotency_key(b"abc-123").as_deref(), Some("abc-123"));
        assert_eq!(idempotency_key(b"\"abc-123\"").as_deref(), Some("abc-123"));
        assert_eq!(idempotency_key(&[b'k'; 256]).map(|k| k.len()), Some(256));
        for bad in [&b""[..], b"\"\"", b"a b", b"a\tb", b" q ", b"q\n", b"\xc3\xa9", &[b'k'; 257], b"\x7f"] {
            assert_eq!(idempotency_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn batch_lines_and_data_encoding() {
        let body = b"{\"topic\":\"a\",\"data\":\"x\"}\r\n\n{\"topic\":\"b\",\"type\":\"t\",\"data\":{\"n\": 1}}\n";
        let ev: Vec<NewEvent> = parse_batch(body, 100).unwrap().into_iter().map(|(_, e)| e).collect();
        assert_eq!(ev.len(), 2);
        assert_eq!(&ev[0].data[..], b"x");
        assert_eq!(&ev[1].data[..], b"{\"n\":1}");
        assert_eq!(ev[1].kind.as_deref(), Some("t"));
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(err_path(parse_batch(b"{\"topic\":\"a\",\"data\":1}\nnope", 100)), "/line/2");
        assert_eq!(err_path(parse_batch(b"{\"topic\":\"a b\",\"data\":1}", 100)), "/line/1");
        assert_eq!(err_path(parse_batch(b"{\"data\":1}", 100)), "/line/1");
        assert_eq!(err_path(parse_batch(b"{\"topic\":\"a\"}", 100)), "/line/1");
        assert_eq!(err_path(parse_batch(b"{\"topic\":\"a\",\"type\":5,\"data\":1}", 100)), "/line/1");
        assert_eq!(err_path(parse_batch(b"\n{\"topic\":\"a\",\"data\":\"123456\"}", 5)), "/line/2");
        assert_eq!(err_path(parse_batch(b"[1]", 5)), "/line/1");
        assert_eq!(err_path(parse_batch(b"\n\n", 5)), "/body");
        assert_eq!(err_path(parse_batch(b"\xff", 5)), "/body");
    }
}

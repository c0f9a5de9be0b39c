//! Seed 000 — session events (`shared/seeds/000_*`): `GET /_wave/api/sessions/{token}/events`
//! long-polls one event per request and answers with exactly the JSON object that was posted
//! (an empty `200` on timeout); `POST` with a JSON object delivers it to every listener of the
//! session. The session is the topic `wave:{token}`.
//!
//! The original loses events posted between two GETs of a listener. herald does not: each
//! answer carries `Last-Event-ID`, which a client may send back, and a kept-alive connection
//! remembers where its last answer stopped, so the next GET on it continues from there.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::api::bad_request;
use crate::api::ctx::{Ctx, Stopped};
use crate::api::publish::{NewEvent, NotPrepared, Prepared, prepare_for, publish, published};
use crate::api::subscribe::{PollRequest, StreamRequest, parse_poll_resume, parse_timeout};
use crate::cursor::Resume;
use crate::proto::http1::{RequestHead, Response, Status};
use crate::pubsub::topic::valid_topic;
use crate::shard::subscription::Namer;

/// The session's topic.
pub fn topic(token: &str) -> Result<Arc<str>, Response> {
    let t = format!("wave:{token}");
    if valid_topic(&t) { Ok(t.into()) } else { Err(bad_request("invalid session token", "/path")) }
}

/// `GET`: one event, from the client's `Last-Event-ID`, else from where this connection's
/// previous answer for the same session stopped (`remembered`), else from now.
pub fn poll(head: &RequestHead, token: &str, remembered: Option<Stopped>) -> Result<PollRequest, Response> {
    let topic = topic(token)?;
    let mut from = parse_poll_resume(head, 1)?;
    if let (Resume::Live, Some((t, c))) = (&from[0], remembered)
        && t == topic
    {
        from[0] = Resume::After(c);
    }
    let timeout = parse_timeout(head)?;
    Ok(PollRequest {
        stream: StreamRequest {
            topics: vec![topic],
            from,
            types: None,
            padding: false,
            sheddable: None,
            expires: None,
            user: None,
            names: Namer::Client,
        },
        max: 1,
        timeout,
    })
}

/// `POST`, from its head: publish rights for the session's topic.
pub fn prepare(ctx: &Ctx, head: &RequestHead, token: &str) -> Result<Prepared, NotPrepared> {
    prepare_for(ctx, head, || topic(token), "/path")
}

/// `POST`: the body must be a JSON object; it is delivered byte for byte.
pub async fn send(ctx: &Ctx, prepared: Prepared, body: Bytes) -> Response {
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(_)) => {}
        Ok(_) => return bad_request("the event must be a JSON object", "/body"),
        Err(e) => return bad_request(format!("the event is not valid JSON: {e}"), "/body"),
    }
    if body.len() > ctx.config.max_event_bytes {
        return Response::error(Status::PayloadTooLarge, "event larger than max_event_bytes", "/body");
    }
    let Prepared { publisher, topic, kind, .. } = prepared;
    let ev = NewEvent::new(topic.clone(), kind, body);
    match publish(ctx, &publisher, smallvec::smallvec![ev]).await {
        Ok(cursors) => published(cursors[0], &topic),
        Err(refused) => refused.response("/path"),
    }
}

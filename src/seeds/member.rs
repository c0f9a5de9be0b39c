//! Seed 001 — member events (`shared/seeds/001_*`): `GET /events` with `Member-ID` (or
//! `MemberId`), optional `Device-Id` and `Last-Event-ID` streams the member's events as SSE —
//! `event:` the type, `id:` the cursor, `data:` `{"body":{…},"timestamp":"<ISO-8601>"}`;
//! `POST /events` with `Member-ID` and `{"event":{"type":"UPPER_CASE","body":{…}}}` publishes
//! to that member. Each member is the topic `member:{id}`: every device of a member gets every
//! event, and members never see each other's.
//!
//! The original service trusted the `Member-ID` header (it sat behind its application's own
//! gateway). herald does so only where it cannot authenticate (no `jwt_secret`), or where
//! `member_events_trust_header` says a gateway sets the header; otherwise reading a member's
//! stream takes that member's token, and publishing to it publish rights for `member:{id}`.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::api::bad_request;
use crate::api::ctx::Ctx;
use crate::api::publish::{NewEvent, NotPrepared, Prepared, prepare_for, publish, published};
use crate::api::subscribe::{StreamRequest, authorize, parse_resume};
use crate::clock::now_micros;
use crate::proto::http1::{RequestHead, Response, Status};
use crate::pubsub::topic::{valid_topic, valid_type};
use crate::shard::subscription::Namer;

/// The member a request is about: `Member-ID`, or the seed's own example spelling `MemberId`.
pub fn member_topic(head: &RequestHead) -> Result<Arc<str>, Response> {
    let id = head.header_str("member-id").or_else(|| head.header_str("memberid"));
    match id {
        None | Some("") => Err(bad_request("the Member-ID header is required", "/headers/member-id")),
        Some(id) => {
            let topic = format!("member:{id}");
            if valid_topic(&topic) {
                Ok(topic.into())
            } else {
                Err(bad_request("Member-ID must be 1-120 of [A-Za-z0-9_.:@-]", "/headers/member-id"))
            }
        }
    }
}

/// `GET /events`: the member's stream. The member's topic is private (API.md §6): with
/// `jwt_secret` set, the token must be the member's (`sub`) or have a `subscribe` claim
/// covering `member:{id}`, unless `member_events_trust_header` says a gateway in front sets
/// `Member-ID` itself. Without `jwt_secret` the header is trusted, as in the original service.
pub fn subscribe(ctx: &Ctx, head: &RequestHead) -> Result<StreamRequest, Response> {
    let topic = member_topic(head)?;
    let topics = vec![topic];
    let mut who = None;
    let mut names = Namer::Client;
    if ctx.config.jwt_secret.is_some() {
        if ctx.config.member_events_trust_header {
            // The gateway in front vouches for the member.
            names = Namer::Identity;
        } else {
            who = Some(authorize(&ctx.config, head, &topics).map_err(|r| repoint(r, "/headers/member-id"))?);
        }
    }
    let from = parse_resume(head, 1)?;
    let mut req =
        StreamRequest { topics, from, types: None, padding: false, sheddable: None, expires: None, names, user: None };
    if let Some(who) = who {
        req.opened_by(&who);
    }
    Ok(req)
}

/// A refusal about the stream's one topic, pointed at where this request named it.
fn repoint(r: Response, path: &str) -> Response {
    match serde_json::from_slice::<Value>(&r.body) {
        Ok(v) if v["error"]["path"] == "/topics/0" => {
            Response::error(r.status, v["error"]["message"].as_str().unwrap_or_default(), path)
        }
        _ => r,
    }
}

/// `POST /events`, from its head: publish rights for the member's topic.
pub fn prepare(ctx: &Ctx, head: &RequestHead) -> Result<Prepared, NotPrepared> {
    prepare_for(ctx, head, || member_topic(head), "/headers/member-id")
}

/// `POST /events`: one event for the member.
pub async fn send(ctx: &Ctx, prepared: Prepared, body: Bytes) -> Response {
    let (kind, body) = match parse_event(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let data = json!({"body": body, "timestamp": super::iso8601(now_micros())}).to_string();
    if data.len() > ctx.config.max_event_bytes {
        return Response::error(Status::PayloadTooLarge, "event larger than max_event_bytes", "/event/body");
    }
    let topic = prepared.topic.clone();
    let ev = NewEvent::new(prepared.topic, Some(kind.into()), data.into());
    match publish(ctx, &prepared.publisher, smallvec::smallvec![ev]).await {
        Ok(cursors) => published(cursors[0], &topic),
        Err(refused) => refused.response("/headers/member-id"),
    }
}

/// `{"event":{"type":"UPPER_CASE","body":{…}}}` → (type, body).
fn parse_event(raw: &[u8]) -> Result<(String, Value), Response> {
    let Ok(Value::Object(mut root)) = serde_json::from_slice::<Value>(raw) else {
        return Err(bad_request("the body must be a JSON object {\"event\":{\"type\":…,\"body\":{…}}}", "/"));
    };
    let Some(Value::Object(mut event)) = root.remove("event") else {
        return Err(bad_request("missing object \"event\"", "/event"));
    };
    let kind = match event.remove("type") {
        Some(Value::String(t)) if is_upper_case(&t) && valid_type(&t) => t,
        Some(_) => return Err(bad_request("event type must be UPPER_CASE: [A-Z][A-Z0-9_]*", "/event/type")),
        None => return Err(bad_request("missing event type", "/event/type")),
    };
    match event.remove("body") {
        Some(body @ Value::Object(_)) => Ok((kind, body)),
        Some(_) => Err(bad_request("event body must be a JSON object", "/event/body")),
        None => Err(bad_request("missing event body", "/event/body")),
    }
}

fn is_upper_case(t: &str) -> bool {
    t.starts_with(|c: char| c.is_ascii_uppercase())
        && t.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(raw: &str) -> String {
        let r = parse_event(raw.as_bytes()).unwrap_err();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        v["error"]["path"].as_str().unwrap().to_string()
    }

    #[test]
    fn events() {
        let (t, b) = parse_event(br#"{"event":{"type":"ORDER_SHIPPED","body":{"id":7}}}"#).unwrap();
        assert_eq!(t, "ORDER_SHIPPED");
        assert_eq!(b, json!({"id": 7}));
        assert_eq!(path("[]"), "/");
        assert_eq!(path("{}"), "/event");
        assert_eq!(path(r#"{"event":{"body":{}}}"#), "/event/type");
        assert_eq!(path(r#"{"event":{"type":"lower","body":{}}}"#), "/event/type");
        assert_eq!(path(r#"{"event":{"type":"A-B","body":{}}}"#), "/event/type");
        assert_eq!(path(r#"{"event":{"type":"OK"}}"#), "/event/body");
        assert_eq!(path(r#"{"event":{"type":"OK","body":"x"}}"#), "/event/body");
    }
}

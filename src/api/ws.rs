//! The WebSocket JSON protocol (API.md §3.2): client messages with a `method` and an optional
//! `id`, their validation with JSON-pointer error paths, and the replies.
//!
//! Replies echo the request's `id` (and, for subscriptions, its `topics`); a reply carrying
//! `errors` echoes every key of the input, so a client can match it to what it sent.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::api::publish::{BAD_KEY, idempotency_key};
use crate::cursor::Resume;
use crate::proto::ws::{Opcode, encode_frame};
use crate::pubsub::topic::{MAX_TOPICS_PER_SUBSCRIPTION, valid_subscription, valid_topic, valid_type};

/// A client request that passed validation.
#[derive(Debug, PartialEq)]
pub enum Request {
    Subscribe { topics: Vec<Arc<str>>, from: Vec<Resume> },
    Unsubscribe { topics: Vec<Arc<str>> },
    Publish { topic: Arc<str>, kind: Option<Box<str>>, data: Bytes, key: Option<Box<str>> },
    Ping,
}

/// A parsed message: the request (or the errors found), and the input to echo.
#[derive(Debug)]
pub struct Message {
    /// The reply's `event` name for this method.
    pub reply_event: &'static str,
    pub input: Map<String, Value>,
    pub request: Result<Request, Vec<(String, String)>>,
}

/// One error: message and JSON pointer into the input.
fn err(message: impl Into<String>, path: impl Into<String>) -> (String, String) {
    (message.into(), path.into())
}

/// Parses and validates one text message.
pub fn parse(text: &str, max_event_bytes: usize) -> Message {
    let input = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Message {
                reply_event: "error",
                input: Map::new(),
                request: Err(vec![err("a message must be a JSON object", "/")]),
            };
        }
        Err(e) => {
            return Message {
                reply_event: "error",
                input: Map::new(),
                request: Err(vec![err(format!("invalid JSON: {e}"), "/")]),
            };
        }
    };
    let (reply_event, request) = match input.get("method") {
        Some(Value::String(m)) => match m.as_str() {
            "subscribe" => ("subscribed", subscribe(&input)),
            "unsubscribe" => ("unsubscribed", topics_of(&input).map(|topics| Request::Unsubscribe { topics })),
            "publish" => ("published", publish(&input, max_event_bytes)),
            "ping" => ("pong", Ok(Request::Ping)),
            other => ("error", Err(vec![err(format!("unknown method {other:?}"), "/method")])),
        },
        Some(_) => ("error", Err(vec![err("method must be a string", "/method")])),
        None => ("error", Err(vec![err("missing method", "/method")])),
    };
    Message { reply_event, input, request }
}

fn topics_of(input: &Map<String, Value>) -> Result<Vec<Arc<str>>, Vec<(String, String)>> {
    let Some(Value::Array(list)) = input.get("topics") else {
        return Err(vec![err("topics must be an array of topic names", "/topics")]);
    };
    if list.is_empty() || list.len() > MAX_TOPICS_PER_SUBSCRIPTION {
        return Err(vec![err(format!("topics must list 1 to {MAX_TOPICS_PER_SUBSCRIPTION} topics"), "/topics")]);
    }
    let mut errors = Vec::new();
    let mut topics: Vec<Arc<str>> = Vec::new();
    for (i, t) in list.iter().enumerate() {
        match t.as_str() {
            Some(t) if valid_subscription(t) && !topics.iter().any(|x| &**x == t) => topics.push(t.into()),
            Some(t) if valid_subscription(t) => {
                errors.push(err(format!("topic {t:?} is listed twice"), format!("/topics/{i}")))
            }
            _ => errors.push(err(
                "invalid topic: expected 1-128 of [A-Za-z0-9_.:@-], or $occupancy: or $presence: and such a name",
                format!("/topics/{i}"),
            )),
        }
    }
    if errors.is_empty() { Ok(topics) } else { Err(errors) }
}

fn subscribe(input: &Map<String, Value>) -> Result<Request, Vec<(String, String)>> {
    let topics = topics_of(input)?;
    // Like an event stream's `Last-Event-ID`, an id that cannot be read one cursor per topic
    // still subscribes: each topic is searched for among the cursors sent, and starts with a
    // gap where none is its own (API.md §7).
    let from = match input.get("last_event_id") {
        None | Some(Value::Null) => vec![Resume::Live; topics.len()],
        Some(Value::String(id)) => Resume::parse_list(Some(id), topics.len()),
        Some(_) => return Err(vec![err("last_event_id must be a string", "/last_event_id")]),
    };
    Ok(Request::Subscribe { topics, from })
}

fn publish(input: &Map<String, Value>, max_event_bytes: usize) -> Result<Request, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let topic = match input.get("topic") {
        Some(Value::String(t)) if valid_topic(t) => Some(Arc::<str>::from(t.as_str())),
        _ => {
            errors.push(err("invalid topic: expected 1-128 of [A-Za-z0-9_.:@-]", "/topic"));
            None
        }
    };
    let kind = match input.get("type") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if valid_type(t) => Some(t.as_str().into()),
        Some(_) => {
            errors.push(err("invalid type: expected 1-64 of [A-Za-z0-9_.:-]", "/type"));
            None
        }
    };
    let data = match input.get("data") {
        None => {
            errors.push(err("missing data", "/data"));
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    if let Some(d) = &data
        && d.len() > max_event_bytes
    {
        errors.push(err(format!("data larger than max_event_bytes ({max_event_bytes})"), "/data"));
    }
    let key = match input.get("idempotency_key") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let key = v.as_str().and_then(|k| idempotency_key(k.as_bytes()));
            if key.is_none() {
                errors.push(err(BAD_KEY, "/idempotency_key"));
            }
            key
        }
    };
    match (topic, data) {
        (Some(topic), Some(data)) if errors.is_empty() => {
            Ok(Request::Publish { topic, kind, data: Bytes::from(data), key })
        }
        _ => Err(errors),
    }
}

/// A reply frame: `{"event", "id"?, …fields}`.
pub fn reply(event: &str, input: &Map<String, Value>, fields: Value) -> Bytes {
    let mut out = Map::new();
    out.insert("event".into(), event.into());
    if let Some(id) = input.get("id") {
        out.insert("id".into(), id.clone());
    }
    if let Value::Object(f) = fields {
        out.extend(f);
    }
    text_frame(&Value::Object(out))
}

/// An error reply: every input key echoed, plus `event` and `errors`.
pub fn error_reply(event: &str, input: &Map<String, Value>, errors: &[(String, String)]) -> Bytes {
    let mut out = input.clone();
    out.insert("event".into(), event.into());
    let list: Vec<Value> = errors.iter().map(|(m, p)| json!({"message": m, "path": p})).collect();
    out.insert("errors".into(), Value::Array(list));
    text_frame(&Value::Object(out))
}

pub fn text_frame(v: &Value) -> Bytes {
    encode_frame(Opcode::Text, v.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(frame: &[u8]) -> Value {
        let h = crate::proto::ws::frame::parse_head(frame).unwrap().unwrap();
        serde_json::from_slice(&frame[h.head_len..]).unwrap()
    }

    fn errors(text: &str) -> Vec<(String, String)> {
        parse(text, 100).request.unwrap_err()
    }

    fn paths(text: &str) -> Vec<String> {
        errors(text).into_iter().map(|(_, p)| p).collect()
    }

    #[test]
    fn valid_requests() {
        let m = parse(r#"{"method":"subscribe","id":1,"topics":["a","b"],"last_event_id":"1-2,3-4"}"#, 100);
        assert_eq!(m.reply_event, "subscribed");
        assert_eq!(
            m.request.unwrap(),
            Request::Subscribe { topics: vec!["a".into(), "b".into()], from: Resume::parse_list(Some("1-2,3-4"), 2) }
        );
        let m = parse(r#"{"method":"publish","topic":"a","data":{"x":[1,2]}}"#, 100);
        assert_eq!(
            m.request.unwrap(),
            Request::Publish { topic: "a".into(), kind: None, data: Bytes::from_static(b"{\"x\":[1,2]}"), key: None }
        );
        assert_eq!(parse(r#"{"method":"ping","id":"p"}"#, 100).request.unwrap(), Request::Ping);
    }

    #[test]
    fn errors_point_into_the_input() {
        assert_eq!(paths(r#"{"method":"subscribe","topics":["ok","bad topic",7]}"#), ["/topics/1", "/topics/2"]);
        assert_eq!(paths(r#"{"method":"subscribe","topics":"a"}"#), ["/topics"]);
        assert_eq!(paths(r#"{"method":"subscribe","topics":["a","a"]}"#), ["/topics/1"]);
        assert_eq!(paths(r#"{"method":"subscribe","topics":["a"],"last_event_id":7}"#), ["/last_event_id"]);
        assert_eq!(paths(r#"{"method":"publish","topic":"a b","type":"t t"}"#), ["/topic", "/type", "/data"]);
        let long = format!(r#"{{"method":"publish","topic":"a","data":"{}"}}"#, "x".repeat(101));
        assert_eq!(paths(&long), ["/data"]);
        assert_eq!(paths(r#"{"method":"fly"}"#), ["/method"]);
        assert_eq!(paths(r#"{"id":1}"#), ["/method"]);
        assert_eq!(paths(r#"[1]"#), ["/"]);
        assert_eq!(paths(r#"{"method":"#), ["/"]);
    }

    #[test]
    fn error_replies_echo_every_input_key() {
        let m = parse(r#"{"method":"subscribe","id":42,"topics":["a b"],"extra":true}"#, 100);
        let frame = error_reply(m.reply_event, &m.input, m.request.as_ref().unwrap_err());
        let v = payload(&frame);
        assert_eq!(v["event"], "subscribed");
        assert_eq!(v["id"], 42);
        assert_eq!(v["extra"], true);
        assert_eq!(v["method"], "subscribe");
        assert_eq!(v["errors"][0]["path"], "/topics/0");
        let ok = reply("pong", &m.input, json!({"ts": 1.5}));
        let v = payload(&ok);
        assert_eq!(v, json!({"event": "pong", "id": 42, "ts": 1.5}));
    }
}

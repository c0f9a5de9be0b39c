//! `GET /sub/{topics}` (API.md §3): which transport, which topics, which types, and where
//! to resume from. The stream itself runs in `conn::stream`.

use std::sync::Arc;

use super::bad_request;
use crate::auth::rights::{self, Denied, Identity};
use crate::config::Config;
use crate::proto::http1::{RequestHead, Response, Status};
use crate::proto::query::{param, percent_decode};
use crate::pubsub::cursor::Cursor;
use crate::pubsub::topic::{MAX_TOPICS_PER_SUBSCRIPTION, valid_topic, valid_type};

/// The transport a subscribe request asks for, chosen like nchan does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    EventStream,
    LongPoll,
}

pub fn transport(head: &RequestHead) -> Transport {
    let upgrade = head.header_str("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    if upgrade {
        Transport::WebSocket
    } else if head.header_str("accept").is_some_and(|a| a.to_ascii_lowercase().contains("text/event-stream")) {
        Transport::EventStream
    } else {
        Transport::LongPoll
    }
}

/// A validated subscription request.
#[derive(Debug)]
pub struct StreamRequest {
    pub topics: Vec<Arc<str>>,
    /// Per topic, the cursor to resume after.
    pub from: Vec<Option<Cursor>>,
    pub types: Option<Box<[Box<str>]>>,
    pub padding: bool,
    /// For streams an admin pause may close: the groups that spare them (seed 003).
    pub pausable: Option<Box<[String]>>,
}

/// Parses the comma-separated topic list of a path.
pub fn parse_topics(raw: &str) -> Result<Vec<Arc<str>>, Response> {
    let mut topics: Vec<Arc<str>> = Vec::new();
    for (i, part) in raw.split(',').enumerate() {
        if i >= MAX_TOPICS_PER_SUBSCRIPTION {
            return Err(bad_request(
                format!("at most {MAX_TOPICS_PER_SUBSCRIPTION} topics per subscription"),
                "/topics",
            ));
        }
        let topic = match percent_decode(part, false) {
            Some(t) if valid_topic(&t) => t,
            _ => {
                return Err(bad_request(
                    format!("invalid topic {part:?}: expected 1-128 of [A-Za-z0-9_.:@-]"),
                    &format!("/topics/{i}"),
                ));
            }
        };
        if topics.iter().any(|t| **t == *topic) {
            return Err(bad_request(format!("topic {topic:?} is listed twice"), &format!("/topics/{i}")));
        }
        topics.push(topic.into());
    }
    Ok(topics)
}

/// Parses `types=a,b`.
pub fn parse_types(head: &RequestHead) -> Result<Option<Box<[Box<str>]>>, Response> {
    match param(head.query(), "types") {
        None => Ok(None),
        Some(Err(())) => Err(bad_request("types is not valid percent-encoding", "/query/types")),
        Some(Ok(list)) => {
            let types: Vec<Box<str>> = list.split(',').map(|t| t.trim().into()).collect();
            if types.iter().any(|t| !valid_type(t)) {
                return Err(bad_request(
                    "invalid type in types: expected 1-64 of [A-Za-z0-9_.:-] each",
                    "/query/types",
                ));
            }
            Ok(Some(types.into()))
        }
    }
}

/// The resume point: `?last_event_id=` wins over the `Last-Event-ID` header. One cursor
/// per topic: a single-topic stream takes a publish cursor, a multi-topic stream its own id.
pub fn parse_resume(head: &RequestHead, topics: usize) -> Result<Vec<Option<Cursor>>, Response> {
    let (raw, path) = match param(head.query(), "last_event_id") {
        Some(Err(())) => {
            return Err(bad_request("last_event_id is not valid percent-encoding", "/query/last_event_id"));
        }
        Some(Ok(v)) => (Some(v), "/query/last_event_id"),
        None => (head.header_str("last-event-id").map(str::to_string), "/headers/last-event-id"),
    };
    match raw.filter(|v| !v.is_empty()) {
        None => Ok(vec![None; topics]),
        Some(v) => match Cursor::parse_list(&v, topics) {
            Some(cursors) => Ok(cursors.into_iter().map(Some).collect()),
            None => Err(bad_request(
                format!("last event id {v:?} is not an id this stream sent ({topics} topic cursor(s) expected)"),
                path,
            )),
        },
    }
}

/// Who is subscribing, and whether they may read every topic asked for (API.md §6, §7): a
/// refused token is 401; a private topic without a token is 401, with a token lacking the
/// claim 403 — each naming the topic.
pub fn authorize(config: &Config, head: &RequestHead, topics: &[Arc<str>]) -> Result<Identity, Response> {
    let who = rights::identify(head, config.jwt_secret.as_deref(), crate::api::publish::now_micros() as f64 / 1e6)
        .map_err(|rights::Refused(e)| Response::error(Status::Unauthorized, &e.to_string(), "/token"))?;
    for (i, t) in topics.iter().enumerate() {
        if let Err((status, message)) = check_topic(&who, t) {
            return Err(Response::error(status, &message, &format!("/topics/{i}")));
        }
    }
    Ok(who)
}

/// May `who` read `topic`? The refusal's status and message.
pub fn check_topic(who: &Identity, topic: &str) -> Result<(), (Status, String)> {
    match rights::may_subscribe(who, topic) {
        Ok(()) => Ok(()),
        Err(Denied::NeedToken) => Err((Status::Unauthorized, format!("topic {topic:?} is private: a token is needed"))),
        Err(Denied::NoClaim) => Err((Status::Forbidden, format!("this token may not subscribe to {topic:?}"))),
    }
}

/// Validates an SSE subscription.
pub fn event_stream(head: &RequestHead, raw_topics: &str) -> Result<StreamRequest, Response> {
    let topics = parse_topics(raw_topics)?;
    let types = parse_types(head)?;
    let from = parse_resume(head, topics.len())?;
    let padding = matches!(param(head.query(), "padding"), Some(Ok(v)) if v == "1" || v == "true");
    Ok(StreamRequest { topics, from, types, padding, pausable: None })
}

/// Most events one long-poll answer may carry.
pub const MAX_POLL_EVENTS: usize = 10_000;
/// Longest a poll may be held (API.md §3.3); longer requests are clamped.
pub const MAX_POLL_TIMEOUT: f64 = 300.0;

/// A validated long-poll request.
#[derive(Debug)]
pub struct PollRequest {
    pub stream: StreamRequest,
    /// Most events in the answer.
    pub max: usize,
    pub timeout: std::time::Duration,
}

/// Validates a long-poll (`max` default 100, `timeout` default 30 s, at most 300).
pub fn long_poll(head: &RequestHead, raw_topics: &str) -> Result<PollRequest, Response> {
    let stream = event_stream(head, raw_topics)?;
    let max = match param(head.query(), "max") {
        None => 100,
        Some(Ok(v)) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_POLL_EVENTS).contains(&n) => n,
            _ => {
                return Err(bad_request(
                    format!("max must be a whole number from 1 to {MAX_POLL_EVENTS}"),
                    "/query/max",
                ));
            }
        },
        Some(Err(())) => return Err(bad_request("max is not valid percent-encoding", "/query/max")),
    };
    let timeout = parse_timeout(head)?;
    Ok(PollRequest { stream, max, timeout })
}

/// `?timeout=` seconds for a long-poll (default 30; above 300 clamped to 300).
pub fn parse_timeout(head: &RequestHead) -> Result<std::time::Duration, Response> {
    let secs = match param(head.query(), "timeout") {
        None => 30.0,
        Some(Ok(v)) => match v.parse::<f64>() {
            Ok(t) if t.is_finite() && t >= 0.0 => t.min(MAX_POLL_TIMEOUT),
            _ => return Err(bad_request("timeout must be a number of seconds ≥ 0", "/query/timeout")),
        },
        Some(Err(())) => return Err(bad_request("timeout is not valid percent-encoding", "/query/timeout")),
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}

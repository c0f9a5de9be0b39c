//! `GET /sub/{topics}` (API.md §3): which transport, which topics, which types, and where
//! to resume from. The stream itself runs in `conn::stream`.

use std::sync::Arc;

use super::bad_request;
use crate::auth::rights::{self, Denied, Identity};
use crate::config::Config;
use crate::cursor::Resume;
use crate::proto::http1::{RequestHead, Response, Status};
use crate::proto::query::{param, percent_decode};
use crate::pubsub::topic::{MAX_TOPICS_PER_SUBSCRIPTION, presence_of, rights_name, valid_subscription, valid_type};
use crate::shard::subscription::Namer;

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
    /// Per topic, where to resume.
    pub from: Vec<Resume>,
    pub types: Option<Box<[Box<str>]>>,
    pub padding: bool,
    /// For streams that may be shed (see `ToWorker::Shed`): the groups that spare them.
    pub sheddable: Option<Box<[String]>>,
    /// When the token it was opened with expires (Unix milliseconds): the stream ends then.
    pub expires: Option<u64>,
    /// Whose its topic names are (which count as made up against `max_topics`).
    pub names: Namer,
    /// Who the subscriber is (its token's `sub`): kept as presence on topics under
    /// `presence_prefixes`.
    pub user: Option<Arc<str>>,
}

impl StreamRequest {
    /// The subscription is `who`'s: it ends when `who`'s token expires, names topics as `who`
    /// does, and is `who`'s presence.
    pub fn opened_by(&mut self, who: &Identity) {
        (self.expires, self.names, self.user) = (who.expires(), Namer::of(who), who.user().map(Arc::from));
    }

    /// Whose presence the subscription is: its user, if it has topics under
    /// `presence_prefixes` (others keep no user: no memory for presence outside them).
    pub fn presence(&self, config: &Config) -> Option<Arc<str>> {
        self.user.clone().filter(|_| self.topics.iter().any(|t| config.keeps_presence(t)))
    }
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
            Some(t) if valid_subscription(&t) => t,
            _ => {
                return Err(bad_request(
                    format!(
                        "invalid topic {part:?}: expected 1-128 of [A-Za-z0-9_.:@-], or $occupancy: and such a name"
                    ),
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

/// The resume id sent, if any: `?last_event_id=` wins over the `Last-Event-ID` header. With
/// it, where to point an error about it.
fn resume_id(head: &RequestHead) -> Result<(Option<String>, &'static str), Response> {
    match param(head.query(), "last_event_id") {
        Some(Err(())) => Err(bad_request("last_event_id is not valid percent-encoding", "/query/last_event_id")),
        Some(Ok(v)) => Ok((Some(v), "/query/last_event_id")),
        None => Ok((head.header_str("last-event-id").map(str::to_string), "/headers/last-event-id")),
    }
}

/// Where an event stream (SSE, WebSocket) resumes each of its `topics`: one cursor per topic.
/// An id that cannot be read that way still opens the stream (API.md §7): a browser's
/// EventSource never reconnects after a refusal. Each topic is then searched for among the
/// cursors sent, and starts with a gap where none is its own.
pub fn parse_resume(head: &RequestHead, topics: usize) -> Result<Vec<Resume>, Response> {
    let (raw, _) = resume_id(head)?;
    Ok(Resume::parse_list(raw.as_deref(), topics))
}

/// Where a long-poll resumes: like [`parse_resume`], but an id that is not one cursor per
/// topic is refused (400): a poller is a program that sent back something it was not given.
pub fn parse_poll_resume(head: &RequestHead, topics: usize) -> Result<Vec<Resume>, Response> {
    let (raw, path) = resume_id(head)?;
    let resume = Resume::parse_list(raw.as_deref(), topics);
    match (raw, resume.first()) {
        (Some(v), Some(Resume::Unknown { .. })) => Err(bad_request(
            format!("last event id {v:?} is not an id this poll was sent ({topics} topic cursor(s) expected)"),
            path,
        )),
        _ => Ok(resume),
    }
}

/// Who is subscribing, and whether they may read every topic asked for (API.md §6, §7): a
/// refused token is 401; a private topic without a token is 401, with a token lacking the
/// claim 403 — each naming the topic.
pub fn authorize(config: &Config, head: &RequestHead, topics: &[Arc<str>]) -> Result<Identity, Response> {
    authorize_from(config, head, topics, true)
}

/// `authorize`, the `token` cookie taken into account only if `cookie_ok` (see
/// `auth::cors::websocket`).
pub fn authorize_from(
    config: &Config,
    head: &RequestHead,
    topics: &[Arc<str>],
    cookie_ok: bool,
) -> Result<Identity, Response> {
    let now = crate::clock::now_micros() as f64 / 1e6;
    let who = rights::identify(head, config, now, cookie_ok)
        .map_err(|rights::Refused(e)| Response::error(Status::Unauthorized, &e.to_string(), "/token"))?;
    for (i, t) in topics.iter().enumerate() {
        if let Err(message) = check_presence(config, t) {
            return Err(bad_request(message, &format!("/topics/{i}")));
        }
        if let Err((status, message)) = check_topic(&who, t) {
            return Err(Response::error(status, &message, &format!("/topics/{i}")));
        }
    }
    Ok(who)
}

/// A `$presence:` name is followed only for topics under `presence_prefixes` (API.md §9).
pub fn check_presence(config: &Config, name: &str) -> Result<(), String> {
    match presence_of(name) {
        Some(topic) if !config.keeps_presence(topic) => {
            Err(format!("no presence is kept for {topic:?}: it is under none of presence_prefixes"))
        }
        _ => Ok(()),
    }
}

/// May `who` read `topic`? The refusal's status and message.
pub fn check_topic(who: &Identity, topic: &str) -> Result<(), (Status, String)> {
    // An `$occupancy:` topic is read with the rights of the topic it counts (API.md §9).
    match rights::may_subscribe(who, rights_name(topic)) {
        Ok(()) => Ok(()),
        Err(Denied::NeedToken) => Err((Status::Unauthorized, format!("topic {topic:?} is private: a token is needed"))),
        Err(Denied::NoClaim) => Err((Status::Forbidden, format!("this token may not subscribe to {topic:?}"))),
    }
}

/// Validates an SSE or WebSocket subscription.
pub fn event_stream(head: &RequestHead, raw_topics: &str) -> Result<StreamRequest, Response> {
    let topics = parse_topics(raw_topics)?;
    let from = parse_resume(head, topics.len())?;
    stream_request(head, topics, from)
}

fn stream_request(head: &RequestHead, topics: Vec<Arc<str>>, from: Vec<Resume>) -> Result<StreamRequest, Response> {
    let types = parse_types(head)?;
    let padding = matches!(param(head.query(), "padding"), Some(Ok(v)) if v == "1" || v == "true");
    Ok(StreamRequest { topics, from, types, padding, sheddable: None, expires: None, names: Namer::Client, user: None })
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
    let topics = parse_topics(raw_topics)?;
    let from = parse_poll_resume(head, topics.len())?;
    let stream = stream_request(head, topics, from)?;
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

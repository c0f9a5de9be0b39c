//! Request → handler: a pure function of the method and path.

use crate::proto::http1::Method;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    Health,
    /// `/readyz`: whether this node takes publishes (one node: whenever it answers).
    Ready,
    /// `GET /metrics` (Prometheus text).
    Metrics,
    /// `POST /pub/{topic}` (topic still percent-encoded).
    Publish(&'a str),
    /// `POST /pub` (ndjson batch).
    PublishBatch,
    /// `GET /sub/{topics}` (comma-separated, still percent-encoded).
    Subscribe(&'a str),
    /// `GET /ws/echo` (served only with `--ws-echo`).
    WsEcho,
    /// Seed 000: `/_wave/api/sessions/{token}/events` (GET long-polls, POST sends).
    WaveEvents(&'a str),
    /// Seed 001/002: `/events` (also `/notification/events` and `{member_events_prefix}/events`):
    /// GET streams a member's events (a WebSocket upgrade is the chat events API), POST sends.
    MemberEvents,
    /// Seed 003: `/eventsource` and `/eventsource/{types}` (comma-separated event types).
    EventSource(&'a str),
    /// Seed 003: `POST /admin/pause?delay_ms=N`.
    AdminPause,
    /// `GET /topics/{topic}` (still percent-encoded): its subscribers and history.
    TopicInfo(&'a str),
    /// `GET /topics?prefix=…`: the topics with subscribers or history, a page at a time.
    TopicList,
    /// `GET /topics/{topic}/presence` (still percent-encoded): the users subscribed to it.
    TopicPresence(&'a str),
    NotFound,
    MethodNotAllowed(&'static str),
}

impl Route<'_> {
    /// Largest request body the route reads for `method`; anything larger is refused with
    /// 413 before it is read. Only publishes take a body.
    pub fn body_limit(&self, method: &Method, max_event_bytes: usize, max_batch_bytes: usize) -> usize {
        match self {
            Route::Publish(_) => max_event_bytes,
            Route::WaveEvents(_) if *method == Method::Post => max_event_bytes,
            // The member-events body wraps the event in a JSON envelope.
            Route::MemberEvents if *method == Method::Post => max_event_bytes + 1024,
            Route::PublishBatch => max_batch_bytes,
            _ => 0,
        }
    }
}

impl Route<'_> {
    /// Whether the route subscribes to topics (and may so name new ones).
    pub fn subscribes(&self, method: &Method) -> bool {
        match self {
            Route::Subscribe(_) | Route::EventSource(_) => true,
            Route::WaveEvents(_) | Route::MemberEvents => *method != Method::Post,
            _ => false,
        }
    }
}

/// Picks the handler for `method` on `path` (the target without its query); `member_prefix`
/// is the configured extra prefix of the member-events routes.
pub fn route<'a>(method: &Method, path: &'a str, member_prefix: Option<&str>) -> Route<'a> {
    let allow = |allowed: &'static str, ok: bool, r: Route<'a>| if ok { r } else { Route::MethodNotAllowed(allowed) };
    let get = matches!(method, Method::Get | Method::Head);
    let post = *method == Method::Post;
    if path == "/healthz" {
        return allow("GET, HEAD", get, Route::Health);
    }
    if path == "/readyz" {
        return allow("GET, HEAD", get, Route::Ready);
    }
    if path == "/metrics" {
        return allow("GET, HEAD", get, Route::Metrics);
    }
    if path == "/pub" || path == "/pub/" {
        return allow("POST", post, Route::PublishBatch);
    }
    if let Some(topic) = path.strip_prefix("/pub/") {
        return allow("POST", post, Route::Publish(topic));
    }
    if path == "/ws/echo" {
        return allow("GET", *method == Method::Get, Route::WsEcho);
    }
    if let Some(topics) = path.strip_prefix("/sub/") {
        return allow("GET", *method == Method::Get, Route::Subscribe(topics));
    }
    let both = matches!(method, Method::Get | Method::Post);
    if let Some(token) = path.strip_prefix("/_wave/api/sessions/").and_then(|r| r.strip_suffix("/events")) {
        return allow("GET, POST", both, Route::WaveEvents(token));
    }
    let member = path == "/events"
        || path == "/notification/events"
        || member_prefix.is_some_and(|p| path.strip_prefix(p) == Some("/events"));
    if member {
        return allow("GET, POST", both, Route::MemberEvents);
    }
    if path == "/eventsource" {
        return allow("GET", *method == Method::Get, Route::EventSource(""));
    }
    if let Some(types) = path.strip_prefix("/eventsource/") {
        return allow("GET", *method == Method::Get, Route::EventSource(types));
    }
    if path == "/admin/pause" {
        return allow("POST", post, Route::AdminPause);
    }
    if path == "/topics" {
        return allow("GET, HEAD", get, Route::TopicList);
    }
    if let Some(topic) = path.strip_prefix("/topics/")
        && !topic.contains('/')
    {
        return allow("GET, HEAD", get, Route::TopicInfo(topic));
    }
    if let Some(topic) = path.strip_prefix("/topics/").and_then(|t| t.strip_suffix("/presence"))
        && !topic.contains('/')
    {
        return allow("GET, HEAD", get, Route::TopicPresence(topic));
    }
    Route::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_routes() {
        assert_eq!(route(&Method::Get, "/_wave/api/sessions/abc/events", None), Route::WaveEvents("abc"));
        assert_eq!(route(&Method::Post, "/events", None), Route::MemberEvents);
        assert_eq!(route(&Method::Get, "/notification/events", None), Route::MemberEvents);
        assert_eq!(route(&Method::Get, "/api/events", Some("/api")), Route::MemberEvents);
        assert_eq!(route(&Method::Get, "/api/events", None), Route::NotFound);
        assert_eq!(route(&Method::Get, "/eventsource/a,b", None), Route::EventSource("a,b"));
        assert_eq!(route(&Method::Get, "/admin/pause", None), Route::MethodNotAllowed("POST"));
    }

    #[test]
    fn topic_information() {
        assert_eq!(route(&Method::Get, "/topics/a", None), Route::TopicInfo("a"));
        assert_eq!(route(&Method::Head, "/topics/a%3Ab", None), Route::TopicInfo("a%3Ab"));
        assert_eq!(route(&Method::Post, "/topics/a", None), Route::MethodNotAllowed("GET, HEAD"));
        assert_eq!(route(&Method::Get, "/topics/a/presence", None), Route::TopicPresence("a"));
        assert_eq!(route(&Method::Get, "/topics/a/b/presence", None), Route::NotFound);
        assert_eq!(route(&Method::Get, "/topics/a/other", None), Route::NotFound);
        assert_eq!(route(&Method::Get, "/topics", None), Route::TopicList);
        assert_eq!(route(&Method::Delete, "/topics", None), Route::MethodNotAllowed("GET, HEAD"));
    }

    #[test]
    fn routes() {
        assert_eq!(route(&Method::Get, "/healthz", None), Route::Health);
        assert_eq!(route(&Method::Get, "/readyz", None), Route::Ready);
        assert_eq!(route(&Method::Post, "/readyz", None), Route::MethodNotAllowed("GET, HEAD"));
        assert_eq!(route(&Method::Post, "/healthz", None), Route::MethodNotAllowed("GET, HEAD"));
        assert_eq!(route(&Method::Post, "/pub/a", None), Route::Publish("a"));
        assert_eq!(route(&Method::Get, "/pub/a", None), Route::MethodNotAllowed("POST"));
        assert_eq!(route(&Method::Post, "/pub", None), Route::PublishBatch);
        assert_eq!(route(&Method::Get, "/sub/a,b", None), Route::Subscribe("a,b"));
        assert_eq!(route(&Method::Delete, "/sub/a", None), Route::MethodNotAllowed("GET"));
        assert_eq!(route(&Method::Get, "/nope", None), Route::NotFound);
        assert_eq!(route(&Method::Get, "/sub", None), Route::NotFound);
    }
}

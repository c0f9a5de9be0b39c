//! Request → handler: a pure function of the method and path.

use crate::proto::http1::Method;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    Health,
    /// `POST /pub/{topic}` (topic still percent-encoded).
    Publish(&'a str),
    /// `POST /pub` (ndjson batch).
    PublishBatch,
    /// `GET /sub/{topics}` (comma-separated, still percent-encoded).
    Subscribe(&'a str),
    /// `GET /ws/echo` (served only with `--ws-echo`).
    WsEcho,
    NotFound,
    MethodNotAllowed(&'static str),
}

impl Route<'_> {
    /// Largest request body the route reads; anything else is refused with 413.
    pub fn body_limit(&self, max_event_bytes: usize, max_batch_bytes: usize) -> usize {
        match self {
            Route::Publish(_) => max_event_bytes,
            Route::PublishBatch => max_batch_bytes,
            _ => 16 * 1024,
        }
    }
}

/// Picks the handler for `method` on `path` (the target without its query).
pub fn route<'a>(method: &Method, path: &'a str) -> Route<'a> {
    let allow = |allowed: &'static str, ok: bool, r: Route<'a>| if ok { r } else { Route::MethodNotAllowed(allowed) };
    let get = matches!(method, Method::Get | Method::Head);
    let post = *method == Method::Post;
    if path == "/healthz" {
        return allow("GET, HEAD", get, Route::Health);
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
    Route::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route(&Method::Get, "/healthz"), Route::Health);
        assert_eq!(route(&Method::Post, "/healthz"), Route::MethodNotAllowed("GET, HEAD"));
        assert_eq!(route(&Method::Post, "/pub/a"), Route::Publish("a"));
        assert_eq!(route(&Method::Get, "/pub/a"), Route::MethodNotAllowed("POST"));
        assert_eq!(route(&Method::Post, "/pub"), Route::PublishBatch);
        assert_eq!(route(&Method::Get, "/sub/a,b"), Route::Subscribe("a,b"));
        assert_eq!(route(&Method::Delete, "/sub/a"), Route::MethodNotAllowed("GET"));
        assert_eq!(route(&Method::Get, "/nope"), Route::NotFound);
        assert_eq!(route(&Method::Get, "/sub"), Route::NotFound);
    }
}

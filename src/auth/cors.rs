//! CORS (API.md §6): allowed origins (a list, or `*`), preflight answers, credentials for
//! listed origins. A foreign origin gets no CORS headers at all.

use crate::proto::http1::RequestHead;

/// Headers a browser may send to herald.
pub const ALLOWED_HEADERS: &str =
    "Authorization, Content-Type, Last-Event-ID, Event-Type, Member-ID, MemberId, Device-Id";

/// The CORS headers for a request from `origin`, given the configured origins.
pub fn headers(origins: &[String], head: &RequestHead) -> Vec<(&'static str, String)> {
    let Some(origin) = head.header_str("origin") else { return Vec::new() };
    if origins.iter().any(|o| o == origin) {
        vec![
            ("Access-Control-Allow-Origin", origin.to_string()),
            ("Access-Control-Allow-Credentials", "true".into()),
            ("Access-Control-Expose-Headers", "Last-Event-ID".into()),
            ("Vary", "Origin".into()),
        ]
    } else if origins.iter().any(|o| o == "*") {
        vec![("Access-Control-Allow-Origin", "*".into()), ("Access-Control-Expose-Headers", "Last-Event-ID".into())]
    } else {
        Vec::new()
    }
}

/// What a preflight answer adds to `headers` (which every answer carries, this one too),
/// or `None` when the origin is not allowed.
pub fn preflight(origins: &[String], head: &RequestHead, allow_methods: &str) -> Option<Vec<(&'static str, String)>> {
    if headers(origins, head).is_empty() {
        return None;
    }
    Some(vec![
        ("Access-Control-Allow-Methods", allow_methods.to_string()),
        ("Access-Control-Allow-Headers", ALLOWED_HEADERS.to_string()),
        ("Access-Control-Max-Age", "600".into()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http1::parse_head;

    fn head(origin: &str) -> RequestHead {
        let raw = format!("OPTIONS /sub/a HTTP/1.1\r\nHost: h\r\nOrigin: {origin}\r\n\r\n");
        parse_head(raw.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn listed_wildcard_and_foreign_origins() {
        let listed = vec!["https://a.example".to_string()];
        let h = headers(&listed, &head("https://a.example"));
        assert!(h.contains(&("Access-Control-Allow-Origin", "https://a.example".into())));
        assert!(h.contains(&("Access-Control-Allow-Credentials", "true".into())));
        assert!(headers(&listed, &head("https://evil.example")).is_empty());
        let any = vec!["*".to_string()];
        let h = headers(&any, &head("https://b.example"));
        assert!(h.contains(&("Access-Control-Allow-Origin", "*".into())));
        assert!(!h.iter().any(|(k, _)| *k == "Access-Control-Allow-Credentials"));
        assert!(preflight(&listed, &head("https://a.example"), "GET").is_some());
        assert!(preflight(&listed, &head("https://evil.example"), "GET").is_none());
        assert!(headers(&[], &head("https://a.example")).is_empty());
    }
}

//! CORS (API.md §6): allowed origins (a list, or `*`), preflight answers, credentials for
//! listed origins. A foreign origin gets no CORS headers at all (but `Vary: Origin`); a
//! WebSocket upgrade from one is refused (`websocket`).

use crate::proto::http1::RequestHead;

/// Headers a browser may send to herald.
pub const ALLOWED_HEADERS: &str =
    "Authorization, Content-Type, Last-Event-ID, Event-Type, Member-ID, MemberId, Device-Id";

/// Whether `origin` may read herald's answers: listed (with credentials), or allowed by `*`.
fn allowed(origins: &[String], origin: &str) -> bool {
    origins.iter().any(|o| o == origin || o == "*")
}

/// The CORS headers for a request from `origin`, given the configured origins. Where some
/// origins are listed by name, every answer to a request with an `Origin` varies with it
/// (`Vary: Origin`), the refused ones too: a cache must not hand one origin's answer to another.
pub fn headers(origins: &[String], head: &RequestHead) -> Vec<(&'static str, String)> {
    let Some(origin) = head.header_str("origin") else { return Vec::new() };
    let vary = origins.iter().any(|o| o != "*");
    let mut h = if origins.iter().any(|o| o == origin) {
        vec![
            ("Access-Control-Allow-Origin", origin.to_string()),
            ("Access-Control-Allow-Credentials", "true".into()),
            ("Access-Control-Expose-Headers", "Last-Event-ID".into()),
        ]
    } else if origins.iter().any(|o| o == "*") {
        vec![("Access-Control-Allow-Origin", "*".into()), ("Access-Control-Expose-Headers", "Last-Event-ID".into())]
    } else {
        Vec::new()
    };
    if vary {
        h.push(("Vary", "Origin".into()));
    }
    h
}

/// What a preflight answer adds to `headers` (which every answer carries, this one too),
/// or `None` when the origin is not allowed.
pub fn preflight(origins: &[String], head: &RequestHead, allow_methods: &str) -> Option<Vec<(&'static str, String)>> {
    if !head.header_str("origin").is_some_and(|o| allowed(origins, o)) {
        return None;
    }
    Some(vec![
        ("Access-Control-Allow-Methods", allow_methods.to_string()),
        ("Access-Control-Allow-Headers", ALLOWED_HEADERS.to_string()),
        ("Access-Control-Max-Age", "600".into()),
    ])
}

/// What a WebSocket upgrade's `Origin` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsOrigin {
    /// No `Origin` (not a browser), this server's own origin, or a listed one: as any request.
    Trusted,
    /// Any origin, allowed by `*`: the upgrade goes ahead, but not with the `token` cookie —
    /// as CORS never lets `*` carry credentials.
    WithoutCookie,
    /// An origin not allowed.
    Refused,
}

/// Whether a WebSocket upgrade may go ahead, given its `Origin`. Browsers send one with every
/// upgrade, and CORS does not cover WebSockets: without this check any page could open one
/// with its visitor's `token` cookie and read their private topics.
pub fn websocket(origins: &[String], head: &RequestHead) -> WsOrigin {
    let Some(origin) = head.header_str("origin") else { return WsOrigin::Trusted };
    if origins.iter().any(|o| o == origin) || same_origin(origin, head.header_str("host")) {
        WsOrigin::Trusted
    } else if origins.iter().any(|o| o == "*") {
        WsOrigin::WithoutCookie
    } else {
        WsOrigin::Refused
    }
}

/// Whether the request comes from a browser page whose origin is neither on this host's
/// loopback (`localhost`, `127.x.x.x`, `[::1]`) nor listed by name in `origins` (`*` lists
/// none by name) — any of its `Origin` headers. The `Host` the request names is not trusted
/// for this: a page whose name was rebound to 127.0.0.1 sends its own name there.
pub fn unlisted_origin(origins: &[String], head: &RequestHead) -> bool {
    head.headers("origin").any(|raw| {
        let o = std::str::from_utf8(raw).unwrap_or("").trim();
        !origins.iter().any(|l| l == o) && !loopback_origin(o)
    })
}

/// Whether `origin` (`scheme://host[:port]`) names a loopback host.
fn loopback_origin(origin: &str) -> bool {
    let Some((_, authority)) = origin.split_once("://") else { return false };
    // `host[:port]` and nothing else: an origin never carries userinfo or a path.
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').unwrap_or(("", "x")),
        None => authority.split_once(':').unwrap_or((authority, "")),
    };
    let port = port.strip_prefix(':').unwrap_or(port);
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `origin` (`scheme://host[:port]`) names the host the request was sent to. The
/// scheme is not compared: behind a proxy that terminates TLS, herald's own pages are
/// `https://` while herald itself speaks plain HTTP.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let (Some((scheme, authority)), Some(host)) = (origin.split_once("://"), host) else { return false };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => ":80",
        "https" | "wss" => ":443",
        _ => return false,
    };
    let bare = |a: &str| a.strip_suffix(default_port).unwrap_or(a).to_ascii_lowercase();
    bare(authority) == bare(host)
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
    fn pages_trusted_as_loopback() {
        let listed = vec!["https://a.example".to_string()];
        let with = |origins: &[&str]| {
            let mut raw = "POST /pub/x HTTP/1.1\r\nHost: evil.example:8080\r\n".to_string();
            for o in origins {
                raw += &format!("Origin: {o}\r\n");
            }
            raw += "\r\n";
            unlisted_origin(&listed, &parse_head(raw.as_bytes()).unwrap().unwrap())
        };
        assert!(!with(&[]), "a local program sends no Origin");
        for ok in [
            "http://localhost:8080",
            "http://127.0.0.1:3000",
            "https://127.9.9.9",
            "http://[::1]:80",
            "https://a.example",
        ] {
            assert!(!with(&[ok]), "{ok}");
        }
        // A rebound name is not loopback, whatever Host says; nor is any other page.
        for bad in
            ["http://evil.example:8080", "null", "http://127.0.0.1.evil.example", "http://localhost.evil.example"]
                .into_iter()
                .chain(["http://127.0.0.1:80@evil.example", "http://127.0.0.1/path", "http://[::1]x"])
        {
            assert!(with(&[bad]), "{bad}");
        }
        assert!(with(&["http://localhost", "http://evil.example"]), "any of its Origin headers");
    }

    #[test]
    fn listed_wildcard_and_foreign_origins() {
        let listed = vec!["https://a.example".to_string()];
        let h = headers(&listed, &head("https://a.example"));
        assert!(h.contains(&("Access-Control-Allow-Origin", "https://a.example".into())));
        assert!(h.contains(&("Access-Control-Allow-Credentials", "true".into())));
        assert_eq!(headers(&listed, &head("https://evil.example")), [("Vary", "Origin".to_string())]);
        let any = vec!["*".to_string()];
        let h = headers(&any, &head("https://b.example"));
        assert!(h.contains(&("Access-Control-Allow-Origin", "*".into())));
        assert!(!h.iter().any(|(k, _)| *k == "Access-Control-Allow-Credentials"));
        assert!(preflight(&listed, &head("https://a.example"), "GET").is_some());
        assert!(preflight(&listed, &head("https://evil.example"), "GET").is_none());
        assert!(headers(&[], &head("https://a.example")).is_empty());
    }

    #[test]
    fn websocket_origins() {
        let upgrade = |origin: &str, host: &str| {
            let raw = format!("GET /sub/a HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n\r\n");
            parse_head(raw.as_bytes()).unwrap().unwrap()
        };
        let listed = vec!["https://a.example".to_string()];
        assert_eq!(websocket(&listed, &upgrade("https://a.example", "h")), WsOrigin::Trusted);
        assert_eq!(websocket(&listed, &upgrade("https://evil.example", "h")), WsOrigin::Refused);
        assert_eq!(websocket(&[], &upgrade("https://evil.example", "h")), WsOrigin::Refused);
        assert_eq!(websocket(&[], &upgrade("http://herald.example", "herald.example:80")), WsOrigin::Trusted);
        assert_eq!(websocket(&[], &upgrade("https://Herald.example:8443", "herald.example:8443")), WsOrigin::Trusted);
        assert_eq!(websocket(&[], &upgrade("null", "h")), WsOrigin::Refused);
        let any = vec!["*".to_string()];
        assert_eq!(websocket(&any, &upgrade("https://evil.example", "h")), WsOrigin::WithoutCookie);
        let none = parse_head(b"GET /sub/a HTTP/1.1\r\nHost: h\r\n\r\n").unwrap().unwrap();
        assert_eq!(websocket(&[], &none), WsOrigin::Trusted, "not a browser");
    }
}

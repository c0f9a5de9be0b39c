//! Rights: which topics an identity may subscribe or publish to, and where its token comes
//! from (`Authorization: Bearer`, the `token` cookie, or `?token=`).

use super::jwt::{self, Claims, TokenError};
use crate::config::Config;
use crate::proto::http1::RequestHead;
use crate::proto::query::param;

/// Topic prefixes that need a matching claim (API.md §6).
pub const PRIVATE_PREFIXES: [&str; 4] = ["user:", "session:", "group:", "member:"];

/// Who is asking.
#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    /// No token was presented.
    Anonymous,
    /// A token that verified.
    Token(Box<Claims>),
}

impl Identity {
    /// Whether a verified token says who this is (anyone can be anonymous).
    pub fn is_identified(&self) -> bool {
        matches!(self, Identity::Token(_))
    }

    /// Who the identity's token says it is (its `sub`), if it says.
    pub fn user(&self) -> Option<&str> {
        match self {
            Identity::Token(c) => c.sub.as_deref(),
            Identity::Anonymous => None,
        }
    }

    /// When the identity's token expires (Unix milliseconds), if it does.
    pub fn expires(&self) -> Option<u64> {
        match self {
            Identity::Token(c) => c.exp.map(|e| (e.max(0.0) * 1000.0) as u64),
            Identity::Anonymous => None,
        }
    }
}

/// A token was presented and refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub TokenError);

/// The token a request carries, if any: `Authorization: Bearer`, then the `token` cookie
/// (unless `cookie` is false: a WebSocket from an origin that may not use it), then
/// `?token=`. A bearer that is the publish key is a publisher's credential, not a token: it is
/// passed over (a publisher may open a WebSocket with it to publish).
pub fn token_of(head: &RequestHead, publish_key: Option<&str>, cookie_ok: bool) -> Option<String> {
    if let Some(b) = bearer(head)
        && !publish_key.is_some_and(|k| constant_time_eq(k.as_bytes(), b.as_bytes()))
    {
        return Some(b.to_string());
    }
    if cookie_ok && let Some(c) = head.headers("cookie").find_map(|v| cookie(v, "token")) {
        return Some(c);
    }
    match param(head.query(), "token") {
        Some(Ok(t)) if !t.is_empty() => Some(t),
        _ => None,
    }
}

/// The credential of `Authorization: Bearer <credential>`; the scheme's name is
/// case-insensitive (RFC 9110 §11.1).
pub fn bearer(head: &RequestHead) -> Option<&str> {
    let v = head.header_str("authorization")?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

fn cookie(header: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(header).ok()?;
    text.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Verifies the request's token (if any; the cookie only if `cookie_ok`) against
/// `config.jwt_secret`. Without a configured secret, every request is anonymous.
pub fn identify(head: &RequestHead, config: &Config, now: f64, cookie_ok: bool) -> Result<Identity, Refused> {
    let token = token_of(head, config.publish_key.as_deref(), cookie_ok);
    let (Some(secret), Some(token)) = (&config.jwt_secret, token) else {
        return Ok(Identity::Anonymous);
    };
    jwt::verify(&token, secret.as_bytes(), now).map(|c| Identity::Token(Box::new(c))).map_err(Refused)
}

/// Compares secrets in time that depends on their lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `pattern` (with an optional `*` suffix wildcard) covers `topic`.
pub fn matches(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => pattern == topic,
    }
}

pub fn is_private(topic: &str) -> bool {
    PRIVATE_PREFIXES.iter().any(|p| topic.starts_with(p))
}

/// Why a subscription to a topic is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// A private topic and no token: 401.
    NeedToken,
    /// A token without the claim: 403.
    NoClaim,
}

/// May `who` subscribe to `topic`?
pub fn may_subscribe(who: &Identity, topic: &str) -> Result<(), Denied> {
    if !is_private(topic) {
        return Ok(());
    }
    let Identity::Token(c) = who else { return Err(Denied::NeedToken) };
    let own = |prefix: &str, value: Option<&str>| value.is_some_and(|v| topic.strip_prefix(prefix) == Some(v));
    let allowed = own("user:", c.sub.as_deref())
        || own("member:", c.sub.as_deref())
        || own("session:", c.session.as_deref())
        || topic.strip_prefix("group:").is_some_and(|g| c.groups.iter().any(|x| x == g))
        || c.subscribe.iter().any(|p| matches(p, topic));
    if allowed { Ok(()) } else { Err(Denied::NoClaim) }
}

/// Does the token grant publishing to `topic`?
pub fn token_may_publish(c: &Claims, topic: &str) -> bool {
    c.publish.iter().any(|p| matches(p, topic))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http1::parse_head;
    use serde_json::json;

    fn head(extra: &str, query: &str) -> RequestHead {
        let raw = format!("GET /sub/a{query} HTTP/1.1\r\nHost: h\r\n{extra}\r\n");
        parse_head(raw.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn tokens_from_header_cookie_and_query() {
        assert_eq!(token_of(&head("Authorization: Bearer abc\r\n", ""), None, true), Some("abc".into()));
        assert_eq!(token_of(&head("Cookie: a=1; token=xyz; b=2\r\n", ""), None, true), Some("xyz".into()));
        assert_eq!(token_of(&head("", "?token=q.r.s"), None, true), Some("q.r.s".into()));
        assert_eq!(token_of(&head("Cookie: tokens=no\r\n", ""), None, true), None);
        assert_eq!(token_of(&head("Cookie: token=xyz\r\n", ""), None, false), None, "the cookie passed over");
        let key = "Authorization: Bearer K3y\r\nCookie: token=t.o.k\r\n";
        assert_eq!(token_of(&head(key, ""), Some("K3y"), true), Some("t.o.k".into()), "the publish key is not a token");
        assert_eq!(token_of(&head("Authorization: Bearer K3y\r\n", ""), Some("K3y"), true), None);
    }

    #[test]
    fn private_topics_need_the_matching_claim() {
        let claims: Claims =
            serde_json::from_value(json!({"sub": "42", "session": "s1", "groups": ["Mkt"], "subscribe": ["user:7*"]}))
                .unwrap();
        let who = Identity::Token(Box::new(claims));
        for ok in ["news", "user:42", "member:42", "session:s1", "group:Mkt", "user:77"] {
            assert_eq!(may_subscribe(&who, ok), Ok(()), "{ok}");
        }
        for no in ["user:43", "user:420", "session:s2", "group:Eng", "member:1"] {
            assert_eq!(may_subscribe(&who, no), Err(Denied::NoClaim), "{no}");
        }
        assert_eq!(may_subscribe(&Identity::Anonymous, "user:42"), Err(Denied::NeedToken));
        assert_eq!(may_subscribe(&Identity::Anonymous, "broadcast"), Ok(()));
    }

    #[test]
    fn identify_uses_the_secret() {
        let t = jwt::sign(&json!({"sub": "42"}), b"k");
        let h = head(&format!("Authorization: Bearer {t}\r\n"), "");
        let with = |secret: Option<&str>| Config { jwt_secret: secret.map(str::to_string), ..Config::default() };
        assert!(matches!(identify(&h, &with(Some("k")), 0.0, true), Ok(Identity::Token(_))));
        assert!(identify(&h, &with(Some("other")), 0.0, true).is_err());
        assert_eq!(identify(&h, &with(None), 0.0, true), Ok(Identity::Anonymous));
        assert!(matches("a:*", "a:b") && matches("*", "x") && !matches("a", "ab") && matches("a", "a"));
    }
}

//! Identity, rights and CORS (API.md §2, §3, §6, §7): HS256 JWTs signed here in the test and
//! presented by `Authorization: Bearer`, the `token` cookie or `?token=`; private topics
//! (`user:`, `session:`, `group:`, `member:`) and `subscribe` pattern claims on SSE, long-poll
//! and WebSocket (refused with the status before upgrading); invalid tokens (bad signature,
//! expired, `alg: none`, malformed, tampered) refused even on public topics; publish keys and
//! `publish` claims on `/pub/{topic}`, the batch `/pub` and the WebSocket `publish` method;
//! CORS headers on plain, error, stream and long-poll answers, and preflights.
//!
//! Everything speaks raw HTTP over `std::net::TcpStream`; a small WebSocket client lives below.
mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::ws::*;
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------- tokens

const SECRET: &str = "auth-suite-secret";
const KEY: &str = "pub-key-K";

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// `base64url(header) . base64url(payload) . base64url(HMAC-SHA256(secret, first two))`.
fn sign_raw(secret: &str, header: &str, payload: &str) -> String {
    let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}

/// A valid HS256 token for `claims` (an `exp` an hour ahead is added unless given).
fn jwt(claims: Value) -> String {
    let mut claims = claims;
    if claims.get("exp").is_none() {
        claims["exp"] = json!(now_unix() + 3600);
    }
    sign_raw(SECRET, r#"{"alg":"HS256","typ":"JWT"}"#, &claims.to_string())
}

/// Presented tokens that must all be refused with 401 (each with what it is).
fn invalid_tokens() -> Vec<(String, &'static str)> {
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let claims = json!({"sub": "42", "exp": now_unix() + 3600}).to_string();
    let good = sign_raw(SECRET, header, &claims);
    // The same signature over a payload that claims someone else.
    let parts: Vec<&str> = good.split('.').collect();
    let other_payload = b64(json!({"sub": "43", "exp": now_unix() + 3600}).to_string().as_bytes());
    let tampered = format!("{}.{}.{}", parts[0], other_payload, parts[2]);
    // A flipped signature character (the first, whose bits all count).
    let sig = parts[2];
    let flipped = if sig.starts_with('A') { 'B' } else { 'A' };
    let bad_sig = format!("{}.{}.{flipped}{}", parts[0], parts[1], &sig[1..]);
    vec![
        (sign_raw("some-other-secret", header, &claims), "signed with another secret"),
        (bad_sig, "bad signature"),
        (tampered, "tampered payload"),
        (sign_raw(SECRET, header, &json!({"sub": "42", "exp": now_unix() - 120}).to_string()), "expired"),
        (format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(claims.as_bytes())), "alg none"),
        (sign_raw(SECRET, r#"{"alg":"HS512","typ":"JWT"}"#, &claims), "alg HS512"),
        ("not-a-jwt".to_string(), "malformed (one part)"),
        ("a.b.c".to_string(), "malformed (three junk parts)"),
        (format!("{}.{}", parts[0], parts[1]), "malformed (no signature part)"),
    ]
}

/// How a token is presented.
#[derive(Clone, Copy, Debug)]
enum Via {
    Header,
    Cookie,
    Query,
}

const VIAS: [Via; 3] = [Via::Header, Via::Cookie, Via::Query];

/// A subscribe transport.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Transport {
    Sse,
    LongPoll,
    WebSocket,
}

const TRANSPORTS: [Transport; 3] = [Transport::Sse, Transport::LongPoll, Transport::WebSocket];

/// `/sub/{topics}` plus the query (`timeout=0` for long-polls, `token=` when presented so) and
/// the headers presenting the token.
fn sub_request(topics: &str, t: Transport, token: Option<(&str, Via)>) -> (String, Vec<String>) {
    let mut query = Vec::new();
    let mut headers = Vec::new();
    if t == Transport::LongPoll {
        query.push("timeout=0".to_string());
    }
    match token {
        Some((tok, Via::Header)) => headers.push(format!("Authorization: Bearer {tok}")),
        Some((tok, Via::Cookie)) => headers.push(format!("Cookie: a=1; token={tok}")),
        Some((tok, Via::Query)) => query.push(format!("token={}", pct(tok))),
        None => {}
    }
    let path = if query.is_empty() { format!("/sub/{topics}") } else { format!("/sub/{topics}?{}", query.join("&")) };
    (path, headers)
}

/// Subscribes to `topics` over `t` and returns whether it was accepted (SSE 200, long-poll
/// 204/200, WebSocket 101), or the refusal.
fn attempt(s: &Server, topics: &str, t: Transport, token: Option<(&str, Via)>) -> Result<(), Response> {
    let (path, headers) = sub_request(topics, t, token);
    let hdrs: Vec<&str> = headers.iter().map(String::as_str).collect();
    match t {
        Transport::Sse => SseClient::try_open(s, &path, &hdrs).map(|c| {
            assert!(
                c.header("content-type").is_some_and(|v| v.starts_with("text/event-stream")),
                "SSE {path}: {:?}",
                c.headers
            );
        }),
        Transport::LongPoll => {
            let mut req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n");
            for h in &hdrs {
                req.push_str(h);
                req.push_str("\r\n");
            }
            req.push_str("\r\n");
            let r = request(s, &req);
            if r.status == 204 || r.status == 200 { Ok(()) } else { Err(r) }
        }
        Transport::WebSocket => try_ws(s, &path, &hdrs).map(|_| ()),
    }
}

fn expect_ok(s: &Server, topics: &str, t: Transport, token: Option<(&str, Via)>, what: &str) {
    if let Err(r) = attempt(s, topics, t, token) {
        panic!("{what}: {t:?} /sub/{topics} via {:?} refused: {} {}", token.map(|x| x.1), r.status, r.text());
    }
}

fn expect_refused(
    s: &Server,
    topics: &str,
    t: Transport,
    token: Option<(&str, Via)>,
    status: u16,
    path: &str,
    what: &str,
) {
    let what = format!("{what}: {t:?} /sub/{topics} via {:?}", token.map(|x| x.1));
    match attempt(s, topics, t, token) {
        Ok(()) => panic!("{what}: accepted, expected {status}"),
        Err(r) => {
            assert_ne!(r.status, 101, "{what}: upgraded");
            assert_json_error_at(&r, status, path, &what);
        }
    }
}

fn header_names(headers: &[(String, String)]) -> Vec<String> {
    headers.iter().map(|(k, _)| k.to_ascii_lowercase()).collect()
}

fn cors_headers(headers: &[(String, String)]) -> Vec<String> {
    header_names(headers).into_iter().filter(|k| k.starts_with("access-control-")).collect()
}

fn hget<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn list_contains(value: Option<&str>, item: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|x| x.trim().eq_ignore_ascii_case(item)))
}

fn jwt_flags() -> [&'static str; 2] {
    ["--jwt-secret", SECRET]
}

// ---------------------------------------------------------------- private topics

#[test]
fn private_topics_without_a_token_are_401_naming_the_topic() {
    each_driver(2, &jwt_flags(), |s| {
        for t in TRANSPORTS {
            for (topics, path) in [
                ("user:42", "/topics/0"),
                ("session:s1", "/topics/0"),
                ("group:Marketing", "/topics/0"),
                ("member:123", "/topics/0"),
                ("news,user:42", "/topics/1"),
                ("news,weather,group:g", "/topics/2"),
            ] {
                expect_refused(s, topics, t, None, 401, path, "no token");
            }
            // Public topics need no token.
            expect_ok(s, "news", t, None, "public topic without a token");
            expect_ok(s, "news,weather", t, None, "public topics without a token");
        }
    });
}

#[test]
fn a_token_grants_its_own_topics_by_header_cookie_or_query() {
    each_driver(2, &jwt_flags(), |s| {
        let tok = jwt(json!({"sub": "42", "session": "s1", "groups": ["Marketing", "Engineering"]}));
        let own = "user:42,member:42,session:s1,group:Marketing,group:Engineering,news";
        for t in TRANSPORTS {
            for via in VIAS {
                expect_ok(s, own, t, Some((&tok, via)), "own topics");
                expect_ok(s, "user:42", t, Some((&tok, via)), "own user topic");
                expect_ok(s, "news", t, Some((&tok, via)), "public topic with a token");
            }
        }
        // The subscription is real: events of each granted topic arrive.
        for via in VIAS {
            let (path, headers) = sub_request(own, Transport::Sse, Some((&tok, via)));
            let hdrs: Vec<&str> = headers.iter().map(String::as_str).collect();
            let mut c = SseClient::open(s, &path, &hdrs);
            let mut p = Publisher::new(s);
            let mut want = BTreeSet::new();
            for topic in own.split(',') {
                let data = format!("{topic} via {via:?}");
                p.publish(topic, &data);
                want.insert(data);
            }
            // (A multi-topic stream's `id:` is its own resume cursor, not the publish cursor.)
            let events = c.take(want.len());
            assert!(events.iter().all(|e| e.id.as_ref().is_some_and(|i| !i.is_empty())), "{events:?}");
            let got: BTreeSet<String> = events.into_iter().map(|e| e.data).collect();
            assert_eq!(got, want, "via {via:?}: one event per granted topic");
        }
        // A long-poll with the token resumes its own topic from a cursor.
        let first = publish_ok(s, "user:42", "before the cursor");
        let later = publish_ok(s, "user:42", "after the cursor");
        let (path, headers) = sub_request("user:42", Transport::LongPoll, Some((&tok, Via::Cookie)));
        let mut req = format!("GET {path}&last_event_id={} HTTP/1.1\r\nHost: t\r\n", pct(&first));
        for h in &headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        let r = request(s, &req);
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["events"][0]["id"], later.as_str(), "{v}");
        assert_eq!(v["events"][0]["data"], "after the cursor", "{v}");
    });
}

#[test]
fn a_valid_token_without_the_claim_is_403_naming_the_topic() {
    each_driver(2, &jwt_flags(), |s| {
        let tok = jwt(json!({"sub": "42", "session": "s1", "groups": ["Marketing"]}));
        for t in TRANSPORTS {
            for via in VIAS {
                let tk = Some((tok.as_str(), via));
                for (topics, path) in [
                    ("user:43", "/topics/0"),
                    ("user:420", "/topics/0"),
                    ("member:43", "/topics/0"),
                    ("session:s2", "/topics/0"),
                    ("group:Sales", "/topics/0"),
                    ("group:marketing", "/topics/0"),
                    ("user:42,group:Sales", "/topics/1"),
                    ("news,session:s1,member:7", "/topics/2"),
                ] {
                    expect_refused(s, topics, t, tk, 403, path, "token lacking the claim");
                }
            }
        }
    });
}

#[test]
fn invalid_tokens_are_401_even_for_public_topics() {
    each_driver(2, &jwt_flags(), |s| {
        for (tok, what) in invalid_tokens() {
            for t in TRANSPORTS {
                for via in VIAS {
                    expect_refused(s, "news", t, Some((&tok, via)), 401, "/token", what);
                    expect_refused(s, "user:42", t, Some((&tok, via)), 401, "/token", what);
                }
            }
        }
        // The server is fine afterwards, and a good token still works.
        let tok = jwt(json!({"sub": "42"}));
        for t in TRANSPORTS {
            expect_ok(s, "user:42", t, Some((&tok, Via::Header)), "good token after bad ones");
        }
    });
}

#[test]
fn subscribe_pattern_claims_grant_matching_topics() {
    each_driver(2, &jwt_flags(), |s| {
        let tok = jwt(json!({"sub": "1", "subscribe": ["news:*", "user:7*", "group:exact"]}));
        for t in TRANSPORTS {
            let tk = Some((tok.as_str(), Via::Header));
            for topics in ["user:77", "user:7abc", "group:exact", "news:sports", "user:1", "user:77,group:exact,news:x"]
            {
                expect_ok(s, topics, t, tk, "pattern claim");
            }
            for (topics, path) in [
                ("user:8", "/topics/0"),
                ("user:17", "/topics/0"),
                ("group:exactly", "/topics/0"),
                ("session:news:x", "/topics/0"),
                ("user:77,user:8", "/topics/1"),
            ] {
                expect_refused(s, topics, t, tk, 403, path, "outside the patterns");
            }
        }
        // And events of a pattern-granted private topic arrive.
        let mut c = SseClient::open(s, "/sub/user:77", &[&format!("Authorization: Bearer {tok}")]);
        let id = publish_ok(s, "user:77", "seventy-seven");
        let e = c.next_event().expect("event");
        assert_eq!((e.id.as_deref(), e.data.as_str()), (Some(id.as_str()), "seventy-seven"));
    });
}

#[test]
fn an_occupancy_topic_is_read_with_the_rights_of_the_topic_it_counts() {
    each_driver(2, &jwt_flags(), |s| {
        let own = jwt(json!({"sub": "42", "groups": ["g1"], "subscribe": ["room:*"]}));
        for t in TRANSPORTS {
            expect_refused(s, "$occupancy:user:42", t, None, 401, "/topics/0", "no token");
            expect_refused(s, "news,$occupancy:member:42", t, None, 401, "/topics/1", "no token");
            for via in VIAS {
                let tok = Some((own.as_str(), via));
                expect_ok(s, "$occupancy:user:42,$occupancy:group:g1,$occupancy:news", t, tok, "own topics' counts");
                expect_refused(s, "$occupancy:user:43", t, tok, 403, "/topics/0", "another user's count");
                expect_refused(s, "$occupancy:group:g2", t, tok, 403, "/topics/0", "another group's count");
            }
        }
        let mut w = ws_with(s, "/sub/news", &[&format!("Authorization: Bearer {own}")]);
        for topic in ["$occupancy:user:43", "$occupancy:session:x"] {
            let req = json!({"method": "subscribe", "id": 1, "topics": [topic]});
            assert_errors(&w.call(req.clone()), &req, "subscribed", &["/topics/0"]);
        }
        let v = w.call(json!({"method": "subscribe", "id": 2, "topics": ["$occupancy:user:42"]}));
        assert_eq!(v["event"], "subscribed", "{v}");
    });
}

#[test]
fn ws_subscribe_method_checks_rights_on_an_open_socket() {
    each_driver(2, &jwt_flags(), |s| {
        let tok = jwt(json!({"sub": "42", "groups": ["g1"]}));
        let mut w = ws_with(s, "/sub/news", &[&format!("Authorization: Bearer {tok}")]);
        let req = json!({"method": "subscribe", "id": 1, "topics": ["user:43"]});
        let v = w.call(req.clone());
        assert_errors(&v, &req, "subscribed", &["/topics/0"]);
        let req = json!({"method": "subscribe", "id": 2, "topics": ["group:g2"]});
        let v = w.call(req.clone());
        assert_errors(&v, &req, "subscribed", &["/topics/0"]);
        // Topics the token allows are subscribed without errors.
        let v = w.call(json!({"method": "subscribe", "id": 3, "topics": ["user:42", "group:g1"]}));
        assert_eq!(v, json!({"event": "subscribed", "id": 3, "topics": ["user:42", "group:g1"]}));
        // Nothing of the refused topics arrives; the granted one does.
        publish_ok(s, "user:43", "not yours");
        publish_ok(s, "group:g2", "not yours either");
        let id = publish_ok(s, "user:42", "yours");
        let v = w.next_json();
        assert_eq!(
            (v["topic"].as_str(), v["id"].as_str(), v["data"].as_str()),
            (Some("user:42"), Some(id.as_str()), Some("yours")),
            "{v}"
        );
        let id = publish_ok(s, "group:g1", "your group");
        let v = w.next_json();
        assert_eq!((v["topic"].as_str(), v["id"].as_str()), (Some("group:g1"), Some(id.as_str())), "{v}");

        // An anonymous socket may not subscribe to private topics.
        let mut a = ws_with(s, "/sub/news", &[]);
        let req = json!({"method": "subscribe", "id": "x", "topics": ["user:1"]});
        let v = a.call(req.clone());
        assert_errors(&v, &req, "subscribed", &["/topics/0"]);
        let v = a.call(json!({"method": "ping", "id": 5}));
        assert_eq!(v["event"], "pong", "{v}");
    });
}

// ---------------------------------------------------------------- publish rights

fn post(s: &Server, path: &str, headers: &[&str], content_type: Option<&str>, body: &str) -> Response {
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n", body.len());
    if let Some(ct) = content_type {
        req.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    request(s, &req)
}

const NDJSON: &str = "application/x-ndjson";

#[test]
fn loopback_may_publish_without_a_key() {
    each_driver(2, &[], |s| {
        let r = post(s, "/pub/open", &[], None, "hello");
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.json()["id"].is_string(), "{}", r.text());
        let r = post(s, "/pub", &[], Some(NDJSON), "{\"topic\":\"open\",\"data\":\"x\"}\n");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["ids"].as_array().map(Vec::len), Some(1), "{}", r.text());
        let mut w = ws_with(s, "/sub/open", &[]);
        let v = w.call(json!({"method": "publish", "id": 1, "topic": "other", "data": "x"}));
        assert_eq!(v["event"], "published", "{v}");
        assert!(v.get("errors").is_none() && v["event_id"].is_string(), "{v}");
    });
}

#[test]
fn publish_needs_the_key_when_one_is_set() {
    each_driver(2, &["--publish-key", KEY], |s| {
        let auth = format!("Authorization: Bearer {KEY}");
        let batch = "{\"topic\":\"keyed\",\"data\":\"a\"}\n{\"topic\":\"keyed2\",\"data\":{\"n\":1}}\n";
        for (path, ct, body) in [("/pub/keyed", None, "data"), ("/pub", Some(NDJSON), batch)] {
            let r = post(s, path, &[], ct, body);
            assert_json_error(&r, 401);
            let r = post(s, path, &["Authorization: Bearer wrong"], ct, body);
            assert_json_error(&r, 403);
            let r = post(s, path, &[&format!("Authorization: Bearer {KEY}x")], ct, body);
            assert_json_error(&r, 403);
            let r = post(s, path, &[&auth], ct, body);
            assert_eq!(r.status, 200, "{path} with the key: {}", r.text());
        }
        // Refused publishes published nothing: a reader from the start sees only the keyed ones.
        let mut c = SseClient::open(s, "/sub/keyed", &[]);
        let r = post(s, "/pub/keyed", &[], None, "refused");
        assert_json_error(&r, 401);
        let r = post(s, "/pub/keyed", &[&auth], None, "accepted");
        assert_eq!(r.status, 200);
        assert_eq!(c.next_event().expect("event").data, "accepted");

        // WebSocket: the key given at the handshake lets the socket publish.
        let mut keyed = ws_with(s, "/sub/wsk", &[&auth]);
        let v = keyed.call(json!({"method": "publish", "id": 1, "topic": "wsk-other", "data": "x"}));
        assert_eq!(v["event"], "published", "{v}");
        assert!(v.get("errors").is_none(), "{v}");
        assert!(v["event_id"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        let mut plain = ws_with(s, "/sub/wsk", &[]);
        let req = json!({"method": "publish", "id": 2, "topic": "wsk-other", "data": "y"});
        let v = plain.call(req.clone());
        assert_eq!(v["event"], "published", "{v}");
        assert!(v["errors"].as_array().is_some_and(|e| !e.is_empty()), "publish without the key must fail: {v}");
        assert_eq!(v["id"], 2, "{v}");
        assert!(v.get("event_id").is_none(), "{v}");
        let mut wrong = ws_with(s, "/sub/wsk", &["Authorization: Bearer nope"]);
        let v = wrong.call(json!({"method": "publish", "id": 3, "topic": "wsk-other", "data": "z"}));
        assert!(v["errors"].as_array().is_some_and(|e| !e.is_empty()), "publish with a wrong key must fail: {v}");
        // Subscribing still works without the key.
        let v = plain.call(json!({"method": "ping", "id": 4}));
        assert_eq!(v["event"], "pong");
    });
}

#[test]
fn topic_information_needs_the_right_to_publish_to_the_topic() {
    each_driver(2, &["--jwt-secret", SECRET, "--publish-key", KEY], |s| {
        let info = |topic: &str, extra: &[&str]| {
            let mut raw = format!("GET /topics/{topic} HTTP/1.1\r\nHost: t\r\n");
            for h in extra {
                raw.push_str(&format!("{h}\r\n"));
            }
            request(s, &format!("{raw}\r\n"))
        };
        let key = format!("Authorization: Bearer {KEY}");
        assert_json_error(&info("t", &[]), 401);
        assert_json_error(&info("t", &["Authorization: Bearer nope"]), 403);
        assert_eq!(info("t", &[&key]).status, 200);
        let tok = jwt(json!({"sub": "9", "publish": ["news:*"]}));
        let bearer = format!("Authorization: Bearer {tok}");
        assert_eq!(info("news:1", &[&bearer]).status, 200);
        assert_json_error_at(&info("other", &[&bearer]), 403, "/topic", "a topic the token may not publish to");
        // A subscriber's token (no publish claim) learns nothing either.
        let reader = format!("Authorization: Bearer {}", jwt(json!({"sub": "9"})));
        assert_json_error(&info("user:9", &[&reader]), 403);
        assert_json_error_at(&info("bad%20topic", &[&key]), 400, "/topic", "a bad topic");
        let r = request(s, "POST /topics/t HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
        assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")), "{}", r.text());
        // A listing names only the topics its asker may publish to.
        for t in ["news:1", "other", "user:9"] {
            assert_eq!(post(s, &format!("/pub/{t}"), &[&key], None, "x").status, 200);
        }
        let list = |extra: &str| {
            let r = request(s, &format!("GET /topics HTTP/1.1\r\nHost: t\r\n{extra}\r\n"));
            let names: Vec<String> = r.json()["topics"]
                .as_array()
                .map(|a| a.iter().map(|t| t["topic"].as_str().unwrap_or("").to_string()).collect())
                .unwrap_or_default();
            (r.status, names)
        };
        assert_eq!(list(&format!("{key}\r\n")), (200, vec!["news:1".into(), "other".into(), "user:9".into()]));
        assert_eq!(list(&format!("{bearer}\r\n")), (200, vec!["news:1".to_string()]));
        assert_eq!(list(&format!("{reader}\r\n")).0, 403, "no publish claim: no listing");
        let empty = format!("Authorization: Bearer {}", jwt(json!({"sub": "9", "publish": [""]})));
        assert_eq!(list(&format!("{empty}\r\n")).0, 403, "a claim that covers no topic: no listing");
        // Paging one at a time, `next` never names a topic outside the claim (an outside
        // test's reproducer: it named every other topic, private ones too).
        let mut after = String::new();
        for _ in 0..10 {
            let r = request(s, &format!("GET /topics?limit=1{after} HTTP/1.1\r\nHost: t\r\n{bearer}\r\n\r\n"));
            let v = r.json();
            for t in v["topics"].as_array().into_iter().flatten() {
                assert_eq!(t["topic"], "news:1", "{v}");
            }
            match v["next"].as_str() {
                Some(next) => {
                    assert!(next.starts_with("news:"), "next names a topic outside the claim: {v}");
                    after = format!("&after={next}");
                }
                None => break,
            }
        }
        assert_eq!(list("").0, 401);
        assert_eq!(list("Authorization: Bearer nope\r\n").0, 403);
    });
}

#[test]
fn jwt_publish_claims_cover_their_topics_only() {
    each_driver(2, &["--jwt-secret", SECRET, "--publish-key", KEY], |s| {
        let tok = jwt(json!({"sub": "9", "publish": ["news:*", "alerts"]}));
        let bearer = format!("Authorization: Bearer {tok}");
        for topic in ["news:1", "news:sports", "alerts"] {
            let r = post(s, &format!("/pub/{topic}"), &[&bearer], None, "by claim");
            assert_eq!(r.status, 200, "{topic}: {}", r.text());
            assert_eq!(r.json()["topic"], topic);
        }
        for topic in ["other", "alerts2", "new", "user:9"] {
            let r = post(s, &format!("/pub/{topic}"), &[&bearer], None, "outside the claim");
            assert_json_error(&r, 403);
        }
        // A batch is as strict: one line outside the claim refuses it.
        let r = post(s, "/pub", &[&bearer], Some(NDJSON), "{\"topic\":\"news:a\",\"data\":\"x\"}\n");
        assert_eq!(r.status, 200, "{}", r.text());
        let r = post(
            s,
            "/pub",
            &[&bearer],
            Some(NDJSON),
            "{\"topic\":\"news:a\",\"data\":\"x\"}\n{\"topic\":\"other\",\"data\":\"y\"}\n",
        );
        assert_json_error(&r, 403);
        // A token without publish claims may not publish.
        let sub_only = jwt(json!({"sub": "9", "subscribe": ["news:*"]}));
        let r = post(s, "/pub/news:1", &[&format!("Authorization: Bearer {sub_only}")], None, "x");
        assert_json_error(&r, 403);
        // Invalid tokens are 401.
        for (bad, what) in invalid_tokens().into_iter().filter(|(_, what)| !what.starts_with("malformed")) {
            let r = post(s, "/pub/news:1", &[&format!("Authorization: Bearer {bad}")], None, "x");
            assert_eq!(r.status, 401, "{what}: {}", r.text());
            assert_json_error(&r, 401);
        }
        // The key still works.
        let r = post(s, "/pub/other", &[&format!("Authorization: Bearer {KEY}")], None, "by key");
        assert_eq!(r.status, 200, "{}", r.text());
    });
}

// ---------------------------------------------------------------- CORS

const A: &str = "https://a.example";
const B: &str = "https://b.example";
const EVIL: &str = "https://evil.example";

fn assert_cors_for(headers: &[(String, String)], origin: &str, what: &str) {
    assert_eq!(hget(headers, "access-control-allow-origin"), Some(origin), "{what}: {headers:?}");
    assert_eq!(hget(headers, "access-control-allow-credentials"), Some("true"), "{what}: {headers:?}");
}

fn assert_no_cors(headers: &[(String, String)], what: &str) {
    assert!(cors_headers(headers).is_empty(), "{what}: a foreign origin gets no CORS headers: {headers:?}");
}

/// The CORS-relevant answers for `origin`: (what, headers). Its loopback publish without a
/// key is answered `publish_status`: 200 for a listed origin, 403 for another (a page of an
/// origin nobody listed is not trusted as loopback).
fn answers_for(s: &Server, origin: &str, publish_status: u16) -> Vec<(&'static str, Vec<(String, String)>)> {
    let o = format!("Origin: {origin}");
    let mut out = Vec::new();
    let r = post(s, "/pub/cors", &[&o], None, "x");
    assert_eq!(r.status, publish_status, "loopback publish from {origin}: {}", r.text());
    out.push(("publish", r.headers));
    let r = request(s, &format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{o}\r\n\r\n"));
    assert_eq!(r.status, 200);
    out.push(("healthz", r.headers));
    let r = request(s, &format!("GET /no/such/path HTTP/1.1\r\nHost: t\r\n{o}\r\n\r\n"));
    assert_json_error(&r, 404);
    out.push(("404", r.headers));
    let r = request(s, &format!("GET /sub/bad%20topic?timeout=0 HTTP/1.1\r\nHost: t\r\n{o}\r\n\r\n"));
    assert_json_error(&r, 400);
    out.push(("400", r.headers));
    let r = request(s, &format!("GET /sub/user:1?timeout=0 HTTP/1.1\r\nHost: t\r\n{o}\r\n\r\n"));
    assert_json_error(&r, 401);
    out.push(("401", r.headers));
    let r = request(s, &format!("GET /sub/cors?timeout=0 HTTP/1.1\r\nHost: t\r\n{o}\r\n\r\n"));
    assert_eq!(r.status, 204, "{}", r.text());
    out.push(("long-poll 204", r.headers));
    let cursor = publish_ok(s, "cors", "y");
    let _ = publish_ok(s, "cors", "z");
    let r = request(
        s,
        &format!("GET /sub/cors?timeout=0&last_event_id={} HTTP/1.1\r\nHost: t\r\n{o}\r\n\r\n", pct(&cursor)),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    out.push(("long-poll 200", r.headers));
    let c = SseClient::open(s, "/sub/cors", &[&o]);
    out.push(("SSE head", c.headers.clone()));
    let c = SseClient::open(s, "/eventsource", &[&o]);
    out.push(("eventsource head", c.headers.clone()));
    out
}

#[test]
fn cors_listed_origins_get_allow_origin_and_credentials() {
    each_driver(2, &["--cors-origins", "https://a.example,https://b.example", "--jwt-secret", SECRET], |s| {
        for origin in [A, B] {
            for (what, headers) in answers_for(s, origin, 200) {
                assert_cors_for(&headers, origin, what);
            }
        }
    });
}

#[test]
fn cors_foreign_origins_get_no_cors_headers() {
    each_driver(2, &["--cors-origins", "https://a.example,https://b.example", "--jwt-secret", SECRET], |s| {
        for origin in [EVIL, "https://a.example.evil.example", "http://a.example", "null"] {
            for (what, headers) in answers_for(s, origin, 403) {
                assert_no_cors(&headers, &format!("{what} for {origin}"));
            }
        }
    });
}

#[test]
fn cors_preflight_answers_listed_origins_only() {
    each_driver(2, &["--cors-origins", "https://a.example,https://b.example"], |s| {
        for (path, method) in [("/sub/x", "GET"), ("/pub/x", "POST"), ("/eventsource", "GET")] {
            for origin in [A, B] {
                let r = request(
                    s,
                    &format!(
                        "OPTIONS {path} HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: {method}\r\nAccess-Control-Request-Headers: last-event-id, authorization\r\n\r\n"
                    ),
                );
                let what = format!("preflight {path} from {origin}");
                assert_eq!(r.status, 204, "{what}: {:?} {}", r.headers, r.text());
                assert_cors_for(&r.headers, origin, &what);
                // Browsers refuse a preflight whose Access-Control-Allow-Origin comes twice.
                let names = header_names(&r.headers);
                let distinct: BTreeSet<&String> = names.iter().collect();
                assert_eq!(distinct.len(), names.len(), "{what}: a header sent twice: {:?}", r.headers);
                let methods = r.header("access-control-allow-methods");
                assert!(list_contains(methods, method), "{what}: Allow-Methods {methods:?} must list {method}");
                let allowed = r.header("access-control-allow-headers");
                for h in ["Last-Event-ID", "Authorization"] {
                    assert!(list_contains(allowed, h), "{what}: Allow-Headers {allowed:?} must list {h}");
                }
            }
            let r = request(
                s,
                &format!(
                    "OPTIONS {path} HTTP/1.1\r\nHost: t\r\nOrigin: {EVIL}\r\nAccess-Control-Request-Method: {method}\r\n\r\n"
                ),
            );
            assert_no_cors(&r.headers, &format!("preflight {path} from {EVIL} ({})", r.status));
        }
    });
}

#[test]
fn cors_wildcard_allows_any_origin_without_credentials() {
    each_driver(2, &["--cors-origins", "*", "--jwt-secret", SECRET], |s| {
        for origin in [A, EVIL] {
            for (what, headers) in answers_for(s, origin, 403) {
                assert_eq!(hget(&headers, "access-control-allow-origin"), Some("*"), "{what}: {headers:?}");
                assert!(
                    hget(&headers, "access-control-allow-credentials").is_none(),
                    "{what}: no credentials with *: {headers:?}"
                );
            }
            let r = request(
                s,
                &format!(
                    "OPTIONS /sub/x HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: last-event-id\r\n\r\n"
                ),
            );
            assert_eq!(r.status, 204, "{:?}", r.headers);
            assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{:?}", r.headers);
            assert!(r.header("access-control-allow-credentials").is_none(), "{:?}", r.headers);
            assert!(list_contains(r.header("access-control-allow-headers"), "Last-Event-ID"), "{:?}", r.headers);
        }
    });
}

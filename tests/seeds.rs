//! The seed-compatible routes (API.md §4, §7), replaying the seed documents' own examples
//! (`shared/seeds/`) as their clients would:
//! - 000 session events: `/_wave/api/sessions/{token}/events`, one event per long-poll, the
//!   posted JSON byte for byte, empty 200 on timeout, no loss between GETs;
//! - 001 member events: SSE on `/events` (and `/notification/events`, and a configured prefix)
//!   keyed by `Member-ID`, `data:` `{"body":…,"timestamp":"<ISO-8601>"}`, devices, resume;
//! - 002 chat events WebSocket on `/events`: session required, `ping`, `send`, `debug`, errors
//!   with JSON pointers, the user's events pushed as they are;
//! - 003 EventSource push: `/eventsource[/{types}]` carrying `broadcast` and the token's own
//!   topics, batch publishing, and `/admin/pause` with retry and loss-free resume.
mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::ws::*;
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------- shared helpers

const SECRET: &str = "seeds-suite-secret";
const KEY: &str = "seeds-pub-key";

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// An HS256 token for `claims`, valid for an hour.
fn jwt(claims: Value) -> String {
    let mut claims = claims;
    claims["exp"] = json!(now_secs() as u64 + 3600);
    let input = format!("{}.{}", b64(br#"{"alg":"HS256","typ":"JWT"}"#), b64(claims.to_string().as_bytes()));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("hmac key");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

/// A request head (and body) as raw text.
fn raw(method: &str, path: &str, headers: &[&str], body: &str) -> String {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: t\r\n");
    if method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    req
}

fn post(s: &Server, path: &str, headers: &[&str], body: &str) -> Response {
    request(s, &raw("POST", path, headers, body))
}

fn assert_json_content(r: &Response, what: &str) {
    let ct = r.header("content-type").unwrap_or("").to_ascii_lowercase();
    assert!(ct.starts_with("application/json"), "{what}: Content-Type {ct:?}, headers {:?}", r.headers);
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00)` to Unix seconds.
fn parse_rfc3339_utc(t: &str) -> Option<f64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        if s.bytes().all(|c| c.is_ascii_digit()) { s.parse().ok() } else { None }
    };
    let (y, mo, d, h, mi, sec) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &t[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        frac = format!("0.{}", &r[..n]).parse().ok()?;
        rest = &r[n..];
    }
    if rest != "Z" && rest != "+00:00" {
        return None;
    }
    Some((days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec) as f64 + frac)
}

#[test]
fn the_rfc3339_parser_of_this_suite() {
    assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0.0));
    assert_eq!(parse_rfc3339_utc("2020-07-01T23:49:41.729Z"), Some(1_593_647_381.729));
    assert_eq!(parse_rfc3339_utc("2000-02-29T00:00:00.000+00:00"), Some(951_782_400.0));
    for bad in ["2020-07-01 23:49:41Z", "2020-07-01T23:49:41", "2020-13-01T00:00:00Z", "2020-07-01T23:49:41.Z", "x"] {
        assert_eq!(parse_rfc3339_utc(bad), None, "{bad}");
    }
}

// ================================================================ seed 000: session events

const WAVE: &str = "/_wave/api/sessions/6fdbd1a0-c339-11e9-b775-6d49dd567772/events";
/// The document's event, with its whitespace.
const DOC_EVENT: &str = "{\n \"type\": \"status\",\n \"data\": \"paused\"\n}";

fn wave_get(query: &str, headers: &[&str]) -> String {
    let path = if query.is_empty() { WAVE.to_string() } else { format!("{WAVE}?{query}") };
    raw("GET", &path, headers, "")
}

/// A wave answer carrying an event: 200, JSON, exactly `body`, and a `Last-Event-ID`.
fn expect_wave_event(r: &Response, body: &str, what: &str) -> String {
    assert_eq!(r.status, 200, "{what}: {:?} {}", r.headers, r.text());
    assert_eq!(r.text(), body, "{what}: the answer is exactly the posted JSON");
    assert_json_content(r, what);
    let id = r.header("last-event-id").unwrap_or_else(|| panic!("{what}: no Last-Event-ID: {:?}", r.headers));
    assert!(!id.is_empty(), "{what}: empty Last-Event-ID");
    id.to_string()
}

fn expect_wave_timeout(r: &Response, what: &str) {
    assert_eq!(r.status, 200, "{what}: a timeout is an empty 200: {:?} {}", r.headers, r.text());
    assert!(r.body.is_empty(), "{what}: a timeout has an empty body, got {:?}", r.text());
}

fn wave_post(s: &Server, body: &str) {
    let r = post(s, WAVE, &["Content-Type: application/json"], body);
    assert!((200..300).contains(&r.status), "POST {body:?}: {} {}", r.status, r.text());
}

#[test]
fn wave_get_without_events_answers_an_empty_200_after_the_timeout() {
    each_driver(2, &[], |s| {
        let mut c = s.connect();
        for round in 0..2 {
            let t0 = Instant::now();
            let r = roundtrip(&mut c, wave_get("timeout=0.5", &[]).as_bytes());
            let took = t0.elapsed();
            expect_wave_timeout(&r, &format!("round {round}"));
            assert!(took >= Duration::from_millis(400), "round {round}: answered after {took:?}, before the timeout");
        }
    });
}

#[test]
fn wave_post_reaches_every_listener_byte_for_byte() {
    each_driver(2, &[], |s| {
        let mut a = s.connect();
        let mut b = s.connect();
        // Each listener polls once (a timeout): from then on its connection has a place in the
        // session, so whatever is posted reaches its next GET even if that GET is still in flight.
        for c in [&mut a, &mut b] {
            expect_wave_timeout(&roundtrip(c, wave_get("timeout=0.5", &[]).as_bytes()), "first poll");
        }
        for c in [&mut a, &mut b] {
            c.write_all(wave_get("timeout=15", &[]).as_bytes()).unwrap();
        }
        // The document's POST: no Content-Type given, just the JSON.
        let r = post(s, WAVE, &[], DOC_EVENT);
        assert!((200..300).contains(&r.status), "POST: {} {}", r.status, r.text());
        let ida = expect_wave_event(&read_response(&mut a).expect("answer a"), DOC_EVENT, "listener a");
        let idb = expect_wave_event(&read_response(&mut b).expect("answer b"), DOC_EVENT, "listener b");
        assert_eq!(ida, idb, "both listeners got the same event");
        // Once more, compact JSON, both still listening on the same connections.
        for c in [&mut a, &mut b] {
            c.write_all(wave_get("timeout=15", &[]).as_bytes()).unwrap();
        }
        wave_post(s, r#"{"type":"status","data":"running"}"#);
        for (c, what) in [(&mut a, "a"), (&mut b, "b")] {
            expect_wave_event(&read_response(c).expect("answer"), r#"{"type":"status","data":"running"}"#, what);
        }
    });
}

#[test]
fn wave_bad_bodies_are_400_and_deliver_nothing() {
    each_driver(2, &[], |s| {
        let mut l = s.connect();
        expect_wave_timeout(&roundtrip(&mut l, wave_get("timeout=0.5", &[]).as_bytes()), "first poll");
        for bad in ["{\"type\":", "not json", "", "[1,2]", "\"paused\"", "42", "null", "{} {}"] {
            let r = post(s, WAVE, &["Content-Type: application/json"], bad);
            assert_json_error(&r, 400);
        }
        wave_post(s, DOC_EVENT);
        let r = roundtrip(&mut l, wave_get("timeout=15", &[]).as_bytes());
        expect_wave_event(&r, DOC_EVENT, "the first event after the bad ones");
    });
}

#[test]
fn wave_no_event_is_lost_between_gets_and_last_event_id_resumes() {
    each_driver(2, &[], |s| {
        let ev = |n: u32| format!("{{\"type\": \"status\", \"data\": \"n{n}\"}}");
        let mut c = s.connect();
        expect_wave_timeout(&roundtrip(&mut c, wave_get("timeout=0.5", &[]).as_bytes()), "first poll");
        // GET, answered with event 1.
        c.write_all(wave_get("timeout=15", &[]).as_bytes()).unwrap();
        wave_post(s, &ev(1));
        let id1 = expect_wave_event(&read_response(&mut c).expect("answer 1"), &ev(1), "GET 1");
        // Events 2 and 3 while no GET is pending: the next GETs get them, one each, in order.
        wave_post(s, &ev(2));
        wave_post(s, &ev(3));
        let id2 = expect_wave_event(&roundtrip(&mut c, wave_get("", &[]).as_bytes()), &ev(2), "GET 2");
        let id3 = expect_wave_event(&roundtrip(&mut c, wave_get("", &[]).as_bytes()), &ev(3), "GET 3");
        assert!(id1 != id2 && id2 != id3 && id1 != id3, "distinct cursors: {id1} {id2} {id3}");
        // Nothing more: the next GET waits and times out.
        expect_wave_timeout(&roundtrip(&mut c, wave_get("timeout=0.5", &[]).as_bytes()), "after event 3");
        // Last-Event-ID sent back on a new connection continues right after that event.
        let r = request(s, &wave_get("timeout=15", &[&format!("Last-Event-ID: {id1}")]));
        expect_wave_event(&r, &ev(2), "new connection after event 1");
        let r = request(s, &wave_get("timeout=15", &[&format!("Last-Event-ID: {id2}")]));
        expect_wave_event(&r, &ev(3), "new connection after event 2");
        // After the newest event it waits for the next one.
        let mut n = s.connect();
        n.write_all(wave_get("timeout=15", &[&format!("Last-Event-ID: {id3}")]).as_bytes()).unwrap();
        wave_post(s, &ev(4));
        expect_wave_event(&read_response(&mut n).expect("answer"), &ev(4), "new connection after event 3");
    });
}

// ================================================================ seed 001: member events

const ORDER: &str = r#"{"event":{"type":"ORDER_SHIPPED","body":{"id":7}}}"#;

/// Opens the member stream `GET path` with `headers` and no `Accept` header.
fn member_stream(s: &Server, path: &str, headers: &[&str]) -> SseClient {
    let c = SseClient::open_raw(s, &raw("GET", path, headers, ""))
        .unwrap_or_else(|r| panic!("GET {path} {headers:?} refused: {} {}", r.status, r.text()));
    let ct = c.header("content-type").unwrap_or("").to_ascii_lowercase();
    assert!(ct.starts_with("text/event-stream"), "GET {path}: Content-Type {ct:?}");
    c
}

fn member_post(s: &Server, path: &str, member: &str, body: &str) -> Response {
    post(s, path, &[&format!("Member-ID: {member}"), "Content-Type: application/json"], body)
}

fn member_post_ok(s: &Server, member: &str, ty: &str, body: Value) {
    let r = member_post(s, "/events", member, &json!({"event": {"type": ty, "body": body}}).to_string());
    assert_eq!(r.status, 200, "POST for {member}: {}", r.text());
}

/// Checks a member event: `event:` the type, an `id:`, `data:` `{"body":…,"timestamp":…}` with
/// a UTC ISO-8601 time within a minute of now.
fn check_member_event(e: &SseEvent, ty: &str, body: &Value) {
    assert_eq!(e.event.as_deref(), Some(ty), "{e:?}");
    assert!(e.id.as_ref().is_some_and(|i| !i.is_empty()), "member events carry an id: {e:?}");
    let v: Value = serde_json::from_str(&e.data).unwrap_or_else(|err| panic!("data is not JSON ({err}): {e:?}"));
    let obj = v.as_object().unwrap_or_else(|| panic!("data is not an object: {v}"));
    let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["body", "timestamp"]), "data keys: {v}");
    assert_eq!(&v["body"], body, "{v}");
    let ts = v["timestamp"].as_str().unwrap_or_else(|| panic!("timestamp is not a string: {v}"));
    let t = parse_rfc3339_utc(ts).unwrap_or_else(|| panic!("timestamp {ts:?} is not an RFC 3339 UTC time"));
    assert!((t - now_secs()).abs() < 60.0, "timestamp {ts} is not now");
}

#[test]
fn member_stream_gets_posted_events_as_typed_sse() {
    each_driver(2, &[], |s| {
        let mut c = member_stream(s, "/events", &["Member-ID: 123"]);
        let r = member_post(s, "/events", "123", ORDER);
        assert_eq!(r.status, 200, "{}", r.text());
        check_member_event(&c.next_event().expect("event"), "ORDER_SHIPPED", &json!({"id": 7}));
        // The seed's example shape, nested.
        let body = json!({"examplePropertyOfEvent": "exampleValueOfProperty", "n": [1, {"x": null}]});
        member_post_ok(s, "123", "EVENT_TYPE_WITH_UPPER_CASE", body.clone());
        member_post_ok(s, "123", "ORDER_2", json!({}));
        check_member_event(&c.next_event().expect("event"), "EVENT_TYPE_WITH_UPPER_CASE", &body);
        check_member_event(&c.next_event().expect("event"), "ORDER_2", &json!({}));
        // A browser's EventSource (with Accept) gets the same stream.
        let mut b = SseClient::open(s, "/events", &["Member-ID: 123"]);
        member_post_ok(s, "123", "ORDER_SHIPPED", json!({"id": 8}));
        check_member_event(&b.next_event().expect("event"), "ORDER_SHIPPED", &json!({"id": 8}));
        check_member_event(&c.next_event().expect("event"), "ORDER_SHIPPED", &json!({"id": 8}));
    });
}

#[test]
fn member_events_reach_every_device_of_that_member_only() {
    each_driver(2, &[], |s| {
        let mut d1 = member_stream(s, "/events", &["Member-ID: 123", "Device-Id: 1"]);
        let mut d2 = member_stream(s, "/events", &["Member-ID: 123", "Device-Id: 2"]);
        let mut other = member_stream(s, "/events", &["MemberId: 456", "Device-Id: 1"]);
        let bodies: Vec<Value> = (0..5).map(|i| json!({"id": i, "note": format!("event {i}")})).collect();
        for b in &bodies {
            member_post_ok(s, "123", "ORDER_SHIPPED", b.clone());
        }
        member_post_ok(s, "456", "ORDER_CANCELLED", json!({"mine": true}));
        for (name, dev) in [("device 1", &mut d1), ("device 2", &mut d2)] {
            for b in &bodies {
                let e = dev.next_event().unwrap_or_else(|| panic!("{name}: stream ended"));
                check_member_event(&e, "ORDER_SHIPPED", b);
            }
        }
        // Member 456 sees its own event first: none of 123's came before it.
        check_member_event(&other.next_event().expect("456's event"), "ORDER_CANCELLED", &json!({"mine": true}));
        member_post_ok(s, "123", "LAST", json!({}));
        member_post_ok(s, "456", "LAST", json!({"for": 456}));
        check_member_event(&other.next_event().expect("456's event"), "LAST", &json!({"for": 456}));
        check_member_event(&d1.next_event().expect("event"), "LAST", &json!({}));
        check_member_event(&d2.next_event().expect("event"), "LAST", &json!({}));
    });
}

#[test]
fn member_resume_with_last_event_id_replays_exactly_the_missed_events() {
    each_driver(2, &[], |s| {
        let mut c = member_stream(s, "/events", &["Member-ID: 123", "Device-Id: 1"]);
        member_post_ok(s, "123", "ORDER_SHIPPED", json!({"n": 1}));
        let first = c.next_event().expect("event 1");
        check_member_event(&first, "ORDER_SHIPPED", &json!({"n": 1}));
        drop(c);
        for n in 2..=4 {
            member_post_ok(s, "123", "ORDER_SHIPPED", json!({"n": n}));
        }
        member_post_ok(s, "456", "ORDER_SHIPPED", json!({"n": "not 123's"}));
        let last = format!("Last-Event-ID: {}", first.id.unwrap());
        let mut r = member_stream(s, "/events", &["Member-ID: 123", "Device-Id: 1", &last]);
        for n in 2..=4 {
            check_member_event(&r.next_event().expect("missed event"), "ORDER_SHIPPED", &json!({"n": n}));
        }
        member_post_ok(s, "123", "ORDER_DELIVERED", json!({"n": 5}));
        check_member_event(&r.next_event().expect("live event"), "ORDER_DELIVERED", &json!({"n": 5}));
        // Resuming from the newest event replays nothing.
        let newest = format!("Last-Event-ID: {}", r.last_event_id.clone().unwrap());
        let mut again = member_stream(s, "/notification/events", &["MemberId: 123", &newest]);
        member_post_ok(s, "123", "ORDER_DELIVERED", json!({"n": 6}));
        check_member_event(&again.next_event().expect("live event"), "ORDER_DELIVERED", &json!({"n": 6}));
    });
}

#[test]
fn member_routes_under_notification_and_a_configured_prefix() {
    each_driver(2, &["--member-events-prefix", "/api"], |s| {
        // The seed's own curl example: `curl -i -H "MemberId: 123" http://localhost:8080/notification/events`.
        let mut curl =
            member_stream(s, "/notification/events", &["User-Agent: curl/8.5.0", "Accept: */*", "MemberId: 123"]);
        let mut api = member_stream(s, "/api/events", &["Member-ID: 123"]);
        let mut plain = member_stream(s, "/events", &["Member-ID: 123"]);
        for (path, n) in [("/notification/events", 1), ("/api/events", 2), ("/events", 3)] {
            let r =
                member_post(s, path, "123", &json!({"event": {"type": "ORDER_SHIPPED", "body": {"n": n}}}).to_string());
            assert_eq!(r.status, 200, "POST {path}: {}", r.text());
        }
        for (name, c) in [("curl", &mut curl), ("api", &mut api), ("plain", &mut plain)] {
            for n in 1..=3 {
                let e = c.next_event().unwrap_or_else(|| panic!("{name}: stream ended"));
                check_member_event(&e, "ORDER_SHIPPED", &json!({"n": n}));
            }
        }
    });
}

#[test]
fn member_bad_requests_are_400_naming_the_part() {
    each_driver(2, &[], |s| {
        let mut c = member_stream(s, "/events", &["Member-ID: 123"]);
        for bad in ["not json", "", "[]", r#""ORDER""#] {
            let r = member_post(s, "/events", "123", bad);
            assert_json_error(&r, 400);
        }
        let cases = [
            (r#"{}"#, "/event"),
            (r#"{"events":{"type":"ORDER_SHIPPED","body":{}}}"#, "/event"),
            (r#"{"event":"ORDER_SHIPPED"}"#, "/event"),
            (r#"{"event":{"type":"shipped","body":{"id":7}}}"#, "/event/type"),
            (r#"{"event":{"type":"Order_Shipped","body":{"id":7}}}"#, "/event/type"),
            (r#"{"event":{"type":"ORDER SHIPPED","body":{"id":7}}}"#, "/event/type"),
            (r#"{"event":{"type":7,"body":{"id":7}}}"#, "/event/type"),
            (r#"{"event":{"body":{"id":7}}}"#, "/event/type"),
            (r#"{"event":{"type":"ORDER_SHIPPED"}}"#, "/event/body"),
            (r#"{"event":{"type":"ORDER_SHIPPED","body":"id 7"}}"#, "/event/body"),
            (r#"{"event":{"type":"ORDER_SHIPPED","body":[7]}}"#, "/event/body"),
        ];
        for (body, path) in cases {
            let r = member_post(s, "/events", "123", body);
            assert_json_error_at(&r, 400, path, body);
        }
        // Without Member-ID.
        let r = post(s, "/events", &["Content-Type: application/json"], ORDER);
        assert_json_error_at(&r, 400, "/headers/member-id", "POST without Member-ID");
        let r = post(s, "/notification/events", &["Member-ID: "], ORDER);
        assert_json_error_at(&r, 400, "/headers/member-id", "POST with an empty Member-ID");
        for path in ["/events", "/notification/events"] {
            for headers in [vec![], vec!["Accept: text/event-stream"], vec!["Device-Id: 1"]] {
                let r = request(s, &raw("GET", path, &headers, ""));
                assert_json_error_at(&r, 400, "/headers/member-id", &format!("GET {path} {headers:?}"));
            }
        }
        // Without the prefix flag, /api/events is not a route.
        let r = request(s, &raw("GET", "/api/events", &["Member-ID: 123"], ""));
        assert_json_error(&r, 404);
        // None of the bad requests published anything.
        member_post_ok(s, "123", "GOOD", json!({"ok": true}));
        check_member_event(&c.next_event().expect("event"), "GOOD", &json!({"ok": true}));
    });
}

// ================================================================ seed 002: chat events WebSocket

/// The document's `send` example.
fn doc_send() -> Value {
    json!({
        "method": "send",
        "connection_id": "irc-whatever",
        "conversation_id": "#conversation_name",
        "id": 42,
        "message": "some message"
    })
}

#[test]
fn chat_without_a_session_sends_an_error_then_closes_1008() {
    each_driver(2, &["--jwt-secret", SECRET], |s| {
        for extra in [vec![], vec!["Cookie: other=1"]] {
            let mut w = ws_with(s, "/events", &extra);
            let v = w.next_json();
            let errors = v["errors"].as_array().unwrap_or_else(|| panic!("no errors array: {v}"));
            assert!(!errors.is_empty(), "{v}");
            assert!(errors[0]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
            assert!(errors[0]["path"].is_string(), "{v}");
            match w.next_msg() {
                Msg::Close(p) => {
                    assert!(p.len() >= 2, "close without a code: {p:?}");
                    assert_eq!(
                        u16::from_be_bytes([p[0], p[1]]),
                        1008,
                        "close code (reason {:?})",
                        String::from_utf8_lossy(&p[2..])
                    );
                }
                other => panic!("expected a close frame after the error, got {other:?}"),
            }
            let _ = w.s.write_all(&cframe(true, OP_CLOSE, &1008u16.to_be_bytes()));
            let rest = wait_closed(&mut w.s, DEADLINE);
            assert!(rest.is_empty(), "bytes after the close frame: {rest:?}");
        }
    });
}

#[test]
fn chat_ping_send_debug_and_errors() {
    each_driver(2, &["--jwt-secret", SECRET], |s| {
        let tok = jwt(json!({"sub": "42"}));
        let header = format!("Authorization: Bearer {tok}");
        let cookie = format!("Cookie: theme=dark; token={tok}");
        let ways: Vec<(String, Vec<&str>)> = vec![
            ("/events".into(), vec![header.as_str()]),
            ("/events".into(), vec![cookie.as_str()]),
            (format!("/events?token={}", pct(&tok)), vec![]),
        ];
        for (path, extra) in &ways {
            let mut w = ws_with(s, path, extra);
            let before = now_secs();
            let v = w.call(json!({"method": "ping", "id": 1}));
            let after = now_secs();
            assert_eq!(v["event"], "pong", "{v}");
            assert_eq!(v["id"], 1, "{v}");
            let ts = v["ts"].as_f64().unwrap_or_else(|| panic!("ts must be a number: {v}"));
            assert!(ts >= before - 5.0 && ts <= after + 5.0, "ts {ts} is not now");
            assert_eq!(v.as_object().unwrap().len(), 3, "pong is event, id, ts: {v}");

            // The document's send example: every input key echoed, plus "event":"sent".
            let req = doc_send();
            let v = w.call(req.clone());
            assert_eq!(v["event"], "sent", "{v}");
            assert!(v.get("errors").is_none(), "{v}");
            for (k, val) in req.as_object().unwrap() {
                assert_eq!(&v[k], val, "input key {k:?} echoed: {v}");
            }

            // send without connection_id.
            let mut req = doc_send();
            req.as_object_mut().unwrap().remove("connection_id");
            req["id"] = json!(43);
            let v = w.call(req.clone());
            assert_eq!(v["event"], "sent", "{v}");
            let errors = v["errors"].as_array().unwrap_or_else(|| panic!("no errors: {v}"));
            assert_eq!(errors[0]["path"], "/connection_id", "{v}");
            assert!(errors[0]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
            for (k, val) in req.as_object().unwrap() {
                assert_eq!(&v[k], val, "input key {k:?} echoed: {v}");
            }

            // An unknown method.
            let req = json!({"method": "fly", "id": 44});
            let v = w.call(req.clone());
            let errors = v["errors"].as_array().unwrap_or_else(|| panic!("no errors: {v}"));
            assert_eq!(errors[0]["path"], "/method", "{v}");
            assert_eq!(v["id"], 44, "{v}");

            // debug gets no reply: the next message is the pong of the following ping.
            w.json(&json!({"method": "debug", "whatEver": 42}));
            w.json(&json!({"method": "debug", "whatEver": 42, "ts": "2020-07-01T23:49:41.729Z"}));
            let v = w.call(json!({"method": "ping", "id": 2}));
            assert_eq!(
                (v["event"].as_str(), v["id"].as_i64()),
                (Some("pong"), Some(2)),
                "debug must not be answered: {v}"
            );
        }
    });
}

#[test]
fn chat_pushes_the_users_events_as_published() {
    each_driver(2, &["--jwt-secret", SECRET], |s| {
        let mut w = ws_with(s, "/events", &[&format!("Authorization: Bearer {}", jwt(json!({"sub": "42"})))]);
        let mut other = ws_with(s, "/events", &[&format!("Cookie: token={}", jwt(json!({"sub": "43"})))]);
        assert_eq!(w.call(json!({"method": "ping", "id": 1}))["event"], "pong");
        assert_eq!(other.call(json!({"method": "ping", "id": 1}))["event"], "pong");
        // The document's message and state-change examples, as a server would publish them.
        let message = "{\"connection_id\":\"irc-whatever\",\"conversation_id\":\"superwoman\",\"from\":\"Superwoman\",\"highlight\":false,\"messsage\":\"Some message\",\"ts\":1593647381.72949,\"type\":\"private\"}";
        let state = "{\n  \"connection_id\": \"irc-whatever\",\n  \"conversation_id\": \"#conversation_name\",\n  \"nick\": \"Superwoman\",\n  \"type\": \"join\"\n}";
        let to_43 = r#"{"connection_id":"irc-x","type":"private","for":43}"#;
        publish_ok(s, "user:43", to_43);
        publish_ok(s, "user:42", message);
        publish_ok(s, "user:42", state);
        assert_eq!(w.next_text(), message, "the frame is the published JSON itself");
        assert_eq!(w.next_text(), state, "the frame is the published JSON itself");
        assert_eq!(other.next_text(), to_43, "user 43 gets only its own event");
        // The socket still answers methods afterwards.
        let v = w.call(json!({"method": "ping", "id": 7}));
        assert_eq!((v["event"].as_str(), v["id"].as_i64()), (Some("pong"), Some(7)), "{v}");
    });
}

// ================================================================ seed 003: EventSource push

/// The token of the document's examples: a user in two groups, with a session.
fn marketing_engineer() -> String {
    jwt(json!({"sub": "42", "session": "s1", "groups": ["Marketing", "Engineering"]}))
}

fn typed_set(events: Vec<SseEvent>) -> BTreeSet<(Option<String>, String)> {
    events.into_iter().map(|e| (e.event, e.data)).collect()
}

#[test]
fn eventsource_without_a_token_carries_broadcast_only() {
    each_driver(2, &["--jwt-secret", SECRET], |s| {
        let mut c = SseClient::open(s, "/eventsource", &[]);
        let mut p = Publisher::new(s);
        for topic in ["user:42", "session:s1", "group:Marketing", "other"] {
            p.publish(topic, &format!("not for anonymous ({topic})"));
        }
        p.publish("broadcast", "a message from the server");
        let e = c.next_event().expect("event");
        assert_eq!((e.event.as_deref(), e.data.as_str()), (None, "a message from the server"));
        assert!(e.id.is_some_and(|i| !i.is_empty()));
        p.publish("user:42", "still not");
        p.publish_typed("broadcast", Some("itempurchased"), "5 \"DVD\" items have been purchased");
        let e = c.next_event().expect("event");
        assert_eq!(
            (e.event.as_deref(), e.data.as_str()),
            (Some("itempurchased"), "5 \"DVD\" items have been purchased")
        );
    });
}

#[test]
fn eventsource_with_a_token_carries_its_session_user_and_groups() {
    each_driver(2, &["--jwt-secret", SECRET], |s| {
        let tok = marketing_engineer();
        let cookie = format!("Cookie: token={tok}");
        let bearer = format!("Authorization: Bearer {tok}");
        for (path, header) in [
            ("/eventsource".to_string(), Some(cookie.as_str())),
            ("/eventsource".to_string(), Some(bearer.as_str())),
            (format!("/eventsource?token={}", pct(&tok)), None),
        ] {
            let headers: Vec<&str> = header.into_iter().collect();
            let mut c = SseClient::open(s, &path, &headers);
            let mut p = Publisher::new(s);
            for topic in ["group:Sales", "user:43", "session:s2"] {
                p.publish_typed(topic, Some("itempurchased"), &format!("not ours ({topic})"));
            }
            let mut want = BTreeSet::new();
            for topic in ["broadcast", "session:s1", "user:42", "group:Marketing", "group:Engineering"] {
                let data = format!("5 \"DVD\" items have been purchased ({topic})");
                p.publish_typed(topic, Some("itempurchased"), &data);
                want.insert((Some("itempurchased".to_string()), data));
            }
            assert_eq!(typed_set(c.take(want.len())), want, "{path} {headers:?}");
            p.publish("group:Sales", "not ours either");
            p.publish("broadcast", "end");
            assert_eq!(c.next_event().expect("end").data, "end", "{path} {headers:?}");
        }
    });
}

#[test]
fn eventsource_type_list_in_the_path_filters_events() {
    each_driver(2, &["--jwt-secret", SECRET], |s| {
        let mut c = SseClient::open(s, "/eventsource/itempurchased,ordercancelled", &[]);
        let tok = marketing_engineer();
        let mut u = SseClient::open(s, "/eventsource/ordercancelled", &[&format!("Cookie: token={tok}")]);
        let mut p = Publisher::new(s);
        p.publish("broadcast", "an untyped message");
        p.publish_typed("broadcast", Some("other"), "other");
        p.publish_typed("broadcast", Some("itempurchased"), "i1");
        p.publish_typed("broadcast", Some("ordercancelled"), "c1");
        p.publish_typed("user:42", Some("itempurchased"), "u-i");
        p.publish_typed("user:42", Some("ordercancelled"), "u-c");
        let got: Vec<(Option<String>, String)> = c.take(2).into_iter().map(|e| (e.event, e.data)).collect();
        assert_eq!(
            got,
            vec![(Some("itempurchased".into()), "i1".into()), (Some("ordercancelled".into()), "c1".into())]
        );
        assert_eq!(
            typed_set(u.take(2)),
            BTreeSet::from([
                (Some("ordercancelled".into()), "c1".into()),
                (Some("ordercancelled".into()), "u-c".into())
            ])
        );
        p.publish("broadcast", "untyped again");
        p.publish_typed("broadcast", Some("itempurchased"), "i2");
        let e = c.next_event().expect("event");
        assert_eq!((e.event.as_deref(), e.data.as_str()), (Some("itempurchased"), "i2"));
    });
}

#[test]
fn eventsource_batch_publish_targets_several_topics_with_json_data() {
    each_driver(2, &["--jwt-secret", SECRET], |s| {
        let tok = marketing_engineer();
        let mut c = SseClient::open(s, "/eventsource", &[&format!("Cookie: token={tok}")]);
        let mut anon = SseClient::open(s, "/eventsource/itempurchased", &[]);
        let lines = [
            json!({"topic": "broadcast", "type": "itempurchased", "data": {"nb": 5, "type": "DVD"}}),
            json!({"topic": "user:42", "type": "itempurchased", "data": "5 \"DVD\" items have been purchased"}),
            json!({"topic": "group:Marketing", "type": "itempurchased", "data": {"nb": 1, "type": "Book"}}),
            json!({"topic": "group:Engineering", "data": [1, "two", null]}),
            json!({"topic": "session:s1", "type": "ordercancelled", "data": 7}),
            json!({"topic": "group:Sales", "type": "itempurchased", "data": "not ours"}),
        ];
        let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let r = post(s, "/pub", &["Content-Type: application/x-ndjson"], &body);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["ids"].as_array().map(Vec::len), Some(lines.len()), "{}", r.text());
        let ip = || Some("itempurchased".to_string());
        let want = BTreeSet::from([
            (ip(), r#"{"nb":5,"type":"DVD"}"#.to_string()),
            (ip(), "5 \"DVD\" items have been purchased".to_string()),
            (ip(), r#"{"nb":1,"type":"Book"}"#.to_string()),
            (None, r#"[1,"two",null]"#.to_string()),
            (Some("ordercancelled".to_string()), "7".to_string()),
        ]);
        assert_eq!(typed_set(c.take(want.len())), want);
        let e = anon.next_event().expect("broadcast");
        assert_eq!((e.event, e.data), (ip(), r#"{"nb":5,"type":"DVD"}"#.to_string()));
        publish_ok(s, "broadcast", "end");
        assert_eq!(c.next_event().expect("end").data, "end");
    });
}

/// Waits for `c` to receive `retry: {ms}` and then end with the terminating chunk.
fn expect_paused(c: &mut SseClient, ms: u64, what: &str) {
    if let Some(e) = c.next_event() {
        panic!("{what}: expected the stream to end after retry: {ms}, got an event {e:?}");
    }
    assert_eq!(c.retry, Some(ms), "{what}: retry before the end");
    assert!(c.ended, "{what}: the stream must end with the terminating chunk");
}

#[test]
fn admin_pause_sends_retry_ends_streams_and_resume_loses_nothing() {
    each_driver(2, &["--jwt-secret", SECRET], |s| {
        let tok = marketing_engineer();
        let cookie = format!("Cookie: token={tok}");
        let mut anon = SseClient::open(s, "/eventsource", &[]);
        let mut user = SseClient::open(s, "/eventsource", &[&cookie]);
        let mut typed = SseClient::open(s, "/eventsource/itempurchased", &[]);
        let mut p = Publisher::new(s);
        p.publish_typed("broadcast", Some("itempurchased"), "before");
        for c in [&mut anon, &mut user, &mut typed] {
            assert_eq!(c.next_event().expect("before").data, "before");
            assert_eq!(c.retry, Some(3000), "the stream starts with the default retry");
        }
        let r = post(s, "/admin/pause?delay_ms=1500", &[], "");
        assert_eq!(r.status, 200, "{}", r.text());
        expect_paused(&mut anon, 1500, "anonymous");
        expect_paused(&mut user, 1500, "with a token");
        expect_paused(&mut typed, 1500, "typed");

        // Published during the pause.
        p.publish_typed("broadcast", Some("itempurchased"), "p1");
        p.publish_typed("user:42", Some("itempurchased"), "p2");
        p.publish("group:Engineering", "p3");
        p.publish_typed("session:s1", Some("itempurchased"), "p4");
        p.publish("broadcast", "p5");

        // Clients come back with the last id they saw.
        let resume = |c: &SseClient| format!("Last-Event-ID: {}", c.last_event_id.clone().expect("an id was seen"));
        let mut anon2 = SseClient::open(s, "/eventsource", &[&resume(&anon)]);
        let mut user2 = SseClient::open(s, "/eventsource", &[&cookie, &resume(&user)]);
        let mut typed2 = SseClient::open(s, "/eventsource/itempurchased", &[&resume(&typed)]);
        let got: Vec<String> = anon2.take(2).into_iter().map(|e| e.data).collect();
        assert_eq!(got, ["p1", "p5"], "anonymous: the broadcast events of the pause");
        let got: Vec<String> = typed2.take(1).into_iter().map(|e| e.data).collect();
        assert_eq!(got, ["p1"], "typed: the itempurchased broadcasts of the pause");
        let mut got: Vec<String> = user2.take(5).into_iter().map(|e| e.data).collect();
        got.sort();
        assert_eq!(got, ["p1", "p2", "p3", "p4", "p5"], "with a token: every event of its topics");
        // No duplicates: the next event is a live one.
        p.publish_typed("broadcast", Some("itempurchased"), "live");
        for (what, c) in [("anonymous", &mut anon2), ("with a token", &mut user2), ("typed", &mut typed2)] {
            assert_eq!(c.next_event().expect("live").data, "live", "{what}");
        }
    });
}

/// An outside attack: a stream paused before it had any event had no id to come back with,
/// so what was published during the pause was lost without a word.
#[test]
fn a_stream_paused_before_its_first_event_resumes_without_loss() {
    each_driver(2, &[], |s| {
        let mut c = SseClient::open(s, "/eventsource", &[]);
        let r = post(s, "/admin/pause?delay_ms=200", &[], "");
        assert_eq!(r.status, 200, "{}", r.text());
        expect_paused(&mut c, 200, "no event yet");
        let id = c.last_event_id.clone().expect("the paused stream says where it stands");
        publish_ok(s, "broadcast", "during the pause");
        let mut back = SseClient::open(s, "/eventsource", &[&format!("Last-Event-ID: {id}")]);
        let e = back.next_event().expect("the event of the pause");
        assert_eq!(e.data, "during the pause");
        assert_ne!(e.event.as_deref(), Some("herald.gap"));
    });
}

#[test]
fn admin_pause_spares_the_excepted_groups() {
    each_driver(2, &["--jwt-secret", SECRET], |s| {
        let marketing = jwt(json!({"sub": "1", "groups": ["Marketing"]}));
        let engineering = jwt(json!({"sub": "2", "groups": ["Engineering"]}));
        let mut anon = SseClient::open(s, "/eventsource", &[]);
        let mut m = SseClient::open(s, "/eventsource", &[&format!("Cookie: token={marketing}")]);
        let mut both =
            SseClient::open(s, "/eventsource", &[&format!("Authorization: Bearer {}", marketing_engineer())]);
        let mut e = SseClient::open(s, "/eventsource", &[&format!("Cookie: token={engineering}")]);
        let r = post(s, "/admin/pause?delay_ms=1500&except_groups=Marketing", &[], "");
        assert_eq!(r.status, 200, "{}", r.text());
        expect_paused(&mut anon, 1500, "anonymous");
        expect_paused(&mut e, 1500, "Engineering");
        publish_ok(s, "broadcast", "after the pause");
        for (what, c) in [("Marketing", &mut m), ("Marketing and Engineering", &mut both)] {
            let ev = c.next_event().unwrap_or_else(|| panic!("{what}: the stream was paused"));
            assert_eq!(ev.data, "after the pause", "{what}");
            assert_ne!(c.retry, Some(1500), "{what}: no retry: 1500 for an excepted group");
            assert!(!c.ended, "{what}");
        }
        // Two groups spared.
        let mut anon = SseClient::open(s, "/eventsource", &[]);
        let r = post(s, "/admin/pause?delay_ms=250&except_groups=Sales,Engineering", &[], "");
        assert_eq!(r.status, 200, "{}", r.text());
        expect_paused(&mut anon, 250, "anonymous, second pause");
        expect_paused(&mut m, 250, "Marketing, second pause");
        publish_ok(s, "broadcast", "after the second pause");
        assert_eq!(both.next_event().expect("event").data, "after the second pause");
    });
}

#[test]
fn admin_pause_needs_publish_rights_and_a_numeric_delay() {
    each_driver(2, &["--publish-key", KEY], |s| {
        let auth = format!("Authorization: Bearer {KEY}");
        let r = post(s, "/admin/pause?delay_ms=1500", &[], "");
        assert_json_error(&r, 401);
        let r = post(s, "/admin/pause?delay_ms=1500", &["Authorization: Bearer wrong"], "");
        assert_json_error(&r, 403);
        for query in
            ["", "?", "?delay_ms=", "?delay_ms=abc", "?delay_ms=15OO", "?except_groups=Marketing", "?delay=1500"]
        {
            let r = post(s, &format!("/admin/pause{query}"), &[&auth], "");
            assert_json_error(&r, 400);
        }
        let mut c = SseClient::open(s, "/eventsource", &[]);
        let r = post(s, "/admin/pause?delay_ms=1500", &[&auth], "");
        assert_eq!(r.status, 200, "{}", r.text());
        expect_paused(&mut c, 1500, "paused with the key");
    });
}

//! Reproducers from an outside review of rights, memory and resumes, each asserting what
//! API.md and the README promise (each failed before its fix): a multi-topic id must not skip
//! a topic's gap notice (SSE and long-poll); a WebSocket from a foreign origin gets no cookie
//! identity; a session poll on a reused connection does not replay another session's history;
//! anonymous subscribers cannot lock publishers out of new topics; a browser token's
//! `publish` claim works on its WebSocket.
mod common;

use common::ws::*;
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::TcpStream;
use std::time::Duration;

/// The `Last-Event-ID` a long-poll with `timeout=0` hands back: where the topics stand now.
fn cursor_now(s: &Server, topics: &str) -> String {
    let r = request(s, &format!("GET /sub/{topics}?timeout=0 HTTP/1.1\r\nHost: t\r\n\r\n"));
    r.header("last-event-id").expect("Last-Event-ID on the 204").to_string()
}

/// Topics a gap notice was received for, and the data of every event received.
fn gaps_and_data(events: &[(Option<String>, String)]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut gaps = BTreeSet::new();
    let mut data = BTreeSet::new();
    for (kind, d) in events {
        if kind.as_deref() == Some("herald.gap") {
            let v: Value = serde_json::from_str(d).expect("gap data is JSON");
            gaps.insert(v["topic"].as_str().unwrap().to_string());
        } else {
            data.insert(d.clone());
        }
    }
    (gaps, data)
}

/// Every event published (`A1..A3` to `a`, `B1..B5` to `b`) was received, or its topic was
/// told of a gap: loss is never silent (API.md §1, §7).
fn assert_no_silent_loss(a: &str, b: &str, events: &[(Option<String>, String)]) {
    let (gaps, data) = gaps_and_data(events);
    let published = (1..=3).map(|i| (a, format!("A{i}"))).chain((1..=5).map(|i| (b, format!("B{i}"))));
    let silent: Vec<String> =
        published.filter(|(t, d)| !data.contains(d) && !gaps.contains(*t)).map(|(_, d)| d).collect();
    assert!(silent.is_empty(), "lost without a gap notice: {silent:?}; received {events:?}");
}

/// API.md §7: "One SSE `id:` resumes a multi-topic stream exactly, for every topic in it", and
/// §1: "Loss is never silent". When a multi-topic resume needs a gap on both topics, the first
/// event of the stream (one topic's gap notice) already carries the *other* topic's post-gap
/// position in its `id:`. A client cut right after it resumes from there, and the other
/// topic's gap notice never comes: its lost events are lost silently.
#[test]
fn a_multi_topic_sse_stream_cut_after_its_first_event_loses_nothing_silently() {
    each_driver(2, &["--history", "2"], |s| {
        let (a, b) = ("fa", "fb");
        let start = cursor_now(s, &format!("{a},{b}"));
        for i in 1..=3 {
            publish_ok(s, a, &format!("A{i}"));
        }
        for i in 1..=5 {
            publish_ok(s, b, &format!("B{i}"));
        }
        // History keeps A2, A3 and B4, B5: the resume needs a gap on both topics.
        let mut first_conn = SseClient::open(s, &format!("/sub/{a},{b}"), &[&format!("Last-Event-ID: {start}")]);
        let first = first_conn.next_event().expect("first event");
        drop(first_conn); // cut right after the first event, like a dropped mobile connection
        let id = first.id.clone().expect("the first event has an id");
        let mut events = vec![(first.event.clone(), first.data.clone())];
        let mut again = SseClient::open(s, &format!("/sub/{a},{b}"), &[&format!("Last-Event-ID: {id}")]);
        publish_ok(s, a, "endA");
        publish_ok(s, b, "endB");
        let mut ends = 0;
        while ends < 2 {
            let e = again.next_event().expect("stream ended");
            if e.data.starts_with("end") {
                ends += 1;
            }
            events.push((e.event, e.data));
        }
        assert_no_silent_loss(a, b, &events);
    });
}

/// The same on long-poll: a poller that follows `last_event_id` with `max=1` (README: "a
/// `last_event_id` … that resumes every polled topic") is told of one topic's gap, while the
/// answer's `last_event_id` already moves the other topic past its own, untold, gap.
#[test]
fn a_long_poll_cut_short_by_max_loses_nothing_silently() {
    each_driver(2, &["--history", "2"], |s| {
        let (a, b) = ("pa", "pb");
        let mut cursor = cursor_now(s, &format!("{a},{b}"));
        for i in 1..=3 {
            publish_ok(s, a, &format!("A{i}"));
        }
        for i in 1..=5 {
            publish_ok(s, b, &format!("B{i}"));
        }
        let mut events = Vec::new();
        for _ in 0..20 {
            let r = request(
                s,
                &format!("GET /sub/{a},{b}?last_event_id={cursor}&max=1&timeout=0 HTTP/1.1\r\nHost: t\r\n\r\n"),
            );
            if r.status == 204 {
                break;
            }
            assert_eq!(r.status, 200, "{}", r.text());
            let v = r.json();
            for e in v["events"].as_array().unwrap() {
                events.push((e["type"].as_str().map(str::to_string), e["data"].as_str().unwrap().to_string()));
            }
            cursor = v["last_event_id"].as_str().unwrap().to_string();
        }
        assert_no_silent_loss(a, b, &events);
    });
}

/// docs/seeds.md (000): "a kept-alive connection remembers where its last answer stopped, so
/// the next GET on it continues from there". It remembers a cursor of *another session*: a GET
/// for session B on a connection that last polled session A starts B from B's oldest history
/// (a foreign cursor is a gap, and this route answers a gap with the oldest event), so a
/// listener that just arrived is handed B's old events, one per GET.
#[test]
fn a_session_poll_on_a_reused_connection_does_not_replay_another_sessions_history() {
    each_driver(1, &[], |s| {
        for i in 0..3 {
            let body = format!("{{\"old\":{i}}}");
            let r = request(
                s,
                &format!(
                    "POST /_wave/api/sessions/B/events HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ),
            );
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let mut c = s.connect();
        let poll = |c: &mut TcpStream, session: &str| {
            roundtrip(
                c,
                format!("GET /_wave/api/sessions/{session}/events?timeout=0 HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
            )
        };
        let r = poll(&mut c, "A");
        assert_eq!((r.status, r.text()), (200, String::new()));
        // The same browser (one pooled connection) now starts listening to session B.
        let r = poll(&mut c, "B");
        assert_eq!((r.status, r.text()), (200, String::new()), "a new listener of B got B's old events");
        // A fresh connection does it right.
        let r = poll(&mut s.connect(), "B");
        assert_eq!((r.status, r.text()), (200, String::new()));
    });
}

/// README "CORS": "`cors_origins` lists allowed origins … Listed origins get credentials;
/// … others get no CORS headers", and the JWT may come in the `token` cookie (what a
/// browser's EventSource and WebSocket send). CORS does not cover WebSockets, and herald does
/// not check `Origin` on an upgrade: a page on any origin opens a WebSocket that the browser
/// sends the victim's `token` cookie with, and reads the victim's private topics
/// (cross-site WebSocket hijacking). Expected: an upgrade from an origin not in
/// `cors_origins` is refused (403), as a cross-origin EventSource gets no readable answer.
#[test]
fn a_websocket_from_a_foreign_origin_does_not_get_the_cookie_identity() {
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    each_driver(2, &["--jwt-secret", SECRET, "--cors-origins", "https://a.example"], |s| {
        let t = herald::auth::jwt::sign(&json!({"sub": "42"}), SECRET.as_bytes());
        let cookie = format!("Cookie: token={t}");
        // The allowed origin may, of course.
        drop(ws_with(s, "/sub/user:42", &[&cookie, "Origin: https://a.example"]));
        match try_ws(s, "/sub/user:42", &[&cookie, "Origin: https://evil.example"]) {
            Err(r) => assert_eq!(r.status, 403, "{}", r.text()),
            Ok(mut ws) => {
                publish_ok(s, "user:42", "private to 42");
                let got = ws.next_text();
                panic!("a page on https://evil.example reads user:42 with the victim's cookie: {got}");
            }
        }
    });
}

/// README "Topics": `max_topics` caps the topics kept; "a publish … that would make a new topic
/// past it is refused with 503". Topics named only by anonymous subscribers count against the
/// same cap, with no share kept for publishers: a handful of anonymous SSE connections (64
/// topics each; the per-connection naming limit is per connection) fill it, and every publish
/// to a new topic — the application's `user:…` notifications with the publish key — gets 503
/// for as long as they stay connected.
#[test]
fn anonymous_subscribers_cannot_lock_publishers_out_of_new_topics() {
    each_driver(2, &["--max-topics", "1000"], |s| {
        let mut held = Vec::new();
        for i in 0..16 {
            // 15 × 64 + 40 = 1000 names, exactly the cap: those past the share of topics only
            // named (half the cap) are refused with 503.
            let n = if i < 15 { 64 } else { 40 };
            let topics: Vec<String> = (0..n).map(|j| format!("junk{i}-{j}")).collect();
            match SseClient::try_open(s, &format!("/sub/{}", topics.join(",")), &[]) {
                Ok(sse) => held.push(sse),
                Err(r) => assert_json_error(&r, 503),
            }
        }
        assert!(metric(s, "herald_topics") <= 501.0, "subscribers named more than half the cap");
        let r = publish(s, "user:42", "you have mail");
        assert_eq!(r.status, 200, "a publisher is locked out by anonymous subscribers: {}", r.text());
    });
}

/// README "Identity and rights": "A subscriber token whose `publish` claim covers a topic may
/// publish to that topic", and tokens come from `Authorization`, the `token` cookie or
/// `?token=`. On a WebSocket only `Authorization` is read for publishing, which a browser
/// cannot set on a WebSocket: a browser's token (cookie or query) subscribes with its claims
/// but its `publish` claim is ignored.
#[test]
fn a_browser_token_with_a_publish_claim_may_publish_on_its_websocket() {
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    each_driver(1, &["--jwt-secret", SECRET, "--publish-key", "K3y-long-enough-key"], |s| {
        let t = herald::auth::jwt::sign(&json!({"sub": "42", "publish": ["chat"]}), SECRET.as_bytes());
        for (path, extra) in [
            ("/sub/chat".to_string(), format!("Cookie: token={t}")),
            (format!("/sub/chat?token={t}"), "X-Nothing: 1".to_string()),
        ] {
            let mut ws = ws_with(s, &path, &[&extra]);
            ws.json(&json!({"method": "publish", "id": 1, "topic": "chat", "data": "hi"}));
            let mut reply: Value;
            loop {
                reply = serde_json::from_str(&ws.next_text()).unwrap();
                if reply["event"] != "message" {
                    break;
                }
            }
            assert!(reply.get("errors").is_none(), "{path} {extra}: {reply}");
        }
    });
}

/// A review of the connection phases: a live WebSocket whose added topic an owner refused was
/// closed (1013), but the replay of the other topics of the same `subscribe` went out after
/// the close frame. Nothing may follow a close frame.
#[test]
fn nothing_follows_the_close_of_a_websocket_whose_added_topic_was_refused() {
    // One worker: the refused topic's owner answers before the other's replay is rendered.
    each_driver(1, &["--max-topics", "2"], |s| {
        publish_ok(s, "a", "a0");
        let first_b = publish_ok(s, "b", "b0");
        for i in 1..4 {
            publish_ok(s, "b", &format!("b{i}"));
        }
        let mut w = ws_with(s, "/sub/a", &[]);
        w.json(
            &json!({"method": "subscribe", "id": 1, "topics": ["zzz", "b"], "last_event_id": format!("0-0,{first_b}")}),
        );
        loop {
            match w.next_msg() {
                Msg::Close(payload) => {
                    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1013, "{payload:?}");
                    break;
                }
                Msg::Text(t) => assert!(!t.contains("\"topic\":\"b\""), "an event of the refused subscribe: {t}"),
                Msg::Binary(_) => panic!("binary"),
            }
        }
        let rest = wait_closed(&mut w.s, Duration::from_secs(10));
        assert!(rest.is_empty(), "{} bytes after the close frame: {:?}", rest.len(), String::from_utf8_lossy(&rest));
    });
}

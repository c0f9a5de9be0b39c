//! Topic information (API.md §9): `GET /topics/{topic}` counts a topic's subscribers by
//! transport across workers, gives its newest cursor and what its history holds, and never
//! makes the topic. Its rights are checked in tests/auth.rs.
mod common;

use common::ws::ws_with;
use common::*;
use serde_json::{Value, json};
use std::io::Write;

fn info(s: &Server, topic: &str, extra: &[&str]) -> Response {
    let mut raw = format!("GET /topics/{topic} HTTP/1.1\r\nHost: t\r\n");
    for h in extra {
        raw.push_str(h);
        raw.push_str("\r\n");
    }
    raw.push_str("\r\n");
    request(s, &raw)
}

fn info_ok(s: &Server, topic: &str) -> Value {
    let r = info(s, topic, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// (sse, ws, poll) and their sum, as the answer gives them.
fn counts(v: &Value) -> (u64, u64, u64) {
    let by = &v["by_transport"];
    let n = |k: &str| by[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    let c = (n("sse"), n("ws"), n("poll"));
    assert_eq!(v["subscribers"].as_u64(), Some(c.0 + c.1 + c.2), "{v}");
    c
}

#[test]
fn an_unknown_topic_is_zeros_and_asking_does_not_make_it() {
    each_driver(2, &[], |s| {
        let v = info_ok(s, "nobody");
        assert_eq!(
            v,
            json!({"topic": "nobody", "subscribers": 0, "by_transport": {"sse": 0, "ws": 0, "poll": 0},
                   "last_event_id": null, "history": {"events": 0, "bytes": 0}})
        );
        assert_eq!(metric(s, "herald_topics"), 0.0, "asking made no topic");
        let decoded = info_ok(s, "a%3Ab");
        assert_eq!(decoded["topic"], "a:b", "the path is percent-decoded");
    });
}

#[test]
fn history_and_the_newest_cursor() {
    each_driver(2, &["--history", "2"], |s| {
        publish_ok(s, "kept", "one");
        publish_ok(s, "kept", "two");
        let last = publish_ok(s, "kept", "three!");
        let v = info_ok(s, "kept");
        assert_eq!(v["last_event_id"], last.as_str());
        assert_eq!(v["history"], json!({"events": 2, "bytes": 9}), "the two newest: data bytes");
        assert_eq!(counts(&v), (0, 0, 0));
    });
}

#[test]
fn a_forgotten_topic_has_no_newest_cursor() {
    each_driver(2, &["--history-ttl", "0.5"], |s| {
        let last = publish_ok(s, "brief", "x");
        assert_eq!(info_ok(s, "brief")["last_event_id"], last.as_str());
        wait_until("the topic to be forgotten", || metric(s, "herald_topics") == 0.0);
        let v = info_ok(s, "brief");
        assert_eq!((&v["last_event_id"], &v["history"]["events"]), (&Value::Null, &json!(0)), "{v}");
    });
}

#[test]
fn subscribers_are_counted_by_transport_across_workers_and_leave() {
    each_driver(2, &[], |s| {
        // Enough connections that both workers host some.
        let sse: Vec<SseClient> = (0..6).map(|_| SseClient::open(s, "/sub/watched", &[])).collect();
        let workers: std::collections::HashSet<String> =
            sse.iter().filter_map(|c| c.header("herald-worker").map(str::to_string)).collect();
        let ws: Vec<_> = (0..4).map(|_| ws_with(s, "/sub/watched", &[])).collect();
        let mut polls: Vec<_> = (0..3)
            .map(|_| {
                let mut c = s.connect();
                c.write_all(b"GET /sub/watched?timeout=60 HTTP/1.1\r\nHost: t\r\n\r\n").expect("poll");
                c
            })
            .collect();
        // An SSE stream's head comes after it is registered: those are counted at once.
        assert_eq!(counts(&info_ok(s, "watched")).0, 6, "workers hosting streams: {workers:?}");
        wait_until("every subscriber counted", || counts(&info_ok(s, "watched")) == (6, 4, 3));
        // A held poll is answered by an event and counts no more; the streams stay.
        publish_ok(s, "watched", "x");
        for c in polls.iter_mut() {
            let r = read_response(c).expect("poll answer");
            assert_eq!(r.status, 200, "{}", r.text());
        }
        wait_until("the answered polls to leave", || counts(&info_ok(s, "watched")) == (6, 4, 0));
        drop(sse);
        wait_until("the streams to leave", || counts(&info_ok(s, "watched")) == (0, 4, 0));
        drop(ws);
        wait_until("the WebSockets to leave", || counts(&info_ok(s, "watched")) == (0, 0, 0));
    });
}

#[test]
fn counts_are_exact_after_a_thousand_connects_and_disconnects_across_transports() {
    each_driver(2, &[], |s| {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize
        };
        let (mut sse, mut ws, mut polls) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..1000 {
            match i % 3 {
                0 => sse.push(SseClient::open(s, "/sub/churn", &[])),
                1 => ws.push(ws_with(s, "/sub/churn", &[])),
                _ => {
                    let mut c = s.connect();
                    c.write_all(b"GET /sub/churn?timeout=120 HTTP/1.1\r\nHost: t\r\n\r\n").expect("poll");
                    polls.push(c);
                }
            }
            // About one in three leaves again, of any transport, in any order.
            if next() % 3 == 0 {
                match next() % 3 {
                    0 if !sse.is_empty() => drop(sse.swap_remove(next() % sse.len())),
                    1 if !ws.is_empty() => drop(ws.swap_remove(next() % ws.len())),
                    _ if !polls.is_empty() => drop(polls.swap_remove(next() % polls.len())),
                    _ => {}
                }
            }
        }
        let held = (sse.len() as u64, ws.len() as u64, polls.len() as u64);
        wait_until("the counts to equal what is held open", || counts(&info_ok(s, "churn")) == held);
        drop((sse, ws, polls));
        wait_until("every subscriber to be gone", || counts(&info_ok(s, "churn")) == (0, 0, 0));
    });
}

/// Every page of `GET /topics?{query}` followed to the end: (topic, subscribers) in order.
fn list_all(s: &Server, query: &str, limit: usize) -> Vec<(String, u64)> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..1000 {
        let from = after.as_ref().map(|a| format!("&after={}", pct(a))).unwrap_or_default();
        let r = request(s, &format!("GET /topics?{query}&limit={limit}{from} HTTP/1.1\r\nHost: t\r\n\r\n"));
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let page = v["topics"].as_array().unwrap_or_else(|| panic!("{v}"));
        assert!(page.len() <= limit, "{v}");
        all.extend(
            page.iter()
                .map(|t| (t["topic"].as_str().unwrap_or("").to_string(), t["subscribers"].as_u64().unwrap_or(0))),
        );
        match v["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return all,
        }
    }
    panic!("no last page after 1000 pages");
}

#[test]
fn topics_are_listed_by_name_a_page_at_a_time_with_their_subscribers() {
    each_driver(2, &[], |s| {
        for t in ["news:3", "news:1", "sport:1", "news:5", "news:2", "news:4"] {
            publish_ok(s, t, "x");
        }
        let _watching = [SseClient::open(s, "/sub/news:2,quiet", &[]), SseClient::open(s, "/sub/quiet", &[])];
        // A topic named only by a subscriber who left is not kept, so not listed.
        drop(SseClient::open(s, "/sub/gone", &[]));
        let news: Vec<(String, u64)> = (1..=5).map(|i| (format!("news:{i}"), u64::from(i == 2))).collect();
        wait_until("the lists to settle", || list_all(s, "prefix=news:", 2) == news);
        assert_eq!(list_all(s, "prefix=news:", 1000), news, "one page");
        let everything = list_all(s, "prefix=", 3);
        let names: Vec<&str> = everything.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(names, ["news:1", "news:2", "news:3", "news:4", "news:5", "quiet", "sport:1"]);
        assert_eq!(everything[5], ("quiet".to_string(), 2), "topics with subscribers and no history are listed");
        let v = request(s, "GET /topics?prefix=zzz HTTP/1.1\r\nHost: t\r\n\r\n").json();
        assert_eq!(v, json!({"topics": [], "next": null}));
        for (query, path) in [
            ("limit=0", "/query/limit"),
            ("limit=1001", "/query/limit"),
            ("limit=x", "/query/limit"),
            ("after=bad%20name", "/query/after"),
            ("prefix=%zz", "/query/prefix"),
            ("prefix=a%2Fb", "/query/prefix"),
            ("prefix=a%20b", "/query/prefix"),
        ] {
            let r = request(s, &format!("GET /topics?{query} HTTP/1.1\r\nHost: t\r\n\r\n"));
            assert_json_error_at(&r, 400, path, query);
        }
        let long = "p".repeat(129);
        let r = request(s, &format!("GET /topics?prefix={long} HTTP/1.1\r\nHost: t\r\n\r\n"));
        assert_json_error_at(&r, 400, "/query/prefix", "a prefix longer than a topic");
    });
}

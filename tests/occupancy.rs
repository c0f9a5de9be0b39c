//! `$occupancy:{topic}` (API.md §9): a topic's subscriber count as an ordinary stream, over
//! SSE, WebSocket and long-poll, two workers, both drivers — the value at once, then each
//! change at most once per `occupancy_interval`, the latest value on resume (never a gap),
//! and the seed routes' topics counted like any other. Rights are in tests/auth.rs.
mod common;

use common::ws::{Ws, ws_with};
use common::*;
use serde_json::{Value, json};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The `subscribers` of an occupancy event's data, checking it names `topic`.
fn subscribers(data: &str, topic: &str) -> u64 {
    let v: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"));
    assert_eq!(v["topic"], topic, "{data}");
    v["subscribers"].as_u64().unwrap_or_else(|| panic!("{data}"))
}

/// Reads occupancy events from `c` until one says `n`; panics on another event type.
fn sse_until(c: &mut SseClient, topic: &str, n: u64) -> SseEvent {
    loop {
        let e = c.next_event().unwrap_or_else(|| panic!("the occupancy stream ended before {n}"));
        assert_eq!(e.event.as_deref(), Some("occupancy"), "{e:?}");
        if subscribers(&e.data, topic) == n {
            return e;
        }
    }
}

/// Reads WebSocket messages until an occupancy event of `topic` says `n`: the event.
fn ws_until(w: &mut Ws, topic: &str, n: u64) -> Value {
    loop {
        let m = w.next_json();
        assert_eq!((&m["event"], &m["type"]), (&json!("message"), &json!("occupancy")), "{m}");
        assert_eq!(m["topic"], format!("$occupancy:{topic}"), "{m}");
        if subscribers(m["data"].as_str().unwrap_or(""), topic) == n {
            return m;
        }
    }
}

/// A long-poll of `/sub/$occupancy:{topic}` from `cursor`: the answer.
fn poll(s: &Server, topic: &str, cursor: Option<&str>) -> Response {
    let path = sub_path(&format!("$occupancy:{topic}"), cursor, "timeout=30");
    request(s, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"))
}

/// A held long-poll of `topic` (a subscriber while it is held).
fn held_poll(s: &Server, topic: &str) -> TcpStream {
    let mut c = s.connect();
    c.write_all(format!("GET /sub/{topic}?timeout=120 HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).expect("poll");
    c
}

#[test]
fn the_count_comes_at_once_then_every_change_over_every_transport() {
    each_driver(2, &["--occupancy-interval", "0.2"], |s| {
        let mut sse = SseClient::open(s, "/sub/$occupancy:room", &[]);
        let first = sse.next_event().expect("the count at once");
        assert_eq!((first.event.as_deref(), subscribers(&first.data, "room")), (Some("occupancy"), 0));

        // Subscribers on both workers and every transport are counted.
        let streams: Vec<SseClient> = (0..5).map(|_| SseClient::open(s, "/sub/room", &[])).collect();
        let sockets: Vec<Ws> = (0..2).map(|_| ws_with(s, "/sub/room", &[])).collect();
        let polls = [held_poll(s, "room")];
        sse_until(&mut sse, "room", 8);

        // A WebSocket watcher gets the newest value when it subscribes.
        let mut w = ws_with(s, "/sub/other", &[]);
        let reply = w.call(json!({"method": "subscribe", "id": 1, "topics": ["$occupancy:room"]}));
        assert_eq!(reply["event"], "subscribed", "{reply}");
        let given = ws_until(&mut w, "room", 8);
        assert!(given["ts"].as_f64().is_some(), "{given}");

        // A long-poll without a cursor is answered at once with it; from it, held until a change.
        let r = poll(s, "room", None);
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let events = v["events"].as_array().expect("events");
        assert_eq!(events.len(), 1, "{v}");
        assert_eq!(
            (&events[0]["type"], subscribers(events[0]["data"].as_str().unwrap_or(""), "room")),
            (&json!("occupancy"), 8)
        );
        let cursor = v["last_event_id"].as_str().expect("a cursor").to_string();
        let mut waiting = s.connect();
        let path = sub_path("$occupancy:room", Some(&cursor), "timeout=60");
        waiting.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).expect("poll");
        drop(polls);
        drop(sockets);
        let waiting = read_response(&mut waiting).expect("an answer");
        assert_eq!(waiting.status, 200, "{}", waiting.text());
        let changed = waiting.json()["events"][0]["data"].as_str().map(|d| subscribers(d, "room"));
        assert!(changed.is_some_and(|n| n < 8), "{}", waiting.text());

        drop(streams);
        sse_until(&mut sse, "room", 0);
        ws_until(&mut w, "room", 0);
    });
}

#[test]
fn changes_are_coalesced_to_one_an_interval_whatever_the_churn() {
    let interval = 0.5;
    each_driver(2, &["--occupancy-interval", "0.5"], |s| {
        let mut w = ws_with(s, "/sub/x", &[]);
        w.call(json!({"method": "subscribe", "id": 1, "topics": ["$occupancy:busy"]}));
        let mut times = vec![ws_until(&mut w, "busy", 0)["ts"].as_f64().expect("ts")];
        // Churn for about two seconds: every open and close is a change.
        let start = Instant::now();
        let mut open = Vec::new();
        let mut i = 0;
        while start.elapsed() < Duration::from_secs(2) {
            open.push(SseClient::open(s, "/sub/busy", &[]));
            if i % 3 == 2 {
                open.remove(0);
            }
            i += 1;
        }
        let held = open.len() as u64;
        // The last value is the count held open; every value came at least an interval apart.
        loop {
            let m = w.next_json();
            times.push(m["ts"].as_f64().expect("ts"));
            if subscribers(m["data"].as_str().unwrap_or(""), "busy") == held {
                break;
            }
        }
        for pair in times.windows(2) {
            // Counted at least an interval apart (the server's clock; a millisecond for rounding).
            assert!(pair[1] - pair[0] >= interval - 0.001, "{times:?}");
        }
        assert!(i > times.len() * 4, "{i} opens and closes gave {} events", times.len());
    });
}

#[test]
fn a_resume_gets_the_latest_value_and_never_a_gap() {
    each_driver(2, &["--occupancy-interval", "0.1", "--history", "5"], |s| {
        let mut c = SseClient::open(s, "/sub/$occupancy:r", &[]);
        let zero = c.next_event().expect("0");
        let one = SseClient::open(s, "/sub/r", &[]);
        sse_until(&mut c, "r", 1);
        let two = SseClient::open(s, "/sub/r", &[]);
        let newest = sse_until(&mut c, "r", 2);
        // `c` stays: a watched count is kept current, and given as it is.
        let stale = zero.id.clone().expect("an id");
        let foreign = publish_ok(s, "elsewhere", "x");
        for from in [stale.as_str(), foreign.as_str(), "garbage", "0-0"] {
            let mut again = SseClient::open(s, "/sub/$occupancy:r", &[&format!("Last-Event-ID: {from}")]);
            let e = again.next_event().expect("the latest value");
            assert_eq!(
                (e.event.as_deref(), e.id.as_ref()),
                (Some("occupancy"), newest.id.as_ref()),
                "from {from}: {e:?}"
            );
        }
        // From the newest: nothing until the count changes.
        let newest_id = newest.id.clone().expect("an id");
        let mut at = SseClient::open(s, "/sub/$occupancy:r", &[&format!("Last-Event-ID: {newest_id}")]);
        drop((one, two));
        let next = at.next_event().expect("a change");
        assert_ne!(next.id, newest.id);
        assert!(subscribers(&next.data, "r") < 2, "{next:?}");
    });
}

#[test]
fn an_occupancy_stream_is_part_of_a_multi_topic_stream_and_filters_by_type() {
    each_driver(2, &["--occupancy-interval", "0.1"], |s| {
        let mut c = SseClient::open(s, "/sub/feed,$occupancy:feed", &[]);
        // The count at once is taken when the `$occupancy:` part goes live, which may be just
        // before the stream's own `feed` part has joined on its worker (they are joined
        // through two owners): 0, then 1 an interval later, or 1 at once.
        let mut count = subscribers(&c.next_event().expect("the count").data, "feed");
        assert!(count <= 1, "{count}");
        while count == 0 {
            let e = c.next_event().expect("the count with the stream itself");
            assert_eq!(e.event.as_deref(), Some("occupancy"), "{e:?}");
            count = subscribers(&e.data, "feed");
        }
        assert_eq!(count, 1, "the stream itself subscribes to feed");
        publish_ok(s, "feed", "hello");
        let e = c.next_event().expect("the event");
        assert_eq!((e.event, e.data.as_str()), (None, "hello"));
        // Only occupancy events, by type.
        let mut only = SseClient::open(s, "/sub/feed,$occupancy:feed?types=occupancy", &[]);
        publish_ok(s, "feed", "not this");
        let e = only.next_event().expect("an occupancy event");
        assert_eq!(e.event.as_deref(), Some("occupancy"), "{e:?}");
    });
}

/// An HS256 token for `claims` under `SECRET`, valid for an hour.
fn jwt(claims: Value) -> String {
    use base64::Engine;
    use hmac::{Hmac, KeyInit, Mac};
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let mut claims = claims;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    claims["exp"] = json!(now + 3600);
    let input = format!("{}.{}", b64(br#"{"alg":"HS256","typ":"JWT"}"#), b64(claims.to_string().as_bytes()));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("hmac key");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

const SECRET: &str = "occupancy-suite-secret";

#[test]
fn the_seed_routes_topics_are_counted() {
    let flags = ["--occupancy-interval", "0.1", "--jwt-secret", SECRET, "--member-events-trust-header"];
    each_driver(2, &flags, |s| {
        // Member 7's own token reads the count of its topic (member events, seed 001).
        let token = jwt(json!({"sub": "7"}));
        let mut member = SseClient::open(s, &format!("/sub/$occupancy:member:7?token={token}"), &[]);
        sse_until(&mut member, "member:7", 0);
        let mut wave = SseClient::open(s, "/sub/$occupancy:wave:abc", &[]);
        sse_until(&mut wave, "wave:abc", 0);
        let mut broadcast = SseClient::open(s, "/sub/$occupancy:broadcast", &[]);
        sse_until(&mut broadcast, "broadcast", 0);
        let streams: Vec<SseClient> = (0..2)
            .map(|d| {
                let req = format!("GET /events HTTP/1.1\r\nHost: t\r\nMember-ID: 7\r\nDevice-Id: d{d}\r\n\r\n");
                SseClient::open_raw(s, &req).unwrap_or_else(|r| panic!("member stream: {}", r.text()))
            })
            .collect();
        sse_until(&mut member, "member:7", 2);
        // Session events (seed 000): a listener counts while its long-poll is held.
        let mut listener = s.connect();
        listener
            .write_all(b"GET /_wave/api/sessions/abc/events?timeout=60 HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("wave listener");
        sse_until(&mut wave, "wave:abc", 1);
        // EventSource push (seed 003): an anonymous stream carries `broadcast`.
        let push = SseClient::open(s, "/eventsource", &[]);
        sse_until(&mut broadcast, "broadcast", 1);
        drop(streams);
        sse_until(&mut member, "member:7", 0);
        drop(listener);
        sse_until(&mut wave, "wave:abc", 0);
        drop(push);
        sse_until(&mut broadcast, "broadcast", 0);
    });
}

#[test]
fn occupancy_names_are_checked_and_nobody_publishes_to_them() {
    each_driver(1, &[], |s| {
        for bad in ["$occupancy:", "$occupancy:a%20b", "$presence:a", "$occupancy:$occupancy:a", "%24x"] {
            let r = request(s, &format!("GET /sub/{bad} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n"));
            assert_json_error_at(&r, 400, "/topics/0", bad);
        }
        let long = format!("$occupancy:{}", "t".repeat(129));
        let r = request(s, &format!("GET /sub/{long} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n"));
        assert_json_error_at(&r, 400, "/topics/0", "a watched name longer than a topic");
        let r = publish(s, "$occupancy:a", "{\"topic\":\"a\",\"subscribers\":1000}");
        assert_json_error(&r, 400);
        let mut w = ws_with(s, "/sub/x", &[]);
        let req = json!({"method": "publish", "id": 1, "topic": "$occupancy:a", "data": "forged"});
        common::ws::assert_errors(&w.call(req.clone()), &req, "published", &["/topic"]);
        let req = json!({"method": "subscribe", "id": 2, "topics": ["$occupancy:"]});
        common::ws::assert_errors(&w.call(req.clone()), &req, "subscribed", &["/topics/0"]);
        let r = request(s, "GET /topics/$occupancy:a HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_json_error(&r, 400);
        // Without presence_prefixes no presence is kept.
        let r = request(s, "GET /topics/a/presence HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_json_error(&r, 404);
        // A watched count is not a topic of its own in the listing.
        let _c = SseClient::open(s, "/sub/$occupancy:listed", &[]);
        let v = request(s, "GET /topics HTTP/1.1\r\nHost: t\r\n\r\n").json();
        assert_eq!(v, json!({"topics": [{"topic": "x", "subscribers": 1}], "next": null}));
    });
}

/// Reads `c` up to the event published to `marker` with data `end`: the occupancy events
/// before it.
fn occupancy_before_marker(c: &mut SseClient, end: &str) -> Vec<SseEvent> {
    let mut seen = Vec::new();
    loop {
        let e = c.next_event().expect("the stream ended before the marker");
        if e.data == end {
            return seen;
        }
        assert_eq!(e.event.as_deref(), Some("occupancy"), "{e:?}");
        seen.push(e);
    }
}

#[test]
fn an_unchanged_count_is_not_sent_again_whatever_watchers_come_and_go() {
    // Outside attack: with the history TTL shorter than the interval, and with watchers coming
    // and going, the same count went out again and again under new ids.
    each_driver(2, &["--occupancy-interval", "1", "--history-ttl", "0.3"], |s| {
        let mut w = SseClient::open(s, "/sub/$occupancy:quiet,marker", &[]);
        assert_eq!(subscribers(&w.next_event().expect("the count").data, "quiet"), 0);
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            drop(SseClient::open(s, "/sub/$occupancy:quiet", &[]).next_event());
        }
        publish_ok(s, "marker", "end");
        assert!(occupancy_before_marker(&mut w, "end").is_empty(), "the count never changed");
        // A long-poller or a stream sending back the newest cursor is held until a change.
        drop(w);
        let r = poll(s, "quiet", None);
        let newest = r.json()["last_event_id"].as_str().expect("a cursor").to_string();
        for _ in 0..3 {
            let path = sub_path("$occupancy:quiet", Some(&newest), "timeout=0.5");
            let r = request(s, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
            assert_eq!(r.status, 204, "held, nothing new: {}", r.text());
        }
        let mut again = SseClient::open(s, "/sub/$occupancy:quiet,marker", &[&format!("Last-Event-ID: {newest},")]);
        publish_ok(s, "marker", "again");
        // (Its id for `marker` was unreadable: a gap notice for `marker` may come first.)
        let e = again.next_event().expect("an event");
        assert_ne!(e.event.as_deref(), Some("occupancy"), "{e:?}");
    });
}

#[test]
fn names_of_counts_nobody_watches_lock_nobody_out_and_are_given_back() {
    // Outside attack: anonymous clients naming `$occupancy:` topics kept publishers out of new
    // topics (503) for minutes after they left, and held their memory.
    each_driver(2, &["--max-topics", "200", "--history-ttl", "4", "--occupancy-interval", "0.1"], |s| {
        let mut counted = 0;
        'naming: for c in 0..10 {
            let mut w = ws_with(s, "/sub/x", &[]);
            let topics: Vec<String> = (0..40).map(|j| format!("$occupancy:fill-{c}-{j}")).collect();
            w.json(&json!({"method": "subscribe", "id": 1, "topics": topics}));
            // Each connection's counts arrive (and are published) before it leaves, until the
            // node's half of max_topics for made-up names is full (close 1013).
            for _ in 0..41 {
                match w.next_msg() {
                    common::ws::Msg::Text(t) => assert!(t.contains("occupancy") || t.contains("subscribed"), "{t}"),
                    _ => break 'naming,
                }
                counted += 1;
            }
        }
        assert!(counted >= 40, "some were named and counted");
        let r = publish(s, "brand-new", "x");
        assert_eq!(r.status, 200, "publishers keep their half of max_topics: {}", r.text());
        wait_until("the names to be given back", || metric(s, "herald_topics") <= 2.0);
    });
}

#[test]
fn a_cursor_not_written_as_herald_writes_it_is_unreadable() {
    each_driver(1, &[], |s| {
        let id = publish_ok(s, "mf", "x");
        let (epoch, seq) = id.split_once('-').expect("epoch-seq");
        for sent in [format!("0{epoch}-{seq}"), format!("{epoch}-0{seq}"), format!("{}-{seq}", epoch.to_uppercase())] {
            let mut c = SseClient::open(s, "/sub/mf", &[&format!("Last-Event-ID: {sent}")]);
            let gap = c.next_event().expect("a gap");
            assert_eq!(gap.event.as_deref(), Some("herald.gap"), "{sent}: {gap:?}");
            assert_eq!(serde_json::from_str::<Value>(&gap.data).expect("json")["missed_from"], sent.as_str());
            let path = sub_path("mf", Some(&sent), "timeout=0");
            assert_json_error(&request(s, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")), 400);
        }
    });
}

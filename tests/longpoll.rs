//! Long-poll (API.md §3, §3.3, §7): immediate answers and `max`, resuming with `last_event_id`,
//! held polls, timeouts, no loss or duplicates under load (one and two topics), type filters,
//! keep-alive, many held polls released at once, gaps, forgotten topics, and parameter
//! validation.
mod common;

use common::*;
use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One checked long-poll answer.
#[derive(Debug)]
struct Poll {
    status: u16,
    /// The `events` array (empty for a 204).
    events: Vec<Value>,
    /// `last_event_id` of the body (200) or the `Last-Event-ID` header (204).
    cursor: String,
}

/// A plain GET (no `Accept: text/event-stream`, no `Upgrade`): a long-poll.
fn get_raw(path: &str, extra_headers: &[&str]) -> String {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n");
    for h in extra_headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

/// Validates a long-poll response (200 with JSON events, or 204) and extracts it.
fn check(r: Response, what: &str) -> Poll {
    let header = r.header("last-event-id").map(str::to_string);
    match r.status {
        200 => {
            let ct = r.header("content-type").unwrap_or("").to_ascii_lowercase();
            assert!(ct.starts_with("application/json"), "{what}: 200 should be application/json, was {ct:?}");
            let v = r.json();
            let events = v["events"].as_array().unwrap_or_else(|| panic!("{what}: no events array: {v}")).clone();
            let cursor = v["last_event_id"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: no last_event_id string: {v}"))
                .to_string();
            assert!(!cursor.is_empty(), "{what}: empty last_event_id: {v}");
            assert_eq!(
                header.as_deref(),
                Some(cursor.as_str()),
                "{what}: Last-Event-ID header must equal the body's last_event_id"
            );
            for ev in &events {
                assert!(ev["topic"].as_str().is_some_and(|t| !t.is_empty()), "{what}: event without topic: {ev}");
                assert!(ev["id"].as_str().is_some_and(|t| !t.is_empty()), "{what}: event without id: {ev}");
                assert!(ev["data"].is_string(), "{what}: event data is not a string: {ev}");
                assert!(ev["ts"].is_number(), "{what}: event ts is not a number: {ev}");
                if let Some(t) = ev.get("type") {
                    assert!(t.as_str().is_some_and(|t| !t.is_empty()), "{what}: type present but not a name: {ev}");
                }
            }
            Poll { status: 200, events, cursor }
        }
        204 => {
            let cursor = header.unwrap_or_else(|| panic!("{what}: 204 without Last-Event-ID: {:?}", r.headers));
            assert!(!cursor.is_empty(), "{what}: 204 with an empty Last-Event-ID");
            assert!(r.body.is_empty(), "{what}: 204 with a body");
            Poll { status: 204, events: Vec::new(), cursor }
        }
        other => panic!("{what}: unexpected status {other}: {:?} {}", r.headers, r.text()),
    }
}

/// Sends a long-poll for `path` on `stream` and reads the checked answer.
fn poll_on(stream: &mut TcpStream, path: &str, extra_headers: &[&str]) -> Poll {
    let r = roundtrip(stream, get_raw(path, extra_headers).as_bytes());
    check(r, path)
}

/// A long-poll on a fresh connection.
fn poll(server: &Server, path: &str) -> Poll {
    let mut c = server.connect();
    poll_on(&mut c, path, &[])
}

/// Sends the poll without reading the answer.
fn send_poll(server: &Server, path: &str) -> TcpStream {
    let mut c = server.connect();
    c.write_all(get_raw(path, &[]).as_bytes()).expect("write poll");
    c
}

/// Reads the answer of a poll sent with `send_poll`.
fn answer(c: &mut TcpStream, what: &str) -> Poll {
    check(read_response(c).unwrap_or_else(|| panic!("{what}: no response")), what)
}

fn data_of(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["data"].as_str().unwrap().to_string()).collect()
}

fn ids_of(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
}

/// Asserts `p` is a 200 with exactly these events (data and ids, in order) of `topic`, none a gap,
/// none typed, and resumes from the last of them.
fn expect_exact(p: &Poll, topic: &str, ids: &[String], data: &[String], what: &str) {
    assert_eq!(p.status, 200, "{what}: expected events, got {p:?}");
    assert_eq!(data_of(&p.events), data, "{what}: event data");
    assert_eq!(ids_of(&p.events), ids, "{what}: event ids must be the publish cursors");
    for ev in &p.events {
        assert_eq!(ev["topic"].as_str(), Some(topic), "{what}: {ev}");
        assert!(ev.get("type").is_none(), "{what}: untyped event must have no type key: {ev}");
    }
    assert_eq!(&p.cursor, ids.last().unwrap(), "{what}: last_event_id must be the last event's cursor");
}

/// Asserts nothing arrives on `c` for a short while (the poll is being held). A correct server never
/// fails this; a server that answers at once is caught.
fn assert_held(c: &mut TcpStream, what: &str) {
    c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut b = [0u8; 1];
    match c.peek(&mut b) {
        Ok(0) => panic!("{what}: connection closed while the poll should be held"),
        Ok(_) => {
            let mut got = vec![0u8; 4096];
            let n = c.read(&mut got).unwrap_or(0);
            panic!("{what}: answered while it should be held: {:?}", String::from_utf8_lossy(&got[..n]))
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Err(e) => panic!("{what}: {e}"),
    }
    c.set_read_timeout(Some(DEADLINE)).unwrap();
}

/// Asserts `ev` is a `herald.gap` notice for `topic`.
fn assert_gap(ev: &Value, topic: &str) {
    assert_eq!(ev["type"].as_str(), Some("herald.gap"), "expected a gap notice, got {ev}");
    assert_eq!(ev["topic"].as_str(), Some(topic), "gap notice topic: {ev}");
    assert!(ev["id"].as_str().is_some_and(|i| !i.is_empty()), "gap notice id: {ev}");
    assert!(ev["ts"].is_number(), "gap notice ts: {ev}");
    let raw = ev["data"].as_str().unwrap_or_else(|| panic!("gap data must be a JSON string: {ev}"));
    let v: Value = serde_json::from_str(raw).unwrap_or_else(|e| panic!("gap data is not JSON ({e}): {raw:?}"));
    let obj = v.as_object().unwrap_or_else(|| panic!("gap data is not an object: {v}"));
    assert_eq!(obj.len(), 2, "gap data carries exactly topic and missed_from: {v}");
    assert_eq!(obj.get("topic").and_then(Value::as_str), Some(topic), "{v}");
    assert!(
        obj.get("missed_from").and_then(Value::as_str).is_some_and(|m| !m.is_empty()),
        "missed_from must be a non-empty string: {v}"
    );
}

// ---------------------------------------------------------------- immediate answers, max, resume

#[test]
fn longpoll_answers_at_once_with_at_most_max_and_resumes_exactly() {
    each_driver(2, &[], |s| {
        let mut p = Publisher::new(s);
        let data: Vec<String> = (0..10).map(|i| format!("d{i}")).collect();
        let ids: Vec<String> = data.iter().map(|d| p.publish("lp1", d)).collect();

        let started = Instant::now();
        let first = poll(s, &sub_path("lp1", Some(&ids[0]), "max=4&timeout=30"));
        assert!(started.elapsed() < Duration::from_secs(10), "events were available: the poll must answer at once");
        expect_exact(&first, "lp1", &ids[1..5], &data[1..5], "first poll (max=4)");

        // the rest, resuming with the Last-Event-ID header this time
        let mut c = s.connect();
        let hdr = format!("Last-Event-ID: {}", first.cursor);
        let second = poll_on(&mut c, "/sub/lp1?timeout=30", &[&hdr]);
        expect_exact(&second, "lp1", &ids[5..], &data[5..], "second poll (header cursor)");

        // nothing is newer: no duplicates, a timeout
        let third = poll(s, &sub_path("lp1", Some(&second.cursor), "timeout=0.3"));
        assert_eq!(third.status, 204, "nothing newer than the last cursor: {third:?}");
    });
}

#[test]
fn longpoll_default_max_is_100() {
    each_driver(2, &[], |s| {
        let mut p = Publisher::new(s);
        let start = p.publish("lpmax", "start");
        let data: Vec<String> = (0..120).map(|i| format!("m{i}")).collect();
        let ids: Vec<String> = data.iter().map(|d| p.publish("lpmax", d)).collect();
        let a = poll(s, &sub_path("lpmax", Some(&start), ""));
        expect_exact(&a, "lpmax", &ids[..100], &data[..100], "default max");
        let b = poll(s, &sub_path("lpmax", Some(&a.cursor), "max=10000"));
        expect_exact(&b, "lpmax", &ids[100..], &data[100..], "the rest (max=10000)");
        let one = poll(s, &sub_path("lpmax", Some(&start), "max=1"));
        expect_exact(&one, "lpmax", &ids[..1], &data[..1], "max=1");
    });
}

// ---------------------------------------------------------------- held polls

#[test]
fn longpoll_with_latest_cursor_is_held_until_a_publish() {
    each_driver(2, &[], |s| {
        let latest = publish_ok(s, "held", "before");
        let mut c = send_poll(s, &sub_path("held", Some(&latest), "timeout=30"));
        assert_held(&mut c, "poll from the latest cursor");
        let addr = s.addr;
        let id = std::thread::spawn(move || Publisher::at(addr).publish("held", "after")).join().unwrap();
        let got = answer(&mut c, "held poll");
        expect_exact(&got, "held", &[id], &["after".to_string()], "held poll");
    });
}

#[test]
fn longpoll_without_cursor_waits_for_the_next_event() {
    each_driver(2, &[], |s| {
        publish_ok(s, "next", "old");
        let mut c = send_poll(s, "/sub/next?timeout=30");
        assert_held(&mut c, "poll without cursor");
        // Keep publishing to the same topic until the poll answers: whenever it got registered,
        // a later publish releases it. Only events published after it was sent may come back.
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, stop2) = (s.addr, stop.clone());
        let publisher = std::thread::spawn(move || {
            let mut p = Publisher::at(addr);
            let mut ids = Vec::new();
            while !stop2.load(Ordering::SeqCst) && ids.len() < 2000 {
                ids.push(p.publish("next", &format!("n{}", ids.len())));
                std::thread::sleep(Duration::from_millis(10));
            }
            ids
        });
        let got = answer(&mut c, "poll without cursor");
        stop.store(true, Ordering::SeqCst);
        let ids = publisher.join().unwrap();
        assert_eq!(got.status, 200, "the poll must be answered by a publish: {got:?}");
        assert!(!got.events.is_empty(), "a 200 carries at least one event: {got:?}");
        let data = data_of(&got.events);
        assert!(!data.contains(&"old".to_string()), "an event published before the poll came back: {data:?}");
        let first: usize = data[0].strip_prefix('n').and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{data:?}"));
        let want_data: Vec<String> = (first..first + data.len()).map(|i| format!("n{i}")).collect();
        assert_eq!(data, want_data, "events must be consecutive and in publish order");
        assert_eq!(ids_of(&got.events), ids[first..first + data.len()].to_vec(), "ids must be the publish cursors");
        assert_eq!(&got.cursor, ids_of(&got.events).last().unwrap(), "last_event_id");
    });
}

#[test]
fn longpoll_timeout_gives_204_whose_cursor_misses_nothing() {
    each_driver(2, &[], |s| {
        // a topic nothing was ever published to
        let started = Instant::now();
        let empty = poll(s, "/sub/quiet?timeout=0.5");
        let took = started.elapsed();
        assert_eq!(empty.status, 204, "nothing published: {empty:?}");
        assert!(took >= Duration::from_millis(400), "answered after {took:?}, before the 0.5 s timeout");
        let id = publish_ok(s, "quiet", "first");
        let got = poll(s, &sub_path("quiet", Some(&empty.cursor), "timeout=30"));
        expect_exact(&got, "quiet", &[id], &["first".to_string()], "resume from the 204's cursor");

        // a topic with history: a cursorless poll times out, its cursor resumes exactly
        publish_ok(s, "quiet2", "old");
        let t = poll(s, "/sub/quiet2?timeout=0.5");
        assert_eq!(t.status, 204, "cursorless poll must wait for the next event: {t:?}");
        let id = publish_ok(s, "quiet2", "new");
        let got = poll(s, &sub_path("quiet2", Some(&t.cursor), "timeout=30"));
        expect_exact(&got, "quiet2", &[id], &["new".to_string()], "resume from the 204's cursor (with history)");

        // from the newest cursor: 204 again, and its cursor resumes exactly too
        let t = poll(s, &sub_path("quiet2", Some(&got.cursor), "timeout=0.3"));
        assert_eq!(t.status, 204, "{t:?}");
        let id = publish_ok(s, "quiet2", "newer");
        let got = poll(s, &sub_path("quiet2", Some(&t.cursor), "timeout=30"));
        expect_exact(&got, "quiet2", &[id], &["newer".to_string()], "resume from a cursor 204");
    });
}

#[test]
fn a_forgotten_empty_topic_resumes_where_it_was_whatever_was_forgotten_meanwhile() {
    each_driver(2, &["--history-ttl", "0.5"], |s| {
        let forgotten = |what: &str| wait_until(what, || metric(s, "herald_topics") == 0.0);
        // Other topics with events forgotten in between, as on a busy node.
        let churn = |tag: &str| {
            for i in 0..300 {
                publish_ok(s, &format!("{tag}{i}"), "x");
            }
            forgotten("the other topics to be forgotten");
        };
        let vacant = poll(s, "/sub/vacant?timeout=0.3");
        assert_eq!(vacant.status, 204, "{vacant:?}");
        forgotten("the empty topic to be forgotten");
        churn("a");
        let again = poll(s, &sub_path("vacant", Some(&vacant.cursor), "timeout=0.3"));
        assert_eq!((again.status, &again.cursor), (204, &vacant.cursor), "nothing was ever published: {again:?}");

        // A life without events after one with: both its start and the last cursor before it
        // missed nothing.
        let last = publish_ok(s, "lived", "one");
        forgotten("the topic to be forgotten");
        let start = poll(s, &sub_path("lived", Some(&last), "timeout=0.3"));
        assert_eq!(start.status, 204, "the last cursor missed nothing: {start:?}");
        assert_ne!(start.cursor, last, "a new life");
        forgotten("its empty life to be forgotten");
        churn("b");
        for cursor in [&start.cursor, &last] {
            let p = poll(s, &sub_path("lived", Some(cursor), "timeout=0.3"));
            assert_eq!((p.status, &p.cursor), (204, &start.cursor), "from {cursor}: nothing published since");
        }
        let next = publish_ok(s, "lived", "two");
        for cursor in [&start.cursor, &last] {
            let p = poll(s, &sub_path("lived", Some(cursor), "timeout=30"));
            expect_exact(&p, "lived", std::slice::from_ref(&next), &["two".to_string()], cursor);
        }
    });
}

// ---------------------------------------------------------------- no loss, no duplicates

/// Polls `topics` from `cursor` with `max=7` until `total` events arrived; returns them.
fn collect(server: &Server, topics: &str, mut cursor: String, total: usize) -> Vec<Value> {
    let deadline = Instant::now() + DEADLINE;
    let mut c = server.connect();
    let mut got = Vec::new();
    while got.len() < total {
        assert!(Instant::now() < deadline, "only {} of {total} events after {DEADLINE:?}", got.len());
        let p = poll_on(&mut c, &sub_path(topics, Some(&cursor), "max=7&timeout=5"), &[]);
        assert!(p.events.len() <= 7, "max=7 but got {} events", p.events.len());
        if p.status == 200 {
            assert!(!p.events.is_empty(), "a 200 with no events");
        }
        for ev in &p.events {
            assert_ne!(ev["type"].as_str(), Some("herald.gap"), "unexpected gap: {ev}");
        }
        got.extend(p.events);
        cursor = p.cursor;
    }
    assert_eq!(got.len(), total, "more events than were published: {:?}", data_of(&got[total..]));
    got
}

#[test]
fn longpoll_loses_and_repeats_nothing_while_a_publisher_runs() {
    each_driver(2, &[], |s| {
        let start = publish_ok(s, "flow", "start");
        let addr = s.addr;
        let publisher = std::thread::spawn(move || {
            let mut p = Publisher::at(addr);
            (0..300).map(|i| p.publish("flow", &format!("f{i}"))).collect::<Vec<String>>()
        });
        let got = collect(s, "flow", start, 300);
        let ids = publisher.join().unwrap();
        let want: Vec<String> = (0..300).map(|i| format!("f{i}")).collect();
        assert_eq!(data_of(&got), want, "the polled sequence must be exactly the published one");
        assert_eq!(ids_of(&got), ids, "ids must be the publish cursors, in order");
        assert!(got.iter().all(|e| e["topic"] == "flow"));
    });
}

#[test]
fn longpoll_two_topics_lose_and_repeat_nothing_while_a_publisher_runs() {
    each_driver(2, &[], |s| {
        publish_ok(s, "la", "pre-a");
        publish_ok(s, "lb", "pre-b");
        // a multi-topic cursor: the 204 of a cursorless poll carries the current position of both
        let t = poll(s, "/sub/la,lb?timeout=0.2");
        assert_eq!(t.status, 204, "a cursorless poll waits for the next event: {t:?}");
        let addr = s.addr;
        let publisher = std::thread::spawn(move || {
            let mut p = Publisher::at(addr);
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for i in 0..150 {
                a.push(p.publish("la", &format!("a{i}")));
                b.push(p.publish("lb", &format!("b{i}")));
            }
            (a, b)
        });
        let got = collect(s, "la,lb", t.cursor, 300);
        let (ids_a, ids_b) = publisher.join().unwrap();
        for (topic, prefix, ids) in [("la", "a", ids_a), ("lb", "b", ids_b)] {
            let mine: Vec<Value> = got.iter().filter(|e| e["topic"] == topic).cloned().collect();
            let want: Vec<String> = (0..150).map(|i| format!("{prefix}{i}")).collect();
            assert_eq!(data_of(&mine), want, "topic {topic}: the polled sequence must be exactly the published one");
            assert_eq!(ids_of(&mine), ids, "topic {topic}: each event's id is its own topic cursor");
        }
        assert!(got.iter().all(|e| e["topic"] == "la" || e["topic"] == "lb"));
    });
}

// ---------------------------------------------------------------- types filter

#[test]
fn longpoll_types_filter_returns_only_listed_types() {
    each_driver(2, &[], |s| {
        let mut p = Publisher::new(s);
        let start = p.publish("typ", "start");
        let i1 = p.publish_typed("typ", Some("a"), "1");
        let i2 = p.publish_typed("typ", Some("b"), "2");
        let i3 = p.publish("typ", "3");
        let i4 = p.publish_typed("typ", Some("c"), "4");
        let i5 = p.publish_typed("typ", Some("a"), "5");

        let am = poll(s, &sub_path("typ", Some(&start), "types=a,message"));
        assert_eq!(data_of(&am.events), ["1", "3", "5"], "types=a,message: {am:?}");
        assert_eq!(ids_of(&am.events), [i1, i3, i5]);
        assert_eq!(am.events[0]["type"].as_str(), Some("a"));
        assert!(am.events[1].get("type").is_none(), "untyped event must have no type key: {}", am.events[1]);
        assert_eq!(am.events[2]["type"].as_str(), Some("a"));

        let b = poll(s, &sub_path("typ", Some(&start), "types=b"));
        assert_eq!(data_of(&b.events), ["2"], "types=b: {b:?}");
        assert_eq!(ids_of(&b.events), std::slice::from_ref(&i2));
        assert_eq!(b.events[0]["type"].as_str(), Some("b"));

        let cb = poll(s, &sub_path("typ", Some(&start), "types=c,b"));
        assert_eq!(data_of(&cb.events), ["2", "4"], "types=c,b: {cb:?}");
        assert_eq!(ids_of(&cb.events), [i2, i4]);

        let m = poll(s, &sub_path("typ", Some(&start), "types=message"));
        assert_eq!(data_of(&m.events), ["3"], "types=message: {m:?}");
        assert!(m.events[0].get("type").is_none());

        // resuming a filtered poll: nothing newer of these types → held, then only the new match
        let mut c = send_poll(s, &sub_path("typ", Some(&b.cursor), "types=b&timeout=30"));
        assert_held(&mut c, "filtered poll with no newer event of its types");
        p.publish_typed("typ", Some("a"), "6");
        p.publish("typ", "7");
        let i8 = p.publish_typed("typ", Some("b"), "8");
        let got = answer(&mut c, "filtered held poll");
        assert_eq!(got.status, 200, "{got:?}");
        assert_eq!(data_of(&got.events), ["8"], "only the type-b event: {got:?}");
        assert_eq!(ids_of(&got.events), [i8]);

        // a filtered poll that matches nothing times out with a cursor
        let none = poll(s, &sub_path("typ", Some(&start), "types=zzz&timeout=0.3"));
        assert_eq!(none.status, 204, "no event of type zzz: {none:?}");
    });
}

// ---------------------------------------------------------------- keep-alive

#[test]
fn longpoll_connection_stays_alive_across_polls() {
    each_driver(2, &[], |s| {
        let mut p = Publisher::new(s);
        let start = p.publish("ka", "start");
        let data: Vec<String> = (1..=2).map(|i| format!("k{i}")).collect();
        let ids: Vec<String> = data.iter().map(|d| p.publish("ka", d)).collect();
        let mut c = s.connect();

        let one = poll_on(&mut c, &sub_path("ka", Some(&start), "max=1"), &[]);
        expect_exact(&one, "ka", &ids[..1], &data[..1], "poll 1");
        let two = poll_on(&mut c, &sub_path("ka", Some(&one.cursor), "max=1"), &[]);
        expect_exact(&two, "ka", &ids[1..], &data[1..], "poll 2");
        let three = poll_on(&mut c, &sub_path("ka", Some(&two.cursor), "timeout=0.3"), &[]);
        assert_eq!(three.status, 204, "poll 3: {three:?}");

        // a fourth, held on the same connection and released by a publish
        c.write_all(get_raw(&sub_path("ka", Some(&three.cursor), "timeout=30"), &[]).as_bytes()).unwrap();
        assert_held(&mut c, "poll 4");
        let id = p.publish("ka", "k3");
        let four = answer(&mut c, "poll 4");
        expect_exact(&four, "ka", &[id], &["k3".to_string()], "poll 4");
    });
}

// ---------------------------------------------------------------- fanout

#[test]
fn longpoll_one_publish_releases_100_held_polls() {
    each_driver(2, &[], |s| {
        let latest = publish_ok(s, "crowd", "before");
        let path = sub_path("crowd", Some(&latest), "timeout=60");
        let mut conns: Vec<TcpStream> = (0..100).map(|_| send_poll(s, &path)).collect();
        // every request is written; one that is registered late still gets the event via its cursor
        let id = publish_ok(s, "crowd", "go");
        for (i, c) in conns.iter_mut().enumerate() {
            let what = format!("held poll {i}");
            let got = answer(c, &what);
            expect_exact(&got, "crowd", std::slice::from_ref(&id), &["go".to_string()], &what);
        }
    });
}

// ---------------------------------------------------------------- gaps

#[test]
fn longpoll_gap_when_cursor_is_older_than_history() {
    each_driver(2, &["--history", "3"], |s| {
        let mut p = Publisher::new(s);
        let data: Vec<String> = (0..10).map(|i| format!("g{i}")).collect();
        let ids: Vec<String> = data.iter().map(|d| p.publish("gap", d)).collect();
        let got = poll(s, &sub_path("gap", Some(&ids[0]), ""));
        assert_eq!(got.status, 200, "{got:?}");
        assert_eq!(got.events.len(), 4, "a gap notice then the 3 events history has: {:?}", got.events);
        assert_gap(&got.events[0], "gap");
        let rest = Poll { status: 200, events: got.events[1..].to_vec(), cursor: got.cursor.clone() };
        expect_exact(&rest, "gap", &ids[7..], &data[7..], "after the gap notice");

        // resuming from the newest cursor is not a gap
        let t = poll(s, &sub_path("gap", Some(&got.cursor), "timeout=0.3"));
        assert_eq!(t.status, 204, "{t:?}");
        // and within history: no gap either
        let within = poll(s, &sub_path("gap", Some(&ids[7]), ""));
        expect_exact(&within, "gap", &ids[8..], &data[8..], "resume within history");
    });
}

#[test]
fn longpoll_gap_for_cursor_from_an_earlier_run() {
    each_driver(2, &[], |s| {
        let old = {
            let first = Server::start(&["--workers", "2"]);
            let mut p = Publisher::new(&first);
            p.publish("run", "old1");
            p.publish("run", "old2")
        }; // the first server is killed here
        let mut p = Publisher::new(s);
        let data: Vec<String> = (1..=3).map(|i| format!("new{i}")).collect();
        let ids: Vec<String> = data.iter().map(|d| p.publish("run", d)).collect();
        let got = poll(s, &sub_path("run", Some(&old), ""));
        assert_eq!(got.status, 200, "{got:?}");
        assert_eq!(got.events.len(), 4, "a gap notice then all 3 events: {:?}", got.events);
        assert_gap(&got.events[0], "run");
        let rest = Poll { status: 200, events: got.events[1..].to_vec(), cursor: got.cursor.clone() };
        expect_exact(&rest, "run", &ids, &data, "after the gap notice");
    });
}

// ---------------------------------------------------------------- parameters

#[test]
fn longpoll_bad_max_and_timeout_are_400() {
    each_driver(2, &[], |s| {
        let cursor = publish_ok(s, "bad", "x");
        for q in ["max=0", "max=-1", "max=abc", "max=10001", "timeout=-1", "timeout=abc"] {
            let path = sub_path("bad", Some(&cursor), q);
            let r = request(s, &get_raw(&path, &[]));
            assert_eq!(r.status, 400, "{path}: {:?} {}", r.headers, r.text());
            assert_json_error(&r, 400);
        }
        // the limits themselves are fine (answered at once: an event is newer than the cursor)
        let id = publish_ok(s, "bad", "y");
        for q in ["max=1", "max=10000", "timeout=0", "timeout=0.25", "timeout=300"] {
            let got = poll(s, &sub_path("bad", Some(&cursor), q));
            expect_exact(&got, "bad", std::slice::from_ref(&id), &["y".to_string()], q);
        }
    });
}

#[test]
fn longpoll_timeout_above_300_is_accepted() {
    each_driver(2, &[], |s| {
        let latest = publish_ok(s, "long", "before");
        let mut c = send_poll(s, &sub_path("long", Some(&latest), "timeout=1000"));
        assert_held(&mut c, "poll with timeout=1000");
        let id = publish_ok(s, "long", "after");
        let got = answer(&mut c, "poll with timeout=1000");
        expect_exact(&got, "long", &[id], &["after".to_string()], "timeout=1000");
    });
}

#[test]
fn longpoll_answer_is_capped_by_max_pending_bytes() {
    // The same cap a stream's queue has: an answer stops growing past max_pending_bytes of
    // event data, and the next poll carries on from where it stopped.
    each_driver(2, &["--max-pending-bytes", "65536"], |s| {
        let big = "b".repeat(16 * 1024);
        let ids: Vec<String> = (0..10).map(|i| publish_ok(s, "capped", &format!("{i}{big}"))).collect();
        let first = poll(s, &sub_path("capped", Some(&ids[0]), ""));
        assert_eq!(first.status, 200);
        assert_eq!(ids_of(&first.events), &ids[1..5], "16 KiB events up to 64 KiB");
        let rest = poll(s, &sub_path("capped", Some(&first.cursor), ""));
        assert_eq!(ids_of(&rest.events), &ids[5..9]);
        let last = poll(s, &sub_path("capped", Some(&rest.cursor), ""));
        assert_eq!(ids_of(&last.events), &ids[9..]);
    });
}

// ---------------------------------------------------------------- a held poll without a task

/// A request sent behind a held poll (HTTP/1.1 pipelining) is answered after the poll, and the
/// connection goes on.
#[test]
fn longpoll_request_pipelined_behind_a_held_poll_is_answered_after_it() {
    each_driver(2, &[], |s| {
        let latest = publish_ok(s, "behind", "before");
        let mut c = s.connect();
        c.write_all(get_raw(&sub_path("behind", Some(&latest), "timeout=30"), &[]).as_bytes()).unwrap();
        assert_held(&mut c, "poll");
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        assert_held(&mut c, "poll with a request behind it");
        let id = publish_ok(s, "behind", "now");
        let got = answer(&mut c, "poll");
        expect_exact(&got, "behind", std::slice::from_ref(&id), &["now".to_string()], "poll");
        let health = read_response(&mut c).expect("the pipelined request's answer");
        assert_eq!((health.status, health.text().trim_end()), (200, "ok"));
        let again = poll_on(&mut c, &sub_path("behind", Some(&got.cursor), "timeout=0"), &[]);
        assert_eq!(again.status, 204, "{again:?}");
    });
}

/// SIGTERM answers every held poll at once (nothing came: 204 with the cursor to resume from)
/// and closes its connection; the server exits 0.
#[test]
fn longpoll_sigterm_answers_held_polls_and_exits_zero() {
    for driver in drivers() {
        let mut s = Server::with(driver, 2, &[]);
        let latest = publish_ok(&s, "bye", "before");
        let path = sub_path("bye", Some(&latest), "timeout=60");
        let mut conns: Vec<TcpStream> = (0..20).map(|_| send_poll(&s, &path)).collect();
        assert_held(&mut conns[19], "the last poll");
        let started = Instant::now();
        let status = s.terminate();
        assert!(status.success(), "{driver}: exit status after SIGTERM: {status:?}");
        assert!(started.elapsed() <= Duration::from_secs(5), "{driver}: exit took {:?}", started.elapsed());
        for (i, c) in conns.iter_mut().enumerate() {
            let r = read_response(c).unwrap_or_else(|| panic!("{driver}: poll {i} got no answer"));
            assert_eq!(r.status, 204, "{driver}: poll {i}: {}", r.text());
            assert_eq!(r.header("last-event-id"), Some(latest.as_str()), "{driver}: poll {i}");
            assert!(wait_closed(c, DEADLINE).is_empty(), "{driver}: poll {i}: bytes after the answer");
        }
    }
}

//! Server-Sent Events (API.md §3, §3.1, §7): response head, retry, framing, heartbeats, padding, multi-topic streams, type filters, resume and gaps, cross-worker order, slow consumers and graceful shutdown.
mod common;

use common::*;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Opens `path` as SSE on a raw socket and returns the stream bytes read until `enough` says so.
fn raw_stream_prefix(server: &Server, path: &str, enough: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut s = server.connect();
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    let (status, headers) = read_head(&mut s).expect("SSE head");
    assert_eq!(status, 200, "SSE {path}: {status}");
    assert!(
        headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")),
        "SSE stream should be chunked: {headers:?}"
    );
    let mut chunks = ChunkReader::default();
    let mut got = Vec::new();
    while !enough(&got) {
        let c = chunks
            .next_chunk(&mut s)
            .unwrap_or_else(|| panic!("stream ended after {:?}", String::from_utf8_lossy(&got)));
        got.extend_from_slice(&c);
    }
    got
}

/// Asserts `ev` is a `herald.gap` event for `topic` with exactly `topic` and a non-empty `missed_from`.
fn assert_gap(ev: &SseEvent, topic: &str) {
    assert_eq!(ev.event.as_deref(), Some("herald.gap"), "expected a gap event, got {ev:?}");
    let v: serde_json::Value =
        serde_json::from_str(&ev.data).unwrap_or_else(|e| panic!("gap data is not JSON ({e}): {:?}", ev.data));
    let obj = v.as_object().unwrap_or_else(|| panic!("gap data is not an object: {v}"));
    assert_eq!(obj.len(), 2, "gap data carries exactly topic and missed_from: {v}");
    assert_eq!(obj.get("topic").and_then(|t| t.as_str()), Some(topic), "{v}");
    assert!(
        obj.get("missed_from").and_then(|m| m.as_str()).is_some_and(|m| !m.is_empty()),
        "missed_from must be a non-empty string: {v}"
    );
}

/// Bytes taken by the comment lines at the start of `b`, and whether a non-comment line follows.
fn leading_comment_bytes(b: &[u8]) -> (usize, bool) {
    let mut n = 0;
    let mut rest = b;
    while rest.first() == Some(&b':') {
        match rest.iter().position(|&c| c == b'\n') {
            Some(p) => {
                n += p + 1;
                rest = &rest[p + 1..];
            }
            None => return (n, false),
        }
    }
    (n, !rest.is_empty())
}

/// `GET {path}` as an SSE request that the server must refuse; returns the whole response.
fn refused(server: &Server, path: &str) -> Response {
    let r = request(server, &format!("GET {path} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n"));
    assert_ne!(r.status, 200, "{path} was accepted");
    r
}

fn last_id_header(id: &str) -> String {
    format!("Last-Event-ID: {id}")
}

/// Asserts the next events of `sub` are exactly `data` with the given ids.
fn expect_events(sub: &mut SseClient, ids: &[String], data: &[String]) {
    for (id, d) in ids.iter().zip(data) {
        let ev = sub.next_event().unwrap_or_else(|| panic!("stream ended before {d:?}"));
        assert_eq!(&ev.data, d, "got {ev:?}");
        assert_eq!(ev.id.as_deref(), Some(id.as_str()), "got {ev:?}");
        assert_ne!(ev.event.as_deref(), Some("herald.gap"));
    }
}

// ---------------------------------------------------------------- head and preamble

#[test]
fn sse_response_head_has_required_headers() {
    each_driver(2, &[], |s| {
        let sub = SseClient::open(s, "/sub/head", &[]);
        let ct = sub.header("content-type").expect("Content-Type").to_ascii_lowercase();
        assert_eq!(ct.replace(' ', ""), "text/event-stream;charset=utf-8", "Content-Type {ct:?}");
        let cc = sub.header("cache-control").expect("Cache-Control").to_ascii_lowercase();
        assert!(cc.split(',').any(|d| d.trim() == "no-cache"), "Cache-Control {cc:?}");
        assert_eq!(sub.header("x-accel-buffering").map(|v| v.to_ascii_lowercase()).as_deref(), Some("no"));
    });
}

#[test]
fn sse_stream_starts_with_retry_3000() {
    each_driver(2, &[], |s| {
        let got = raw_stream_prefix(s, "/sub/retry", |b| b.contains(&b'\n'));
        let text = String::from_utf8_lossy(&got);
        let first = text.split(['\n', '\r']).next().unwrap();
        assert!(
            first == "retry: 3000" || first == "retry:3000",
            "the stream must start with retry: 3000, started with {first:?}"
        );
        // and the client sees it as the reconnection time
        let mut sub = SseClient::open(s, "/sub/retry", &[]);
        publish_ok(s, "retry", "x");
        assert_eq!(sub.next_event().expect("event").retry, Some(3000));
    });
}

#[test]
fn sse_retry_follows_the_sse_retry_setting() {
    each_driver(2, &["--sse-retry", "1.5"], |s| {
        let mut sub = SseClient::open(s, "/sub/retry", &[]);
        publish_ok(s, "retry", "x");
        assert_eq!(sub.next_event().expect("event").retry, Some(1500));
    });
}

#[test]
fn sse_padding_sends_a_2k_comment_first() {
    each_driver(2, &[], |s| {
        // Read until the leading comment lines are complete (or clearly long enough).
        let got = raw_stream_prefix(s, "/sub/pad?padding=1", |b| {
            if b.is_empty() {
                return false;
            }
            if b[0] != b':' {
                return b.contains(&b'\n');
            }
            let (n, ended) = leading_comment_bytes(b);
            n >= 2048 || ended
        });
        assert_eq!(
            got.first(),
            Some(&b':'),
            "padding comment must come first: {:?}",
            String::from_utf8_lossy(&got[..got.len().min(80)])
        );
        let (n, _) = leading_comment_bytes(&got);
        assert!(n >= 2048, "leading padding comment is only {n} bytes");

        // A padded stream still delivers events.
        let mut sub = SseClient::open(s, "/sub/pad?padding=1", &[]);
        publish_ok(s, "pad", "after padding");
        assert_eq!(sub.next_event().expect("event").data, "after padding");
        assert!(sub.comments >= 1);
    });
}

#[test]
fn sse_heartbeat_comments_when_idle() {
    each_driver(2, &["--heartbeat", "0.5"], |s| {
        let mut sub = SseClient::open(s, "/sub/hb", &[]);
        sub.wait_comments(2);
        publish_ok(s, "hb", "alive");
        assert_eq!(sub.next_event().expect("event").data, "alive");
    });
}

// ---------------------------------------------------------------- framing

#[test]
fn sse_id_is_the_publish_cursor_on_single_topic_streams() {
    each_driver(2, &[], |s| {
        let mut sub = SseClient::open(s, "/sub/ids", &[]);
        let mut p = Publisher::new(s);
        let ids: Vec<String> = (0..5).map(|i| p.publish("ids", &format!("e{i}"))).collect();
        for (i, id) in ids.iter().enumerate() {
            let ev = sub.next_event().expect("event");
            assert_eq!(ev.data, format!("e{i}"));
            assert_eq!(ev.id.as_deref(), Some(id.as_str()));
            assert_eq!(ev.event, None, "untyped events carry no event: line");
        }
    });
}

#[test]
fn sse_typed_events_carry_event_field() {
    each_driver(2, &[], |s| {
        let mut sub = SseClient::open(s, "/sub/ty", &[]);
        let mut p = Publisher::new(s);
        let id = p.publish_typed("ty", Some("user.joined"), "alice");
        let ev = sub.next_event().expect("event");
        assert_eq!(ev.event.as_deref(), Some("user.joined"));
        assert_eq!(ev.data, "alice");
        assert_eq!(ev.id.as_deref(), Some(id.as_str()));
    });
}

#[test]
fn sse_data_line_breaks_become_data_lines() {
    each_driver(2, &[], |s| {
        let mut sub = SseClient::open(s, "/sub/lines", &[]);
        let cases = [
            ("a\nb", "a\nb"),
            ("a\r\nb", "a\nb"),
            ("a\rb", "a\nb"),
            ("one\r\ntwo\nthree\rfour", "one\ntwo\nthree\nfour"),
            ("a\n\nb", "a\n\nb"),
            ("", ""),
            ("trailing\n", "trailing\n"),
            ("trailing crlf\r\n", "trailing crlf\n"),
            ("  leading spaces", "  leading spaces"),
            (": not a comment", ": not a comment"),
            ("data: nested", "data: nested"),
        ];
        let mut p = Publisher::new(s);
        for (sent, _) in cases {
            p.publish("lines", sent);
        }
        for (sent, want) in cases {
            let ev = sub.next_event().expect("event");
            assert_eq!(ev.data, want, "published {sent:?}");
        }
    });
}

// ---------------------------------------------------------------- topics and filters

#[test]
fn sse_multi_topic_stream_gets_all_topics() {
    each_driver(2, &[], |s| {
        let mut sub = SseClient::open(s, "/sub/ma,mb,mc", &[]);
        let mut p = Publisher::new(s);
        for t in ["mc", "ma", "mb", "ma"] {
            p.publish(t, &format!("to {t}"));
        }
        let mut got: Vec<String> = sub.take(4).into_iter().map(|e| e.data).collect();
        got.sort();
        assert_eq!(got, ["to ma", "to ma", "to mb", "to mc"]);
    });
}

#[test]
fn sse_more_than_64_topics_is_400() {
    each_driver(2, &[], |s| {
        let many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
        let r = refused(s, &format!("/sub/{}", many.join(",")));
        assert_json_error(&r, 400);

        let ok: Vec<String> = (0..64).map(|i| format!("t{i}")).collect();
        let mut sub = SseClient::open(s, &format!("/sub/{}", ok.join(",")), &[]);
        publish_ok(s, "t63", "last topic");
        assert_eq!(sub.next_event().expect("event").data, "last topic");
    });
}

#[test]
fn sse_invalid_topic_is_400() {
    each_driver(2, &[], |s| {
        for path in ["/sub/a%20b", "/sub/ok,a!b", "/sub/a,,b"] {
            let r = refused(s, path);
            assert_json_error(&r, 400);
        }
    });
}

#[test]
fn sse_types_filter_delivers_only_listed_types() {
    each_driver(2, &[], |s| {
        let mut with_msg = SseClient::open(s, "/sub/tf?types=greet,message", &[]);
        let mut only = SseClient::open(s, "/sub/tf?types=greet", &[]);
        let mut p = Publisher::new(s);
        p.publish_typed("tf", None, "u1");
        p.publish_typed("tf", Some("other"), "o1");
        p.publish_typed("tf", Some("greet"), "g1");
        p.publish_typed("tf", Some("other"), "o2");
        p.publish_typed("tf", None, "u2");
        p.publish_typed("tf", Some("greet"), "g2");
        let got: Vec<(Option<String>, String)> = with_msg.take(4).into_iter().map(|e| (e.event, e.data)).collect();
        assert_eq!(
            got,
            [
                (None, "u1".to_string()),
                (Some("greet".to_string()), "g1".to_string()),
                (None, "u2".to_string()),
                (Some("greet".to_string()), "g2".to_string()),
            ]
        );
        let got: Vec<String> = only.take(2).into_iter().map(|e| e.data).collect();
        assert_eq!(got, ["g1", "g2"]);
        // nothing filtered-out sneaks in later
        p.publish_typed("tf", Some("greet"), "g3");
        assert_eq!(only.next_event().expect("event").data, "g3");
        assert_eq!(with_msg.next_event().expect("event").data, "g3");
    });
}

// ---------------------------------------------------------------- resume

fn resume_gets_exactly_the_missed_events(s: &Server, topic: &str, how: impl Fn(&str) -> (String, Vec<String>)) {
    let mut p = Publisher::new(s);
    let data: Vec<String> = (1..=5).map(|i| format!("ev{i}")).collect();
    let ids: Vec<String> = data.iter().map(|d| p.publish(topic, d)).collect();
    let (path, headers) = how(&ids[1]);
    let hdrs: Vec<&str> = headers.iter().map(|h| h.as_str()).collect();
    let mut sub = SseClient::open(s, &path, &hdrs);
    expect_events(&mut sub, &ids[2..], &data[2..]);
    let live = p.publish(topic, "ev6");
    expect_events(&mut sub, &[live], &["ev6".to_string()]);
}

#[test]
fn sse_resume_with_last_event_id_header() {
    each_driver(2, &[], |s| {
        resume_gets_exactly_the_missed_events(s, "rh", |id| ("/sub/rh".into(), vec![last_id_header(id)]));
    });
}

#[test]
fn sse_resume_with_last_event_id_query() {
    each_driver(2, &[], |s| {
        resume_gets_exactly_the_missed_events(s, "rq", |id| (format!("/sub/rq?last_event_id={}", pct(id)), vec![]));
    });
}

#[test]
fn sse_multi_topic_resume_from_last_seen_id_is_exact() {
    each_driver(2, &[], |s| {
        for (round, cut) in [1usize, 14, 29].into_iter().enumerate() {
            let topics: Vec<String> = (0..3).map(|t| format!("mr{round}-{t}")).collect();
            let path = format!("/sub/{}", topics.join(","));
            let total = 30;
            let expected = |t: &str| -> Vec<String> {
                (0..total).filter(|i| topics[i % 3] == t).map(|i| format!("{t}#{i}")).collect()
            };
            let mut sub = SseClient::open(s, &path, &[]);
            let addr = s.addr;
            let (first, last) = std::thread::scope(|sc| {
                let publisher = sc.spawn(|| {
                    let mut p = Publisher::at(addr);
                    for i in 0..total {
                        let t = &topics[i % 3];
                        p.publish(t, &format!("{t}#{i}"));
                    }
                });
                let first = sub.take(cut);
                let last = sub.last_event_id.clone().expect("events carry ids");
                drop(sub);
                publisher.join().unwrap();
                (first, last)
            });
            let mut again = SseClient::open(s, &path, &[&last_id_header(&last)]);
            let rest = again.take(total - cut);
            for ev in &rest {
                assert_ne!(ev.event.as_deref(), Some("herald.gap"), "no gap expected: {ev:?}");
            }
            for t in &topics {
                let seen: Vec<String> = first
                    .iter()
                    .chain(rest.iter())
                    .map(|e| e.data.clone())
                    .filter(|d| d.starts_with(&format!("{t}#")))
                    .collect();
                assert_eq!(seen, expected(t), "topic {t}, cut after {cut}: every event exactly once, in order");
            }
            // and nothing more: the next event is a live one
            publish_ok(s, &topics[1], "live");
            let ev = again.next_event().expect("live event");
            assert_eq!(ev.data, "live", "duplicate or extra event after resume (cut {cut})");
        }
    });
}

// ---------------------------------------------------------------- gaps

#[test]
fn sse_gap_when_cursor_is_older_than_history() {
    each_driver(2, &["--history", "3"], |s| {
        let mut p = Publisher::new(s);
        let data: Vec<String> = (1..=10).map(|i| format!("g{i}")).collect();
        let ids: Vec<String> = data.iter().map(|d| p.publish("gap", d)).collect();
        let mut sub = SseClient::open(s, "/sub/gap", &[&last_id_header(&ids[0])]);
        let ev = sub.next_event().expect("gap event");
        assert_gap(&ev, "gap");
        expect_events(&mut sub, &ids[7..], &data[7..]);
        let live = p.publish("gap", "g11");
        expect_events(&mut sub, &[live], &["g11".to_string()]);
    });
}

#[test]
fn sse_resume_within_history_has_no_gap() {
    each_driver(2, &["--history", "3"], |s| {
        let mut p = Publisher::new(s);
        let data: Vec<String> = (1..=10).map(|i| format!("n{i}")).collect();
        let ids: Vec<String> = data.iter().map(|d| p.publish("nogap", d)).collect();
        // from the oldest retained event
        let mut oldest = SseClient::open(s, "/sub/nogap", &[&last_id_header(&ids[7])]);
        // from the newest event
        let mut newest = SseClient::open(s, "/sub/nogap", &[&last_id_header(&ids[9])]);
        expect_events(&mut oldest, &ids[8..], &data[8..]);
        let live = p.publish("nogap", "n11");
        expect_events(&mut oldest, std::slice::from_ref(&live), &["n11".to_string()]);
        expect_events(&mut newest, &[live], &["n11".to_string()]);
    });
}

#[test]
fn sse_gap_when_history_ttl_expired_but_not_from_newest_cursor() {
    each_driver(2, &["--history-ttl", "1"], |s| {
        let mut p = Publisher::new(s);
        let e1 = p.publish("ttl", "one");
        let e2 = p.publish("ttl", "two");
        // Until "two" expires, resuming from "one" replays it; afterwards it is a gap.
        let deadline = Instant::now() + DEADLINE;
        let mut gapped = loop {
            let mut sub = SseClient::open(s, "/sub/ttl", &[&last_id_header(&e1)]);
            let ev = sub.next_event().expect("event");
            if ev.event.as_deref() == Some("herald.gap") {
                assert_gap(&ev, "ttl");
                break sub;
            }
            assert_eq!(ev.data, "two", "before expiry the missed event is replayed: {ev:?}");
            assert_eq!(ev.id.as_deref(), Some(e2.as_str()));
            assert!(Instant::now() < deadline, "history-ttl 1 never expired the event");
            std::thread::sleep(Duration::from_millis(100));
        };
        // "two" is the newest cursor, itself expired: resuming from it is not a gap.
        let mut newest = SseClient::open(s, "/sub/ttl", &[&last_id_header(&e2)]);
        let e3 = p.publish("ttl", "three");
        expect_events(&mut gapped, std::slice::from_ref(&e3), &["three".to_string()]);
        let ev = newest.next_event().expect("event");
        assert_ne!(ev.event.as_deref(), Some("herald.gap"), "resuming from the newest cursor is not a gap");
        assert_eq!(ev.data, "three");
        assert_eq!(ev.id.as_deref(), Some(e3.as_str()));
    });
}

#[test]
fn sse_gap_for_cursor_from_an_earlier_run() {
    for driver in drivers() {
        let old = {
            let first = Server::with(driver, 2, &[]);
            let mut p = Publisher::new(&first);
            let _ = p.publish("run", "old1");
            let old2 = p.publish("run", "old2");
            let _ = p.publish("run", "old3");
            old2
        }; // the first server is killed here
        let s = Server::with(driver, 2, &[]);
        let mut p = Publisher::new(&s);
        let data: Vec<String> = (1..=3).map(|i| format!("new{i}")).collect();
        let ids: Vec<String> = data.iter().map(|d| p.publish("run", d)).collect();
        let mut sub = SseClient::open(&s, "/sub/run", &[&last_id_header(&old)]);
        let ev = sub.next_event().expect("gap event");
        assert_gap(&ev, "run");
        expect_events(&mut sub, &ids, &data);
        let live = p.publish("run", "new4");
        expect_events(&mut sub, &[live], &["new4".to_string()]);
    }
}

// ---------------------------------------------------------------- order, backpressure, shutdown

#[test]
fn sse_every_subscriber_sees_the_same_order_across_workers() {
    each_driver(2, &[], |s| {
        let mut subs = Vec::new();
        let mut workers = HashSet::new();
        while subs.len() < 8 || workers.len() < 2 {
            assert!(subs.len() < 64, "64 subscribers all landed on workers {workers:?}");
            let sub = SseClient::open(s, "/sub/order", &[]);
            let w = sub.header("herald-worker").expect("Herald-Worker header on SSE streams").to_string();
            workers.insert(w);
            subs.push(sub);
        }
        let mut p = Publisher::new(s);
        let data: Vec<String> = (0..200).map(|i| format!("o{i}")).collect();
        let ids: Vec<String> = data.iter().map(|d| p.publish("order", d)).collect();
        for (n, sub) in subs.iter_mut().enumerate() {
            let w = sub.header("herald-worker").unwrap().to_string();
            let got = sub.take(200);
            let got_data: Vec<&str> = got.iter().map(|e| e.data.as_str()).collect();
            let got_ids: Vec<&str> = got.iter().map(|e| e.id.as_deref().unwrap_or("")).collect();
            assert_eq!(got_data, data, "subscriber {n} on worker {w}");
            assert_eq!(got_ids, ids, "subscriber {n} on worker {w}");
        }
    });
}

#[test]
fn sse_stalled_reader_is_disconnected_and_others_get_everything() {
    each_driver(2, &["--max-pending-bytes", "65536"], |s| {
        // A subscriber with a tiny receive buffer that never reads.
        let mut stalled = s.connect_with_recv_buffer(4096);
        stalled.set_read_timeout(Some(DEADLINE)).unwrap();
        stalled.write_all(b"GET /sub/slow HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n").unwrap();
        let (status, _) = read_head(&mut stalled).expect("stalled subscriber's head");
        assert_eq!(status, 200);

        let healthy = SseClient::open(s, "/sub/slow", &[]);
        // 6 MiB: more than the largest kernel send buffer (tcp_wmem max 4 MiB) can absorb, so a
        // stalled reader that was not cut off would be able to read all of it.
        let count = 384;
        let size = 16 * 1024;
        let total_bytes = count * size;
        // The publisher keeps at most two events ahead of the healthy reader (well under the
        // 64 KiB cap), so only the stalled one can fall behind.
        let (acked_tx, acked) = std::sync::mpsc::channel::<usize>();
        std::thread::scope(|sc| {
            let reader = sc.spawn(move || {
                let mut healthy = healthy;
                for i in 0..count {
                    let ev =
                        healthy.next_event().unwrap_or_else(|| panic!("healthy subscriber cut off after {i} events"));
                    assert_eq!(ev.data.len(), size);
                    assert!(ev.data.starts_with(&format!("{i:05}:")), "event {i} out of order");
                    let _ = acked_tx.send(i);
                }
            });
            let mut p = Publisher::new(s);
            for i in 0..count {
                if i >= 2 {
                    acked.recv_timeout(DEADLINE).expect("healthy subscriber keeps up");
                }
                let mut d = format!("{i:05}:");
                d.push_str(&"s".repeat(size - d.len()));
                p.publish("slow", &d);
            }
            reader.join().expect("healthy subscriber got every event");
        });

        // The stalled one was closed: draining it now reaches the end before all was delivered.
        let got = wait_closed(&mut stalled, DEADLINE);
        assert!(
            got.len() < total_bytes,
            "stalled subscriber was never cut off: it could still read {} of {total_bytes} bytes",
            got.len()
        );
    });
}

#[test]
fn sse_a_reader_that_falls_behind_gets_everything_once_it_reads() {
    // Under the cap, a reader that stops reading is not cut: its socket fills up, the stream
    // waits for room, and every event arrives in order once it reads again.
    each_driver(2, &["--max-pending-bytes", "33554432"], |s| {
        let sock = s.connect_with_recv_buffer(4096);
        let req = "GET /sub/lag HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n";
        let mut lagging = SseClient::open_on(sock, req).expect("subscribed");
        // 6 MiB, more than the kernel's socket buffers hold, published while it does not read.
        let (count, size) = (384, 16 * 1024);
        let mut p = Publisher::new(s);
        for i in 0..count {
            let mut d = format!("{i:05}:");
            d.push_str(&"l".repeat(size - d.len()));
            p.publish("lag", &d);
        }
        for i in 0..count {
            let ev = lagging.next_event().unwrap_or_else(|| panic!("stream ended after {i} events"));
            assert!(ev.data.starts_with(&format!("{i:05}:")), "event {i} out of order");
            assert_eq!(ev.data.len(), size);
        }
    });
}

#[test]
fn sse_sigterm_ends_streams_and_exits_zero() {
    for driver in drivers() {
        let mut s = Server::with(driver, 2, &[]);
        let mut subs: Vec<SseClient> =
            ["down1", "down2", "down1,down2"].iter().map(|t| SseClient::open(&s, &format!("/sub/{t}"), &[])).collect();
        publish_ok(&s, "down1", "before");
        publish_ok(&s, "down2", "before");
        for sub in subs.iter_mut().take(2) {
            assert_eq!(sub.next_event().expect("event").data, "before");
        }
        assert_eq!(subs[2].take(2).len(), 2);

        let started = Instant::now();
        let status = s.terminate();
        let took = started.elapsed();
        assert!(status.success(), "{driver}: exit status after SIGTERM: {status:?}");
        assert!(took <= Duration::from_secs(5), "{driver}: took {took:?} to exit after SIGTERM");
        for (i, sub) in subs.iter_mut().enumerate() {
            assert!(sub.next_event().is_none(), "{driver}: stream {i} got an event after SIGTERM");
            assert!(sub.ended, "{driver}: stream {i} was not ended with the terminating chunk");
        }
    }
}

#[test]
fn sse_http10_client_gets_a_bare_stream() {
    each_driver(2, &[], |s| {
        let mut c = s.connect();
        c.write_all(b"GET /sub/old HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n").unwrap();
        let (status, headers) = read_head(&mut c).expect("head");
        assert_eq!(status, 200);
        assert!(!headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding")), "{headers:?}");
        let id = publish_ok(s, "old", "one\ntwo");
        let want = format!("retry: 3000\n\nid: {id}\ndata: one\ndata: two\n\n");
        let mut got = vec![0u8; want.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), want);
    });
}

#[test]
fn a_forgotten_topic_resumes_from_its_newest_cursor_without_a_gap() {
    each_driver(2, &["--history-ttl", "0.5"], |s| {
        let mut p = Publisher::new(s);
        let e1 = p.publish("forget", "one");
        let e2 = p.publish("forget", "two");
        // Quiet for two TTLs and unwatched: the topic is forgotten, its tombstone kept.
        wait_until("the topic to be forgotten", || metric(s, "herald_topics") == 0.0);
        let mut newest = SseClient::open(s, "/sub/forget", &[&last_id_header(&e2)]);
        let mut older = SseClient::open(s, "/sub/forget", &[&last_id_header(&e1)]);
        let ev = older.next_event().expect("gap event");
        assert_gap(&ev, "forget");
        let e3 = p.publish("forget", "three");
        let life = |id: &str| id.rsplit_once('-').map(|(epoch, seq)| (epoch.to_string(), seq.to_string()));
        let ((epoch2, _), (epoch3, seq3)) = (life(&e2).expect("id"), life(&e3).expect("id"));
        assert!(epoch3 != epoch2 && seq3 == "1", "the topic's next life: {e2} then {e3}");
        let ev = newest.next_event().expect("event");
        assert_ne!(ev.event.as_deref(), Some("herald.gap"), "the newest cursor missed nothing: {ev:?}");
        assert_eq!((ev.id.as_deref(), ev.data.as_str()), (Some(e3.as_str()), "three"));
        expect_events(&mut older, std::slice::from_ref(&e3), &["three".to_string()]);
        drop((newest, older));
        // Forgotten again: only the last cursor of the life just forgotten resumes without a
        // gap; e2, which missed e3, no longer does.
        wait_until("the topic to be forgotten again", || metric(s, "herald_topics") == 0.0);
        let mut stale = SseClient::open(s, "/sub/forget", &[&last_id_header(&e2)]);
        assert_gap(&stale.next_event().expect("gap event"), "forget");
        let mut newest = SseClient::open(s, "/sub/forget", &[&last_id_header(&e3)]);
        let e4 = p.publish("forget", "four");
        let ev = newest.next_event().expect("event");
        assert_eq!((ev.id.as_deref(), ev.data.as_str()), (Some(e4.as_str()), "four"), "no gap from e3: {ev:?}");
        expect_events(&mut stale, std::slice::from_ref(&e4), &["four".to_string()]);
    });
}

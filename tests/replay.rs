//! Replays larger than a stream renders at once (64 KiB): a multi-topic resume from the first
//! event of every topic is pulled as the socket drains, and the live events published during
//! it come after, each topic in order, nothing lost and nothing twice — on SSE and WebSocket.
mod common;

use common::ws::*;
use common::*;
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;

const TOPICS: [&str; 4] = ["rp-a", "rp-b", "rp-c", "rp-d"];
const EACH: usize = 600;

/// Publishes `n` events of ~200 bytes to every topic; returns every id, per topic.
fn publish_all(s: &Server, from: usize, n: usize) -> HashMap<&'static str, Vec<String>> {
    let mut p = Publisher::new(s);
    let mut ids: HashMap<&str, Vec<String>> = HashMap::new();
    for i in from..from + n {
        for t in TOPICS {
            let data = format!("{t}:{i:05}:{}", "p".repeat(180));
            ids.entry(t).or_default().push(p.publish(t, &data));
        }
    }
    ids
}

/// Checks that the `(topic, data)` pairs received are, per topic, events `1..total` in order.
fn check(got: &[(String, String)], total: usize) {
    for t in TOPICS {
        let seq: Vec<usize> = got
            .iter()
            .filter(|(topic, _)| topic == t)
            .map(|(_, d)| d.split(':').nth(1).expect("seq").parse().expect("number"))
            .collect();
        let want: Vec<usize> = (1..total).collect();
        assert_eq!(seq.len(), want.len(), "{t}: {} events, {} expected", seq.len(), want.len());
        assert!(seq == want, "{t}: events out of order or repeated");
    }
}

#[test]
fn a_large_multi_topic_sse_resume_then_live_events() {
    each_driver(2, &[], |s| {
        let ids = publish_all(s, 0, EACH);
        // Resume after each topic's first event: 4 × 599 events to replay, about 500 KiB.
        let from: Vec<&str> = TOPICS.iter().map(|t| ids[t][0].as_str()).collect();
        // A small receive buffer, so the replay cannot all sit in the kernel's buffers: it is
        // pulled as this client reads.
        let c = s.connect_with_recv_buffer(4096);
        c.set_read_timeout(Some(DEADLINE)).unwrap();
        let head = format!(
            "GET /sub/{} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\nLast-Event-ID: {}\r\n\r\n",
            TOPICS.join(","),
            from.join(",")
        );
        let mut sse = SseClient::open_on(c, &head).unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
        let mut got = Vec::new();
        // Live events come while the replay is being read.
        let first = sse.next_event().expect("the first replayed event");
        got.push(first);
        publish_all(s, EACH, 50);
        got.extend(sse.take(4 * (EACH - 1 + 50) - 1));
        let pairs: Vec<(String, String)> =
            got.iter().map(|e| (e.data.split(':').next().unwrap().to_string(), e.data.clone())).collect();
        check(&pairs, EACH + 50);
        // The last id resumes every topic where the stream stands: nothing more.
        let last = got.last().and_then(|e| e.id.clone()).expect("an id");
        drop(sse);
        let mut again = SseClient::open(s, &format!("/sub/{}", TOPICS.join(",")), &[&format!("Last-Event-ID: {last}")]);
        publish_ok(s, "rp-b", "rp-b:99999:after");
        assert_eq!(again.next_event().expect("the next live event").data, "rp-b:99999:after");
    });
}

#[test]
fn a_large_multi_topic_websocket_resume_then_live_events() {
    each_driver(2, &[], |s| {
        let ids = publish_all(s, 0, EACH);
        let from: Vec<&str> = TOPICS.iter().map(|t| ids[t][0].as_str()).collect();
        let key = fresh_key();
        let mut c = s.connect_with_recv_buffer(4096);
        c.set_read_timeout(Some(DEADLINE)).unwrap();
        let path = format!("/sub/{}?last_event_id={}", TOPICS.join(","), from.join(","));
        c.write_all(upgrade_request(&path, &key, &[]).as_bytes()).unwrap();
        assert_eq!(read_head(&mut c).expect("101").0, 101);
        let mut w = Ws { s: c, partial: None };
        let mut got = Vec::new();
        let v = w.next_json();
        got.push((v["topic"].as_str().unwrap().to_string(), v["data"].as_str().unwrap().to_string()));
        publish_all(s, EACH, 50);
        while got.len() < 4 * (EACH - 1 + 50) {
            let v = w.next_json();
            assert_eq!(v["event"], "message", "{v}");
            got.push((v["topic"].as_str().unwrap().to_string(), v["data"].as_str().unwrap().to_string()));
        }
        check(&got, EACH + 50);
        let v = w.call(json!({"method": "ping", "id": 1}));
        assert_eq!(v["event"], "pong");
    });
}

//! `Idempotency-Key` on a publish (API.md §8, both modes): a retry within `idempotency_ttl` is
//! answered with the original id and `"duplicate":true` and delivered to no one again; the
//! same key for another event is refused (422); keys are per topic; through the header, a
//! batch line's `idempotency_key` and a WebSocket `publish`; racing retries through two
//! workers get one id; bad keys are 400s naming where they were.
mod common;

use common::ws::*;
use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn post(server: &Server, path: &str, headers: &[&str], body: &str) -> Response {
    let mut raw = format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n", body.len());
    for h in headers {
        raw.push_str(h);
        raw.push_str("\r\n");
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    request(server, &raw)
}

fn keyed(server: &Server, topic: &str, key: &str, data: &str) -> Response {
    post(server, &format!("/pub/{topic}"), &[&format!("Idempotency-Key: {key}")], data)
}

/// Reads events from `sse` until one with data `until`, returning the data of all of them.
fn data_until(sse: &mut SseClient, until: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let ev = sse.next_event().expect("an event before the stream ended");
        seen.push(ev.data.clone());
        if ev.data == until {
            return seen;
        }
    }
}

#[test]
fn a_retry_gets_the_first_id_and_is_delivered_to_no_one_again() {
    each_driver(2, &[], |s| {
        let mut sse = SseClient::open(s, "/sub/orders", &[]);
        let mut ws = ws_with(s, "/sub/orders", &[]);
        let first = keyed(s, "orders", "order-7", "shipped");
        assert_eq!(first.status, 200, "{}", first.text());
        assert_eq!(first.json().get("duplicate"), None, "{}", first.text());
        let again = keyed(s, "orders", "order-7", "shipped");
        assert_eq!(again.status, 200, "{}", again.text());
        assert_eq!(again.json()["id"], first.json()["id"], "{}", again.text());
        assert_eq!(again.json()["duplicate"], true, "{}", again.text());
        // Quoted (the IETF draft's structured-field string) is the same key.
        let quoted = keyed(s, "orders", "\"order-7\"", "shipped");
        assert_eq!(quoted.json()["id"], first.json()["id"], "{}", quoted.text());
        publish_ok(s, "orders", "marker");
        assert_eq!(data_until(&mut sse, "marker"), ["shipped", "marker"]);
        let mut got = Vec::new();
        while got.last().map(String::as_str) != Some("marker") {
            let m = ws.next_json();
            if m["event"] == "message" {
                got.push(m["data"].as_str().unwrap_or_default().to_string());
            }
        }
        assert_eq!(got, ["shipped", "marker"]);
        // A resume from before replays it once too.
        let id = first.json()["id"].as_str().unwrap_or_default().to_string();
        let before = format!("{}-0", id.split('-').next().unwrap_or_default());
        let mut replay = SseClient::open(s, &sub_path("orders", Some(&before), ""), &[]);
        assert_eq!(data_until(&mut replay, "marker")[..], ["shipped", "marker"]);
    });
}

#[test]
fn the_same_key_for_another_event_is_refused_and_keys_are_per_topic() {
    each_driver(2, &[], |s| {
        let first = keyed(s, "a", "k1", "one");
        assert_eq!(first.status, 200, "{}", first.text());
        let other = keyed(s, "a", "k1", "two");
        assert_json_error_at(&other, 422, "/headers/idempotency-key", "another event under the key");
        let typed = post(s, "/pub/a?type=t", &["Idempotency-Key: k1"], "one");
        assert_json_error_at(&typed, 422, "/headers/idempotency-key", "another type under the key");
        let elsewhere = keyed(s, "b", "k1", "one");
        assert_eq!(elsewhere.status, 200, "{}", elsewhere.text());
        assert_eq!(elsewhere.json().get("duplicate"), None);
        assert_ne!(elsewhere.json()["id"], first.json()["id"]);
        // The refused one was published nowhere.
        let info = request(s, "GET /topics/a HTTP/1.1\r\nHost: t\r\n\r\n").json();
        assert_eq!(info["history"]["events"], 1, "{info}");
    });
}

#[test]
fn racing_retries_through_both_workers_get_one_id() {
    each_driver(2, &[], |s| {
        for round in 0..5 {
            let key = format!("race-{round}");
            // Sixteen connections (spread over both workers by the kernel) send the same
            // keyed publish at once.
            let raw = format!(
                "POST /pub/race HTTP/1.1\r\nHost: t\r\nIdempotency-Key: {key}\r\nContent-Length: 7\r\n\r\npayload"
            );
            let mut conns: Vec<std::net::TcpStream> = (0..16).map(|_| s.connect()).collect();
            let gate = std::sync::Barrier::new(conns.len());
            let answers: Vec<Value> = std::thread::scope(|scope| {
                let handles: Vec<_> = conns
                    .iter_mut()
                    .map(|c| {
                        let (gate, raw) = (&gate, &raw);
                        scope.spawn(move || {
                            gate.wait();
                            roundtrip(c, raw.as_bytes()).json()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("a publisher thread")).collect()
            });
            let ids: std::collections::HashSet<&str> = answers.iter().filter_map(|a| a["id"].as_str()).collect();
            assert_eq!(ids.len(), 1, "{answers:?}");
            let firsts = answers.iter().filter(|a| a.get("duplicate").is_none()).count();
            assert_eq!(firsts, 1, "exactly one is the first: {answers:?}");
        }
        let info = request(s, "GET /topics/race HTTP/1.1\r\nHost: t\r\n\r\n").json();
        assert_eq!(info["history"]["events"], 5, "{info}");
    });
}

#[test]
fn batch_lines_and_websocket_publishes_take_keys() {
    each_driver(2, &[], |s| {
        let body = "{\"topic\":\"b1\",\"data\":\"x\",\"idempotency_key\":\"L1\"}\n\
                    {\"topic\":\"b2\",\"data\":{\"n\":1},\"idempotency_key\":\"L2\"}\n\
                    {\"topic\":\"b2\",\"data\":\"free\"}\n";
        let ndjson = ["Content-Type: application/x-ndjson"];
        let first = post(s, "/pub", &ndjson, body);
        assert_eq!(first.status, 200, "{}", first.text());
        assert_eq!(first.json().get("duplicate"), None, "{}", first.text());
        let again = post(s, "/pub", &ndjson, body);
        assert_eq!(again.status, 200, "{}", again.text());
        let (a, b) = (first.json(), again.json());
        assert_eq!(a["ids"][0], b["ids"][0]);
        assert_eq!(a["ids"][1], b["ids"][1]);
        assert_ne!(a["ids"][2], b["ids"][2], "a line without a key is published again");
        assert_eq!(b["duplicate"], json!([true, true, false]), "{b}");
        // The key of a batch line and of a single publish are the same key.
        let single = keyed(s, "b1", "L1", "x");
        assert_eq!(single.json()["id"], a["ids"][0]);
        let reused = post(s, "/pub", &ndjson, "{\"topic\":\"b1\",\"data\":\"y\",\"idempotency_key\":\"L1\"}\n");
        assert_json_error_at(&reused, 422, "/line/1/idempotency_key", "a batch line reusing a key");

        let mut ws = ws_with(s, "/sub/elsewhere", &[]);
        let msg = json!({"method":"publish","id":1,"topic":"w","data":"hi","idempotency_key":"W1"});
        let one = ws.call(msg.clone());
        assert_eq!(one["event"], "published", "{one}");
        assert_eq!(one.get("duplicate"), None, "{one}");
        let two = ws.call(msg);
        assert_eq!(two["event_id"], one["event_id"], "{two}");
        assert_eq!(two["duplicate"], true, "{two}");
        let other = json!({"method":"publish","id":2,"topic":"w","data":"bye","idempotency_key":"W1"});
        let refused = ws.call(other.clone());
        assert_errors(&refused, &other, "published", &["/idempotency_key"]);
    });
}

#[test]
fn bad_keys_are_named() {
    each_driver(1, &[], |s| {
        let long = "k".repeat(257);
        for bad in ["", "\"\"", "a b", "caf\u{e9}", long.as_str()] {
            let r = keyed(s, "a", bad, "x");
            assert_json_error_at(&r, 400, "/headers/idempotency-key", &format!("key {bad:?}"));
        }
        assert_eq!(keyed(s, "a", &"k".repeat(256), "x").status, 200);
        let ndjson = ["Content-Type: application/x-ndjson"];
        for line in
            [r#"{"topic":"a","data":"x","idempotency_key":""}"#, r#"{"topic":"a","data":"x","idempotency_key":7}"#]
        {
            let r = post(s, "/pub", &ndjson, &format!("{{\"topic\":\"a\",\"data\":\"ok\"}}\n{line}\n"));
            assert_json_error_at(&r, 400, "/line/2/idempotency_key", line);
        }
        let mut ws = ws_with(s, "/sub/elsewhere", &[]);
        let msg = json!({"method":"publish","id":1,"topic":"w","data":"x","idempotency_key":["k"]});
        let r = ws.call(msg.clone());
        assert_errors(&r, &msg, "published", &["/idempotency_key"]);
        // None of them published anything.
        let info = request(s, "GET /topics/w HTTP/1.1\r\nHost: t\r\n\r\n").json();
        assert_eq!(info["history"]["events"], 0, "{info}");
    });
}

#[test]
fn a_key_is_forgotten_after_its_ttl_and_within_the_bound() {
    each_driver(2, &["--idempotency-ttl", "1", "--max-idempotency-keys", "200"], |s| {
        let started = Instant::now();
        let first = keyed(s, "t", "k", "x").json();
        let mut again;
        loop {
            again = keyed(s, "t", "k", "x").json();
            if again.get("duplicate").is_none() {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the key never expired");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(started.elapsed() >= Duration::from_millis(900), "expired after {:?}", started.elapsed());
        assert_ne!(again["id"], first["id"]);
        // Past the bound (100 per worker) the oldest keys go first, counted.
        for i in 0..400 {
            let r = keyed(s, &format!("many{}", i % 7), &format!("k{i}"), "x");
            assert_eq!(r.status, 200, "{}", r.text());
        }
        // Each of the two owners keeps its share, 100: together never more than the bound.
        assert!(metric(s, "herald_idempotency_keys") <= 200.0);
        assert!(metric(s, "herald_idempotency_keys_dropped_total") >= 200.0);
    });
}

#[test]
fn seed_routes_publish_every_request() {
    // The seed APIs never had the header; their events carry server-made timestamps, so a
    // retry is a different event. The header is ignored there, not an error.
    each_driver(1, &[], |s| {
        let body = r#"{"event":{"type":"ORDER_SHIPPED","body":{"id":7}}}"#;
        let headers = ["Member-ID: m1", "Idempotency-Key: k", "Content-Type: application/json"];
        let one = post(s, "/events", &headers, body);
        assert_eq!(one.status, 200, "{}", one.text());
        let two = post(s, "/events", &headers, body);
        assert_eq!(two.status, 200, "{}", two.text());
        assert_ne!(one.json()["id"], two.json()["id"]);
    });
}

// From an outside attack on the first version.

#[test]
fn a_batch_refused_for_a_reused_key_says_which_lines_went_out() {
    each_driver(2, &[], |s| {
        let mut sse = SseClient::open(s, "/sub/bt", &[]);
        assert_eq!(keyed(s, "bt", "dup", "orig").status, 200);
        let ndjson = ["Content-Type: application/x-ndjson"];
        let body = "{\"topic\":\"bt\",\"data\":\"line1\"}\n\
                    {\"topic\":\"bt\",\"data\":\"CHANGED\",\"idempotency_key\":\"dup\"}\n\
                    {\"topic\":\"bt\",\"data\":\"line3\"}\n";
        let r = post(s, "/pub", &ndjson, body);
        assert_json_error_at(&r, 422, "/line/2/idempotency_key", "a line reusing a key");
        let v = r.json();
        let ids = v["ids"].as_array().expect("ids in the refusal");
        assert!(ids[0].is_string() && ids[1].is_null() && ids[2].is_string(), "{v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("published")), "{v}");
        publish_ok(s, "bt", "marker");
        assert_eq!(data_until(&mut sse, "marker"), ["orig", "line1", "line3", "marker"]);
        // Within one batch, a key given twice with two events publishes nothing.
        let body = "{\"topic\":\"bt\",\"data\":\"P\",\"idempotency_key\":\"m1\"}\n\
                    {\"topic\":\"bt\",\"data\":\"Q\",\"idempotency_key\":\"m1\"}\n";
        let r = post(s, "/pub", &ndjson, body);
        assert_json_error_at(&r, 400, "/line/2/idempotency_key", "a key twice in one batch");
        // Twice with the same event is a retry inside the batch.
        let body = "{\"topic\":\"bt\",\"data\":\"P\",\"idempotency_key\":\"m1\"}\n\
                    {\"topic\":\"bt\",\"data\":\"P\",\"idempotency_key\":\"m1\"}\n";
        let v = post(s, "/pub", &ndjson, body).json();
        assert_eq!(v["ids"][0], v["ids"][1], "{v}");
        assert_eq!(v["duplicate"], json!([false, true]), "{v}");
        publish_ok(s, "bt", "marker2");
        assert_eq!(data_until(&mut sse, "marker2"), ["P", "marker2"]);
    });
}

#[test]
fn two_key_fields_are_refused_and_json_keys_are_not_trimmed() {
    each_driver(1, &[], |s| {
        let r = post(s, "/pub/a", &["Idempotency-Key: k1", "Idempotency-Key: k2"], "x");
        assert_json_error_at(&r, 400, "/headers/idempotency-key", "two Idempotency-Key fields");
        let ndjson = ["Content-Type: application/x-ndjson"];
        for key in [" q ", "\\tq", "q\\n"] {
            let line = format!("{{\"topic\":\"a\",\"data\":\"x\",\"idempotency_key\":\"{key}\"}}\n");
            let r = post(s, "/pub", &ndjson, &line);
            assert_json_error_at(&r, 400, "/line/1/idempotency_key", key);
        }
    });
}

#[test]
fn a_publisher_flooding_its_topic_with_keys_does_not_push_out_other_topics_keys() {
    // One worker, so every topic shares one owner's 300 keys.
    each_driver(1, &["--max-idempotency-keys", "300"], |s| {
        let firsts: Vec<Value> = (0..8).map(|i| keyed(s, &format!("tenant{i}"), "order-7", "shipped").json()).collect();
        let ndjson = ["Content-Type: application/x-ndjson"];
        let body: String = (0..2000)
            .map(|i| format!("{{\"topic\":\"flood\",\"data\":\"x\",\"idempotency_key\":\"f{i}\"}}\n"))
            .collect();
        assert_eq!(post(s, "/pub", &ndjson, &body).status, 200);
        for (i, first) in firsts.iter().enumerate() {
            let again = keyed(s, &format!("tenant{i}"), "order-7", "shipped").json();
            assert_eq!(again["id"], first["id"], "tenant{i}: {again}");
            assert_eq!(again["duplicate"], true, "tenant{i}: {again}");
        }
        assert!(metric(s, "herald_idempotency_keys") <= 300.0);
    });
}

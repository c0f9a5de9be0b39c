//! Publishing (API.md §2, §7): the `{"id","topic"}` reply, event types, validation of topics, types and UTF-8, distinct ids, and the NDJSON batch form with whole-batch rejection.
mod common;

use common::*;
use std::collections::HashSet;

/// A raw `POST {path}` with extra header lines and a byte body, on a fresh connection.
fn post(server: &Server, path: &str, headers: &[&str], body: &[u8]) -> Response {
    let mut raw = format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n", body.len()).into_bytes();
    for h in headers {
        raw.extend_from_slice(h.as_bytes());
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(body);
    let mut s = server.connect();
    roundtrip(&mut s, &raw)
}

/// `POST /pub` with an NDJSON body.
fn batch(server: &Server, body: &str) -> Response {
    post(server, "/pub", &["Content-Type: application/x-ndjson"], body.as_bytes())
}

#[test]
fn publish_returns_id_and_topic() {
    each_driver(2, &[], |s| {
        let r = publish(s, "news", "hello");
        assert_eq!(r.status, 200, "{}", r.text());
        let ct = r.header("content-type").unwrap_or("").to_ascii_lowercase();
        assert!(ct.starts_with("application/json"), "Content-Type {ct:?}");
        let v = r.json();
        assert!(v["id"].as_str().is_some_and(|id| !id.is_empty()), "id must be a non-empty string: {v}");
        assert_eq!(v["topic"], "news", "{v}");
    });
}

#[test]
fn publish_type_from_query_parameter() {
    each_driver(2, &[], |s| {
        let mut sub = SseClient::open(s, "/sub/typed", &[]);
        let r = post(s, "/pub/typed?type=greeting", &[], b"hi");
        assert_eq!(r.status, 200, "{}", r.text());
        let ev = sub.next_event().expect("event");
        assert_eq!(ev.event.as_deref(), Some("greeting"));
        assert_eq!(ev.data, "hi");
        assert_eq!(ev.id.as_deref(), r.json()["id"].as_str());
    });
}

#[test]
fn publish_type_from_event_type_header() {
    each_driver(2, &[], |s| {
        let mut sub = SseClient::open(s, "/sub/typed", &[]);
        let r = post(s, "/pub/typed", &["Event-Type: status.changed"], b"on");
        assert_eq!(r.status, 200, "{}", r.text());
        let r2 = post(s, "/pub/typed", &[], b"plain");
        assert_eq!(r2.status, 200, "{}", r2.text());
        let ev = sub.next_event().expect("typed event");
        assert_eq!(ev.event.as_deref(), Some("status.changed"));
        assert_eq!(ev.data, "on");
        let ev = sub.next_event().expect("untyped event");
        assert_eq!(ev.event, None, "an untyped publish has no event: line");
        assert_eq!(ev.data, "plain");
    });
}

#[test]
fn invalid_topic_is_400() {
    each_driver(2, &[], |s| {
        let long = "t".repeat(129);
        for topic in ["a%20b", "a/b", long.as_str(), "a!b", "a%C3%A4b", "a,b", "a%2Fb"] {
            let r = post(s, &format!("/pub/{topic}"), &[], b"x");
            assert_json_error(&r, 400);
        }
    });
}

#[test]
fn topic_edge_cases_are_accepted() {
    each_driver(2, &[], |s| {
        let max = "t".repeat(128);
        for topic in [max.as_str(), "Az09_.:@-", "user:42", "group:Marketing", "x"] {
            let r = post(s, &format!("/pub/{topic}"), &[], b"x");
            assert_eq!(r.status, 200, "topic {topic:?}: {}", r.text());
            assert_eq!(r.json()["topic"], topic);
        }
    });
}

#[test]
fn invalid_type_is_400() {
    each_driver(2, &[], |s| {
        let long = "y".repeat(65);
        for ty in ["a%20b", "a@b", "a/b", long.as_str()] {
            let r = post(s, &format!("/pub/ok?type={ty}"), &[], b"x");
            assert_json_error(&r, 400);
        }
        for header in ["Event-Type: a b", "Event-Type: a@b", &format!("Event-Type: {long}")] {
            let r = post(s, "/pub/ok", &[header], b"x");
            assert_json_error(&r, 400);
        }
        // 64 characters is the maximum.
        let r = post(s, &format!("/pub/ok?type={}", "y".repeat(64)), &[], b"x");
        assert_eq!(r.status, 200, "{}", r.text());
    });
}

#[test]
fn invalid_utf8_body_is_400() {
    each_driver(2, &[], |s| {
        for body in [&b"\xff\xfe"[..], b"ok\xe2\x82", b"\xc0\xaf", b"a\xed\xa0\x80b"] {
            let r = post(s, "/pub/utf", &[], body);
            assert_json_error(&r, 400);
        }
    });
}

#[test]
fn utf8_body_is_delivered_verbatim() {
    each_driver(2, &[], |s| {
        let mut sub = SseClient::open(s, "/sub/utf", &[]);
        let data = "héllo € 😀 \"quoted\" {json}";
        publish_ok(s, "utf", data);
        assert_eq!(sub.next_event().expect("event").data, data);
    });
}

#[test]
fn consecutive_publish_ids_are_distinct() {
    each_driver(2, &[], |s| {
        let mut p = Publisher::new(s);
        let ids: Vec<String> = (0..20).map(|i| p.publish("seq", &format!("{i}"))).collect();
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "ids repeat: {ids:?}");
    });
}

#[test]
fn batch_returns_one_id_per_line_and_delivers_in_order() {
    each_driver(2, &[], |s| {
        let mut a = SseClient::open(s, "/sub/ba", &[]);
        let mut b = SseClient::open(s, "/sub/bb", &[]);
        let body = concat!(
            "{\"topic\":\"ba\",\"data\":\"first\"}\n",
            "{\"topic\":\"bb\",\"type\":\"t1\",\"data\":\"other topic\"}\n",
            "{\"topic\":\"ba\",\"type\":\"kind\",\"data\":\"second\"}\n",
            "{\"topic\":\"ba\",\"data\":\"multi\\nline\"}\n",
        );
        let r = batch(s, body);
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let ids: Vec<String> = v["ids"]
            .as_array()
            .unwrap_or_else(|| panic!("no ids array: {v}"))
            .iter()
            .map(|i| i.as_str().expect("id string").to_string())
            .collect();
        assert_eq!(ids.len(), 4, "one id per line: {v}");
        // Cursors are per topic, so only the ids of one topic must differ.
        let ba: HashSet<&String> = [&ids[0], &ids[2], &ids[3]].into_iter().collect();
        assert_eq!(ba.len(), 3, "ids of one topic are distinct: {v}");

        let evs = a.take(3);
        assert_eq!(evs[0].data, "first");
        assert_eq!(evs[0].event, None);
        assert_eq!(evs[0].id.as_deref(), Some(ids[0].as_str()));
        assert_eq!(evs[1].data, "second");
        assert_eq!(evs[1].event.as_deref(), Some("kind"));
        assert_eq!(evs[1].id.as_deref(), Some(ids[2].as_str()));
        assert_eq!(evs[2].data, "multi\nline");
        assert_eq!(evs[2].id.as_deref(), Some(ids[3].as_str()));
        let ev = b.next_event().expect("bb event");
        assert_eq!(ev.data, "other topic");
        assert_eq!(ev.event.as_deref(), Some("t1"));
        assert_eq!(ev.id.as_deref(), Some(ids[1].as_str()));
    });
}

#[test]
fn batch_non_string_data_is_sent_as_compact_json() {
    each_driver(2, &[], |s| {
        let mut sub = SseClient::open(s, "/sub/bj", &[]);
        let body = concat!(
            "{\"topic\": \"bj\", \"data\": {\"a\": 1, \"b\": [true, null, \"x y\"]}}\n",
            "{\"topic\": \"bj\", \"data\": 42}\n",
            "{\"topic\": \"bj\", \"data\": [1, 2,  3]}\n",
            "{\"topic\": \"bj\", \"data\": true}\n",
            "{\"topic\": \"bj\", \"data\": \"{\\\"a\\\": 1}\"}\n",
        );
        let r = batch(s, body);
        assert_eq!(r.status, 200, "{}", r.text());
        let got: Vec<String> = sub.take(5).into_iter().map(|e| e.data).collect();
        assert_eq!(
            got,
            [
                r#"{"a":1,"b":[true,null,"x y"]}"#,
                "42",
                "[1,2,3]",
                "true",
                r#"{"a": 1}"#, // a string is sent verbatim, even if it looks like JSON
            ]
        );
    });
}

#[test]
fn batch_with_a_bad_line_is_rejected_whole_naming_the_line() {
    each_driver(2, &["--max-event-bytes", "1024"], |s| {
        let mut sub = SseClient::open(s, "/sub/bb", &[]);
        let good = "{\"topic\":\"bb\",\"data\":\"good\"}";
        let too_big = format!("{{\"topic\":\"bb\",\"data\":\"{}\"}}", "z".repeat(1025));
        let cases: Vec<(&str, Vec<String>, usize)> = vec![
            ("bad topic", vec![good.into(), r#"{"topic":"a b","data":"x"}"#.into(), good.into()], 2),
            ("missing topic", vec![r#"{"data":"x"}"#.into(), good.into(), good.into()], 1),
            ("not JSON", vec![good.into(), good.into(), "this is not json".into()], 3),
            ("data over max-event-bytes", vec![good.into(), too_big.clone(), good.into()], 2),
            ("bad type", vec![good.into(), r#"{"topic":"bb","type":"no spaces","data":"x"}"#.into()], 2),
            ("topic not a string", vec![good.into(), good.into(), r#"{"topic":7,"data":"x"}"#.into()], 3),
        ];
        for (i, (what, lines, bad)) in cases.into_iter().enumerate() {
            let body = lines.join("\n") + "\n";
            let r = batch(s, &body);
            assert_json_error(&r, 400);
            let v = r.json();
            assert_eq!(v["error"]["path"], format!("/line/{bad}"), "{what}: {v}");
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(msg.contains(&bad.to_string()), "{what}: message should name line {bad}: {msg:?}");

            // Nothing of the rejected batch was delivered: the next publish is the next event.
            let marker = format!("after-{i}");
            let id = publish_ok(s, "bb", &marker);
            let ev = sub.next_event().expect("event");
            assert_eq!(ev.data, marker, "{what}: an event from the rejected batch was delivered");
            assert_eq!(ev.id.as_deref(), Some(id.as_str()));
        }

        // Data of exactly max-event-bytes is a good line.
        let exact = format!("{{\"topic\":\"bb\",\"data\":\"{}\"}}\n", "z".repeat(1024));
        let r = batch(s, &exact);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(sub.next_event().expect("event").data.len(), 1024);
    });
}

//! The HTTP/1.1 layer (API.md §2, §5, §6, §7): keep-alive, pipelining, HTTP/1.0, request bodies, 100-continue, size limits, malformed input, routing errors, head timeout and the connection cap.
mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";

fn pub_req(topic: &str, body: &str) -> String {
    format!("POST /pub/{topic} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len())
}

fn assert_healthz_ok(r: &Response) {
    assert_eq!(r.status, 200, "healthz: {} {:?}", r.status, r.text());
    assert_eq!(r.text().trim_end(), "ok");
}

/// Writes `raw` ignoring errors (the server may stop reading once it has decided).
fn write_lossy(s: &mut TcpStream, raw: &[u8]) {
    let _ = s.write_all(raw);
}

/// Sends `raw` on a fresh connection, expects a 400 with the JSON error body, then the close.
fn assert_400_and_closed(server: &Server, raw: &[u8]) {
    let mut s = server.connect();
    write_lossy(&mut s, raw);
    let what = String::from_utf8_lossy(raw).into_owned();
    let r = read_response(&mut s).unwrap_or_else(|| panic!("no response to {what:?}"));
    assert_eq!(r.status, 400, "request {what:?} → {} {:?}", r.status, r.text());
    assert_json_error(&r, 400);
    let rest = wait_closed(&mut s, DEADLINE);
    assert!(
        rest.is_empty(),
        "after the 400 to {what:?} the connection must close, but got {:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// Subscribes to `topic`, sends the raw publish request in `pieces`, and returns the
/// publish response and the data the subscriber received.
fn publish_pieces(server: &Server, topic: &str, pieces: &[&[u8]], pause: bool) -> (Response, String) {
    let mut sub = SseClient::open(server, &format!("/sub/{topic}"), &[]);
    let mut s = server.connect();
    for p in pieces {
        s.write_all(p).expect("write piece");
        s.flush().unwrap();
        if pause {
            // Not synchronisation: just lets each piece leave as its own segment.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let r = read_response(&mut s).expect("publish response");
    assert_eq!(r.status, 200, "publish: {} {:?}", r.status, r.text());
    let ev = sub.next_event().expect("event delivered");
    assert_eq!(ev.id.as_deref(), r.json()["id"].as_str(), "SSE id is the publish cursor");
    (r, ev.data)
}

/// Splits `raw` into pieces of 1..=3 bytes.
fn small_pieces(raw: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut n = 1;
    while i < raw.len() {
        let end = (i + n).min(raw.len());
        out.push(&raw[i..end]);
        i = end;
        n = n % 3 + 1;
    }
    out
}

// ---------------------------------------------------------------- connection reuse

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    each_driver(2, &[], |s| {
        let mut c = s.connect();
        for i in 0..3 {
            assert_healthz_ok(&roundtrip(&mut c, HEALTHZ.as_bytes()));
            let r = roundtrip(&mut c, pub_req("ka", &format!("n{i}")).as_bytes());
            assert_eq!(r.status, 200, "publish #{i} on a kept-alive connection: {}", r.text());
            assert_eq!(r.json()["topic"], "ka");
        }
    });
}

#[test]
fn pipelined_requests_get_responses_in_order() {
    each_driver(2, &[], |s| {
        let mut c = s.connect();
        let raw = format!("{}{}{}", pub_req("pipe1", "one"), HEALTHZ, pub_req("pipe3", "three"));
        c.write_all(raw.as_bytes()).unwrap();
        let r1 = read_response(&mut c).expect("first response");
        let r2 = read_response(&mut c).expect("second response");
        let r3 = read_response(&mut c).expect("third response");
        assert_eq!(r1.status, 200, "{}", r1.text());
        assert_eq!(r1.json()["topic"], "pipe1");
        assert_healthz_ok(&r2);
        assert_eq!(r3.status, 200, "{}", r3.text());
        assert_eq!(r3.json()["topic"], "pipe3");
        // and the connection is still usable
        assert_healthz_ok(&roundtrip(&mut c, HEALTHZ.as_bytes()));
    });
}

/// A long pipelined burst (more publishes than the server takes in before answering) with a
/// bad publish and another request inside: every answer in order, and the events in the
/// order they were sent.
#[test]
fn a_pipelined_burst_of_publishes_is_answered_and_delivered_in_order() {
    each_driver(2, &[], |s| {
        let mut sub_a = SseClient::open(s, "/sub/burst-a", &[]);
        let mut sub_b = SseClient::open(s, "/sub/burst-b", &[]);
        let mut raw = String::new();
        for i in 0..300 {
            raw += &match i {
                150 => pub_req("bad%20topic", "x"),
                200 => HEALTHZ.to_string(),
                _ => pub_req(if i % 2 == 0 { "burst-a" } else { "burst-b" }, &i.to_string()),
            };
        }
        let mut c = s.connect();
        c.write_all(raw.as_bytes()).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..300 {
            let r = read_response(&mut c).unwrap_or_else(|| panic!("response {i}"));
            match i {
                150 => assert_json_error_at(&r, 400, "/topic", "invalid topic"),
                200 => assert_healthz_ok(&r),
                _ => {
                    assert_eq!(r.status, 200, "response {i}: {}", r.text());
                    let topic = if i % 2 == 0 { "burst-a" } else { "burst-b" };
                    assert_eq!(r.json()["topic"], topic, "response {i}");
                    let id = r.json()["id"].as_str().expect("an id").to_string();
                    if i % 2 == 0 { a.push((i, id)) } else { b.push((i, id)) }
                }
            }
        }
        for (sub, sent) in [(&mut sub_a, a), (&mut sub_b, b)] {
            for (i, id) in sent {
                let ev = sub.next_event().unwrap_or_else(|| panic!("event {i}"));
                assert_eq!((ev.data.as_str(), ev.id.as_deref()), (i.to_string().as_str(), Some(id.as_str())));
            }
        }
        assert_healthz_ok(&roundtrip(&mut c, HEALTHZ.as_bytes()));
    });
}

#[test]
fn http10_request_is_answered_then_closed() {
    each_driver(2, &[], |s| {
        let mut c = s.connect();
        c.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
        let r = read_response(&mut c).expect("response to HTTP/1.0");
        assert_healthz_ok(&r);
        assert!(r.header("transfer-encoding").is_none(), "no chunked replies to HTTP/1.0: {:?}", r.headers);
        let rest = wait_closed(&mut c, DEADLINE);
        assert!(rest.is_empty(), "unexpected bytes after the response: {rest:?}");

        // A publish with a body over HTTP/1.0 works as well.
        let mut c = s.connect();
        c.write_all(b"POST /pub/old HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc").unwrap();
        let r = read_response(&mut c).expect("publish over HTTP/1.0");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["topic"], "old");
        wait_closed(&mut c, DEADLINE);
    });
}

#[test]
fn http10_keep_alive_keeps_the_connection() {
    each_driver(2, &[], |s| {
        let mut c = s.connect();
        let req = b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
        for _ in 0..2 {
            c.write_all(req).unwrap();
            let r = read_response(&mut c).expect("response on kept-alive HTTP/1.0 connection");
            assert_healthz_ok(&r);
            assert!(r.header("content-length").is_some(), "keep-alive needs a length: {:?}", r.headers);
            assert!(
                r.header("connection").is_some_and(|v| v.to_ascii_lowercase().contains("keep-alive")),
                "HTTP/1.0 keep-alive response must say Connection: keep-alive: {:?}",
                r.headers
            );
        }
    });
}

#[test]
fn connection_close_closes_after_the_response() {
    each_driver(2, &[], |s| {
        let mut c = s.connect();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        let r = read_response(&mut c).expect("response");
        assert_healthz_ok(&r);
        wait_closed(&mut c, DEADLINE);
    });
}

// ---------------------------------------------------------------- request bodies

#[test]
fn content_length_body_is_the_event_data() {
    each_driver(2, &[], |s| {
        let raw = pub_req("cl", "hello world");
        let (_, data) = publish_pieces(s, "cl", &[raw.as_bytes()], false);
        assert_eq!(data, "hello world");
    });
}

#[test]
fn content_length_body_fed_in_small_pieces() {
    each_driver(2, &[], |s| {
        let raw = pub_req("clp", "piece by piece");
        let (_, data) = publish_pieces(s, "clp", &small_pieces(raw.as_bytes()), true);
        assert_eq!(data, "piece by piece");
    });
}

#[test]
fn chunked_body_is_decoded() {
    each_driver(2, &[], |s| {
        let raw = "POST /pub/ch HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
                   3\r\nhel\r\n3\r\nlo \r\nA\r\nchunked!!!\r\n0\r\n\r\n";
        let (_, data) = publish_pieces(s, "ch", &[raw.as_bytes()], false);
        assert_eq!(data, "hello chunked!!!");
    });
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    each_driver(2, &[], |s| {
        let raw = "POST /pub/chx HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
                   5;name=value\r\nhello\r\n1;a=b;c\r\n!\r\n0;last\r\nX-Trailer: yes\r\nX-Other: 1\r\n\r\n";
        let (_, data) = publish_pieces(s, "chx", &[raw.as_bytes()], false);
        assert_eq!(data, "hello!");
    });
}

#[test]
fn chunked_body_fed_in_small_pieces() {
    each_driver(2, &[], |s| {
        let raw = "POST /pub/chp HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
                   4;ext=1\r\ndrip\r\n6\r\n-feed!\r\n0\r\nX-T: v\r\n\r\n";
        let (_, data) = publish_pieces(s, "chp", &small_pieces(raw.as_bytes()), true);
        assert_eq!(data, "drip-feed!");
    });
}

#[test]
fn chunked_body_then_next_request_on_same_connection() {
    each_driver(2, &[], |s| {
        let mut c = s.connect();
        let raw = "POST /pub/chk HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
                   2\r\nok\r\n0\r\nTrailer-A: 1\r\n\r\n";
        let r = roundtrip(&mut c, raw.as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_healthz_ok(&roundtrip(&mut c, HEALTHZ.as_bytes()));
    });
}

// ---------------------------------------------------------------- 100-continue

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    each_driver(2, &[], |s| {
        let mut sub = SseClient::open(s, "/sub/cont", &[]);
        let mut c = s.connect();
        c.write_all(b"POST /pub/cont HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            .unwrap();
        let (status, _) = read_head(&mut c).expect("an interim response before the body is sent");
        assert_eq!(status, 100, "expected HTTP/1.1 100 Continue before the body");
        c.write_all(b"howdy").unwrap();
        let r = read_response(&mut c).expect("final response");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(sub.next_event().expect("event").data, "howdy");
    });
}

#[test]
fn expect_100_continue_with_too_large_length_gets_413_without_100() {
    each_driver(2, &["--max-event-bytes", "1024"], |s| {
        let mut c = s.connect();
        c.write_all(b"POST /pub/cont HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
            .unwrap();
        let r = read_response(&mut c).expect("a response without sending the body");
        assert_ne!(r.status, 100, "must not invite a body it will refuse");
        assert_json_error(&r, 413);
        wait_closed(&mut c, DEADLINE); // sent before closing
    });
}

// ---------------------------------------------------------------- size limits

#[test]
fn body_over_max_event_bytes_is_413_before_the_body_is_sent() {
    each_driver(2, &["--max-event-bytes", "1024"], |s| {
        // Exactly the limit is fine.
        let body = "x".repeat(1024);
        let mut c = s.connect();
        let r = roundtrip(&mut c, pub_req("big", &body).as_bytes());
        assert_eq!(r.status, 200, "a body of exactly max-event-bytes is allowed: {}", r.text());

        // One past it is refused on the declared length alone.
        let mut c = s.connect();
        c.write_all(b"POST /pub/big HTTP/1.1\r\nHost: t\r\nContent-Length: 1025\r\n\r\n").unwrap();
        let r = read_response(&mut c).expect("413 without the body being sent");
        assert_json_error(&r, 413);
        wait_closed(&mut c, DEADLINE); // sent before closing
    });
}

#[test]
fn chunked_body_over_max_event_bytes_is_413() {
    each_driver(2, &["--max-event-bytes", "1024"], |s| {
        let mut c = s.connect();
        let mut raw = b"POST /pub/big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..5 {
            raw.extend_from_slice(b"200\r\n");
            raw.extend_from_slice(&[b'y'; 0x200]);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\n\r\n");
        write_lossy(&mut c, &raw);
        let r = read_response(&mut c).expect("a response to an oversized chunked body");
        assert_json_error(&r, 413);
        wait_closed(&mut c, DEADLINE); // sent before closing
    });
}

#[test]
fn head_just_under_16k_is_accepted() {
    each_driver(2, &[], |s| {
        let raw = format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "a".repeat(15_000));
        assert_healthz_ok(&request(s, &raw));
    });
}

#[test]
fn one_huge_header_is_431() {
    each_driver(2, &[], |s| {
        let raw = format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
        let mut c = s.connect();
        write_lossy(&mut c, raw.as_bytes());
        let r = read_response(&mut c).expect("431 response");
        assert_json_error(&r, 431);
        wait_closed(&mut c, DEADLINE); // sent before closing
    });
}

#[test]
fn many_small_headers_over_16k_is_431() {
    each_driver(2, &[], |s| {
        let mut raw = String::from("GET /healthz HTTP/1.1\r\nHost: t\r\n");
        for i in 0..700 {
            raw.push_str(&format!("X-H-{i:04}: vvvvvvvvvvvvvvvvvv\r\n"));
        }
        raw.push_str("\r\n");
        assert!(raw.len() > 16 * 1024);
        let mut c = s.connect();
        write_lossy(&mut c, raw.as_bytes());
        let r = read_response(&mut c).expect("431 response");
        assert_json_error(&r, 431);
        wait_closed(&mut c, DEADLINE); // sent before closing
    });
}

// ---------------------------------------------------------------- malformed → 400 + close

#[test]
fn garbage_request_line_is_400_and_closed() {
    each_driver(2, &[], |s| {
        assert_400_and_closed(s, b"this is not http at all\r\n\r\n");
        assert_400_and_closed(s, b"GET\r\n\r\n");
    });
}

#[test]
fn content_length_with_transfer_encoding_is_400_and_closed() {
    each_driver(2, &[], |s| {
        assert_400_and_closed(
            s,
            b"POST /pub/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        );
    });
}

#[test]
fn duplicate_content_length_is_400_and_closed() {
    each_driver(2, &[], |s| {
        assert_400_and_closed(
            s,
            b"POST /pub/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        );
        assert_400_and_closed(
            s,
            b"POST /pub/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 3\r\n\r\nhello",
        );
    });
}

#[test]
fn non_numeric_content_length_is_400_and_closed() {
    each_driver(2, &[], |s| {
        for cl in ["+5", "5x", "-1", "0x5", " ", "5 5"] {
            let raw = format!("POST /pub/x HTTP/1.1\r\nHost: t\r\nContent-Length: {cl}\r\n\r\nhello");
            assert_400_and_closed(s, raw.as_bytes());
        }
    });
}

#[test]
fn bad_chunk_size_is_400_and_closed() {
    each_driver(2, &[], |s| {
        for size in ["zz", "10000000000000000", "ffffffffffffffffff"] {
            let raw = format!(
                "POST /pub/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nhello\r\n0\r\n\r\n"
            );
            assert_400_and_closed(s, raw.as_bytes());
        }
    });
}

#[test]
fn obs_fold_header_continuation_is_400_and_closed() {
    each_driver(2, &[], |s| {
        assert_400_and_closed(s, b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n  continued\r\n\r\n");
        assert_400_and_closed(s, b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n\tcontinued\r\n\r\n");
    });
}

#[test]
fn bare_lf_in_head_is_400_and_closed() {
    each_driver(2, &[], |s| {
        assert_400_and_closed(s, b"GET /healthz HTTP/1.1\nHost: t\n\n");
        assert_400_and_closed(s, b"GET /healthz HTTP/1.1\r\nHost: t\nX-A: b\r\n\r\n");
    });
}

// ---------------------------------------------------------------- routing

#[test]
fn healthz_is_200_ok() {
    each_driver(2, &[], |s| {
        assert_healthz_ok(&request(s, HEALTHZ));
    });
}

#[test]
fn unknown_path_is_404_with_json_error() {
    each_driver(2, &[], |s| {
        let r = request(s, "GET /definitely/not/here HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_json_error(&r, 404);
        let r = request(s, "POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
        assert_json_error(&r, 404);
    });
}

#[test]
fn wrong_method_is_405_with_allow() {
    each_driver(2, &[], |s| {
        let cases = [
            ("GET /pub/x HTTP/1.1\r\nHost: t\r\n\r\n", "POST"),
            ("DELETE /sub/x HTTP/1.1\r\nHost: t\r\n\r\n", "GET"),
            ("POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", "GET"),
        ];
        for (raw, allowed) in cases {
            let r = request(s, raw);
            assert_json_error(&r, 405);
            let allow =
                r.header("allow").unwrap_or_else(|| panic!("405 to {raw:?} lacks an Allow header: {:?}", r.headers));
            assert!(allow.split(',').any(|m| m.trim() == allowed), "Allow {allow:?} for {raw:?} should list {allowed}");
        }
    });
}

// ---------------------------------------------------------------- slow heads and connection cap

/// If a timed-out connection got a response before the close, it must be a JSON error.
fn check_optional_error(what: &str, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: not an HTTP response before the close: {text:?}"));
    assert!(status >= 400, "{what}: timeout answered with {status}: {text:?}");
    let v: serde_json::Value =
        serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{what}: error body is not JSON ({e}): {body:?}"));
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {v}");
    assert!(v["error"]["path"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {v}");
}

#[test]
fn head_timeout_closes_idle_partial_and_dripping_connections() {
    each_driver(2, &["--head-timeout", "1"], |s| {
        let mut sse = SseClient::open(s, "/sub/ht", &[]);
        let start = Instant::now();
        let within = Duration::from_secs(6);

        let mut idle = s.connect();
        let mut partial = s.connect();
        partial.write_all(b"GET /healthz HTTP/1.1\r\nHost:").unwrap();
        let mut drip = s.connect();
        drip.write_all(b"GET /healthz HTTP/1.1\r\nX-Drip: ").unwrap();
        let mut drip_writer = drip.try_clone().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let dripper = std::thread::spawn(move || {
            let limit = Instant::now() + DEADLINE;
            while !stop2.load(Ordering::Relaxed) && Instant::now() < limit {
                if drip_writer.write_all(b"a").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });

        // Meanwhile a normal request on another connection is served.
        assert_healthz_ok(&request(s, HEALTHZ));

        for (name, conn) in [("idle", &mut idle), ("partial head", &mut partial), ("dripping head", &mut drip)] {
            let left = (start + within).saturating_duration_since(Instant::now());
            let got = wait_closed(conn, left.max(Duration::from_millis(1)));
            check_optional_error(name, &got);
            // A head begun and not finished is answered 408 (an outside review found it cut
            // without a word); a connection that sent nothing is just closed.
            let expected = if name == "idle" { "" } else { "HTTP/1.1 408 " };
            assert!(String::from_utf8_lossy(&got).starts_with(expected), "{name}: {:?}", String::from_utf8_lossy(&got));
            assert_eq!(got.is_empty(), name == "idle", "{name}");
        }
        stop.store(true, Ordering::Relaxed);
        dripper.join().unwrap();

        // A stream whose head was complete is not subject to the head timeout.
        let id = publish_ok(s, "ht", "still here");
        let ev = sse.next_event().expect("SSE stream survived the head timeout");
        assert_eq!(ev.data, "still here");
        assert_eq!(ev.id.as_deref(), Some(id.as_str()));
    });
}

#[test]
fn over_max_connections_gets_503_then_recovers() {
    each_driver(2, &["--max-connections", "3"], |s| {
        let mut held: Vec<TcpStream> = (0..3).map(|_| s.connect()).collect();
        for c in held.iter_mut() {
            assert_healthz_ok(&roundtrip(c, HEALTHZ.as_bytes()));
        }

        let mut fourth = s.connect();
        write_lossy(&mut fourth, HEALTHZ.as_bytes());
        let r = read_response(&mut fourth).expect("a 503 for the 4th connection");
        assert_json_error(&r, 503);
        drop(fourth);

        // The held connections still work.
        for c in held.iter_mut() {
            assert_healthz_ok(&roundtrip(c, HEALTHZ.as_bytes()));
        }

        // Closing one frees a slot.
        drop(held.remove(0));
        let deadline = Instant::now() + DEADLINE;
        loop {
            let mut c = s.connect();
            write_lossy(&mut c, HEALTHZ.as_bytes());
            let r = read_response(&mut c);
            match r {
                Some(r) if r.status == 200 => {
                    assert_healthz_ok(&r);
                    break;
                }
                Some(r) if r.status == 503 => assert_json_error(&r, 503),
                Some(r) => panic!("unexpected {} {:?}", r.status, r.text()),
                None => {}
            }
            assert!(Instant::now() < deadline, "a freed slot was never reused");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

#[test]
fn readyz_says_ready_on_a_single_node() {
    each_driver(2, &[], |s| {
        let r = request(s, "GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.status, 200, "{:?}", r.text());
        assert_eq!(r.text().trim_end(), "ready");
        let r = request(s, "POST /readyz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    });
}

#[test]
fn a_stopping_node_refuses_new_connections_at_once() {
    // An outside attack: the listeners stayed in LISTEN during the stop, so load balancers'
    // probes and new clients were accepted by the kernel and never answered.
    for driver in drivers() {
        let mut s = Server::with(driver, 2, &["--max-pending-bytes", "67108864"]);
        // A stream whose reader has stopped keeps the stop waiting (up to its bound) with
        // bytes still queued for it.
        let mut stalled = s.connect_with_recv_buffer(4096);
        stalled.write_all(b"GET /sub/stall HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n").unwrap();
        assert_eq!(read_head(&mut stalled).expect("head").0, 200);
        let mut p = Publisher::new(&s);
        let big = "x".repeat(60 * 1024);
        for _ in 0..160 {
            p.publish("stall", &big);
        }
        let signalled = Instant::now();
        s.signal_term();
        wait_until("new connections to be refused", || TcpStream::connect(s.addr).is_err());
        // Not a performance figure: the stop waits up to 3.5 s for the stalled stream, and the
        // listeners used to close only when it ended.
        assert!(signalled.elapsed() < Duration::from_millis(2500), "refused only once the stop was over");
        assert!(s.child.try_wait().expect("wait").is_none(), "refused only because herald had exited");
        drop(stalled);
    }
}

#[test]
fn an_absolute_form_target_is_served_by_its_path() {
    // RFC 9112 §3.2.2: a server must accept absolute-form, though only proxies are sent it.
    each_driver(2, &[], |s| {
        let r = request(s, "GET http://herald.example/healthz HTTP/1.1\r\nHost: herald.example\r\n\r\n");
        assert_healthz_ok(&r);
        let r = request(
            s,
            "POST HTTP://herald.example:80/pub/abs?type=t HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["topic"], "abs");
        let r = request(s, "GET ftp://herald.example/healthz HTTP/1.1\r\nHost: herald.example\r\n\r\n");
        assert_json_error_at(&r, 400, "/", "a target that is neither a path nor an http(s) URI");
    });
}

//! Rights and memory an outsider can reach (API.md §6, §7): a subscriber token cannot publish
//! through the seed routes or pause every stream; the member-events stream needs the member's
//! token where herald can authenticate; rights and limits are decided before a request body
//! is read, bodies have an overall deadline and a per-worker budget; the publish key is not
//! taken for a JWT on subscribe routes.
//!
//! The server is started like the review that found these holes: a publish key, a JWT secret
//! and one allowed origin.
mod common;

use common::ws::*;
use common::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const KEY: &str = "K3y";
const SECRET: &str = "S3cret";
const FLAGS: [&str; 6] = ["--publish-key", KEY, "--jwt-secret", SECRET, "--cors-origins", "https://a.example"];

fn token(claims: Value) -> String {
    let mut claims = claims;
    if claims.get("exp").is_none() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        claims["exp"] = json!(now + 3600);
    }
    herald::auth::jwt::sign(&claims, SECRET.as_bytes())
}

/// A request with `Authorization: Bearer {bearer}` (when given), other headers and a body.
fn call(s: &Server, method: &str, path: &str, bearer: Option<&str>, headers: &[&str], body: &str) -> Response {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n", body.len());
    if let Some(b) = bearer {
        raw += &format!("Authorization: Bearer {b}\r\n");
    }
    for h in headers {
        raw += h;
        raw += "\r\n";
    }
    raw += "\r\n";
    raw += body;
    request(s, &raw)
}

#[test]
fn a_subscriber_token_cannot_publish_through_any_route_or_pause_streams() {
    each_driver(2, &FLAGS, |s| {
        let reader = token(json!({"sub": "42"}));
        let member = ["Member-ID: 7"];
        let member_event = r#"{"event":{"type":"X","body":{}}}"#;
        let wave = "/_wave/api/sessions/victim/events";
        let wave_event = r#"{"type":"status","data":"paused"}"#;
        for (what, method, path, headers, body) in [
            ("/pub/news", "POST", "/pub/news", &[][..], "x"),
            ("/admin/pause", "POST", "/admin/pause?delay_ms=86400000", &[][..], ""),
            ("POST /events", "POST", "/events", &member[..], member_event),
            ("POST session events", "POST", wave, &[][..], wave_event),
        ] {
            let r = call(s, method, path, Some(&reader), headers, body);
            assert_json_error(&r, 403);
            assert!(r.text().contains("right") || r.text().contains("publish"), "{what}: {}", r.text());
        }
        // The batch: one line to a topic the token may not publish to refuses the whole batch.
        let narrow = token(json!({"sub": "42", "publish": ["news"]}));
        let batch = "{\"topic\":\"news\",\"data\":\"ok\"}\n{\"topic\":\"member:7\",\"data\":\"no\"}\n";
        let r = call(s, "POST", "/pub", Some(&narrow), &["Content-Type: application/x-ndjson"], batch);
        assert_json_error_at(&r, 403, "/line/2", "member:7");
        // A claim for the topic grants it, on the seed routes too; only `*` grants the pause.
        let r = call(s, "POST", "/events", Some(&token(json!({"publish": ["member:7"]}))), &member, member_event);
        assert_eq!(r.status, 200, "{}", r.text());
        let r = call(s, "POST", wave, Some(&token(json!({"publish": ["wave:*"]}))), &[], wave_event);
        assert_eq!(r.status, 200, "{}", r.text());
        let r =
            call(s, "POST", "/admin/pause?delay_ms=1", Some(&token(json!({"publish": ["news", "user:*"]}))), &[], "");
        assert_json_error(&r, 403);
        let r = call(s, "POST", "/admin/pause?delay_ms=1", Some(&token(json!({"publish": ["*"]}))), &[], "");
        assert_eq!(r.status, 200, "{}", r.text());
        let r = call(s, "POST", "/admin/pause?delay_ms=1", Some(KEY), &[], "");
        assert_eq!(r.status, 200, "{}", r.text());
        // The WebSocket `publish` method, with a token at the handshake that may not publish.
        let mut w = ws_with(s, "/sub/news", &[&format!("Authorization: Bearer {reader}")]);
        let v = w.call(json!({"method": "publish", "id": 1, "topic": "news", "data": "x"}));
        assert_eq!(v["event"], "published");
        assert!(v["errors"][0]["path"] == "/topic", "{v}");
    });
}

#[test]
fn the_member_stream_needs_the_members_token_when_herald_can_authenticate() {
    each_driver(2, &FLAGS, |s| {
        let open = |headers: &[&str]| {
            let mut all = vec!["Accept: text/event-stream", "Member-ID: 7"];
            all.extend_from_slice(headers);
            let mut raw = "GET /events HTTP/1.1\r\nHost: t\r\n".to_string();
            for h in all {
                raw += h;
                raw += "\r\n";
            }
            raw += "\r\n";
            SseClient::open_raw(s, &raw)
        };
        let refused = open(&[]).err().expect("no token: refused");
        assert_json_error_at(&refused, 401, "/headers/member-id", "member:7");
        let other = format!("Authorization: Bearer {}", token(json!({"sub": "8"})));
        assert_json_error(&open(&[&other]).err().expect("another member: refused"), 403);
        let own = format!("Authorization: Bearer {}", token(json!({"sub": "7"})));
        let mut sse = open(&[&own]).unwrap_or_else(|r| panic!("the member's own token: {} {}", r.status, r.text()));
        let claim = format!("Authorization: Bearer {}", token(json!({"subscribe": ["member:*"]})));
        let mut by_claim = open(&[&claim]).unwrap_or_else(|r| panic!("a subscribe claim: {} {}", r.status, r.text()));
        let r =
            call(s, "POST", "/events", Some(KEY), &["Member-ID: 7"], r#"{"event":{"type":"HELLO","body":{"n":1}}}"#);
        assert_eq!(r.status, 200, "{}", r.text());
        for sse in [&mut sse, &mut by_claim] {
            let e = sse.next_event().expect("the member's event");
            assert_eq!(e.event.as_deref(), Some("HELLO"));
        }
    });
    // Behind a gateway that sets the header, it may be trusted; without a secret it is.
    for flags in [&["--jwt-secret", SECRET, "--member-events-trust-header"][..], &[][..]] {
        each_driver(2, flags, |s| {
            let sse = SseClient::try_open(s, "/events", &["Member-ID: 7"]);
            assert!(sse.is_ok(), "{flags:?}: the header alone is trusted");
        });
    }
}

#[test]
fn the_publish_key_opens_a_websocket_that_may_publish_with_a_jwt_secret_set() {
    each_driver(2, &FLAGS, |s| {
        let r = call(s, "GET", "/sub/news?timeout=0", Some(KEY), &[], "");
        assert_eq!(r.status, 204, "the key is not a JWT to verify: {}", r.text());
        let mut w = ws_with(s, "/sub/news", &[&format!("Authorization: Bearer {KEY}")]);
        let v = w.call(json!({"method": "publish", "id": 1, "topic": "elsewhere", "data": "by key"}));
        assert!(v.get("errors").is_none(), "{v}");
        assert_eq!(v["event"], "published");
    });
}

/// Sends a request head announcing a body of `len` bytes, and nothing of the body.
fn head_only(s: &Server, path: &str, bearer: Option<&str>, len: usize) -> std::net::TcpStream {
    let mut c = s.connect();
    let auth = bearer.map(|b| format!("Authorization: Bearer {b}\r\n")).unwrap_or_default();
    c.write_all(format!("POST {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: {len}\r\n\r\n").as_bytes()).unwrap();
    c
}

#[test]
fn rights_are_decided_before_a_body_is_read() {
    each_driver(2, &FLAGS, |s| {
        // The refusal comes at once, though not a byte of the 4 MiB body was sent, and the
        // connection is closed rather than read.
        for (path, bearer, status) in [
            ("/pub", None, 401),
            ("/pub", Some("wrong"), 403),
            ("/pub/news", None, 401),
            ("/pub/member:7", Some(token(json!({"publish": ["news"]}))).as_deref(), 403),
            ("/events", None, 401),
        ] {
            let mut c = head_only(s, path, bearer, 4 << 20);
            let r = read_response(&mut c).unwrap_or_else(|| panic!("{path}: no answer before the body"));
            assert_json_error(&r, status);
            wait_closed(&mut c, DEADLINE);
        }
    });
}

#[test]
fn a_body_that_trickles_in_meets_its_deadline() {
    each_driver(2, &["--body-timeout", "1"], |s| {
        let mut c = head_only(s, "/pub/slow", None, 1000);
        let started = Instant::now();
        let mut got = Vec::new();
        let mut answer = [0u8; 4096];
        c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        // One byte every 200 ms would take 200 s; the body has 1 s (plus 1 s per 64 KiB).
        while started.elapsed() < DEADLINE {
            let _ = c.write_all(b"x");
            match c.read(&mut answer) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&answer[..n]),
                Err(_) => {}
            }
            if got.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 408"), "a trickled body must time out with 408, got {text:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    });
}

#[test]
fn bodies_being_read_have_a_budget_past_which_they_get_503() {
    // 2 workers × 64 KiB batches; 256 KiB in all: room for two bodies a worker.
    let flags = ["--max-batch-bytes", "65536", "--max-body-memory", "262144"];
    each_driver(2, &flags, |s| {
        let mut held = Vec::new();
        let mut refused = 0;
        // Ten heads announcing 64 KiB each, bodies never sent: past the budget, 503 at once.
        for _ in 0..10 {
            let mut c = head_only(s, "/pub", None, 65536);
            c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let mut first = [0u8; 12];
            match c.read(&mut first) {
                Ok(n) if n > 0 => {
                    assert!(first.starts_with(b"HTTP/1.1 503"), "{:?}", String::from_utf8_lossy(&first[..n]));
                    refused += 1;
                }
                _ => held.push(c),
            }
        }
        assert!(refused >= 6, "at most 4 bodies fit in the budget; {refused} of 10 refused");
        assert!(held.len() >= 2, "bodies within the budget are read: {} waiting", held.len());
        // Sending the bodies that were let in: they are published, and the room comes back.
        for c in &mut held {
            let line = "{\"topic\":\"t\",\"data\":\"x\"}\n";
            let mut body = line.repeat(65536 / line.len());
            body.push_str(&" ".repeat(65536 - body.len()));
            c.set_read_timeout(Some(DEADLINE)).unwrap();
            c.write_all(body.as_bytes()).unwrap();
            let r = read_response(c).expect("answer");
            assert_eq!(r.status, 200, "{}", r.text());
        }
        for _ in 0..10 {
            let r = call(s, "POST", "/pub", None, &[], "{\"topic\":\"t\",\"data\":\"x\"}\n");
            assert_eq!(r.status, 200, "the room came back: {}", r.text());
        }
    });
}

/// `n` topic names of 128 characters, new to the server.
fn long_names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:04}-{}", "x".repeat(128 - prefix.len() - 6))).collect()
}

#[test]
fn topics_named_only_by_subscribers_are_forgotten_when_they_leave() {
    each_driver(2, &[], |s| {
        let mut c = s.connect();
        for round in 0..3 {
            let topics = long_names(&format!("anon{round}"), 64).join(",");
            let r = roundtrip(&mut c, format!("GET /sub/{topics}?timeout=0 HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
            assert_eq!(r.status, 204, "{}", r.text());
        }
        let mut w = ws_with(s, "/sub/keep", &[]);
        let names = long_names("ws", 32);
        let v = w.call(json!({"method": "subscribe", "id": 1, "topics": names}));
        assert!(v.get("errors").is_none(), "{v}");
        let v = w.call(json!({"method": "unsubscribe", "id": 2, "topics": names}));
        assert!(v.get("errors").is_none(), "{v}");
        // Only `keep`, which a subscriber still holds, is left.
        wait_until("the named topics to be forgotten", || metric(s, "herald_topics") == 1.0);
        // A topic with history stays (it is what resumes are made from).
        publish_ok(s, "kept", "x");
        wait_until("the published topic is kept", || metric(s, "herald_topics") == 2.0);
    });
}

#[test]
fn past_max_topics_new_topics_are_refused_with_503_on_every_route() {
    each_driver(2, &["--max-topics", "4"], |s| {
        for i in 0..4 {
            publish_ok(s, &format!("t{i}"), "x");
        }
        wait_until("four topics", || metric(s, "herald_topics") == 4.0);
        let r = publish(s, "t4", "x");
        assert_json_error(&r, 503);
        assert!(r.header("retry-after").is_some());
        let batch = "{\"topic\":\"t0\",\"data\":\"ok\"}\n{\"topic\":\"new\",\"data\":\"x\"}\n";
        let r = call(s, "POST", "/pub", None, &["Content-Type: application/x-ndjson"], batch);
        assert_json_error_at(&r, 503, "/line/2", "a new topic in a batch");
        let sse = SseClient::try_open(s, "/sub/t0,new", &[]).err().expect("a new topic over SSE: refused");
        assert_json_error(&sse, 503);
        let r = request(s, "GET /sub/new?timeout=1 HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_json_error(&r, 503);
        let upgrade = try_ws(s, "/sub/new", &[]).err().expect("a new topic over WebSocket: refused");
        assert_json_error(&upgrade, 503);
        // Topics it keeps are served as ever.
        let mut sse = SseClient::open(s, "/sub/t1", &[]);
        publish_ok(s, "t1", "still");
        assert_eq!(sse.next_event().expect("an event").data, "still");
        assert_eq!(metric(s, "herald_topics"), 4.0, "nothing was made past the cap");
    });
}

#[test]
fn a_connection_that_names_new_topics_too_fast_is_slowed_with_429() {
    each_driver(2, &[], |s| {
        let mut c = s.connect();
        let mut refused = None;
        for round in 0..16 {
            let topics = long_names(&format!("fast{round}"), 64).join(",");
            let r = roundtrip(&mut c, format!("GET /sub/{topics}?timeout=0 HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
            if r.status == 429 {
                refused = Some((round, r));
                break;
            }
            assert_eq!(r.status, 204, "{}", r.text());
        }
        let (round, r) = refused.expect("a poll naming 64 new topics at a time is slowed");
        assert!(round >= 4, "256 names are allowed at once; refused at round {round}");
        assert_json_error(&r, 429);
        assert!(r.header("retry-after").is_some());
        // Another connection is not slowed, nor topics that exist already.
        let r = request(s, "GET /sub/other?timeout=0 HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.status, 204);
        // The WebSocket `subscribe` method likewise.
        let mut w = ws_with(s, "/sub/keep", &[]);
        let mut error = None;
        for round in 0..16 {
            let names = long_names(&format!("wsfast{round}"), 64);
            let v = w.call(json!({"method": "subscribe", "id": round, "topics": names}));
            if v.get("errors").is_some() {
                error = Some(v);
                break;
            }
            w.call(json!({"method": "unsubscribe", "id": 100 + round, "topics": names}));
        }
        let v = error.expect("a WebSocket naming 64 new topics at a time is slowed");
        assert!(v["errors"][0]["message"].as_str().unwrap().contains("too fast"), "{v}");
    });
}

/// Publishes `per_topic` events of `size` bytes to each of `topics`, a batch per topic;
/// returns each topic's first id.
fn fill(s: &Server, topics: &[String], per_topic: usize, size: usize) -> Vec<String> {
    let data = "r".repeat(size);
    topics
        .iter()
        .map(|t| {
            let line = format!("{{\"topic\":\"{t}\",\"data\":\"{data}\"}}\n");
            let r = call(s, "POST", "/pub", None, &["Content-Type: application/x-ndjson"], &line.repeat(per_topic));
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["ids"][0].as_str().expect("an id").to_string()
        })
        .collect()
}

#[test]
fn a_resume_that_is_never_read_holds_no_more_than_its_cap() {
    // 64 topics × 1000 events: what three readers that never read resume from ids of
    // another epoch (a full replay each). Before, each queued its whole replay, a fresh
    // `id:` line per event: 62 MiB each against a 1 MiB cap.
    each_driver(2, &["--max-batch-bytes", "8388608"], |s| {
        let topics: Vec<String> = (0..64).map(|i| format!("replay{i:02}")).collect();
        fill(s, &topics, 1000, 128);
        let foreign = vec!["1234-1"; 64].join(",");
        let baseline = rss_kib(s);
        let mut stalled = Vec::new();
        for _ in 0..3 {
            let mut c = s.connect_with_recv_buffer(4096);
            let head = format!(
                "GET /sub/{} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\nLast-Event-ID: {foreign}\r\n\r\n",
                topics.join(",")
            );
            c.write_all(head.as_bytes()).unwrap();
            stalled.push(c);
        }
        // Each is registered and its replay begun once its head has gone out.
        for c in &mut stalled {
            c.set_read_timeout(Some(DEADLINE)).unwrap();
            assert_eq!(read_head(c).expect("the stream's head").0, 200);
        }
        let grown = rss_kib(s).saturating_sub(baseline);
        assert!(grown < 3 * 2 * 1024 + 8 * 1024, "RSS grew by {grown} KiB for three stalled resumes");
        assert_eq!(request(s, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").status, 200);
    });
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn a_stream_opened_with_a_token_ends_when_the_token_expires() {
    each_driver(2, &FLAGS, |s| {
        let soon = token(json!({"sub": "9", "exp": unix_now() + 2}));
        let bearer = format!("Authorization: Bearer {soon}");
        let started = Instant::now();
        let mut sse = SseClient::open(s, "/sub/user:9", &[&bearer]);
        let mut w = ws_with(s, "/sub/user:9", &[&bearer]);
        let mut poll = s.connect();
        poll.write_all(format!("GET /sub/user:9?timeout=60 HTTP/1.1\r\nHost: t\r\n{bearer}\r\n\r\n").as_bytes())
            .unwrap();
        // The SSE stream ends (its terminating chunk, then the close)…
        while sse.next_event().is_some() {}
        assert!(sse.ended, "the stream ended cleanly");
        // …the WebSocket is closed with 1008…
        match w.next_msg() {
            Msg::Close(payload) => assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008),
            other => panic!("before the close: {other:?}"),
        }
        // …and the held poll is answered, long before its 60 s.
        let r = read_response(&mut poll).expect("the poll's answer");
        assert_eq!(r.status, 204);
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(15), "took {took:?}");
    });
}

#[test]
fn tokens_naming_an_empty_user_session_or_group_are_refused() {
    each_driver(2, &FLAGS, |s| {
        for claims in [json!({"sub": ""}), json!({"session": ""}), json!({"groups": ["a", ""]})] {
            let r = call(s, "GET", "/sub/news?timeout=0", Some(&token(claims.clone())), &[], "");
            assert_json_error(&r, 401);
        }
    });
}

#[test]
fn a_chunk_size_that_would_wrap_the_limit_check_is_refused() {
    // Found by the fuzzer: a second chunk of size 0xfffffffffffffff8 wrapped the check and the
    // body was read past max_event_bytes.
    each_driver(2, &[], |s| {
        let mut c = s.connect();
        c.write_all(
            b"POST /pub/wrap HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\nfffffffffffffff8\r\n",
        )
        .unwrap();
        let before = rss_kib(s);
        let _ = c.write_all(&vec![b'x'; 1 << 20]);
        let r = read_response(&mut c).expect("an answer");
        assert_json_error(&r, 413);
        assert!(rss_kib(s) < before + 512, "the body was not read past the limit");
    });
}

/// An outside attack: loopback was trusted to publish whatever page sent the request, so any
/// site open in a browser on the host (or a client behind a proxy on it) could publish to
/// private topics and pause every stream. A page of an origin nobody listed is refused; a
/// local program (no `Origin`), herald's own pages and listed origins are not.
#[test]
fn loopback_trust_does_not_extend_to_pages_of_unlisted_origins() {
    each_driver(2, &["--cors-origins", "https://a.example"], |s| {
        let evil = "Origin: https://evil.example";
        let text = "Content-Type: text/plain";
        let member = "Member-ID: 123";
        for (path, headers, body) in [
            ("/pub/user:42", vec![evil, text], "x"),
            ("/pub", vec![evil, "Content-Type: application/x-ndjson"], "{\"topic\":\"a\",\"data\":\"x\"}\n"),
            ("/admin/pause?delay_ms=86400000", vec![evil], ""),
            ("/events", vec![evil, member], "{\"event\":{\"type\":\"X\",\"body\":{}}}"),
        ] {
            let r = call(s, "POST", path, None, &headers, body);
            assert_json_error_at(&r, 403, "/headers/origin", path);
        }
        // A second attack: a page whose name was rebound to 127.0.0.1 sends its own name as
        // `Host` (these requests say `Host: t`), so "herald's own origin" proves nothing.
        let r = call(s, "POST", "/pub/news", None, &["Origin: http://t"], "x");
        assert_json_error_at(&r, 403, "/headers/origin", "a rebound page");
        // Local programs, pages on loopback and listed origins keep loopback's trust.
        for origin in [None, Some("Origin: http://127.0.0.1:8080"), Some("Origin: https://a.example")] {
            let r = call(s, "POST", "/pub/news", None, origin.as_slice(), "x");
            assert_eq!(r.status, 200, "{origin:?}: {}", r.text());
        }
        // A WebSocket from an unlisted origin (allowed by `*` elsewhere) gets no loopback
        // publish rights either: see the server below.
    });
    each_driver(2, &["--cors-origins", "*"], |s| {
        let mut w = ws_with(s, "/sub/a", &["Origin: https://evil.example"]);
        let reply = w.call(json!({"method": "publish", "id": 1, "topic": "user:42", "data": "x"}));
        assert_eq!(reply["event"], "published", "{reply}");
        assert!(reply.get("error").is_some() || reply.get("errors").is_some(), "refused: {reply}");
    });
}

/// An outside attack: anonymous clients filled the half of `max_topics` that topics only named
/// may take, and then a user's own new private topic was refused. Only anonymous subscribers
/// share that half; one with a token is held to the whole cap. And the `Bearer` scheme is
/// matched in any case (RFC 9110 §11.1): `bearer <token>` was read as no credentials.
#[test]
fn anonymous_names_do_not_lock_out_subscribers_with_a_token() {
    each_driver(2, &["--max-topics", "8", "--jwt-secret", SECRET], |s| {
        // Anonymous streams of new topics until one is refused: half the cap (two owners may
        // both take the last place).
        let mut held = Vec::new();
        while held.len() < 8 {
            match SseClient::try_open(s, &format!("/sub/junk{}", held.len()), &[]) {
                Ok(c) => held.push(c),
                Err(r) => {
                    assert_json_error(&r, 503);
                    break;
                }
            }
        }
        assert!((4..=5).contains(&held.len()), "anonymous names stop at half the cap: {}", held.len());
        let tok = token(json!({"sub": "42"}));
        // A second attack: a token holder filled the whole cap with made-up public names. A
        // public name is one anyone may make up, whoever asks: held to the half.
        let r = SseClient::try_open(s, "/sub/made-up", &[&format!("Authorization: Bearer {tok}")])
            .err()
            .expect("a token holder's made-up public name: refused");
        assert_json_error(&r, 503);
        // The push module's stream names its own topics (`broadcast` and the identity's): a
        // second attack round found it refused while `broadcast` did not exist yet.
        let pushed = SseClient::try_open(s, "/eventsource", &[&format!("Authorization: Bearer {tok}")]);
        assert!(pushed.is_ok(), "/eventsource with a token: {:?}", pushed.err().map(|r| r.text()));
        for scheme in ["Bearer", "bearer", "BEARER"] {
            let auth = format!("Authorization: {scheme} {tok}");
            let mut own = SseClient::try_open(s, "/sub/user:42", &[&auth])
                .unwrap_or_else(|r| panic!("{scheme}: a user's own new topic: {} {}", r.status, r.text()));
            publish_ok(s, "user:42", "mine");
            assert_eq!(own.next_event().expect("its event").data, "mine");
        }
    });
}

//! Presence (API.md §9): on topics under `presence_prefixes`, the distinct JWT `sub`s
//! subscribed (`GET /topics/{topic}/presence`) and their joins and leaves as the
//! `$presence:{topic}` stream — a user with several tabs, on any transport and worker, is one
//! user; a reconnect within `presence_linger` is no leave and join. Two workers, both drivers.
mod common;

use base64::Engine;
use common::ws::{assert_errors, ws_with};
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &str = "presence-suite-secret";
const KEY: &str = "presence-suite-key";

/// An HS256 token for `claims`, valid for an hour.
fn jwt(claims: Value) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let mut claims = claims;
    claims["exp"] = json!(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() + 3600);
    let input = format!("{}.{}", b64(br#"{"alg":"HS256","typ":"JWT"}"#), b64(claims.to_string().as_bytes()));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("hmac key");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

fn token_of(user: &str) -> String {
    jwt(json!({"sub": user}))
}

/// A server with presence kept under `room:` and `group:`, lingering `linger` seconds.
fn flags(linger: &str) -> Vec<&str> {
    vec![
        "--jwt-secret",
        SECRET,
        "--publish-key",
        KEY,
        "--presence-prefixes",
        "room:,group:",
        "--presence-linger",
        linger,
    ]
}

/// `GET /topics/{topic}/presence` with the publish key: (users, sorted; count).
fn present(s: &Server, topic: &str) -> (Vec<String>, u64) {
    let r =
        request(s, &format!("GET /topics/{topic}/presence HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\n\r\n"));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["topic"], topic, "{v}");
    let users: Vec<String> =
        v["users"].as_array().expect("users").iter().map(|u| u.as_str().unwrap_or("").to_string()).collect();
    (users, v["count"].as_u64().expect("count"))
}

fn users(list: &[&str]) -> (Vec<String>, u64) {
    (list.iter().map(|u| u.to_string()).collect(), list.len() as u64)
}

/// The next presence event of `c`: (type, user), checking it names `topic`.
fn next_change(c: &mut SseClient, topic: &str) -> (String, String) {
    let e = c.next_event().expect("a presence event");
    let v: Value = serde_json::from_str(&e.data).unwrap_or_else(|err| panic!("{err}: {e:?}"));
    assert_eq!(v["topic"], topic, "{e:?}");
    (e.event.unwrap_or_default(), v["user"].as_str().unwrap_or("").to_string())
}

fn change(kind: &str, user: &str) -> (String, String) {
    (kind.to_string(), user.to_string())
}

#[test]
fn a_user_with_several_tabs_on_every_transport_is_one_user() {
    each_driver(2, &flags("0.5"), |s| {
        let mut changes = SseClient::open(s, "/sub/$presence:room:1", &[]);
        let ann = token_of("ann");
        // Ann: SSE tabs (on both workers, as it falls), a WebSocket and a held long-poll.
        let tabs: Vec<SseClient> =
            (0..4).map(|_| SseClient::open(s, &format!("/sub/room:1?token={ann}"), &[])).collect();
        let socket = ws_with(s, &format!("/sub/room:1?token={ann}"), &[]);
        let mut poll = s.connect();
        poll.write_all(format!("GET /sub/room:1?timeout=120&token={ann} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .expect("poll");
        assert_eq!(next_change(&mut changes, "room:1"), change("join", "ann"));
        wait_until("ann to be present", || present(s, "room:1") == users(&["ann"]));
        // Bob over a WebSocket subscribe message; anonymous subscribers are nobody.
        let mut bob = ws_with(s, "/sub/lobby", &[&format!("Authorization: Bearer {}", token_of("bob"))]);
        let v = bob.call(json!({"method": "subscribe", "id": 1, "topics": ["room:1"]}));
        assert_eq!(v["event"], "subscribed", "{v}");
        let _anonymous = SseClient::open(s, "/sub/room:1", &[]);
        let _no_sub = SseClient::open(s, &format!("/sub/room:1?token={}", jwt(json!({"groups": ["g"]}))), &[]);
        assert_eq!(next_change(&mut changes, "room:1"), change("join", "bob"));
        wait_until("both present", || present(s, "room:1") == users(&["ann", "bob"]));

        // Ann closes every tab but one: still present, no event.
        drop(tabs);
        drop(poll);
        // Bob unsubscribes: he leaves after the linger.
        let v = bob.call(json!({"method": "unsubscribe", "id": 2, "topics": ["room:1"]}));
        assert_eq!(v["event"], "unsubscribed", "{v}");
        assert_eq!(next_change(&mut changes, "room:1"), change("leave", "bob"), "ann's tabs closing is no leave");
        assert_eq!(present(s, "room:1"), users(&["ann"]));
        drop(socket);
        assert_eq!(next_change(&mut changes, "room:1"), change("leave", "ann"));
        assert_eq!(present(s, "room:1"), users(&[]));
    });
}

#[test]
fn a_reconnect_within_the_linger_is_no_leave_and_join() {
    each_driver(2, &flags("3"), |s| {
        let mut changes = SseClient::open(s, "/sub/$presence:room:r", &[]);
        let carl = token_of("carl");
        let first = SseClient::open(s, &format!("/sub/room:r?token={carl}"), &[]);
        assert_eq!(next_change(&mut changes, "room:r"), change("join", "carl"));
        // A reconnect: the old stream gone, a new one within the linger; and a long-poller who
        // polls again and again.
        drop(first);
        let second = SseClient::open(s, &format!("/sub/room:r?token={carl}"), &[]);
        let dora = token_of("dora");
        for _ in 0..3 {
            let r = request(s, &format!("GET /sub/room:r?timeout=0.2&token={dora} HTTP/1.1\r\nHost: t\r\n\r\n"));
            assert_eq!(r.status, 204, "{}", r.text());
        }
        assert_eq!(next_change(&mut changes, "room:r"), change("join", "dora"));
        assert_eq!(present(s, "room:r"), users(&["carl", "dora"]), "lingering: still listed");
        // Dora stopped polling and leaves; Carl never left.
        assert_eq!(next_change(&mut changes, "room:r"), change("leave", "dora"));
        assert_eq!(present(s, "room:r"), users(&["carl"]));
        drop(second);
        assert_eq!(next_change(&mut changes, "room:r"), change("leave", "carl"));
    });
}

#[test]
fn presence_is_kept_under_its_prefixes_only_and_read_with_the_topics_rights() {
    each_driver(2, &flags("0.2"), |s| {
        let get = |path: &str, auth: &str| request(s, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n{auth}\r\n"));
        let key = format!("Authorization: Bearer {KEY}\r\n");
        // Outside presence_prefixes: none kept, and said so.
        assert_json_error_at(&get("/topics/news/presence", &key), 404, "/topic", "outside the prefixes");
        let r = get("/sub/$presence:news", "Accept: text/event-stream\r\n");
        assert_json_error_at(&r, 400, "/topics/0", "a $presence: topic outside the prefixes");
        let mut w = ws_with(s, "/sub/lobby", &[]);
        let req = json!({"method": "subscribe", "id": 1, "topics": ["$presence:news"]});
        assert_errors(&w.call(req.clone()), &req, "subscribed", &["/topics/0"]);
        // Reading the list takes publish rights, as topic information does.
        assert_eq!(get("/topics/room:1/presence", "").status, 401);
        assert_eq!(get("/topics/room:1/presence", "Authorization: Bearer wrong\r\n").status, 403);
        assert_json_error_at(&get("/topics/room%20x/presence", &key), 400, "/topic", "a bad name");
        // The stream takes the topic's subscribe rights: a group's presence is its members'.
        let r = get("/sub/$presence:group:g1", "Accept: text/event-stream\r\n");
        assert_json_error_at(&r, 401, "/topics/0", "a private topic's presence without a token");
        let outsider = jwt(json!({"sub": "eve", "groups": ["g2"]}));
        let r = get(&format!("/sub/$presence:group:g1?token={outsider}"), "Accept: text/event-stream\r\n");
        assert_json_error_at(&r, 403, "/topics/0", "another group's presence");
        let member = jwt(json!({"sub": "fay", "groups": ["g1"]}));
        let mut changes = SseClient::open(s, &format!("/sub/$presence:group:g1?token={member}"), &[]);
        let _tab = SseClient::open(s, &format!("/sub/group:g1?token={member}"), &[]);
        assert_eq!(next_change(&mut changes, "group:g1"), change("join", "fay"));
        // Nobody publishes into a presence stream.
        let r = request(
            s,
            &format!(
                "POST /pub/$presence:group:g1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 1\r\n\r\nx"
            ),
        );
        assert_json_error(&r, 400);
        // Not listed as a topic.
        let v = get("/topics", &key).json();
        let names: Vec<&str> =
            v["topics"].as_array().expect("topics").iter().filter_map(|t| t["topic"].as_str()).collect();
        assert!(names.iter().all(|n| !n.starts_with('$')), "{v}");
    });
}

#[test]
fn presence_nobody_follows_costs_no_topic() {
    each_driver(2, &flags("0.1"), |s| {
        let tabs: Vec<SseClient> = (0..20)
            .map(|i| SseClient::open(s, &format!("/sub/room:{i}?token={}", token_of(&format!("u{i}"))), &[]))
            .collect();
        wait_until("everyone present", || (0..20).all(|i| present(s, &format!("room:{i}")).1 == 1));
        assert_eq!(metric(s, "herald_topics"), 20.0, "the rooms only: no $presence: topic was made");
        drop(tabs);
        wait_until("everyone gone", || (0..20).all(|i| present(s, &format!("room:{i}")).1 == 0));
    });
}

#[test]
fn a_follower_back_after_nobody_followed_is_told_of_a_gap() {
    // Changes are published only while someone follows: whoever resumes after a time with no
    // follower may have missed some, and is told so (then reads the list again).
    each_driver(2, &flags("0.2"), |s| {
        let mut changes = SseClient::open(s, "/sub/$presence:room:g", &[]);
        let _ann = SseClient::open(s, &format!("/sub/room:g?token={}", token_of("ann")), &[]);
        assert_eq!(next_change(&mut changes, "room:g"), change("join", "ann"));
        let last = changes.last_event_id.clone().expect("an id");
        drop(changes);
        let _bob = SseClient::open(s, &format!("/sub/room:g?token={}", token_of("bob")), &[]);
        wait_until("bob present", || present(s, "room:g") == users(&["ann", "bob"]));
        let mut back = SseClient::open(s, "/sub/$presence:room:g", &[&format!("Last-Event-ID: {last}")]);
        let gap = back.next_event().expect("a gap notice");
        assert_eq!(gap.event.as_deref(), Some("herald.gap"), "{gap:?}");
    });
}

#[test]
fn the_push_modules_streams_are_present_and_a_bad_unsubscribe_drops_nothing() {
    // Outside attack: `/eventsource` streams were never present, and a WebSocket unsubscribe
    // answered with an error had dropped the topics it did hold.
    each_driver(2, &flags("0.2"), |s| {
        let tok = jwt(json!({"sub": "gil", "groups": ["g1"]}));
        let _push = SseClient::open(s, &format!("/eventsource?token={tok}"), &[]);
        wait_until("the push stream's user present", || present(s, "group:g1") == users(&["gil"]));
        let mut w = ws_with(s, "/sub/room:u", &[&format!("Authorization: Bearer {}", token_of("hal"))]);
        wait_until("hal present", || present(s, "room:u") == users(&["hal"]));
        let req = json!({"method": "unsubscribe", "id": 1, "topics": ["room:u", "room:never"]});
        assert_errors(&w.call(req.clone()), &req, "unsubscribed", &["/topics/1"]);
        let raw = format!(
            "POST /pub/room:u HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 10\r\n\r\nstill here"
        );
        let r = request(s, &raw);
        assert_eq!(r.status, 200, "{}", r.text());
        let id = r.json()["id"].as_str().expect("an id").to_string();
        let v = w.next_json();
        assert_eq!((v["id"].as_str(), v["data"].as_str()), (Some(id.as_str()), Some("still here")), "{v}");
        assert_eq!(present(s, "room:u"), users(&["hal"]));
    });
}

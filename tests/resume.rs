//! Resuming from an id (API.md §1 history and gaps, §3.3 long-poll, §7 precise readings):
//!
//! - a long-poll answer shared between polls still carries each poll's own `last_event_id`;
//! - a property-style walk over long-poll: every start, several type filters and `max` values,
//!   followed poll after poll (immediate and held, several pollers at once) delivers exactly
//!   the matching events after the start, in order, each once;
//! - a cursor of one topic is never taken as a position in another (SSE, long-poll, WebSocket);
//! - an unusable resume id on SSE and WebSocket still opens the stream, with a gap per topic;
//! - `/eventsource` ids do not depend on the order of a token's groups.
//!
//! Every check describes the contract; a failure names the event lost or repeated and the id
//! that was expected.
mod common;

use common::ws::*;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Like `each_driver` (a fresh server per driver), but every driver runs even when one fails,
/// and the failure names the driver: a reproducer reports all it shows at once.
fn every_driver(workers: usize, extra: &[&str], f: impl Fn(&Server)) {
    let mut failures = Vec::new();
    for driver in drivers() {
        let server = Server::with(driver, workers, extra);
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&server))) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|m| m.to_string()))
                .unwrap_or_else(|| "(no message)".to_string());
            failures.push(format!("[--driver {driver}] {msg}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------- long-poll helpers

/// One long-poll answer, checked for shape.
#[derive(Debug, Clone)]
struct Poll {
    status: u16,
    /// The `events` array (empty for a 204).
    events: Vec<Value>,
    /// `last_event_id` of the body (200) or the `Last-Event-ID` header (204).
    cursor: String,
    /// The `Last-Event-ID` header.
    header: Option<String>,
}

/// A plain GET: a long-poll.
fn get_req(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")
}

/// Checks a long-poll response's shape; `Err` says what is wrong (usable from threads).
fn parse_poll(r: Response, what: &str) -> Result<Poll, String> {
    let header = r.header("last-event-id").map(str::to_string);
    match r.status {
        200 => {
            let v: Value =
                serde_json::from_slice(&r.body).map_err(|e| format!("{what}: body is not JSON ({e}): {}", r.text()))?;
            let events = v["events"].as_array().ok_or_else(|| format!("{what}: no events array: {v}"))?.clone();
            let cursor =
                v["last_event_id"].as_str().ok_or_else(|| format!("{what}: no last_event_id string: {v}"))?.to_string();
            if cursor.is_empty() {
                return Err(format!("{what}: empty last_event_id: {v}"));
            }
            Ok(Poll { status: 200, events, cursor, header })
        }
        204 => {
            let cursor = header.clone().ok_or_else(|| format!("{what}: 204 without Last-Event-ID: {:?}", r.headers))?;
            if cursor.is_empty() {
                return Err(format!("{what}: 204 with an empty Last-Event-ID"));
            }
            Ok(Poll { status: 204, events: Vec::new(), cursor, header })
        }
        other => Err(format!("{what}: unexpected status {other}: {:?} {}", r.headers, r.text())),
    }
}

/// Sends a long-poll on `c` and reads its answer.
fn poll_on(c: &mut TcpStream, path: &str) -> Result<Poll, String> {
    c.write_all(get_req(path).as_bytes()).map_err(|e| format!("{path}: write: {e}"))?;
    let r = read_response(c).ok_or_else(|| format!("{path}: no response"))?;
    parse_poll(r, path)
}

/// A long-poll on a fresh connection; panics on a malformed answer.
fn lp(s: &Server, path: &str) -> Poll {
    let mut c = s.connect();
    poll_on(&mut c, path).unwrap_or_else(|e| panic!("{e}"))
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("<none>")
}

fn datas(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| str_of(e, "data").to_string()).collect()
}

/// Parses the data of a `herald.gap` / gap notice: exactly `topic` and a non-empty `missed_from`.
fn gap_data(raw: &str, what: &str) -> (String, String) {
    let v: Value = serde_json::from_str(raw).unwrap_or_else(|e| panic!("{what}: gap data is not JSON ({e}): {raw:?}"));
    let obj = v.as_object().unwrap_or_else(|| panic!("{what}: gap data is not an object: {v}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["missed_from", "topic"], "{what}: gap data carries exactly topic and missed_from: {v}");
    let missed = str_of(&v, "missed_from").to_string();
    assert!(!missed.is_empty(), "{what}: missed_from must be a non-empty string: {v}");
    (str_of(&v, "topic").to_string(), missed)
}

// ---------------------------------------------------------------- 1. shared long-poll answers

/// Two polls answered with the same single event must each get their own resume id: one that
/// skipped a filtered event after it may resume past it; one that stopped at `max` must not.
#[test]
fn shared_longpoll_answer_carries_each_polls_own_resume_id() {
    every_driver(1, &[], |s| {
        let mut p = Publisher::new(s);
        let b = p.publish("own", "base");
        let bb = p.publish_typed("own", Some("b"), "b");
        let a3 = p.publish_typed("own", Some("a"), "a");
        let u4 = p.publish("own", "u");

        // types=a from B: [a]; it may resume after u, which its filter skips.
        let first = lp(s, &sub_path("own", Some(&b), "types=a&timeout=2"));
        assert_eq!(first.status, 200, "types=a from base must answer a at once: {first:?}");
        assert_eq!(datas(&first.events), ["a"], "types=a from base: {first:?}");
        assert_eq!(str_of(&first.events[0], "id"), a3, "the event id of a is its publish id");
        assert!(
            first.cursor == a3 || first.cursor == u4,
            "types=a from base: last_event_id must be a's id {a3} or u's id {u4} (u is filtered out), got {}",
            first.cursor
        );

        // No filter, from b, max=1: [a] — and its own resume id A3, not the first poll's.
        let second = lp(s, &sub_path("own", Some(&bb), "timeout=2&max=1"));
        assert_eq!(second.status, 200, "max=1 from b must answer a at once: {second:?}");
        assert_eq!(datas(&second.events), ["a"], "max=1 from b: {second:?}");
        assert_eq!(
            second.header.as_deref(),
            Some(a3.as_str()),
            "max=1 from b answered [a]: its Last-Event-ID header must be a's id {a3} (u's id is {u4}; \
             resuming from it never delivers u)"
        );
        assert_eq!(
            second.cursor, a3,
            "max=1 from b answered [a]: its last_event_id must be a's id {a3}, got {} (u's id is {u4}; \
             resuming from it never delivers u)",
            second.cursor
        );

        // Following on from that id delivers u, and then nothing more.
        let third = lp(s, &sub_path("own", Some(&second.cursor), "timeout=2"));
        assert_eq!(
            datas(&third.events),
            ["u"],
            "resuming from the id of the max=1 answer ({}) must deliver u (id {u4}): {third:?}",
            second.cursor
        );
        assert_eq!(str_of(&third.events[0], "id"), u4);
        assert_eq!(third.cursor, u4);
        let fourth = lp(s, &sub_path("own", Some(&third.cursor), "timeout=0"));
        assert_eq!(fourth.status, 204, "nothing after u: {fourth:?}");
    });
}

// ---------------------------------------------------------------- 2. property-style long-poll

/// A tiny LCG (Knuth's MMIX constants): deterministic, no crates.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
    /// An event type: untyped (twice as likely) or one of a, b, c.
    fn ty(&mut self) -> Option<&'static str> {
        [None, None, Some("a"), Some("b"), Some("c")][self.next(5) as usize]
    }
}

/// The `types=` filters walked: none, one type, two types, untyped, untyped plus a type.
const FILTERS: [Option<&str>; 5] = [None, Some("a"), Some("a,b"), Some("message"), Some("message,c")];
const MAXES: [usize; 4] = [1, 2, 3, 1000];

/// One published event of the walk.
#[derive(Debug, Clone)]
struct Pub {
    id: String,
    data: String,
    ty: Option<&'static str>,
}

fn passes(filter: Option<&str>, ty: Option<&str>) -> bool {
    filter.is_none_or(|f| f.split(',').any(|t| t == ty.unwrap_or("message")))
}

fn query(filter: Option<&str>, max: usize, timeout: &str) -> String {
    let mut q = format!("max={max}&timeout={timeout}");
    if let Some(f) = filter {
        q.push_str(&format!("&types={f}"));
    }
    q
}

/// A label for messages: `e7:a` (typed) or `e7:-` (untyped).
fn label(data: &str, ty: Option<&str>) -> String {
    format!("{data}:{}", ty.unwrap_or("-"))
}

/// Takes the events of one answer into `got`, checking each is a well-formed event of `topic`.
fn take_events(p: &Poll, topic: &str, got: &mut Vec<Pub>, what: &str) -> Result<(), String> {
    for ev in &p.events {
        let ty = ev.get("type").map(|t| t.as_str().unwrap_or("<not a string>").to_string());
        if ty.as_deref() == Some("herald.gap") {
            return Err(format!("{what}: unexpected gap notice {ev}"));
        }
        if ev["topic"].as_str() != Some(topic) {
            return Err(format!("{what}: event of another topic: {ev}"));
        }
        let ty: Option<&'static str> = match ty.as_deref() {
            None => None,
            Some("a") => Some("a"),
            Some("b") => Some("b"),
            Some("c") => Some("c"),
            Some(other) => return Err(format!("{what}: unexpected type {other:?}: {ev}")),
        };
        got.push(Pub { id: str_of(ev, "id").to_string(), data: str_of(ev, "data").to_string(), ty });
    }
    Ok(())
}

/// Compares what a follower got with what it should have got; `Err` names the first difference.
fn compare(got: &[Pub], want: &[Pub], what: &str, trace: &[String]) -> Result<(), String> {
    let g: Vec<(String, String)> = got.iter().map(|e| (e.id.clone(), label(&e.data, e.ty))).collect();
    let w: Vec<(String, String)> = want.iter().map(|e| (e.id.clone(), label(&e.data, e.ty))).collect();
    if g == w {
        return Ok(());
    }
    let k = g.iter().zip(&w).take_while(|(a, b)| a == b).count();
    let diff = match (g.get(k), w.get(k)) {
        (Some(x), Some(y)) if g[k..].contains(y) => {
            format!("got {} ({}) before the expected {} ({})", x.1, x.0, y.1, y.0)
        }
        (Some(x), Some(y)) => format!("lost {} (id {}): got {} ({}) in its place", y.1, y.0, x.1, x.0),
        (Some(x), None) => {
            format!("got {} (id {}) more than expected (duplicated or not passing the filter)", x.1, x.0)
        }
        (None, Some(y)) => format!("lost {} (id {}) and everything after it", y.1, y.0),
        (None, None) => unreachable!(),
    };
    let gl: Vec<&str> = g.iter().map(|x| x.1.as_str()).collect();
    let wl: Vec<&str> = w.iter().map(|x| x.1.as_str()).collect();
    Err(format!("{what}: {diff}\n  got  {gl:?}\n  want {wl:?}\n  polls: {}", trace.join(" | ")))
}

/// What one follower got: its events, its polls (for messages), and what went wrong if anything.
struct Followed {
    got: Vec<Pub>,
    trace: Vec<String>,
    error: Option<String>,
}

/// Follows `last_event_id` from `start` with `timeout=0` polls until a 204.
fn follow(addr: SocketAddr, topic: &str, start: &str, filter: Option<&str>, max: usize) -> Followed {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut cursor = start.to_string();
    let mut f = Followed { got: Vec::new(), trace: Vec::new(), error: None };
    for _ in 0..64 {
        let path = sub_path(topic, Some(&cursor), &query(filter, max, "0"));
        let p = match poll_on(&mut c, &path) {
            Ok(p) => p,
            Err(e) => return Followed { error: Some(e), ..f },
        };
        let labels: Vec<String> =
            p.events.iter().map(|e| label(str_of(e, "data"), e.get("type").and_then(Value::as_str))).collect();
        f.trace.push(format!("from {cursor}: {} {labels:?} last_event_id {}", p.status, p.cursor));
        if p.status == 204 {
            return f;
        }
        if p.header.as_deref() != Some(p.cursor.as_str()) {
            let e = format!("{path}: Last-Event-ID header {:?} differs from last_event_id {}", p.header, p.cursor);
            return Followed { error: Some(e), ..f };
        }
        if p.events.len() > max {
            return Followed { error: Some(format!("{path}: {} events for max={max}", p.events.len())), ..f };
        }
        if let Err(e) = take_events(&p, topic, &mut f.got, &path) {
            return Followed { error: Some(e), ..f };
        }
        cursor = p.cursor;
    }
    Followed { error: Some("more than 64 polls without a 204".to_string()), ..f }
}

/// Sums `herald_connections{transport="longpoll"}` over workers: the polls being held.
fn held_polls(s: &Server) -> usize {
    metric(s, "herald_connections{transport=\"longpoll\"") as usize
}

/// Phase 2: a follower that starts with a held poll and keeps polling (held, `timeout=5`).
struct Held {
    name: String,
    filter: Option<&'static str>,
    max: usize,
    /// Its first poll, already sent.
    conn: TcpStream,
    /// How many events of the live run pass its filter.
    expect: usize,
}

/// Decrements the count of running followers when a follower ends, however it ends.
struct Running<'a>(&'a AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn run_held(
    mut h: Held,
    topic: &str,
    done: &AtomicBool,
    running: &AtomicUsize,
) -> (Vec<Pub>, Vec<String>, Option<String>) {
    let polling = Running(running);
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    let mut trace = Vec::new();
    let mut sent = "first poll".to_string();
    loop {
        let p = match read_response(&mut h.conn)
            .ok_or_else(|| format!("{sent}: no response"))
            .and_then(|r| parse_poll(r, &sent))
        {
            Ok(p) => p,
            Err(e) => return (got, trace, Some(e)),
        };
        let labels: Vec<String> =
            p.events.iter().map(|e| label(str_of(e, "data"), e.get("type").and_then(Value::as_str))).collect();
        trace.push(format!("{} {labels:?} last_event_id {}", p.status, p.cursor));
        if p.events.len() > h.max {
            return (got, trace, Some(format!("{sent}: {} events for max={}", p.events.len(), h.max)));
        }
        if let Err(e) = take_events(&p, topic, &mut got, &sent) {
            return (got, trace, Some(e));
        }
        if got.len() >= h.expect || (p.status == 204 && done.load(Ordering::SeqCst)) || Instant::now() > deadline {
            // Nothing more may come: a last immediate poll must find nothing.
            if got.len() >= h.expect {
                // No longer polling: the publisher must not wait for this one to be held.
                drop(polling);
                while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                // A fresh connection: this one may have idled past the server's request timeout.
                let mut c = TcpStream::connect(h.conn.peer_addr().expect("peer")).expect("connect");
                c.set_read_timeout(Some(DEADLINE)).unwrap();
                let path = sub_path(topic, Some(&p.cursor), &query(h.filter, h.max, "0"));
                match poll_on(&mut c, &path) {
                    Ok(last) if last.status == 204 => {}
                    Ok(last) => {
                        let extra: Vec<String> = last
                            .events
                            .iter()
                            .map(|e| {
                                format!(
                                    "{} (id {})",
                                    label(str_of(e, "data"), e.get("type").and_then(Value::as_str)),
                                    str_of(e, "id")
                                )
                            })
                            .collect();
                        return (
                            got,
                            trace,
                            Some(format!(
                                "{}: after all its events, a poll from {} still answered {extra:?}",
                                h.name, p.cursor
                            )),
                        );
                    }
                    Err(e) => return (got, trace, Some(e)),
                }
            }
            return (got, trace, None);
        }
        let timeout = if done.load(Ordering::SeqCst) { "0.5" } else { "5" };
        sent = sub_path(topic, Some(&p.cursor), &query(h.filter, h.max, timeout));
        if let Err(e) = h.conn.write_all(get_req(&sent).as_bytes()) {
            return (got, trace, Some(format!("{sent}: write: {e}")));
        }
    }
}

/// Long-poll, property-style: for every start (the empty topic's cursor and every event id),
/// several `types=` filters and `max` values, following `last_event_id` until a 204 yields
/// exactly the events after the start that pass the filter, in order, each once. Then held
/// polls (several at once, released by the same publishes) continue exactly as well.
#[test]
fn longpoll_following_last_event_id_delivers_exactly_the_matching_events() {
    const TOPIC: &str = "walk";
    const STATIC: usize = 20;
    const LIVE: usize = 30;
    const FOLLOWERS: usize = 4;
    every_driver(2, &[], |s| {
        let mut rng = Lcg(0x5eed_1e57);
        // The cursor of the topic before its first event: what a 204 hands out.
        let empty = lp(s, &sub_path(TOPIC, None, "timeout=0"));
        assert_eq!(empty.status, 204, "a poll of an empty topic with timeout=0 times out: {empty:?}");

        let mut p = Publisher::new(s);
        let events: Vec<Pub> = (0..STATIC)
            .map(|i| {
                let ty = rng.ty();
                let data = format!("e{i}");
                Pub { id: p.publish_typed(TOPIC, ty, &data), data, ty }
            })
            .collect();

        // ---- phase 1: immediate answers, several followers at once
        let mut combos = Vec::new();
        for start in 0..=STATIC {
            for (fi, filter) in FILTERS.iter().enumerate() {
                combos.push((start, *filter, MAXES[(start + fi) % MAXES.len()]));
            }
        }
        let addr = s.addr;
        let failures: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..FOLLOWERS)
                .map(|k| {
                    let combos = &combos;
                    let events = &events;
                    let empty = &empty.cursor;
                    scope.spawn(move || {
                        let mut failures = Vec::new();
                        for &(start, filter, max) in combos.iter().skip(k).step_by(FOLLOWERS) {
                            let from = if start == 0 { empty.clone() } else { events[start - 1].id.clone() };
                            let from_label = if start == 0 {
                                "the empty topic's cursor".to_string()
                            } else {
                                format!("e{}", start - 1)
                            };
                            let what =
                                format!("after {from_label} ({from}), types={}, max={max}", filter.unwrap_or("(none)"));
                            let want: Vec<Pub> =
                                events[start..].iter().filter(|e| passes(filter, e.ty)).cloned().collect();
                            let f = follow(addr, TOPIC, &from, filter, max);
                            let result = match f.error {
                                Some(e) => Err(format!(
                                    "{what}: {e}\n  got so far {:?}\n  polls: {}",
                                    f.got.iter().map(|g| label(&g.data, g.ty)).collect::<Vec<_>>(),
                                    f.trace.join(" | ")
                                )),
                                None => compare(&f.got, &want, &what, &f.trace),
                            };
                            failures.extend(result.err());
                        }
                        failures
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("follower thread")).collect()
        });
        assert!(
            failures.is_empty(),
            "{} of {} follow-ups of {TOPIC} ({}) did not get exactly their events; the first ones:\n{}",
            failures.len(),
            combos.len(),
            events.iter().map(|e| label(&e.data, e.ty)).collect::<Vec<_>>().join(" "),
            failures.iter().take(4).cloned().collect::<Vec<_>>().join("\n")
        );

        // Without a cursor a poll waits for the next event: with timeout=0 it is a 204 whose
        // id misses nothing, and following it finds nothing, as nothing was published since.
        for filter in FILTERS {
            let r = lp(s, &sub_path(TOPIC, None, &query(filter, 1000, "0")));
            assert_eq!(r.status, 204, "no cursor, types={filter:?}, timeout=0: nothing newer than now: {r:?}");
            let f = follow(addr, TOPIC, &r.cursor, filter, 1000);
            assert!(
                f.error.is_none() && f.got.is_empty(),
                "following the 204's id {} (no cursor, types={filter:?}) must find nothing: {:?} {}",
                r.cursor,
                f.error,
                f.trace.join(" | ")
            );
        }

        // ---- phase 2: held polls released together, followed exactly
        let live_types: Vec<Option<&'static str>> = (0..LIVE).map(|_| rng.ty()).collect();
        let newest = events.last().unwrap().id.clone();
        let specs: [(bool, Option<&'static str>, usize); 10] = [
            (true, None, 1),
            (true, None, 1000),
            (false, None, 2),
            (true, Some("a"), 1),
            (false, Some("a"), 3),
            (true, Some("a,b"), 1),
            (true, Some("message"), 1),
            (false, Some("message"), 1000),
            (true, Some("message,c"), 2),
            (true, Some("b"), 1),
        ];
        let mut held = Vec::new();
        for (from_newest, filter, max) in specs {
            let expect = live_types.iter().filter(|t| passes(filter, **t)).count();
            assert!(expect > 0, "the seed must give every filter an event (types={filter:?})");
            let cursor = from_newest.then_some(newest.as_str());
            let path = sub_path(TOPIC, cursor, &query(filter, max, "5"));
            // Live once written (API.md §7): the first poll goes out before anything is published.
            let mut conn = s.connect();
            conn.write_all(get_req(&path).as_bytes()).unwrap();
            let name = format!(
                "held poller from {}, types={}, max={max}",
                if from_newest { "the newest id" } else { "no cursor" },
                filter.unwrap_or("(none)")
            );
            held.push((Held { name, filter, max, conn, expect }, (filter, from_newest)));
        }
        // A fresh publisher connection: the first may have idled out during phase 1.
        let mut p = Publisher::new(s);
        let done = AtomicBool::new(false);
        let running = AtomicUsize::new(held.len());
        let (published, results) = std::thread::scope(|scope| {
            let handles: Vec<_> = held
                .into_iter()
                .map(|(h, spec)| {
                    let (done, running) = (&done, &running);
                    let name = h.name.clone();
                    (name, spec, scope.spawn(move || run_held(h, TOPIC, done, running)))
                })
                .collect();
            // Publish in bursts of 1-3, each once every running poller is held, so one publish
            // releases many polls at once.
            let mut published = Vec::new();
            let mut i = 0;
            while i < LIVE {
                let burst = 1 + rng.next(3) as usize;
                let _ = wait_until_or_timeout(|| held_polls(s) >= running.load(Ordering::SeqCst));
                for ty in live_types.iter().skip(i).take(burst) {
                    let data = format!("h{i}");
                    published.push(Pub { id: p.publish_typed(TOPIC, *ty, &data), data, ty: *ty });
                    i += 1;
                }
            }
            done.store(true, Ordering::SeqCst);
            let results: Vec<_> =
                handles.into_iter().map(|(name, spec, h)| (name, spec, h.join().expect("poller thread"))).collect();
            (published, results)
        });
        let mut failures = Vec::new();
        for (name, (filter, from_newest), (got, trace, err)) in results {
            // A poll without a cursor waits for the next event: one registered late (the
            // metrics gauge says held before its owner has it) may start later, but from its
            // first event on it must miss nothing.
            let start = match (from_newest, got.first()) {
                (false, Some(first)) => published.iter().position(|e| e.id == first.id).unwrap_or(0),
                _ => 0,
            };
            let want: Vec<Pub> = published[start..].iter().filter(|e| passes(filter, e.ty)).cloned().collect();
            if let Some(e) = err {
                failures.push(format!("{name}: {e}\n  polls: {}", trace.join(" | ")));
            } else if let Err(e) = compare(&got, &want, &name, &trace) {
                failures.push(e);
            }
        }
        assert!(
            failures.is_empty(),
            "held polls of {TOPIC} did not continue exactly ({}):\n{}",
            published.iter().map(|e| label(&e.data, e.ty)).collect::<Vec<_>>().join(" "),
            failures.join("\n")
        );
    });
}

/// Like `wait_until`, but only reports whether the condition held in time: waiting for every
/// poll to be held makes the releases shared, but correctness does not depend on it.
fn wait_until_or_timeout(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

// ---------------------------------------------------------------- 3. cursors of other topics

/// The epoch part of a cursor (what comes before the `-`), if it has that shape.
fn epoch_of(id: &str) -> Option<&str> {
    id.split_once('-').map(|(e, _)| e)
}

/// Flags for servers whose SSE and WebSocket streams are read until an event that a broken
/// server may never send: with heartbeats (and pings) rarer than `DEADLINE`, such a read
/// times out and fails instead of being kept alive forever.
const QUIET: [&str; 2] = ["--heartbeat", "60"];

/// How a stream item is shown in messages: `gap T missed_from C` or `data (id)`.
fn gap_label(topic: &str, missed: &str) -> String {
    format!("gap {topic} missed_from {missed}")
}

fn event_label(data: &str, id: &str) -> String {
    format!("{data} ({id})")
}

/// A cursor of topic `pa` sent to topic `pb…` whose cursors happen to look alike (same epoch
/// part) must still be a gap there, on SSE, long-poll and WebSocket.
#[test]
fn a_cursor_of_one_topic_is_never_a_position_in_another() {
    every_driver(2, &QUIET, |s| {
        let mut p = Publisher::new(s);
        let a = p.publish("pa", "a1");
        // Find a topic whose first cursor has the same epoch part as pa's, if any.
        let mut chosen: Option<(String, String)> = None;
        let mut first: Option<(String, String)> = None;
        for i in 0..64 {
            let topic = format!("pb{i}");
            let id = p.publish(&topic, "b1");
            if first.is_none() {
                first = Some((topic.clone(), id.clone()));
            }
            if epoch_of(&id).is_some() && epoch_of(&id) == epoch_of(&a) {
                chosen = Some((topic, id));
                break;
            }
        }
        let alike = chosen.is_some();
        let (tb, b1) = chosen.or(first).unwrap();
        let b2 = p.publish(&tb, "b2");
        let b3 = p.publish(&tb, "b3");
        let note = if alike {
            format!("{tb}'s cursors ({b1}, …) have the epoch part of pa's cursor {a}")
        } else {
            format!("no topic's cursor had pa's epoch part; {tb}'s first is {b1}")
        };
        let mut ids = vec![b1, b2, b3];
        let mut data: Vec<String> = vec!["b1".into(), "b2".into(), "b3".into()];
        let want = |ids: &[String], data: &[String]| -> Vec<String> {
            std::iter::once(gap_label(&tb, &a)).chain(ids.iter().zip(data).map(|(i, d)| event_label(d, i))).collect()
        };
        let no_gap = |transport: &str, got: &[String]| {
            assert!(
                got.first().is_some_and(|g| g.starts_with("gap ")),
                "{transport} {tb} resumed with pa's cursor {a}: it must start with a gap, but pa's cursor was taken \
                 as a position in {tb} ({note}): got {got:?}"
            );
        };

        // SSE, read until the live b4.
        let mut sub = SseClient::open(s, &format!("/sub/{tb}"), &[&format!("Last-Event-ID: {a}")]);
        ids.push(p.publish(&tb, "b4"));
        data.push("b4".into());
        let mut got = Vec::new();
        loop {
            let ev = sub.next_event().unwrap_or_else(|| panic!("SSE {tb}: the stream ended or stalled after {got:?}"));
            let end = ev.data == "b4";
            got.push(if ev.event.as_deref() == Some("herald.gap") {
                let (t, m) = gap_data(&ev.data, "SSE gap");
                gap_label(&t, &m)
            } else {
                assert_eq!(ev.event, None, "SSE {tb}: untyped events have no event field: {ev:?}");
                event_label(&ev.data, ev.id.as_deref().unwrap_or("no id"))
            });
            if end {
                break;
            }
        }
        no_gap("SSE", &got);
        assert_eq!(
            got,
            want(&ids, &data),
            "SSE {tb} resumed with pa's cursor {a}: a gap, then everything history has ({note})"
        );

        // long-poll
        let r = lp(s, &sub_path(&tb, Some(&a), "timeout=0"));
        assert_eq!(r.status, 200, "long-poll {tb} with pa's cursor {a}: {r:?}");
        let got: Vec<String> = r
            .events
            .iter()
            .map(|e| {
                assert_eq!(e["topic"].as_str(), Some(tb.as_str()), "long-poll {tb}: element of another topic: {e}");
                if e["type"].as_str() == Some("herald.gap") {
                    let (t, m) = gap_data(str_of(e, "data"), "long-poll gap");
                    gap_label(&t, &m)
                } else {
                    event_label(str_of(e, "data"), str_of(e, "id"))
                }
            })
            .collect();
        no_gap("long-poll", &got);
        assert_eq!(
            got,
            want(&ids, &data),
            "long-poll {tb} with pa's cursor {a}: a gap, then everything history has ({note})"
        );
        assert_eq!(r.cursor, ids[3], "long-poll {tb}: last_event_id is b4's id");

        // WebSocket, read until b4.
        let mut w = ws_with(s, &format!("/sub/{tb}?last_event_id={}", pct(&a)), &[]);
        let mut got = Vec::new();
        loop {
            let v = w.next_json();
            let end = v["data"] == "b4";
            got.push(match str_of(&v, "event") {
                "gap" => {
                    assert_eq!(
                        v.as_object().map(|o| o.len()),
                        Some(3),
                        "WebSocket gap: exactly event, topic, missed_from: {v}"
                    );
                    gap_label(str_of(&v, "topic"), str_of(&v, "missed_from"))
                }
                "message" => {
                    assert_eq!(str_of(&v, "topic"), tb, "WebSocket {tb}: message of another topic: {v}");
                    event_label(str_of(&v, "data"), str_of(&v, "id"))
                }
                other => panic!("WebSocket {tb}: unexpected message {other:?}: {v}"),
            });
            if end {
                break;
            }
        }
        no_gap("WebSocket", &got);
        assert_eq!(
            got,
            want(&ids, &data),
            "WebSocket {tb} with pa's cursor {a}: a gap, then everything history has ({note})"
        );
    });
}

// ---------------------------------------------------------------- 4. unusable resume ids

/// One item of a resumed stream for one topic: a gap (with `missed_from`) or an event's data.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Gap(String),
    Event(String),
}

/// Data of event `n` of `topic`: `{topic}#{n}` (`#` is never part of a topic name).
fn tagged(topic: &str, n: &str) -> String {
    format!("{topic}#{n}")
}

fn topic_of_data(data: &str) -> &str {
    data.split('#').next().unwrap_or("")
}

/// What one resume attempt sends, and what each topic may answer.
struct Case {
    what: &'static str,
    id: String,
    /// The id is a well-formed list of one cursor per topic: `missed_from` is exactly that
    /// topic's part. Otherwise the whole id or that topic's part is accepted.
    exact_parts: bool,
}

/// Checks one topic's items of a resumed stream: a gap whose `missed_from` is what was sent
/// for it, then its whole history, then the live event — or, when the id holds one of its own
/// cursors (in its place or not), exactly the events after it (nothing is lost either way).
fn check_topic_items(
    transport: &str,
    case: &Case,
    idx: usize,
    topic: &str,
    items: &[Item],
    history: &[(String, String)],
    live: &str,
) {
    let what = format!("{transport}, {} (id {:?}), topic {topic}", case.what, case.id);
    let Some((last, before)) = items.split_last() else { panic!("{what}: nothing arrived for this topic") };
    assert_eq!(last, &Item::Event(live.to_string()), "{what}: the live event must come last: {items:?}");
    let part = case.id.split(',').nth(idx).map(str::trim).filter(|p| !p.is_empty());
    let all: Vec<Item> = history.iter().map(|(_, d)| Item::Event(d.clone())).collect();
    match before.first() {
        Some(Item::Gap(missed)) => {
            let ok = if case.exact_parts {
                part == Some(missed.as_str())
            } else {
                *missed == case.id || part == Some(missed.as_str())
            };
            assert!(
                ok,
                "{what}: gap missed_from {missed:?} must be what was sent for this topic ({})",
                if case.exact_parts { format!("{part:?}") } else { format!("{:?} or {part:?}", case.id) }
            );
            assert_eq!(&before[1..], &all[..], "{what}: after the gap, everything history has, each once, in order");
        }
        _ => {
            // A cursor of this topic anywhere in the id is its position (matched by epoch,
            // whatever the order the client sent the cursors in).
            let own = case.id.split(',').map(str::trim).find_map(|p| history.iter().position(|(id, _)| id == p));
            let Some(k) = own else {
                panic!("{what}: the stream must start this topic with a gap (API.md §7), got {items:?}");
            };
            let rest: Vec<Item> = history[k + 1..].iter().map(|(_, d)| Item::Event(d.clone())).collect();
            assert_eq!(
                before,
                &rest[..],
                "{what}: resumed without a gap from its own cursor {:?}: exactly the events after it",
                part
            );
        }
    }
}

/// An SSE or WebSocket resume with an id the server cannot use (malformed, wrong number of
/// cursors, other topics' cursors) still opens the stream: each such topic starts with a
/// gap, then its history, then live events. A long-poll may refuse it with a JSON 400.
#[test]
fn unusable_resume_ids_still_open_sse_and_websocket_streams() {
    every_driver(2, &QUIET, |s| {
        let mut p = Publisher::new(s);
        let mut hist: [Vec<(String, String)>; 2] = [Vec::new(), Vec::new()];
        let topics = ["ra", "rb"];
        for (t, n) in [(0, "1"), (0, "2"), (1, "1")] {
            let d = tagged(topics[t], n);
            hist[t].push((p.publish(topics[t], &d), d));
        }
        let rc = p.publish("rc", &tagged("rc", "1"));
        let rd = p.publish("rd", &tagged("rd", "1"));
        let cases = |hist: &[Vec<(String, String)>; 2]| {
            vec![
                Case { what: "garbage", id: "not-a-cursor".into(), exact_parts: false },
                Case { what: "one cursor for two topics", id: hist[0][0].0.clone(), exact_parts: false },
                Case {
                    what: "three cursors for two topics",
                    id: format!("{},{},{}", hist[0][0].0, hist[1][0].0, hist[0][1].0),
                    exact_parts: false,
                },
                Case { what: "cursors of other topics", id: format!("{rc},{rd}"), exact_parts: true },
                Case {
                    what: "each the other's cursor",
                    id: format!("{},{}", hist[1][0].0, hist[0][0].0),
                    exact_parts: true,
                },
            ]
        };
        let mut n = 0;
        for transport in ["SSE", "WebSocket"] {
            for case in cases(&hist) {
                n += 1;
                let what = format!("{transport} /sub/ra,rb, {} (id {:?})", case.what, case.id);
                let mut items: [Vec<Item>; 2] = [Vec::new(), Vec::new()];
                let lives = [tagged("ra", &format!("live{n}")), tagged("rb", &format!("live{n}"))];
                let topic_idx =
                    |t: &str| topics.iter().position(|x| *x == t).unwrap_or_else(|| panic!("{what}: topic {t:?}"));
                let seen_live =
                    |items: &[Vec<Item>; 2]| (0..2).all(|i| items[i].contains(&Item::Event(lives[i].clone())));
                if transport == "SSE" {
                    let mut sub = match SseClient::try_open(s, "/sub/ra,rb", &[&format!("Last-Event-ID: {}", case.id)])
                    {
                        Ok(c) => c,
                        Err(r) => panic!(
                            "{what}: the stream must still open (200, API.md §7: EventSource never reconnects \
                             after a non-200), got {} {}",
                            r.status,
                            r.text()
                        ),
                    };
                    for (i, t) in topics.iter().enumerate() {
                        p.publish(t, &lives[i]);
                    }
                    while !seen_live(&items) {
                        let ev = sub
                            .next_event()
                            .unwrap_or_else(|| panic!("{what}: the stream ended or stalled; so far {items:?}"));
                        if ev.event.as_deref() == Some("herald.gap") {
                            let (t, missed) = gap_data(&ev.data, &what);
                            items[topic_idx(&t)].push(Item::Gap(missed));
                        } else {
                            items[topic_idx(topic_of_data(&ev.data))].push(Item::Event(ev.data));
                        }
                    }
                } else {
                    let path = format!("/sub/ra,rb?last_event_id={}", pct(&case.id));
                    let mut w = match try_ws(s, &path, &[]) {
                        Ok(w) => w,
                        Err(r) => panic!(
                            "{what}: the upgrade must still succeed (101, API.md §7), got {} {}",
                            r.status,
                            r.text()
                        ),
                    };
                    for (i, t) in topics.iter().enumerate() {
                        p.publish(t, &lives[i]);
                    }
                    while !seen_live(&items) {
                        let v = w.next_json();
                        match str_of(&v, "event") {
                            "gap" => {
                                let obj = v.as_object().unwrap();
                                assert_eq!(
                                    obj.len(),
                                    3,
                                    "{what}: gap carries exactly event, topic and missed_from: {v}"
                                );
                                let missed = str_of(&v, "missed_from");
                                assert!(
                                    v["missed_from"].as_str().is_some_and(|m| !m.is_empty()),
                                    "{what}: gap without missed_from: {v}"
                                );
                                items[topic_idx(str_of(&v, "topic"))].push(Item::Gap(missed.to_string()));
                            }
                            "message" => {
                                items[topic_idx(str_of(&v, "topic"))].push(Item::Event(str_of(&v, "data").to_string()))
                            }
                            other => panic!("{what}: unexpected message {other:?}: {v}"),
                        }
                    }
                }
                for (i, t) in topics.iter().enumerate() {
                    check_topic_items(transport, &case, i, t, &items[i], &hist[i], &lives[i]);
                }
                for (i, t) in topics.iter().enumerate() {
                    // The live events are history for the next case. Their ids are not needed:
                    // no case resumes from them.
                    hist[i].push((format!("<live {t} {n}>"), lives[i].clone()));
                }
            }
        }

        // Long-poll: a JSON 400, or a 200 starting each topic with a gap.
        for id in ["not-a-cursor", hist[0][0].0.as_str()] {
            let path = sub_path("ra,rb", Some(id), "timeout=0");
            let r = request(s, &get_req(&path));
            if r.status == 400 {
                assert_json_error(&r, 400);
                continue;
            }
            assert_eq!(
                r.status,
                200,
                "long-poll {path}: a 400 with the JSON error or a 200 with gaps, got {} {}",
                r.status,
                r.text()
            );
            let p = parse_poll(r, &path).unwrap_or_else(|e| panic!("{e}"));
            for t in topics {
                let firsts: Vec<&Value> = p.events.iter().filter(|e| e["topic"].as_str() == Some(t)).collect();
                let first =
                    firsts.first().unwrap_or_else(|| panic!("long-poll {path}: nothing for {t}: {:?}", p.events));
                assert_eq!(
                    first["type"].as_str(),
                    Some("herald.gap"),
                    "long-poll {path}: {t} must start with a gap: {first}"
                );
                let (gt, _) = gap_data(str_of(first, "data"), &path);
                assert_eq!(gt, t, "long-poll {path}: gap topic");
            }
        }
    });
}

// ---------------------------------------------------------------- 5. /eventsource and group order

const SECRET: &str = "S3cret";

/// `/eventsource` ids resume exactly whatever order the token lists its groups in.
#[test]
fn eventsource_resume_does_not_depend_on_the_order_of_groups() {
    every_driver(2, &["--jwt-secret", SECRET, "--heartbeat", "60"], |s| {
        let t1 = herald::auth::jwt::sign(&serde_json::json!({"sub": "u1", "groups": ["g1", "g2"]}), SECRET.as_bytes());
        let t2 = herald::auth::jwt::sign(&serde_json::json!({"sub": "u1", "groups": ["g2", "g1"]}), SECRET.as_bytes());
        let topics = ["broadcast", "group:g1", "group:g2"];
        let mut p = Publisher::new(s);

        let mut c = SseClient::open(s, "/eventsource", &[&format!("Authorization: Bearer {t1}")]);
        // Unequal counts per topic, so a cursor read as another topic's position shows.
        let before = [("group:g1", "1"), ("group:g1", "2"), ("group:g2", "1"), ("broadcast", "1")];
        for (t, n) in before {
            p.publish(t, &tagged(t, n));
        }
        let mut seen = BTreeSet::new();
        for _ in 0..before.len() {
            let ev = c.next_event().expect("an event of token 1's stream");
            assert_ne!(ev.event.as_deref(), Some("herald.gap"), "no gap on a fresh stream: {ev:?}");
            assert!(seen.insert(ev.data.clone()), "token 1's stream repeated {}", ev.data);
        }
        let want: BTreeSet<String> = before.iter().map(|(t, n)| tagged(t, n)).collect();
        assert_eq!(seen, want, "token 1's stream: the events of its topics");
        let id = c.last_event_id.clone().expect("an id was seen");
        drop(c);

        let missed = [("group:g1", "3"), ("group:g2", "2"), ("group:g2", "3"), ("broadcast", "2")];
        for (t, n) in missed {
            p.publish(t, &tagged(t, n));
        }
        let mut c = SseClient::open(
            s,
            "/eventsource",
            &[&format!("Authorization: Bearer {t2}"), &format!("Last-Event-ID: {id}")],
        );
        for t in topics {
            p.publish(t, &tagged(t, "end"));
        }
        let mut got: Vec<Vec<String>> = vec![Vec::new(); topics.len()];
        let mut gaps = Vec::new();
        let ended = |got: &[Vec<String>]| topics.iter().enumerate().all(|(i, t)| got[i].contains(&tagged(t, "end")));
        while !ended(&got) {
            let ev = c.next_event().unwrap_or_else(|| panic!("token 2's stream ended or stalled; so far {got:?}"));
            if ev.event.as_deref() == Some("herald.gap") {
                gaps.push(ev.data);
                continue;
            }
            let t = topic_of_data(&ev.data);
            let i =
                topics.iter().position(|x| *x == t).unwrap_or_else(|| panic!("event of an unexpected topic: {ev:?}"));
            got[i].push(ev.data);
        }
        let wants: Vec<Vec<String>> = topics
            .iter()
            .map(|t| {
                let mut want: Vec<String> = missed.iter().filter(|(x, _)| x == t).map(|(x, n)| tagged(x, n)).collect();
                want.push(tagged(t, "end"));
                want
            })
            .collect();
        let wrong: Vec<String> = topics
            .iter()
            .enumerate()
            .filter(|(i, _)| got[*i] != wants[*i])
            .map(|(i, t)| format!("{t}: got {:?}, want {:?}", got[i], wants[i]))
            .collect();
        assert!(
            gaps.is_empty() && wrong.is_empty(),
            "resuming /eventsource with id {id:?} (token 1 listed groups [g1, g2], token 2 [g2, g1]) must deliver \
             exactly the missed events of every topic, each once, then the live one, and no gap;\n  gaps: {gaps:?}\n  {}",
            wrong.join("\n  ")
        );
    });
}

/// An outside attack: a multi-topic id sent with its cursors in another order than the URL's
/// topics (a URL built from a set, or `/sub/b,a` resumed with the id of `/sub/a,b`) gave both
/// topics a gap and a full replay: every event again. Each cursor is matched to its topic.
#[test]
fn a_multi_topic_id_resumes_whatever_the_order_of_its_cursors() {
    every_driver(2, &[], |s| {
        let a = publish_ok(s, "ord-a", "a0");
        let b = publish_ok(s, "ord-b", "b0");
        let mut a = a;
        for path in ["/sub/ord-a,ord-b", "/sub/ord-b,ord-a"] {
            // The cursors in the other order than the path's.
            let id = if path.starts_with("/sub/ord-a") { format!("{b},{a}") } else { format!("{a},{b}") };
            let mut c = SseClient::open(s, path, &[&format!("Last-Event-ID: {id}")]);
            a = publish_ok(s, "ord-a", "live");
            let e = c.next_event().expect("an event");
            assert_eq!((e.event.as_deref(), e.data.as_str()), (None, "live"), "{path} from {id}: no gap, no replay");
        }
        // The same for a WebSocket's subscribe.
        let mut w = ws_with(s, "/sub/ord-c", &[]);
        let reply = w.call(serde_json::json!({"method": "subscribe", "id": 1, "topics": ["ord-a", "ord-b"], "last_event_id": format!("{b},{a}")}));
        assert_eq!(reply["event"], "subscribed", "{reply}");
        publish_ok(s, "ord-b", "live-b");
        let m = w.next_json();
        assert_eq!((m["event"].as_str(), m["data"].as_str()), (Some("message"), Some("live-b")), "{m}");
    });
}

//! The `churn` scenario: what watching a topic's occupancy costs a server while its
//! subscribers come and go (API.md §9, `$occupancy:{topic}`).
//!
//! N SSE subscribers hold one topic (or `--topics` T) open; for `--duration` seconds, `--churn` of them a second
//! are closed and replaced by new ones (so the count moves all the time and ends at N), while
//! `--watchers` SSE streams follow `$occupancy:{topic}`. The server's CPU over the churn,
//! divided by the connections replaced, is the cost of a replacement; run with 0 watchers and
//! with some, the difference is what the occupancy streams cost. The watchers' events are
//! checked too: the last value must be N (and `GET /topics/{topic}` must agree), and no two
//! events of one watcher may arrive much closer than the interval.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Args as ClapArgs;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use crate::sse::{Dechunk, SseParser};
use crate::{occupancy, procstat};

#[derive(ClapArgs, Clone)]
pub struct Args {
    /// Server address (loopback).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Server process, for CPU from /proc.
    #[arg(long)]
    server_pid: u32,
    /// Subscribers held open on the topic.
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// Subscribers closed and replaced per second.
    #[arg(long, default_value_t = 500.0)]
    churn: f64,
    /// Seconds of churn.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Topics the subscribers spread over (subscriber k on topic k mod this).
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// SSE streams following `$occupancy:{topic}` (watcher i on topic i mod --topics).
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// The server's `occupancy_interval`, in seconds (for the check of the events' spacing).
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    #[command(flatten)]
    tag: crate::Tag,
}

/// What the watchers saw: per watcher, (arrival, subscribers) of each occupancy event.
type Seen = Rc<RefCell<Vec<Vec<(Instant, u64)>>>>;

/// Opens an SSE stream of `path` and reads until its head is in; the connection, or why not.
async fn open(addr: SocketAddr, path: &str) -> Result<(TcpStream, Vec<u8>), String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: load\r\nAccept: text/event-stream\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before the head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 200") {
                return Err(String::from_utf8_lossy(&buf[..end]).into_owned());
            }
            return Ok((s, buf.split_off(end + 4)));
        }
    }
}

/// A subscriber held open until aborted (its bytes read and dropped).
async fn subscriber(addr: SocketAddr, path: String) -> Result<AbortHandle, String> {
    let (mut s, _) = open(addr, &path).await?;
    let task = tokio::task::spawn_local(async move {
        let mut sink = [0u8; 4096];
        while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    Ok(task.abort_handle())
}

/// A watcher of `path`: records each occupancy event's count, with its arrival, in `seen[i]`.
async fn watcher(addr: SocketAddr, path: String, i: usize, seen: Seen) -> Result<(), String> {
    let (mut s, rest) = open(addr, &path).await?;
    tokio::task::spawn_local(async move {
        let mut parser = SseParser::default();
        // herald streams are chunked; the head's read may have taken the first chunk too.
        let mut dechunk = Dechunk::default();
        let mut plain = Vec::new();
        let mut feed = |bytes: &[u8], parser: &mut SseParser| {
            plain.clear();
            dechunk.feed(bytes, &mut plain);
            parser.feed(&plain, |data| {
                let n = serde_json::from_slice::<Value>(data).ok().and_then(|v| v["subscribers"].as_u64());
                if let Some(n) = n {
                    seen.borrow_mut()[i].push((Instant::now(), n));
                }
            });
        };
        feed(&rest, &mut parser);
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            feed(&buf[..n], &mut parser);
        }
    });
    Ok(())
}

pub async fn run(a: Args) -> Value {
    let run = crate::stamp::now_micros() % 1_000_000_000;
    let topics = a.topics.max(1);
    let topic = |k: usize| format!("churn{run}-{}", k % topics);
    let sub_path = |k: usize| format!("/sub/{}", topic(k));
    let seen: Seen = Rc::new(RefCell::new(vec![Vec::new(); a.watchers]));
    let mut failures = 0usize;
    for i in 0..a.watchers {
        if watcher(a.addr, format!("/sub/$occupancy:{}", topic(i)), i, seen.clone()).await.is_err() {
            failures += 1;
        }
    }
    let mut held: Vec<Option<AbortHandle>> = Vec::with_capacity(a.subscribers);
    for chunk in (0..a.subscribers).collect::<Vec<_>>().chunks(64) {
        let opened = futures_join(chunk.iter().map(|&k| subscriber(a.addr, sub_path(k)))).await;
        for r in opened {
            match r {
                Ok(h) => held.push(Some(h)),
                Err(e) => {
                    failures += 1;
                    if failures < 3 {
                        eprintln!("  churn: a subscriber failed: {e}");
                    }
                    held.push(None);
                }
            }
        }
    }
    // Closed slots to open in place of the ones closed: a tenth more than held.
    let spare = (a.subscribers / 10).max(1);
    let mut closed: Vec<usize> = (held.len()..held.len() + spare).collect();
    held.resize_with(held.len() + spare, || None);
    eprintln!(
        "  churn: {} subscribers on {topics} topic(s), {} watchers; churning {} a second",
        a.subscribers, a.watchers, a.churn
    );

    // Replace `churn` a second, in ticks of 10 ms, each tick's at once.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ run;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as usize
    };
    let cpu_before = procstat::cpu_secs(Some(a.server_pid));
    let started = Instant::now();
    let (mut replaced, mut attempted) = (0usize, 0usize);
    while started.elapsed().as_secs_f64() < a.duration {
        // As many as are due by now (at most 256 at once, so a slow server is not flooded).
        let due = (a.churn * started.elapsed().as_secs_f64()) as usize;
        let n = due.saturating_sub(attempted).min(256);
        attempted += n;
        // Each replacement closes an open slot and opens a closed one, of another topic as
        // often as not: the total stays N while each topic's count moves.
        let mut slots = Vec::with_capacity(n);
        for _ in 0..n {
            let Some(k) = (0..16).map(|_| next() % held.len()).find(|&k| held[k].is_some()) else { continue };
            if closed.is_empty() {
                break;
            }
            let open = closed.swap_remove(next() % closed.len());
            if let Some(h) = held[k].take() {
                h.abort();
            }
            closed.push(k);
            slots.push(open);
        }
        let opened = futures_join(slots.iter().map(|&k| subscriber(a.addr, sub_path(k)))).await;
        for (&k, r) in slots.iter().zip(opened) {
            match r {
                Ok(h) => {
                    held[k] = Some(h);
                    replaced += 1;
                }
                Err(_) => {
                    failures += 1;
                    closed.push(k);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let churn_secs = started.elapsed().as_secs_f64();
    let cpu = procstat::used(cpu_before, procstat::cpu_secs(Some(a.server_pid)));
    // What each topic holds open now.
    let mut open_now = vec![0u64; topics];
    for (k, h) in held.iter().enumerate() {
        open_now[k % topics] += u64::from(h.is_some());
    }

    // Every watcher must come to the count held open; how long that took after the churn.
    let stopped = Instant::now();
    let settled = loop {
        let all =
            seen.borrow().iter().enumerate().all(|(i, w)| w.last().is_some_and(|&(_, n)| n == open_now[i % topics]));
        if all {
            break Some(stopped.elapsed().as_secs_f64());
        }
        if stopped.elapsed() > Duration::from_secs(10) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let expected: Vec<(String, u64)> = (0..topics.min(100)).map(|t| (topic(t), open_now[t])).collect();
    let checked = occupancy::check(a.addr, &[], &expected).await;
    let seen = seen.borrow();
    let events: usize = seen.iter().map(Vec::len).sum();
    // The closest two events of one watcher came (arrival times: the server's spacing plus
    // the delivery's jitter).
    let closest = seen
        .iter()
        .flat_map(|w| w.windows(2).map(|p| p[1].0.saturating_duration_since(p[0].0).as_secs_f64()))
        .fold(f64::INFINITY, f64::min);
    for h in held.into_iter().flatten() {
        h.abort();
    }
    let per_watcher = if a.watchers > 0 { events as f64 / a.watchers as f64 } else { 0.0 };
    let mut report = json!({
        "scenario": "churn",
        "subscribers": a.subscribers,
        "topics": topics,
        "watchers": a.watchers,
        "failures": failures,
        "churn_per_sec": replaced as f64 / churn_secs,
        "replaced": replaced,
        "churn_secs": churn_secs,
        "server_cpu_secs": cpu,
        "server_cpu_share": cpu.map(|c| c / churn_secs),
        "server_cpu_us_per_replacement": cpu.map(|c| c * 1e6 / replaced.max(1) as f64),
        "occupancy_events_per_watcher": per_watcher,
        "occupancy_events_per_watcher_per_sec": per_watcher / (churn_secs + settled.unwrap_or(0.0)),
        "closest_events_secs": if closest.is_finite() { json!(closest) } else { Value::Null },
        "interval_secs": a.interval,
        "settled_secs": settled,
        "final_count": open_now.iter().sum::<u64>(),
        "occupancy": checked,
    });
    a.tag.mark(&mut report);
    report
}

/// Runs `futures` at once on this thread and gives their outputs in order.
async fn futures_join<T: 'static>(
    futures: impl Iterator<Item = impl std::future::Future<Output = T> + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.map(tokio::task::spawn_local).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("a spawned open"));
    }
    out
}

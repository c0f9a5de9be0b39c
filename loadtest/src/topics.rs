//! The `topics` scenario: what a topic costs a server, and whether it gets that memory back.
//!
//! Two shapes, each meant for a freshly started server:
//! - **published** (the default): one small event is published to each of N new topics, over
//!   one keep-alive connection, pipelined in batches; the server's RSS growth divided by N is
//!   the cost of a topic holding one event. Then nothing happens until the server has
//!   forgotten them (its history TTL must be short: `--history-ttl 2` for herald,
//!   `nchan_message_timeout 2s` for nchan), and RSS is read again, against the baseline.
//!   "Forgotten" is herald's `herald_topics` gauge reaching 0 when the server answers
//!   `/metrics` with it; otherwise `--forget-wait` seconds.
//! - **subscribed** (`--per-stream K`): S SSE streams, each on the same K topics, then S more,
//!   each on K topics of its own (S·K topics, nothing published); the second RSS growth less
//!   the first, divided by S·K, is what a topic with a subscriber and no history costs beyond
//!   its subscriber's connection. The streams' topics go in one path, comma-separated (herald
//!   takes up to 64; nchan splits them with `nchan_channel_id_split_delimiter`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args as ClapArgs;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{conn, procstat, publisher};

#[derive(ClapArgs, Clone)]
pub struct Args {
    /// Server address (loopback).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Server process, for RSS from /proc.
    #[arg(long)]
    server_pid: u32,
    /// Topics made (published: one event each; subscribed: streams × --per-stream).
    #[arg(long, default_value_t = 100_000)]
    topics: usize,
    /// Subscribed shape: topics per SSE stream (streams = topics / this, opened twice).
    #[arg(long)]
    per_stream: Option<usize>,
    /// Publish path; `{topic}` is replaced.
    #[arg(long, default_value = "/pub/{topic}")]
    pub_path: String,
    /// Subscribe path; `{topics}` is replaced by the stream's topics, comma-separated.
    #[arg(long, default_value = "/sub/{topics}")]
    sub_path: String,
    /// Published shape: the longest wait for the topics to be forgotten, in seconds.
    #[arg(long, default_value_t = 60.0)]
    forget_wait: f64,
    #[command(flatten)]
    tag: crate::Tag,
}

/// The event published to each topic: 7 bytes, as small as per-user notices get.
const EVENT: &[u8] = b"hello!!";

/// Publish requests written before their answers are read.
const BATCH: usize = 500;

pub async fn run(a: Args) -> Value {
    let started = Instant::now();
    // A prefix of this run's own: a server kept from an earlier run has no topic of ours.
    let run = crate::stamp::now_micros() % 1_000_000_000;
    let mut report = match a.per_stream {
        None => published(&a, run).await,
        Some(k) => subscribed(&a, run, k.max(1)).await,
    };
    a.tag.mark(&mut report);
    report["wall_secs"] = json!(started.elapsed().as_secs_f64());
    report
}

/// RSS in bytes, after the server had a moment to settle.
async fn settled_rss(pid: u32) -> Option<u64> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    procstat::rss_kib(pid).map(|k| k * 1024)
}

fn per(before: Option<u64>, after: Option<u64>, n: usize) -> Option<f64> {
    Some(after?.saturating_sub(before?) as f64 / n.max(1) as f64)
}

fn mb(b: Option<u64>) -> f64 {
    b.unwrap_or(0) as f64 / 1e6
}

async fn published(a: &Args, run: u64) -> Value {
    let before = settled_rss(a.server_pid).await;
    let t0 = Instant::now();
    let (ok, failed) = match publish_all(a, run).await {
        Ok(counts) => counts,
        Err(e) => {
            eprintln!("topics: publishing failed: {e}");
            (0, a.topics as u64)
        }
    };
    let publish_secs = t0.elapsed().as_secs_f64();
    let held = settled_rss(a.server_pid).await;
    let per_topic = per(before, held, ok as usize);
    eprintln!(
        "topics: {ok} of one {}-byte event ({failed} failed) in {publish_secs:.1} s: RSS {:.1} MB -> {:.1} MB, {:.0} B per topic",
        EVENT.len(),
        mb(before),
        mb(held),
        per_topic.unwrap_or(0.0)
    );
    let t1 = Instant::now();
    let gauge = forgotten(a).await;
    let forget_secs = t1.elapsed().as_secs_f64();
    // What a sweep frees is given back over the next ticks (the last trim comes at the first
    // tick, a second apart, that forgets none): read RSS until it has not fallen for 2 s.
    let mut after = settled_rss(a.server_pid).await;
    let mut steady = 0;
    for _ in 0..30 {
        let next = settled_rss(a.server_pid).await;
        if next < after {
            after = next;
            steady = 0;
        } else {
            steady += 1;
            if steady == 4 {
                break;
            }
        }
    }
    eprintln!(
        "topics: after {forget_secs:.1} s ({}): RSS {:.1} MB (baseline {:.1} MB)",
        match gauge {
            Some(true) => "herald_topics reached 0",
            Some(false) => "herald_topics still above 0",
            None => "no herald_topics gauge: waited --forget-wait",
        },
        mb(after),
        mb(before)
    );
    json!({
        "scenario": "topics", "shape": "published", "topics": ok, "failed": failed,
        "event_bytes": EVENT.len(), "publish_secs": publish_secs,
        "rss_before_kib": before.map(|b| b / 1024), "rss_held_kib": held.map(|b| b / 1024),
        "rss_bytes_per_topic": per_topic,
        "forget_secs": forget_secs, "forgotten_by_gauge": gauge,
        "rss_forgotten_kib": after.map(|b| b / 1024),
        "rss_forgotten_over_baseline": match (before, after) {
            (Some(b), Some(f)) if b > 0 => Some(f as f64 / b as f64 - 1.0),
            _ => None,
        },
    })
}

/// Publishes `EVENT` to each topic, `BATCH` requests at a time on one connection.
async fn publish_all(a: &Args, run: u64) -> std::io::Result<(u64, u64)> {
    let mut s = TcpStream::connect(a.addr).await?;
    s.set_nodelay(true)?;
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    for from in (0..a.topics).step_by(BATCH) {
        let to = (from + BATCH).min(a.topics);
        let mut req = Vec::new();
        for i in from..to {
            let path = a.pub_path.replace("{topic}", &format!("p{run}-{i}"));
            req.extend_from_slice(
                format!("POST {path} HTTP/1.1\r\nHost: load\r\nContent-Length: {}\r\n\r\n", EVENT.len()).as_bytes(),
            );
            req.extend_from_slice(EVENT);
        }
        s.write_all(&req).await?;
        let mut answered = 0;
        while answered < to - from {
            while let Some((len, good)) = publisher::next_answer(&buf) {
                buf.drain(..len);
                answered += 1;
                if good { ok += 1 } else { failed += 1 }
            }
            if answered == to - from {
                break;
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    Ok((ok, failed))
}

/// Waits until the server has forgotten every topic: `Some(reached)` when it reports
/// `herald_topics`, else `None` after `--forget-wait` seconds.
async fn forgotten(a: &Args) -> Option<bool> {
    let deadline = Instant::now() + Duration::from_secs_f64(a.forget_wait);
    let mut gauge = None;
    while Instant::now() < deadline {
        match topics_gauge(a.addr).await {
            Some(0) => return Some(true),
            Some(_) => gauge = Some(false),
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    gauge
}

/// The sum of `herald_topics` over the workers, if the server exposes it.
async fn topics_gauge(addr: SocketAddr) -> Option<u64> {
    let (status, text) = crate::occupancy::get(addr, "/metrics", &[]).await?;
    if status != 200 {
        return None;
    }
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("herald_topics{") || l.starts_with("herald_topics "))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() as u64)
}

async fn subscribed(a: &Args, run: u64, k: usize) -> Value {
    let streams = a.topics.div_ceil(k);
    let shared: Vec<String> = (0..k).map(|j| format!("s{run}-shared-{j}")).collect();
    let before = settled_rss(a.server_pid).await;
    let mut held = Vec::with_capacity(2 * streams);
    let mut failed = 0usize;
    let mut open = async |topics: String| match open_stream(a, &topics).await {
        Ok(s) => held.push(s),
        Err(e) => {
            failed += 1;
            if failed == 1 {
                eprintln!("topics: a stream failed: {e}");
            }
        }
    };
    for _ in 0..streams {
        open(shared.join(",")).await;
    }
    let mid = settled_rss(a.server_pid).await;
    for i in 0..streams {
        open((0..k).map(|j| format!("s{run}-{i}-{j}")).collect::<Vec<_>>().join(",")).await;
    }
    let after = settled_rss(a.server_pid).await;
    let shared_growth = mid.zip(before).map(|(m, b)| m.saturating_sub(b));
    let own_growth = after.zip(mid).map(|(f, m)| f.saturating_sub(m));
    let per_topic = match (own_growth, shared_growth) {
        (Some(o), Some(s)) => Some((o as f64 - s as f64) / (streams * k) as f64),
        _ => None,
    };
    eprintln!(
        "topics: {streams} streams on the same {k} topics: +{:.1} MB; {streams} on {k} of their own each: +{:.1} MB; \
         {:.0} B per topic with a subscriber ({failed} streams failed)",
        mb(shared_growth),
        mb(own_growth),
        per_topic.unwrap_or(0.0)
    );
    drop(held);
    json!({
        "scenario": "topics", "shape": "subscribed", "topics": streams * k, "streams": streams,
        "topics_per_stream": k, "failed": failed,
        "rss_before_kib": before.map(|b| b / 1024), "rss_shared_kib": mid.map(|b| b / 1024),
        "rss_own_kib": after.map(|b| b / 1024), "rss_bytes_per_topic": per_topic,
    })
}

/// Opens one SSE stream on `topics` and returns it once its answer's head says 200.
async fn open_stream(a: &Args, topics: &str) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(a.addr).await?;
    let path = a.sub_path.replace("{topics}", topics);
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: load\r\nAccept: text/event-stream\r\n\r\n").as_bytes()).await?;
    let mut buf = Vec::new();
    let (status, head, _) = conn::read_head(&mut s, &mut buf).await?;
    if status != 200 {
        let first = head.lines().next().unwrap_or("").to_string();
        return Err(std::io::Error::other(format!("answered {first}")));
    }
    Ok(s)
}

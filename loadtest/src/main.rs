//! herald-load: drives a fanout server from outside, over real sockets, and reports what it
//! measured — for herald and for the servers it is compared with.
//!
//! Scenarios (see `--help` of each):
//! - `idle`: N idle subscriptions; server RSS growth per connection (M1).
//! - `broadcast`: N subscribers of one topic; messages flat out or at a rate (M2, M3).
//! - `targeted`: N topics with one subscriber each (M4), single publishes or batches.
//! - `connect`: how fast subscriptions are opened (M5).
//! - `storm`: N subscribers cut at once, reconnecting with their last id (M6).
//! - `soak`: mixed transports, random cuts and resumes over a long run.
//! - `topics`: memory per topic, holding one event or one subscriber, and after forgetting
//!   (`topics.rs`).
//! - `churn`: subscribers of one topic replaced all the time while others watch its
//!   `$occupancy:` count: what the watching costs, and whether the counts keep up (`churn.rs`).
//! - `coldstart`: herald started and stopped: exec → /healthz, exec → first event, and a
//!   stop with many streams open (`coldstart.rs`).
//! - `floor`: no server — the machine's own floor for a fan-out (`floor.rs`).
//! - `report`: tables and plots from a comparison's reports (`report.rs`).
//!
//! Every payload is stamped (run, sequence, send time), so each subscriber counts lost,
//! duplicated and out-of-order deliveries, and publish→receive latency goes into an HDR
//! histogram. The last line of output is the JSON report.

mod churn;
mod coldstart;
mod conn;
mod floor;
mod occupancy;
mod procstat;
mod publisher;
mod report;
mod sse;
mod stamp;
mod topics;
mod ws;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use conn::{LpFormat, Record, Target, Transport, WsFormat};

#[derive(Parser)]
#[command(name = "herald-load", about = "Load and benchmark harness for fanout servers (herald, nchan, …)")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// M1: idle subscriptions and the server's RSS growth per connection.
    Idle(Common),
    /// M2/M3: one topic, N subscribers, messages flat out or at --rate.
    Broadcast(Common),
    /// M4: N topics, one subscriber each.
    Targeted(Common),
    /// M5: connection rate.
    Connect(Common),
    /// M6: all subscribers cut at once, reconnecting with their last id.
    Storm(Common),
    /// Long soak: subscribers mixed across SSE, WebSocket and long-poll on many topics, steady
    /// publishing, random cuts and resumes; loss, duplicates and RSS over time.
    Soak(Common),
    /// Memory per topic: N topics of one small event each, then RSS once they are forgotten;
    /// or (--per-stream K) N topics with one subscriber each and no history.
    Topics(topics::Args),
    /// Subscribers of one topic replaced at a steady rate while `$occupancy:` streams watch it:
    /// server CPU per replacement, and the watchers' events checked.
    Churn(churn::Args),
    /// Starts and stops herald (`--bin`): exec → first /healthz 200 and exec → first event
    /// delivered over many starts, then SIGTERM with many SSE streams open (exit time, how
    /// each stream ended). Exits non-zero when a check fails.
    Coldstart(coldstart::Args),
    /// No server: one pinned thread writes the SSE frame of a delivery to N loopback sockets per
    /// round while readers on the other cores drain them — the machine's floor for a fan-out.
    Floor(floor::Args),
    /// The reading side of `floor`, run by it as a child process.
    #[command(hide = true)]
    FloorReader(floor::ReaderArgs),
    /// Summarises a comparison's JSON lines: a markdown table, a JSON summary and SVG plots.
    Report(report::Args),
}

/// What names a report within a comparison.
#[derive(Args, Clone)]
pub struct Tag {
    /// Label for the report.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Name of the server under test, for comparisons (`compare.sh` sets it).
    #[arg(long, default_value = "herald")]
    pub server_name: String,
    /// Round of a comparison run.
    #[arg(long, default_value_t = 1)]
    pub round: u32,
}

impl Tag {
    /// Puts the tag into `report`.
    pub fn mark(&self, report: &mut Value) {
        report["label"] = json!(self.label);
        report["server"] = json!(self.server_name);
        report["round"] = json!(self.round);
    }
}

#[derive(Args, Clone)]
struct Common {
    /// Server address (loopback).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    #[arg(long, value_enum, default_value = "sse")]
    transport: Transport,
    /// How WebSocket events are framed by the server.
    #[arg(long, value_enum, default_value = "herald")]
    ws_format: WsFormat,
    /// How the server answers long-polls.
    #[arg(long, value_enum, default_value = "herald")]
    lp_format: LpFormat,
    /// Subscribers (connections).
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Subscribe path; `{topic}` and `{i}` are replaced.
    #[arg(long, default_value = "/sub/{topic}")]
    sub_path: String,
    /// Publish path; `{topic}` is replaced (the batch path with --batch).
    #[arg(long, default_value = "/pub/{topic}")]
    pub_path: String,
    /// Extra header for subscribe requests, `Name: value` (repeatable).
    #[arg(long)]
    sub_header: Vec<String>,
    /// Extra header for publish requests (repeatable).
    #[arg(long)]
    pub_header: Vec<String>,
    /// Messages to publish.
    #[arg(long, default_value_t = 200)]
    messages: u64,
    /// Messages per second (open loop); flat out when absent.
    #[arg(long)]
    rate: Option<f64>,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 128)]
    payload: usize,
    /// Publisher connections.
    #[arg(long, default_value_t = 4)]
    pub_connections: usize,
    /// Publish requests in flight per connection.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Events per publish request (ndjson batch to --pub-path).
    #[arg(long)]
    batch: Option<usize>,
    /// Connections opened at once (connect scenario).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Server process, for RSS and CPU from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seconds to wait for the last deliveries.
    #[arg(long, default_value_t = 30.0)]
    drain: f64,
    /// Seconds to let the server settle before reading its RSS (idle).
    #[arg(long, default_value_t = 1.0)]
    hold: f64,
    #[command(flatten)]
    tag: Tag,
    /// Soak: seconds to run.
    #[arg(long, default_value_t = 600.0)]
    duration: f64,
    /// Soak: topics the subscribers spread over.
    #[arg(long, default_value_t = 100)]
    topics: usize,
    /// Soak: each subscriber is cut on average once per this many seconds.
    #[arg(long, default_value_t = 120.0)]
    cut_every: f64,
}

fn main() {
    let cli = Cli::parse();
    // The floor and the report need no runtime (the floor's threads are its own).
    match &cli.scenario {
        Scenario::Report(args) => return report::run(args),
        Scenario::Coldstart(args) => return coldstart::run(args),
        Scenario::Floor(args) => return floor::run(args),
        Scenario::FloorReader(args) => return floor::reader(args),
        Scenario::Topics(args) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            println!("{}", rt.block_on(topics::run(args.clone())));
            return;
        }
        Scenario::Churn(args) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let local = tokio::task::LocalSet::new();
            println!("{}", local.block_on(&rt, churn::run(args.clone())));
            return;
        }
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    let (server, round) = match &cli.scenario {
        Scenario::Report(_)
        | Scenario::Floor(_)
        | Scenario::FloorReader(_)
        | Scenario::Coldstart(_)
        | Scenario::Churn(_)
        | Scenario::Topics(_) => {
            unreachable!("handled above")
        }
        Scenario::Idle(c)
        | Scenario::Broadcast(c)
        | Scenario::Targeted(c)
        | Scenario::Connect(c)
        | Scenario::Storm(c)
        | Scenario::Soak(c) => (c.tag.server_name.clone(), c.tag.round),
    };
    let report = local.block_on(&rt, async move {
        match cli.scenario {
            Scenario::Report(_)
            | Scenario::Floor(_)
            | Scenario::FloorReader(_)
            | Scenario::Coldstart(_)
            | Scenario::Churn(_)
            | Scenario::Topics(_) => {
                unreachable!("handled above")
            }
            Scenario::Idle(c) => idle(c).await,
            Scenario::Broadcast(c) => delivery(c, false).await,
            Scenario::Targeted(c) => delivery(c, true).await,
            Scenario::Connect(c) => connect(c).await,
            Scenario::Storm(c) => storm(c).await,
            Scenario::Soak(c) => soak(c).await,
        }
    });
    let mut report: Value = serde_json::from_str(&report).expect("scenarios report JSON");
    report["server"] = json!(server);
    report["round"] = json!(round);
    println!("{report}");
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(ProgressStyle::with_template("  {msg:12} {bar:40} {pos}/{len} {elapsed}").expect("template"));
    b.set_message(what.to_string());
    b
}

fn topic_of(i: usize, targeted: bool) -> String {
    if targeted { format!("t{i}") } else { "bench".to_string() }
}

fn target(c: &Common) -> Target {
    Target {
        addr: c.addr,
        transport: c.transport,
        ws_format: c.ws_format,
        lp_format: c.lp_format,
        headers: c.sub_header.clone(),
    }
}

/// Opens `n` subscriptions (at most `concurrency` connecting at once) and leaves them running.
async fn open_subscribers(
    c: &Common,
    rec: &Rc<RefCell<Record>>,
    targeted: bool,
    stop: &tokio::sync::watch::Receiver<u64>,
) {
    let t = Rc::new(target(c));
    let progress = bar(c.subscribers as u64, "connecting");
    // A sliding window: the next connection starts as soon as any of the `concurrency` being
    // opened is connected (or has failed), not when a whole wave is.
    let concurrency = c.concurrency.clamp(1, u32::MAX as usize);
    let window = Arc::new(tokio::sync::Semaphore::new(concurrency));
    for k in 0..c.subscribers {
        let Ok(place) = window.clone().acquire_owned().await else { break };
        rec.borrow_mut().opening[k] = Some(place);
        let path = c.sub_path.replace("{topic}", &topic_of(k, targeted)).replace("{i}", &k.to_string());
        let (t, rec, stop) = (t.clone(), rec.clone(), stop.clone());
        tokio::task::spawn_local(async move {
            let mut resume = None;
            // Reconnect with the last id after a cut (storm), until stopped for good.
            loop {
                let generation = *stop.borrow();
                resume = conn::subscribe(&t, &path, k, resume, &rec, &stop).await;
                if *stop.borrow() == u64::MAX || *stop.borrow() == generation {
                    return;
                }
            }
        });
        if k % 256 == 0 {
            progress.set_position(k as u64);
        }
    }
    // Every place back: every subscriber is connected or has failed.
    let all = concurrency as u32;
    let _ = tokio::time::timeout(Duration::from_secs(60), window.acquire_many(all)).await;
    progress.finish_and_clear();
}

const CDF_QUANTILES: [f64; 16] =
    [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0];

/// Checks the server's count of subscribers against the harness's at the end of a scenario
/// (`occupancy::check`): every subscriber on the one topic, or, one topic each, the first 100
/// topics with one subscriber each. Not checked where the harness cannot know the answer: a
/// subscribe path that names no topic, subscribers that failed (which ones is not kept), or
/// long-polls (counted only while held).
async fn occupancy_check(c: &Common, targeted: bool, connected: usize, failures: usize) -> Value {
    let why = if !c.sub_path.contains("{topic}") {
        Some("the subscribe path names no topic")
    } else if c.transport == Transport::Longpoll {
        Some("long-polls are counted only while held")
    } else if failures > 0 {
        Some("some subscribers failed to connect")
    } else {
        None
    };
    if let Some(why) = why {
        return json!({"checked": false, "why": why});
    }
    let expected: Vec<(String, u64)> = if targeted {
        (0..connected.min(100)).map(|k| (topic_of(k, true), 1)).collect()
    } else {
        vec![(topic_of(0, false), connected as u64)]
    };
    occupancy::check(c.addr, &c.pub_header, &expected).await
}

fn percentiles(h: &hdrhistogram::Histogram<u64>) -> Value {
    let ms = |v: u64| v as f64 / 1000.0;
    json!({
        "p50_ms": ms(h.value_at_quantile(0.5)),
        "p90_ms": ms(h.value_at_quantile(0.9)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
        "count": h.len(),
        // [quantile, ms] points for a latency CDF plot.
        "cdf": CDF_QUANTILES.iter().map(|&q| json!([q, ms(h.value_at_quantile(q))])).collect::<Vec<_>>(),
    })
}

/// What a publishing scenario adds to its report: the publish-answer latency and, with
/// `--server-pid`, the server's CPU per publish and per delivery. `server_cpu_secs` is the
/// server's CPU time over the same interval its `server_cpu` share is taken over, so the
/// three agree; `/proc` counts it in 10 ms ticks, so short runs round it.
fn publish_figures(
    report: &mut Value,
    published: &publisher::Outcome,
    server_cpu_secs: Option<f64>,
    deliveries: Option<u64>,
) {
    let lat = percentiles(&published.answer_us);
    eprintln!(
        "  publish answer ms: p50 {} p90 {} p99 {} p99.9 {} max {} ({} answers)",
        lat["p50_ms"], lat["p90_ms"], lat["p99_ms"], lat["p999_ms"], lat["max_ms"], lat["count"]
    );
    report["publish_latency"] = lat;
    report["publish_events_ok"] = json!(published.ok_events);
    let per = |n: u64| server_cpu_secs.filter(|_| n > 0).map(|s| s * 1e6 / n as f64);
    report["server_cpu_us_per_publish"] = json!(per(published.ok_events));
    if let Some(d) = deliveries {
        report["server_cpu_us_per_delivery"] = json!(per(d));
    }
    if let (Some(p), Some(d)) = (per(published.ok_events), deliveries.and_then(per)) {
        eprintln!("  server CPU µs: {p:.2} per publish, {d:.3} per delivery");
    }
}

fn finish(mut report: Value, cpu_client: Option<f64>, started: Instant) -> String {
    if let Some(share) = cpu_client {
        report["client_cpu"] = json!(share);
        if share > 0.9 {
            eprintln!(
                "WARNING: the harness used {:.0}% of its core: figures may be the harness's limit, not the server's",
                share * 100.0
            );
        }
    }
    report["wall_secs"] = json!(started.elapsed().as_secs_f64());
    report.to_string()
}

async fn idle(c: Common) -> String {
    let started = Instant::now();
    let before = c.server_pid.and_then(procstat::rss_kib);
    let rec = Record::new(0, c.subscribers);
    let (_tx, stop) = tokio::sync::watch::channel(0u64);
    open_subscribers(&c, &rec, c.sub_path.contains("{i}"), &stop).await;
    tokio::time::sleep(Duration::from_secs_f64(c.hold)).await;
    let after = c.server_pid.and_then(procstat::rss_kib);
    let (connected, failures) = (rec.borrow().connected, rec.borrow().failures);
    let occupancy = occupancy_check(&c, c.sub_path.contains("{i}"), connected, failures).await;
    let r = rec.borrow();
    let per = match (before, after) {
        (Some(b), Some(a)) => Some((a.saturating_sub(b) * 1024) as f64 / r.connected.max(1) as f64),
        _ => None,
    };
    eprintln!("idle {:?}: {} open, {} failed", c.transport, r.connected, r.failures);
    if let Some(p) = per {
        eprintln!(
            "server RSS {} KiB -> {} KiB: {p:.0} bytes per idle connection",
            before.unwrap_or(0),
            after.unwrap_or(0)
        );
    }
    finish(
        json!({"scenario": "idle", "label": c.tag.label, "transport": format!("{:?}", c.transport).to_lowercase(),
               "connections": r.connected, "failures": r.failures,
               "rss_before_kib": before, "rss_after_kib": after, "rss_bytes_per_conn": per,
               "occupancy": occupancy}),
        None,
        started,
    )
}

async fn delivery(c: Common, targeted: bool) -> String {
    let started = Instant::now();
    let run = (stamp::now_micros() % 1_000_000_000) as u32;
    let rec = Record::new(run, c.subscribers);
    let (stop_tx, stop) = tokio::sync::watch::channel(0u64);
    open_subscribers(&c, &rec, targeted, &stop).await;
    let open = rec.borrow().connected;
    let topics: Vec<String> =
        if targeted { (0..c.subscribers).map(|i| topic_of(i, true)).collect() } else { vec!["bench".into()] };
    let expected_per_sub: Vec<u64> = (0..c.subscribers)
        .map(|i| {
            if targeted {
                c.messages / topics.len() as u64 + u64::from((i as u64) < c.messages % topics.len() as u64)
            } else {
                c.messages
            }
        })
        .collect();
    let expected: u64 = expected_per_sub.iter().sum();
    let plan = publisher::Plan {
        addr: c.addr,
        path: c.pub_path.clone(),
        topics,
        messages: c.messages,
        rate: c.rate,
        connections: c.pub_connections,
        window: c.window,
        size: c.payload,
        run,
        batch: c.batch,
        headers: c.pub_header.clone(),
    };
    let cpu_server = c.server_pid.and_then(|p| procstat::cpu_secs(Some(p)));
    let cpu_client = procstat::cpu_secs(None);
    let t0 = Instant::now();
    let progress = bar(expected, "delivering");
    let published = tokio::task::spawn_local(publisher::spawn(plan));
    let drained = {
        let progress = progress.clone();
        let rec = rec.clone();
        conn::until(
            &rec,
            Duration::from_secs_f64(c.drain)
                + Duration::from_secs_f64(c.messages as f64 / c.rate.unwrap_or(f64::INFINITY)),
            move |r| {
                let got: u64 = r.subs.iter().map(|s| s.received).sum();
                progress.set_position(got);
                got >= expected
            },
        )
        .await
    };
    let published = published.await.ok().flatten().unwrap_or_default();
    progress.finish_and_clear();
    let wall = t0.elapsed().as_secs_f64();
    let cpu_server_secs = procstat::used(cpu_server, c.server_pid.and_then(|p| procstat::cpu_secs(Some(p))));
    let cpu_server = cpu_server_secs.map(|s| s / wall.max(1e-9));
    let cpu_client = procstat::share(cpu_client, procstat::cpu_secs(None), wall);
    let (connected, failures) = (rec.borrow().connected, rec.borrow().failures);
    let occupancy = occupancy_check(&c, targeted, connected, failures).await;
    let _ = stop_tx.send(u64::MAX);
    let r = rec.borrow();
    let received: u64 = r.subs.iter().map(|s| s.received).sum();
    let lost: u64 = r.subs.iter().zip(&expected_per_sub).map(|(s, e)| s.lost(*e)).sum();
    let dups: u64 = r.subs.iter().map(|s| s.duplicates).sum();
    let ooo: u64 = r.subs.iter().map(|s| s.out_of_order).sum();
    let span = match (r.first, r.last) {
        (Some(_), Some(l)) => l.duration_since(t0).as_secs_f64(),
        _ => wall,
    };
    let rate = received as f64 / span.max(1e-9);
    let lat = percentiles(&r.latency_us);
    let name = if targeted { "targeted" } else { "broadcast" };
    eprintln!(
        "{name} {:?}: {open} subscribers, {} messages ({} publish requests, {} failed) in {:.2} s",
        c.transport, c.messages, published.requests, published.failed, published.seconds
    );
    eprintln!(
        "  deliveries {received}/{expected} in {span:.3} s = {rate:.0}/s; lost {lost}, duplicated {dups}, out of order {ooo}{}",
        if drained { "" } else { " (TIMED OUT)" }
    );
    eprintln!(
        "  latency ms: p50 {} p90 {} p99 {} p99.9 {} max {}",
        lat["p50_ms"], lat["p90_ms"], lat["p99_ms"], lat["p999_ms"], lat["max_ms"]
    );
    if let Some(s) = cpu_server {
        eprintln!("  server CPU {:.0}% of a core", s * 100.0);
    }
    let mut report = json!({"scenario": name, "label": c.tag.label, "transport": format!("{:?}", c.transport).to_lowercase(),
               "subscribers": open, "messages": c.messages, "rate": c.rate, "batch": c.batch, "payload": c.payload,
               "publish_requests": published.requests, "publish_failed": published.failed, "publish_secs": published.seconds,
               "expected": expected, "received": received, "lost": lost, "duplicated": dups, "out_of_order": ooo,
               "deliveries_per_sec": rate, "delivery_secs": span, "latency": lat, "server_cpu": cpu_server,
               "server_rss_kib": c.server_pid.and_then(procstat::rss_kib), "complete": drained,
               "pub_connections": c.pub_connections, "window": c.window, "occupancy": occupancy});
    publish_figures(&mut report, &published, cpu_server_secs, Some(received));
    finish(report, cpu_client, started)
}

async fn connect(c: Common) -> String {
    let started = Instant::now();
    let rec = Record::new(0, c.subscribers);
    let (_tx, stop) = tokio::sync::watch::channel(0u64);
    let cpu_server = c.server_pid.and_then(|p| procstat::cpu_secs(Some(p)));
    let cpu_client = procstat::cpu_secs(None);
    let t0 = Instant::now();
    open_subscribers(&c, &rec, false, &stop).await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu_server = procstat::share(cpu_server, c.server_pid.and_then(|p| procstat::cpu_secs(Some(p))), secs);
    let cpu_client = procstat::share(cpu_client, procstat::cpu_secs(None), secs);
    let r = rec.borrow();
    let rate = r.connected as f64 / secs;
    let lat = percentiles(&r.connect_us);
    eprintln!(
        "connect {:?}: {} subscriptions in {secs:.2} s = {rate:.0}/s ({} failed); connect latency p50 {} ms p99 {} ms",
        c.transport, r.connected, r.failures, lat["p50_ms"], lat["p99_ms"]
    );
    finish(
        json!({"scenario": "connect", "label": c.tag.label, "transport": format!("{:?}", c.transport).to_lowercase(),
               "connections": r.connected, "failures": r.failures, "secs": secs, "per_sec": rate, "connect_latency": lat,
               "server_cpu": cpu_server}),
        cpu_client,
        started,
    )
}

async fn storm(c: Common) -> String {
    let started = Instant::now();
    let run = (stamp::now_micros() % 1_000_000_000) as u32;
    let rec = Record::new(run, c.subscribers);
    let (stop_tx, stop) = tokio::sync::watch::channel(0u64);
    open_subscribers(&c, &rec, false, &stop).await;
    let open = rec.borrow().connected;
    let rate = c.rate.unwrap_or(50.0);
    let plan = publisher::Plan {
        addr: c.addr,
        path: c.pub_path.clone(),
        topics: vec!["bench".into()],
        messages: c.messages,
        rate: Some(rate),
        connections: 1,
        window: c.window,
        size: c.payload,
        run,
        batch: None,
        headers: c.pub_header.clone(),
    };
    let cpu_server = c.server_pid.and_then(|p| procstat::cpu_secs(Some(p)));
    let published = tokio::task::spawn_local(publisher::spawn(plan));
    // Cut everyone at the middle of the publishing, while events keep coming.
    tokio::time::sleep(Duration::from_secs_f64(c.messages as f64 / rate / 2.0)).await;
    let cut = Instant::now();
    let _ = stop_tx.send(1);
    let all_back = conn::until(&rec, Duration::from_secs(60), |r| r.reconnected >= open).await;
    let recovery = rec.borrow().last_reconnect.map(|t| t.duration_since(cut).as_secs_f64());
    let published = published.await.ok().flatten().unwrap_or_default();
    let expected = c.messages * open as u64;
    conn::until(&rec, Duration::from_secs_f64(c.drain), |r| r.subs.iter().map(|s| s.received).sum::<u64>() >= expected)
        .await;
    let cpu_server_secs = procstat::used(cpu_server, c.server_pid.and_then(|p| procstat::cpu_secs(Some(p))));
    let _ = stop_tx.send(u64::MAX);
    let r = rec.borrow();
    let received: u64 = r.subs.iter().map(|s| s.received).sum();
    let lost: u64 = r.subs.iter().map(|s| s.lost(c.messages)).sum();
    let dups: u64 = r.subs.iter().map(|s| s.duplicates).sum();
    eprintln!(
        "storm: {open} subscribers cut at once; {} resumed{} in {:.3} s; {} messages; lost {lost}, duplicated {dups}",
        r.reconnected,
        if all_back { "" } else { " (NOT ALL)" },
        recovery.unwrap_or(f64::NAN),
        published.requests
    );
    let mut report = json!({"scenario": "storm", "label": c.tag.label, "transport": format!("{:?}", c.transport).to_lowercase(),
               "subscribers": open, "resumed": r.reconnected, "recovery_secs": recovery, "messages": c.messages,
               "lost": lost, "duplicated": dups, "all_resumed": all_back, "received": received});
    // The server's CPU here includes taking every subscriber back, not only the deliveries.
    publish_figures(&mut report, &published, cpu_server_secs, Some(received));
    finish(report, None, started)
}

/// A cheap xorshift for choosing whom to cut (no need for a crate).
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

async fn soak(c: Common) -> String {
    let started = Instant::now();
    let run = (stamp::now_micros() % 1_000_000_000) as u32;
    let n = c.subscribers;
    let rec = Record::new(run, n);
    let kinds = [Transport::Sse, Transport::Ws, Transport::Longpoll];
    let mut cutters = Vec::with_capacity(n);
    let progress = bar(n as u64, "connecting");
    for i in 0..n {
        let t = Rc::new(Target { transport: kinds[i % 3], ..target(&c) });
        let path = c.sub_path.replace("{topic}", &format!("s{}", i % c.topics)).replace("{i}", &i.to_string());
        let (tx, stop) = tokio::sync::watch::channel(0u64);
        cutters.push(tx);
        let sub_rec = rec.clone();
        tokio::task::spawn_local(async move {
            let rec = sub_rec;
            let mut resume = None;
            // Reconnect after every cut (and after anything else that ends the connection)
            // with the last id seen, until the run is over.
            loop {
                resume = conn::subscribe(&t, &path, i, resume, &rec, &stop).await;
                if *stop.borrow() == u64::MAX {
                    return;
                }
                if resume.is_none() {
                    rec.borrow_mut().subs[i].unanchored();
                }
            }
        });
        if i % c.concurrency == c.concurrency - 1 {
            conn::until(&rec, Duration::from_secs(60), |r| r.connected + r.failures > i).await;
            progress.set_position(i as u64 + 1);
        }
    }
    conn::until(&rec, Duration::from_secs(60), |r| r.connected + r.failures >= n).await;
    progress.finish_and_clear();
    let rate = c.rate.unwrap_or(200.0);
    let messages = (rate * c.duration) as u64;
    let topics: Vec<String> = (0..c.topics).map(|t| format!("s{t}")).collect();
    let plan = publisher::Plan {
        addr: c.addr,
        path: c.pub_path.clone(),
        topics,
        messages,
        rate: Some(rate),
        connections: c.pub_connections,
        window: c.window,
        size: c.payload,
        run,
        batch: None,
        headers: c.pub_header.clone(),
    };
    let t0 = Instant::now();
    let cpu_server = c.server_pid.and_then(|p| procstat::cpu_secs(Some(p)));
    let published = tokio::task::spawn_local(publisher::spawn(plan));
    // Cut random subscribers as time goes, and sample the server's RSS.
    let mut seed = u64::from(run) | 1;
    let mut cuts = 0u64;
    let mut rss = Vec::new();
    let tick = Duration::from_millis(100);
    let per_tick = n as f64 * tick.as_secs_f64() / c.cut_every;
    let mut owed = 0.0;
    let progress = bar(c.duration as u64, "soaking");
    while t0.elapsed().as_secs_f64() < c.duration {
        tokio::time::sleep(tick).await;
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            let who = (next_random(&mut seed) % n as u64) as usize;
            cutters[who].send_modify(|g| *g += 1);
            cuts += 1;
        }
        let secs = t0.elapsed().as_secs();
        if rss.len() as u64 <= secs / 10 {
            rss.push(c.server_pid.and_then(procstat::rss_kib));
            progress.set_position(secs);
        }
    }
    progress.finish_and_clear();
    let published = published.await.ok().flatten().unwrap_or_default();
    let per_topic = |t: usize| messages / c.topics as u64 + u64::from((t as u64) < messages % c.topics as u64);
    let expected: u64 = (0..n).map(|i| per_topic(i % c.topics)).sum();
    let complete = conn::until(&rec, Duration::from_secs_f64(c.drain), |r| {
        r.subs.iter().enumerate().all(|(i, s)| s.received >= s.owed(per_topic(i % c.topics)))
    })
    .await;
    let cpu_server_secs = procstat::used(cpu_server, c.server_pid.and_then(|p| procstat::cpu_secs(Some(p))));
    let unanchored = rec.borrow().subs.iter().filter(|s| s.floor.is_some()).count();
    for tx in &cutters {
        let _ = tx.send(u64::MAX);
    }
    let r = rec.borrow();
    let mut by_transport = serde_json::Map::new();
    for (k, kind) in kinds.iter().enumerate() {
        let subs: Vec<usize> = (0..n).filter(|i| i % 3 == k).collect();
        let lost: u64 = subs.iter().map(|&i| r.subs[i].lost(per_topic(i % c.topics))).sum();
        let dups: u64 = subs.iter().map(|&i| r.subs[i].duplicates).sum();
        let received: u64 = subs.iter().map(|&i| r.subs[i].received).sum();
        by_transport.insert(
            format!("{kind:?}").to_lowercase(),
            json!({"subscribers": subs.len(), "received": received, "lost": lost, "duplicated": dups}),
        );
    }
    let lost: u64 = (0..n).map(|i| r.subs[i].lost(per_topic(i % c.topics))).sum();
    let dups: u64 = r.subs.iter().map(|s| s.duplicates).sum();
    // Which subscribers missed what (the first few): a loss at the end of a topic is a stuck
    // subscriber, one in the middle a resume that skipped.
    let missing: Vec<Value> = (0..n)
        .filter_map(|i| {
            let seqs = r.subs[i].missing(per_topic(i % c.topics), 10);
            (!seqs.is_empty()).then(|| {
                json!({"subscriber": i, "transport": format!("{:?}", kinds[i % 3]).to_lowercase(),
                       "topic": format!("s{}", i % c.topics), "expected": per_topic(i % c.topics), "missing": seqs})
            })
        })
        .take(20)
        .collect();
    let rss_kib: Vec<Option<u64>> = rss;
    eprintln!(
        "soak: {n} subscribers (SSE/WS/long-poll), {} topics, {messages} messages at {rate}/s for {:.0} s ({} publish failures); {cuts} cuts, {} reconnects; lost {lost}, duplicated {dups}{}",
        c.topics,
        c.duration,
        published.failed,
        r.reconnected,
        if complete { "" } else { " (NOT DRAINED)" }
    );
    if unanchored > 0 {
        eprintln!(
            "  {unanchored} subscriber(s) were cut before their first event: with no id to resume from they \
             came back live and are counted from their first event after that"
        );
    }
    eprintln!("  server RSS KiB every 10 s: {:?}", rss_kib.iter().map(|v| v.unwrap_or(0)).collect::<Vec<_>>());
    let received: u64 = r.subs.iter().map(|s| s.received).sum();
    let mut report = json!({"scenario": "soak", "label": c.tag.label, "subscribers": n, "topics": c.topics, "messages": messages, "rate": rate,
               "duration_secs": c.duration, "publish_failed": published.failed, "cuts": cuts, "reconnects": r.reconnected,
               "expected": expected, "lost": lost, "duplicated": dups, "by_transport": by_transport, "complete": complete,
               "latency": percentiles(&r.latency_us), "rss_kib_every_10s": rss_kib, "missing": missing,
               "cut_before_first_event": unanchored, "received": received});
    publish_figures(&mut report, &published, cpu_server_secs, Some(received));
    finish(report, None, started)
}

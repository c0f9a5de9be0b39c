//! The publisher: HTTP/1.1 keep-alive connections with requests pipelined up to a window,
//! flat out or open-loop at a fixed rate (a send falls due at its scheduled time whether or
//! not earlier answers came back, so a slow server cannot lower the offered rate).

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stamp;

pub struct Plan {
    pub addr: SocketAddr,
    /// Publish path, `{topic}` replaced (single publishes), or the batch path.
    pub path: String,
    pub topics: Vec<String>,
    pub messages: u64,
    /// Messages per second; `None` is flat out.
    pub rate: Option<f64>,
    pub connections: usize,
    /// Requests in flight per connection.
    pub window: usize,
    pub size: usize,
    pub run: u32,
    /// Events per request (ndjson batch to `path`) instead of single publishes.
    pub batch: Option<usize>,
    pub headers: Vec<String>,
}

#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    pub seconds: f64,
}

/// Message `k` goes to topic `k % topics` as that topic's sequence `k / topics`. Every
/// message of a topic goes through the same connection (connection `topic % connections`),
/// so the server receives each topic's messages in sequence order.
fn message(plan: &Plan, k: u64) -> (&str, u64) {
    let t = plan.topics.len() as u64;
    (&plan.topics[(k % t) as usize], k / t)
}

fn request(plan: &Plan, ks: &[u64]) -> Vec<u8> {
    let mut extra = String::new();
    for h in &plan.headers {
        extra.push_str(h);
        extra.push_str("\r\n");
    }
    match plan.batch {
        None => {
            let (topic, seq) = message(plan, ks[0]);
            let body = stamp::stamp(plan.run, seq, plan.size);
            let path = plan.path.replace("{topic}", topic);
            format!("POST {path} HTTP/1.1\r\nHost: load\r\n{extra}Content-Length: {}\r\n\r\n{body}", body.len())
                .into_bytes()
        }
        Some(_) => {
            let mut body = String::new();
            for &k in ks {
                let (topic, seq) = message(plan, k);
                let line = serde_json::json!({"topic": topic, "data": stamp::stamp(plan.run, seq, plan.size)});
                body.push_str(&line.to_string());
                body.push('\n');
            }
            format!(
                "POST {} HTTP/1.1\r\nHost: load\r\n{extra}Content-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n{body}",
                plan.path,
                body.len()
            )
            .into_bytes()
        }
    }
}

/// Runs the publisher on a thread of its own (with its own runtime) and returns its outcome.
///
/// Not among the subscribers' tasks: with thousands of them ready after every event, a
/// publisher sharing their scheduler would send one request per round of the scheduler and
/// the offered rate would fall with the number of subscribers. As a thread, it gets its fair
/// share of the core from the kernel whatever the subscribers are doing.
pub async fn spawn(plan: Plan) -> Option<Outcome> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("publisher runtime");
            let local = tokio::task::LocalSet::new();
            let _ = tx.send(local.block_on(&rt, run(Rc::new(plan))));
        })
        .ok()?;
    rx.await.ok()
}

/// Sends every message; returns when every answer is in (or a connection failed).
async fn run(plan: Rc<Plan>) -> Outcome {
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..plan.connections.min(plan.topics.len()).max(1) {
        let plan = plan.clone();
        handles.push(tokio::task::spawn_local(async move { connection(plan, c, started).await }));
    }
    let mut out = Outcome::default();
    for h in handles {
        if let Ok(o) = h.await {
            out.requests += o.requests;
            out.ok += o.ok;
            out.failed += o.failed;
        }
    }
    out.seconds = started.elapsed().as_secs_f64();
    out
}

async fn connection(plan: Rc<Plan>, me: usize, started: Instant) -> Outcome {
    let mut out = Outcome::default();
    let Ok(s) = TcpStream::connect(plan.addr).await else {
        out.failed += 1;
        return out;
    };
    let _ = s.set_nodelay(true);
    let (mut rd, mut wr) = s.into_split();
    let in_flight = Rc::new(Cell::new(0usize));
    let sent = Rc::new(Cell::new(0u64));
    let done_sending = Rc::new(Cell::new(false));
    let finished = Rc::new(tokio::sync::Notify::new());
    // Signalled whenever answers free room in the window (and when the reader stops), so
    // the sender refills at once rather than on a timer tick.
    let room = Rc::new(tokio::sync::Notify::new());
    let reader = {
        let (in_flight, sent, done_sending, finished, freed) =
            (in_flight.clone(), sent.clone(), done_sending.clone(), finished.clone(), room.clone());
        let reader = async move {
            let (mut ok, mut failed, mut answered) = (0u64, 0u64, 0u64);
            let mut buf: Vec<u8> = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                // Parse every complete response in the buffer.
                while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        break;
                    }
                    if head.starts_with("http/1.1 200")
                        || head.starts_with("http/1.1 201")
                        || head.starts_with("http/1.1 202")
                    {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                    buf.drain(..end + 4 + len);
                    answered += 1;
                    in_flight.set(in_flight.get().saturating_sub(1));
                    freed.notify_one();
                }
                if done_sending.get() && answered >= sent.get() {
                    return (ok, failed, answered);
                }
                tokio::select! {
                    r = rd.read(&mut chunk) => match r {
                        Ok(0) | Err(_) => return (ok, failed + sent.get() - answered, answered),
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    },
                    _ = finished.notified() => {}
                }
            }
        };
        let room = room.clone();
        tokio::task::spawn_local(async move {
            let outcome = reader.await;
            room.notify_one();
            outcome
        })
    };
    let per_request = plan.batch.unwrap_or(1);
    let connections = plan.connections.min(plan.topics.len()).max(1);
    let topics = plan.topics.len() as u64;
    let mut mine = (0..plan.messages).filter(|k| (k % topics) as usize % connections == me).peekable();
    let mut ks = Vec::with_capacity(per_request);
    let mut out_buf = Vec::new();
    'sending: while mine.peek().is_some() {
        while in_flight.get() >= plan.window {
            // The server closed the connection (e.g. a keep-alive request limit): what was
            // not answered counts as failed, and nothing more can be sent on it.
            if reader.is_finished() {
                break 'sending;
            }
            room.notified().await;
        }
        // Flat out, every request the window has room for leaves in one write, as a
        // pipelining client sends them; at a fixed rate, each when it falls due.
        out_buf.clear();
        while in_flight.get() < plan.window && mine.peek().is_some() {
            ks.clear();
            ks.extend(mine.by_ref().take(per_request));
            if let Some(rate) = plan.rate {
                let due = started + Duration::from_secs_f64(ks[0] as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            in_flight.set(in_flight.get() + 1);
            sent.set(sent.get() + 1);
            out_buf.extend_from_slice(&request(&plan, &ks));
            if plan.rate.is_some() {
                break;
            }
        }
        if wr.write_all(&out_buf).await.is_err() {
            break;
        }
    }
    done_sending.set(true);
    finished.notify_one();
    out.requests = sent.get();
    if let Ok((ok, failed, _)) = reader.await {
        out.ok = ok;
        out.failed = failed;
    }
    out
}

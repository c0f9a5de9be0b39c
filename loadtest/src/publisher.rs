//! The publisher: HTTP/1.1 keep-alive connections with requests pipelined up to a window,
//! flat out or open-loop at a fixed rate (a send falls due at its scheduled time whether or
//! not earlier answers came back, so a slow server cannot lower the offered rate), and the
//! publish-answer latency of every request (write of the request → its complete answer).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
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

#[derive(Debug, Clone)]
pub struct Outcome {
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    /// Events in the requests answered with a 2xx (a batch request carries several).
    pub ok_events: u64,
    pub seconds: f64,
    /// Publish-answer latency in µs, one value per answered request.
    pub answer_us: Histogram<u64>,
}

impl Default for Outcome {
    fn default() -> Outcome {
        Outcome { requests: 0, ok: 0, failed: 0, ok_events: 0, seconds: 0.0, answer_us: latency_histogram() }
    }
}

/// µs from 1 to 10 minutes at 3 significant figures, as the delivery latency's.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// The requests of one connection in flight, oldest first: when each was written and how
/// many events it carries. HTTP/1.1 answers come back in request order on a connection
/// (pipelined or not), so the oldest request in flight is the one a complete answer
/// belongs to — no id is needed to match them.
#[derive(Debug, Default)]
pub struct InFlight {
    sent: VecDeque<(Instant, u64)>,
}

impl InFlight {
    /// Requests written at `at` (the ones of one write share it), each with its events.
    pub fn written(&mut self, at: Instant, events: &[u64]) {
        self.sent.extend(events.iter().map(|&e| (at, e)));
    }

    /// An answer read whole at `at`: the request it answers (its wait and its events), or
    /// `None` for an answer nobody asked for (a server's error before any request, say).
    pub fn answered(&mut self, at: Instant) -> Option<(Duration, u64)> {
        let (sent, events) = self.sent.pop_front()?;
        Some((at.saturating_duration_since(sent), events))
    }

    pub fn len(&self) -> usize {
        self.sent.len()
    }
}

/// One complete HTTP/1.1 answer at the front of `buf`: (bytes it takes, whether it is a
/// 2xx), or `None` while it is incomplete. Answers are framed by Content-Length (a publish
/// answer has no chunked body).
pub fn next_answer(buf: &[u8]) -> Option<(usize, bool)> {
    let end = memchr::memmem::find(buf, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    if buf.len() < end + 4 + len {
        return None;
    }
    let ok = head.starts_with("http/1.1 2") || head.starts_with("http/1.0 2");
    Some((end + 4 + len, ok))
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
            out.ok_events += o.ok_events;
            let _ = out.answer_us.add(&o.answer_us);
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
    // Requests written and not yet answered, with their write times; its length is what the
    // window limits.
    let in_flight = Rc::new(RefCell::new(InFlight::default()));
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
            let mut tally = Outcome::default();
            let mut answered = 0u64;
            let mut buf: Vec<u8> = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            // When the bytes in `buf` were read: the answers completed by one read share it.
            let mut read_at = Instant::now();
            loop {
                // Every complete answer in the buffer.
                while let Some((len, ok)) = next_answer(&buf) {
                    let matched = in_flight.borrow_mut().answered(read_at);
                    let events = matched.map_or(0, |(_, e)| e);
                    if let Some((waited, _)) = matched {
                        let _ = tally.answer_us.record(waited.as_micros().max(1) as u64);
                    }
                    if ok {
                        tally.ok += 1;
                        tally.ok_events += events;
                    } else {
                        tally.failed += 1;
                    }
                    buf.drain(..len);
                    answered += 1;
                    freed.notify_one();
                }
                if done_sending.get() && answered >= sent.get() {
                    return tally;
                }
                tokio::select! {
                    r = rd.read(&mut chunk) => match r {
                        Ok(0) | Err(_) => {
                            tally.failed += sent.get().saturating_sub(answered);
                            return tally;
                        }
                        Ok(n) => {
                            read_at = Instant::now();
                            buf.extend_from_slice(&chunk[..n]);
                        }
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
    // Events per request of the write being assembled.
    let mut events: Vec<u64> = Vec::new();
    'sending: while mine.peek().is_some() {
        while in_flight.borrow().len() >= plan.window {
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
        events.clear();
        while in_flight.borrow().len() + events.len() < plan.window && mine.peek().is_some() {
            ks.clear();
            ks.extend(mine.by_ref().take(per_request));
            if let Some(rate) = plan.rate {
                let due = started + Duration::from_secs_f64(ks[0] as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            events.push(ks.len() as u64);
            out_buf.extend_from_slice(&request(&plan, &ks));
            if plan.rate.is_some() {
                break;
            }
        }
        // In flight from just before the write: an answer cannot come back earlier, and the
        // clock starts before the request can wait in the socket or the server.
        in_flight.borrow_mut().written(Instant::now(), &events);
        sent.set(sent.get() + events.len() as u64);
        if wr.write_all(&out_buf).await.is_err() {
            break;
        }
    }
    done_sending.set(true);
    finished.notify_one();
    out.requests = sent.get();
    if let Ok(tally) = reader.await {
        out = Outcome { requests: out.requests, failed: out.failed + tally.failed, ..tally };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_match_requests_in_order() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut f = InFlight::default();
        // A pipelined write of three requests (the last batch short), then one more.
        f.written(t0, &[100, 100, 40]);
        f.written(t0 + ms(5), &[1]);
        assert_eq!(f.len(), 4);
        assert_eq!(f.answered(t0 + ms(2)), Some((ms(2), 100)));
        assert_eq!(f.answered(t0 + ms(3)), Some((ms(3), 100)));
        assert_eq!(f.answered(t0 + ms(6)), Some((ms(6), 40)));
        // The fourth was written later: its wait counts from its own write.
        assert_eq!(f.answered(t0 + ms(6)), Some((ms(1), 1)));
        assert_eq!(f.answered(t0 + ms(7)), None, "an answer with nothing in flight");
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn an_answer_read_before_its_clock_counts_zero() {
        let t0 = Instant::now();
        let mut f = InFlight::default();
        f.written(t0 + Duration::from_millis(1), &[1]);
        assert_eq!(f.answered(t0), Some((Duration::ZERO, 1)));
    }

    #[test]
    fn answers_are_framed_by_content_length() {
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 503 Busy\r\ncontent-length:0\r\n\r\n";
        let (len, ok) = next_answer(two).unwrap();
        assert_eq!((len, ok), (43, true));
        assert_eq!(next_answer(&two[len..]), Some((two.len() - len, false)));
        // Incomplete heads and bodies wait for more bytes.
        for cut in 0..43 {
            assert_eq!(next_answer(&two[..cut]), None, "cut at {cut}");
        }
        assert_eq!(next_answer(b"HTTP/1.1 202 Accepted\r\n\r\n"), Some((25, true)));
        assert_eq!(next_answer(b"HTTP/1.0 201 Created\r\n\r\n"), Some((24, true)));
    }
}

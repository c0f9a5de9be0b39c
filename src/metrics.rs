//! Counters and gauges for `GET /metrics` (Prometheus text format 0.0.4).
//!
//! Each worker writes only its own block — aligned to its own cache lines, updated with plain
//! relaxed loads and stores (a single writer needs no atomic read-modify-write) — and a scrape
//! sums the blocks. Counting therefore adds no shared-cache-line traffic to the hot path.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A counter written by one thread only.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A gauge written by one thread only.
#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn add(&self, n: i64) {
        self.0.store(self.0.load(Relaxed) + n, Relaxed);
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// What an open connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Requests and responses.
    Http,
    Sse,
    Ws,
    LongPoll,
}

impl Transport {
    const ALL: [Transport; 4] = [Transport::Http, Transport::Sse, Transport::Ws, Transport::LongPoll];

    fn label(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Sse => "sse",
            Transport::Ws => "ws",
            Transport::LongPoll => "longpoll",
        }
    }
}

/// Upper bounds (seconds) of the latency histogram's buckets.
const LATENCY_BOUNDS: [f64; 14] =
    [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Status codes counted by value; anything else lands in "other".
const STATUSES: [u16; 17] = [100, 101, 200, 204, 400, 401, 403, 404, 405, 408, 413, 422, 426, 429, 431, 500, 503];

/// One worker's block.
#[repr(align(128))]
#[derive(Default)]
pub struct WorkerMetrics {
    pub accepted: Counter,
    pub rejected: Counter,
    pub published: Counter,
    pub deliveries: Counter,
    pub drops: Counter,
    pub slow_consumers: Counter,
    pub bytes_written: Counter,
    pub history_events: Gauge,
    pub history_bytes: Gauge,
    pub history_evictions: Counter,
    pub topics: Gauge,
    pub idempotency_keys: Gauge,
    pub idempotency_dropped: Counter,
    /// The io driver the worker runs on ("io_uring" or "epoll"), set once it starts.
    pub driver: std::sync::OnceLock<&'static str>,
    connections: [Gauge; 4],
    responses: [Counter; STATUSES.len() + 1],
    latency_buckets: [Counter; LATENCY_BOUNDS.len() + 1],
    latency_sum_micros: Counter,
}

impl WorkerMetrics {
    pub fn connection(&self, t: Transport, delta: i64) {
        self.connections[t as usize].add(delta);
    }

    pub fn response(&self, status: u16) {
        let i = STATUSES.iter().position(|&s| s == status).unwrap_or(STATUSES.len());
        self.responses[i].inc();
    }

    /// One publish-to-write latency observation.
    pub fn latency(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BOUNDS.iter().position(|&b| secs <= b).unwrap_or(LATENCY_BOUNDS.len());
        self.latency_buckets[i].inc();
        self.latency_sum_micros.add(d.as_micros() as u64);
    }
}

/// One worker's cross-core inboxes as `/metrics` shows them (the mesh reports them).
#[derive(Debug, Clone, Copy, Default)]
pub struct Queues {
    /// Messages waiting for the worker as a topic owner, and for it as a subscriber host.
    pub owner_depth: usize,
    pub delivery_depth: usize,
    /// Times a sender found each full and waited.
    pub owner_full: u64,
    pub delivery_full: u64,
}

/// Every worker's block.
pub struct Metrics {
    pub workers: Box<[WorkerMetrics]>,
}

impl Metrics {
    pub fn new(workers: usize) -> Metrics {
        Metrics { workers: (0..workers).map(|_| WorkerMetrics::default()).collect() }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, queues: &[Queues]) -> String {
        let mut out = String::with_capacity(8192);
        let per_worker =
            |out: &mut String, name: &str, kind: &str, help: &str, value: &dyn Fn(&WorkerMetrics) -> i128| {
                header(out, name, kind, help);
                for (w, m) in self.workers.iter().enumerate() {
                    let _ = writeln!(out, "{name}{{worker=\"{w}\"}} {}", value(m));
                }
            };
        header(&mut out, "herald_driver", "gauge", "The io driver each worker runs on (an info metric: always 1).");
        for (w, m) in self.workers.iter().enumerate() {
            if let Some(driver) = m.driver.get() {
                let _ = writeln!(out, "herald_driver{{driver=\"{driver}\",worker=\"{w}\"}} 1");
            }
        }
        header(&mut out, "herald_connections", "gauge", "Open connections by transport and worker.");
        for (w, m) in self.workers.iter().enumerate() {
            for t in Transport::ALL {
                let _ = writeln!(
                    out,
                    "herald_connections{{transport=\"{}\",worker=\"{w}\"}} {}",
                    t.label(),
                    m.connections[t as usize].get()
                );
            }
        }
        per_worker(&mut out, "herald_connections_accepted_total", "counter", "Connections accepted.", &|m| {
            m.accepted.get().into()
        });
        per_worker(
            &mut out,
            "herald_connections_rejected_total",
            "counter",
            "Connections refused with 503 over the connection cap.",
            &|m| m.rejected.get().into(),
        );
        per_worker(
            &mut out,
            "herald_events_published_total",
            "counter",
            "Events published (counted by the topic's owner).",
            &|m| m.published.get().into(),
        );
        per_worker(&mut out, "herald_deliveries_total", "counter", "Events handed to subscribers.", &|m| {
            m.deliveries.get().into()
        });
        per_worker(
            &mut out,
            "herald_drops_total",
            "counter",
            "Queued events discarded with a slow consumer's connection.",
            &|m| m.drops.get().into(),
        );
        per_worker(
            &mut out,
            "herald_slow_consumer_disconnects_total",
            "counter",
            "Connections cut for exceeding max_pending_bytes (or not taking a long-poll answer).",
            &|m| m.slow_consumers.get().into(),
        );
        per_worker(
            &mut out,
            "herald_history_events",
            "gauge",
            "Events held in history rings of the topics each worker owns.",
            &|m| m.history_events.get().into(),
        );
        per_worker(
            &mut out,
            "herald_history_bytes",
            "gauge",
            "What the events in history cost, roughly, in bytes (bounded by max_history_bytes).",
            &|m| m.history_bytes.get().into(),
        );
        per_worker(
            &mut out,
            "herald_history_evictions_total",
            "counter",
            "Events evicted from history to stay within max_history_bytes.",
            &|m| m.history_evictions.get().into(),
        );
        per_worker(
            &mut out,
            "herald_topics",
            "gauge",
            "Topics each worker owns (with history, subscribers, or both).",
            &|m| m.topics.get().into(),
        );
        per_worker(
            &mut out,
            "herald_idempotency_keys",
            "gauge",
            "Idempotency keys of publishes remembered (within idempotency_ttl) by each worker's owner.",
            &|m| m.idempotency_keys.get().into(),
        );
        per_worker(
            &mut out,
            "herald_idempotency_keys_dropped_total",
            "counter",
            "Idempotency keys forgotten before their TTL to stay within max_idempotency_keys.",
            &|m| m.idempotency_dropped.get().into(),
        );
        per_worker(&mut out, "herald_bytes_written_total", "counter", "Bytes written to client sockets.", &|m| {
            m.bytes_written.get().into()
        });
        header(&mut out, "herald_http_responses_total", "counter", "HTTP responses by status code.");
        for (w, m) in self.workers.iter().enumerate() {
            for (i, c) in m.responses.iter().enumerate() {
                let code = STATUSES.get(i).map_or("other".to_string(), u16::to_string);
                let _ = writeln!(out, "herald_http_responses_total{{status=\"{code}\",worker=\"{w}\"}} {}", c.get());
            }
        }
        header(&mut out, "herald_mesh_queue_depth", "gauge", "Messages waiting in each worker's cross-core inboxes.");
        for (w, q) in queues.iter().enumerate() {
            let _ = writeln!(out, "herald_mesh_queue_depth{{queue=\"owner\",worker=\"{w}\"}} {}", q.owner_depth);
            let _ = writeln!(out, "herald_mesh_queue_depth{{queue=\"delivery\",worker=\"{w}\"}} {}", q.delivery_depth);
        }
        header(
            &mut out,
            "herald_mesh_queue_full_total",
            "counter",
            "Times a sender found a cross-core inbox full and waited.",
        );
        for (w, q) in queues.iter().enumerate() {
            let _ = writeln!(out, "herald_mesh_queue_full_total{{queue=\"owner\",worker=\"{w}\"}} {}", q.owner_full);
            let _ =
                writeln!(out, "herald_mesh_queue_full_total{{queue=\"delivery\",worker=\"{w}\"}} {}", q.delivery_full);
        }
        header(
            &mut out,
            "herald_publish_to_write_latency_seconds",
            "histogram",
            "From an event's publish to the end of the write that delivered it, per event and worker.",
        );
        let mut cumulative = vec![0u64; LATENCY_BOUNDS.len() + 1];
        let mut sum = 0u64;
        for m in self.workers.iter() {
            for (i, c) in m.latency_buckets.iter().enumerate() {
                cumulative[i] += c.get();
            }
            sum += m.latency_sum_micros.get();
        }
        let mut running = 0;
        for (i, n) in cumulative.iter().enumerate() {
            running += n;
            let le = LATENCY_BOUNDS.get(i).map_or("+Inf".to_string(), |b| format!("{b}"));
            let _ = writeln!(out, "herald_publish_to_write_latency_seconds_bucket{{le=\"{le}\"}} {running}");
        }
        let _ = writeln!(out, "herald_publish_to_write_latency_seconds_sum {}", sum as f64 / 1e6);
        let _ = writeln!(out, "herald_publish_to_write_latency_seconds_count {running}");
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_help_and_type() {
        let m = Metrics::new(2);
        m.workers[0].published.add(3);
        m.workers[1].connection(Transport::Sse, 2);
        m.workers[1].connection(Transport::Sse, -1);
        m.workers[0].latency(Duration::from_micros(70));
        m.workers[1].latency(Duration::from_secs(10));
        m.workers[0].response(200);
        m.workers[0].response(299);
        let _ = m.workers[1].driver.set("epoll");
        let text = m.render(&[Queues::default(); 2]);
        assert!(text.contains("herald_events_published_total{worker=\"0\"} 3\n"));
        assert!(text.contains("herald_driver{driver=\"epoll\",worker=\"1\"} 1\n"));
        assert!(!text.contains("herald_driver{driver=\"epoll\",worker=\"0\"}"), "worker 0 has not started");
        assert!(text.contains("herald_connections{transport=\"sse\",worker=\"1\"} 1\n"));
        assert!(text.contains("herald_publish_to_write_latency_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(text.contains("herald_publish_to_write_latency_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("herald_http_responses_total{status=\"other\",worker=\"0\"} 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
            assert!(text.contains(&format!("# TYPE {family} ")), "{family} has no TYPE");
            assert!(text.contains(&format!("# HELP {family} ")), "{family} has no HELP");
        }
    }
}

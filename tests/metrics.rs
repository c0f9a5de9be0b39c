//! `GET /metrics`: Prometheus text that a real parser reads, every family with HELP and TYPE,
//! and numbers that move exactly — N published → N, M deliveries → M, gauges back to 0.

mod common;

use common::*;
use prometheus_parse::{Scrape, Value};
use std::io::Write;

fn scrape(s: &Server) -> Scrape {
    let r = request(s, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let text = r.text();
    for family in [
        "herald_connections",
        "herald_events_published_total",
        "herald_deliveries_total",
        "herald_drops_total",
        "herald_slow_consumer_disconnects_total",
        "herald_history_events",
        "herald_publish_to_write_latency_seconds",
        "herald_connections_accepted_total",
        "herald_http_responses_total",
        "herald_bytes_written_total",
        "herald_mesh_queue_depth",
    ] {
        assert!(text.contains(&format!("# HELP {family} ")), "{family} has no HELP");
        assert!(text.contains(&format!("# TYPE {family} ")), "{family} has no TYPE");
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text")
}

/// The sum over workers of a counter or gauge, optionally only samples with `label=value`.
fn total(s: &Scrape, metric: &str, label: Option<(&str, &str)>) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == metric)
        .filter(|x| label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
        .map(|x| match x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{metric} is not a plain value"),
        })
        .sum()
}

fn wait_total(s: &Server, metric: &str, label: Option<(&str, &str)>, want: f64) {
    wait_until(&format!("{metric} {label:?} == {want}"), || total(&scrape(s), metric, label) == want);
}

#[test]
fn numbers_move_exactly_and_gauges_return_to_zero() {
    each_driver(2, &[], |s| {
        let before = scrape(s);
        assert_eq!(total(&before, "herald_events_published_total", None), 0.0);

        let mut subs: Vec<SseClient> = (0..4).map(|_| SseClient::open(s, "/sub/m", &[])).collect();
        wait_total(s, "herald_connections", Some(("transport", "sse")), 4.0);

        let ids: Vec<String> = (0..10).map(|i| publish_ok(s, "m", &format!("e{i}"))).collect();
        for sub in subs.iter_mut() {
            let got = sub.take(10);
            assert_eq!(got.iter().map(|e| e.id.clone().unwrap()).collect::<Vec<_>>(), ids);
        }
        wait_total(s, "herald_events_published_total", None, 10.0);
        wait_total(s, "herald_deliveries_total", None, 40.0);
        wait_total(s, "herald_history_events", None, 10.0);
        let after = scrape(s);
        let latency =
            after.samples.iter().find(|x| x.metric == "herald_publish_to_write_latency_seconds").expect("histogram");
        let Value::Histogram(buckets) = &latency.value else { panic!("latency is not a histogram") };
        let observed = buckets.iter().map(|b| b.count).fold(0.0, f64::max);
        assert!(observed >= 10.0, "at least one observation per event per worker with subscribers: {observed}");
        assert!(total(&after, "herald_http_responses_total", Some(("status", "200"))) >= 10.0 + 4.0);
        assert!(total(&after, "herald_bytes_written_total", None) > 0.0);

        // A WebSocket and a held poll show up under their transports.
        let mut ws = s.connect();
        ws.write_all(
            b"GET /sub/m HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .unwrap();
        assert_eq!(read_head(&mut ws).expect("101").0, 101);
        let mut poll = s.connect();
        poll.write_all(b"GET /sub/m?timeout=60 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        wait_total(s, "herald_connections", Some(("transport", "ws")), 1.0);
        wait_total(s, "herald_connections", Some(("transport", "longpoll")), 1.0);

        drop(subs);
        drop(ws);
        drop(poll);
        for t in ["sse", "ws", "longpoll"] {
            wait_total(s, "herald_connections", Some(("transport", t)), 0.0);
        }
    });
}

#[test]
fn slow_consumers_are_counted() {
    each_driver(2, &["--max-pending-bytes", "65536"], |s| {
        let mut stalled = s.connect_with_recv_buffer(4096);
        stalled.write_all(b"GET /sub/slowm HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n").unwrap();
        assert_eq!(read_head(&mut stalled).expect("head").0, 200);
        let big = "x".repeat(32 * 1024);
        let mut p = Publisher::new(s);
        let mut n = 0;
        // Publish until the stalled reader is cut (bounded: 64 MiB at most).
        while total(&scrape(s), "herald_slow_consumer_disconnects_total", None) < 1.0 {
            assert!(n < 2048, "the stalled reader was never cut");
            p.publish("slowm", &big);
            n += 1;
        }
        let sc = scrape(s);
        assert_eq!(total(&sc, "herald_slow_consumer_disconnects_total", None), 1.0);
        assert_eq!(total(&sc, "herald_drops_total", None), 1.0);
    });
}

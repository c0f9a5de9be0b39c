//! Limits under attack (API.md §6): many half-open connections, a 10 GB declared body, and
//! stalled readers with tiny receive windows while megabytes are published. None may take
//! the server down, grow its memory without bound, or starve the other clients.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;

#[test]
fn ten_thousand_half_open_connections_are_cut_while_others_are_served() {
    for driver in drivers() {
        let s = Server::with(driver, 2, &["--head-timeout", "2"]);
        let mut idle = Vec::with_capacity(10_000);
        for i in 0..10_000 {
            let c = TcpStream::connect(s.addr).unwrap_or_else(|e| panic!("{driver}: connection {i}: {e}"));
            if i % 3 == 0 {
                // a third of them send a partial head and stop
                let _ = (&c).write_all(b"GET /sub/x HTTP/1.1\r\nHost: ");
            }
            idle.push(c);
        }
        // Others are served meanwhile.
        let r = request(&s, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.status, 200, "{driver}");
        let id = publish_ok(&s, "alive", "still");
        assert!(!id.is_empty());
        // Every half-open one is cut at the head timeout.
        wait_until("half-open connections closed", || metric(&s, "herald_connections{transport=\"http\"") <= 1.0);
        for c in idle.iter_mut().step_by(997) {
            // A partial head is answered 408 before the close; an idle one just closed.
            let got = wait_closed(c, DEADLINE);
            assert!(
                got.is_empty() || got.starts_with(b"HTTP/1.1 408 "),
                "{driver}: {:?}",
                String::from_utf8_lossy(&got)
            );
        }
    }
}

#[test]
fn a_ten_gigabyte_body_is_refused_without_reading() {
    each_driver(2, &[], |s| {
        let mut c = s.connect();
        c.write_all(b"POST /pub/big HTTP/1.1\r\nHost: t\r\nContent-Length: 10737418240\r\n\r\n").unwrap();
        let r = read_response(&mut c).expect("an answer before any body byte");
        assert_eq!(r.status, 413);
        assert!(r.json()["error"]["message"].as_str().is_some());
        let mut c = s.connect();
        c.write_all(
            b"POST /pub/big HTTP/1.1\r\nHost: t\r\nContent-Length: 10737418240\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
        assert_eq!(read_response(&mut c).expect("413 at once").status, 413);
    });
}

#[test]
fn stalled_readers_keep_memory_bounded_and_others_get_everything() {
    each_driver(2, &["--max-pending-bytes", "262144"], |s| {
        let baseline = rss_kib(s);
        let mut stalled = Vec::new();
        for _ in 0..20 {
            let mut c = s.connect_with_recv_buffer(2048);
            c.write_all(b"GET /sub/flood HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n").unwrap();
            assert_eq!(read_head(&mut c).expect("head").0, 200);
            stalled.push(c);
        }
        let healthy = SseClient::open(s, "/sub/flood", &[]);
        // 6 MiB in 64 KiB events, paced by the healthy reader (two ahead at most).
        let count = 96;
        let size = 64 * 1024 - 64;
        let (tx, rx) = std::sync::mpsc::channel::<usize>();
        std::thread::scope(|sc| {
            let reader = sc.spawn(move || {
                let mut healthy = healthy;
                for i in 0..count {
                    let ev = healthy.next_event().unwrap_or_else(|| panic!("healthy reader cut after {i}"));
                    assert!(ev.data.starts_with(&format!("{i:04}:")));
                    let _ = tx.send(i);
                }
            });
            let mut p = Publisher::new(s);
            for i in 0..count {
                if i >= 2 {
                    rx.recv_timeout(DEADLINE).expect("healthy reader keeps up");
                }
                let mut d = format!("{i:04}:");
                d.push_str(&"f".repeat(size - d.len()));
                p.publish("flood", &d);
            }
            reader.join().expect("healthy reader got every event");
        });
        // Memory: history (6 MiB, shared by every queue) plus at most the cap per stalled reader
        // and slack — not 20 × 6 MiB.
        let grown = rss_kib(s).saturating_sub(baseline);
        assert!(grown < 6 * 1024 + 20 * 256 + 24 * 1024, "RSS grew by {grown} KiB");
        // And the stalled ones were cut.
        let cut = metric(s, "herald_slow_consumer_disconnects_total");
        assert_eq!(cut, 20.0, "every stalled reader is cut as a slow consumer");
        drop(stalled);
    });
}

#[test]
fn a_websocket_peer_that_pings_but_never_reads_is_cut() {
    use common::ws::{OP_PING, cframe};
    each_driver(2, &["--max-pending-bytes", "65536"], |s| {
        let mut c = s.connect_with_recv_buffer(4096);
        c.write_all(
            b"GET /sub/pings HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .unwrap();
        assert_eq!(read_head(&mut c).expect("101").0, 101);
        // 8 MiB of pongs owed, more than any kernel buffer holds: the queue must hit its cap.
        let ping = cframe(true, OP_PING, &[b'p'; 125]);
        c.set_write_timeout(Some(DEADLINE)).unwrap();
        for _ in 0..64_000 {
            if c.write_all(&ping).is_err() {
                break; // already cut
            }
        }
        wait_until("the pinging peer is cut as a slow consumer", || {
            metric(s, "herald_slow_consumer_disconnects_total") == 1.0
        });
        assert_eq!(request(s, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").status, 200);
    });
}

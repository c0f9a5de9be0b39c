//! WebSocket with a mainstream client (API.md §3.2, §5): the `tungstenite` crate connects,
//! receives events, subscribes to another topic, reconnects with `?last_event_id=` and gets
//! exactly what it missed, then sees the server go away with close 1001 on SIGTERM.
mod common;

use common::*;
use serde_json::{Value, json};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Error, Message, WebSocket};

type Client = WebSocket<TcpStream>;

fn connect(s: &Server, path: &str) -> Client {
    let url = format!("ws://{}{path}", s.addr);
    let (ws, resp) = tungstenite::client(url.as_str(), s.connect())
        .unwrap_or_else(|e| panic!("tungstenite could not connect to {url}: {e}"));
    assert_eq!(resp.status().as_u16(), 101, "{url}");
    ws
}

/// The next JSON text message (tungstenite answers pings itself).
fn next_json(ws: &mut Client) -> Value {
    loop {
        match ws.read().expect("read a message") {
            Message::Text(t) => {
                return serde_json::from_str(t.as_str()).unwrap_or_else(|e| panic!("not JSON ({e}): {t:?}"));
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a JSON text message, got {other:?}"),
        }
    }
}

fn expect_event(ws: &mut Client, topic: &str, id: &str, data: &str) {
    let v = next_json(ws);
    assert_eq!(v["event"], "message", "{v}");
    assert_eq!(v["topic"], topic, "{v}");
    assert_eq!(v["id"], id, "{v}");
    assert_eq!(v["data"], data, "{v}");
}

#[test]
fn tungstenite_client_subscribes_resumes_and_sees_the_server_go_away() {
    for driver in drivers() {
        let mut s = Server::with(driver, 2, &[]);
        let mut ws = connect(&s, "/sub/tc");

        let id1 = publish_ok(&s, "tc", "one");
        expect_event(&mut ws, "tc", &id1, "one");

        // Subscribe to another topic over the socket.
        ws.send(Message::text(json!({"method": "subscribe", "id": 1, "topics": ["tc2"]}).to_string())).unwrap();
        let v = next_json(&mut ws);
        assert_eq!(v, json!({"event": "subscribed", "id": 1, "topics": ["tc2"]}), "{driver}");
        let id2 = publish_ok(&s, "tc2", "two");
        expect_event(&mut ws, "tc2", &id2, "two");
        let id3 = publish_ok(&s, "tc", "three");
        expect_event(&mut ws, "tc", &id3, "three");
        let last_seen = id3;

        // Disconnect cleanly: our close is answered and the connection ends.
        ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "later".into() })).unwrap();
        loop {
            match ws.read() {
                Ok(Message::Close(_)) | Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
                Ok(other) => panic!("{driver}: {other:?} after our close"),
                Err(Error::ConnectionClosed) => break,
                Err(e) => panic!("{driver}: the close handshake did not end cleanly: {e}"),
            }
        }

        // Missed while away.
        let mut p = Publisher::new(&s);
        let missed: Vec<(String, String)> = (1..=3)
            .map(|i| {
                let d = format!("missed {i}");
                (p.publish("tc", &d), d)
            })
            .collect();
        p.publish("tc2", "other topic, not asked for");

        let mut ws = connect(&s, &format!("/sub/tc?last_event_id={}", pct(&last_seen)));
        for (id, d) in &missed {
            expect_event(&mut ws, "tc", id, d);
        }
        let live = p.publish("tc", "live");
        expect_event(&mut ws, "tc", &live, "live");

        // SIGTERM: the client gets close 1001 (going away), answers it, and the stream ends.
        let (status, took, close, end) = std::thread::scope(|sc| {
            let reader = sc.spawn(move || {
                let mut close = None;
                loop {
                    match ws.read() {
                        Ok(Message::Close(f)) => close = Some(f),
                        Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {}
                        Ok(other) => panic!("unexpected {other:?} while the server shuts down"),
                        Err(e) => return (close, e),
                    }
                }
            });
            let started = Instant::now();
            let status = s.terminate();
            let took = started.elapsed();
            let (close, end) = reader.join().unwrap();
            (status, took, close, end)
        });
        assert!(status.success(), "{driver}: exit status after SIGTERM: {status:?}");
        assert!(took <= Duration::from_secs(5), "{driver}: took {took:?} to exit");
        let frame = close
            .unwrap_or_else(|| panic!("{driver}: no close frame before the end ({end})"))
            .unwrap_or_else(|| panic!("{driver}: the close frame carried no code"));
        assert_eq!(frame.code, CloseCode::Away, "{driver}: close code");
        assert!(matches!(end, Error::ConnectionClosed), "{driver}: the connection did not end cleanly: {end}");
    }
}

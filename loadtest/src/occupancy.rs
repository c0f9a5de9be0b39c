//! The check every scenario ends with against herald (API.md §9): `GET /topics/{topic}` must
//! count exactly the subscribers the harness holds open. A free correctness check of the
//! server's counts; a server without the route (the peers) is reported as not checked.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A one-shot `GET path` (with `headers`, `Name: value`): its status and body.
pub async fn get(addr: SocketAddr, path: &str, headers: &[String]) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: load\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}

/// Compares herald's count of each topic's subscribers with `expected`, waiting up to 5 s for
/// counts to settle (a subscription is counted once its owner has registered it). `headers`
/// carry the publish rights the route asks for.
pub async fn check(addr: SocketAddr, headers: &[String], expected: &[(String, u64)]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut mismatches = Vec::new();
    for (topic, want) in expected {
        loop {
            let got = match get(addr, &format!("/topics/{topic}"), headers).await {
                Some((200, body)) => serde_json::from_str::<Value>(&body).ok().and_then(|v| v["subscribers"].as_u64()),
                Some((404, _)) => return json!({"checked": false, "why": "no GET /topics/{topic} route"}),
                _ => None,
            };
            if got == Some(*want) {
                break;
            }
            if Instant::now() >= deadline {
                mismatches.push(json!({"topic": topic, "server": got, "harness": want}));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if !mismatches.is_empty() {
        eprintln!(
            "  occupancy: {} of {} topics counted wrong, e.g. {}",
            mismatches.len(),
            expected.len(),
            mismatches[0]
        );
    }
    json!({"checked": true, "topics": expected.len(), "mismatched": mismatches.len(),
           "examples": mismatches.into_iter().take(5).collect::<Vec<_>>()})
}

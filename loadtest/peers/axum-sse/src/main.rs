//! The baseline herald is measured against: the SSE fanout server a Rust developer would
//! write with axum and tokio instead — one `tokio::sync::broadcast` channel per topic,
//! `axum::response::Sse` for the stream, `POST /pub/{topic}` to publish.
//!
//! Usage: `axum-sse-peer 127.0.0.1:18600 [worker threads, default 1]`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};

/// Messages a slow subscriber may fall behind before it skips ahead.
const CHANNEL_CAPACITY: usize = 4096;

type Message = Arc<(u64, String)>;

struct Topic {
    tx: broadcast::Sender<Message>,
    next_id: AtomicU64,
}

#[derive(Clone, Default)]
struct Topics(Arc<Mutex<HashMap<String, Arc<Topic>>>>);

impl Topics {
    fn get(&self, name: &str) -> Arc<Topic> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Topic { tx: broadcast::channel(CHANNEL_CAPACITY).0, next_id: AtomicU64::new(1) })
            })
            .clone()
    }
}

async fn subscribe(
    Path(topic): Path<String>,
    State(topics): State<Topics>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = topics.get(&topic).tx.subscribe();
    let events = BroadcastStream::new(rx)
        .filter_map(|m| m.ok())
        .map(|m| Ok(Event::default().id(m.0.to_string()).data(m.1.as_str())));
    Sse::new(events).keep_alive(KeepAlive::default())
}

async fn publish(Path(topic): Path<String>, State(topics): State<Topics>, body: String) -> String {
    let t = topics.get(&topic);
    let id = t.next_id.fetch_add(1, Ordering::Relaxed);
    let _ = t.tx.send(Arc::new((id, body)));
    serde_json::json!({ "id": id.to_string(), "topic": topic }).to_string()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18600".into());
    let threads: usize = args.next().and_then(|t| t.parse().ok()).unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let app = Router::new()
            .route("/sub/{topic}", get(subscribe))
            .route("/pub/{topic}", post(publish))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(Topics::default());
        let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
        eprintln!("axum-sse-peer listening on {addr} with {threads} worker thread(s)");
        axum::serve(listener, app).await.expect("serve");
    });
}

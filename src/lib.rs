//! herald — an event fanout server.
//!
//! `docs/architecture.md` is the long version of this page: read it first.
//!
//! ## Layers
//!
//! Lowest first. A module uses only modules of lower layers — never one above, never a peer
//! of its own layer — and no modules import each other in a circle, down to files
//! (`tests/layers.rs` checks both, reading this list).
//!
//! 1. `sys`, `clock`, `cursor`, `keys` — system calls; time; event ids and resume positions;
//!    slab keys with generations.
//! 2. `proto` — pure codecs: HTTP/1.1 heads and bodies, SSE, WebSocket frames, long-poll JSON.
//! 3. `config`, `metrics`, `route` — every setting; the counters; method and path → route.
//! 4. `auth` — tokens, rights, CORS.
//! 5. `frames`, `redis` — one event encoded once for every transport; Redis connections, the
//!    publish script and subscriber connections (cluster mode, in progress: not wired yet).
//! 6. `pubsub` — topics, messages between workers, history, the `Sequencer` seam (`owner`).
//! 7. `mesh` — the bounded lock-free queues between workers.
//! 8. `shard` — one worker's state (connections, subscriptions, outboxes) and its tasks.
//! 9. `api` — herald's own HTTP API: requests checked, turned into publishes and subscriptions.
//! 10. `seeds` — the four existing APIs, as adapters over `api`.
//! 11. `conn` — a connection's life: reading requests, dispatching them, becoming a stream.
//! 12. `server` — startup: listeners, one thread and runtime per worker, the staged stop.
//!
//! ## The path of an event
//!
//! 1. **Accept** — `server`: one thread per core, each with its own monoio runtime (io_uring
//!    or epoll) and its own SO_REUSEPORT listeners; a connection lives on the worker that
//!    accepted it, in that worker's slab (`shard::state`, `shard::conn`).
//! 2. **Parse** — `conn` reads requests with the pure codecs of `proto::http1` (heads on
//!    httparse, bodies by length or chunked); `route` names the handler in `api` or `seeds`.
//! 3. **Route the publish** — `api::publish` checks the publisher's rights and sends the
//!    event through a bounded lock-free queue (`mesh`) to the topic's owner worker
//!    (`pubsub::topic::owner_of`); a pipelining client's publishes go together
//!    (`conn::answers`).
//! 4. **Encode once** — the owner task (`shard::owning`) hands it to the worker's
//!    `pubsub::Sequencer`, which assigns the cursor, builds one `frames::Frame` holding the
//!    event's encodings, keeps it in the topic's history (`pubsub::history`) and forwards it
//!    to each worker with subscribers.
//! 5. **Deliver** — each worker's delivery task (`shard::delivery`) appends the shared bytes
//!    to every local subscriber's outbox (`Shard::deliver`) and flushes each touched
//!    connection with one vectored write (`shard::outbox`, the one place bytes hit a socket,
//!    via `sys`).
//! 6. **Backpressure** — an outbox past `max_pending_bytes` closes its connection; the client
//!    resumes from history with its last event id.
//!
//! A waiting connection has no task of its own — an open SSE stream, a WebSocket between
//! messages, a held long-poll with nothing to answer yet: it is *parked* (`shard::parked`),
//! its socket in the worker's epoll set (`shard::waitset`), watched by one task per worker,
//! which spawns a task when there is something to do. Tasks that yield go through
//! `shard::turns`, which makes monoio actually run the others first.
#![deny(unsafe_code)]

pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod conn;
pub mod cursor;
pub mod frames;
pub mod keys;
pub mod mesh;
pub mod metrics;
pub mod proto;
pub mod pubsub;
pub mod redis;
pub mod route;
pub mod seeds;
pub mod server;
pub mod shard;
pub mod sys;

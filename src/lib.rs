//! herald — an event fanout server.
//!
//! The path of an event through the modules:
//!
//! 1. **Accept** — `shard`: one thread per core, each with its own monoio runtime (io_uring
//!    or epoll) and its own SO_REUSEPORT listener; a connection lives on the worker that
//!    accepted it, in that worker's slab (`shard::state`).
//! 2. **Parse** — `conn` reads requests with the pure codecs of `proto::http1` (heads on
//!    httparse, bodies by length or chunked); `route` picks the handler in `api`.
//! 3. **Route the publish** — `api::publish` sends the event through a bounded lock-free
//!    queue (`mesh`) to the topic's owner worker (`pubsub::topic::owner_of`); a pipelining
//!    client's publishes go together (`conn::answers`).
//! 4. **Encode once** — the owner (`pubsub::owner`) assigns the cursor (`pubsub::cursor`),
//!    builds one `frames::Frame` holding the event's encodings (`proto::sse`), keeps it in
//!    the topic's history (`pubsub::history`) and forwards it to each worker with subscribers.
//! 5. **Deliver** — each worker's delivery task (`pubsub::local`) appends the shared bytes to
//!    every local subscriber's outbox and flushes each touched connection with one vectored
//!    write (`conn::outbox`, the one place bytes hit a socket, via `sys`).
//! 6. **Backpressure** — an outbox past `max_pending_bytes` closes its connection; the client
//!    resumes from history with its last event id.
//!
//! A waiting connection has no task of its own — an open SSE stream, a WebSocket between
//! messages, a held long-poll with nothing to answer yet: it is *parked* (`shard::parked`),
//! its socket in the worker's epoll set, watched by one task per worker, which spawns a task
//! when there is something to do. Tasks that yield go through
//! `shard::turns`, which makes monoio actually run the others first.
#![deny(unsafe_code)]

pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod conn;
pub mod cursor;
pub mod frames;
pub mod mesh;
pub mod metrics;
pub mod proto;
pub mod pubsub;
pub mod route;
pub mod seeds;
pub mod server;
pub mod shard;
pub mod sys;

//! What one connection may take of its worker: room for a request body being read, and
//! new topic names at a bounded rate.

use std::time::Duration;

use crate::api::ctx::Ctx;
use crate::proto::http1::{Response, Status};

/// Room held in the worker's budget for a request body being read (`max_body_memory`, split
/// between workers), given back when dropped. A body is refused with 503 rather than read
/// past the budget: bodies arriving slowly cannot add up to unbounded memory.
pub struct BodyRoom {
    shard: crate::shard::state::ShardRef,
    bytes: usize,
    /// The body's deadline: `body_timeout`, plus a second per 64 KiB it may hold.
    pub deadline: monoio::time::Instant,
    /// Its limit.
    pub limit: usize,
}

/// The slowest rate a large body is given time for, in bytes per second.
pub const BODY_MIN_RATE: usize = 64 * 1024;

impl BodyRoom {
    pub fn take(ctx: &Ctx, bytes: usize, limit: usize) -> Option<BodyRoom> {
        let timeout = ctx.config.body_timeout + Duration::from_secs((limit.max(bytes) / BODY_MIN_RATE) as u64);
        let deadline = monoio::time::Instant::now() + timeout;
        if !ctx.shard.borrow_mut().reserve_body(bytes) {
            return None;
        }
        Some(BodyRoom { shard: ctx.shard.clone(), bytes, deadline, limit })
    }
}

impl Drop for BodyRoom {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shard.try_borrow_mut() {
            s.release_body(self.bytes);
        }
    }
}

/// Whether the connection may name new topics now (see `shard::state::Naming`).
pub fn may_name_topics(ctx: &Ctx) -> Result<(), NamingTooFast> {
    let mut s = ctx.shard.borrow_mut();
    let Some(c) = s.conn(ctx.key) else { return Ok(()) };
    c.naming.allows(crate::clock::Stamp::now()).map_err(NamingTooFast)
}

/// A connection named new topics faster than it may; it may again after this long.
pub struct NamingTooFast(Duration);

impl NamingTooFast {
    pub fn message(&self) -> String {
        use crate::shard::conn::{NAMING_BURST, NAMING_RATE};
        format!(
            "this connection names new topics too fast (at most {NAMING_BURST} at once, then {NAMING_RATE} a second)"
        )
    }

    /// The refusal: 429, and when to come back.
    pub fn response(&self) -> Response {
        Response::error(Status::TooManyRequests, &self.message(), "/topics")
            .with_header("Retry-After", (self.0.as_secs() + 1).to_string())
    }
}

/// The answer to a subscription an owner refused: the node keeps `max_topics`.
pub fn too_many_topics() -> Response {
    Response::error(Status::Unavailable, "a topic would be new and the server keeps max_topics already", "/topics")
        .with_header("Retry-After", "5")
}

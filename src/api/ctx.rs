//! What a request's handler knows about the connection it serves.

use std::cell::RefCell;
use std::sync::Arc;

use crate::config::Config;
use crate::cursor::Cursor;
use crate::mesh::Mesh;
use crate::shard::conn::ConnKey;
use crate::shard::state::ShardRef;

/// Where a long-poll's answer left a topic: its cursor there.
pub type Stopped = (Arc<str>, Cursor);

/// What a handler needs to know about the connection it serves.
pub struct Ctx {
    /// Where this connection's last data-only poll answer stopped, and in which topic: a
    /// route whose clients keep no cursor continues there, for that topic only.
    pub stopped_at: RefCell<Option<Stopped>>,
    pub shard: ShardRef,
    pub key: ConnKey,
    /// The peer is on this host (loopback may publish without a key).
    pub loopback: bool,
    pub config: Arc<Config>,
    pub mesh: Arc<Mesh>,
    pub worker: usize,
}

impl Ctx {
    pub fn new(shard: ShardRef, key: ConnKey, loopback: bool, stopped_at: Option<Stopped>) -> Ctx {
        let (config, mesh, worker) = {
            let s = shard.borrow();
            (s.config.clone(), s.mesh.clone(), s.id)
        };
        Ctx { stopped_at: RefCell::new(stopped_at), shard, key, loopback, config, mesh, worker }
    }
}

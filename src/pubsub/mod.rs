//! The pub/sub core: topics and their owners, cursors, history rings, and the per-worker
//! index of local subscribers. Apart from connections; it speaks to them through outboxes.

pub mod history;
pub mod idempotency;
pub mod msg;
pub mod owner;
pub mod parts;
pub mod presence;
pub mod probe;
pub mod sequencer;
pub mod tombstones;
pub mod topic;
pub mod workers;

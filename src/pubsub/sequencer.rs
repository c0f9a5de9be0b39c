//! The seam between the engine and where events are numbered and kept.
//!
//! Each worker owns a share of the topics (`topic::owner_of`); for those, its sequencer
//! assigns every event its cursor, keeps the history a resume replays from, registers which
//! workers host subscribers, and answers subscriptions with their replay or gap. The owner
//! task (`shard::owning`) feeds it the worker's `to_owner` inbox and forwards what it answers.
//! `owner::Owner` is the embedded sequencer (this process's memory); a store shared by
//! several nodes plugs in here as a second one.

use std::time::Instant;

use crate::pubsub::msg::{ToOwner, ToWorker};

/// Numbers and keeps the events of the topics one worker owns.
pub trait Sequencer {
    /// Acts on one message, pushing what must go out into `out` as (worker, message), in the
    /// order it must be delivered.
    fn handle(&mut self, msg: ToOwner, now: Instant, out: &mut Vec<(usize, ToWorker)>);
    /// Its figures for `/metrics`.
    fn stats(&self) -> Stats;
}

/// A sequencer's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events published through it so far.
    pub published: u64,
    /// Events held in history, and what they cost in bytes.
    pub history_events: usize,
    pub history_bytes: usize,
    /// Events evicted from history to stay within the memory budget.
    pub evicted: u64,
    /// Topics it keeps.
    pub topics: usize,
    /// Idempotency keys it remembers, and those it forgot before their TTL to stay within
    /// `max_idempotency_keys`.
    pub idempotency_keys: usize,
    pub idempotency_dropped: u64,
}

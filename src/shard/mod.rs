//! One worker's state and the tasks that act on it without a connection of their own:
//! - `state`: the `Shard` — the slab of connections (`conn`), the local topic index (each
//!   topic's subscribers: `subscribers`) with each connection's subscription
//!   (`subscription`), and every operation on them, delivery included;
//! - `outbox`: where bytes hit a socket;
//! - `delivery`: the task that drains the worker's delivery inbox into the shard and flushes;
//! - `owning`: the task that drains the worker's owner inbox through its sequencer;
//! - `parked` (with `waitset`): connections waiting without a task, and their watcher;
//! - `closing`: ending a connection cleanly;
//! - `unsubscribes`: what the worker owes topic owners when it leaves topics;
//! - `presence`: a worker's share of who is subscribed to topics under `presence_prefixes`;
//! - `occupancy` (with `watching`): the task that counts the topics `$occupancy:` topics
//!   watch;
//! - `turns`: the yield relay that lets the other tasks of a worker run.

pub mod closing;
pub mod conn;
pub mod delivery;
pub mod occupancy;
pub mod outbox;
pub mod owning;
pub mod parked;
pub mod presence;
pub mod state;
pub mod subscribers;
pub mod subscription;
pub mod turns;
pub mod unsubscribes;
pub mod waitset;
pub mod watching;

pub use turns::yield_now;

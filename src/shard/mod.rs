//! One worker's state and the tasks that act on it without a connection of their own: the
//! slab of connections with their outboxes and subscriptions (`state`, `local`), where bytes
//! hit a socket (`outbox`), the parked set of waiting connections and its watcher (`parked`),
//! the owner task that drains the worker's sequencer inbox (`owning`), and the yield relay
//! (`turns`).

pub mod closing;
pub mod local;
pub mod outbox;
pub mod owning;
pub mod parked;
pub mod state;
pub mod turns;

pub use turns::yield_now;

//! The delivery task: drains the worker's `to_worker` inbox into the shard (fanning events
//! out into outboxes, handing publishers their cursors, registering subscriptions) and flushes
//! the connections that got something.

use crate::pubsub::msg::ToWorker;
use crate::shard::state::ShardRef;

/// Most inbox messages handled in one go.
const BATCH: usize = 128;
/// Most connections flushed before the delivery task takes in again and gives the rest of
/// the worker a turn (about 2 ms of writes).
const FLUSH_CHUNK: usize = 256;
/// Most events waiting to have their delivery latency recorded.
const MAX_TIMED: usize = 4096;

/// The delivery task of one worker: takes in its `to_worker` inbox (fanning events out into
/// outboxes, handing publishers their cursors) and flushes the connections that got
/// something, in alternation: a bounded batch of messages, then a bounded chunk of
/// connections, then a turn for the rest of the worker.
///
/// Taking in never waits for a whole round of writes to finish. While events come faster than
/// 10 000 writes go out, a connection's frames pile up until its turn comes and leave in one
/// write; and publishers get their cursors between chunks, so a burst of publishes is taken
/// in at once rather than one round of writes each.
pub async fn run(shard: ShardRef) {
    let mesh = shard.borrow().mesh.clone();
    let id = shard.borrow().id;
    let inbox = &mesh.to_worker[id];
    let metrics = &mesh.metrics.workers[id];
    // Publish times of the events fanned out and not yet written everywhere, for the
    // latency histogram: recorded when the connections they reached have been flushed.
    let mut published_at: Vec<u64> = Vec::with_capacity(BATCH);
    loop {
        let (took, flushed, idle) = {
            let mut s = shard.borrow_mut();
            let mut took = 0;
            while took < BATCH {
                let Some(msg) = inbox.pop() else { break };
                match msg {
                    ToWorker::Event(f) => {
                        if s.deliver(&f) {
                            published_at.push(f.ts_micros);
                        }
                    }
                    msg => s.handle(msg),
                }
                took += 1;
            }
            let n = s.dirty.len().min(FLUSH_CHUNK);
            for i in 0..n {
                let key = s.dirty[i];
                s.flush(key);
            }
            s.dirty.drain(..n);
            (took, n, s.dirty.is_empty())
        };
        if !published_at.is_empty() && (idle || published_at.len() >= MAX_TIMED) {
            let now = crate::clock::now_micros();
            for ts in published_at.drain(..) {
                metrics.latency(std::time::Duration::from_micros(now.saturating_sub(ts)));
            }
        }
        if took == 0 && flushed == 0 {
            inbox.ready().await;
        } else {
            crate::shard::yield_now().await;
        }
    }
}

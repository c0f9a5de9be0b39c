//! The owner task: drains the worker's `to_owner` inbox through its sequencer and forwards
//! what the sequencer answers to the workers' delivery inboxes, in order.

use std::sync::Arc;
use std::time::Instant;

use crate::mesh::Mesh;
use crate::pubsub::msg::ToWorker;
use crate::pubsub::sequencer::Sequencer;
use crate::pubsub::workers::WorkerSet;

/// Most inbox messages handled before the task yields to the rest of its worker.
const BATCH: usize = 256;

/// The owner task of worker `id`: runs forever.
pub async fn run(mut sequencer: impl Sequencer, id: usize, mesh: Arc<Mesh>) {
    let inbox = &mesh.to_owner[id];
    let mut out: Vec<(usize, ToWorker)> = Vec::with_capacity(BATCH * 2);
    loop {
        inbox.ready().await;
        let now = Instant::now();
        let mut handled = 0;
        while handled < BATCH {
            let Some(msg) = inbox.pop() else { break };
            sequencer.handle(msg, now, &mut out);
            handled += 1;
        }
        let stats = sequencer.stats();
        let metrics = &mesh.metrics.workers[id];
        metrics.published.add(stats.published - metrics.published.get());
        metrics.history_events.set(stats.history_events as i64);
        metrics.history_bytes.set(stats.history_bytes as i64);
        metrics.history_evictions.add(stats.evicted - metrics.history_evictions.get());
        metrics.topics.set(stats.topics as i64);
        metrics.idempotency_keys.set(stats.idempotency_keys as i64);
        metrics.idempotency_dropped.add(stats.idempotency_dropped - metrics.idempotency_dropped.get());
        let mut touched = WorkerSet::default();
        for (w, msg) in out.drain(..) {
            let target = &mesh.to_worker[w];
            if let Err(msg) = target.try_send(msg) {
                // Full: wake it so it drains, then wait for room. Order is kept because this
                // task forwards nothing else meanwhile.
                target.wake();
                target.send(msg).await;
            }
            touched.insert(w);
        }
        for w in touched.iter() {
            mesh.to_worker[w].wake();
        }
        if handled == BATCH {
            super::yield_now().await;
        }
    }
}

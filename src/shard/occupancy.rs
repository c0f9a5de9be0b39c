//! The occupancy reporter (API.md §9): counts, every `occupancy_interval`, the subscribers of
//! the topics that this worker's `$occupancy:` topics watch, and hands the counts to its owner,
//! which publishes those that changed (`ToOwner::Report`).
//!
//! The owner tells its own worker which of its `$occupancy:` topics have subscribers
//! (`shard::watching`); only those are counted, with one probe of
//! every worker per round for all of them. Nothing is counted on subscribing, leaving or
//! delivering: the cost is one round per interval per worker that owns watched topics, and
//! nothing at all (not even a timer) while none of its `$occupancy:` topics has subscribers.

use std::future::poll_fn;
use std::time::Instant;

use crate::pubsub::msg::ToOwner;
use crate::shard::state::ShardRef;

/// Runs the reporter of worker `shard` forever.
pub async fn run(shard: ShardRef) {
    let (mesh, id, interval) = {
        let s = shard.borrow();
        (s.mesh.clone(), s.id, s.config.occupancy_interval)
    };
    // None while nothing is watched: the reporter then sleeps until a watch comes.
    let mut next_round: Option<Instant> = None;
    loop {
        let due = poll_fn(|cx| shard.borrow_mut().watching.poll_due(cx.waker()));
        let all = match next_round {
            Some(at) => monoio::select! {
                _ = monoio::time::sleep_until(at.into()) => true,
                _ = due => false,
            },
            None => {
                due.await;
                false
            }
        };
        let asked = Instant::now();
        let ts_micros = crate::clock::now_micros();
        let watched = shard.borrow().watching.any();
        if all || next_round.is_none() {
            // The next round an interval after this one, if anything is watched.
            next_round = watched.then(|| asked + interval);
        }
        let (metas, topics) = shard.borrow_mut().watching.take(all);
        if metas.is_empty() {
            continue;
        }
        let probe = mesh.count(topics.into(), false).await;
        let counts = metas.into_iter().enumerate().map(|(i, m)| (m, probe.answer(i).by_via.iter().sum())).collect();
        mesh.to_owner[id].send(ToOwner::Report { counts, ts_micros, asked }).await;
    }
}

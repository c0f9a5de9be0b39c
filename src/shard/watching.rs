//! Which of the `$occupancy:` topics a worker owns have subscribers, and which of them to
//! count at once (API.md §9): kept in the worker's shard, told by its owner
//! (`ToWorker::Watched`, `ToWorker::Unwatched`), read by the reporter (`shard::occupancy`).

use std::sync::Arc;
use std::task::{Poll, Waker};

use foldhash::HashMap;

use crate::pubsub::topic::occupancy_of;

/// The `$occupancy:` topics owned here that have subscribers.
#[derive(Default)]
pub struct Watching {
    /// Each, with the topic it watches.
    topics: HashMap<Arc<str>, Arc<str>>,
    /// Those to count at once: they have no value to give a new subscriber.
    due: Vec<Arc<str>>,
    /// The reporter, while it waits.
    waker: Option<Waker>,
}

impl Watching {
    /// `meta` has subscribers: counted at once, then every round.
    pub fn watch(&mut self, meta: Arc<str>) {
        let Some(watched) = occupancy_of(&meta) else { return };
        if !self.topics.contains_key(&meta) {
            self.topics.insert(meta.clone(), watched.into());
        }
        // Duplicates are dropped when taken: no search per watch in a burst of them.
        self.due.push(meta);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Whether any topic is watched (else the reporter has no rounds to make).
    pub fn any(&self) -> bool {
        !self.topics.is_empty()
    }

    /// `meta` has no subscribers left.
    pub fn unwatch(&mut self, meta: &str) {
        // Left in `due` if there: `take` passes over what is not watched.
        self.topics.remove(meta);
        crate::pubsub::topic::shrink_if_sparse(&mut self.topics);
    }

    /// Ready when some are to be counted at once; until then `waker` is woken when some are.
    pub fn poll_due(&mut self, waker: &Waker) -> Poll<()> {
        if self.due.is_empty() {
            self.waker = Some(waker.clone());
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// What to count: every watched topic (`all`), or those due; as (`$occupancy:` name,
    /// topic watched) pairs.
    pub fn take(&mut self, all: bool) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
        let mut due = std::mem::take(&mut self.due);
        due.sort_unstable();
        due.dedup();
        let pairs: Vec<(Arc<str>, Arc<str>)> = if all {
            self.topics.iter().map(|(m, t)| (m.clone(), t.clone())).collect()
        } else {
            due.into_iter().filter_map(|m| self.topics.get(&m).map(|t| (m, t.clone()))).collect()
        };
        pairs.into_iter().unzip()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_topics_are_counted_every_round_and_due_ones_at_once() {
        let mut w = Watching::default();
        w.watch("$occupancy:a".into());
        let _ = w.take(false);
        w.watch("$occupancy:b".into());
        w.watch("$occupancy:b".into());
        w.watch("not-occupancy".into());
        let (metas, topics) = w.take(false);
        assert_eq!((metas.len(), &*topics[0]), (1, "b"), "due once, however often asked");
        assert!(w.take(false).0.is_empty());
        let (mut metas, _) = w.take(true);
        metas.sort();
        assert_eq!(metas, [Arc::from("$occupancy:a"), Arc::from("$occupancy:b")]);
        w.watch("$occupancy:a".into());
        w.unwatch("$occupancy:a");
        assert!(w.take(false).0.is_empty(), "unwatched before its count: not counted");
        assert_eq!(w.take(true).0.len(), 1);
    }
}

//! The unsubscribes a worker owes topic owners: a topic it no longer has subscribers for is
//! released at once here, and its owner told when its inbox has room (the ticker retries).
//!
//! Kept per owner, in order, and sent until that owner's inbox is full: a burst of many
//! thousand releases (clients naming many topics and leaving together) costs each later
//! call only what it sends, never a walk over everything still owed. A subscription to a
//! topic still owed overtakes its unsubscribe, which is then not sent.

use std::collections::VecDeque;
use std::sync::Arc;

use foldhash::HashSet;

use crate::mesh::Mesh;
use crate::pubsub::msg::ToOwner;
use crate::pubsub::workers::WorkerSet;

#[derive(Default)]
pub struct Unsubscribes {
    /// Per owner, the names in the order they were released. A name may stand more than
    /// once, or have been taken back: only names in `owed` are sent.
    queues: Vec<VecDeque<Arc<str>>>,
    owed: HashSet<Arc<str>>,
}

impl Unsubscribes {
    /// Owner `owner` is to be told that this worker left `topic`.
    pub fn owe(&mut self, owner: usize, topic: Arc<str>) {
        if self.queues.len() <= owner {
            self.queues.resize_with(owner + 1, VecDeque::new);
        }
        if self.owed.insert(topic.clone()) {
            self.queues[owner].push_back(topic);
        }
    }

    /// A subscription to `topic` overtakes its unsent unsubscribe.
    pub fn take_back(&mut self, topic: &str) {
        if !self.owed.is_empty() {
            self.owed.remove(topic);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.owed.is_empty()
    }

    /// Sends what fits in each owner's inbox, for worker `worker`; the rest waits.
    pub fn send(&mut self, mesh: &Mesh, worker: usize) {
        if self.owed.is_empty() {
            return;
        }
        let mut woken = WorkerSet::default();
        for (owner, queue) in self.queues.iter_mut().enumerate() {
            while let Some(topic) = queue.pop_front() {
                if !self.owed.contains(&topic) {
                    continue;
                }
                let msg = ToOwner::Unsubscribe { topic: topic.clone(), worker: worker as u16 };
                if mesh.to_owner[owner].try_send(msg).is_err() {
                    queue.push_front(topic);
                    break;
                }
                self.owed.remove(&topic);
                woken.insert(owner);
            }
            if queue.is_empty() && queue.capacity() > 1024 {
                *queue = VecDeque::new();
            }
        }
        if self.owed.is_empty() && self.owed.capacity() > 1024 {
            self.owed = HashSet::default();
        }
        for w in woken.iter() {
            mesh.to_owner[w].wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_takes_back_what_is_owed_and_nothing_is_owed_twice() {
        let mut u = Unsubscribes::default();
        u.owe(1, "a".into());
        u.owe(1, "a".into());
        u.owe(0, "b".into());
        assert_eq!(u.queues[1].len(), 1, "owed once");
        u.take_back("a");
        assert!(!u.owed.contains("a"));
        u.owe(1, "a".into());
        assert_eq!(u.queues[1].len(), 2, "released again: queued again, sent once");
        assert!(!u.is_empty());
    }
}

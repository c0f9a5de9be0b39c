//! Presence (API.md §9) on the topics under `presence_prefixes` whose `$presence:` topics an
//! owner owns: which users (JWT `sub`s) have subscriptions, on which workers, and when each
//! joins and leaves.
//!
//! Workers say when a user's first subscription to a topic arrives on them and when their last
//! one goes (`ToOwner::Present`, from `shard::presence`). A user joins when the first worker
//! has them, and leaves `presence_linger` after the last worker let them go, unless they came
//! back meanwhile: a reconnect, or a tab closed while another opens, is no leave and join.
//! Leaves fall due in the order they were lingered (the linger is the same for all), so the
//! owner's tick finds the due ones at the front of one queue, without a walk over everyone.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::HashMap;

use crate::pubsub::workers::WorkerSet;

/// One user on one topic.
#[derive(Debug, Default)]
struct Here {
    /// The workers with subscriptions of theirs.
    workers: WorkerSet,
    /// Since when none has (the linger runs): they are still present until it has run.
    lingering_since: Option<Instant>,
}

/// What a change of presence makes known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Join,
    Leave,
}

pub struct Presences {
    /// Per topic, per user.
    topics: HashMap<Arc<str>, HashMap<Arc<str>, Here>>,
    /// Users lingering, oldest first: (since, topic, user). An entry whose user came back (or
    /// lingers from a later time) is passed over when it falls due.
    lingering: VecDeque<(Instant, Arc<str>, Arc<str>)>,
    linger: Duration,
}

impl Presences {
    pub fn new(linger: Duration) -> Presences {
        Presences { topics: HashMap::default(), lingering: VecDeque::new(), linger }
    }

    /// `worker` has `user` on `topic` now (`here`), or no longer; `Some(Join)` when the user
    /// joins the topic with it. A leave comes later, from `due`.
    pub fn change(
        &mut self,
        topic: &Arc<str>,
        user: &Arc<str>,
        worker: usize,
        here: bool,
        now: Instant,
    ) -> Option<Change> {
        if here {
            let users = self.topics.entry(topic.clone()).or_default();
            let h = users.entry(user.clone()).or_default();
            let joins = h.workers.is_empty() && h.lingering_since.is_none();
            h.workers.insert(worker);
            h.lingering_since = None;
            return joins.then_some(Change::Join);
        }
        let h = self.topics.get_mut(topic)?.get_mut(user)?;
        h.workers.remove(worker);
        if h.workers.is_empty() && h.lingering_since.is_none() {
            h.lingering_since = Some(now);
            self.lingering.push_back((now, topic.clone(), user.clone()));
        }
        None
    }

    /// The users whose linger has run by `now`: they leave (and are forgotten), in order.
    pub fn due(&mut self, now: Instant) -> Vec<(Arc<str>, Arc<str>)> {
        let mut left = Vec::new();
        while let Some((since, _, _)) = self.lingering.front() {
            if now.saturating_duration_since(*since) < self.linger {
                break;
            }
            let Some((since, topic, user)) = self.lingering.pop_front() else { break };
            let Some(users) = self.topics.get_mut(&topic) else { continue };
            // Still the same linger: it came back since otherwise (and may linger again later).
            if users.get(&user).is_some_and(|h| h.lingering_since == Some(since)) {
                users.remove(&user);
                if users.is_empty() {
                    self.topics.remove(&topic);
                    crate::pubsub::topic::shrink_if_sparse(&mut self.topics);
                } else {
                    crate::pubsub::topic::shrink_if_sparse(users);
                }
                left.push((topic, user));
            }
        }
        if self.lingering.is_empty() && self.lingering.capacity() > 1024 {
            self.lingering = VecDeque::new();
        }
        left
    }

    /// The users present on `topic` (lingering ones too: they have not left), in no order.
    pub fn users(&self, topic: &str) -> Vec<Arc<str>> {
        self.topics.get(topic).map(|u| u.keys().cloned().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_joins_once_and_leaves_a_linger_after_the_last_subscription() {
        let linger = Duration::from_secs(5);
        let mut p = Presences::new(linger);
        let (t, ann, bob): (Arc<str>, Arc<str>, Arc<str>) = ("room:1".into(), "ann".into(), "bob".into());
        let t0 = Instant::now();
        assert_eq!(p.change(&t, &ann, 0, true, t0), Some(Change::Join));
        assert_eq!(p.change(&t, &ann, 1, true, t0), None, "another worker: no second join");
        assert_eq!(p.change(&t, &bob, 1, true, t0), Some(Change::Join));
        assert_eq!(p.change(&t, &ann, 0, false, t0), None);
        assert_eq!(p.change(&t, &ann, 1, false, t0), None, "leaves come from `due`");
        let mut users = p.users("room:1");
        users.sort();
        assert_eq!(users, [ann.clone(), bob.clone()], "ann lingers: still present");
        assert!(p.due(t0 + linger / 2).is_empty());
        // A reconnect within the linger: no leave, no join.
        assert_eq!(p.change(&t, &ann, 0, true, t0 + linger / 2), None);
        assert!(p.due(t0 + linger * 2).is_empty(), "came back: the old linger is passed over");
        assert_eq!(p.change(&t, &ann, 0, false, t0 + linger * 2), None);
        assert_eq!(p.due(t0 + linger * 3), [(t.clone(), ann.clone())]);
        assert_eq!(p.users("room:1"), std::slice::from_ref(&bob));
        assert_eq!(p.change(&t, &ann, 0, true, t0 + linger * 3), Some(Change::Join), "back after leaving: joins");
        assert_eq!(p.change(&t, &bob, 7, false, t0), None, "a worker that never had bob");
        assert_eq!(p.change(&"other".into(), &bob, 1, false, t0), None, "an unknown topic");
    }
}

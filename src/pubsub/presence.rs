//! Presence (API.md §9) on the topics under `presence_prefixes` whose `$presence:` topics an
//! owner owns: which users (JWT `sub`s) have subscriptions, on which workers, and when each
//! joins and leaves.
//!
//! Workers say when a user's first subscription to a topic arrives on them and when their last
//! one goes (`ToOwner::Present`, from `shard::presence`). A user joins when the first worker
//! has them, and leaves `presence_linger` after the last worker let them go, unless they came
//! back meanwhile: a reconnect, or a tab closed while another opens, is no leave and join.
//! Leaves fall due in the order they were lingered (the linger is the same for all), so the
//! owner's tick finds the due ones first in one ordered map, without a walk over everyone; a
//! user has one place there at most, however often they come and go.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::HashMap;

use crate::pubsub::workers::WorkerSet;

/// One user on one topic.
#[derive(Debug, Default)]
struct Here {
    /// The workers with subscriptions of theirs.
    workers: WorkerSet,
    /// While none has: since when, and the key of their place among the lingering (they are
    /// still present until the linger has run).
    lingering: Option<Lingering>,
}

/// A place among the lingering: since when, and a number that keeps places apart.
type Lingering = (Instant, u64);

/// What a change of presence makes known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Join,
    Leave,
}

pub struct Presences {
    /// Per topic, per user.
    topics: HashMap<Arc<str>, HashMap<Arc<str>, Here>>,
    /// The users lingering, by since when: one place each, taken back when they come back, so
    /// a client coming and going leaves nothing behind.
    lingering: BTreeMap<Lingering, (Arc<str>, Arc<str>)>,
    next: u64,
    linger: Duration,
}

impl Presences {
    pub fn new(linger: Duration) -> Presences {
        Presences { topics: HashMap::default(), lingering: BTreeMap::new(), next: 0, linger }
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
            let joins = h.workers.is_empty() && h.lingering.is_none();
            h.workers.insert(worker);
            if let Some(place) = h.lingering.take() {
                self.lingering.remove(&place);
            }
            return joins.then_some(Change::Join);
        }
        let h = self.topics.get_mut(topic)?.get_mut(user)?;
        h.workers.remove(worker);
        if h.workers.is_empty() && h.lingering.is_none() {
            let place = (now, self.next);
            self.next += 1;
            h.lingering = Some(place);
            self.lingering.insert(place, (topic.clone(), user.clone()));
        }
        None
    }

    /// The users whose linger has run by `now`: they leave (and are forgotten), in order.
    pub fn due(&mut self, now: Instant) -> Vec<(Arc<str>, Arc<str>)> {
        let mut left = Vec::new();
        while let Some(entry) = self.lingering.first_entry() {
            if now.saturating_duration_since(entry.key().0) < self.linger {
                break;
            }
            let (topic, user) = entry.remove();
            let Some(users) = self.topics.get_mut(&topic) else { continue };
            users.remove(&user);
            if users.is_empty() {
                self.topics.remove(&topic);
                crate::pubsub::topic::shrink_if_sparse(&mut self.topics);
            } else {
                crate::pubsub::topic::shrink_if_sparse(users);
            }
            left.push((topic, user));
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
        for i in 0..1000 {
            let at = t0 + linger * 3 + Duration::from_millis(i);
            p.change(&t, &ann, 0, false, at);
            p.change(&t, &ann, 0, true, at);
        }
        assert!(p.lingering.is_empty(), "coming and going leaves nothing behind");
        assert_eq!(p.change(&"other".into(), &bob, 1, false, t0), None, "an unknown topic");
    }
}

//! A worker's share of presence (API.md §9): how many of its subscriptions each user has on
//! each topic under `presence_prefixes`, and the changes its owners are still to be told.
//!
//! The owner of `$presence:{topic}` keeps `topic`'s presence. It hears of a user on a topic
//! only when the first of the user's subscriptions on this worker arrives and when the last one
//! goes (`ToOwner::Present`); it keeps which workers have the user and decides join and leave
//! (`pubsub::presence`). Changes are queued in order and
//! sent as inboxes have room (the ticker retries), like unsubscribes, so that a subscription
//! ending never waits. Nothing here is kept for topics outside `presence_prefixes`.

use std::collections::VecDeque;
use std::sync::Arc;

use foldhash::HashMap;

use crate::mesh::Mesh;
use crate::pubsub::msg::ToOwner;
use crate::pubsub::topic::presence_owner;
use crate::pubsub::workers::WorkerSet;

#[derive(Default)]
pub struct Present {
    /// Per (topic, user), the subscriptions here.
    here: HashMap<(Arc<str>, Arc<str>), u32>,
    /// Changes owed to owners, oldest first: (topic, user, whether now here).
    owed: VecDeque<(Arc<str>, Arc<str>, bool)>,
}

impl Present {
    /// A subscription of `user` to `topic` arrived here.
    pub fn arrive(&mut self, topic: &Arc<str>, user: &Arc<str>) {
        let n = self.here.entry((topic.clone(), user.clone())).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.owed.push_back((topic.clone(), user.clone(), true));
        }
    }

    /// A subscription of `user` to `topic` went.
    pub fn depart(&mut self, topic: &Arc<str>, user: &Arc<str>) {
        let key = (topic.clone(), user.clone());
        let Some(n) = self.here.get_mut(&key) else { return };
        *n -= 1;
        if *n == 0 {
            self.here.remove(&key);
            crate::pubsub::topic::shrink_if_sparse(&mut self.here);
            self.owed.push_back((key.0, key.1, false));
        }
    }

    /// Sends what fits in the owners' inboxes, in order, for worker `worker`; the rest waits
    /// (its order kept: a change waits behind an earlier one to a full inbox).
    pub fn send(&mut self, mesh: &Mesh, worker: usize) {
        let mut woken = WorkerSet::default();
        while let Some((topic, user, here)) = self.owed.pop_front() {
            let owner = presence_owner(&topic, mesh.workers);
            let msg = ToOwner::Present { topic, user, worker: worker as u16, here };
            if let Err(ToOwner::Present { topic, user, here, .. }) = mesh.to_owner[owner].try_send(msg) {
                self.owed.push_front((topic, user, here));
                break;
            }
            woken.insert(owner);
        }
        if self.owed.is_empty() && self.owed.capacity() > 1024 {
            self.owed = VecDeque::new();
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
    fn owners_hear_of_the_first_subscription_and_the_last_only() {
        let mut p = Present::default();
        let (t, u, v): (Arc<str>, Arc<str>, Arc<str>) = ("room:1".into(), "ann".into(), "bob".into());
        p.arrive(&t, &u);
        p.arrive(&t, &u);
        p.arrive(&t, &v);
        p.depart(&t, &u);
        assert_eq!(p.owed.len(), 2, "ann's second tab and its leaving tell nobody");
        p.depart(&t, &u);
        p.depart(&t, &u);
        let told: Vec<(&str, bool)> = p.owed.iter().map(|(_, u, h)| (&**u, *h)).collect();
        assert_eq!(told, [("ann", true), ("bob", true), ("ann", false)], "a departure too many is ignored");
        let mesh = Mesh::new(2);
        p.send(&mesh, 1);
        assert!(p.owed.is_empty());
        let owner = presence_owner("room:1", 2);
        assert_eq!(mesh.to_owner[owner].len(), 3);
        assert!(p.here.len() == 1, "bob is still here");
    }
}

//! A worker's share of presence (API.md §9): how many of its subscriptions each user has on
//! each topic under `presence_prefixes`, and the changes its owners are still to be told.
//!
//! The owner of `$presence:{topic}` keeps `topic`'s presence. It hears of a user on a topic
//! only when the first of the user's subscriptions on this worker arrives and when the last one
//! goes (`ToOwner::Present`); it keeps which workers have the user and decides join and leave
//! (`pubsub::presence`). Changes are sent when a subscription joins or leaves, as inboxes have
//! room (the ticker retries), so that neither ever waits; each key is queued once and only its
//! state at sending goes out. Nothing here is kept for topics outside `presence_prefixes`.

use std::collections::VecDeque;
use std::sync::Arc;

use foldhash::HashMap;

use crate::mesh::Mesh;
use crate::pubsub::msg::ToOwner;
use crate::pubsub::topic::presence_owner;
use crate::pubsub::workers::WorkerSet;

#[derive(Default)]
pub struct Present {
    /// Per (topic, user): what is here and what the owner was told.
    here: HashMap<(Arc<str>, Arc<str>), Local>,
    /// Keys whose owner may have to be told something, oldest first; each at most once.
    dirty: VecDeque<(Arc<str>, Arc<str>)>,
}

/// One user on one topic, on this worker.
#[derive(Default)]
struct Local {
    /// Their subscriptions here.
    subs: u32,
    /// Whether the owner was last told they are here.
    told: bool,
    /// Whether the key is in `dirty`.
    queued: bool,
}

impl Present {
    /// A subscription of `user` to `topic` arrived here.
    pub fn arrive(&mut self, topic: &Arc<str>, user: &Arc<str>) {
        let key = (topic.clone(), user.clone());
        let local = self.here.entry(key.clone()).or_default();
        local.subs += 1;
        Self::mark(&mut self.dirty, local, key);
    }

    /// A subscription of `user` to `topic` went.
    pub fn depart(&mut self, topic: &Arc<str>, user: &Arc<str>) {
        let key = (topic.clone(), user.clone());
        let Some(local) = self.here.get_mut(&key).filter(|l| l.subs > 0) else { return };
        local.subs -= 1;
        Self::mark(&mut self.dirty, local, key);
    }

    /// Queues `key` if what is here now differs from what its owner was told.
    fn mark(dirty: &mut VecDeque<(Arc<str>, Arc<str>)>, local: &mut Local, key: (Arc<str>, Arc<str>)) {
        if !local.queued && (local.subs > 0) != local.told {
            local.queued = true;
            dirty.push_back(key);
        }
    }

    /// Tells the owners what changed, as their inboxes have room, for worker `worker`; the
    /// rest waits. Only the state now is sent: a user who came and went meanwhile costs
    /// nothing, so one client subscribing and unsubscribing in a loop cannot pile changes up
    /// in front of everyone else's.
    pub fn send(&mut self, mesh: &Mesh, worker: usize) {
        let mut woken = WorkerSet::default();
        while let Some(key) = self.dirty.front() {
            let Some(local) = self.here.get_mut(key) else {
                self.dirty.pop_front();
                continue;
            };
            let now_here = local.subs > 0;
            if now_here != local.told {
                let owner = presence_owner(&key.0, mesh.workers);
                let msg = ToOwner::Present {
                    topic: key.0.clone(),
                    user: key.1.clone(),
                    worker: worker as u16,
                    here: now_here,
                };
                if mesh.to_owner[owner].try_send(msg).is_err() {
                    break;
                }
                local.told = now_here;
                woken.insert(owner);
            }
            local.queued = false;
            if local.subs == 0 {
                self.here.remove(key);
                crate::pubsub::topic::shrink_if_sparse(&mut self.here);
            }
            self.dirty.pop_front();
        }
        if self.dirty.is_empty() && self.dirty.capacity() > 1024 {
            self.dirty = VecDeque::new();
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
    fn owners_hear_of_the_state_now_once_per_change_that_lasted() {
        let mut p = Present::default();
        let (t, u, v): (Arc<str>, Arc<str>, Arc<str>) = ("room:1".into(), "ann".into(), "bob".into());
        let mesh = Mesh::new(2);
        let owner = presence_owner("room:1", 2);
        let told = |mesh: &Mesh| {
            let mut seen = Vec::new();
            while let Some(ToOwner::Present { user, here, .. }) = mesh.to_owner[owner].pop() {
                seen.push((user.to_string(), here));
            }
            seen
        };
        p.arrive(&t, &u);
        p.arrive(&t, &u);
        p.arrive(&t, &v);
        p.depart(&t, &u);
        p.send(&mesh, 1);
        assert_eq!(
            told(&mesh),
            [("ann".to_string(), true), ("bob".to_string(), true)],
            "ann's second tab tells nobody"
        );
        // A thousand comings and goings between two sends: nothing to tell.
        for _ in 0..1000 {
            p.depart(&t, &v);
            p.arrive(&t, &v);
        }
        assert!(p.dirty.len() <= 1);
        p.send(&mesh, 1);
        assert!(told(&mesh).is_empty());
        p.depart(&t, &u);
        p.depart(&t, &u);
        p.send(&mesh, 1);
        assert_eq!(told(&mesh), [("ann".to_string(), false)], "a departure too many is ignored");
        assert_eq!(p.here.len(), 1, "bob is still here; ann is forgotten");
    }
}

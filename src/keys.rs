//! Slab keys that outlive the message or registration carrying them: a slot's index plus the
//! generation the slot had when the key was made, so that a key held by a message in flight
//! (an owner's reply, an epoll registration, a topic's index entry) can never reach a later
//! occupant of the slot. One type per kind of slot: a reply meant for a publish cannot be
//! read as a connection's.

use std::marker::PhantomData;

/// A key to a slot of kind `K`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key<K> {
    pub index: u32,
    pub generation: u32,
    kind: PhantomData<K>,
}

/// Kinds of slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnSlot {}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublishSlot {}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionSlot {}

/// A connection in its worker's slab.
pub type ConnKey = Key<ConnSlot>;
/// A publish (or batch) waiting for its owners' cursors.
pub type PublishKey = Key<PublishSlot>;
/// A subscription: the slot of its connection, with the generation the subscription itself
/// was given. A connection's next subscription (its next long-poll) has another, so an
/// owner's late answer for the one before never lands in it.
pub type SubscriptionKey = Key<SubscriptionSlot>;

impl<K> Key<K> {
    pub fn new(index: usize, generation: u32) -> Key<K> {
        // Slabs are indexed by u32: a worker holds far fewer slots (`max_connections`).
        Key { index: index as u32, generation, kind: PhantomData }
    }

    /// The key as one number (an epoll registration's data, an index's map key).
    pub fn to_token(self) -> u64 {
        u64::from(self.index) << 32 | u64::from(self.generation)
    }

    pub fn from_token(t: u64) -> Key<K> {
        Key { index: (t >> 32) as u32, generation: t as u32, kind: PhantomData }
    }

    pub fn slot(self) -> usize {
        self.index as usize
    }
}

/// Hands out generations: each slot a worker fills gets the next one.
#[derive(Debug, Default)]
pub struct Generations(u32);

impl Generations {
    pub fn take(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(1);
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_survives_its_token() {
        let k = ConnKey::new(123_456, u32::MAX - 1);
        assert_eq!(ConnKey::from_token(k.to_token()), k);
        assert_ne!(ConnKey::new(1, 1), ConnKey::new(1, 2), "another occupant of the slot");
    }
}

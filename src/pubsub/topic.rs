//! Topic and event-type names, and which worker owns a topic.

/// Most topics in one subscription (API.md §3).
pub const MAX_TOPICS_PER_SUBSCRIPTION: usize = 64;

/// `[A-Za-z0-9_.:@-]{1,128}`
pub fn valid_topic(t: &str) -> bool {
    (1..=128).contains(&t.len())
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-'))
}

/// What a subscriber names to follow a topic's subscriber count (API.md §9): `$occupancy:`
/// and the topic. `$` is in no topic's name, so no publisher can write to one.
pub const OCCUPANCY: &str = "$occupancy:";

/// What a subscriber names to follow who joins and leaves a topic (API.md §9): `$presence:`
/// and the topic, for topics under `presence_prefixes`.
pub const PRESENCE: &str = "$presence:";

/// The topic `name` watches the occupancy of, if it is an `$occupancy:` name.
pub fn occupancy_of(name: &str) -> Option<&str> {
    name.strip_prefix(OCCUPANCY)
}

/// The topic `name` follows the presence of, if it is a `$presence:` name.
pub fn presence_of(name: &str) -> Option<&str> {
    name.strip_prefix(PRESENCE)
}

/// Whose rights a subscription to `name` takes: the topic an `$occupancy:` or `$presence:`
/// name is about (and its privacy: `$occupancy:user:42` is as private as `user:42`), else its
/// own.
pub fn rights_name(name: &str) -> &str {
    occupancy_of(name).or_else(|| presence_of(name)).unwrap_or(name)
}

/// A name a subscriber may use: a topic, or `$occupancy:` or `$presence:` and a topic.
pub fn valid_subscription(name: &str) -> bool {
    valid_topic(rights_name(name))
}

/// `[A-Za-z0-9_.:-]{1,64}`
pub fn valid_type(t: &str) -> bool {
    (1..=64).contains(&t.len())
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Gives back the room of a map of topics that held far more than it does now (clients that
/// named many topics and left): a map keeps its capacity otherwise, and its memory with it.
pub fn shrink_if_sparse<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher>(
    map: &mut std::collections::HashMap<K, V, S>,
) {
    if map.capacity() > 4096 && map.capacity() > map.len() * 4 {
        map.shrink_to(map.len() * 2);
    }
}

/// The worker that owns `topic`: assigns its cursors, keeps its history, forwards its events.
/// FNV-1a: stable across runs and threads, so every worker computes the same owner.
pub fn owner_of(topic: &str, workers: usize) -> usize {
    owner_of_parts(&[topic], workers)
}

/// The owner of `$presence:{topic}`, who also keeps `topic`'s presence (so that joins and
/// leaves are published where they are decided).
pub fn presence_owner(topic: &str, workers: usize) -> usize {
    owner_of_parts(&[PRESENCE, topic], workers)
}

/// The owner of the name that is `parts` joined.
fn owner_of_parts(parts: &[&str], workers: usize) -> usize {
    if workers == 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % workers as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_topic("user:42"));
        assert!(valid_topic("a.b-c_d@e:f"));
        assert!(valid_topic(&"x".repeat(128)));
        assert!(!valid_topic(&"x".repeat(129)));
        assert!(!valid_topic(""));
        assert!(!valid_topic("a b"));
        assert!(!valid_topic("a/b"));
        assert!(!valid_topic("a,b"));
        assert!(!valid_topic("é"));
        assert!(valid_type("herald.gap"));
        assert!(!valid_type("a@b"));
        assert!(!valid_type(&"t".repeat(65)));
    }

    #[test]
    fn occupancy_names() {
        assert!(valid_subscription("$occupancy:user:42") && valid_subscription("news"));
        assert!(valid_subscription(&format!("$occupancy:{}", "x".repeat(128))));
        assert!(valid_subscription("$presence:room:1") && !valid_subscription("$presence:"));
        assert_eq!(rights_name("$presence:user:42"), "user:42");
        for bad in
            ["$occupancy:", "$occupancy:a b", "$occupancy:$occupancy:a", "$presence:$occupancy:a", "$a", "occupancy:$"]
        {
            assert!(!valid_subscription(bad), "{bad}");
        }
        assert!(!valid_topic("$occupancy:a"), "nobody publishes to one");
        assert_eq!(rights_name("$occupancy:user:42"), "user:42");
        assert_eq!(occupancy_of("user:42"), None);
    }

    #[test]
    fn owners_spread_and_are_stable() {
        let mut seen = [0usize; 4];
        for i in 0..1000 {
            let o = owner_of(&format!("topic-{i}"), 4);
            assert_eq!(o, owner_of(&format!("topic-{i}"), 4));
            seen[o] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "{seen:?}");
        for i in 0..100 {
            let t = format!("room:{i}");
            assert_eq!(presence_owner(&t, 4), owner_of(&format!("{PRESENCE}{t}"), 4));
        }
    }
}

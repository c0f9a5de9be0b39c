//! The connections of one worker that subscribe to one topic (`LocalTopic::subs`), each with
//! the index of the topic in its subscription.
//!
//! Most topics at scale have one subscriber here (one topic per user, member or device), so
//! one is held inline: a topic with a single subscriber costs no allocation beyond its entry
//! in the worker's topic index. Two or more go to an insertion-ordered map (removal swaps the
//! last into the gap), boxed so the inline case stays 16 bytes.

use indexmap::IndexMap;

#[derive(Debug, Default)]
pub enum Subscribers {
    #[default]
    None,
    One(u64, u32),
    Many(Box<IndexMap<u64, u32>>),
}

impl Subscribers {
    /// `Many` always holds two or more: `remove` goes back to `One` below that.
    pub fn is_empty(&self) -> bool {
        matches!(self, Subscribers::None)
    }

    /// Adds (or re-indexes) the connection `token`, whose subscription has the topic at `idx`.
    pub fn insert(&mut self, token: u64, idx: usize) {
        let idx = index(idx);
        match self {
            Subscribers::None => *self = Subscribers::One(token, idx),
            Subscribers::One(t, i) if *t == token => *i = idx,
            Subscribers::One(t, i) => {
                let mut m = IndexMap::with_capacity(2);
                m.insert(*t, *i);
                m.insert(token, idx);
                *self = Subscribers::Many(Box::new(m));
            }
            Subscribers::Many(m) => {
                m.insert(token, idx);
            }
        }
    }

    /// Removes `token`; whether it was here.
    pub fn remove(&mut self, token: u64) -> bool {
        match self {
            Subscribers::None => false,
            Subscribers::One(t, _) if *t == token => {
                *self = Subscribers::None;
                true
            }
            Subscribers::One(..) => false,
            Subscribers::Many(m) => {
                let found = m.swap_remove(&token).is_some();
                // Back to inline when one is left: a topic that once had a crowd and now has
                // one subscriber should not keep the crowd's map.
                if m.len() <= 1 {
                    *self = match m.first() {
                        Some((&t, &i)) => Subscribers::One(t, i),
                        None => Subscribers::None,
                    };
                }
                found
            }
        }
    }

    /// Points `token`'s entry at a new index of the topic in its subscription.
    pub fn reindex(&mut self, token: u64, idx: usize) {
        let idx = index(idx);
        match self {
            Subscribers::One(t, i) if *t == token => *i = idx,
            Subscribers::Many(m) => {
                if let Some(i) = m.get_mut(&token) {
                    *i = idx;
                }
            }
            _ => {}
        }
    }

    /// Every subscriber: its connection token and the topic's index in its subscription.
    pub fn iter(&self) -> Iter<'_> {
        match self {
            Subscribers::None => Iter::One(None),
            Subscribers::One(t, i) => Iter::One(Some((*t, *i as usize))),
            Subscribers::Many(m) => Iter::Many(m.iter()),
        }
    }
}

/// What `Subscribers::iter` gives; an enum rather than a chain of the two cases, as it runs
/// for every delivery of a broadcast.
pub enum Iter<'a> {
    One(Option<(u64, usize)>),
    Many(indexmap::map::Iter<'a, u64, u32>),
}

impl Iterator for Iter<'_> {
    type Item = (u64, usize);

    fn next(&mut self) -> Option<(u64, usize)> {
        match self {
            Iter::One(one) => one.take(),
            Iter::Many(m) => m.next().map(|(&t, &i)| (t, i as usize)),
        }
    }
}

/// A subscription holds at most `max_topics_per_subscription` topics (far below `u32::MAX`).
fn index(idx: usize) -> u32 {
    u32::try_from(idx).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(s: &Subscribers) -> Vec<(u64, usize)> {
        s.iter().collect()
    }

    #[test]
    fn one_is_inline_and_more_go_to_a_map_and_back() {
        assert_eq!(size_of::<Subscribers>(), 16);
        let mut s = Subscribers::default();
        assert!(s.is_empty());
        s.insert(7, 0);
        assert!(matches!(s, Subscribers::One(7, 0)));
        s.insert(7, 2);
        assert_eq!(all(&s), [(7, 2)], "the same connection again is re-indexed, not added");
        s.insert(8, 1);
        s.insert(9, 0);
        assert_eq!(all(&s), [(7, 2), (8, 1), (9, 0)]);
        s.reindex(8, 4);
        assert!(s.remove(7));
        assert!(!s.remove(7));
        assert_eq!(all(&s), [(9, 0), (8, 4)], "the last takes the gap");
        assert!(s.remove(9));
        assert!(matches!(s, Subscribers::One(8, 4)), "back to inline");
        assert!(!s.remove(1));
        assert!(s.remove(8));
        assert!(s.is_empty());
        assert!(all(&s).is_empty());
    }
}

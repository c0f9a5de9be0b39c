//! Cursors: the opaque event ids clients echo back to resume.
//!
//! A cursor is a per-topic `(epoch, sequence)` pair, written `{epoch:x}-{seq}`. The epoch
//! names one life of one topic on one run of the server (see `pubsub::owner::Epochs`): a
//! cursor from an earlier run, from before the topic was forgotten, or of another topic is
//! never read as a position — it is reported as a gap. A multi-topic stream's id is the
//! comma-separated list of its topics' cursors, in the order the topics were subscribed.
//!
//! [`Resume`] is where a subscription to one topic starts, read from what the client sent.

use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Cursor {
    pub epoch: u64,
    /// 0 means "before the first event".
    pub seq: u64,
}

impl Cursor {
    pub fn new(epoch: u64, seq: u64) -> Cursor {
        Cursor { epoch, seq }
    }

    /// Parses `{epoch:x}-{seq}`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Cursor> {
        let (e, q) = s.split_once('-')?;
        if e.is_empty() || e.len() > 16 || q.is_empty() || q.len() > 20 {
            return None;
        }
        if !e.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) || !q.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Only the form herald writes (`Display`): a cursor is echoed back, never made up, and
        // a gap's `missed_from` must be what was sent (API.md §7).
        if (e.len() > 1 && e.starts_with('0')) || (q.len() > 1 && q.starts_with('0')) {
            return None;
        }
        Some(Cursor { epoch: u64::from_str_radix(e, 16).ok()?, seq: q.parse().ok()? })
    }

    /// Parses a stream id for `n` topics: one cursor per topic, comma-separated.
    pub fn parse_list(s: &str, n: usize) -> Option<Vec<Cursor>> {
        let v: Vec<Cursor> = s.split(',').map(|c| Cursor::parse(c.trim())).collect::<Option<_>>()?;
        (v.len() == n).then_some(v)
    }

    /// Writes the id of a multi-topic stream.
    pub fn join(cursors: &[Cursor]) -> String {
        let mut s = String::with_capacity(cursors.len() * 20);
        for (i, c) in cursors.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            use fmt::Write;
            let _ = write!(s, "{c}");
        }
        s
    }
}

/// Where a subscription to one topic starts, from the resume id the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// No id: from now on.
    Live,
    /// After this cursor (which may still turn out to be another topic's, or stale).
    After(Cursor),
    /// One of a multi-topic id's cursors, one per topic in order: `at` is this topic's by
    /// place, but the client may have sent the list in another order (a URL built from a
    /// set): a cursor of `all` issued for this topic is its position wherever it stands.
    Listed { at: Cursor, all: Arc<[Cursor]> },
    /// The id sent cannot be read one cursor per topic (malformed, or the wrong number of
    /// cursors: a list kept from another subscription). A cursor among `cursors` that was
    /// issued for this topic is its position; failing that, the topic starts with a gap
    /// whose `missed_from` is `sent`.
    Unknown { cursors: Arc<[Cursor]>, sent: Arc<str> },
}

/// Most cursors looked at in an id that cannot be read positionally.
const MAX_SEARCHED: usize = 256;
/// Most bytes of an unreadable id echoed back as a gap's `missed_from`.
const MAX_ECHOED: usize = 256;

impl Resume {
    /// Reads a stream's resume id for `n` topics: one cursor per topic, in order. An id that
    /// cannot be read that way is `Unknown` for every topic (see [`Resume::Unknown`]);
    /// `None` or an empty id is `Live`.
    pub fn parse_list(raw: Option<&str>, n: usize) -> Vec<Resume> {
        let Some(raw) = raw.filter(|r| !r.is_empty()) else { return vec![Resume::Live; n] };
        if let Some(cursors) = Cursor::parse_list(raw, n) {
            if n == 1 {
                return cursors.into_iter().map(Resume::After).collect();
            }
            let all: Arc<[Cursor]> = cursors.iter().copied().collect();
            return cursors.into_iter().map(|at| Resume::Listed { at, all: all.clone() }).collect();
        }
        let cursors: Arc<[Cursor]> =
            raw.split(',').take(MAX_SEARCHED).filter_map(|c| Cursor::parse(c.trim())).collect();
        let mut end = raw.len().min(MAX_ECHOED);
        while !raw.is_char_boundary(end) {
            end -= 1;
        }
        let sent: Arc<str> = raw[..end].into();
        vec![Resume::Unknown { cursors, sent }; n]
    }

    /// Whether this resume starts exactly at `head`, a cursor of the topic: nothing to
    /// replay, nothing missed.
    pub fn is_at(&self, head: Cursor) -> bool {
        match self {
            Resume::Live => false,
            Resume::After(c) => *c == head,
            Resume::Listed { all, .. } => all.contains(&head),
            Resume::Unknown { cursors, .. } => cursors.contains(&head),
        }
    }
}

/// A cursor written out on the stack (`{epoch:x}-{seq}` is at most 37 bytes): the id every
/// event and every publish answer carries, without a `String` each.
pub struct CursorText {
    buf: [u8; 37],
    len: usize,
}

impl std::ops::Deref for CursorText {
    type Target = str;
    fn deref(&self) -> &str {
        // Hex digits, a dash and decimal digits only.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl Cursor {
    pub fn text(&self) -> CursorText {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 37];
        let digits = if self.epoch == 0 { 1 } else { (u64::BITS - self.epoch.leading_zeros()).div_ceil(4) as usize };
        for i in 0..digits {
            buf[digits - 1 - i] = HEX[((self.epoch >> (4 * i)) & 0xf) as usize];
        }
        buf[digits] = b'-';
        let mut seq = itoa::Buffer::new();
        let seq = seq.format(self.seq).as_bytes();
        buf[digits + 1..digits + 1 + seq.len()].copy_from_slice(seq);
        CursorText { buf, len: digits + 1 + seq.len() }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}-{}", self.epoch, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for c in [Cursor::new(0, 0), Cursor::new(0xdead_beef_0000_0001, 42), Cursor::new(u64::MAX, u64::MAX)] {
            assert_eq!(Cursor::parse(&c.to_string()), Some(c));
            assert_eq!(&*c.text(), c.to_string());
        }
        assert_eq!(&*Cursor::new(0x1f, 7).text(), "1f-7");
        let list = [Cursor::new(1, 2), Cursor::new(3, 4)];
        assert_eq!(Cursor::parse_list(&Cursor::join(&list), 2).unwrap(), list);
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "-",
            "1-",
            "-1",
            "x-1",
            "1-x",
            "1-1-1",
            "1 -1",
            "11111111111111111-1",
            "1-+1",
            "1-99999999999999999999999",
            // Not as herald writes them: a gap would echo another text than was sent.
            "00000000000000ab-5",
            "ab-0005",
            "AB-5",
        ] {
            assert_eq!(Cursor::parse(s), None, "{s:?}");
        }
        assert_eq!(Cursor::parse_list("1-1,2-2", 1), None);
        assert_eq!(Cursor::parse_list("1-1", 2), None);
    }

    #[test]
    fn resume_ids_that_cannot_be_read_positionally_are_searched() {
        assert_eq!(Resume::parse_list(None, 2), [Resume::Live, Resume::Live]);
        assert_eq!(Resume::parse_list(Some(""), 1), [Resume::Live]);
        let all: Arc<[Cursor]> = [Cursor::new(0xa, 1), Cursor::new(0xb, 2)].into();
        assert_eq!(
            Resume::parse_list(Some("a-1,b-2"), 2),
            [
                Resume::Listed { at: Cursor::new(0xa, 1), all: all.clone() },
                Resume::Listed { at: Cursor::new(0xb, 2), all }
            ]
        );
        assert_eq!(Resume::parse_list(Some("a-1"), 1), [Resume::After(Cursor::new(0xa, 1))]);
        let wrong_count = Resume::parse_list(Some("a-1,b-2,c-3"), 2);
        assert_eq!(wrong_count.len(), 2);
        let Resume::Unknown { cursors, sent } = &wrong_count[1] else { panic!("{wrong_count:?}") };
        assert_eq!(&cursors[..], [Cursor::new(0xa, 1), Cursor::new(0xb, 2), Cursor::new(0xc, 3)]);
        assert_eq!(&**sent, "a-1,b-2,c-3");
        let garbage = Resume::parse_list(Some("not-a-cursor,a-1"), 2);
        let Resume::Unknown { cursors, .. } = &garbage[0] else { panic!("{garbage:?}") };
        assert_eq!(&cursors[..], [Cursor::new(0xa, 1)]);
        assert!(garbage[0].is_at(Cursor::new(0xa, 1)) && !garbage[0].is_at(Cursor::new(0xa, 2)));
        let long = "é".repeat(200);
        let Resume::Unknown { sent, .. } = &Resume::parse_list(Some(&long), 1)[0] else { panic!() };
        assert!(sent.len() <= MAX_ECHOED && !sent.is_empty());
    }
}

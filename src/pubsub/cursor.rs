//! Cursors: the opaque event ids clients echo back to resume.
//!
//! A cursor is a per-topic `(epoch, sequence)` pair, written `{epoch:x}-{seq}`. The epoch
//! names one life of a topic on one run of the server (a fresh random value per run, plus a
//! counter per topic instance), so a cursor from an earlier run, or from before the topic was
//! forgotten, is recognised as stale and reported as a gap. A multi-topic stream's id is the
//! comma-separated list of its topics' cursors, in the order the topics were subscribed.

use std::fmt;

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
        if !e.bytes().all(|b| b.is_ascii_hexdigit()) || !q.bytes().all(|b| b.is_ascii_digit()) {
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
        ] {
            assert_eq!(Cursor::parse(s), None, "{s:?}");
        }
        assert_eq!(Cursor::parse_list("1-1,2-2", 1), None);
        assert_eq!(Cursor::parse_list("1-1", 2), None);
    }
}

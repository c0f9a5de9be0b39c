//! Payload stamps: every published payload carries the run id, its sequence number within its
//! topic and its send time, padded to the requested size, so a subscriber can count loss,
//! duplicates and reordering and measure publish→receive latency on its own.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// `{run}:{seq}:{sent_us}:` then `x` padding up to `size` bytes.
pub fn stamp(run: u32, seq: u64, size: usize) -> String {
    let mut s = format!("{run}:{seq}:{}:", now_micros());
    while s.len() < size {
        s.push('x');
    }
    s
}

/// (seq, sent_us) of a payload of run `run`; `None` for anything else.
pub fn parse(run: u32, payload: &str) -> Option<(u64, u64)> {
    let mut parts = payload.splitn(4, ':');
    let r: u32 = parts.next()?.parse().ok()?;
    if r != run {
        return None;
    }
    let seq = parts.next()?.parse().ok()?;
    let sent = parts.next()?.parse().ok()?;
    Some((seq, sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = stamp(7, 42, 128);
        assert_eq!(s.len(), 128);
        let (seq, sent) = parse(7, &s).unwrap();
        assert_eq!(seq, 42);
        assert!(sent > 0);
        assert_eq!(parse(8, &s), None);
        assert_eq!(parse(7, "junk"), None);
    }
}

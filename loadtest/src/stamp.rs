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

/// (seq, sent_us) of a payload of run `run`; `None` for anything else. Read from bytes with
/// no UTF-8 pass: it runs once per delivery.
pub fn parse(run: u32, payload: &[u8]) -> Option<(u64, u64)> {
    let mut parts = payload.splitn(4, |&b| b == b':');
    if number(parts.next()?)? != u64::from(run) {
        return None;
    }
    let seq = number(parts.next()?)?;
    let sent = number(parts.next()?)?;
    Some((seq, sent))
}

/// A decimal number of 1 to 19 digits.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = stamp(7, 42, 128);
        assert_eq!(s.len(), 128);
        let (seq, sent) = parse(7, s.as_bytes()).unwrap();
        assert_eq!(seq, 42);
        assert!(sent > 0);
        assert_eq!(parse(8, s.as_bytes()), None);
        assert_eq!(parse(7, b"junk"), None);
        assert_eq!(parse(7, b"7::1:"), None);
    }
}

//! RESP2, the Redis wire protocol (cluster mode, API.md §8): commands encoded as arrays of
//! bulk strings, and replies decoded incrementally from whatever a read brought.
//!
//! The decoder never trusts a length a peer sends: sizes are bounded (`MAX_BULK`,
//! `MAX_ELEMENTS`, `MAX_DEPTH`) and checked before anything is allocated for them, and a
//! reply that is not complete yet is "need more", not an error.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest bulk string accepted (Redis's own `proto-max-bulk-len` default).
pub const MAX_BULK: usize = 512 << 20;
/// Most elements in one array reply.
pub const MAX_ELEMENTS: usize = 1 << 24;
/// Deepest nesting of arrays (herald's replies nest three deep at most: XRANGE entries).
pub const MAX_DEPTH: usize = 8;
/// Longest simple-string, error or integer line.
const MAX_LINE: usize = 64 << 10;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(Bytes),
    /// `-ERR …`: the command failed; the connection is fine.
    Error(Bytes),
    Integer(i64),
    /// `$n`, or `$-1` (`None`).
    Bulk(Option<Bytes>),
    /// `*n`, or `*-1` (`None`).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The text of a status, error or bulk reply.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Status(b) | Reply::Error(b) | Reply::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }

    /// An integer reply, or a bulk or status one holding a decimal integer (Lua numbers
    /// come back as integers, hash fields as bulk strings).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Integer(n) => Some(*n),
            other => std::str::from_utf8(other.as_bytes()?).ok()?.parse().ok(),
        }
    }

    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(Some(items)) => Some(items),
            _ => None,
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}

/// The stream broke the protocol: the connection cannot be trusted any further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("unknown RESP type byte {0:#04x}")]
    Type(u8),
    #[error("malformed RESP length or integer")]
    Number,
    #[error("RESP {0} too large")]
    TooLarge(&'static str),
    #[error("RESP bulk string not followed by CRLF")]
    Terminator,
    #[error("RESP arrays nested too deep")]
    TooDeep,
}

/// Appends a command (an array of bulk strings) to `out`.
pub fn encode<A: AsRef<[u8]>>(out: &mut BytesMut, args: &[A]) {
    out.put_u8(b'*');
    put_decimal(out, args.len() as u64);
    for a in args {
        let a = a.as_ref();
        out.put_u8(b'$');
        put_decimal(out, a.len() as u64);
        out.put_slice(a);
        out.put_slice(b"\r\n");
    }
}

/// `n` in decimal, then CRLF.
fn put_decimal(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[start..]);
    out.put_slice(b"\r\n");
}

/// Takes one whole reply off the front of `buf`: `Ok(None)` when it is not all there yet
/// (`buf` is left as it was).
pub fn decode(buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
    let mut at = 0;
    match parse(buf, &mut at, 0)? {
        Some(reply) => {
            buf.advance(at);
            Ok(Some(reply))
        }
        None => Ok(None),
    }
}

/// The line starting at `*at` (without its CRLF), moving `*at` past it.
fn line<'a>(buf: &'a [u8], at: &mut usize) -> Result<Option<&'a [u8]>, ProtocolError> {
    let rest = &buf[*at..];
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(n) if n > MAX_LINE => Err(ProtocolError::TooLarge("line")),
        Some(n) => {
            *at += n + 2;
            Ok(Some(&rest[..n]))
        }
        None if rest.len() > MAX_LINE => Err(ProtocolError::TooLarge("line")),
        None => Ok(None),
    }
}

fn number(digits: &[u8]) -> Result<i64, ProtocolError> {
    let (neg, digits) = match digits {
        [b'-', rest @ ..] => (true, rest),
        other => (false, other),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(ProtocolError::Number);
    }
    // Accumulated negative when negative: i64::MIN (which Redis sends) has no positive twin.
    let sign = if neg { -1 } else { 1 };
    let n = digits.iter().try_fold(0i64, |n, d| n.checked_mul(10)?.checked_add(sign * i64::from(d - b'0')));
    n.ok_or(ProtocolError::Number)
}

/// A length: -1 (null) or 0..=max.
fn length(digits: &[u8], max: usize, what: &'static str) -> Result<Option<usize>, ProtocolError> {
    match number(digits)? {
        -1 => Ok(None),
        n if n < 0 => Err(ProtocolError::Number),
        n if n as u64 > max as u64 => Err(ProtocolError::TooLarge(what)),
        n => Ok(Some(n as usize)),
    }
}

fn parse(buf: &BytesMut, at: &mut usize, depth: usize) -> Result<Option<Reply>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError::TooDeep);
    }
    let Some(&kind) = buf.get(*at) else { return Ok(None) };
    let mut pos = *at + 1;
    let Some(head) = line(buf, &mut pos)? else { return Ok(None) };
    let reply = match kind {
        b'+' => Reply::Status(Bytes::copy_from_slice(head)),
        b'-' => Reply::Error(Bytes::copy_from_slice(head)),
        b':' => Reply::Integer(number(head)?),
        b'$' => match length(head, MAX_BULK, "bulk string")? {
            None => Reply::Bulk(None),
            Some(n) => {
                if buf.len() < pos + n + 2 {
                    return Ok(None);
                }
                if &buf[pos + n..pos + n + 2] != b"\r\n" {
                    return Err(ProtocolError::Terminator);
                }
                let data = Bytes::copy_from_slice(&buf[pos..pos + n]);
                pos += n + 2;
                Reply::Bulk(Some(data))
            }
        },
        b'*' => match length(head, MAX_ELEMENTS, "array")? {
            None => Reply::Array(None),
            Some(n) => {
                // Every element takes at least 3 bytes: no room is reserved for more elements
                // than the bytes already here could hold.
                let mut items = Vec::with_capacity(n.min((buf.len() - pos) / 3 + 1));
                for _ in 0..n {
                    match parse(buf, &mut pos, depth + 1)? {
                        Some(item) => items.push(item),
                        None => return Ok(None),
                    }
                }
                Reply::Array(Some(items))
            }
        },
        other => return Err(ProtocolError::Type(other)),
    };
    *at = pos;
    Ok(Some(reply))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(raw: &[u8]) -> Result<Option<Reply>, ProtocolError> {
        decode(&mut BytesMut::from(raw))
    }

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Some(Bytes::copy_from_slice(s.as_bytes())))
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = BytesMut::new();
        encode(&mut out, &["SET", "k", ""]);
        assert_eq!(&out[..], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn every_kind_of_reply() {
        assert_eq!(one(b"+OK\r\n"), Ok(Some(Reply::Status(Bytes::from_static(b"OK")))));
        assert_eq!(one(b"-ERR no\r\n"), Ok(Some(Reply::Error(Bytes::from_static(b"ERR no")))));
        assert_eq!(one(b":-42\r\n"), Ok(Some(Reply::Integer(-42))));
        assert_eq!(one(b":-9223372036854775808\r\n"), Ok(Some(Reply::Integer(i64::MIN))));
        assert_eq!(one(b":9223372036854775807\r\n"), Ok(Some(Reply::Integer(i64::MAX))));
        assert_eq!(one(b"$-1\r\n"), Ok(Some(Reply::Bulk(None))));
        assert_eq!(one(b"$5\r\na\r\nbc\r\n"), Ok(Some(bulk("a\r\nbc"))));
        assert_eq!(one(b"*-1\r\n"), Ok(Some(Reply::Array(None))));
        let nested = one(b"*2\r\n*2\r\n$3\r\n1-0\r\n*0\r\n:7\r\n").unwrap().unwrap();
        assert_eq!(
            nested,
            Reply::Array(Some(vec![
                Reply::Array(Some(vec![bulk("1-0"), Reply::Array(Some(vec![]))])),
                Reply::Integer(7)
            ]))
        );
        assert_eq!(bulk("12").as_int(), Some(12));
    }

    #[test]
    fn a_reply_cut_anywhere_is_need_more_and_leaves_the_buffer() {
        let raw = b"*3\r\n$3\r\nfoo\r\n:12\r\n*1\r\n+x\r\n+next\r\n";
        let whole = raw.len() - b"+next\r\n".len();
        for cut in 0..whole {
            let mut buf = BytesMut::from(&raw[..cut]);
            assert_eq!(decode(&mut buf), Ok(None), "cut at {cut}");
            assert_eq!(buf.len(), cut);
        }
        let mut buf = BytesMut::from(&raw[..]);
        assert!(decode(&mut buf).unwrap().is_some());
        assert_eq!(decode(&mut buf), Ok(Some(Reply::Status(Bytes::from_static(b"next")))));
        assert!(buf.is_empty());
    }

    #[test]
    fn lies_about_sizes_are_refused_before_anything_is_allocated() {
        assert_eq!(one(b"$9999999999\r\n"), Err(ProtocolError::TooLarge("bulk string")));
        assert_eq!(one(b"*99999999\r\n"), Err(ProtocolError::TooLarge("array")));
        assert_eq!(one(b"$-2\r\n"), Err(ProtocolError::Number));
        assert_eq!(one(b":99999999999999999999\r\n"), Err(ProtocolError::Number));
        assert_eq!(one(b":1x\r\n"), Err(ProtocolError::Number));
        assert_eq!(one(b"$1\r\nab\r\n"), Err(ProtocolError::Terminator));
        assert_eq!(one(b"?\r\n"), Err(ProtocolError::Type(b'?')));
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2) + ":1\r\n";
        assert_eq!(one(deep.as_bytes()), Err(ProtocolError::TooDeep));
        // A line that never ends, past the longest there may be.
        assert_eq!(one(&[b'+'; MAX_LINE + 10]), Err(ProtocolError::TooLarge("line")));
        let mut long = vec![b'+'; MAX_LINE + 10];
        long.extend_from_slice(b"\r\n");
        assert_eq!(one(&long), Err(ProtocolError::TooLarge("line")));
        // A huge array announced with few bytes behind it reserves only what they can hold.
        assert_eq!(one(b"*1000000\r\n:1\r\n"), Ok(None));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_refuse_without_panicking(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut buf = BytesMut::from(&raw[..]);
            let _ = decode(&mut buf);
        }

        #[test]
        fn encoded_commands_decode_as_arrays_of_bulk_strings(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8)) {
            let mut out = BytesMut::new();
            encode(&mut out, &args);
            let decoded = decode(&mut out).unwrap().unwrap();
            let expected = Reply::Array(Some(args.iter().map(|a| Reply::Bulk(Some(Bytes::copy_from_slice(a)))).collect()));
            prop_assert_eq!(decoded, expected);
            prop_assert!(out.is_empty());
        }
    }
}

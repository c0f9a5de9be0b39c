//! Percent-decoding of path segments and query strings.

use std::borrow::Cow;

/// Decodes `%XX` escapes (and, in query values, `+` as space). `None` when an escape is
/// malformed or the result is not UTF-8.
/// Text with nothing to decode is borrowed as it is.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<Cow<'_, str>> {
    if !s.bytes().any(|b| b == b'%' || (plus_is_space && b == b'+')) {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hi = (hex[0] as char).to_digit(16)?;
                let lo = (hex[1] as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// The decoded value of the first `key` in a query string. `Some(Err(()))` when it is
/// present but cannot be decoded.
pub fn param(query: &str, key: &str) -> Option<Result<String, ()>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v, true).map(Cow::into_owned).ok_or(()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes() {
        assert_eq!(percent_decode("user%3A42", false).unwrap(), "user:42");
        assert_eq!(percent_decode("a+b", true).unwrap(), "a b");
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%4", false), None);
        assert_eq!(percent_decode("%ff", false), None);
    }

    #[test]
    fn params() {
        let q = "types=a,b&last_event_id=1-2&padding=1&bad=%zz&empty";
        assert_eq!(param(q, "types"), Some(Ok("a,b".into())));
        assert_eq!(param(q, "padding"), Some(Ok("1".into())));
        assert_eq!(param(q, "empty"), Some(Ok(String::new())));
        assert_eq!(param(q, "bad"), Some(Err(())));
        assert_eq!(param(q, "none"), None);
    }
}

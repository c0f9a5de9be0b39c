//! UTF-8 validation across fragment boundaries: a text message is checked piece by piece as
//! its frames arrive, keeping at most three bytes of an unfinished character between pieces.

/// Incremental UTF-8 validator.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    carry: [u8; 4],
    carry_len: usize,
}

impl Utf8Validator {
    /// Checks the next piece; `false` as soon as the text cannot be valid UTF-8.
    pub fn feed(&mut self, mut piece: &[u8]) -> bool {
        if self.carry_len > 0 {
            // Complete the unfinished character first.
            while self.carry_len < 4 && !piece.is_empty() {
                self.carry[self.carry_len] = piece[0];
                self.carry_len += 1;
                piece = &piece[1..];
                match std::str::from_utf8(&self.carry[..self.carry_len]) {
                    Ok(_) => {
                        self.carry_len = 0;
                        break;
                    }
                    Err(e) if e.error_len().is_some() => return false,
                    Err(_) => {}
                }
            }
            if self.carry_len > 0 {
                return piece.is_empty() || self.carry_len < 4;
            }
        }
        match std::str::from_utf8(piece) {
            Ok(_) => true,
            Err(e) if e.error_len().is_some() => false,
            Err(e) => {
                let rest = &piece[e.valid_up_to()..];
                self.carry[..rest.len()].copy_from_slice(rest);
                self.carry_len = rest.len();
                true
            }
        }
    }

    /// Whether the text ended on a character boundary.
    pub fn is_complete(&self) -> bool {
        self.carry_len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_split(bytes: &[u8]) -> bool {
        let whole = std::str::from_utf8(bytes).is_ok();
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let mut v = Utf8Validator::default();
                let ok = v.feed(&bytes[..a]) && v.feed(&bytes[a..b]) && v.feed(&bytes[b..]) && v.is_complete();
                assert_eq!(ok, whole, "{bytes:?} split at {a},{b}");
            }
        }
        whole
    }

    #[test]
    fn any_split_agrees_with_whole_validation() {
        assert!(check_split("κόσμε €𝄞 ok".as_bytes()));
        assert!(!check_split(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"));
        assert!(!check_split(b"\xf4\x90\x80\x80"));
        assert!(!check_split(b"ab\xc0\xaf"));
        assert!(!check_split(b"\xe2\x82"));
    }

    #[test]
    fn fails_fast_on_an_impossible_prefix() {
        let mut v = Utf8Validator::default();
        assert!(!v.feed(b"\xf5"));
        let mut v = Utf8Validator::default();
        assert!(v.feed(b"\xe2"));
        assert!(!v.feed(b"\x28"));
    }
}

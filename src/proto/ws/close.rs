//! Close codes (RFC 6455 §7.4), written out as data so a conformance failure is easy to find.

/// The codes herald sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: done.
    Normal,
    /// 1001: the server is going away (shutdown).
    GoingAway,
    /// 1002: the peer broke the protocol.
    Protocol,
    /// 1007: text that is not UTF-8.
    InvalidData,
    /// 1008: a message against the server's policy (e.g. no session).
    Policy,
    /// 1009: a message larger than the server takes.
    TooBig,
    /// 1011: the server failed.
    Internal,
    /// 1013: try again later (the server is at a limit; IANA registry).
    TryAgainLater,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::Protocol => 1002,
            CloseCode::InvalidData => 1007,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::Internal => 1011,
            CloseCode::TryAgainLater => 1013,
        }
    }
}

/// Whether a peer may send `code` in a close frame (§7.4.1–7.4.2): 1000–1003, 1007–1011,
/// and the registered/private ranges 3000–4999. 1004–1006, 1015 and the rest are invalid.
pub fn valid_from_peer(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_codes() {
        for ok in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999] {
            assert!(valid_from_peer(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            assert!(!valid_from_peer(bad), "{bad}");
        }
    }
}

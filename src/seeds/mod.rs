//! The seed-compatible routes (API.md §4): four event APIs that applications already speak,
//! served unchanged as thin adapters over the same engine. Each file maps one document in
//! `shared/seeds/` onto topics, subscriptions and publishes:
//!
//! - `wave`: a test runner's session events — long-poll, one event per request (seed 000);
//! - `member`: a member notification service — SSE keyed by `Member-ID` (seed 001);
//! - `chat`: a chat client's WebSocket events API — `ping`/`send`/`debug` (seed 002);
//! - `push`: an EventSource push module — broadcast, session/user/group targets, type
//!   filters in the URL, and pause-and-retry (seed 003).

pub mod chat;
pub mod member;
pub mod push;
pub mod wave;

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a time in Unix microseconds (UTC).
pub fn iso8601(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let millis = (micros % 1_000_000) / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian), after H. Hinnant.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_000_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(1_593_647_381_729_490), "2020-07-01T23:49:41.729Z");
        assert_eq!(iso8601(4_102_444_799_999_999), "2099-12-31T23:59:59.999Z");
    }
}

//! Request heads: never panic, never report more bytes than were given.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(Some(h)) = herald::proto::http1::parse_head(data) {
        assert!(h.len <= data.len());
    }
});

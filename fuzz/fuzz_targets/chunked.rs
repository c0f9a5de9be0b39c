//! Chunked bodies: never panic, never over-read, never exceed the limit.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let mut d = herald::proto::http1::BodyDecoder::chunked(4096);
    if let Ok(n) = d.decode(data, &mut out) {
        assert!(n <= data.len());
        assert!(out.len() <= 4096);
    }
});

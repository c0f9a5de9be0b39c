//! WebSocket frames: never panic, never over-read.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    let mut events = Vec::new();
    if let Ok(n) = herald::proto::ws::WsReader::new(65536).read(&mut buf, &mut events) {
        assert!(n <= data.len());
    }
});

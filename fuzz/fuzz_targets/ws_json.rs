//! The WebSocket JSON protocols (herald's and the chat seed's): never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = herald::api::ws::parse(text, 65536);
        let _ = herald::seeds::chat::on_message(text, 0);
    }
});

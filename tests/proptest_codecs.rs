//! Property tests of every codec: random and mutated input never panics and is never
//! over-read; encode → decode round-trips where both directions exist. Bounded case counts
//! keep this in the normal test run (`PROPTEST_CASES` raises them for a longer hunt).

use herald::cursor::Cursor;
use herald::proto::http1::{BodyDecoder, parse_head};
use herald::proto::sse;
use herald::proto::ws::frame::{client_frame, parse_head as ws_head};
use herald::proto::ws::{WsEvent, WsReader};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 512, ..ProptestConfig::default() }
}

const GOOD_REQUEST: &[u8] =
    b"POST /pub/scores?type=goal HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nEvent-Type: goal\r\n\r\nhello";

/// A WHATWG event-stream parser (enough for round trips): data lines of one event.
fn parse_sse(text: &str) -> Vec<(Option<String>, Option<String>, String)> {
    let mut out = Vec::new();
    let (mut id, mut ev, mut data): (Option<String>, Option<String>, Option<String>) = (None, None, None);
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        let line = &rest[..end];
        let skip = if rest[end..].starts_with("\r\n") { 2 } else { 1.min(rest.len() - end) };
        rest = &rest[end + skip..];
        if line.is_empty() {
            if let Some(mut d) = data.take() {
                d.pop();
                out.push((id.take(), ev.take(), d));
            }
            continue;
        }
        let (field, value) = line.split_once(':').map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
        match field {
            "id" => id = Some(value.into()),
            "event" => ev = Some(value.into()),
            "data" => {
                let d = data.get_or_insert_with(String::new);
                d.push_str(value);
                d.push('\n');
            }
            _ => {}
        }
    }
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn request_heads_never_panic_or_over_read(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(Some(h)) = parse_head(&bytes) {
            prop_assert!(h.len <= bytes.len());
        }
    }

    #[test]
    fn mutated_requests_never_panic(pos in 0usize..GOOD_REQUEST.len(), byte in any::<u8>(), cut in 0usize..=GOOD_REQUEST.len()) {
        let mut bytes = GOOD_REQUEST.to_vec();
        bytes[pos] = byte;
        bytes.truncate(cut.max(pos + 1));
        if let Ok(Some(h)) = parse_head(&bytes) {
            prop_assert!(h.len <= bytes.len());
        }
    }

    #[test]
    fn chunked_bodies_round_trip(body in proptest::collection::vec(any::<u8>(), 0..4096), sizes in proptest::collection::vec(1usize..700, 1..20), ext in any::<bool>()) {
        let mut wire = Vec::new();
        let mut rest = &body[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].min(rest.len());
            wire.extend_from_slice(format!("{n:X}{}\r\n", if ext { ";x=y" } else { "" }).as_bytes());
            wire.extend_from_slice(&rest[..n]);
            wire.extend_from_slice(b"\r\n");
            rest = &rest[n..];
            i += 1;
        }
        wire.extend_from_slice(b"0\r\nTrailer: t\r\n\r\n");
        let mut whole = Vec::new();
        let mut d = BodyDecoder::chunked(1 << 20);
        prop_assert_eq!(d.decode(&wire, &mut whole).unwrap(), wire.len());
        prop_assert!(d.is_done());
        prop_assert_eq!(&whole, &body);
        // The same, fed in pieces of every size.
        let step = sizes[0];
        let mut pieces = Vec::new();
        let mut d = BodyDecoder::chunked(1 << 20);
        let mut at = 0;
        while at < wire.len() {
            let end = (at + step).min(wire.len());
            at += d.decode(&wire[at..end], &mut pieces).unwrap();
        }
        prop_assert_eq!(pieces, body);
    }

    #[test]
    fn chunked_decoder_never_panics_or_over_reads(bytes in proptest::collection::vec(any::<u8>(), 0..2048), limit in 0usize..4096) {
        let mut out = Vec::new();
        let mut d = BodyDecoder::chunked(limit);
        if let Ok(n) = d.decode(&bytes, &mut out) {
            prop_assert!(n <= bytes.len());
            prop_assert!(out.len() <= limit);
        }
    }

    #[test]
    fn sse_events_round_trip(data in "[a-z \r\n€:]{0,200}", id in "[0-9a-f]{1,8}-[0-9]{1,5}", kind in proptest::option::of("[a-z.]{1,10}")) {
        let chunk = sse::event_chunk(Some(&id), kind.as_deref(), data.as_bytes());
        let text = String::from_utf8(chunk.payload().to_vec()).unwrap();
        let events = parse_sse(&text);
        prop_assert_eq!(events.len(), 1);
        let (got_id, got_kind, got_data) = &events[0];
        prop_assert_eq!(got_id.as_deref(), Some(id.as_str()));
        prop_assert_eq!(got_kind, &kind);
        // SSE carries line breaks as LF: CRLF and CR arrive as LF.
        let want = data.replace("\r\n", "\n").replace('\r', "\n");
        prop_assert_eq!(got_data, &want);
    }

    #[test]
    fn websocket_reader_never_panics_or_over_reads(bytes in proptest::collection::vec(any::<u8>(), 0..4096), max in 0usize..10_000) {
        let mut buf = bytes.clone();
        let mut events = Vec::new();
        if let Ok(n) = WsReader::new(max).read(&mut buf, &mut events) {
            prop_assert!(n <= bytes.len());
        }
        let _ = ws_head(&bytes);
    }

    #[test]
    fn websocket_messages_round_trip(text in "\\PC{0,300}", cuts in proptest::collection::vec(0usize..300, 0..5), mask in any::<[u8; 4]>(), feed in 1usize..64) {
        // Split the message into fragments at `cuts` (on char boundaries), with a ping between.
        let bytes = text.as_bytes();
        let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).filter(|&c| text.is_char_boundary(c)).collect();
        points.sort();
        points.dedup();
        let mut wire = Vec::new();
        let mut start = 0;
        let mut first = true;
        for &p in points.iter().chain(std::iter::once(&bytes.len())) {
            if p < start {
                continue;
            }
            let last = p == bytes.len();
            wire.extend(client_frame(last, if first { 1 } else { 0 }, &bytes[start..p], mask));
            if !last {
                wire.extend(client_frame(true, 9, b"p", mask));
            }
            first = false;
            start = p;
            if last {
                break;
            }
        }
        // Fed a few bytes at a time, as a slow network would deliver it.
        let mut reader = WsReader::new(1 << 20);
        let mut events = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for piece in wire.chunks(feed) {
            pending.extend_from_slice(piece);
            let used = reader.read(&mut pending, &mut events).unwrap();
            pending.drain(..used);
        }
        prop_assert!(pending.is_empty());
        let texts: Vec<WsEvent> = events.into_iter().filter(|e| matches!(e, WsEvent::Text(_))).collect();
        prop_assert_eq!(texts, vec![WsEvent::Text(text.clone())]);
    }

    #[test]
    fn json_protocol_never_panics(text in "\\PC{0,200}") {
        let _ = herald::api::ws::parse(&text, 1000);
        let _ = herald::seeds::chat::on_message(&text, 0);
    }

    #[test]
    fn json_protocol_on_json_shaped_input(method in prop_oneof!["subscribe", "unsubscribe", "publish", "ping", "x"], topics in proptest::collection::vec("[a-z: ]{0,10}", 0..70), id in any::<i64>()) {
        let msg = serde_json::json!({"method": method, "id": id, "topics": topics, "topic": topics.first(), "data": topics});
        let m = herald::api::ws::parse(&msg.to_string(), 1000);
        if let Err(errors) = &m.request {
            for (_, path) in errors {
                prop_assert!(path.starts_with('/'));
            }
        }
    }

    #[test]
    fn cursors_round_trip(epoch in any::<u64>(), seq in any::<u64>(), junk in "\\PC{0,30}") {
        let c = Cursor::new(epoch, seq);
        prop_assert_eq!(Cursor::parse(&c.to_string()), Some(c));
        let _ = Cursor::parse(&junk);
        let _ = Cursor::parse_list(&junk, 3);
    }
}

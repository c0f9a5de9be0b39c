//! One event, encoded once for every transport, shared by reference with every subscriber.
//!
//! The owner worker builds a `Frame` when it accepts a publish; the same `Arc<Frame>` sits in
//! the topic's history ring and travels to every worker with subscribers, where each
//! subscriber's outbox gets a reference-counted slice of the pre-encoded bytes. Encodings a
//! stream needs less often (the id-less SSE body for multi-topic streams; later WebSocket
//! and long-poll JSON) are built lazily, still once per event, by whichever worker needs them
//! first.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::cursor::Cursor;
use crate::proto::sse::{self, Chunk};
use crate::proto::{longpoll, ws};

#[derive(Debug)]
pub struct Frame {
    pub topic: Arc<str>,
    pub cursor: Cursor,
    /// The event type; `None` is the default SSE `message` event.
    pub kind: Option<Box<str>>,
    /// The event data. When it is one line, this is a slice of `sse`: the history holds the
    /// data once, and the publish request's body is freed at once.
    pub data: Bytes,
    /// Server receive time, Unix microseconds.
    pub ts_micros: u64,
    /// SSE with the `id:` line: what a single-topic stream sends.
    sse: Chunk,
    /// The other encodings, boxed and made on first use: an event only ever sent to
    /// single-topic streams (and kept in history meanwhile) pays 16 bytes for them, not 200.
    more: OnceLock<Box<Encodings>>,
}

/// Encodings a stream needs less often, each built once by whichever worker needs it first.
#[derive(Debug, Default)]
struct Encodings {
    /// SSE without the `id:` line, for multi-topic streams whose id is per stream.
    sse_anonymous: OnceLock<Chunk>,
    /// The event's JSON object, as long-poll answers list it.
    json: OnceLock<Bytes>,
    /// The WebSocket `message` event, as one unmasked text frame.
    ws: OnceLock<Bytes>,
    /// The event's data alone as a text frame (the chat events API pushes events as they are).
    ws_raw: OnceLock<Bytes>,
    /// A whole long-poll answer carrying only this event (HTTP/1.1, keep-alive), its resume
    /// id this event's cursor: what every single-topic poll released by this event, and
    /// standing at it, is sent.
    longpoll_answer: OnceLock<Bytes>,
}

impl Frame {
    pub fn new(topic: Arc<str>, cursor: Cursor, kind: Option<Box<str>>, data: Bytes, ts_micros: u64) -> Frame {
        let id = cursor.text();
        let sse = sse::event_chunk(Some(&id), kind.as_deref(), &data);
        // One line of data is written as it is, last in the chunk: `data: {data}\n\n\r\n`.
        let data = if data.iter().any(|&b| b == b'\n' || b == b'\r') {
            data
        } else {
            let end = sse.framed.len() - b"\n\n\r\n".len();
            let copy = sse.framed.slice(end - data.len()..end);
            debug_assert_eq!(copy, data);
            copy
        };
        Frame { topic, cursor, kind, data, ts_micros, sse, more: OnceLock::new() }
    }

    /// What keeping this event in history costs, roughly: the frame, its data and its SSE
    /// encoding, and the ring's slot. Encodings built later for other transports are not
    /// counted (they come and go with use). Depends only on what never changes, so the same
    /// figure is added when the event enters a ring and taken off when it leaves.
    pub fn cost(&self) -> usize {
        const FIXED: usize = size_of::<Frame>() + 16 + size_of::<(std::time::Instant, Arc<Frame>)>();
        let data_apart = if self.sse.framed.as_ptr_range().contains(&self.data.as_ptr()) { 0 } else { self.data.len() };
        // The topic's name is shared with the topic's entry: nothing extra per event.
        FIXED + self.sse.framed.len() + data_apart + self.kind.as_ref().map_or(0, |k| k.len())
    }

    fn more(&self) -> &Encodings {
        self.more.get_or_init(Box::default)
    }

    /// The event as a single-topic SSE stream sends it (`id:` = the topic cursor).
    pub fn sse(&self, chunked: bool) -> Bytes {
        self.sse.for_version(chunked)
    }

    /// The event without its `id:` line, for streams that send their own id first.
    pub fn sse_anonymous(&self, chunked: bool) -> Bytes {
        self.more()
            .sse_anonymous
            .get_or_init(|| sse::event_chunk(None, self.kind.as_deref(), &self.data))
            .for_version(chunked)
    }

    /// The event's JSON object for long-poll answers.
    pub fn json(&self) -> Bytes {
        self.more()
            .json
            .get_or_init(|| {
                let data = std::str::from_utf8(&self.data).unwrap_or_default();
                let id = self.cursor.text();
                longpoll::event_object(&self.topic, &id, self.kind.as_deref(), data, self.ts_micros)
            })
            .clone()
    }

    /// The event as a WebSocket text frame:
    /// `{"event":"message","topic","id","type"?,"data","ts"}`.
    pub fn ws(&self) -> Bytes {
        self.more()
            .ws
            .get_or_init(|| {
                let json = self.json();
                let mut payload = Vec::with_capacity(json.len() + 18);
                payload.extend_from_slice(b"{\"event\":\"message\",");
                payload.extend_from_slice(&json[1..]);
                ws::encode_frame(ws::Opcode::Text, &payload)
            })
            .clone()
    }

    /// The event's data as a text frame, nothing around it.
    pub fn ws_raw(&self) -> Bytes {
        self.more().ws_raw.get_or_init(|| ws::encode_frame(ws::Opcode::Text, &self.data)).clone()
    }

    /// The complete long-poll answer with just this event, built once with `build`.
    pub fn longpoll_answer(&self, build: impl FnOnce() -> Bytes) -> Bytes {
        self.more().longpoll_answer.get_or_init(build).clone()
    }

    /// Whether a `types=` filter lets this event through (`message` names untyped events).
    pub fn passes(&self, types: Option<&[Box<str>]>) -> bool {
        match types {
            None => true,
            Some(list) => {
                let name = self.kind.as_deref().unwrap_or("message");
                list.iter().any(|t| &**t == name)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_share_one_buffer() {
        let f = Frame::new("t".into(), Cursor::new(0xab, 7), Some("score".into()), Bytes::from_static(b"1-0"), 1);
        let a = f.sse(true);
        let b = f.sse(true);
        assert_eq!(a.as_ptr(), b.as_ptr(), "the same bytes, not a copy");
        assert_eq!(&f.sse(false)[..], b"id: ab-7\nevent: score\ndata: 1-0\n\n");
        assert_eq!(&f.sse_anonymous(false)[..], b"event: score\ndata: 1-0\n\n");
        assert_eq!(f.sse_anonymous(true).as_ptr(), f.sse_anonymous(true).as_ptr());
    }

    #[test]
    fn one_line_data_lives_in_the_sse_chunk() {
        let one = Frame::new("t".into(), Cursor::new(1, 1), None, Bytes::from(b"abc".to_vec()), 1);
        assert_eq!(&one.data[..], b"abc");
        let sse = one.sse(true);
        assert!(sse.as_ptr_range().contains(&one.data.as_ptr()), "a slice of the SSE chunk");
        let two = Frame::new("t".into(), Cursor::new(1, 2), None, Bytes::from(b"a\r\nb".to_vec()), 1);
        assert_eq!(&two.data[..], b"a\r\nb");
        assert_eq!(&two.sse(false)[..], b"id: 1-2\ndata: a\ndata: b\n\n");
        let empty = Frame::new("t".into(), Cursor::new(1, 3), None, Bytes::new(), 1);
        assert!(empty.data.is_empty());
    }

    #[test]
    fn websocket_message_frame() {
        let f = Frame::new("t".into(), Cursor::new(0xab, 7), None, Bytes::from_static(b"hi"), 1_500_000);
        let frame = f.ws();
        assert_eq!(frame[0], 0x81);
        let v: serde_json::Value = serde_json::from_slice(&frame[2..]).unwrap();
        assert_eq!(v, serde_json::json!({"event": "message", "topic": "t", "id": "ab-7", "data": "hi", "ts": 1.5}));
        assert_eq!(f.ws().as_ptr(), frame.as_ptr());
    }

    #[test]
    fn type_filters() {
        let typed = Frame::new("t".into(), Cursor::new(1, 1), Some("a".into()), Bytes::new(), 1);
        let plain = Frame::new("t".into(), Cursor::new(1, 2), None, Bytes::new(), 1);
        let only_a: Vec<Box<str>> = vec!["a".into()];
        let only_msg: Vec<Box<str>> = vec!["message".into()];
        assert!(typed.passes(None) && plain.passes(None));
        assert!(typed.passes(Some(&only_a)) && !plain.passes(Some(&only_a)));
        assert!(!typed.passes(Some(&only_msg)) && plain.passes(Some(&only_msg)));
    }
}

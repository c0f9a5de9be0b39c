//! Long-poll bodies (API.md §3.3): `{"events":[…],"last_event_id":"…"}`.
//!
//! Each event's JSON object is encoded once per event (`frames::Frame::json`) and shared; a
//! response is a list of pieces — its head, the shared event objects and the separators —
//! written with one vectored write, so releasing thousands of held polls copies no event.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::json;

use crate::cursor::Cursor;

/// `{"topic","id","type"?,"data","ts"}` for one event; untyped events have no `type` key.
pub fn event_object(topic: &str, id: &str, kind: Option<&str>, data: &str, ts_micros: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + topic.len() + id.len() + 64);
    b.put_slice(b"{\"topic\":");
    put_json_str(&mut b, topic);
    b.put_slice(b",\"id\":");
    put_json_str(&mut b, id);
    if let Some(k) = kind {
        b.put_slice(b",\"type\":");
        put_json_str(&mut b, k);
    }
    b.put_slice(b",\"data\":");
    put_json_str(&mut b, data);
    b.put_slice(b",\"ts\":");
    b.put_slice(ts_json(ts_micros).as_bytes());
    b.put_u8(b'}');
    b.freeze()
}

/// A gap notice in a long-poll answer: shaped like an event of type `herald.gap` whose data
/// is `{"topic","missed_from"}`, as on an event stream.
pub fn gap_object(topic: &str, resume_at: Cursor, missed_from: &str, ts_micros: u64) -> Bytes {
    let data = json!({"topic": topic, "missed_from": missed_from}).to_string();
    event_object(topic, &resume_at.to_string(), Some("herald.gap"), &data, ts_micros)
}

/// Unix seconds with microseconds, as a JSON number.
pub fn ts_json(ts_micros: u64) -> String {
    format!("{}.{:06}", ts_micros / 1_000_000, ts_micros % 1_000_000)
}

fn put_json_str(b: &mut BytesMut, s: &str) {
    // serde_json's escaping, written straight into the buffer.
    let mut w = b.writer();
    let _ = serde_json::to_writer(&mut w, s);
}

/// The pieces of a 200 answer carrying `events` (already-encoded objects): head, body.
pub fn answer(events: &[Bytes], last_event_id: &str, head: impl FnOnce(usize) -> Bytes) -> Vec<Bytes> {
    let tail = format!("],\"last_event_id\":{}}}", serde_json::Value::from(last_event_id));
    let body_len =
        OPEN.len() + events.iter().map(Bytes::len).sum::<usize>() + events.len().saturating_sub(1) + tail.len();
    let mut pieces = Vec::with_capacity(events.len() * 2 + 3);
    pieces.push(head(body_len));
    pieces.push(Bytes::from_static(OPEN));
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            pieces.push(Bytes::from_static(b","));
        }
        pieces.push(e.clone());
    }
    pieces.push(Bytes::from(tail));
    pieces
}

const OPEN: &[u8] = b"{\"events\":[";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_objects_are_json() {
        let e = event_object("a", "1-2", Some("t"), "x\"y\n", 1_593_647_381_729_490);
        let v: serde_json::Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(v, json!({"topic": "a", "id": "1-2", "type": "t", "data": "x\"y\n", "ts": 1593647381.72949}));
        let e = event_object("a", "1-3", None, "", 5);
        let v: serde_json::Value = serde_json::from_slice(&e).unwrap();
        assert!(v.get("type").is_none());
        assert_eq!(ts_json(5), "0.000005");
    }

    #[test]
    fn answers_assemble_to_the_declared_length() {
        let events = [event_object("a", "1-1", None, "one", 1), event_object("a", "1-2", None, "two", 2)];
        let pieces = answer(&events, "1-2", |n| Bytes::from(n.to_string()));
        let declared: usize = std::str::from_utf8(&pieces[0]).unwrap().parse().unwrap();
        let body: Vec<u8> = pieces[1..].iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(body.len(), declared);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["last_event_id"], "1-2");
        assert_eq!(v["events"][1]["data"], "two");
        let gap = gap_object("a", Cursor::new(1, 4), "9-9", 0);
        let v: serde_json::Value = serde_json::from_slice(&gap).unwrap();
        assert_eq!(v["type"], "herald.gap");
        let data: serde_json::Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
        assert_eq!(data, json!({"topic": "a", "missed_from": "9-9"}));
    }
}

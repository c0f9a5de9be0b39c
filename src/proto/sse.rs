//! Server-Sent Events encoding (WHATWG HTML §9.2), and the chunked framing the stream rides in.
//!
//! Everything here is pure: each function returns bytes that the fanout shares by reference.
//! A stream to an HTTP/1.1 client is a chunked body, so every piece is encoded as a complete
//! chunk; for HTTP/1.0 clients the chunk framing is sliced off again without a copy.

use bytes::{BufMut, Bytes, BytesMut};

/// Room reserved in front of a payload for its chunk-size line (16 hex digits + CRLF).
const CHUNK_HEAD_ROOM: usize = 18;

/// The end of a chunked body.
pub const TERMINATOR: &[u8] = b"0\r\n\r\n";

/// A chunk-framed piece of a stream, with the offsets of its payload.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// `{len:x}\r\n{payload}\r\n`
    pub framed: Bytes,
    /// Where the payload starts in `framed`.
    pub payload_start: usize,
}

impl Chunk {
    /// The payload alone, for a client without chunked framing (HTTP/1.0).
    pub fn payload(&self) -> Bytes {
        self.framed.slice(self.payload_start..self.framed.len() - 2)
    }

    /// The bytes to queue for a stream: framed for HTTP/1.1, bare for HTTP/1.0.
    pub fn for_version(&self, chunked: bool) -> Bytes {
        if chunked { self.framed.clone() } else { self.payload() }
    }
}

/// Builds a chunk whose payload `write` produces, with a single allocation and no copy.
pub fn chunk(capacity: usize, write: impl FnOnce(&mut BytesMut)) -> Chunk {
    let mut buf = BytesMut::with_capacity(CHUNK_HEAD_ROOM + capacity + 2);
    buf.put_bytes(0, CHUNK_HEAD_ROOM);
    write(&mut buf);
    let len = buf.len() - CHUNK_HEAD_ROOM;
    buf.put_slice(b"\r\n");
    let mut head = [0u8; CHUNK_HEAD_ROOM];
    let head_len = write_chunk_head(&mut head, len);
    let start = CHUNK_HEAD_ROOM - head_len;
    buf[start..CHUNK_HEAD_ROOM].copy_from_slice(&head[..head_len]);
    let framed = buf.freeze().slice(start..);
    Chunk { framed, payload_start: head_len }
}

fn write_chunk_head(out: &mut [u8; CHUNK_HEAD_ROOM], len: usize) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = if len == 0 { 1 } else { (usize::BITS - len.leading_zeros()).div_ceil(4) as usize };
    for i in 0..digits {
        out[digits - 1 - i] = HEX[(len >> (4 * i)) & 0xf];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    digits + 2
}

/// Appends one event: `id:` (if any), `event:` (if typed), one `data:` line per line of
/// `data` (split on CRLF, LF and CR), and the blank line that dispatches it.
pub fn write_event(out: &mut BytesMut, id: Option<&str>, event: Option<&str>, data: &[u8]) {
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(id.as_bytes());
        out.put_u8(b'\n');
    }
    if let Some(event) = event {
        out.put_slice(b"event: ");
        out.put_slice(event.as_bytes());
        out.put_u8(b'\n');
    }
    let mut rest = data;
    loop {
        let end = rest.iter().position(|&b| b == b'\n' || b == b'\r');
        out.put_slice(b"data: ");
        match end {
            None => {
                out.put_slice(rest);
                out.put_u8(b'\n');
                break;
            }
            Some(i) => {
                out.put_slice(&rest[..i]);
                out.put_u8(b'\n');
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
                rest = &rest[i + skip..];
            }
        }
    }
    out.put_u8(b'\n');
}

/// Upper bound of `write_event`'s output, for sizing buffers.
pub fn event_len_bound(id: Option<&str>, event: Option<&str>, data: &[u8]) -> usize {
    let lines = data.iter().filter(|&&b| b == b'\n' || b == b'\r').count() + 1;
    id.map_or(0, |i| i.len() + 5) + event.map_or(0, |e| e.len() + 8) + data.len() + lines * 7 + 1
}

/// One event as a chunk.
pub fn event_chunk(id: Option<&str>, event: Option<&str>, data: &[u8]) -> Chunk {
    chunk(event_len_bound(id, event, data), |b| write_event(b, id, event, data))
}

/// The response head of an event stream. `extra` lines are complete `Name: value` headers.
pub fn stream_head(chunked: bool, extra: &[(&str, &str)]) -> Bytes {
    let mut b = BytesMut::with_capacity(256);
    b.put_slice(if chunked { b"HTTP/1.1 200 OK\r\n" } else { b"HTTP/1.0 200 OK\r\n" });
    b.put_slice(
        b"Content-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n",
    );
    for (k, v) in extra {
        b.put_slice(k.as_bytes());
        b.put_slice(b": ");
        b.put_slice(v.as_bytes());
        b.put_slice(b"\r\n");
    }
    b.put_slice(if chunked { &b"Transfer-Encoding: chunked\r\n\r\n"[..] } else { b"Connection: close\r\n\r\n" });
    b.freeze()
}

/// The stream's opening: an optional 2 KiB padding comment, then `retry:`.
pub fn preamble(retry_ms: u64, padding: bool) -> Chunk {
    chunk(if padding { 2100 } else { 24 }, |b| {
        if padding {
            b.put_u8(b':');
            b.put_bytes(b' ', 2048);
            b.put_u8(b'\n');
        }
        b.put_slice(b"retry: ");
        b.put_slice(itoa::Buffer::new().format(retry_ms).as_bytes());
        b.put_slice(b"\n\n");
    })
}

/// The heartbeat comment.
pub fn heartbeat() -> Chunk {
    chunk(2, |b| b.put_slice(b":\n"))
}

/// `event: herald.gap` telling a resuming client that history no longer covers its cursor.
/// `id` is where the stream stands after the gap.
pub fn gap_chunk(topic: &str, missed_from: &str, id: &str) -> Chunk {
    let data = serde_json::json!({"topic": topic, "missed_from": missed_from}).to_string();
    event_chunk(Some(id), Some("herald.gap"), data.as_bytes())
}

/// Where a stream the server ends stands: `id:` (and `retry:`, to ask for a delay) with no
/// data, which sets the client's last event id without dispatching an event (WHATWG: a
/// block with an empty data buffer only updates the id). A client that had no event yet then
/// resumes from here, not from whenever it comes back.
pub fn resume_point(id: &str, retry_ms: Option<u64>) -> Chunk {
    chunk(id.len() + 32, |b| {
        b.put_slice(b"id: ");
        b.put_slice(id.as_bytes());
        b.put_u8(b'\n');
        if let Some(ms) = retry_ms {
            b.put_slice(b"retry: ");
            b.put_slice(itoa::Buffer::new().format(ms).as_bytes());
            b.put_u8(b'\n');
        }
        b.put_u8(b'\n');
    })
}

/// An `id:` line alone, sent in front of an id-less event on a multi-topic stream.
pub fn id_chunk(id: &str) -> Chunk {
    chunk(id.len() + 5, |b| {
        b.put_slice(b"id: ");
        b.put_slice(id.as_bytes());
        b.put_u8(b'\n');
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(c: &Chunk) -> String {
        String::from_utf8(c.payload().to_vec()).unwrap()
    }

    #[test]
    fn a_resume_point_is_an_id_without_data() {
        assert_eq!(text(&resume_point("e-3", Some(500))), "id: e-3\nretry: 500\n\n");
        assert_eq!(text(&resume_point("a-1,b-2", None)), "id: a-1,b-2\n\n");
    }

    #[test]
    fn framing_per_whatwg() {
        let c = event_chunk(Some("e-1"), Some("score"), b"a\nb\r\nc\rd");
        assert_eq!(text(&c), "id: e-1\nevent: score\ndata: a\ndata: b\ndata: c\ndata: d\n\n");
        assert_eq!(text(&event_chunk(None, None, b"")), "data: \n\n");
        assert_eq!(text(&event_chunk(None, None, b"x\n")), "data: x\ndata: \n\n");
        assert_eq!(text(&event_chunk(None, None, b"\r\n\r")), "data: \ndata: \ndata: \n\n");
        assert_eq!(text(&event_chunk(None, None, b" lead")), "data:  lead\n\n");
    }

    #[test]
    fn chunk_framing_has_exact_hex_length() {
        for len in [0usize, 1, 15, 16, 255, 256, 4095, 70000] {
            let c = chunk(len, |b| b.put_bytes(b'x', len));
            let s = &c.framed[..];
            let crlf = s.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&s[..crlf]).unwrap(), 16).unwrap();
            assert_eq!(n, len);
            assert_eq!(s.len(), crlf + 2 + len + 2);
            assert!(s.ends_with(b"\r\n"));
            assert_eq!(c.payload().len(), len);
        }
    }

    #[test]
    fn preamble_pads_and_sets_retry() {
        let p = text(&preamble(3000, true));
        assert!(p.starts_with(':'));
        assert!(p.len() >= 2048);
        assert!(p.ends_with("retry: 3000\n\n"));
        assert_eq!(text(&preamble(1500, false)), "retry: 1500\n\n");
    }

    #[test]
    fn gap_event_carries_topic_and_cursor() {
        let g = text(&gap_chunk("a", "1f-3", "2a-7"));
        let (head, data) = g.split_once("data: ").unwrap();
        assert_eq!(head, "id: 2a-7\nevent: herald.gap\n");
        let v: serde_json::Value = serde_json::from_str(data.trim_end()).unwrap();
        assert_eq!(v, serde_json::json!({"topic": "a", "missed_from": "1f-3"}));
    }

    #[test]
    fn heads_for_both_versions() {
        let h = String::from_utf8(stream_head(true, &[("Herald-Worker", "0")]).to_vec()).unwrap();
        assert!(h.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(h.contains("Content-Type: text/event-stream; charset=utf-8\r\n"));
        assert!(h.contains("Herald-Worker: 0\r\n"));
        assert!(h.ends_with("Transfer-Encoding: chunked\r\n\r\n"));
        let h = String::from_utf8(stream_head(false, &[]).to_vec()).unwrap();
        assert!(h.starts_with("HTTP/1.0 200 OK\r\n") && h.ends_with("Connection: close\r\n\r\n"));
    }
}

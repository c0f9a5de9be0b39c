//! From bytes to messages: frames are checked against every rule of RFC 6455 as they are
//! parsed, fragments are assembled (with control frames allowed between them), text is
//! validated as UTF-8 fragment by fragment, and a message over the cap is refused from its
//! header, before its payload is read.

use super::close::{CloseCode, valid_from_peer};
use super::frame::{Opcode, apply_mask, parse_head};
use super::utf8::Utf8Validator;

/// What the peer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsEvent {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    /// The peer's close; `code` is `None` for an empty close frame.
    Close {
        code: Option<u16>,
        reason: String,
    },
}

/// A broken rule: the connection is closed with `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub code: CloseCode,
    pub reason: &'static str,
}

fn violation(code: CloseCode, reason: &'static str) -> Violation {
    Violation { code, reason }
}

#[derive(Debug)]
struct Partial {
    text: bool,
    data: Vec<u8>,
    utf8: Utf8Validator,
}

/// Reads one connection's frames.
#[derive(Debug)]
pub struct WsReader {
    max_message: usize,
    partial: Option<Box<Partial>>,
}

impl WsReader {
    pub fn new(max_message: usize) -> WsReader {
        WsReader { max_message, partial: None }
    }

    /// Whether no fragmented message is half-read.
    pub fn is_idle(&self) -> bool {
        self.partial.is_none()
    }

    /// Takes every complete frame at the start of `buf` (unmasking it in place), pushing what
    /// they say to `events`. Returns how many bytes were used; the rest is an unfinished
    /// frame to call again with once more bytes arrive.
    pub fn read(&mut self, buf: &mut [u8], events: &mut Vec<WsEvent>) -> Result<usize, Violation> {
        let mut at = 0;
        loop {
            let Some(h) = parse_head(&buf[at..]).map_err(|r| violation(CloseCode::Protocol, r))? else {
                return Ok(at);
            };
            if h.rsv != 0 {
                return Err(violation(CloseCode::Protocol, "reserved bits set without an extension"));
            }
            let Some(op) = Opcode::from_u8(h.opcode) else {
                return Err(violation(CloseCode::Protocol, "reserved opcode"));
            };
            let Some(mask) = h.mask else {
                return Err(violation(CloseCode::Protocol, "client frames must be masked"));
            };
            if op.is_control() {
                if !h.fin {
                    return Err(violation(CloseCode::Protocol, "fragmented control frame"));
                }
                if h.len > 125 {
                    return Err(violation(CloseCode::Protocol, "control frame longer than 125 bytes"));
                }
            } else {
                match (op, &self.partial) {
                    (Opcode::Continuation, None) => {
                        return Err(violation(CloseCode::Protocol, "continuation without a message to continue"));
                    }
                    (Opcode::Text | Opcode::Binary, Some(_)) => {
                        return Err(violation(CloseCode::Protocol, "new message before the last one finished"));
                    }
                    _ => {}
                }
                let so_far = self.partial.as_ref().map_or(0, |p| p.data.len()) as u64;
                if so_far + h.len > self.max_message as u64 {
                    return Err(violation(CloseCode::TooBig, "message too big"));
                }
            }
            let end = at + h.head_len + h.len as usize;
            if buf.len() < end {
                return Ok(at);
            }
            let payload = &mut buf[at + h.head_len..end];
            apply_mask(payload, mask, 0);
            at = end;
            match op {
                Opcode::Ping => events.push(WsEvent::Ping(payload.to_vec())),
                Opcode::Pong => events.push(WsEvent::Pong),
                Opcode::Close => {
                    events.push(close_event(payload)?);
                    return Ok(at);
                }
                Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                    let p = self.partial.get_or_insert_with(|| {
                        Box::new(Partial { text: op == Opcode::Text, data: Vec::new(), utf8: Utf8Validator::default() })
                    });
                    if p.text && !p.utf8.feed(payload) {
                        return Err(violation(CloseCode::InvalidData, "text is not valid UTF-8"));
                    }
                    p.data.extend_from_slice(payload);
                    if h.fin {
                        let p = self.partial.take().expect("just inserted");
                        if p.text {
                            if !p.utf8.is_complete() {
                                return Err(violation(CloseCode::InvalidData, "text is not valid UTF-8"));
                            }
                            let text = String::from_utf8(p.data)
                                .map_err(|_| violation(CloseCode::InvalidData, "text is not valid UTF-8"))?;
                            events.push(WsEvent::Text(text));
                        } else {
                            events.push(WsEvent::Binary(p.data));
                        }
                    }
                }
            }
        }
    }
}

fn close_event(payload: &[u8]) -> Result<WsEvent, Violation> {
    match payload.len() {
        0 => Ok(WsEvent::Close { code: None, reason: String::new() }),
        1 => Err(violation(CloseCode::Protocol, "close frame with a 1-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !valid_from_peer(code) {
                return Err(violation(CloseCode::Protocol, "invalid close code"));
            }
            let reason = std::str::from_utf8(&payload[2..])
                .map_err(|_| violation(CloseCode::InvalidData, "close reason is not valid UTF-8"))?;
            Ok(WsEvent::Close { code: Some(code), reason: reason.to_string() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ws::frame::client_frame;

    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        client_frame(fin, opcode, payload, [0x11, 0x22, 0x33, 0x44])
    }

    fn run(max: usize, bytes: &[u8]) -> Result<Vec<WsEvent>, Violation> {
        let mut r = WsReader::new(max);
        let mut buf = bytes.to_vec();
        let mut events = Vec::new();
        let used = r.read(&mut buf, &mut events)?;
        assert_eq!(used, buf.len(), "all frames complete");
        Ok(events)
    }

    fn code(max: usize, bytes: &[u8]) -> u16 {
        run(max, bytes).unwrap_err().code.code()
    }

    #[test]
    fn fragments_with_a_ping_between() {
        let mut b = frame(false, 1, "héllo ".as_bytes());
        b.extend(frame(true, 9, b"p"));
        b.extend(frame(false, 0, b"wor"));
        b.extend(frame(true, 0, b"ld"));
        assert_eq!(run(100, &b).unwrap(), [WsEvent::Ping(b"p".to_vec()), WsEvent::Text("héllo world".into())]);
    }

    #[test]
    fn utf8_split_across_fragments_is_fine_and_invalid_is_1007() {
        let s = "€".as_bytes();
        let mut b = frame(false, 1, &s[..1]);
        b.extend(frame(true, 0, &s[1..]));
        assert_eq!(run(100, &b).unwrap(), [WsEvent::Text("€".into())]);
        assert_eq!(code(100, &frame(true, 1, b"\xff")), 1007);
        let mut b = frame(false, 1, b"\xe2\x82");
        b.extend(frame(true, 0, b""));
        assert_eq!(code(100, &b), 1007);
        assert_eq!(code(100, &frame(true, 8, b"\x03\xe8\xff")), 1007);
    }

    #[test]
    fn protocol_violations_are_1002() {
        let mut unmasked = frame(true, 1, b"x");
        unmasked[1] &= 0x7f;
        unmasked.drain(2..6);
        for (name, bytes) in [
            ("rsv", {
                let mut f = frame(true, 1, b"x");
                f[0] |= 0x40;
                f
            }),
            ("opcode 3", frame(true, 3, b"")),
            ("opcode 11", frame(true, 11, b"")),
            ("unmasked", unmasked),
            ("fragmented ping", frame(false, 9, b"")),
            ("long ping", frame(true, 9, &[0u8; 126])),
            ("lone continuation", frame(true, 0, b"x")),
            ("close with 1 byte", frame(true, 8, b"\x03")),
            ("close 1005", frame(true, 8, &1005u16.to_be_bytes())),
            ("close 999", frame(true, 8, &999u16.to_be_bytes())),
        ] {
            assert_eq!(code(1000, &bytes), 1002, "{name}");
        }
        let mut b = frame(false, 1, b"a");
        b.extend(frame(true, 1, b"b"));
        assert_eq!(code(100, &b), 1002, "text inside a fragmented message");
    }

    #[test]
    fn too_big_is_refused_from_the_header() {
        let f = frame(true, 2, &[0u8; 2000]);
        let mut r = WsReader::new(1000);
        let mut events = Vec::new();
        // Only the header has arrived: the refusal does not wait for the payload.
        let mut head = f[..8].to_vec();
        assert_eq!(r.read(&mut head, &mut events).unwrap_err().code, CloseCode::TooBig);
        let mut b = frame(false, 1, &[b'a'; 600]);
        b.extend(frame(true, 0, &[b'a'; 600]));
        assert_eq!(code(1000, &b), 1009);
    }

    #[test]
    fn partial_input_waits() {
        let f = frame(true, 1, b"hello");
        let mut r = WsReader::new(100);
        let mut events = Vec::new();
        for i in 0..f.len() {
            let mut part = f[..i].to_vec();
            assert_eq!(r.read(&mut part, &mut events).unwrap(), 0);
        }
        assert!(events.is_empty());
        let mut all = f.clone();
        assert_eq!(r.read(&mut all, &mut events).unwrap(), f.len());
        assert_eq!(events, [WsEvent::Text("hello".into())]);
    }

    #[test]
    fn close_frames() {
        assert_eq!(run(100, &frame(true, 8, b"")).unwrap(), [WsEvent::Close { code: None, reason: String::new() }]);
        let mut p = 1000u16.to_be_bytes().to_vec();
        p.extend_from_slice(b"bye");
        assert_eq!(run(100, &frame(true, 8, &p)).unwrap(), [WsEvent::Close { code: Some(1000), reason: "bye".into() }]);
    }
}

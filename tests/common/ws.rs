//! A raw WebSocket client for the black-box tests: masked client frames, a strict decoder of
//! server frames (never masked), and the upgrade with its `Sec-WebSocket-Accept` check.

use super::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use sha1::{Digest, Sha1};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

pub static COUNTER: AtomicU64 = AtomicU64::new(1);

pub fn next_n() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

pub fn fresh_key() -> String {
    let n = next_n() ^ (std::process::id() as u64) << 32;
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&n.to_be_bytes());
    raw[8..].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    STANDARD.encode(raw)
}

pub fn accept_for(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    STANDARD.encode(h.finalize())
}

/// A masked client frame.
pub fn cframe(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let n = next_n() as u32;
    let k = (n.wrapping_mul(0x9E37_79B1) | 0x0101_0101).to_be_bytes();
    let mut out = vec![(if fin { 0x80 } else { 0 }) | (opcode & 0xF)];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&k);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
    out
}

pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

pub fn read_frame(s: &mut TcpStream) -> Option<Frame> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    assert_eq!(h[1] & 0x80, 0, "server frames must not be masked");
    let mut len = (h[1] & 0x7F) as u64;
    if len == 126 {
        let mut e = [0u8; 2];
        s.read_exact(&mut e).expect("16-bit length");
        len = u16::from_be_bytes(e) as u64;
    } else if len == 127 {
        let mut e = [0u8; 8];
        s.read_exact(&mut e).expect("64-bit length");
        len = u64::from_be_bytes(e);
        assert!(len < 1 << 30, "absurd frame length {len}");
    }
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).expect("frame payload");
    Some(Frame { fin: h[0] & 0x80 != 0, opcode: h[0] & 0xF, payload })
}

/// A message as the client sees it.
#[derive(Debug)]
pub enum Msg {
    Text(String),
    #[allow(dead_code)]
    Binary(Vec<u8>),
    Close(Vec<u8>),
}

pub struct Ws {
    pub s: TcpStream,
    pub partial: Option<(u8, Vec<u8>)>,
}

pub fn upgrade_request(path: &str, key: &str, extra: &[&str]) -> String {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
    );
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

/// Upgrades `path`; anything but a 101 is returned as the refusal (with its body).
pub fn try_ws(server: &Server, path: &str, extra: &[&str]) -> Result<Ws, Response> {
    let key = fresh_key();
    let mut s = server.connect();
    s.write_all(upgrade_request(path, &key, extra).as_bytes()).unwrap();
    let (status, headers) = read_head(&mut s).expect("upgrade answer");
    if status != 101 {
        return Err(refusal(&mut s, status, headers));
    }
    let accept = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-accept")).map(|(_, v)| v.clone());
    assert_eq!(accept.as_deref(), Some(accept_for(&key).as_str()), "{headers:?}");
    Ok(Ws { s, partial: None })
}

pub fn ws_with(server: &Server, path: &str, extra: &[&str]) -> Ws {
    try_ws(server, path, extra).unwrap_or_else(|r| panic!("upgrade of {path} refused: {} {}", r.status, r.text()))
}

impl Ws {
    pub fn json(&mut self, v: &Value) {
        let f = cframe(true, OP_TEXT, v.to_string().as_bytes());
        self.s.write_all(&f).expect("write frame");
    }

    /// The next message (server pings are answered, fragments joined).
    pub fn next_msg(&mut self) -> Msg {
        loop {
            let f = read_frame(&mut self.s).expect("the connection ended (or stayed silent) before a message");
            match f.opcode {
                OP_PING => {
                    let pong = cframe(true, OP_PONG, &f.payload);
                    self.s.write_all(&pong).expect("write pong");
                }
                OP_PONG => {}
                OP_CLOSE => return Msg::Close(f.payload),
                OP_TEXT | OP_BINARY | OP_CONT => {
                    let (op, mut data) = match self.partial.take() {
                        Some(p) => {
                            assert_eq!(f.opcode, OP_CONT, "new message inside a fragmented one");
                            p
                        }
                        None => {
                            assert_ne!(f.opcode, OP_CONT, "continuation without a message");
                            (f.opcode, Vec::new())
                        }
                    };
                    data.extend_from_slice(&f.payload);
                    if !f.fin {
                        self.partial = Some((op, data));
                        continue;
                    }
                    return if op == OP_TEXT {
                        Msg::Text(String::from_utf8(data).expect("server text must be UTF-8"))
                    } else {
                        Msg::Binary(data)
                    };
                }
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    pub fn next_text(&mut self) -> String {
        match self.next_msg() {
            Msg::Text(t) => t,
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    pub fn next_json(&mut self) -> Value {
        let t = self.next_text();
        serde_json::from_str(&t).unwrap_or_else(|e| panic!("server text is not JSON ({e}): {t:?}"))
    }

    pub fn call(&mut self, v: Value) -> Value {
        self.json(&v);
        self.next_json()
    }
}

/// The reply to `req` is the `event` reply with errors at exactly `paths`, every input key echoed.
pub fn assert_errors(v: &Value, req: &Value, event: &str, paths: &[&str]) {
    assert_eq!(v["event"], event, "reply to {req}: {v}");
    let errors = v["errors"].as_array().unwrap_or_else(|| panic!("reply to {req} has no errors array: {v}"));
    let got: Vec<&str> = errors.iter().map(|e| e["path"].as_str().unwrap_or("<none>")).collect();
    assert_eq!(got, paths, "error paths for {req}: {v}");
    for e in errors {
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "error without a message: {v}");
    }
    for (k, val) in req.as_object().unwrap() {
        assert_eq!(&v[k], val, "input key {k:?} of {req} must be echoed: {v}");
    }
}

//! The WebSocket client side: the upgrade request, masked client frames, and a decoder of
//! the server's (unmasked) frames that reassembles fragments.

/// The upgrade request for `path`.
pub fn upgrade_request(path: &str, host: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: aGVyYWxkLWxvYWR0ZXN0IQ==\r\n\r\n"
    )
}

/// A masked client frame.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![0x80 | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// What the server sent.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    Text(String),
    Ping(Vec<u8>),
    Close,
}

/// Decodes server frames from a buffer, keeping what is incomplete.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
    message: Vec<u8>,
}

impl Decoder {
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Incoming>) {
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        loop {
            let b = &self.buf[at..];
            if b.len() < 2 {
                break;
            }
            let (fin, opcode) = (b[0] & 0x80 != 0, b[0] & 0x0f);
            let (len, head) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 if b.len() >= 10 => {
                    let mut l = [0u8; 8];
                    l.copy_from_slice(&b[2..10]);
                    (u64::from_be_bytes(l) as usize, 10)
                }
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if b.len() < head + len {
                break;
            }
            let payload = &b[head..head + len];
            match opcode {
                0x0..=0x2 => {
                    self.message.extend_from_slice(payload);
                    if fin {
                        let m = std::mem::take(&mut self.message);
                        out.push(Incoming::Text(String::from_utf8_lossy(&m).into_owned()));
                    }
                }
                0x9 => out.push(Incoming::Ping(payload.to_vec())),
                0x8 => out.push(Incoming::Close),
                _ => {}
            }
            at += head + len;
        }
        self.buf.drain(..at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_server_frames_in_pieces() {
        let mut wire = vec![0x01, 3, b'a', b'b', b'c', 0x89, 1, b'p', 0x80, 2, b'd', b'e'];
        wire.extend_from_slice(&[0x81, 126, 0, 200]);
        wire.extend(std::iter::repeat_n(b'z', 200));
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for piece in wire.chunks(5) {
            d.feed(piece, &mut out);
        }
        assert_eq!(out[0], Incoming::Ping(b"p".to_vec()));
        assert_eq!(out[1], Incoming::Text("abcde".into()));
        assert_eq!(out[2], Incoming::Text("z".repeat(200)));
    }
}

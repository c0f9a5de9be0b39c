//! Frames: the header codec (7/16/64-bit lengths, mask), masking as a word-at-a-time loop,
//! and server frames, which are unmasked — so one encoded frame serves every subscriber.

use bytes::{BufMut, Bytes, BytesMut};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    pub fn from_u8(op: u8) -> Option<Opcode> {
        Some(match op {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    pub fn as_u8(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    /// RSV1–3, as the top bits of the first byte (`0` unless an extension is negotiated).
    pub rsv: u8,
    /// The raw opcode (reserved values included, for the reader to refuse).
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub len: u64,
    /// Bytes the header took.
    pub head_len: usize,
}

/// Parses a frame header from the start of `buf`; `None` until it is complete.
/// A 64-bit length with its top bit set is refused (`Err`), per §5.2.
pub fn parse_head(buf: &[u8]) -> Result<Option<FrameHead>, &'static str> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(b);
            if len >> 63 != 0 {
                return Err("64-bit frame length with the top bit set");
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    let mask = if masked {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        let m = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        Some(m)
    } else {
        None
    };
    Ok(Some(FrameHead { fin: b0 & 0x80 != 0, rsv: b0 & 0x70, opcode: b0 & 0x0f, mask, len, head_len: at }))
}

/// XORs `data` with `mask`, where `data` starts `offset` bytes into the payload.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut m = [0u8; 4];
    for (i, b) in m.iter_mut().enumerate() {
        *b = mask[(offset + i) % 4];
    }
    let word = u32::from_ne_bytes(m);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i];
    }
}

/// Writes the header of an unmasked, final frame of `len` bytes.
pub fn put_head(out: &mut BytesMut, opcode: Opcode, len: usize) {
    out.put_u8(0x80 | opcode.as_u8());
    if len < 126 {
        out.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        out.put_u8(126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
}

/// One unmasked, final server frame.
pub fn encode_frame(opcode: Opcode, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    put_head(&mut out, opcode, payload.len());
    out.put_slice(payload);
    out.freeze()
}

/// A close frame with `code` and `reason`.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut p = Vec::with_capacity(2 + reason.len());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(reason.as_bytes());
    encode_frame(Opcode::Close, &p)
}

/// A client frame: masked, as a browser would send it (for tests and tools that play the
/// client).
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
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
    let mut p = payload.to_vec();
    apply_mask(&mut p, mask, 0);
    out.extend_from_slice(&p);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip_in_all_three_sizes() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 200_000] {
            let payload = vec![b'x'; len];
            let raw = client_frame(true, 1, &payload, [1, 2, 3, 4]);
            let h = parse_head(&raw).unwrap().unwrap();
            assert_eq!(h.len, len as u64);
            assert_eq!(h.head_len, raw.len() - len);
            assert!(h.fin && h.opcode == 1 && h.mask == Some([1, 2, 3, 4]));
            let mut body = raw[h.head_len..].to_vec();
            apply_mask(&mut body, [1, 2, 3, 4], 0);
            assert_eq!(body, payload);
            let server = encode_frame(Opcode::Text, &payload);
            let h = parse_head(&server).unwrap().unwrap();
            assert_eq!((h.len, h.mask), (len as u64, None));
            assert_eq!(&server[h.head_len..], &payload[..]);
        }
    }

    #[test]
    fn partial_heads_need_more() {
        let raw = client_frame(true, 2, &[0u8; 70000], [9, 9, 9, 9]);
        for i in 0..14 {
            assert_eq!(parse_head(&raw[..i]).unwrap(), None, "at {i}");
        }
        assert!(parse_head(&raw[..14]).unwrap().is_some());
    }

    #[test]
    fn masking_at_any_offset_matches_bytewise() {
        let mask = [0xde, 0xad, 0xbe, 0xef];
        let data: Vec<u8> = (0..37).collect();
        for split in 0..data.len() {
            let mut a = data.clone();
            apply_mask(&mut a[..split], mask, 0);
            apply_mask(&mut a[split..], mask, split);
            let b: Vec<u8> = data.iter().enumerate().map(|(i, x)| x ^ mask[i % 4]).collect();
            assert_eq!(a, b, "split {split}");
        }
    }

    #[test]
    fn the_top_length_bit_is_refused() {
        let mut raw = vec![0x82, 0x80 | 127];
        raw.extend_from_slice(&(1u64 << 63).to_be_bytes());
        raw.extend_from_slice(&[0, 0, 0, 0]);
        assert!(parse_head(&raw).is_err());
    }
}

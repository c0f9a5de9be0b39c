//! A WHATWG event-stream parser (lines end in CRLF, LF or CR; `data:` lines join with LF;
//! `id:` sets the last event id), fed arbitrary byte pieces.

#[derive(Debug, Default)]
pub struct SseParser {
    /// The unfinished line carried over from the previous piece.
    line: Vec<u8>,
    /// The previous piece ended in CR: a following LF belongs to it.
    after_cr: bool,
    /// The event's data so far (reused from event to event), and whether it has any field.
    data: Vec<u8>,
    has_data: bool,
    /// The `id:` last seen (when `has_id`); it becomes the last event id only when its event
    /// is dispatched (WHATWG), so a connection cut in the middle of an event resumes before
    /// it. Reused from event to event.
    id_buffer: Vec<u8>,
    has_id: bool,
    last_id: Option<Vec<u8>>,
}

impl SseParser {
    /// A parser for a stream that resumes after `last_id`.
    pub fn resuming(last_id: Option<String>) -> SseParser {
        SseParser { last_id: last_id.map(String::into_bytes), ..SseParser::default() }
    }

    /// The id to resume from: the last dispatched event's.
    pub fn last_id(&self) -> Option<String> {
        self.last_id.as_ref().map(|id| String::from_utf8_lossy(id).into_owned())
    }

    /// Feeds bytes; calls `on_event(data)` for every dispatched event. Lines are found with
    /// `memchr` and fields compared as bytes (no UTF-8 pass): the harness must not be what
    /// limits a run.
    pub fn feed(&mut self, mut bytes: &[u8], mut on_event: impl FnMut(&[u8])) {
        if std::mem::take(&mut self.after_cr) && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        while let Some(i) = memchr::memchr2(b'\n', b'\r', bytes) {
            if self.line.is_empty() {
                self.line_done(&bytes[..i], &mut on_event);
            } else {
                let mut carried = std::mem::take(&mut self.line);
                carried.extend_from_slice(&bytes[..i]);
                self.line_done(&carried, &mut on_event);
                carried.clear();
                self.line = carried;
            }
            let cr = bytes[i] == b'\r';
            bytes = &bytes[i + 1..];
            if cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
        }
        self.line.extend_from_slice(bytes);
    }

    fn line_done(&mut self, line: &[u8], on_event: &mut impl FnMut(&[u8])) {
        if line.is_empty() {
            if self.has_id {
                match &mut self.last_id {
                    Some(last) => last.clone_from(&self.id_buffer),
                    None => self.last_id = Some(self.id_buffer.clone()),
                }
            }
            if std::mem::take(&mut self.has_data) {
                self.data.pop();
                on_event(&self.data);
                self.data.clear();
            }
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => (&line[..i], line[i + 1..].strip_prefix(b" ").unwrap_or(&line[i + 1..])),
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                self.has_data = true;
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"id" => {
                self.has_id = true;
                self.id_buffer.clear();
                self.id_buffer.extend_from_slice(value);
            }
            _ => {}
        }
    }
}

/// A chunked transfer-coding decoder, fed arbitrary pieces.
#[derive(Debug, Default)]
pub struct Dechunk {
    state: u8,
    size: usize,
    left: usize,
    pub done: bool,
}

impl Dechunk {
    /// Appends the payload bytes found in `input` to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while i < input.len() && !self.done {
            match self.state {
                // size digits
                0 => {
                    let b = input[i];
                    i += 1;
                    match (b as char).to_digit(16) {
                        Some(d) => self.size = self.size * 16 + d as usize,
                        None if b == b'\n' => {
                            if self.size == 0 {
                                self.done = true;
                            } else {
                                self.left = self.size;
                                self.state = 1;
                            }
                        }
                        None => {}
                    }
                }
                // data
                1 => {
                    let n = self.left.min(input.len() - i);
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    self.left -= n;
                    if self.left == 0 {
                        self.state = 2;
                    }
                }
                // CRLF after data
                _ => {
                    if input[i] == b'\n' {
                        self.state = 0;
                        self.size = 0;
                    }
                    i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_across_pieces_and_line_endings() {
        let stream = b"retry: 3000\n\nid: 1\r\ndata: a\rdata: b\n\n:hb\n\nid: 2\ndata: c\r\n\r\n";
        for size in 1..stream.len() {
            let mut p = SseParser::default();
            let mut got = Vec::new();
            for piece in stream.chunks(size) {
                p.feed(piece, |d| got.push(String::from_utf8_lossy(d).into_owned()));
            }
            assert_eq!(got, ["a\nb", "c"], "pieces of {size}");
            assert_eq!(p.last_id().as_deref(), Some("2"));
        }
    }

    #[test]
    fn the_last_id_moves_only_when_its_event_is_complete() {
        let mut p = SseParser::default();
        let mut got = Vec::new();
        p.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b\n", |d| got.push(String::from_utf8_lossy(d).into_owned()));
        // Cut here: event 2 never arrived whole, so a resume must ask for what follows 1.
        assert_eq!(got, ["a"]);
        assert_eq!(p.last_id().as_deref(), Some("1"));
        p.feed(b"\n", |d| got.push(String::from_utf8_lossy(d).into_owned()));
        assert_eq!(p.last_id().as_deref(), Some("2"));
    }

    #[test]
    fn dechunking() {
        let mut d = Dechunk::default();
        let mut out = Vec::new();
        for piece in b"5\r\nhello\r\nb\r\n world here\r\n0\r\n\r\n".chunks(4) {
            d.feed(piece, &mut out);
        }
        assert_eq!(out, b"hello world here");
        assert!(d.done);
    }
}

//! A WHATWG event-stream parser (lines end in CRLF, LF or CR; `data:` lines join with LF;
//! `id:` sets the last event id), fed arbitrary byte pieces.

#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous piece ended in CR: a following LF belongs to it.
    after_cr: bool,
    data: Option<String>,
    pub last_id: Option<String>,
}

impl SseParser {
    /// Feeds bytes; calls `on_event(data)` for every dispatched event.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(&str)) {
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.line(&line, &mut on_event);
                }
                _ => self.line.push(b),
            }
        }
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(&str)) {
        if line.is_empty() {
            if let Some(mut d) = self.data.take() {
                d.pop();
                on_event(&d);
            }
            return;
        }
        if line[0] == b':' {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = text.split_once(':').map_or((&*text, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
        match field {
            "data" => {
                let d = self.data.get_or_insert_with(String::new);
                d.push_str(value);
                d.push('\n');
            }
            "id" => self.last_id = Some(value.to_string()),
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
        let mut p = SseParser::default();
        let mut got = Vec::new();
        let stream = b"retry: 3000\n\nid: 1\r\ndata: a\rdata: b\n\n:hb\n\nid: 2\ndata: c\r\n\r\n";
        for piece in stream.chunks(3) {
            p.feed(piece, |d| got.push(d.to_string()));
        }
        assert_eq!(got, ["a\nb", "c"]);
        assert_eq!(p.last_id.as_deref(), Some("2"));
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

//! A connection's queued output, and the one place bytes hit a socket.
//!
//! Frames are queued as shared `Bytes` (no copy per subscriber) and flushed together with one
//! vectored, non-blocking `sendmsg` (a lone frame with a plain `send`): coalescing every frame
//! queued for a connection into one system call is what lifts delivery past the per-write
//! cost of the kernel.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

use bytes::{Buf, Bytes};

use crate::sys;

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued was written.
    All,
    /// The socket buffer is full; wait for writability and flush again.
    Blocked,
}

#[derive(Debug, Default)]
pub struct Outbox {
    /// The oldest queued piece. Most flushes write one frame, which then needs no
    /// allocation; only what queues up behind it goes to `rest`.
    first: Option<Bytes>,
    rest: VecDeque<Bytes>,
    /// Bytes queued and not yet written. 32 bits: the cap is at most 1 GiB
    /// (`config::MAX_PENDING_LIMIT`) and nothing is queued past it but one reply.
    queued: u32,
    /// Queued bytes that do not count against the cap: a resume's replay, which shares
    /// the history's buffers rather than adding its own.
    allowance: u32,
    /// Part of `first` has been written: the peer has seen its beginning, so it must be
    /// sent whole or the connection closed.
    started: bool,
}

impl Outbox {
    /// Queues live output (counted against the cap).
    pub fn push(&mut self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        self.queued = self.queued.saturating_add(len32(&b));
        if self.first.is_none() {
            self.first = Some(b);
        } else {
            self.rest.push_back(b);
        }
    }

    /// Queues a replayed frame: its bytes are already held by history.
    pub fn push_replay(&mut self, b: Bytes) {
        self.allowance = self.allowance.saturating_add(len32(&b));
        self.push(b);
    }

    /// Drops everything queued that the peer has not begun to receive, and queues `last`
    /// after what is left (a message that must not be cut in two): how a connection that
    /// fell behind is given a last word without a backlog.
    pub fn replace_with(&mut self, last: Bytes) {
        let started = self.first.take().filter(|_| self.started);
        self.clear();
        if let Some(first) = started {
            self.started = true;
            self.push(first);
        }
        self.push(last);
    }

    /// Whether the counted output exceeds `cap`.
    pub fn over(&self, cap: usize) -> bool {
        self.queued as usize > cap.saturating_add(self.allowance as usize)
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub fn queued(&self) -> usize {
        self.queued as usize
    }

    /// Drops everything queued (the connection is going away).
    pub fn clear(&mut self) {
        self.first = None;
        self.rest = VecDeque::new();
        self.queued = 0;
        self.allowance = 0;
        self.started = false;
    }

    /// Writes as much as the socket takes now, in vectored writes of up to `IOV_MAX` pieces.
    /// Returns how many bytes went out and whether everything did.
    pub fn flush(&mut self, fd: RawFd) -> io::Result<(usize, Flushed)> {
        let mut total = 0;
        while let Some(first) = &self.first {
            let sent = if self.rest.is_empty() {
                sys::send(fd, first)
            } else {
                sys::send_vectored(fd, std::iter::once(first).chain(self.rest.iter()))
            };
            let n = match sent {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((total, Flushed::Blocked)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            total += n;
            self.advance(n);
        }
        // An empty queue gives back its memory: an idle stream holds no buffer. (Cheap next
        // to the system call that just emptied it, and only when more than one piece queued.)
        if self.rest.capacity() > 0 {
            self.rest = VecDeque::new();
        }
        Ok((total, Flushed::All))
    }

    fn advance(&mut self, mut n: usize) {
        self.queued = self.queued.saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
        self.allowance = self.allowance.min(self.queued);
        while n > 0 {
            let Some(front) = self.first.as_mut() else { break };
            if front.len() <= n {
                n -= front.len();
                self.first = self.rest.pop_front();
                self.started = false;
            } else {
                front.advance(n);
                self.started = true;
                n = 0;
            }
        }
    }
}

fn len32(b: &Bytes) -> u32 {
    u32::try_from(b.len()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn flushes_everything_in_order_and_tracks_the_cap() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut o = Outbox::default();
        o.push(Bytes::from_static(b"hello "));
        o.push_replay(Bytes::from_static(b"big replay "));
        o.push(Bytes::from_static(b"world"));
        assert!(!o.over(11));
        assert!(o.over(10));
        let (n, f) = o.flush(a.as_raw_fd()).unwrap();
        assert_eq!((n, f), (22, Flushed::All));
        assert!(o.is_empty() && !o.over(0));
        let mut got = vec![0u8; 22];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello big replay world");
    }

    #[test]
    fn a_full_socket_blocks_and_keeps_the_rest() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut o = Outbox::default();
        let chunk = Bytes::from(vec![7u8; 64 * 1024]);
        for _ in 0..64 {
            o.push(chunk.clone());
        }
        let (first, f) = o.flush(a.as_raw_fd()).unwrap();
        assert_eq!(f, Flushed::Blocked);
        assert_eq!(o.queued(), 64 * 64 * 1024 - first);
        let mut sink = vec![0u8; first];
        b.read_exact(&mut sink).unwrap();
        let mut total = first;
        while !o.is_empty() {
            let (n, _) = o.flush(a.as_raw_fd()).unwrap();
            total += n;
            let mut sink = vec![0u8; n];
            b.read_exact(&mut sink).unwrap();
        }
        assert_eq!(total, 64 * 64 * 1024);
    }

    #[test]
    fn a_last_word_keeps_only_the_frame_begun() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut o = Outbox::default();
        o.push(Bytes::from_static(b"queued, not begun"));
        o.replace_with(Bytes::from_static(b"bye"));
        assert_eq!(o.queued(), 3, "nothing begun: only the last word is left");
        let big = Bytes::from(vec![1u8; 1 << 20]);
        let mut o = Outbox::default();
        o.push(big.clone());
        o.push(big.clone());
        let (sent, f) = o.flush(a.as_raw_fd()).unwrap();
        assert_eq!(f, Flushed::Blocked);
        assert!(sent < big.len(), "the first frame is begun, not done");
        o.replace_with(Bytes::from_static(b"bye"));
        assert_eq!(o.queued(), big.len() - sent + 3, "the rest of the begun frame, then the last word");
        let mut got = vec![0u8; sent];
        b.read_exact(&mut got).unwrap();
        std::thread::spawn(move || {
            let mut o = o;
            while !o.is_empty() {
                let _ = o.flush(a.as_raw_fd());
                std::thread::yield_now();
            }
        });
        let mut rest = vec![0u8; big.len() - sent + 3];
        b.read_exact(&mut rest).unwrap();
        assert!(rest.ends_with(b"\x01bye"));
    }
}

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
    /// Bytes queued and not yet written.
    queued: usize,
    /// Queued bytes that do not count against the cap: a resume's replay, which shares
    /// the history's buffers rather than adding its own.
    allowance: usize,
}

impl Outbox {
    /// Queues live output (counted against the cap).
    pub fn push(&mut self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        self.queued += b.len();
        if self.first.is_none() {
            self.first = Some(b);
        } else {
            self.rest.push_back(b);
        }
    }

    /// Queues a replayed frame: its bytes are already held by history.
    pub fn push_replay(&mut self, b: Bytes) {
        self.allowance += b.len();
        self.push(b);
    }

    /// Whether the counted output exceeds `cap`.
    pub fn over(&self, cap: usize) -> bool {
        self.queued > cap.saturating_add(self.allowance)
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Drops everything queued (the connection is going away).
    pub fn clear(&mut self) {
        self.first = None;
        self.rest = VecDeque::new();
        self.queued = 0;
        self.allowance = 0;
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
        self.queued -= n;
        self.allowance = self.allowance.min(self.queued);
        while n > 0 {
            let Some(front) = self.first.as_mut() else { break };
            if front.len() <= n {
                n -= front.len();
                self.first = self.rest.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
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
}

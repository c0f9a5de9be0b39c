//! How a connection ends cleanly: what is queued goes out under a deadline, then a
//! lingering close (half-close, drain what the peer still sends) so the peer sees a FIN and
//! everything before it, never a reset.

use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use monoio::net::TcpStream;
use monoio::time::{Instant, timeout_at};

use crate::metrics::Transport;
use crate::shard::conn::{ConnKey, Phase};
use crate::shard::state::ShardRef;
use crate::sys;

/// Most bytes read and dropped from one parked socket per event (streams take no input).
const DRAIN_PER_EVENT: usize = 64 * 1024;

/// How long a closing stream may take to flush what is queued.
const CLOSE_FLUSH: Duration = Duration::from_secs(3);

/// Ends a stream that was parked and is closing (the server stopping, an admin pause): the
/// flush and the lingering close, then the connection is gone.
pub async fn end(shard: ShardRef, key: ConnKey, stream: TcpStream) {
    close(&shard, key, &stream).await;
    shard.borrow_mut().drop_conn(key, Transport::Sse);
}

/// Ends the stream cleanly: flush what is queued (the stream's end included) within a
/// deadline, then half-close and drain until the peer closes too, so the close is a FIN and
/// never a reset. A peer that keeps sending does not extend the deadline.
pub async fn close(shard: &ShardRef, key: ConnKey, stream: &TcpStream) {
    let fd = stream.as_raw_fd();
    let deadline = Instant::now() + CLOSE_FLUSH;
    let mut readable = pin!(stream.readable(false));
    loop {
        let blocked = {
            let mut s = shard.borrow_mut();
            let Some(c) = s.conn(key) else { return };
            c.unblock_writes();
            s.flush(key);
            let Some(c) = s.conn(key) else { return };
            if c.phase() == Phase::Closed {
                return;
            }
            if c.outbox.is_empty() {
                break;
            }
            c.write_blocked()
        };
        if Instant::now() >= deadline {
            return;
        }
        if !blocked {
            continue;
        }
        let mut writable = pin!(stream.writable(false));
        let ready = poll_fn(|cx| {
            if let Poll::Ready(r) = readable.as_mut().poll(cx) {
                return Poll::Ready(Wake::Peer(r.is_ok() && peer_still_there(fd)));
            }
            writable.as_mut().poll(cx).map(|r| Wake::Writable(r.is_ok()))
        });
        match timeout_at(deadline, ready).await {
            Ok(Wake::Peer(true)) => readable.set(stream.readable(false)),
            Ok(Wake::Writable(true)) => {}
            _ => return,
        }
    }
    linger(stream).await;
}

/// What a closing stream woke up for: the peer sent something (`true`: and is still there),
/// or the socket takes bytes again (`true`: without error).
enum Wake {
    Peer(bool),
    Writable(bool),
}

/// Half-closes and drains what the peer still sends, bounded in bytes and time.
pub async fn linger(stream: &TcpStream) {
    let fd = stream.as_raw_fd();
    sys::shutdown_write(fd);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut drained = 0usize;
    let mut scratch = [0u8; 4096];
    while drained < 256 * 1024 {
        match sys::recv_nonblocking(fd, &mut scratch) {
            Ok(0) => return,
            Ok(n) => drained += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {
                match timeout_at(deadline, stream.readable(false)).await {
                    Ok(Ok(())) => {}
                    _ => return,
                }
            }
            Err(_) => return,
        }
    }
}

/// Streams take no input: reads only tell whether the peer left; anything sent is dropped.
pub fn peer_still_there(fd: RawFd) -> bool {
    let mut scratch = [0u8; 4096];
    let mut drained = 0;
    while drained < DRAIN_PER_EVENT {
        match sys::recv_nonblocking(fd, &mut scratch) {
            Ok(0) => return false,
            Ok(n) => drained += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return e.kind() == io::ErrorKind::WouldBlock,
        }
    }
    true
}

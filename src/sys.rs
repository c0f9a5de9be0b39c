//! The few system calls herald makes directly, and the only `unsafe` code in the crate.
//!
//! Writes bypass monoio's rent-style operations on purpose: a non-blocking `sendmsg`
//! straight from the connection's queued `Bytes` (no copy, no buffer moved into an
//! operation) lets the fanout loop flush every queued frame of a connection with one
//! vectored write, and lets a stream connection keep its read-readiness wait armed
//! while others write to it. Only when the socket buffer is full does a connection wait
//! for writability through the runtime.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

use bytes::Bytes;

/// Most iovecs handed to one `sendmsg` (Linux's `IOV_MAX`).
pub const MAX_IOVECS: usize = 1024;

/// Writes as much of `bufs` as the socket takes right now, without blocking.
///
/// Returns the number of bytes written; `Err(WouldBlock)` when nothing could be written.
pub fn send_vectored(fd: RawFd, bufs: &[Bytes]) -> io::Result<usize> {
    let n = bufs.len().min(MAX_IOVECS);
    let mut iov: [libc::iovec; 64] = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 64];
    let mut heap: Vec<libc::iovec>;
    let iovs: &mut [libc::iovec] = if n <= iov.len() {
        &mut iov[..n]
    } else {
        heap = Vec::with_capacity(n);
        heap.resize(n, libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 });
        &mut heap[..]
    };
    for (slot, b) in iovs.iter_mut().zip(bufs) {
        slot.iov_base = b.as_ptr() as *mut libc::c_void;
        slot.iov_len = b.len();
    }
    // SAFETY: `msghdr` is a plain C struct for which all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iovs.as_mut_ptr();
    msg.msg_iovlen = iovs.len() as _;
    // SAFETY: every iovec points into a live `Bytes` borrowed for the duration of the call,
    // the kernel only reads from them, and `msg` outlives the call.
    let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r as usize) }
}

/// Reads what is waiting on the socket into `buf` without blocking.
/// `Ok(0)` means the peer closed its side.
pub fn recv_nonblocking(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, writable region of `buf.len()` bytes for the whole call.
    let r = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), libc::MSG_DONTWAIT) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r as usize) }
}

/// Whether the peer sent something (`Ok(n > 0)`) or closed (`Ok(0)`), without consuming it.
pub fn peek(fd: RawFd) -> io::Result<usize> {
    let mut byte = 0u8;
    // SAFETY: `byte` is a valid, writable one-byte region for the whole call.
    let r = unsafe { libc::recv(fd, (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r as usize) }
}

/// Half-closes the socket: no more writes from us, the peer reads EOF after our data.
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: shutdown on any fd is memory-safe; errors (e.g. already disconnected) are ignored.
    unsafe {
        libc::shutdown(fd, libc::SHUT_WR);
    }
}

/// The soft and hard open-files limits of this process.
pub fn open_files_limit() -> (u64, u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid out-pointer for the duration of the call.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if r != 0 {
        return (1024, 1024);
    }
    (lim.rlim_cur, lim.rlim_max)
}

/// Raises the soft open-files limit to the hard limit; returns the new soft limit.
pub fn raise_open_files_limit() -> u64 {
    let (soft, hard) = open_files_limit();
    if soft < hard {
        let lim = libc::rlimit { rlim_cur: hard as libc::rlim_t, rlim_max: hard as libc::rlim_t };
        // SAFETY: `lim` is a valid pointer for the duration of the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
            return hard;
        }
    }
    soft
}

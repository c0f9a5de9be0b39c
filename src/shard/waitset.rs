//! The epoll set a worker's parked connections wait in (see `shard::parked`): a second
//! reactor beside the runtime's, so that a waiting connection costs no runtime registration.

use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};

use monoio::net::TcpStream;

use crate::shard::conn::ConnKey;
use crate::sys;

/// Interest of a parked socket: the peer sent something or left.
const READ: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
/// …and the socket takes bytes again.
const READ_WRITE: u32 = READ | libc::EPOLLOUT as u32;

/// One worker's epoll set of parked sockets, each registered with its connection's key.
pub struct WaitSet {
    epoll: OwnedFd,
}

impl WaitSet {
    pub fn new() -> io::Result<WaitSet> {
        Ok(WaitSet { epoll: sys::epoll_create()? })
    }

    /// A handle on the epoll set that the runtime can wait on; made on the worker's thread,
    /// inside its runtime.
    pub fn handle(&self) -> io::Result<TcpStream> {
        sys::readiness_handle(self.epoll.as_fd()).and_then(TcpStream::from_std)
    }

    /// Starts watching `fd` for the connection `key`.
    pub fn watch(&self, fd: RawFd, key: ConnKey) -> io::Result<()> {
        sys::epoll_ctl(self.epoll.as_fd(), libc::EPOLL_CTL_ADD, fd, READ, key.to_token())
    }

    /// Watches `fd` for writability too, or no longer.
    pub fn want_write(&self, fd: RawFd, key: ConnKey, write: bool) -> io::Result<()> {
        let interest = if write { READ_WRITE } else { READ };
        sys::epoll_ctl(self.epoll.as_fd(), libc::EPOLL_CTL_MOD, fd, interest, key.to_token())
    }

    pub fn unwatch(&self, fd: RawFd) {
        let _ = sys::epoll_ctl(self.epoll.as_fd(), libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// Up to `max` ready (events, key token) pairs, without waiting.
    pub fn ready(&self, out: &mut Vec<(u32, u64)>, max: usize) -> io::Result<()> {
        sys::epoll_ready(self.epoll.as_fd(), out, max)
    }
}

//! The few system calls herald makes directly, and the only `unsafe` code in the crate.
//!
//! Writes bypass monoio's rent-style operations on purpose: a non-blocking `sendmsg`
//! straight from the connection's queued `Bytes` (no copy, no buffer moved into an
//! operation) lets the fanout loop flush every queued frame of a connection with one
//! vectored write, whatever else waits on the connection. Parked streams (see
//! `shard::parked`) are watched through an epoll set of the worker's own rather than one
//! runtime wait each.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use bytes::Bytes;

/// Most iovecs handed to one `sendmsg` (Linux's `IOV_MAX`).
pub const MAX_IOVECS: usize = 1024;

/// Writes as much of `bufs` (up to `MAX_IOVECS` of them) as the socket takes right now,
/// without blocking.
///
/// Returns the number of bytes written; `Err(WouldBlock)` when nothing could be written.
pub fn send_vectored<'a>(fd: RawFd, bufs: impl Iterator<Item = &'a Bytes>) -> io::Result<usize> {
    const EMPTY: libc::iovec = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
    let mut stack = [EMPTY; 64];
    let mut heap: Vec<libc::iovec> = Vec::new();
    let mut n = 0;
    for b in bufs.take(MAX_IOVECS) {
        let iov = libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() };
        if n < stack.len() {
            stack[n] = iov;
        } else {
            if heap.is_empty() {
                heap.extend_from_slice(&stack);
            }
            heap.push(iov);
        }
        n += 1;
    }
    let iovs: &mut [libc::iovec] = if heap.is_empty() { &mut stack[..n] } else { &mut heap[..] };
    // SAFETY: `msghdr` is a plain C struct for which all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iovs.as_mut_ptr();
    msg.msg_iovlen = iovs.len() as _;
    // SAFETY: every iovec points into a live `Bytes` borrowed for the duration of the call,
    // the kernel only reads from them, and `msg` outlives the call.
    let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r as usize) }
}

/// Writes as much of `buf` as the socket takes right now, without blocking: the common
/// flush of a single frame, without `sendmsg`'s message header and vector to copy in.
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, readable region of `buf.len()` bytes for the whole call and
    // the kernel only reads from it.
    let r = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r as usize) }
}

/// Reads what is waiting on the socket into `buf` without blocking.
/// `Ok(0)` means the peer closed its side.
pub fn recv_nonblocking(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, writable region of `buf.len()` bytes for the whole call.
    let r = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), libc::MSG_DONTWAIT) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r as usize) }
}

/// Appends what is waiting on the socket to `buf`, into its spare capacity, without
/// blocking. `Ok(0)` means the peer closed its side (or `buf` has no spare capacity).
pub fn recv_append(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: `spare` is writable, uninitialised memory of `spare.len()` bytes owned by `buf`
    // for the whole call; the kernel writes at most that many bytes into it.
    let r = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), libc::MSG_DONTWAIT) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = r as usize;
    // SAFETY: the kernel initialised the first `n` bytes of the spare capacity (n ≤ its length).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Accepts a connection waiting on `listener` without blocking; `Ok(None)` when none waits.
/// The accept loops drain their queue with it after each accept the runtime completes.
pub fn accept_now(listener: RawFd) -> io::Result<Option<(std::net::TcpStream, std::net::SocketAddr)>> {
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: null address pointers ask for no peer address; `flags` are valid accept4 flags.
    let fd = unsafe { libc::accept4(listener, std::ptr::null_mut(), std::ptr::null_mut(), flags) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: `fd` was just returned by accept4 and nothing else owns it.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let peer = stream.peer_addr()?;
    Ok(Some((stream, peer)))
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

/// Takes a listening socket out of LISTEN at once: connections not yet accepted are reset
/// and new ones refused, whatever operations still hold the descriptor (an io_uring accept
/// in flight keeps it open after the listener is dropped).
pub fn stop_listening(fd: RawFd) {
    // SAFETY: shutdown takes no pointers; on a descriptor that is not a socket it fails.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// Submits one no-op to `ring` and waits for it: `io_uring_enter` works, and the ring answers.
pub fn uring_nop(ring: &mut io_uring::IoUring) -> io::Result<()> {
    let nop = io_uring::opcode::Nop::new().build().user_data(1);
    // SAFETY: a no-op refers to no memory, so nothing it points at can go away before it ends.
    unsafe { ring.submission().push(&nop) }.map_err(|_| io::Error::from_raw_os_error(libc::EBUSY))?;
    ring.submit_and_wait(1)?;
    match ring.completion().next() {
        Some(done) if done.result() >= 0 => Ok(()),
        Some(done) => Err(io::Error::from_raw_os_error(-done.result())),
        None => Err(io::Error::from_raw_os_error(libc::EIO)),
    }
}

/// Gives the memory the allocator holds free back to the kernel. glibc keeps what is freed in
/// its arenas for reuse and returns only the top of the main heap by itself; `malloc_trim`
/// also releases the free pages inside every arena. It walks the free lists, so it is called
/// after large frees only.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    flush_thread_cache();
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointers; it works on the allocator's own state, under its
    // locks, and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The request sizes glibc's per-thread cache (tcache) has a list for, one per 16-byte step
/// (its defaults), and how many chunks each list keeps.
#[cfg(target_env = "gnu")]
const TCACHE_SIZES: std::ops::RangeInclusive<usize> = 24..=1032;
#[cfg(target_env = "gnu")]
const TCACHE_KEPT: usize = 7;

/// Moves the chunks glibc's per-thread cache holds back into the arena, so that `malloc_trim`
/// can give their pages back. The cache keeps the last few chunks of each small size freed by
/// this thread; after a wave of frees they sit one per page all over the heap, and
/// `malloc_trim` counts them as in use (measured: ~1.3 MB held after 100 000 topics were
/// forgotten). Taking them out, filling the cache with chunks made together, and freeing the
/// taken ones again sends those to the arena, which the cache no longer has room for.
#[cfg(target_env = "gnu")]
fn flush_thread_cache() {
    for size in TCACHE_SIZES.step_by(16) {
        // `Vec::with_capacity` asks the global allocator (malloc) for exactly `size` bytes.
        let held: Vec<Vec<u8>> = (0..TCACHE_KEPT).map(|_| Vec::with_capacity(size)).collect();
        let fresh: Vec<Vec<u8>> = (0..TCACHE_KEPT).map(|_| Vec::with_capacity(size)).collect();
        // Kept opaque so that the compiler cannot pair the allocations with their frees away.
        drop(std::hint::black_box(fresh));
        drop(std::hint::black_box(held));
    }
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

/// Physical memory of the machine, in bytes (0 when it cannot be told).
pub fn physical_memory() -> u64 {
    // SAFETY: `sysconf` takes no pointers.
    let (pages, page) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    let machine = if pages <= 0 || page <= 0 { 0 } else { pages as u64 * page as u64 };
    match memory_limit() {
        Some(limit) if machine == 0 || limit < machine => limit,
        _ => machine,
    }
}

/// The memory limit of this process's control group, where one is set: a container's
/// (`docker run --memory`) or a unit's `MemoryMax=`. The lowest limit from the process's group
/// up to the root of what it sees: `memory.max` (cgroup v2) or `memory.limit_in_bytes` (v1,
/// where "no limit" is a number near 2^63).
fn memory_limit() -> Option<u64> {
    let groups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let lowest = |root: &str, path: &str, file: &str| {
        let root = std::path::Path::new(root);
        let mut dir = root.join(path.trim_start_matches('/'));
        let mut lowest: Option<u64> = None;
        loop {
            // v2's "max" does not parse: no limit at this level.
            let v = std::fs::read_to_string(dir.join(file)).ok().and_then(|v| v.trim().parse::<u64>().ok());
            if let Some(v) = v.filter(|&v| v < 1 << 62) {
                lowest = Some(lowest.map_or(v, |l: u64| l.min(v)));
            }
            if dir == root || !dir.pop() {
                return lowest;
            }
        }
    };
    // Lines are `id:controllers:path`; v2's is `0::path`, v1's memory one names `memory`.
    groups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.is_empty() {
            lowest("/sys/fs/cgroup", path, "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            lowest("/sys/fs/cgroup/memory", path, "memory.limit_in_bytes")
        } else {
            None
        }
    })
}

/// A second descriptor for the same open socket (`dup`, close-on-exec), owned by the caller.
pub fn duplicate(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: `fcntl(F_DUPFD_CLOEXEC)` only creates a descriptor; an invalid `fd` is an error.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `r` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// An epoll instance: the worker's set of parked streams.
pub fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: `epoll_create1` takes no pointers.
    let r = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `r` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// Adds, changes or removes (`libc::EPOLL_CTL_*`) `fd`'s entry in the epoll set `ep`, with
/// `events` and the caller's `token`.
pub fn epoll_ctl(ep: BorrowedFd<'_>, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` is a valid epoll_event for the duration of the call (ignored for DEL).
    let r = unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd, &mut ev) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// The epoll set's ready entries, without waiting: `(events, token)` pairs into `out`.
pub fn epoll_ready(ep: BorrowedFd<'_>, out: &mut Vec<(u32, u64)>, max: usize) -> io::Result<()> {
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 256];
    let max = max.min(evs.len());
    // SAFETY: `evs` has room for `max` entries for the duration of the call.
    let r = unsafe { libc::epoll_wait(ep.as_raw_fd(), evs.as_mut_ptr(), max as libc::c_int, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    out.extend(evs[..r as usize].iter().map(|e| (e.events, e.u64)));
    Ok(())
}

/// A `std` TCP stream over a duplicate of `fd` (an epoll set), only so that the runtime can
/// wait for it to become readable: monoio waits for readiness on its own socket types only.
/// Nothing reads or writes through it.
pub fn readiness_handle(fd: BorrowedFd<'_>) -> io::Result<std::net::TcpStream> {
    duplicate(fd.as_raw_fd()).map(std::net::TcpStream::from)
}

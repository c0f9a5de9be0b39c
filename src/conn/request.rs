//! Reading requests off a socket: heads within their deadline, bodies within their limit,
//! and the lingering close that lets a client read a refusal.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use bytes::Bytes;
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;
use monoio::time::{Instant, timeout_at};

use super::limits::{BodyRoom, too_many_topics};
use crate::api::ctx::Ctx;
use crate::proto::http1::{
    BodyDecoder, BodyError, BodyKind, HeadError, RequestHead, Response, Status, Wire, head::MAX_HEAD_BYTES, parse_head,
    response::CONTINUE,
};
use crate::shard::outbox::{Flushed, Outbox};
use crate::sys;

/// Why no request came.
pub enum ReadError {
    /// The peer closed (or reset) the connection.
    Closed,
    /// The head (or a body read) did not complete in time.
    TimedOut,
    Io,
    /// Refused with this response; the `u8` is the HTTP minor version to answer in.
    Refused(Response, u8),
}

/// The read side of a connection in request/response mode.
pub struct RequestReader {
    buf: Vec<u8>,
    /// How much of `buf` is taken: requests are consumed by moving this mark, and the
    /// buffer is compacted only before it is read into, not once per pipelined request.
    pos: usize,
}

/// What a read asks for at least: most request heads fit in one; bodies grow the buffer.
const READ_CHUNK: usize = 1024;

impl RequestReader {
    pub fn new() -> RequestReader {
        RequestReader { buf: Vec::new(), pos: 0 }
    }

    /// What is buffered and not yet taken.
    fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Moves what is pending to the front, before reading more after it.
    fn compact(&mut self) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// Whether the next request's whole head is already buffered (the client pipelines).
    pub fn holds_next_head(&self) -> bool {
        self.pending().windows(4).any(|w| w == b"\r\n\r\n")
    }

    /// Whether the next request's head is here: buffered already, or in the socket now (read
    /// without waiting). A client that pipelines has its requests taken in together.
    pub fn next_head_ready(&mut self, fd: RawFd) -> bool {
        if self.holds_next_head() {
            return true;
        }
        if self.pending().len() > MAX_HEAD_BYTES {
            return false;
        }
        self.compact();
        self.buf.reserve(READ_CHUNK);
        // An end or an error is found again by the next blocking read.
        matches!(sys::recv_append(fd, &mut self.buf), Ok(n) if n > 0) && self.holds_next_head()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.pending().is_empty()
    }

    /// Gives the buffer's memory back while nothing is buffered (a held poll keeps none).
    pub fn release(&mut self) {
        if self.is_empty() {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }

    async fn fill(&mut self, stream: &mut TcpStream, deadline: Instant) -> Result<(), ReadError> {
        self.compact();
        let mut buf = std::mem::take(&mut self.buf);
        if buf.capacity() - buf.len() < READ_CHUNK / 2 {
            buf.reserve(READ_CHUNK);
        }
        // What is already waiting is taken without a trip through the runtime: under io_uring
        // every read is a submission and a completion a run-queue turn later, and a request
        // is usually there by the time its connection is served.
        match sys::recv_append(stream.as_raw_fd(), &mut buf) {
            Ok(n) => {
                self.buf = buf;
                return if n == 0 { Err(ReadError::Closed) } else { Ok(()) };
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(e) => {
                self.buf = buf;
                return Err(if e.kind() == io::ErrorKind::ConnectionReset { ReadError::Closed } else { ReadError::Io });
            }
        }
        // Read into the spare capacity, after what is already buffered.
        let len = buf.len();
        let (res, buf) = match timeout_at(deadline, stream.read(buf.slice_mut(len..))).await {
            Ok(r) => r,
            Err(_) => return Err(ReadError::TimedOut),
        };
        self.buf = buf.into_inner();
        match res {
            Ok(0) => Err(ReadError::Closed),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Err(ReadError::Closed),
            Err(_) => Err(ReadError::Io),
        }
    }

    /// Reads one request head. The connection may idle for `idle` before the first byte;
    /// from then on the head must complete within `head_timeout`.
    pub async fn read_head(
        &mut self,
        stream: &mut TcpStream,
        idle: Duration,
        head_timeout: Duration,
    ) -> Result<RequestHead, ReadError> {
        let start = Instant::now();
        let mut deadline = if self.is_empty() { start + idle } else { start + head_timeout };
        let mut started = !self.is_empty();
        loop {
            if !self.is_empty() {
                match parse_head(self.pending()) {
                    Ok(Some(head)) => {
                        self.consume(head.len);
                        return Ok(head);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(refusal(e, self.pending())),
                }
            }
            if self.pending().len() > MAX_HEAD_BYTES {
                return Err(refusal(HeadError::TooLarge, self.pending()));
            }
            match self.fill(stream, deadline).await {
                // A head begun and not finished in time is answered (an idle connection that
                // sent nothing is just closed).
                Err(ReadError::TimedOut) if started => {
                    let r = Response::error(Status::RequestTimeout, "the request head did not arrive in time", "/");
                    return Err(ReadError::Refused(r, 1));
                }
                r => r?,
            }
            if !started {
                started = true;
                deadline = deadline.min(Instant::now() + head_timeout);
            }
        }
    }

    /// Reads the body `head` announces into the room held for it: up to its limit, and all of
    /// it before its deadline (a body that trickles in does not keep its buffer for long).
    pub async fn read_body(
        &mut self,
        stream: &mut TcpStream,
        head: &RequestHead,
        room: &BodyRoom,
    ) -> Result<Bytes, ReadError> {
        let mut decoder = match head.body {
            BodyKind::None => return Ok(Bytes::new()),
            BodyKind::Length(n) => BodyDecoder::length(n, room.limit),
            BodyKind::Chunked => BodyDecoder::chunked(room.limit),
        };
        if head.expect_continue && self.is_empty() {
            write_all(stream, Bytes::from_static(CONTINUE), room.deadline).await.map_err(|_| ReadError::Io)?;
        }
        let mut body = Vec::new();
        loop {
            let used = decoder.decode(self.pending(), &mut body).map_err(|e| match e {
                BodyError::TooLarge(n) => ReadError::Refused(
                    Response::error(Status::PayloadTooLarge, &format!("request body larger than {n} bytes"), "/body"),
                    head.minor_version,
                ),
                BodyError::BadChunk(why) => ReadError::Refused(
                    Response::error(Status::BadRequest, &format!("malformed chunked body: {why}"), "/body"),
                    head.minor_version,
                ),
            })?;
            self.consume(used);
            if decoder.is_done() {
                // A large body should not leave a large buffer behind on a keep-alive connection.
                if self.buf.capacity() > 4 * READ_CHUNK && self.pending().len() < READ_CHUNK {
                    self.compact();
                    self.buf.shrink_to(READ_CHUNK);
                }
                return Ok(Bytes::from(body));
            }
            match self.fill(stream, room.deadline).await {
                Err(ReadError::TimedOut) => {
                    return Err(ReadError::Refused(
                        Response::error(Status::RequestTimeout, "the request body did not arrive in time", "/body"),
                        head.minor_version,
                    ));
                }
                r => r?,
            }
        }
    }
}

fn refusal(e: HeadError, buf: &[u8]) -> ReadError {
    tracing::debug!("request refused: {e}; head begins {:?}", String::from_utf8_lossy(&buf[..buf.len().min(200)]));
    let status = match e {
        HeadError::TooLarge | HeadError::TooManyHeaders => Status::HeadersTooLarge,
        _ => Status::BadRequest,
    };
    // Answer in the client's version when the request line got that far.
    let minor =
        if buf.starts_with(b"HTTP/1.0") || buf.windows(10).take(8200).any(|w| w == b" HTTP/1.0\r") { 0 } else { 1 };
    ReadError::Refused(Response::error(status, &e.to_string(), &e.path()), minor)
}

/// Writes all of `data`, waiting for writability when the socket is full, until `deadline`.
pub async fn write_all(stream: &TcpStream, data: Bytes, deadline: Instant) -> io::Result<()> {
    let mut out = Outbox::default();
    out.push(data);
    write_out(stream, &mut out, deadline).await
}

/// Writes everything queued in `out` (vectored), waiting for writability when the socket is
/// full, until `deadline`.
pub async fn write_out(stream: &TcpStream, out: &mut Outbox, deadline: Instant) -> io::Result<()> {
    let fd = stream.as_raw_fd();
    loop {
        match out.flush(fd)? {
            (_, Flushed::All) => return Ok(()),
            (_, Flushed::Blocked) => match timeout_at(deadline, stream.writable(false)).await {
                Ok(r) => r?,
                Err(_) => return Err(io::ErrorKind::TimedOut.into()),
            },
        }
    }
}

/// Answers with `resp` and closes: half-close first, then read and discard a bounded amount
/// for a short while, so the client sees the response rather than a reset.
pub async fn refuse(stream: &TcpStream, resp: Response, minor_version: u8) {
    let bytes = resp.encode(Wire::closing(minor_version));
    if write_all(stream, bytes, Instant::now() + Duration::from_secs(5)).await.is_err() {
        return;
    }
    crate::shard::closing::linger(stream).await;
}

/// Answers a stream or WebSocket whose subscription an owner refused (`Phase::Refused`):
/// nothing of it has gone out (its head waits for the owners), so it gets the 503 instead,
/// and the connection closes.
pub async fn answer_refused(ctx: &Ctx, stream: &TcpStream, minor_version: u8, cors: Vec<(&'static str, String)>) {
    if let Some(c) = ctx.shard.borrow_mut().conn(ctx.key) {
        c.outbox.clear();
    }
    ctx.mesh.metrics.workers[ctx.worker].response(503);
    refuse(stream, too_many_topics().with_headers(cors), minor_version).await;
}

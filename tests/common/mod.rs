//! Shared harness for the black-box tests: starts the real `herald` binary on an ephemeral
//! port and speaks raw HTTP/1.1 to it over `std::net` sockets, as a client would.
//!
//! Every wait here is a condition with a generous deadline, never a fixed sleep, so the
//! tests stay deterministic on a loaded 2-core machine.
#![allow(dead_code)]

pub mod seccomp;
pub mod ws;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The drivers every feature is tested under: io_uring where herald can use it on this host
/// (see `uring_available`), and epoll.
pub fn drivers() -> Vec<&'static str> {
    if uring_available() { vec!["uring", "epoll"] } else { vec!["epoll"] }
}

/// Whether `herald --driver uring` can start here, found out once per test binary.
///
/// Some hosts refuse to create a ring (Docker's default seccomp profile since Engine 25,
/// `kernel.io_uring_disabled`), and herald then refuses `--driver uring` with "io_uring
/// requested but unavailable". There the uring half of every test is skipped, with a note on
/// stderr, so that `cargo test` still checks the epoll half; with `HERALD_REQUIRE_URING=1` (CI
/// sets it) a refused ring fails the tests instead. Any other failure to start panics.
pub fn uring_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let Some(refusal) = probe_uring() else { return true };
        if std::env::var("HERALD_REQUIRE_URING").is_ok_and(|v| v == "1") {
            panic!("HERALD_REQUIRE_URING=1, but herald cannot use io_uring here: {refusal}");
        }
        // Straight to stderr: libtest keeps `eprintln!` output of passing tests to itself.
        let _ = writeln!(
            std::io::stderr(),
            "note: herald cannot use io_uring here ({refusal}); skipping the --driver uring half \
             of these tests (HERALD_REQUIRE_URING=1 makes this a failure)"
        );
        false
    })
}

/// Spawns `cmd` (the herald binary) with `--listen 127.0.0.1:0` plus `args`, its stderr
/// arriving line by line on the receiver.
pub fn spawn_logged(mut cmd: Command, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = cmd
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herald");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Starts herald once with `--driver uring`: `None` when it listens, the refusal line when it
/// exits refusing io_uring.
fn probe_uring() -> Option<String> {
    let (mut child, rx) = spawn_logged(seccomp::herald(), &["--workers", "1", "--driver", "uring"]);
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    let outcome = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("listening on ") => break Ok(None),
            Ok(line) if let Some(at) = line.find("io_uring requested but unavailable") => {
                break Ok(Some(line[at..].to_string()));
            }
            Ok(line) => seen.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break Err("exited"),
            Err(mpsc::RecvTimeoutError::Timeout) => break Err("did not report its address in time"),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    outcome.unwrap_or_else(|why| panic!("herald --driver uring {why}, without saying io_uring was refused: {seen:?}"))
}

/// A running `herald` process on an ephemeral loopback port.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// Everything the server wrote to stderr, line by line, as it arrives.
    pub log: mpsc::Receiver<String>,
    /// What it wrote to stderr before it said where it listens (startup notes and warnings).
    pub startup: Vec<String>,
}

impl Server {
    /// Starts herald with `--listen 127.0.0.1:0` plus `args`, and waits until it listens.
    pub fn start(args: &[&str]) -> Server {
        Server::start_env(args, &[])
    }

    /// `start`, with these environment variables set for the server.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = seccomp::herald();
        cmd.envs(env.iter().copied());
        Server::start_command(cmd, args)
    }

    /// `start`, from a prepared `Command` for the herald binary.
    // The child is killed and waited for by `Drop`, or here before a panic.
    #[allow(clippy::zombie_processes)]
    pub fn start_command(cmd: Command, args: &[&str]) -> Server {
        let (child, rx) = spawn_logged(cmd, args);
        let deadline = Instant::now() + DEADLINE;
        let mut startup = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("herald {args:?} did not report its address"));
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest.split_whitespace().next().expect("address").parse().expect("addr");
                return Server { child, addr, log: rx, startup };
            }
            startup.push(line);
        }
    }

    /// Starts herald with `workers` workers under `driver`, plus `extra` flags.
    pub fn with(driver: &str, workers: usize, extra: &[&str]) -> Server {
        let w = workers.to_string();
        let mut args = vec!["--driver", driver, "--workers", w.as_str()];
        args.extend_from_slice(extra);
        Server::start(&args)
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// A connection whose receive buffer holds about `bytes` (no timeouts set): a client that
    /// stops reading fills it, and then the server's side, quickly.
    pub fn connect_with_recv_buffer(&self, bytes: usize) -> TcpStream {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(bytes).unwrap();
        sock.connect(&self.addr.into()).unwrap();
        sock.into()
    }

    /// Sends SIGTERM and returns at once.
    pub fn signal_term(&self) {
        unsafe_kill(self.child.id(), libc_sigterm());
    }

    /// Sends SIGTERM and waits for the exit status (with a deadline).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe_kill(self.child.id(), libc_sigterm());
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "herald did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.log.recv_timeout(left).unwrap_or_else(|_| panic!("no log line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn libc_sigterm() -> i32 {
    15
}

fn unsafe_kill(pid: u32, sig: i32) {
    // `kill` from the shell keeps the tests free of unsafe code.
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
}

/// Reads one response head (up to the blank line) byte by byte, so nothing after it is consumed.
pub fn read_head(s: &mut TcpStream) -> Option<(u16, Vec<(String, String)>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) | Err(_) => return None,
            Ok(_) => head.push(byte[0]),
        }
    }
    let text = String::from_utf8(head).expect("utf8 head");
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').expect("header colon");
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Some((status, headers))
}

/// Reads one whole response (Content-Length, chunked, or to EOF when neither is given).
pub fn read_response(s: &mut TcpStream) -> Option<Response> {
    let (status, headers) = read_head(s)?;
    let mut resp = Response { status, headers, body: Vec::new() };
    if status == 100 || status == 204 || status == 304 {
        return Some(resp);
    }
    if let Some(len) = resp.header("content-length") {
        let len: usize = len.parse().expect("content-length");
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).ok()?;
        resp.body = body;
    } else if resp.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut reader = ChunkReader::default();
        while let Some(chunk) = reader.next_chunk(s) {
            resp.body.extend_from_slice(&chunk);
        }
    } else {
        s.read_to_end(&mut resp.body).ok()?;
    }
    Some(resp)
}

/// A refused upgrade or stream: the answer with its `Content-Length` body.
pub fn refusal(s: &mut TcpStream, status: u16, headers: Vec<(String, String)>) -> Response {
    let mut resp = Response { status, headers, body: Vec::new() };
    if let Some(len) = resp.header("content-length") {
        let mut body = vec![0u8; len.parse().expect("Content-Length")];
        s.read_exact(&mut body).expect("refusal body");
        resp.body = body;
    }
    resp
}

/// Sends `raw` and reads one response.
pub fn roundtrip(s: &mut TcpStream, raw: &[u8]) -> Response {
    s.write_all(raw).expect("write request");
    read_response(s).expect("a response")
}

/// One request on a fresh connection.
pub fn request(server: &Server, raw: &str) -> Response {
    let mut s = server.connect();
    roundtrip(&mut s, raw.as_bytes())
}

/// `POST /pub/{topic}` with `data`; returns the response.
pub fn publish(server: &Server, topic: &str, data: &str) -> Response {
    let raw = format!("POST /pub/{topic} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{data}", data.len());
    request(server, &raw)
}

/// Publishes and returns the event's cursor, asserting success.
pub fn publish_ok(server: &Server, topic: &str, data: &str) -> String {
    let r = publish(server, topic, data);
    assert_eq!(r.status, 200, "publish failed: {}", r.text());
    r.json()["id"].as_str().expect("id").to_string()
}

/// Decodes a chunked body incrementally from a socket.
#[derive(Default)]
pub struct ChunkReader {
    done: bool,
}

impl ChunkReader {
    /// The next chunk's payload, or `None` after the terminating chunk or on EOF.
    pub fn next_chunk(&mut self, s: &mut TcpStream) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let line = read_line(s)?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            // trailers end with an empty line
            loop {
                let l = read_line(s)?;
                if l.is_empty() {
                    break;
                }
            }
            self.done = true;
            return None;
        }
        let mut buf = vec![0u8; size + 2];
        s.read_exact(&mut buf).ok()?;
        assert_eq!(&buf[size..], b"\r\n", "chunk not followed by CRLF");
        buf.truncate(size);
        Some(buf)
    }
    pub fn finished(&self) -> bool {
        self.done
    }
}

fn read_line(s: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match s.read(&mut byte) {
            Ok(0) | Err(_) => return None,
            Ok(_) => line.push(byte[0]),
        }
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).ok()
}

/// One dispatched Server-Sent Event, or a comment.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
}

/// An SSE client over a raw socket: sends the request, checks the head, then parses
/// the chunked event stream per the WHATWG rules.
pub struct SseClient {
    pub stream: TcpStream,
    pub headers: Vec<(String, String)>,
    chunks: ChunkReader,
    pending: Vec<u8>,
    /// Comment lines seen so far (heartbeats, padding).
    pub comments: usize,
    /// The last `retry:` value seen.
    pub retry: Option<u64>,
    /// Set once the server ended the stream with the terminating chunk.
    pub ended: bool,
    pub last_event_id: Option<String>,
}

impl SseClient {
    /// Opens `GET {path}` with `Accept: text/event-stream` plus `extra_headers` (each "Name: v").
    pub fn open(server: &Server, path: &str, extra_headers: &[&str]) -> SseClient {
        Self::try_open(server, path, extra_headers)
            .unwrap_or_else(|r| panic!("SSE {path} refused: {} {}", r.status, r.text()))
    }

    /// Like `open`, but returns the response when the server answers with anything but 200.
    pub fn try_open(server: &Server, path: &str, extra_headers: &[&str]) -> Result<SseClient, Response> {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n");
        for h in extra_headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        SseClient::open_raw(server, &req)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The next dispatched event (comments and retry-only blocks are counted and skipped).
    /// `None` when the stream ends.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        let mut id = None;
        let mut event = None;
        let mut data: Option<String> = None;
        loop {
            let line = self.next_line()?;
            if line.is_empty() {
                // As a browser: a block's id becomes the last event id even when the block has
                // no data and so dispatches no event.
                if id.is_some() {
                    self.last_event_id = id.clone();
                }
                if let Some(mut d) = data.take() {
                    if d.ends_with('\n') {
                        d.pop();
                    }
                    return Some(SseEvent { id, event, data: d, retry: self.retry });
                }
                id = None;
                event = None;
                continue;
            }
            if line.starts_with(':') {
                self.comments += 1;
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()),
                None => (line.clone(), String::new()),
            };
            match field.as_str() {
                "id" => id = Some(value),
                "event" => event = Some(value),
                "data" => {
                    let d = data.get_or_insert_with(String::new);
                    d.push_str(&value);
                    d.push('\n');
                }
                "retry" => self.retry = value.parse().ok(),
                _ => {}
            }
        }
    }

    /// Collects `n` events, panicking if the stream ends first.
    pub fn take(&mut self, n: usize) -> Vec<SseEvent> {
        (0..n).map(|i| self.next_event().unwrap_or_else(|| panic!("stream ended after {i} of {n} events"))).collect()
    }

    /// Reads until `n` comment lines have been seen in total.
    pub fn wait_comments(&mut self, n: usize) {
        while self.comments < n {
            let line = self.next_line().expect("stream ended while waiting for a comment");
            if line.starts_with(':') {
                self.comments += 1;
            }
        }
    }

    fn next_line(&mut self) -> Option<String> {
        loop {
            // WHATWG: lines end with CRLF, LF or CR.
            if let Some(pos) = self.pending.iter().position(|&b| b == b'\n' || b == b'\r') {
                let mut end = pos + 1;
                if self.pending[pos] == b'\r' {
                    if pos + 1 == self.pending.len() {
                        // need one more byte to know whether this is CRLF
                        if !self.fill() {
                            let line: Vec<u8> = self.pending.drain(..end).collect();
                            return Some(String::from_utf8_lossy(&line[..pos]).into_owned());
                        }
                        continue;
                    }
                    if self.pending[pos + 1] == b'\n' {
                        end += 1;
                    }
                }
                let line: Vec<u8> = self.pending.drain(..end).collect();
                return Some(String::from_utf8_lossy(&line[..pos]).into_owned());
            }
            if !self.fill() {
                return None;
            }
        }
    }

    fn fill(&mut self) -> bool {
        match self.chunks.next_chunk(&mut self.stream) {
            Some(c) => {
                self.pending.extend_from_slice(&c);
                true
            }
            None => {
                self.ended = self.chunks.finished();
                false
            }
        }
    }
}

/// Runs `f` once per driver, each with a fresh server of `workers` workers.
pub fn each_driver(workers: usize, extra: &[&str], f: impl Fn(&Server)) {
    for driver in drivers() {
        let server = Server::with(driver, workers, extra);
        f(&server);
    }
}

/// The sum, over every worker and label, of the samples of `/metrics` whose line starts with
/// `prefix` (a family name and the start of its labels, e.g. `herald_topics{` or
/// `herald_connections{transport="http"`).
pub fn metric(s: &Server, prefix: &str) -> f64 {
    let prefix = if prefix.contains('{') { prefix.to_string() } else { format!("{prefix}{{") };
    let r = request(s, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    r.text().lines().filter(|l| l.starts_with(&prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// `/sub/{topics}` with an optional cursor (as `last_event_id=`) and extra query parameters.
pub fn sub_path(topics: &str, cursor: Option<&str>, extra: &str) -> String {
    let mut q: Vec<String> = Vec::new();
    if let Some(c) = cursor {
        q.push(format!("last_event_id={}", pct(c)));
    }
    if !extra.is_empty() {
        q.push(extra.to_string());
    }
    if q.is_empty() { format!("/sub/{topics}") } else { format!("/sub/{topics}?{}", q.join("&")) }
}

/// The server's resident memory, in KiB.
pub fn rss_kib(s: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).expect("proc status");
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Polls `cond` until it holds or the deadline passes.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---- Helpers added for the http / publish / sse suites ----

/// Asserts `r` has status `status` and the JSON error body
/// `{"error":{"message":"…","path":"…"}}` with both keys non-empty strings.
pub fn assert_json_error(r: &Response, status: u16) {
    assert_eq!(r.status, status, "expected {status}, got {} {:?}", r.status, r.text());
    let ct = r.header("content-type").unwrap_or("").to_ascii_lowercase();
    assert!(ct.starts_with("application/json"), "error {status} should be application/json, Content-Type was {ct:?}");
    let v = r.json();
    let msg = v["error"]["message"].as_str();
    let path = v["error"]["path"].as_str();
    assert!(msg.is_some_and(|m| !m.is_empty()), "error.message missing or empty: {v}");
    assert!(path.is_some_and(|p| !p.is_empty()), "error.path missing or empty: {v}");
}

/// Reads from `s` until the peer closes it (EOF or reset) and returns what arrived first.
/// Panics if it is still open after `within`.
pub fn wait_closed(s: &mut TcpStream, within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "connection still open after {within:?} (read {} bytes: {:?})",
            got.len(),
            String::from_utf8_lossy(&got[..got.len().min(300)])
        );
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return got, // reset: closed as well
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for cursors in queries).
pub fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A keep-alive connection for publishing many events quickly.
pub struct Publisher {
    pub stream: TcpStream,
}

impl Publisher {
    pub fn new(server: &Server) -> Publisher {
        Publisher::at(server.addr)
    }

    /// Connects to `addr` (usable from other threads, where `&Server` is not).
    pub fn at(addr: SocketAddr) -> Publisher {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.set_nodelay(true).unwrap();
        Publisher { stream: s }
    }

    /// `POST /pub/{topic}` (with `?type=` when given); asserts 200 and returns the cursor.
    pub fn publish_typed(&mut self, topic: &str, ty: Option<&str>, data: &str) -> String {
        let query = ty.map(|t| format!("?type={t}")).unwrap_or_default();
        let raw =
            format!("POST /pub/{topic}{query} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{data}", data.len());
        let r = roundtrip(&mut self.stream, raw.as_bytes());
        assert_eq!(r.status, 200, "publish to {topic} failed: {}", r.text());
        r.json()["id"].as_str().expect("id").to_string()
    }

    pub fn publish(&mut self, topic: &str, data: &str) -> String {
        self.publish_typed(topic, None, data)
    }
}

// ---- Helpers added for the auth / seeds suites ----

impl SseClient {
    /// Sends `raw` verbatim (a whole request head, e.g. one without `Accept: text/event-stream`)
    /// and, when the answer is a 200, parses it as an event stream; otherwise returns the
    /// response (with its `Content-Length` body).
    pub fn open_raw(server: &Server, raw: &str) -> Result<SseClient, Response> {
        SseClient::open_on(server.connect(), raw)
    }

    /// Like `open_raw`, on a socket the caller connected (e.g. with a tiny receive buffer).
    pub fn open_on(mut s: TcpStream, raw: &str) -> Result<SseClient, Response> {
        s.write_all(raw.as_bytes()).unwrap();
        let (status, headers) = read_head(&mut s).expect("SSE head");
        if status != 200 {
            return Err(refusal(&mut s, status, headers));
        }
        Ok(SseClient {
            stream: s,
            headers,
            chunks: ChunkReader::default(),
            pending: Vec::new(),
            comments: 0,
            retry: None,
            ended: false,
            last_event_id: None,
        })
    }
}

/// Asserts `r` is the JSON error `status` whose `error.path` is exactly `path`.
pub fn assert_json_error_at(r: &Response, status: u16, path: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: expected {status}, got {} {:?}", r.status, r.text());
    assert_json_error(r, status);
    assert_eq!(r.json()["error"]["path"].as_str(), Some(path), "{what}: error path: {}", r.text());
}

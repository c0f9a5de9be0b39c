//! `herald-load coldstart`: what a restart or a scale-up costs herald.
//!
//! For each driver (`--drivers`), herald is started `--runs` times for each of two figures,
//! and stopped (SIGTERM, waited for) after each run; the drivers take turns run by run:
//! - exec → first `200` from `GET /healthz`: the instant before the spawn, then connections
//!   tried as fast as possible (a refused one is retried after `--pause-us`) until an answer says
//!   200. herald's own log is not looked at for this.
//! - exec → first event: a subscription (SSE) opened as soon as herald accepts, one event
//!   published once its response head is in, and the instant its `data:` line arrives.
//!
//! Then, after every start-up run, the stop, once per driver: herald is started once more
//! (on its own, not timed), `--streams` SSE streams are opened and live
//! (each has its response head, and herald's `/metrics` counts them), and herald gets a
//! SIGTERM. Measured: SIGTERM → the process's exit, its exit status, and how each stream
//! ended. On stop herald writes, per chunked stream, a last chunk `id: <cursor>\n\n` (where
//! the stream stands: its resume point), then the terminating chunk `0\r\n\r\n`, then
//! half-closes (`src/server/worker.rs` `end_streams`, `src/shard/subscription.rs`
//! `sse_last_word`, `src/shard/closing.rs`). A stream is *clean* when the terminating chunk
//! came last and then an EOF, *cut* when it ended otherwise (EOF without it, a reset), and
//! *open* when it had not ended `--grace` seconds after herald exited. Also reported: when
//! each stream's terminating chunk and its EOF arrived (from the SIGTERM), the CPU both
//! processes used over the stop, and the exit time of every start-up run's herald (no
//! streams). Each client stream closes as soon as it reads its EOF: herald's lingering close
//! waits for that, so the exit time includes this process's reading of 10 000 ends (on the
//! same cores as herald).
//!
//! Correctness fails the run (exit status 1): a /healthz that never answers 200 or an event
//! never delivered within `--deadline`, herald exiting with a status other than 0 or later
//! than `--stop-limit` after SIGTERM, a stop stream not ended clean, streams that could not
//! all be opened. Timing figures are reported, never asserted. Bad arguments: exit status 2.
//!
//! Output: human-readable lines on stderr, then one JSON object per driver on stdout.
//!
//! Every herald started is killed when its guard is dropped (an error, a panic), and gets
//! SIGKILL from the kernel should herald-load itself die (`PR_SET_PDEATHSIG`).

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::conn;
use crate::procstat;
use crate::sse::{Dechunk, SseParser};

/// What herald writes last on a chunked stream.
const TERMINATOR: &[u8; 5] = b"0\r\n\r\n";

/// Attempts at starting herald on a free port (another process may take the port between
/// the probe that found it free and herald's bind).
const PORT_ATTEMPTS: usize = 5;

#[derive(clap::Args, Clone)]
pub struct Args {
    /// The herald binary.
    #[arg(long, default_value = "target/release/herald")]
    bin: PathBuf,
    /// Starts per driver for each of the two start-up figures.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Drivers to measure (herald's `--driver`), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "uring,epoll")]
    drivers: Vec<String>,
    /// herald's `--workers` (default: the CPUs this process may run on).
    #[arg(long)]
    workers: Option<usize>,
    /// SSE streams open when herald is stopped (0: no stop measurement).
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Streams being opened at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// µs to pause after a refused connection while herald starts. Probing takes CPU from
    /// the starting herald: on 2 cores, 20 µs made starts about 1 ms slower, while 100 µs
    /// and 1000 µs gave the same figures within the run-to-run noise.
    #[arg(long, default_value_t = 100)]
    pause_us: u64,
    /// Seconds a start may take to answer /healthz, or to deliver the first event.
    #[arg(long, default_value_t = 10.0)]
    deadline: f64,
    /// Seconds herald may take to exit after SIGTERM (it documents 5).
    #[arg(long, default_value_t = 5.0)]
    stop_limit: f64,
    /// Seconds after herald's exit a stream may still take to end on this side.
    #[arg(long, default_value_t = 1.0)]
    grace: f64,
    /// Extra argument for herald (repeatable), e.g. `--herald-arg=--heartbeat=30`.
    #[arg(long, allow_hyphen_values = true)]
    herald_arg: Vec<String>,
    /// Label for the report.
    #[arg(long, default_value = "")]
    label: String,
    /// Round of a comparison run.
    #[arg(long, default_value_t = 1)]
    round: u32,
}

pub fn run(a: &Args) {
    let started = Instant::now();
    let limit = raise_open_files_limit();
    if !a.bin.is_file() {
        eprintln!("coldstart: no herald binary at {} (build it: cargo build --release)", a.bin.display());
        std::process::exit(2);
    }
    if a.streams as u64 + 64 > limit {
        eprintln!("coldstart: {} streams need more descriptors than the open-files limit ({limit})", a.streams);
        std::process::exit(2);
    }
    if a.runs == 0 || a.drivers.is_empty() {
        eprintln!("coldstart: nothing to do (--runs 0 or no --drivers)");
        std::process::exit(2);
    }
    let workers = a.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let log = std::env::temp_dir().join(format!("herald-coldstart-{}.log", std::process::id()));
    let pause = Duration::from_micros(a.pause_us);
    let launches: Vec<Launch<'_>> = a
        .drivers
        .iter()
        .map(|driver| Launch { bin: &a.bin, pause, driver, workers, extra: &a.herald_arg, log: &log })
        .collect();
    eprintln!(
        "coldstart: {workers} worker(s), drivers {}, {} start-up runs each, then a stop with {} streams",
        a.drivers.join(","),
        a.runs,
        a.streams
    );
    // The start-ups first, the drivers taking turns run by run (whatever drifts on the
    // machine meanwhile touches both alike); the stops with many streams after them, so
    // what they leave behind (this process's memory, the kernel's closing sockets) is not
    // in a start-up figure.
    let mut figures: Vec<Figures> = a.drivers.iter().map(|_| Figures::default()).collect();
    for run in 0..a.runs {
        for (launch, f) in launches.iter().zip(&mut figures) {
            if f.gave_up {
                continue;
            }
            let failed_before = f.failures.len();
            start_ups(a, launch, run, f);
            for e in &f.failures[failed_before..] {
                eprintln!("  {}: {e}", driver_name(launch.driver));
            }
            if f.failures.len() > 4 && f.healthz.is_empty() && f.first_event.is_empty() {
                f.failures.push("gave up on this driver: no start worked".into());
                f.gave_up = true;
            }
        }
    }
    let mut all_ok = true;
    for (launch, mut f) in launches.iter().zip(figures) {
        let t0 = Instant::now();
        let driver = launch.driver;
        let (hz, fe, sh, ie) =
            (Summary::of(&f.healthz), Summary::of(&f.first_event), Summary::of(&f.sse_head), Summary::of(&f.idle_exit));
        eprintln!("coldstart {}:", driver_name(driver));
        eprintln!("  exec → /healthz 200          ms: {}", hz.line());
        eprintln!("  exec → SSE response head     ms: {}", sh.line());
        eprintln!("  exec → first event           ms: {}", fe.line());
        eprintln!("  SIGTERM → exit, no streams   ms: {}", ie.line());
        let stop = if a.streams > 0 && !f.gave_up { stop_phase(a, launch, &mut f.failures) } else { Value::Null };
        for e in &f.failures {
            eprintln!("  FAILED: {e}");
        }
        let ok = f.failures.is_empty();
        all_ok &= ok;
        let report = json!({
            "scenario": "coldstart", "server": "herald", "label": a.label, "round": a.round,
            "driver": driver_name(driver), "driver_flag": driver, "workers": workers, "runs": a.runs,
            "pause_us": a.pause_us, "healthz_ms": hz.json(), "first_event_ms": fe.json(), "sse_head_ms": sh.json(),
            "idle_exit_ms": ie.json(), "stop": stop, "ok": ok, "failures": f.failures,
            "stop_wall_secs": round3(t0.elapsed().as_secs_f64()), "wall_secs": round3(started.elapsed().as_secs_f64()),
        });
        println!("{report}");
    }
    let _ = std::fs::remove_file(&log);
    eprintln!("coldstart: {} in {:.1} s", if all_ok { "ok" } else { "FAILED" }, started.elapsed().as_secs_f64());
    if !all_ok {
        std::process::exit(1);
    }
}

/// herald's name for a driver flag.
fn driver_name(flag: &str) -> &str {
    match flag {
        "uring" => "io_uring",
        other => other,
    }
}

/// One driver's start-up figures and failures.
#[derive(Default)]
struct Figures {
    healthz: Vec<Duration>,
    sse_head: Vec<Duration>,
    first_event: Vec<Duration>,
    idle_exit: Vec<Duration>,
    failures: Vec<String>,
    gave_up: bool,
}

/// Run `run` of the two start-up figures: herald started and stopped for each.
fn start_ups(a: &Args, launch: &Launch<'_>, run: usize, f: &mut Figures) {
    let deadline = Duration::from_secs_f64(a.deadline);
    let stop_limit = Duration::from_secs_f64(a.stop_limit);
    // exec → /healthz 200
    match launch.start(|h| {
        let by = h.spawned + deadline;
        healthz(h, by)
    }) {
        Ok((mut h, at)) => {
            f.healthz.push(at - h.spawned);
            idle_stop(&mut h, stop_limit, &mut f.idle_exit, &mut f.failures, "healthz", run);
        }
        Err(e) => f.failures.push(format!("healthz run {run}: {e}")),
    }
    // exec → first event
    let data = format!("coldstart-{run}");
    match launch.start(|h| {
        let by = h.spawned + deadline;
        first_event(h, by, &data)
    }) {
        Ok((mut h, (head_at, data_at))) => {
            f.sse_head.push(head_at - h.spawned);
            f.first_event.push(data_at - h.spawned);
            idle_stop(&mut h, stop_limit, &mut f.idle_exit, &mut f.failures, "first-event", run);
        }
        Err(e) => f.failures.push(format!("first-event run {run}: {e}")),
    }
}

/// Stops a herald that holds no streams, checking the exit like the stop measurement does.
fn idle_stop(
    h: &mut Herald,
    limit: Duration,
    exits: &mut Vec<Duration>,
    failures: &mut Vec<String>,
    what: &str,
    run: usize,
) {
    let stopped = h.terminate(limit * 2);
    match stopped.exit {
        Some(d) => {
            exits.push(d);
            if d > limit {
                failures.push(format!("{what} run {run}: exit {:.0} ms after SIGTERM (limit {limit:?})", ms(d)));
            }
        }
        None => failures.push(format!("{what} run {run}: no exit within {:?} of SIGTERM", limit * 2)),
    }
    if let Some(s) = stopped.status
        && s.code() != Some(0)
    {
        failures.push(format!("{what} run {run}: herald exited with {}", status_text(s)));
    }
}

// ---------------------------------------------------------------------------------------
// The herald process

/// How herald is started.
struct Launch<'a> {
    bin: &'a std::path::Path,
    pause: Duration,
    driver: &'a str,
    workers: usize,
    extra: &'a [String],
    log: &'a std::path::Path,
}

/// Why a probe of a starting herald gave up.
enum Failure {
    /// herald exited (its status is read by [`Launch::start`]).
    Exited,
    Other(String),
}

impl Launch<'_> {
    /// Starts herald on a free port and runs `probe` on it; starts it again on another port
    /// when herald could not listen on the one chosen.
    fn start<T>(&self, mut probe: impl FnMut(&mut Herald) -> Result<T, Failure>) -> Result<(Herald, T), String> {
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port().map_err(|e| format!("no free port: {e}"))?;
            let mut h = self.spawn(port)?;
            match probe(&mut h) {
                Ok(t) => return Ok((h, t)),
                Err(Failure::Other(e)) => return Err(e),
                Err(Failure::Exited) => {
                    let status = h.reap();
                    let log = std::fs::read_to_string(self.log).unwrap_or_default();
                    if log.contains("cannot listen") {
                        continue;
                    }
                    let log = tail(&log, 10);
                    return Err(format!(
                        "herald exited ({}) before answering; {}",
                        status.map_or("?".into(), status_text),
                        if log.trim().is_empty() { "its log is empty".into() } else { format!("its log ends:\n{log}") }
                    ));
                }
            }
        }
        Err(format!("herald could not listen on any of {PORT_ATTEMPTS} free ports"))
    }

    fn spawn(&self, port: u16) -> Result<Herald, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::File::create(self.log).map_err(|e| format!("{}: {e}", self.log.display()))?;
        let mut cmd = Command::new(self.bin);
        cmd.args(["--listen", &addr.to_string(), "--workers", &self.workers.to_string(), "--driver", self.driver])
            .args(self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel for a SIGKILL to the
        // child should this process die, so no herald outlives the harness.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let spawned = Instant::now();
        let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        let pid = child.id() as libc::pid_t;
        // Waits for the exit without reaping (WNOWAIT): the pid stays herald's (a zombie at
        // worst) until `reap`, so signals sent by pid never reach another process.
        let (tx, exit_rx) = mpsc::channel();
        let waiter = std::thread::Builder::new()
            .name("herald-waiter".into())
            .spawn(move || {
                // SAFETY: waitid fills the siginfo it is given.
                let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                loop {
                    let r = unsafe {
                        libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT)
                    };
                    if r == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                        let _ = tx.send(Instant::now());
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start a waiter thread: {e}"))?;
        Ok(Herald {
            child,
            pid,
            addr,
            pause: self.pause,
            spawned,
            exit_rx,
            exited_at: None,
            status: None,
            waiter: Some(waiter),
        })
    }
}

/// A running herald; killed (SIGKILL) and reaped when dropped unless it was stopped.
struct Herald {
    child: Child,
    pid: libc::pid_t,
    addr: SocketAddr,
    /// The pause after a refused connection while it starts.
    pause: Duration,
    /// The instant just before the spawn.
    spawned: Instant,
    exit_rx: mpsc::Receiver<Instant>,
    exited_at: Option<Instant>,
    status: Option<ExitStatus>,
    waiter: Option<std::thread::JoinHandle<()>>,
}

/// How a stop went.
struct Stopped {
    /// SIGTERM → exit (`None`: not within the limit).
    exit: Option<Duration>,
    status: Option<ExitStatus>,
}

impl Herald {
    /// Whether herald has exited (not reaped yet).
    fn exited(&mut self) -> bool {
        if self.exited_at.is_none() {
            self.exited_at = self.exit_rx.try_recv().ok();
        }
        self.exited_at.is_some()
    }

    /// Waits up to `limit` for the exit; its instant.
    fn wait_exit(&mut self, limit: Duration) -> Option<Instant> {
        if self.exited_at.is_none() {
            self.exited_at = self.exit_rx.recv_timeout(limit).ok();
        }
        self.exited_at
    }

    /// Reaps herald once it has exited; its status.
    fn reap(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() && self.wait_exit(Duration::from_secs(30)).is_some() {
            self.status = self.child.wait().ok();
            if let Some(w) = self.waiter.take() {
                let _ = w.join();
            }
        }
        self.status
    }

    fn signal(&self, sig: libc::c_int) {
        if self.status.is_none() {
            // SAFETY: the pid is herald's until it is reaped (see `spawn`).
            unsafe { libc::kill(self.pid, sig) };
        }
    }

    /// SIGTERM, then waits up to `limit` for the exit.
    fn terminate(&mut self, limit: Duration) -> Stopped {
        let sent = Instant::now();
        self.signal(libc::SIGTERM);
        match self.wait_exit(limit) {
            Some(at) => Stopped { exit: Some(at.saturating_duration_since(sent)), status: self.reap() },
            None => Stopped { exit: None, status: None },
        }
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        if self.status.is_none() {
            if !self.exited() {
                self.signal(libc::SIGKILL);
            }
            self.reap();
        }
    }
}

/// A port nothing listens on now: bound with port 0 and released.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn status_text(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("status {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => format!("{s}"),
    }
}

fn status_json(s: Option<ExitStatus>) -> Value {
    match s {
        Some(s) => s.code().map_or_else(|| json!(status_text(s)), |c| json!(c)),
        None => Value::Null,
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Raises this process's soft open-files limit to the hard one; the soft limit after.
fn raise_open_files_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write the struct they are given.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let raised = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return r.rlim_max;
            }
        }
        r.rlim_cur
    }
}

// ---------------------------------------------------------------------------------------
// Start-up probes (blocking sockets: nothing between a byte's arrival and its instant)

/// Connects as soon as herald listens: a refused connection is tried again after `--pause-us`.
fn connect_early(h: &mut Herald, deadline: Instant) -> Result<TcpStream, Failure> {
    loop {
        if h.exited() {
            return Err(Failure::Exited);
        }
        if Instant::now() > deadline {
            return Err(Failure::Other(format!(
                "herald did not accept a connection within {:?}",
                deadline - h.spawned
            )));
        }
        match TcpStream::connect(h.addr) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(_) => std::thread::sleep(h.pause),
        }
    }
}

/// A response head as read by [`read_head_by`].
struct Head {
    status: u16,
    text: String,
    /// The bytes that followed it in the same reads.
    rest: Vec<u8>,
    /// When the read that completed it returned.
    at: Instant,
}

/// Reads until a response head is complete. `Ok(None)`: the connection ended first.
fn read_head_by(s: &mut TcpStream, deadline: Instant) -> std::io::Result<Option<Head>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        s.set_read_timeout(Some(left))?;
        let n = match s.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e),
        };
        let at = Instant::now();
        buf.extend_from_slice(&chunk[..n]);
        if let Some((status, body)) = split_head(&buf) {
            let text = String::from_utf8_lossy(&buf[..body]).into_owned();
            return Ok(Some(Head { status, text, rest: buf[body..].to_vec(), at }));
        }
    }
}

/// A complete response head at the start of `buf`: its status and where the body starts.
fn split_head(buf: &[u8]) -> Option<(u16, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let line = buf[..end].split(|&b| b == b'\n').next()?;
    let status = std::str::from_utf8(line).ok()?.split(' ').nth(1)?.trim().parse().ok()?;
    Some((status, end + 4))
}

/// exec → the first 200 from `GET /healthz`: its instant.
fn healthz(h: &mut Herald, deadline: Instant) -> Result<Instant, Failure> {
    let mut last = String::new();
    loop {
        if Instant::now() > deadline {
            return Err(Failure::Other(format!("no 200 from /healthz within {:?} ({last})", deadline - h.spawned)));
        }
        let mut s = connect_early(h, deadline)?;
        if let Err(e) = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: coldstart\r\nConnection: close\r\n\r\n") {
            last = format!("write: {e}");
            continue;
        }
        match read_head_by(&mut s, deadline) {
            Ok(Some(Head { status: 200, at, .. })) => return Ok(at),
            Ok(Some(Head { status, .. })) => last = format!("last answer {status}"),
            Ok(None) => last = "connection closed before an answer".into(),
            Err(e) => last = format!("read: {e}"),
        }
        if h.exited() {
            return Err(Failure::Exited);
        }
        std::thread::sleep(h.pause);
    }
}

/// exec → the first event: subscribes as soon as herald accepts, publishes `data` once the
/// subscription's response head is in; the instants of the head and of the event's arrival.
fn first_event(h: &mut Herald, deadline: Instant, data: &str) -> Result<(Instant, Instant), Failure> {
    let topic = "coldstart";
    let (mut sub, head_at, head, rest) = loop {
        let mut s = connect_early(h, deadline)?;
        let req = format!("GET /sub/{topic} HTTP/1.1\r\nHost: coldstart\r\nAccept: text/event-stream\r\n\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            continue;
        }
        match read_head_by(&mut s, deadline) {
            Ok(Some(Head { status: 200, text, rest, at })) => break (s, at, text, rest),
            Ok(Some(Head { status, text, .. })) => {
                return Err(Failure::Other(format!(
                    "subscription answered {status}: {}",
                    text.lines().next().unwrap_or("")
                )));
            }
            Ok(None) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(Failure::Other(format!("no subscription head within {:?}", deadline - h.spawned)));
            }
            Err(_) => {}
        }
        if h.exited() {
            return Err(Failure::Exited);
        }
        std::thread::sleep(h.pause);
    };
    let mut publish = connect_early(h, deadline)?;
    let req = format!(
        "POST /pub/{topic} HTTP/1.1\r\nHost: coldstart\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{data}",
        data.len()
    );
    publish.write_all(req.as_bytes()).map_err(|e| Failure::Other(format!("publish: {e}")))?;
    // The stream first: its event is what is timed; the publish's answer is checked after.
    let mut watch = EndWatch::new(head.to_ascii_lowercase().contains("transfer-encoding: chunked"));
    let mut arrived = None;
    watch.feed(&rest, |d| arrived = arrived.or((d == data.as_bytes()).then(Instant::now)));
    let mut chunk = [0u8; 4096];
    while arrived.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::Other(format!("event not delivered within {:?} of the start", deadline - h.spawned)));
        }
        let _ = sub.set_read_timeout(Some(left));
        match sub.read(&mut chunk) {
            Ok(0) => return Err(Failure::Other("the subscription ended before the event".into())),
            Ok(n) => {
                let at = Instant::now();
                watch.feed(&chunk[..n], |d| arrived = arrived.or((d == data.as_bytes()).then_some(at)));
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Failure::Other(format!("subscription: {e}"))),
        }
    }
    match read_head_by(&mut publish, deadline) {
        Ok(Some(Head { status: 200, .. })) => {}
        Ok(Some(Head { status, .. })) => return Err(Failure::Other(format!("the publish was answered {status}"))),
        Ok(None) => return Err(Failure::Other("the publish got no answer".into())),
        Err(e) => return Err(Failure::Other(format!("the publish's answer: {e}"))),
    }
    Ok((head_at, arrived.expect("loop ends with the event")))
}

// ---------------------------------------------------------------------------------------
// How a stream ends

/// Follows an SSE response body (chunked or not): its events, the resume point, and whether
/// it ended with the terminating chunk and nothing after it.
struct EndWatch {
    chunked: bool,
    dechunk: Dechunk,
    parser: SseParser,
    plain: Vec<u8>,
    /// The last bytes received (up to the terminator's length).
    tail: Vec<u8>,
}

impl EndWatch {
    fn new(chunked: bool) -> EndWatch {
        EndWatch {
            chunked,
            dechunk: Dechunk::default(),
            parser: SseParser::default(),
            plain: Vec::new(),
            tail: Vec::new(),
        }
    }

    /// Feeds body bytes; `on_event(data)` for each event dispatched.
    fn feed(&mut self, bytes: &[u8], on_event: impl FnMut(&[u8])) {
        if bytes.is_empty() {
            return;
        }
        self.tail.extend_from_slice(&bytes[bytes.len().saturating_sub(TERMINATOR.len())..]);
        let cut = self.tail.len().saturating_sub(TERMINATOR.len());
        self.tail.drain(..cut);
        if self.chunked {
            self.plain.clear();
            self.dechunk.feed(bytes, &mut self.plain);
            self.parser.feed(&self.plain, on_event);
        } else {
            self.parser.feed(bytes, on_event);
        }
    }

    /// The stream, if it ends now, ended cleanly: the terminating chunk came, and was the
    /// last thing (an unchunked stream has no end marker: any end is clean).
    fn ended_clean(&self) -> bool {
        !self.chunked || (self.dechunk.done && self.tail == TERMINATOR)
    }

    /// An `id:` was dispatched (herald's resume point, written before the terminator).
    fn has_resume_point(&self) -> bool {
        self.parser.last_id().is_some()
    }
}

/// How a stop stream ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum End {
    /// Not (yet) opened, or failed to open.
    NotLive,
    Open,
    Clean,
    /// EOF without the terminating chunk (or with bytes after it).
    CutEof,
    /// A reset or another read error.
    CutReset,
}

struct Streams {
    end: Vec<End>,
    /// When each ended, and whether it had the resume point.
    ended_at: Vec<Option<Instant>>,
    /// When the terminating chunk had arrived (before the EOF that ended the stream).
    last_word_at: Vec<Option<Instant>>,
    resume_point: Vec<bool>,
    live: usize,
    failed: usize,
    failure: Option<String>,
}

async fn stop_stream(addr: SocketAddr, i: usize, rec: Rc<RefCell<Streams>>, permit: tokio::sync::OwnedSemaphorePermit) {
    let failed = |e: String| {
        let mut r = rec.borrow_mut();
        r.failed += 1;
        r.failure.get_or_insert(e);
    };
    let mut s = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return failed(format!("connect: {e}")),
    };
    let _ = s.set_nodelay(true);
    let req = format!(
        "GET /sub/coldstart-stop HTTP/1.1\r\nHost: coldstart\r\nAccept: text/event-stream\r\nX-Stream: {i}\r\n\r\n"
    );
    if let Err(e) = s.write_all(req.as_bytes()).await {
        return failed(format!("write: {e}"));
    }
    let mut buf = Vec::new();
    let (head, rest) = match conn::read_head(&mut s, &mut buf).await {
        Ok((200, head, rest)) => (head, rest),
        Ok((status, ..)) => return failed(format!("answered {status}")),
        Err(e) => return failed(format!("head: {e}")),
    };
    {
        let mut r = rec.borrow_mut();
        r.live += 1;
        r.end[i] = End::Open;
    }
    drop(permit);
    let mut watch = EndWatch::new(head.to_ascii_lowercase().contains("transfer-encoding: chunked"));
    watch.feed(&rest, |_| {});
    let mut chunk = [0u8; 1024];
    let mut last_word = None;
    let end = loop {
        match s.read(&mut chunk).await {
            Ok(0) => break if watch.ended_clean() { End::Clean } else { End::CutEof },
            Ok(n) => {
                watch.feed(&chunk[..n], |_| {});
                if last_word.is_none() && watch.ended_clean() {
                    last_word = Some(Instant::now());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break End::CutReset,
        }
    };
    // Closed here, at once, as a client would: herald's lingering close waits for it.
    drop(s);
    let mut r = rec.borrow_mut();
    r.end[i] = end;
    r.ended_at[i] = Some(Instant::now());
    r.last_word_at[i] = last_word;
    r.resume_point[i] = watch.has_resume_point();
}

/// One request on a fresh connection; the whole answer (head and body).
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: coldstart\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The sum of a metric's series whose labels contain `label` (e.g. `transport="sse"`).
fn metric_sum(text: &str, name: &str, label: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let Some(labels) = rest.strip_prefix('{') else { continue };
        let Some((labels, value)) = labels.split_once('}') else { continue };
        if labels.contains(label)
            && let Ok(v) = value.trim().parse::<f64>()
        {
            sum = Some(sum.unwrap_or(0.0) + v);
        }
    }
    sum
}

/// The drivers herald's workers report (`herald_driver{driver="…",worker="…"} 1`).
fn metric_drivers(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|l| {
            l.strip_prefix("herald_driver{")?.split("driver=\"").nth(1)?.split('"').next().map(String::from)
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn stop_phase(a: &Args, launch: &Launch<'_>, failures: &mut Vec<String>) -> Value {
    let deadline = Duration::from_secs_f64(a.deadline);
    let limit = Duration::from_secs_f64(a.stop_limit);
    let n = a.streams;
    let mut h = match launch.start(|h| {
        let by = h.spawned + deadline;
        healthz(h, by)
    }) {
        Ok((h, _)) => h,
        Err(e) => {
            failures.push(format!("stop: {e}"));
            return json!({"streams": n, "error": e});
        }
    };
    let addr = h.addr;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    let rec = Rc::new(RefCell::new(Streams {
        end: vec![End::NotLive; n],
        ended_at: vec![None; n],
        last_word_at: vec![None; n],
        resume_point: vec![false; n],
        live: 0,
        failed: 0,
        failure: None,
    }));
    let mut report = local.block_on(&rt, async {
        // Open every stream, `concurrency` at a time.
        let t0 = Instant::now();
        let window = Arc::new(tokio::sync::Semaphore::new(a.concurrency.max(1)));
        for i in 0..n {
            let Ok(permit) = window.clone().acquire_owned().await else { break };
            tokio::task::spawn_local(stop_stream(addr, i, rec.clone(), permit));
        }
        let opened = until(Duration::from_secs(60), || {
            let r = rec.borrow();
            r.live + r.failed >= n
        })
        .await;
        let open_secs = t0.elapsed().as_secs_f64();
        let (live, failed, failure) = {
            let r = rec.borrow();
            (r.live, r.failed, r.failure.clone())
        };
        if live < n {
            failures.push(format!(
                "stop: only {live} of {n} streams live ({failed} failed{}{})",
                if opened { "" } else { ", timed out" },
                failure.map(|f| format!(", first: {f}")).unwrap_or_default()
            ));
        }
        // herald's own count of them (a cross-check; the heads are what counts).
        let mut metrics_sse = None;
        let mut drivers = Vec::new();
        let checked = Instant::now();
        while checked.elapsed() < Duration::from_secs(5) {
            if let Ok(text) = get(addr, "/metrics").await {
                metrics_sse = metric_sum(&text, "herald_connections", "transport=\"sse\"").map(|v| v as u64);
                drivers = metric_drivers(&text);
                if metrics_sse == Some(live as u64) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if metrics_sse != Some(live as u64) {
            eprintln!("  WARNING: herald's /metrics counts {metrics_sse:?} SSE connections, {live} are live here");
        }
        // The stop.
        let cpu_before = (procstat::cpu_secs(Some(h.pid as u32)), procstat::cpu_secs(None));
        let sent = Instant::now();
        h.signal(libc::SIGTERM);
        let mut exited_at = None;
        while exited_at.is_none() && sent.elapsed() < limit * 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if h.exited() {
                exited_at = h.exited_at;
            }
        }
        let exit = exited_at.map(|at| at.saturating_duration_since(sent));
        // Exited, not reaped yet: /proc still has its CPU time.
        let herald_cpu = procstat::used(cpu_before.0, procstat::cpu_secs(Some(h.pid as u32)));
        let status = if exited_at.is_some() { h.reap() } else { None };
        // Streams still ending on this side get `grace` after the exit (or after giving up).
        let grace_end = exited_at.unwrap_or_else(Instant::now) + Duration::from_secs_f64(a.grace);
        until(grace_end.saturating_duration_since(Instant::now()), || !rec.borrow().end.contains(&End::Open)).await;
        let client_cpu = procstat::used(cpu_before.1, procstat::cpu_secs(None));
        let r = rec.borrow();
        let count = |e: End| r.end.iter().filter(|&&x| x == e).count();
        let (clean, cut_eof, cut_reset, still_open) = (count(End::Clean), count(End::CutEof), count(End::CutReset), count(End::Open));
        let before_stop = r.ended_at.iter().filter(|t| t.is_some_and(|t| t < sent)).count();
        let ends: Vec<Duration> = r.ended_at.iter().flatten().filter(|&&t| t >= sent).map(|&t| t - sent).collect();
        let with_resume = r.end.iter().zip(&r.resume_point).filter(|(e, p)| **e == End::Clean && **p).count();
        let end_summary = Summary::of(&ends);
        let words: Vec<Duration> = r.last_word_at.iter().flatten().map(|&t| t.saturating_duration_since(sent)).collect();
        let word_summary = Summary::of(&words);
        match exit {
            Some(d) if d > limit => {
                failures.push(format!("stop: herald exited {:.0} ms after SIGTERM (limit {limit:?})", ms(d)))
            }
            Some(_) => {}
            None => failures.push(format!("stop: herald had not exited {:?} after SIGTERM", limit * 2)),
        }
        if let Some(s) = status
            && s.code() != Some(0)
        {
            failures.push(format!("stop: herald exited with {}", status_text(s)));
        }
        if clean < live {
            failures.push(format!(
                "stop: {} of {live} streams not ended clean ({cut_eof} EOF without the terminating chunk, {cut_reset} reset, {still_open} still open, {before_stop} ended before the SIGTERM)",
                live - clean
            ));
        }
        eprintln!(
            "  stop with {n} streams: {live} live in {open_secs:.2} s (herald's /metrics: {} SSE; driver {})",
            metrics_sse.map_or("?".into(), |v| v.to_string()),
            if drivers.is_empty() { "?".into() } else { drivers.join(",") }
        );
        eprintln!(
            "    SIGTERM → exit {} ms, {}; streams clean {clean} (with the resume id {with_resume}), cut {} (EOF {cut_eof}, reset {cut_reset}), open {still_open}",
            exit.map_or("—".into(), |d| format!("{:.1}", ms(d))),
            status.map_or("no exit status".into(), status_text),
            cut_eof + cut_reset
        );
        eprintln!("    SIGTERM → terminating chunk here ms: {}", word_summary.line());
        eprintln!("    SIGTERM → EOF here ms:               {}", end_summary.line());
        eprintln!(
            "    CPU over the stop: herald {} ms, herald-load {} ms (10 ms ticks)",
            herald_cpu.map_or("?".into(), |s| format!("{:.0}", s * 1e3)),
            client_cpu.map_or("?".into(), |s| format!("{:.0}", s * 1e3))
        );
        json!({
            "streams": n, "live": live, "open_failed": failed, "open_secs": round3(open_secs),
            "metrics_sse": metrics_sse, "drivers_reported": drivers,
            "exit_ms": exit.map(|d| round3(ms(d))), "exit_status": status_json(status),
            "clean": clean, "cut": cut_eof + cut_reset, "cut_eof": cut_eof, "cut_reset": cut_reset, "open": still_open,
            "ended_before_stop": before_stop, "clean_with_resume_id": with_resume,
            "terminator_ms": word_summary.json(), "stream_end_ms": end_summary.json(),
            "herald_cpu_ms": herald_cpu.map(|s| round3(s * 1e3)), "client_cpu_ms": client_cpu.map(|s| round3(s * 1e3)),
        })
    });
    report["grace_secs"] = json!(a.grace);
    drop(h);
    report
}

/// Waits until `cond` holds, checking every 5 ms, for at most `limit`.
async fn until(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

// ---------------------------------------------------------------------------------------
// Figures

/// To three decimals (µs, for ms figures).
fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The nearest-rank percentile `q` (0 < q ≤ 1) of sorted values: the smallest value with at
/// least `q` of all at or below it (p50 of 20 is the 10th, p90 the 18th).
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// Percentiles of a few durations, in ms.
struct Summary {
    sorted: Vec<f64>,
    /// In run order.
    samples: Vec<f64>,
}

impl Summary {
    fn of(d: &[Duration]) -> Summary {
        let samples: Vec<f64> = d.iter().map(|&d| ms(d)).collect();
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        Summary { sorted, samples }
    }

    fn at(&self, q: f64) -> Option<f64> {
        percentile(&self.sorted, q)
    }

    fn json(&self) -> Value {
        let r = |v: Option<f64>| v.map(round3);
        let mut out = json!({"p50": r(self.at(0.5)), "p90": r(self.at(0.9)), "max": r(self.sorted.last().copied()),
               "min": r(self.sorted.first().copied()), "n": self.sorted.len()});
        // The samples themselves when they are few (the start-up runs), not for 10 000 streams.
        if self.samples.len() <= 100 {
            out["samples"] = json!(self.samples.iter().map(|&v| r(Some(v))).collect::<Vec<_>>());
        }
        out
    }

    fn line(&self) -> String {
        let f = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.2}"));
        format!(
            "p50 {} p90 {} max {} (min {}, n {})",
            f(self.at(0.5)),
            f(self.at(0.9)),
            f(self.sorted.last().copied()),
            f(self.sorted.first().copied()),
            self.sorted.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(10.0));
        assert_eq!(percentile(&v, 0.9), Some(18.0));
        assert_eq!(percentile(&v, 1.0), Some(20.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 0.9), Some(7.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.5), Some(3.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.9), Some(5.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn summaries_sort_and_keep_the_run_order() {
        let s = Summary::of(&[Duration::from_millis(3), Duration::from_millis(1), Duration::from_millis(2)]);
        let j = s.json();
        assert_eq!(j["p50"], json!(2.0));
        assert_eq!(j["max"], json!(3.0));
        assert_eq!(j["min"], json!(1.0));
        assert_eq!(j["samples"], json!([3.0, 1.0, 2.0]));
        assert_eq!(Summary::of(&[]).json()["p50"], Value::Null);
    }

    #[test]
    fn response_heads() {
        assert_eq!(split_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), Some((200, 38)));
        assert_eq!(split_head(b"HTTP/1.1 503 Service Unavailable\r\n\r\n"), Some((503, 36)));
        assert_eq!(split_head(b"HTTP/1.1 200 OK\r\nContent-Len"), None);
        assert_eq!(split_head(b"garbage\r\n\r\n"), None);
    }

    /// What herald writes on an SSE stream from its head on, ended by a stop (as seen with
    /// curl): the `retry:` chunk, an event, the resume point, the terminating chunk.
    const STOPPED: &[u8] = b"d\r\nretry: 3000\n\n\r\n24\r\nid: 2f1e2e35ab5692b0-1\ndata: hello\n\n\r\n\
        18\r\nid: 2f1e2e35ab5692b0-1\n\n\r\n0\r\n\r\n";

    #[test]
    fn a_stopped_stream_ends_clean_in_any_pieces() {
        for size in 1..STOPPED.len() {
            let mut w = EndWatch::new(true);
            let mut events = Vec::new();
            for piece in STOPPED.chunks(size) {
                assert!(!w.ended_clean() || piece.is_empty(), "clean before the end, pieces of {size}");
                w.feed(piece, |d| events.push(String::from_utf8_lossy(d).into_owned()));
            }
            assert!(w.ended_clean(), "pieces of {size}");
            assert!(w.has_resume_point());
            assert_eq!(events, ["hello"]);
        }
    }

    #[test]
    fn cut_streams_are_not_clean() {
        // Cut anywhere before the last byte of the terminating chunk.
        for cut in 0..STOPPED.len() {
            let mut w = EndWatch::new(true);
            w.feed(&STOPPED[..cut], |_| {});
            assert!(!w.ended_clean(), "cut after {cut} bytes");
        }
        // Bytes after the terminating chunk.
        let mut w = EndWatch::new(true);
        w.feed(STOPPED, |_| {});
        w.feed(b"x", |_| {});
        assert!(!w.ended_clean());
        // A zero in a chunk's data is not the end.
        let mut w = EndWatch::new(true);
        w.feed(b"5\r\n0\r\n\r\n\r\n", |_| {});
        assert!(!w.ended_clean());
        // No resume point without an `id:`.
        let mut w = EndWatch::new(true);
        w.feed(b"d\r\nretry: 3000\n\n\r\n0\r\n\r\n", |_| {});
        assert!(w.ended_clean());
        assert!(!w.has_resume_point());
    }

    #[test]
    fn metrics_are_summed_by_label() {
        let text = "# HELP herald_connections Open connections.\n# TYPE herald_connections gauge\n\
            herald_connections{transport=\"sse\",worker=\"0\"} 4999\n\
            herald_connections{transport=\"sse\",worker=\"1\"} 5001\n\
            herald_connections{transport=\"ws\",worker=\"0\"} 3\n\
            herald_connections_accepted_total{transport=\"sse\",worker=\"0\"} 77\n\
            herald_driver{driver=\"io_uring\",worker=\"0\"} 1\nherald_driver{driver=\"io_uring\",worker=\"1\"} 1\n";
        assert_eq!(metric_sum(text, "herald_connections", "transport=\"sse\""), Some(10000.0));
        assert_eq!(metric_sum(text, "herald_connections", "transport=\"poll\""), None);
        assert_eq!(metric_drivers(text), ["io_uring"]);
    }

    #[test]
    fn driver_names() {
        assert_eq!(driver_name("uring"), "io_uring");
        assert_eq!(driver_name("epoll"), "epoll");
    }
}

//! `herald-load floor`: what this machine can do for a fan-out with no server at all — the
//! floor a fanout server's figures are read against.
//!
//! One thread (pinned with `--cpu`, as herald's worker is on CPU 0 in `compare.sh`) writes the
//! same frame to N loopback TCP sockets with one nonblocking `send` each, round after round;
//! reader threads (on the other cores) drain the other ends and take each frame's arrival.
//! The frame is, by default, what herald writes per SSE delivery: a chunk of the chunked
//! transfer-coding holding `id: …` and `data: <128-byte stamped payload>`.
//!
//! The reading ends live in a child process (`herald-load floor-reader`, the same binary):
//! each process then holds N descriptors, not 2N, so the floor runs at the subscriber counts
//! of the other scenarios (10 000) under an open-files limit of 20 000. Arrival latency is
//! taken as the other scenarios take it: the reader's wall clock minus the send time stamped
//! in the payload when the round started.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::{percentiles, stamp};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Connections (the subscriber count of the fan-out).
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Rounds: each sends the frame once to every connection.
    #[arg(long, default_value_t = 200)]
    messages: u64,
    /// Rounds per second (open loop); flat out when absent.
    #[arg(long)]
    rate: Option<f64>,
    /// Payload size in bytes (stamped as a publish's).
    #[arg(long, default_value_t = 128)]
    payload: usize,
    /// Where the harness's own listener binds (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// CPU the writing thread is pinned to.
    #[arg(long)]
    cpu: Option<usize>,
    /// CPUs for the reader threads, e.g. `1` or `1,3` or `1-3` (default: every online CPU
    /// but `--cpu`; unpinned without `--cpu`).
    #[arg(long, value_parser = parse_cpus)]
    reader_cpus: Option<Cpus>,
    /// Reader threads (each drains an equal share of the connections).
    #[arg(long, default_value_t = 1)]
    readers: usize,
    /// Seconds the readers wait for bytes still owed before giving up.
    #[arg(long, default_value_t = 30.0)]
    drain: f64,
    /// Label for the report.
    #[arg(long, default_value = "floor")]
    label: String,
    /// Round of a comparison run.
    #[arg(long, default_value_t = 1)]
    round: u32,
}

/// The reading side, run by `floor` as a child process; prints `ready` once every connection
/// is open, then one JSON line when every connection has ended.
#[derive(clap::Args, Clone)]
pub struct ReaderArgs {
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long)]
    subscribers: usize,
    #[arg(long, default_value_t = 1)]
    readers: usize,
    #[arg(long, value_parser = parse_cpus)]
    reader_cpus: Option<Cpus>,
    #[arg(long)]
    run: u32,
    #[arg(long, default_value_t = 30.0)]
    drain: f64,
}

/// A CPU list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpus(pub Vec<usize>);

/// `1`, `0,2`, `1-3,6`: the `taskset -c` syntax.
pub fn parse_cpus(text: &str) -> Result<Cpus, String> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |s: &str| s.trim().parse::<usize>().map_err(|_| format!("not a CPU number: {s:?}"));
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("empty CPU range {part:?}"));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(num(part)?),
        }
    }
    if cpus.is_empty() {
        return Err("no CPU given".into());
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(Cpus(cpus))
}

/// Pins the calling thread to `cpus`.
fn pin(cpus: &[usize]) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain bits; CPU_SET bounds-checks against its size; pid 0 is the
    // calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!("sched_setaffinity {cpus:?}: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn online_cpus() -> Vec<usize> {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    (0..n.max(1) as usize).collect()
}

/// CPU seconds of the calling thread (`RUSAGE_THREAD`) or process.
fn cpu_secs(who: libc::c_int) -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut u);
        u
    };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// The open-files limit.
fn open_files_limit() -> u64 {
    // SAFETY: getrlimit fills the struct it is given.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        r.rlim_cur
    }
}

/// Descriptors a process needs besides the connections (stdio, listener, epoll, pipes, …).
const SPARE_FDS: u64 = 64;

/// The id herald would give round `seq`'s event (its form: 16 hex digits, `-`, a sequence).
fn event_id(run: u32, seq: u64) -> String {
    format!("{:016x}-{seq}", u64::from(run).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Round `seq`'s frame: herald's SSE delivery of a stamped payload, as one chunk of the
/// chunked transfer-coding (`<hex length>\r\n`, the event, `\r\n`).
pub fn sse_frame(run: u32, seq: u64, payload: usize) -> Vec<u8> {
    let event = format!("id: {}\ndata: {}\n\n", event_id(run, seq), stamp::stamp(run, seq, payload));
    let mut frame = format!("{:x}\r\n", event.len()).into_bytes();
    frame.extend_from_slice(event.as_bytes());
    frame.extend_from_slice(b"\r\n");
    frame
}

/// Splits a connection's byte stream into chunks of the chunked transfer-coding, fed
/// arbitrary pieces; a chunk split across reads is carried to the next.
#[derive(Debug, Default)]
pub struct Chunks {
    carry: Vec<u8>,
    /// The stream stopped making sense; nothing more is read from it.
    pub broken: bool,
}

/// One chunk at the front of `buf`: `Ok(Some((bytes it takes, its payload)))`, `Ok(None)`
/// while incomplete, `Err` for bytes that are no chunk.
fn next_chunk(buf: &[u8]) -> Result<Option<(usize, &[u8])>, ()> {
    let Some(cr) = memchr::memchr(b'\r', buf) else {
        // A chunk head is at most 16 hex digits.
        return if buf.len() > 16 || !buf.iter().all(u8::is_ascii_hexdigit) { Err(()) } else { Ok(None) };
    };
    if cr == 0 || cr > 16 || !buf[..cr].iter().all(u8::is_ascii_hexdigit) {
        return Err(());
    }
    let len = usize::from_str_radix(std::str::from_utf8(&buf[..cr]).map_err(|_| ())?, 16).map_err(|_| ())?;
    let start = cr + 2;
    let end = start + len + 2;
    if buf.len() < end {
        return if buf.len() > cr + 1 && buf[cr + 1] != b'\n' { Err(()) } else { Ok(None) };
    }
    if buf[cr + 1] != b'\n' || &buf[end - 2..end] != b"\r\n" {
        return Err(());
    }
    Ok(Some((end, &buf[start..start + len])))
}

impl Chunks {
    /// Calls `on_chunk(payload)` for every chunk completed by `bytes`.
    pub fn feed(&mut self, bytes: &[u8], mut on_chunk: impl FnMut(&[u8])) {
        if self.broken {
            return;
        }
        let mut carried = std::mem::take(&mut self.carry);
        let buf: &[u8] = if carried.is_empty() {
            bytes
        } else {
            carried.extend_from_slice(bytes);
            &carried
        };
        let mut at = 0;
        loop {
            match next_chunk(&buf[at..]) {
                Ok(Some((len, payload))) => {
                    on_chunk(payload);
                    at += len;
                }
                Ok(None) => break,
                Err(()) => {
                    self.broken = true;
                    return;
                }
            }
        }
        let rest = buf[at..].to_vec();
        carried.clear();
        self.carry = carried;
        self.carry.extend_from_slice(&rest);
    }
}

/// (seq, sent µs) of an SSE event `id: …\ndata: <stamp>\n\n` of run `run`.
pub fn event_stamp(run: u32, event: &[u8]) -> Option<(u64, u64)> {
    let data = memchr::memmem::find(event, b"data: ")?;
    stamp::parse(run, &event[data + 6..])
}

/// What the writer saw.
struct Written {
    sends: u64,
    ok: u64,
    eagain: u64,
    partial: u64,
    errors: u64,
    send_ns: Histogram<u64>,
    send_ns_sum: u64,
    round_us: Histogram<u64>,
    first_round_us: u64,
    writing_secs: f64,
    cpu_secs: f64,
}

/// Writes `messages` rounds to every socket of `socks` (nonblocking): one `send` per socket
/// per round, never retried. A socket whose buffer is full (EAGAIN) misses that round's frame
/// — the server it stands for would have had to queue it, which is no longer the floor; a
/// short write or an error ends the socket's part (its stream would be torn mid-frame).
fn write_rounds(socks: &[TcpStream], run: u32, messages: u64, rate: Option<f64>, payload: usize) -> Written {
    let hist = |high| Histogram::<u64>::new_with_bounds(1, high, 3).expect("histogram bounds");
    let mut w = Written {
        sends: 0,
        ok: 0,
        eagain: 0,
        partial: 0,
        errors: 0,
        send_ns: hist(60_000_000_000),
        send_ns_sum: 0,
        round_us: hist(600_000_000),
        first_round_us: 0,
        writing_secs: 0.0,
        cpu_secs: 0.0,
    };
    let fds: Vec<i32> = socks.iter().map(AsRawFd::as_raw_fd).collect();
    let mut live = vec![true; fds.len()];
    let cpu0 = cpu_secs(libc::RUSAGE_THREAD);
    let start = Instant::now();
    for seq in 1..=messages {
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64((seq - 1) as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        // The round starts before its frame is encoded: herald too encodes once per publish.
        let round_start = Instant::now();
        if seq == 1 {
            w.first_round_us = stamp::now_micros();
        }
        let frame = sse_frame(run, seq, payload);
        let mut before = Instant::now();
        for (fd, alive) in fds.iter().zip(live.iter_mut()) {
            if !*alive {
                continue;
            }
            // SAFETY: `frame` is valid for its length; the socket is open for the whole loop.
            let n = unsafe { libc::send(*fd, frame.as_ptr().cast(), frame.len(), libc::MSG_NOSIGNAL) };
            let after = Instant::now();
            let ns = after.duration_since(before).as_nanos() as u64;
            before = after;
            w.sends += 1;
            w.send_ns_sum += ns;
            let _ = w.send_ns.record(ns.max(1));
            if n == frame.len() as isize {
                w.ok += 1;
            } else if n >= 0 {
                w.partial += 1;
                *alive = false;
            } else if std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock {
                w.eagain += 1;
            } else {
                w.errors += 1;
                *alive = false;
            }
        }
        let _ = w.round_us.record(round_start.elapsed().as_micros().max(1) as u64);
    }
    w.writing_secs = start.elapsed().as_secs_f64();
    w.cpu_secs = cpu_secs(libc::RUSAGE_THREAD) - cpu0;
    w
}

fn send_ns(w: &Written) -> Value {
    let h = &w.send_ns;
    json!({
        "mean": if w.sends > 0 { w.send_ns_sum as f64 / w.sends as f64 } else { 0.0 },
        "p50": h.value_at_quantile(0.5), "p90": h.value_at_quantile(0.9), "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999), "max": h.max(), "count": h.len(),
    })
}

pub fn run(a: &Args) {
    let started = Instant::now();
    let limit = open_files_limit();
    if a.subscribers as u64 + SPARE_FDS > limit {
        eprintln!(
            "floor: {} connections need {} descriptors in each process; the open-files limit is {limit}",
            a.subscribers,
            a.subscribers as u64 + SPARE_FDS
        );
        std::process::exit(2);
    }
    let reader_cpus = match (&a.reader_cpus, a.cpu) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(w)) => {
            Some(Cpus(online_cpus().into_iter().filter(|&c| c != w).collect())).filter(|c| !c.0.is_empty())
        }
        (None, None) => None,
    };
    let listener = TcpListener::bind(a.addr).unwrap_or_else(|e| panic!("bind {}: {e}", a.addr));
    // Room for every connection the reader opens at once: std's backlog of 128 would have
    // the kernel drop SYNs (a second's retry each) while this thread accepts.
    // SAFETY: listen on a listening socket only changes its backlog.
    unsafe { libc::listen(listener.as_raw_fd(), 4096) };
    listener.set_nonblocking(true).expect("nonblocking listener");
    let addr = listener.local_addr().expect("listener address");
    let run = (stamp::now_micros() % 1_000_000_000) as u32;
    let exe = std::env::current_exe().expect("own executable");
    let mut cmd = Command::new(exe);
    cmd.args(["floor-reader", "--addr", &addr.to_string(), "--subscribers", &a.subscribers.to_string()])
        .args(["--readers", &a.readers.max(1).to_string(), "--run", &run.to_string(), "--drain", &a.drain.to_string()])
        .stdout(Stdio::piped());
    if let Some(c) = &reader_cpus {
        let list: Vec<String> = c.0.iter().map(usize::to_string).collect();
        cmd.args(["--reader-cpus", &list.join(",")]);
    }
    let mut child = cmd.spawn().expect("floor-reader");
    let mut from_child = BufReader::new(child.stdout.take().expect("reader's stdout"));

    // Accept every connection the reader opens (nonblocking, so a reader that died is noticed).
    let mut socks = Vec::with_capacity(a.subscribers);
    let deadline = Instant::now() + Duration::from_secs(60);
    while socks.len() < a.subscribers {
        match listener.accept() {
            Ok((s, _)) => {
                // As herald's sockets: no Nagle delay, and a send never waits.
                let _ = s.set_nodelay(true);
                s.set_nonblocking(true).expect("nonblocking socket");
                socks.push(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                    eprintln!("floor: only {} of {} connections opened", socks.len(), a.subscribers);
                    let _ = child.kill();
                    std::process::exit(1);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    drop(listener);
    let mut line = String::new();
    if from_child.read_line(&mut line).is_err() || line.trim() != "ready" {
        eprintln!("floor: the reader did not get ready ({line:?})");
        let _ = child.kill();
        std::process::exit(1);
    }

    let (messages, rate, payload, cpu) = (a.messages, a.rate, a.payload, a.cpu);
    let writer = std::thread::Builder::new()
        .name("floor-writer".into())
        .spawn(move || {
            if let Some(c) = cpu {
                pin(&[c]).unwrap_or_else(|e| panic!("{e}"));
            }
            let w = write_rounds(&socks, run, messages, rate, payload);
            // Closing every socket ends the reader's streams once it has read what they hold.
            drop(socks);
            w
        })
        .expect("writer thread");
    let w = writer.join().expect("writer");
    line.clear();
    let _ = from_child.read_line(&mut line);
    let _ = child.wait();
    let reader: Value = serde_json::from_str(line.trim()).unwrap_or_else(|_| {
        eprintln!("floor: no report from the reader ({line:?})");
        std::process::exit(1)
    });

    let received = reader["received"].as_u64().unwrap_or(0);
    let last_us = reader["last_arrival_us"].as_u64().unwrap_or(w.first_round_us);
    let span = last_us.saturating_sub(w.first_round_us) as f64 / 1e6;
    let rate_s = received as f64 / span.max(1e-9);
    let frame_bytes = sse_frame(run, messages.max(1), payload).len();
    let lat = &reader["latency"];
    let complete = received == w.ok && reader["ended"].as_u64() == Some(a.subscribers as u64);
    let sn = send_ns(&w);
    let rd = percentiles(&w.round_us);
    eprintln!(
        "floor: {} connections, {} rounds of a {frame_bytes}-byte frame in {:.3} s; {} sends ({} EAGAIN, {} partial, {} errors)",
        a.subscribers, messages, w.writing_secs, w.sends, w.eagain, w.partial, w.errors
    );
    eprintln!(
        "  deliveries {received}/{} in {span:.3} s = {rate_s:.0}/s{}",
        w.ok,
        if complete { "" } else { " (INCOMPLETE)" }
    );
    eprintln!(
        "  send ns: mean {:.0} p50 {} p90 {} p99 {} p99.9 {} max {}; writer CPU {:.0}% of its core",
        sn["mean"].as_f64().unwrap_or(0.0),
        sn["p50"],
        sn["p90"],
        sn["p99"],
        sn["p999"],
        sn["max"],
        100.0 * w.cpu_secs / w.writing_secs.max(1e-9)
    );
    eprintln!("  round ms: p50 {} p90 {} p99 {} max {}", rd["p50_ms"], rd["p90_ms"], rd["p99_ms"], rd["max_ms"]);
    eprintln!(
        "  latency ms: p50 {} p90 {} p99 {} p99.9 {} max {}",
        lat["p50_ms"], lat["p90_ms"], lat["p99_ms"], lat["p999_ms"], lat["max_ms"]
    );
    let report = json!({
        "scenario": "floor", "server": "floor", "label": a.label, "round": a.round, "transport": "sse",
        "subscribers": a.subscribers, "messages": messages, "rate": rate, "payload": payload, "frame_bytes": frame_bytes,
        "writer_cpu_pin": cpu, "reader_cpus": reader_cpus.map(|c| c.0), "readers": a.readers.max(1),
        "sends": w.sends, "sent": w.ok, "eagain": w.eagain, "partial": w.partial, "send_errors": w.errors,
        "expected": w.ok, "received": received, "lost": w.ok.saturating_sub(received),
        "out_of_order": reader["out_of_order"], "bad_streams": reader["bad_streams"],
        "deliveries_per_sec": rate_s, "delivery_secs": span, "writing_secs": w.writing_secs,
        "sends_per_sec_writing": w.sends as f64 / w.writing_secs.max(1e-9),
        "send_ns": sn, "round_duration": rd, "latency": lat,
        "writer_cpu": w.cpu_secs / w.writing_secs.max(1e-9), "reader_cpu_secs": reader["cpu_secs"],
        "complete": complete, "wall_secs": started.elapsed().as_secs_f64(),
    });
    println!("{report}");
}

/// One reader thread's tally.
struct Tally {
    received: u64,
    out_of_order: u64,
    bad_streams: u64,
    ended: u64,
    last_us: u64,
    latency_us: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            received: 0,
            out_of_order: 0,
            bad_streams: 0,
            ended: 0,
            last_us: 0,
            latency_us: crate::publisher::latency_histogram(),
        }
    }
}

/// Drains `socks` until each has ended (or nothing came for `drain`), through one epoll.
fn read_all(socks: Vec<TcpStream>, run: u32, drain: Duration) -> Tally {
    let mut t = Tally::new();
    // SAFETY: plain epoll calls on descriptors this thread owns; `events` outlives each wait.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1: {}", std::io::Error::last_os_error());
    for (i, s) in socks.iter().enumerate() {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: i as u64 };
        // SAFETY: as above.
        let r = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) };
        assert!(r == 0, "epoll_ctl: {}", std::io::Error::last_os_error());
    }
    let mut chunks: Vec<Chunks> = socks.iter().map(|_| Chunks::default()).collect();
    let mut last_seq = vec![0u64; socks.len()];
    let mut open = socks.len();
    let mut buf = vec![0u8; 256 * 1024];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
    let mut quiet_since = Instant::now();
    while open > 0 {
        // SAFETY: as above.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 100) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            panic!("epoll_wait: {}", std::io::Error::last_os_error());
        }
        if n == 0 {
            if quiet_since.elapsed() > drain {
                break;
            }
            continue;
        }
        quiet_since = Instant::now();
        for ev in &events[..n as usize] {
            let i = ev.u64 as usize;
            let fd = socks[i].as_raw_fd();
            // Level-triggered: one read per readiness, so one busy socket cannot starve the rest.
            // SAFETY: `buf` is valid for its length.
            let got = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if got < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock {
                continue;
            }
            if got <= 0 {
                // SAFETY: as above.
                unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
                open -= 1;
                t.ended += 1;
                continue;
            }
            // One clock reading per read: the frames it completes arrived together.
            let now_us = stamp::now_micros();
            let was_broken = chunks[i].broken;
            let last = &mut last_seq[i];
            chunks[i].feed(&buf[..got as usize], |event| {
                let Some((seq, sent_us)) = event_stamp(run, event) else { return };
                t.received += 1;
                if seq <= *last {
                    t.out_of_order += 1;
                }
                *last = seq.max(*last);
                let _ = t.latency_us.record(now_us.saturating_sub(sent_us).max(1));
            });
            if chunks[i].broken && !was_broken {
                t.bad_streams += 1;
            }
            t.last_us = t.last_us.max(now_us);
        }
    }
    // SAFETY: closing the epoll descriptor this thread created.
    unsafe { libc::close(ep) };
    t
}

pub fn reader(a: &ReaderArgs) {
    let cpu0 = cpu_secs(libc::RUSAGE_SELF);
    let mut socks = Vec::with_capacity(a.subscribers);
    for _ in 0..a.subscribers {
        let s = TcpStream::connect(a.addr).unwrap_or_else(|e| panic!("connect {}: {e}", a.addr));
        s.set_nonblocking(true).expect("nonblocking socket");
        socks.push(s);
    }
    let readers = a.readers.clamp(1, a.subscribers.max(1));
    let per = a.subscribers.div_ceil(readers);
    let ready = std::sync::Arc::new(std::sync::Barrier::new(readers + 1));
    let drain = Duration::from_secs_f64(a.drain);
    let mut threads = Vec::new();
    let mut socks = socks.into_iter();
    for k in 0..readers {
        let mine: Vec<TcpStream> = socks.by_ref().take(per).collect();
        let cpu = a.reader_cpus.as_ref().map(|c| c.0[k % c.0.len()]);
        let (ready, run) = (ready.clone(), a.run);
        threads.push(
            std::thread::Builder::new()
                .name(format!("floor-reader-{k}"))
                .spawn(move || {
                    if let Some(c) = cpu {
                        pin(&[c]).unwrap_or_else(|e| panic!("{e}"));
                    }
                    ready.wait();
                    read_all(mine, run, drain)
                })
                .expect("reader thread"),
        );
    }
    ready.wait();
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    let mut all = Tally::new();
    for th in threads {
        let t = th.join().expect("reader thread");
        all.received += t.received;
        all.out_of_order += t.out_of_order;
        all.bad_streams += t.bad_streams;
        all.ended += t.ended;
        all.last_us = all.last_us.max(t.last_us);
        let _ = all.latency_us.add(&t.latency_us);
    }
    let report = json!({
        "received": all.received, "out_of_order": all.out_of_order, "bad_streams": all.bad_streams,
        "ended": all.ended, "last_arrival_us": all.last_us, "latency": percentiles(&all.latency_us),
        "cpu_secs": cpu_secs(libc::RUSAGE_SELF) - cpu0,
    });
    let _ = writeln!(out, "{report}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpus("1"), Ok(Cpus(vec![1])));
        assert_eq!(parse_cpus("3,1-2, 1"), Ok(Cpus(vec![1, 2, 3])));
        assert!(parse_cpus("").is_err());
        assert!(parse_cpus("2-1").is_err());
        assert!(parse_cpus("a").is_err());
        assert!(parse_cpus("1-").is_err());
    }

    #[test]
    fn frames_are_herald_sse_chunks() {
        let f = sse_frame(7, 42, 128);
        let text = String::from_utf8(f.clone()).unwrap();
        let (head, rest) = text.split_once("\r\n").unwrap();
        let event = rest.strip_suffix("\r\n").unwrap();
        assert_eq!(usize::from_str_radix(head, 16).unwrap(), event.len());
        assert!(event.starts_with("id: ") && event.contains("-42\ndata: 7:42:") && event.ends_with("\n\n"));
        // The data line carries exactly the payload's bytes.
        assert_eq!(event.split_once("data: ").unwrap().1.len(), 128 + 2);
        assert_eq!(event_stamp(7, event.as_bytes()).map(|(s, _)| s), Some(42));
    }

    #[test]
    fn chunks_across_pieces() {
        let stream: Vec<u8> = (1..=5).flat_map(|s| sse_frame(3, s, 128)).collect();
        for size in 1..stream.len() {
            let mut c = Chunks::default();
            let mut seqs = Vec::new();
            for piece in stream.chunks(size) {
                c.feed(piece, |e| seqs.push(event_stamp(3, e).unwrap().0));
            }
            assert_eq!(seqs, [1, 2, 3, 4, 5], "pieces of {size}");
            assert!(!c.broken && c.carry.is_empty());
        }
    }

    #[test]
    fn garbage_breaks_the_stream() {
        for bad in [&b"zz\r\nhello\r\n"[..], b"5\r\nhelloXX", b"5\rXhello\r\n", b"\r\n", b"12345678901234567"] {
            let mut c = Chunks::default();
            let mut n = 0;
            c.feed(bad, |_| n += 1);
            assert!(c.broken, "{:?}", String::from_utf8_lossy(bad));
            assert_eq!(n, 0);
        }
        // A head still arriving is not garbage.
        let mut c = Chunks::default();
        c.feed(b"9a", |_| {});
        assert!(!c.broken);
    }
}

//! herald-load: drives a fanout server from outside, over real sockets.
//!
//! Scenario implemented so far:
//! - `idle`: opens N idle SSE subscriptions and reports the server's RSS growth per
//!   connection (read from /proc/PID/status), the figure ARCHITECTURE.md budgets.
//!
//! Usage: `herald-load idle --url http://127.0.0.1:8080/sub/idle-{i} --connections 10000 --server-pid PID
//!         [--transport sse|ws|longpoll]`

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Sse,
    Ws,
    LongPoll,
}

struct Args {
    transport: Transport,
    url: String,
    connections: usize,
    server_pid: Option<u32>,
    hold: Duration,
}

fn usage() -> ! {
    eprintln!(
        "usage: herald-load idle --url URL --connections N [--server-pid PID] [--hold SECS] [--transport sse|ws|longpoll]\n\
         URL may contain {{i}} (the connection number), e.g. http://127.0.0.1:8080/sub/t-{{i}}"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    if it.next().as_deref() != Some("idle") {
        usage();
    }
    let mut args = Args {
        transport: Transport::Sse,
        url: String::new(),
        connections: 1000,
        server_pid: None,
        hold: Duration::ZERO,
    };
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--url" => args.url = value,
            "--connections" => args.connections = value.parse().unwrap_or_else(|_| usage()),
            "--server-pid" => args.server_pid = Some(value.parse().unwrap_or_else(|_| usage())),
            "--hold" => args.hold = Duration::from_secs_f64(value.parse().unwrap_or_else(|_| usage())),
            "--transport" => {
                args.transport = match value.as_str() {
                    "sse" => Transport::Sse,
                    "ws" => Transport::Ws,
                    "longpoll" => Transport::LongPoll,
                    _ => usage(),
                }
            }
            _ => usage(),
        }
    }
    if args.url.is_empty() {
        usage();
    }
    args
}

/// Splits `http://host:port/path` into the address and the path.
fn split_url(url: &str) -> (SocketAddr, String) {
    let rest = url.strip_prefix("http://").unwrap_or_else(|| usage());
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let addr = host.parse().unwrap_or_else(|_| {
        eprintln!("herald-load: {host} is not an ip:port (only numeric loopback addresses are used)");
        std::process::exit(2)
    });
    (addr, path)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Opens one idle subscription: an SSE stream or a WebSocket (reading the response head),
/// or a held long-poll (nothing comes back until an event or its timeout).
fn open(addr: SocketAddr, path: &str, transport: Transport) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let request = match transport {
        Transport::Sse => format!("GET {path} HTTP/1.1\r\nHost: load\r\nAccept: text/event-stream\r\n\r\n"),
        Transport::Ws => format!(
            "GET {path} HTTP/1.1\r\nHost: load\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ),
        Transport::LongPoll => {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("GET {path}{sep}timeout=300 HTTP/1.1\r\nHost: load\r\n\r\n")
        }
    };
    // One write, so the server sees the whole head at once.
    s.write_all(request.as_bytes())?;
    if transport == Transport::LongPoll {
        return Ok(s);
    }
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
        if head.len() > 16384 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
    if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.1 101") {
        return Err(std::io::Error::other(String::from_utf8_lossy(&head).into_owned()));
    }
    Ok(s)
}

fn main() {
    let args = parse_args();
    let (addr, path) = split_url(&args.url);
    let before = args.server_pid.and_then(rss_kib);
    let started = Instant::now();
    let mut conns = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        match open(addr, &path.replace("{i}", &i.to_string()), args.transport) {
            Ok(s) => conns.push(s),
            Err(e) => {
                eprintln!("herald-load: connection {i} failed: {e}");
                break;
            }
        }
        if (i + 1) % 1000 == 0 {
            eprintln!("  {} connections", i + 1);
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    // Let the server settle (lazy frees, allocator caches) before reading its RSS.
    std::thread::sleep(Duration::from_secs(1).max(args.hold));
    let after = args.server_pid.and_then(rss_kib);
    let n = conns.len();
    println!("connections: {n} in {connect_secs:.2} s ({:.0}/s)", n as f64 / connect_secs);
    let mut report = format!("{{\"scenario\":\"idle\",\"connections\":{n},\"connect_secs\":{connect_secs:.3}");
    if let (Some(b), Some(a)) = (before, after) {
        let per_conn = (a.saturating_sub(b) * 1024) as f64 / n.max(1) as f64;
        println!("server RSS: {b} KiB -> {a} KiB: {per_conn:.0} bytes per idle connection");
        report.push_str(&format!(",\"rss_before_kib\":{b},\"rss_after_kib\":{a},\"rss_bytes_per_conn\":{per_conn:.0}"));
    }
    report.push('}');
    println!("{report}");
}

//! Subscriber connections over SSE, WebSocket and long-poll, and what they record.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::sse::{Dechunk, SseParser};
use crate::stamp;
use crate::ws;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Sse,
    Ws,
    Longpoll,
}

/// How a WebSocket server frames events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WsFormat {
    /// herald: `{"event":"message","data":"…"}`
    Herald,
    /// The frame is the event's data (nchan and others).
    Raw,
}

/// One subscriber's accounting.
#[derive(Default)]
pub struct Seen {
    got: Vec<bool>,
    max: Option<u64>,
    pub received: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Cut before its first event, the subscriber had no id to resume from (as a browser's
    /// EventSource would not): it came back live, and what was published while it was away
    /// cannot be asked for. Set until its next event arrives.
    unanchored: bool,
    /// For such a subscriber, the first sequence it saw after coming back: what precedes it
    /// is not expected of it.
    pub floor: Option<u64>,
}

impl Seen {
    /// The subscriber reconnects with no id to resume from.
    pub fn unanchored(&mut self) {
        if self.received == 0 {
            self.unanchored = true;
        }
    }

    /// How many of the first `expected` sequences this subscriber should have seen.
    pub fn owed(&self, expected: u64) -> u64 {
        expected.saturating_sub(self.floor.unwrap_or(0))
    }

    fn record(&mut self, seq: u64) {
        if std::mem::take(&mut self.unanchored) && self.received == 0 {
            self.floor = Some(seq);
        }
        let i = seq as usize;
        if self.got.len() <= i {
            self.got.resize(i + 1, false);
        }
        if self.got[i] {
            self.duplicates += 1;
            return;
        }
        self.got[i] = true;
        self.received += 1;
        if self.max.is_some_and(|m| seq < m) {
            self.out_of_order += 1;
        }
        self.max = Some(self.max.map_or(seq, |m| m.max(seq)));
    }

    /// Sequences below `expected` never received (from the floor, for a subscriber that
    /// came back without an id).
    fn never_received(&self, expected: u64) -> impl Iterator<Item = u64> + '_ {
        (self.floor.unwrap_or(0)..expected).filter(|&i| !self.got.get(i as usize).copied().unwrap_or(false))
    }

    /// The first `most` sequences below `expected` never received.
    pub fn missing(&self, expected: u64, most: usize) -> Vec<u64> {
        self.never_received(expected).take(most).collect()
    }

    /// How many sequences below `expected` were never received.
    pub fn lost(&self, expected: u64) -> u64 {
        self.never_received(expected).count() as u64
    }
}

/// Everything the subscribers record, shared on the client's one thread.
pub struct Record {
    pub run: u32,
    pub subs: Vec<Seen>,
    pub latency_us: Histogram<u64>,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
    pub connected: usize,
    pub connect_us: Histogram<u64>,
    pub failures: usize,
    pub reconnected: usize,
    pub last_reconnect: Option<Instant>,
    /// Per subscriber, its place in the window of connections being opened, given back as
    /// soon as it is connected or has failed.
    pub opening: Vec<Option<tokio::sync::OwnedSemaphorePermit>>,
}

impl Record {
    pub fn new(run: u32, subs: usize) -> Rc<RefCell<Record>> {
        Rc::new(RefCell::new(Record {
            run,
            subs: (0..subs).map(|_| Seen::default()).collect(),
            latency_us: Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds"),
            first: None,
            last: None,
            connected: 0,
            connect_us: Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds"),
            failures: 0,
            reconnected: 0,
            last_reconnect: None,
            opening: (0..subs).map(|_| None).collect(),
        }))
    }

    fn failed(&mut self, sub: usize) {
        self.failures += 1;
        self.opening[sub] = None;
    }

    fn event(&mut self, sub: usize, data: &[u8]) {
        self.event_at(sub, data, Instant::now(), stamp::now_micros());
    }

    /// Records an event received at `now` (`now_us` on the wall clock): the events of one
    /// read share the clock readings, which are a good part of the harness's cost per event.
    fn event_at(&mut self, sub: usize, data: &[u8], now: Instant, now_us: u64) {
        let Some((seq, sent)) = stamp::parse(self.run, data) else { return };
        self.first.get_or_insert(now);
        self.last = Some(now);
        let _ = self.latency_us.record(now_us.saturating_sub(sent).max(1));
        self.subs[sub].record(seq);
    }
}

/// How a server answers long-polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LpFormat {
    /// herald: a JSON batch of events; the next poll sends `last_event_id`.
    Herald,
    /// nchan: one message per answer, its body as is; the next poll sends the answer's
    /// `Last-Modified` and `Etag` back as `If-Modified-Since` and `If-None-Match`.
    Nchan,
}

/// Where and how to subscribe.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub transport: Transport,
    pub ws_format: WsFormat,
    pub lp_format: LpFormat,
    pub headers: Vec<String>,
}

/// Reads a response head: its status, its text, and the bytes that followed it.
pub async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let rest = buf[end + 4..].to_vec();
            let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            return Ok((status, head, rest));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Opens a subscription and reads what it delivers until `stop` says so (then returns the
/// last event id seen, for a resume) or the server ends it.
pub async fn subscribe(
    target: &Target,
    path: &str,
    sub: usize,
    resume: Option<String>,
    rec: &Rc<RefCell<Record>>,
    stop: &tokio::sync::watch::Receiver<u64>,
) -> Option<String> {
    // A fresh receiver that has seen the current value: only a later cut wakes it.
    let mut stop = stop.clone();
    let generation = *stop.borrow_and_update();
    let stop = &stop;
    let started = Instant::now();
    let s = match TcpStream::connect(target.addr).await {
        Ok(s) => s,
        Err(_) => {
            rec.borrow_mut().failed(sub);
            return resume;
        }
    };
    let _ = s.set_nodelay(true);
    match target.transport {
        Transport::Sse => sse(target, s, path, sub, resume, rec, stop, generation, started).await,
        Transport::Ws => {
            let mut p = path.to_string();
            if let Some(id) = &resume {
                p.push_str(if p.contains('?') { "&" } else { "?" });
                p.push_str("last_event_id=");
                p.push_str(id);
            }
            websocket(target, s, &p, sub, resume, rec, stop, generation, started).await
        }
        Transport::Longpoll => longpoll(target, s, path, sub, resume, rec, stop, generation, started).await,
    }
}

fn connected(rec: &Rc<RefCell<Record>>, sub: usize, started: Instant, resumed: bool) {
    let mut r = rec.borrow_mut();
    r.connected += 1;
    r.opening[sub] = None;
    let _ = r.connect_us.record(started.elapsed().as_micros().max(1) as u64);
    if resumed {
        r.reconnected += 1;
        r.last_reconnect = Some(Instant::now());
    }
}

#[allow(clippy::too_many_arguments)]
async fn sse(
    target: &Target,
    mut s: TcpStream,
    path: &str,
    sub: usize,
    resume: Option<String>,
    rec: &Rc<RefCell<Record>>,
    stop: &tokio::sync::watch::Receiver<u64>,
    generation: u64,
    started: Instant,
) -> Option<String> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: load\r\nAccept: text/event-stream\r\n");
    for h in &target.headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if let Some(id) = &resume {
        req.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    req.push_str("\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        rec.borrow_mut().failed(sub);
        return resume;
    }
    let mut buf = Vec::new();
    let Ok((status, head, rest)) = read_head(&mut s, &mut buf).await else {
        rec.borrow_mut().failed(sub);
        return resume;
    };
    if status != 200 {
        rec.borrow_mut().failed(sub);
        return resume;
    }
    connected(rec, sub, started, resume.is_some());
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let mut parser = SseParser::resuming(resume);
    let mut dechunk = Dechunk::default();
    let mut plain = Vec::new();
    let mut feed = |bytes: &[u8], parser: &mut SseParser| {
        let mut r = rec.borrow_mut();
        let (now, now_us) = (Instant::now(), stamp::now_micros());
        if chunked {
            plain.clear();
            dechunk.feed(bytes, &mut plain);
            parser.feed(&plain, |d| r.event_at(sub, d, now, now_us));
        } else {
            parser.feed(bytes, |d| r.event_at(sub, d, now, now_us));
        }
    };
    feed(&rest, &mut parser);
    let mut stop = stop.clone();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = s.read(&mut chunk) => match r {
                Ok(0) | Err(_) => return parser.last_id(),
                Ok(n) => feed(&chunk[..n], &mut parser),
            },
            _ = stop.changed() => if *stop.borrow() != generation { return parser.last_id() },
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn websocket(
    target: &Target,
    mut s: TcpStream,
    path: &str,
    sub: usize,
    mut last_id: Option<String>,
    rec: &Rc<RefCell<Record>>,
    stop: &tokio::sync::watch::Receiver<u64>,
    generation: u64,
    started: Instant,
) -> Option<String> {
    if s.write_all(ws::upgrade_request(path, "load").as_bytes()).await.is_err() {
        rec.borrow_mut().failed(sub);
        return last_id;
    }
    let mut buf = Vec::new();
    let Ok((101, _, rest)) = read_head(&mut s, &mut buf).await else {
        rec.borrow_mut().failed(sub);
        return last_id;
    };
    connected(rec, sub, started, last_id.is_some());
    let mut dec = ws::Decoder::default();
    let mut out = Vec::new();
    let mut stop = stop.clone();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut first = Some(rest);
    loop {
        let bytes: &[u8] = if let Some(r) = first.as_deref() {
            r
        } else {
            tokio::select! {
                r = s.read(&mut chunk) => match r {
                    Ok(0) | Err(_) => return last_id,
                    Ok(n) => &chunk[..n],
                },
                _ = stop.changed() => if *stop.borrow() != generation { return last_id } else { continue },
            }
        };
        dec.feed(bytes, &mut out);
        first = None;
        let (now, now_us) = (Instant::now(), stamp::now_micros());
        for m in out.drain(..) {
            match m {
                ws::Incoming::Text(t) => match target.ws_format {
                    WsFormat::Raw => rec.borrow_mut().event_at(sub, t.as_bytes(), now, now_us),
                    WsFormat::Herald => match serde_json::from_str::<WsMessage>(&t) {
                        Ok(WsMessage { event: "message", id, data: Some(data) }) => {
                            if let Some(id) = id {
                                let last = last_id.get_or_insert_with(String::new);
                                last.clear();
                                last.push_str(&id);
                            }
                            rec.borrow_mut().event_at(sub, data.as_bytes(), now, now_us);
                        }
                        _ => continue,
                    },
                },
                ws::Incoming::Ping(p) => {
                    let _ = s.write_all(&ws::client_frame(0xA, &p)).await;
                }
                ws::Incoming::Close => return last_id,
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn longpoll(
    target: &Target,
    mut s: TcpStream,
    path: &str,
    sub: usize,
    mut cursor: Option<String>,
    rec: &Rc<RefCell<Record>>,
    stop: &tokio::sync::watch::Receiver<u64>,
    generation: u64,
    started: Instant,
) -> Option<String> {
    let resumed = cursor.is_some();
    let nchan = target.lp_format == LpFormat::Nchan;
    let mut first = true;
    let mut stop = stop.clone();
    loop {
        let mut p = path.to_string();
        let mut req = if nchan {
            // The cursor is "Last-Modified\nEtag" of the previous answer.
            let mut req = format!("GET {p} HTTP/1.1\r\nHost: load\r\n");
            if let Some((modified, etag)) = cursor.as_deref().and_then(|c| c.split_once('\n')) {
                req.push_str(&format!("If-Modified-Since: {modified}\r\nIf-None-Match: {etag}\r\n"));
            }
            req
        } else {
            p.push_str(if p.contains('?') { "&" } else { "?" });
            // Without a cursor, a first poll that answers at once gives the topic's position,
            // so the subscriber misses nothing published after it counts as connected.
            p.push_str(if cursor.is_none() { "timeout=0" } else { "timeout=60" });
            if let Some(c) = &cursor {
                p.push_str("&last_event_id=");
                p.push_str(c);
            }
            format!("GET {p} HTTP/1.1\r\nHost: load\r\n")
        };
        for h in &target.headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        if s.write_all(req.as_bytes()).await.is_err() {
            return cursor;
        }
        if first && nchan {
            // nchan holds the first poll until there is a message (the channel's oldest, so
            // nothing is missed): the subscriber counts as connected once it has asked.
            first = false;
            connected(rec, sub, started, resumed);
        }
        let mut buf = Vec::new();
        let answer = tokio::select! {
            r = read_head(&mut s, &mut buf) => r,
            _ = stop.changed() => return cursor,
        };
        let Ok((status, head, mut body)) = answer else { return cursor };
        if first {
            first = false;
            connected(rec, sub, started, resumed);
        }
        let len: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
            .unwrap_or(0);
        while body.len() < len {
            let mut chunk = vec![0u8; len - body.len()];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return cursor,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        if nchan {
            let field = |name: &str| {
                head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
            };
            if let (Some(modified), Some(etag)) = (field("last-modified"), field("etag")) {
                cursor = Some(format!("{modified}\n{etag}"));
            }
            if status == 200 {
                rec.borrow_mut().event(sub, &body);
            }
        } else if let Some(id) = head.lines().find_map(|l| l.strip_prefix("Last-Event-ID: ")) {
            cursor = Some(id.trim().to_string());
        }
        if status == 200
            && !nchan
            && let Ok(answer) = serde_json::from_slice::<PollAnswer>(&body)
        {
            let mut r = rec.borrow_mut();
            for e in answer.events.iter().filter_map(|e| e.data.as_deref()) {
                r.event(sub, e.as_bytes());
            }
        }
        if *stop.borrow() != generation {
            return cursor;
        }
    }
}

/// What the harness reads of a herald WebSocket message (borrowed: no tree, no copies).
#[derive(serde::Deserialize)]
struct WsMessage<'a> {
    event: &'a str,
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<std::borrow::Cow<'a, str>>,
}

/// A herald long-poll answer, read without building a JSON tree: the harness must not be
/// what limits a run.
#[derive(serde::Deserialize)]
struct PollAnswer<'a> {
    #[serde(borrow)]
    events: Vec<PollEvent<'a>>,
}

#[derive(serde::Deserialize)]
struct PollEvent<'a> {
    /// Gap notices carry no data.
    #[serde(borrow)]
    data: Option<std::borrow::Cow<'a, str>>,
}

/// Waits until `cond` holds on the record, checking every 10 ms, for at most `limit`.
pub async fn until(rec: &Rc<RefCell<Record>>, limit: Duration, cond: impl Fn(&Record) -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !cond(&rec.borrow()) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

//! A held long-poll (API.md §3.3): register like a stream, wait for the first events (or the
//! timeout), answer once, and go back to reading requests on the same connection.
//!
//! Once its owners have registered it, a held poll with nothing to answer yet has no task: its
//! connection is parked like an idle stream (`shard::parked`), with no read buffer and no timer
//! of its own (the worker's ticker expires polls), and a new task answers it when it gets
//! events, times out or the server stops. Answers are assembled from the
//! events' shared JSON encodings; a single-topic poll released by one event is sent that
//! event's cached complete answer, so one publish releases thousands of polls without
//! building thousands of responses.

use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use monoio::net::TcpStream;

use crate::api::ctx::Ctx;
use crate::api::subscribe::PollRequest;
use crate::clock::Stamp;
use crate::proto::http1::{Head, Status, Wire};
use crate::proto::longpoll;
use crate::shard::conn::{Conn, Phase};
use crate::shard::outbox::Outbox;
use crate::shard::subscription::{Delivery, Held, HeldItem, Subscription};
use crate::sys;

/// How the answer is framed: the client's HTTP version and whether the connection stays.
#[derive(Clone)]
pub struct Framing {
    pub minor_version: u8,
    pub keep_alive: bool,
    /// CORS headers for the answer.
    pub cors: Vec<(&'static str, String)>,
    pub style: Style,
}

/// How an answer is shaped.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// herald's long-poll: `{"events":[…],"last_event_id"}`, 204 on timeout.
    Events,
    /// One event's data, verbatim, as the body; an empty 200 on timeout. For clients that
    /// keep no cursor: the connection remembers where the answer stopped, and its next poll
    /// of the same topic continues there.
    DataOnly,
}

enum Event {
    Readable(io::Result<()>),
    /// The connection changed: it has something to answer with, is due, ending or cut.
    Changed(Phase),
}

/// What became of a poll once it was registered.
pub enum Outcome {
    /// Answered (or the peer left); whether the connection stays open.
    Answered { stays: bool },
    /// Registered with its owners and nothing to answer yet: the connection can go without a
    /// task until there is (see `shard::parked`). The framing is handed back for then.
    Waiting(Framing),
}

/// A parked poll's connection: what the task that answers it will need. Kept small (it
/// sits in the parked set's table); the parts most polls do not have are boxed.
pub struct Waiting {
    minor_version: u8,
    keep_alive: bool,
    style: Style,
    loopback: bool,
    rare: Option<Box<Rare>>,
}

/// What few parked polls have.
struct Rare {
    cors: Vec<(&'static str, String)>,
    /// Where the connection's last data-only answer stopped (`Ctx::stopped_at`).
    stopped_at: Option<crate::api::ctx::Stopped>,
}

impl Waiting {
    pub fn new(framing: Framing, stopped_at: Option<crate::api::ctx::Stopped>, loopback: bool) -> Waiting {
        let Framing { minor_version, keep_alive, cors, style } = framing;
        let rare = (!cors.is_empty() || stopped_at.is_some()).then(|| Box::new(Rare { cors, stopped_at }));
        Waiting { minor_version, keep_alive, style, loopback, rare }
    }

    /// The framing, where the last data-only answer stopped, and whether the peer is on
    /// loopback.
    pub fn into_parts(self) -> (Framing, Option<crate::api::ctx::Stopped>, bool) {
        let (cors, stopped_at) = self.rare.map_or((Vec::new(), None), |r| (r.cors, r.stopped_at));
        let framing =
            Framing { minor_version: self.minor_version, keep_alive: self.keep_alive, cors, style: self.style };
        (framing, stopped_at, self.loopback)
    }
}

/// Registers the poll and holds it until it can be answered. With `parkable` (nothing else
/// buffered on the connection) a poll with nothing to answer yet comes back as
/// [`Outcome::Waiting`] instead of keeping its task.
pub async fn hold(ctx: &Ctx, stream: &TcpStream, req: PollRequest, framing: Framing, parkable: bool) -> Outcome {
    Box::pin(register(ctx, req)).await;
    if parkable {
        let until = |c: &Conn| c.phase() != Phase::Open || c.poll_answerable();
        let phase = poll_fn(|cx| ctx.shard.borrow_mut().poll_until(ctx.key, until, cx)).await;
        let answerable = ctx.shard.borrow_mut().conn(ctx.key).is_some_and(|c| c.poll_answerable());
        if phase == Phase::Live && !answerable {
            return Outcome::Waiting(framing);
        }
    }
    Outcome::Answered { stays: answer_when_ready(ctx, stream, framing, !parkable).await }
}

/// Waits until the poll has something to answer and answers it; whether the connection
/// stays open. With `watch`, a peer that leaves meanwhile is noticed at once.
pub async fn answer_when_ready(ctx: &Ctx, stream: &TcpStream, framing: Framing, watch: bool) -> bool {
    if !wait(ctx, stream, watch).await {
        return false;
    }
    Box::pin(respond(ctx, stream, framing)).await
}

async fn register(ctx: &Ctx, req: PollRequest) {
    let key = ctx.key;
    // A poll held with a token is answered when the token expires, if that comes first.
    let now_ms = crate::clock::now_micros() / 1000;
    let timeout = match req.stream.expires {
        Some(exp) => req.timeout.min(Duration::from_millis(exp.saturating_sub(now_ms))),
        None => req.timeout,
    };
    let mut held = Held::new(req.max, ctx.config.max_pending_bytes, Stamp::after(timeout));
    // Nothing to wait for: answered as soon as the owners have replied.
    held.due = req.timeout.is_zero();
    let requests = {
        let mut s = ctx.shard.borrow_mut();
        let user = req.stream.presence(&ctx.config);
        let mut sub = Subscription::new(req.stream.topics, req.stream.types, Delivery::Held(held));
        sub.present_as(user);
        sub.names = req.stream.names;
        s.join(key, sub, &req.stream.from)
    };
    for (owner, msg) in requests {
        ctx.mesh.to_owner[owner].send(msg).await;
    }
}

/// Waits until the poll has something to answer (events, its timeout, the server stopping);
/// `false` when the peer left (noticed while `watch`ing) or the connection was cut.
async fn wait(ctx: &Ctx, stream: &TcpStream, watch: bool) -> bool {
    let key = ctx.key;
    let fd = stream.as_raw_fd();
    let mut readable = pin!(stream.readable(false));
    // Watch for the peer leaving until it sends its next request (then just answer).
    let mut watching = watch;
    loop {
        let until = |c: &Conn| !matches!(c.phase(), Phase::Open | Phase::Live) || c.poll_answerable();
        let event = poll_fn(|cx| {
            if watching && let Poll::Ready(r) = readable.as_mut().poll(cx) {
                return Poll::Ready(Event::Readable(r));
            }
            ctx.shard.borrow_mut().poll_until(key, until, cx).map(Event::Changed)
        })
        .await;
        match event {
            Event::Readable(Err(_)) => return false,
            Event::Readable(Ok(())) => match sys::peek(fd) {
                Ok(0) => return false,
                Ok(_) => watching = false,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                    readable.set(stream.readable(false))
                }
                Err(_) => return false,
            },
            Event::Changed(Phase::Closed) => return false,
            Event::Changed(Phase::Live | Phase::Refused | Phase::Ending) => return true,
            // Due before the owners answered: wait for them (briefly).
            Event::Changed(Phase::Open) => return Box::pin(owners_answer(ctx)).await,
        }
    }
}

async fn owners_answer(ctx: &Ctx) -> bool {
    let ready = poll_fn(|cx| ctx.shard.borrow_mut().poll_until(ctx.key, |c| c.phase() != Phase::Open, cx));
    matches!(monoio::time::timeout(Duration::from_secs(5), ready).await, Ok(p) if p != Phase::Closed)
}

/// Leaves the topics and sends the answer.
async fn respond(ctx: &Ctx, stream: &TcpStream, framing: Framing) -> bool {
    let key = ctx.key;
    let (sub, closing, refused) = {
        let mut s = ctx.shard.borrow_mut();
        let phase = s.conn(key).map_or(Phase::Closed, |c| c.phase());
        let (closing, refused) = (phase == Phase::Ending, phase == Phase::Refused);
        if let Some(c) = s.conn(key) {
            c.answered();
        }
        (s.leave(key), closing, refused)
    };
    let Some(sub) = sub else { return false };
    let framing = Framing { keep_alive: framing.keep_alive && !closing, ..framing };
    let keep_alive = framing.keep_alive;
    let mut out = Outbox::default();
    let status = if refused {
        // An owner refused a new topic (the node keeps `max_topics`).
        let r = super::limits::too_many_topics().with_headers(framing.cors.clone());
        out.push(r.encode(Wire { minor_version: framing.minor_version, keep_alive, head_only: false }));
        r.status
    } else {
        if framing.style == Style::DataOnly {
            *ctx.stopped_at.borrow_mut() = Some((sub.topics[0].clone(), sub.positions[0]));
        }
        let (status, pieces) = answer(sub, &framing);
        for piece in pieces {
            out.push(piece);
        }
        status
    };
    {
        let s = ctx.shard.borrow();
        s.metrics().bytes_written.add(out.queued() as u64);
        s.metrics().response(status.code());
    }
    if !send(stream, &mut out).await {
        // The client did not take its answer: the same verdict as a stalled stream.
        ctx.shard.borrow().metrics().slow_consumers.inc();
        return false;
    }
    keep_alive
}

/// The answer's pieces: `204` with the resume id when nothing came, else the events.
fn answer(sub: Subscription, framing: &Framing) -> (Status, Vec<Bytes>) {
    let id = sub.resume_id();
    let Delivery::Held(held) = sub.delivery else { return (Status::Internal, Vec::new()) };
    let mut headers = vec![("Last-Event-ID", id.clone()), ("Cache-Control", "no-cache".to_string())];
    headers.extend(framing.cors.iter().cloned());
    let head = |status, len| {
        Head {
            status,
            content_type: "application/json",
            content_length: len,
            headers: &headers,
            minor_version: framing.minor_version,
            keep_alive: framing.keep_alive,
        }
        .encode()
    };
    if framing.style == Style::DataOnly {
        // One event's data, verbatim; nothing (an empty 200) when none came. A gap cannot be
        // expressed in this API: the answer is simply the next event history still has.
        let data = held.items.iter().find_map(|i| match i {
            HeldItem::Event(f) => Some(f.data.clone()),
            HeldItem::Gap(_) => None,
        });
        let data = data.unwrap_or_default();
        return (Status::Ok, vec![head(Status::Ok, data.len()), data]);
    }
    if held.items.is_empty() {
        return (Status::NoContent, vec![head(Status::NoContent, 0)]);
    }
    if let [HeldItem::Event(frame)] = &held.items[..]
        && sub.topics.len() == 1
        && sub.positions[0] == frame.cursor
        && framing.minor_version == 1
        && framing.keep_alive
        && framing.cors.is_empty()
    {
        // Every single-topic poll released by this event, and standing at it, gets the same
        // bytes. A poll whose filter took it past the event (it skipped later events of other
        // types) has another resume id, so its own answer.
        let cached = frame.longpoll_answer(|| {
            let pieces = longpoll::answer(&[frame.json()], &id, |len| head(Status::Ok, len));
            pieces.concat().into()
        });
        return (Status::Ok, vec![cached]);
    }
    let events: Vec<Bytes> = held
        .items
        .iter()
        .map(|i| match i {
            HeldItem::Event(f) => f.json(),
            HeldItem::Gap(g) => g.clone(),
        })
        .collect();
    (Status::Ok, longpoll::answer(&events, &id, |len| head(Status::Ok, len)))
}

/// Writes the whole answer, waiting for writability when the socket is full (bounded).
async fn send(stream: &TcpStream, out: &mut Outbox) -> bool {
    let deadline = monoio::time::Instant::now() + Duration::from_secs(30);
    super::request::write_out(stream, out, deadline).await.is_ok()
}

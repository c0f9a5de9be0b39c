//! One worker's runtime: its tasks (owner, delivery, ticker, accept loops) and its stop.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use monoio::net::{TcpListener, TcpStream};
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
use slab::Slab;

use crate::clock::Stamp;
use crate::config::{Config, Driver};
use crate::conn;
use crate::mesh::Mesh;
use crate::proto::http1::{Response, Status};
use crate::proto::{sse, ws};
use crate::pubsub::msg::ToOwner;
use crate::pubsub::owner;
use crate::shard::conn::Phase;
use crate::shard::parked;
use crate::shard::state::{Shard, ShardRef, Then};
use crate::shard::subscription::Delivery;
use crate::shard::waitset::WaitSet;
use crate::shard::{delivery, occupancy, owning, turns};
use crate::sys;

/// io_uring submission queue size: every idle stream keeps one readiness wait in flight.
const URING_ENTRIES: u32 = 16 * 1024;
/// How long a stopping worker waits for its streams to end.
const STREAMS_END: Duration = Duration::from_millis(3500);

/// The stop, broadcast to any number of tasks on this worker.
#[derive(Default)]
struct Stop {
    stopped: Cell<bool>,
    /// One slot per pending wait, freed when the wait ends: accept loops wait on the stop
    /// again for every connection they accept, so waits must not pile up. (`Waker::will_wake`
    /// cannot tell that two wakers are the same task's reliably, so slots rather than a
    /// deduplicated list.)
    waiters: RefCell<Slab<Waker>>,
}

impl Stop {
    fn trigger(&self) {
        self.stopped.set(true);
        for w in self.waiters.borrow_mut().drain() {
            w.wake();
        }
    }

    fn wait(&self) -> StopWait<'_> {
        StopWait { stop: self, slot: None }
    }
}

/// A pending wait for the stop, holding its slot.
struct StopWait<'a> {
    stop: &'a Stop,
    slot: Option<usize>,
}

impl Future for StopWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.stop.stopped.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.stop.waiters.borrow_mut();
        match self.slot.and_then(|i| waiters.get_mut(i)) {
            Some(w) => w.clone_from(cx.waker()),
            None => {
                let i = waiters.insert(cx.waker().clone());
                drop(waiters);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for StopWait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            self.stop.waiters.borrow_mut().try_remove(i);
        }
    }
}

pub struct Args {
    pub id: usize,
    pub config: Arc<Config>,
    pub mesh: Arc<Mesh>,
    pub listeners: Vec<std::net::TcpListener>,
    pub cap: usize,
    pub run_key: u64,
    /// Whether to run on io_uring (the startup probe found it usable) or epoll.
    pub uring: bool,
}

fn driver_name(uring: bool) -> &'static str {
    if uring { "io_uring" } else { "epoll" }
}

/// Builds this thread's runtime on the driver `Server::start` chose and runs the worker on it.
pub fn run_on_driver(args: Args, ready: mpsc::Sender<Result<&'static str, String>>) {
    if args.uring {
        match RuntimeBuilder::<IoUringDriver>::new().with_entries(URING_ENTRIES).enable_timer().build() {
            Ok(mut rt) => return rt.block_on(as_task(args, ready, driver_name(true))),
            // The probe's small ring worked, so this is a limit on the big one (locked memory
            // on older kernels).
            Err(e) if args.config.driver == Driver::Uring => {
                let _ = ready.send(Err(format!(
                    "io_uring requested but unavailable: worker {} cannot create a ring of {URING_ENTRIES} entries: {e}",
                    args.id
                )));
                return;
            }
            Err(e) => tracing::warn!(
                worker = args.id,
                "cannot create a ring of {URING_ENTRIES} entries ({e}); this worker runs on epoll"
            ),
        }
    }
    match RuntimeBuilder::<LegacyDriver>::new().enable_timer().build() {
        Ok(mut rt) => rt.block_on(as_task(args, ready, driver_name(false))),
        Err(e) => {
            let _ = ready.send(Err(format!("cannot start the epoll driver: {e}")));
        }
    }
}

/// Runs the worker as a spawned task: wake-ups from other threads (the stop signal, the
/// mesh) reach spawned tasks on either driver, while `block_on`'s own future may only be
/// polled again by the runtime thread itself.
async fn as_task(args: Args, ready: mpsc::Sender<Result<&'static str, String>>, driver: &'static str) {
    let _ = monoio::spawn(main(args, ready, driver)).await;
}

/// Sets the worker up, reports to `ready`, and runs it until the stop.
async fn main(args: Args, ready: mpsc::Sender<Result<&'static str, String>>, driver: &'static str) {
    let Args { id, config, mesh, listeners, cap, run_key, .. } = args;
    mesh.metrics.workers[id].driver.get_or_init(|| driver);
    let parked = match WaitSet::new().and_then(|p| p.handle().map(|h| (p, h))) {
        Ok(p) => p,
        Err(e) => {
            let _ = ready.send(Err(format!("worker {id}: cannot set up the parked-stream watcher: {e}")));
            return;
        }
    };
    let _ = ready.send(Ok(driver));
    let (parked, set) = parked;
    let shard: ShardRef = Rc::new(RefCell::new(Shard::new(id, config.clone(), mesh.clone(), parked)));
    monoio::spawn(turns::relay());
    let owner = owner::Owner::new(id, run_key, &config).counting_in(mesh.topics.clone());
    monoio::spawn(owning::run(owner, id, mesh.clone()));
    monoio::spawn(delivery::run(shard.clone()));
    monoio::spawn(parked::run(shard.clone(), set));
    monoio::spawn(ticker(shard.clone()));
    monoio::spawn(occupancy::run(shard.clone()));
    let stop = Rc::new(Stop::default());
    for l in listeners {
        match TcpListener::from_std(l) {
            Ok(l) => {
                monoio::spawn(accept_loop(shard.clone(), l, cap, stop.clone()));
            }
            Err(e) => tracing::error!(worker = id, "cannot use listener: {e}"),
        }
    }
    // The one waiter on the cross-thread signal; it passes the stop on to local tasks.
    mesh.shutdown_signal(id).await;
    stop.trigger();
    end_streams(&shard);
    let deadline = Instant::now() + STREAMS_END;
    while streams_open(&shard) > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Most connections taken from the accept queue without the runtime after one it accepted.
const ACCEPT_BURST: usize = 128;

/// Accepts connections until the stop begins.
async fn accept_loop(shard: ShardRef, listener: TcpListener, cap: usize, stop: Rc<Stop>) {
    let (mesh, id) = {
        let s = shard.borrow();
        (s.mesh.clone(), s.id)
    };
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = stop.wait() => {
                // Refused from now on, rather than accepted by the kernel and never served.
                sys::stop_listening(listener.as_raw_fd());
                return;
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                admit(&shard, &mesh, cap, stream, peer);
                // Under io_uring each accept is a submission whose completion comes a
                // run-queue turn later; during a reconnect storm that turn is long, so what
                // else is queued is taken now.
                for _ in 0..ACCEPT_BURST {
                    match sys::accept_now(listener.as_raw_fd()) {
                        Ok(Some((stream, peer))) => {
                            if let Ok(stream) = TcpStream::from_std(stream) {
                                admit(&shard, &mesh, cap, stream, peer);
                            }
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning on the error.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    tracing::warn!(worker = id, "accept failed: {e}");
                    last_warning = Some(Instant::now());
                }
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves an accepted connection, or refuses it over the connection cap.
fn admit(shard: &ShardRef, mesh: &Mesh, cap: usize, stream: TcpStream, peer: std::net::SocketAddr) {
    let _ = stream.set_nodelay(true);
    let metrics = &mesh.metrics.workers[shard.borrow().id];
    if mesh.connections.fetch_add(1, Ordering::Relaxed) >= cap {
        mesh.connections.fetch_sub(1, Ordering::Relaxed);
        metrics.rejected.inc();
        metrics.response(503);
        monoio::spawn(refuse_over_cap(stream));
        return;
    }
    metrics.accepted.inc();
    monoio::spawn(conn::serve(shard.clone(), stream, peer));
}

async fn refuse_over_cap(stream: TcpStream) {
    let r = Response::error(Status::Unavailable, "too many connections", "/");
    conn::refuse_now(&stream, r).await;
}

/// Periodic work: heartbeats on quiet streams, the owner's housekeeping, unsubscribes owed.
async fn ticker(shard: ShardRef) {
    let (heartbeat, mesh, id) = {
        let s = shard.borrow();
        (s.config.heartbeat, s.mesh.clone(), s.id)
    };
    let tick = (heartbeat / 4).clamp(Duration::from_millis(10), Duration::from_millis(500));
    let mut last_housekeeping = Instant::now();
    let beat = sse::heartbeat();
    let ping = ws::encode_frame(ws::Opcode::Ping, b"");
    let expired_close = ws::frame::close_frame(ws::CloseCode::Policy.code(), "token expired");
    loop {
        monoio::time::sleep(tick).await;
        let now = Instant::now();
        let stamp = Stamp::at(now);
        let unix_ms = crate::clock::now_micros() / 1000;
        {
            let mut s = shard.borrow_mut();
            s.each_conn(|key, c, notices| {
                let Some(sub) = c.sub.as_ref() else { return Then::Nothing };
                if c.phase() != Phase::Live {
                    return Then::Nothing;
                }
                if sub.expires().is_some_and(|at| unix_ms >= at) {
                    // Its token expired: the stream ends, and its client comes back with a
                    // fresh token (a held poll is answered with what it has).
                    match &sub.delivery {
                        Delivery::Sse { .. } => sub.sse_last_word(None, &mut c.outbox),
                        Delivery::Ws | Delivery::WsData => c.outbox.push(expired_close.clone()),
                        Delivery::Held(_) => {
                            c.poll_due(key, notices);
                            return Then::Nothing;
                        }
                    }
                    c.end(key, notices);
                    return Then::Flush;
                }
                match &sub.delivery {
                    Delivery::Sse { chunked } if c.outbox.is_empty() && stamp.since(c.last_write) >= heartbeat => {
                        c.outbox.push(beat.for_version(*chunked));
                        Then::Flush
                    }
                    Delivery::Sse { .. } => Then::Nothing,
                    Delivery::Held(held) if stamp.reached(held.deadline) && !held.due => {
                        c.poll_due(key, notices);
                        Then::Nothing
                    }
                    Delivery::Held(_) => Then::Nothing,
                    // A peer that answered no ping for two intervals is gone. A peer silent
                    // for one is pinged even while events flow to it (they say nothing about
                    // whether it is still there); a quiet connection is pinged too.
                    Delivery::Ws | Delivery::WsData if stamp.since(c.last_read) >= heartbeat * 2 => {
                        c.close(key, notices);
                        Then::Nothing
                    }
                    Delivery::Ws | Delivery::WsData
                        if stamp.since(c.last_read) >= heartbeat
                            || (c.outbox.is_empty() && stamp.since(c.last_write) >= heartbeat) =>
                    {
                        c.outbox.push(ping.clone());
                        Then::Flush
                    }
                    Delivery::Ws | Delivery::WsData => Then::Nothing,
                }
            });
            s.send_unsubscribes();
        }
        if now.saturating_duration_since(last_housekeeping) >= Duration::from_secs(1) {
            last_housekeeping = now;
            shard.borrow_mut().trim();
            let _ = mesh.to_owner[id].try_send(ToOwner::Tick);
            mesh.to_owner[id].wake();
        }
    }
}

/// Ends every stream: the terminating chunk goes last, then the connection closes. Held
/// polls are answered now with what they have.
fn end_streams(shard: &ShardRef) {
    shard.borrow_mut().each_conn(|key, c, notices| {
        if c.is_ending() {
            // Already ending, its last word queued.
            return Then::Nothing;
        }
        let Some(delivery) = c.sub.as_ref().map(|s| &s.delivery).or(c.websocket.then_some(&Delivery::Ws)) else {
            return Then::Nothing;
        };
        // A WebSocket without a subscription (the echo endpoint) is live once upgraded; a
        // connection that never went live just closes.
        if c.phase() == Phase::Live {
            match (delivery, c.sub.as_ref()) {
                (Delivery::Sse { .. }, Some(sub)) => sub.sse_last_word(None, &mut c.outbox),
                (Delivery::Ws | Delivery::WsData, _) => {
                    c.outbox.push(ws::frame::close_frame(1001, "server shutting down"))
                }
                _ => {}
            }
        }
        c.end(key, notices);
        Then::Flush
    });
}

fn streams_open(shard: &ShardRef) -> usize {
    shard.borrow().conns.iter().filter(|(_, c)| c.sub.is_some() || c.websocket).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_stop_do_not_pile_up() {
        let stop = Stop::default();
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..1000 {
            let mut wait = std::pin::pin!(stop.wait());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            assert_eq!(stop.waiters.borrow().len(), 1);
        }
        assert_eq!(stop.waiters.borrow().len(), 0, "an ended wait frees its slot");
        let mut wait = std::pin::pin!(stop.wait());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        stop.trigger();
        assert!(wait.as_mut().poll(&mut cx).is_ready());
    }
}

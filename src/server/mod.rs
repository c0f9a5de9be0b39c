//! Per-core workers: one thread per worker, pinned to a core, each running its own monoio
//! runtime on the chosen driver, with its own SO_REUSEPORT listeners; and the staged stop.

pub mod driver;
mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{Config, Driver};
use crate::mesh::Mesh;
use crate::sys;

/// File descriptors kept free for listeners, the io driver and refusing with 503.
const FD_RESERVE: u64 = 64;
/// SO_REUSEPORT listeners per worker and address. Each has its own accept queue (capped by
/// `net.core.somaxconn`), so a reconnect storm of thousands of clients at once finds room
/// instead of overflowing one queue and waiting for SYN retransmits (1 s, 3 s, 7 s …).
const LISTENERS_PER_WORKER: usize = 4;
/// How long binding retries while the address is in use.
const BIND_PATIENCE: Duration = Duration::from_secs(3);
/// How long the process waits for workers after SIGTERM before exiting anyway.
const STOP_DEADLINE: Duration = Duration::from_millis(4500);

/// A running server: its workers and the addresses it listens on.
pub struct Server {
    pub addrs: Vec<SocketAddr>,
    pub driver: &'static str,
    mesh: Arc<Mesh>,
    done: mpsc::Receiver<usize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Runs `bind` until it stops failing with "address in use", for up to `BIND_PATIENCE`: a
/// server restarted right after a stop can find its port held for a moment by the previous
/// process's closing connections.
fn patiently<T>(mut bind: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let deadline = Instant::now() + BIND_PATIENCE;
    loop {
        match bind() {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            r => return r,
        }
    }
}

fn listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// SO_REUSEPORT would let a second herald (or anything else of the same user) share a port
/// already in use, silently splitting its traffic: check with a plain bind first.
fn refuse_if_taken(addr: SocketAddr) -> Result<(), String> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(|e| e.to_string())?;
    probe.set_reuse_address(true).map_err(|e| e.to_string())?;
    patiently(|| probe.bind(&addr.into())).map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// Decides, once for every worker, whether they run on io_uring: `auto` takes it where the
/// probe finds it usable and otherwise says why, once, at warn; `uring` refuses to start
/// without it, naming the cause.
fn choose_driver(want: Driver) -> Result<bool, String> {
    if want == Driver::Epoll {
        return Ok(false);
    }
    match driver::probe() {
        Ok(()) => Ok(true),
        Err(why) if want == Driver::Uring => Err(format!("io_uring requested but unavailable: {why}")),
        Err(why) => {
            tracing::warn!("io_uring unavailable, running on epoll: {why}");
            Ok(false)
        }
    }
}

impl Server {
    /// Binds every listener, starts the workers and waits until each runs.
    pub fn start(config: Config) -> Result<Server, String> {
        let config = Arc::new(config);
        let nofile = sys::raise_open_files_limit();
        let cap =
            (config.max_connections as u64).min(nofile.saturating_sub(FD_RESERVE + 4 * config.workers as u64)) as usize;
        let mesh = Arc::new(Mesh::new(config.workers));
        // Names every topic life of this run (see `pubsub::owner`): a cursor from another run is a gap.
        let run_key = fastrand::u64(..);
        let uring = choose_driver(config.driver)?;

        // One listener per worker per address; a port 0 is resolved by the first bind so
        // that every worker shares the same port.
        let mut addrs = Vec::new();
        let mut per_worker: Vec<Vec<std::net::TcpListener>> = (0..config.workers).map(|_| Vec::new()).collect();
        for &want in &config.listen {
            refuse_if_taken(want)?;
            let first = patiently(|| listener(want)).map_err(|e| format!("cannot listen on {want}: {e}"))?;
            let addr = first.local_addr().map_err(|e| e.to_string())?;
            per_worker[0].push(first);
            for (w, listeners) in per_worker.iter_mut().enumerate() {
                let more = if w == 0 { LISTENERS_PER_WORKER - 1 } else { LISTENERS_PER_WORKER };
                for _ in 0..more {
                    listeners.push(listener(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?);
                }
            }
            addrs.push(addr);
        }

        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<&'static str, String>>();
        let (done_tx, done) = mpsc::channel::<usize>();
        let mut threads = Vec::new();
        for (id, listeners) in per_worker.into_iter().enumerate() {
            let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
            let (config, mesh, ready, done) = (config.clone(), mesh.clone(), ready_tx.clone(), done_tx.clone());
            let t = std::thread::Builder::new()
                .name(format!("herald-w{id}"))
                .spawn(move || {
                    if let Some(core) = core
                        && !core_affinity::set_for_current(core)
                    {
                        // Pinning only helps (warm caches, no migrations): run unpinned rather
                        // than fail. What refuses it (a seccomp filter without
                        // sched_setaffinity, a cpuset without the core) usually refuses every
                        // worker, so one warning is enough.
                        static WARNED: std::sync::Once = std::sync::Once::new();
                        WARNED.call_once(|| {
                            tracing::warn!(
                                worker = id,
                                core = core.id,
                                "cannot pin workers to cores (sched_setaffinity failed); running unpinned"
                            )
                        });
                    }
                    let args = worker::Args { id, config, mesh, listeners, cap, run_key, uring };
                    worker::run_on_driver(args, ready);
                    let _ = done.send(id);
                })
                .map_err(|e| format!("cannot start worker {id}: {e}"))?;
            threads.push(t);
        }
        let mut driver = "";
        for _ in 0..config.workers {
            match ready_rx.recv() {
                // A worker that could not make its big ring runs on epoll (it warned): say so.
                Ok(Ok(d)) if driver.is_empty() || driver == d => driver = d,
                Ok(Ok(_)) => driver = "mixed io_uring/epoll",
                Ok(Err(e)) => {
                    mesh.begin_shutdown();
                    return Err(e);
                }
                Err(_) => return Err("a worker died while starting".into()),
            }
        }
        tracing::info!(
            driver,
            workers = config.workers,
            open_files_limit = nofile,
            connection_cap = cap,
            max_connections = config.max_connections,
            "herald {} started: {driver} driver, {} worker(s), open-files limit {nofile} -> up to {cap} connections",
            crate::config::VERSION.lines().next().unwrap_or_default(),
            config.workers,
        );
        if (cap as u64) < config.max_connections as u64 {
            tracing::warn!(
                "max_connections {} exceeds what the open-files limit allows; raise LimitNOFILE / ulimit -n",
                config.max_connections
            );
        }
        for w in config.warnings() {
            tracing::warn!("{w}");
        }
        for a in &addrs {
            tracing::info!("listening on {a}");
        }
        Ok(Server { addrs, driver, mesh, done, threads })
    }

    /// Stops gracefully: stop accepting, end streams cleanly, wait for the workers (bounded).
    pub fn stop(self) {
        self.mesh.begin_shutdown();
        let deadline = Instant::now() + STOP_DEADLINE;
        let mut left = self.threads.len();
        while left > 0 {
            match self.done.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(_) => left -= 1,
                Err(_) => {
                    tracing::warn!("{left} worker(s) still busy at the stop deadline; exiting anyway");
                    return;
                }
            }
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

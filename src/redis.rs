//! A connection to Redis on a worker's own monoio runtime (cluster mode, issue 16): commands
//! go out in pipelined batches and their replies come back in order, one round trip a batch.
//!
//! A batch is the unit because herald's owner works in batches already (it drains its inbox
//! and answers together): one batch of publishes is one write and one read, however many
//! there are. A connection is used by one task at a time (`&mut self`); nothing here retries
//! or reconnects, which is the caller's to decide — what it needs to know is whether a failed
//! batch may have been carried out (`Failed::sent`): a publish that never left is a 503, one
//! whose answer was lost is a 504 (API.md §8).

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::time::timeout;

use crate::proto::resp::{self, ProtocolError, Reply};

pub mod publish;
pub mod subscriber;

/// Why a batch has no replies. The connection is not to be used again after any of them.
#[derive(Debug, thiserror::Error)]
#[error("{why}")]
pub struct Failed {
    /// Some of the batch may have reached Redis and been carried out.
    pub sent: bool,
    pub why: Why,
}

#[derive(Debug, thiserror::Error)]
pub enum Why {
    #[error("redis connection: {0}")]
    Io(#[from] io::Error),
    #[error("redis closed the connection")]
    Closed,
    #[error("redis answered nothing within {0:?}")]
    TimedOut(Duration),
    #[error("redis broke the protocol: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("redis sent what was not asked for: {0:?}")]
    Unexpected(Reply),
    #[error("this redis connection failed before; open another")]
    Broken,
}

pub struct Connection {
    stream: TcpStream,
    /// Replies read and not yet taken (a read may end inside one).
    inbuf: BytesMut,
    /// Most a batch may wait for its replies.
    patience: Duration,
    /// A batch failed: replies may be missing or still on their way, so nothing read from
    /// here could be matched to its command any more.
    broken: bool,
}

impl Connection {
    /// Connects to `addr` (`host:port`), giving up after `patience`, which also bounds every
    /// batch's wait for its replies.
    pub async fn connect(addr: &str, patience: Duration) -> Result<Connection, Failed> {
        let not_sent = |why| Failed { sent: false, why };
        let stream = match timeout(patience, TcpStream::connect(addr)).await {
            Ok(r) => r.map_err(|e| not_sent(Why::Io(e)))?,
            Err(_) => return Err(not_sent(Why::TimedOut(patience))),
        };
        // Batches are written whole and waited on: nothing to gain from Nagle's delay.
        stream.set_nodelay(true).map_err(|e| not_sent(Why::Io(e)))?;
        Ok(Connection { stream, inbuf: BytesMut::with_capacity(16 << 10), patience, broken: false })
    }

    /// Sends `batch` (commands encoded with `resp::encode`, `count` of them) and returns
    /// their `count` replies in order. A reply that is a Redis error (`-ERR …`) is a reply,
    /// not a failure: that command failed, the connection is fine.
    pub async fn batch(&mut self, batch: BytesMut, count: usize) -> Result<Vec<Reply>, Failed> {
        if count == 0 {
            return Ok(Vec::new());
        }
        if self.broken {
            return Err(Failed { sent: false, why: Why::Broken });
        }
        // Broken until every reply is in: a future dropped midway (a select, a shutdown)
        // leaves replies on their way that the next batch would take for its own.
        self.broken = true;
        let patience = self.patience;
        let mut replies = Vec::with_capacity(count);
        // One deadline for the write and the replies: a stopped Redis stops reading too.
        let done = timeout(patience, async {
            let (written, _) = self.stream.write_all(batch).await;
            written?;
            self.read_replies(&mut replies, count).await
        })
        .await;
        match done {
            Ok(Ok(())) => {
                self.broken = false;
                Ok(replies)
            }
            // Part of the batch may have gone out whatever failed.
            Ok(Err(why)) => Err(Failed { sent: true, why }),
            Err(_) => Err(Failed { sent: true, why: Why::TimedOut(patience) }),
        }
    }

    /// One command, for setting up (`AUTH`, `SELECT`, `SCRIPT LOAD`, `INFO`).
    pub async fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Reply, Failed> {
        let mut out = BytesMut::new();
        resp::encode(&mut out, args);
        let mut replies = self.batch(out, 1).await?;
        replies.pop().ok_or(Failed { sent: true, why: Why::Closed })
    }

    /// Writes `batch` without waiting for replies (a subscriber's commands, whose answers
    /// come among its messages), within the connection's patience.
    pub async fn send(&mut self, batch: BytesMut) -> Result<(), Failed> {
        if self.broken {
            return Err(Failed { sent: false, why: Why::Broken });
        }
        self.broken = true;
        let patience = self.patience;
        match timeout(patience, self.stream.write_all(batch)).await {
            Ok((Ok(_), _)) => {
                self.broken = false;
                Ok(())
            }
            // Part of it may have gone out.
            Ok((Err(e), _)) => Err(Failed { sent: true, why: Why::Io(e) }),
            Err(_) => Err(Failed { sent: true, why: Why::TimedOut(patience) }),
        }
    }

    /// The next reply or pushed message, however long it takes. Dropped before it returns,
    /// the connection is broken (a reply may have been half read).
    pub async fn next(&mut self) -> Result<Reply, Why> {
        if self.broken {
            return Err(Why::Broken);
        }
        self.broken = true;
        let mut one = Vec::with_capacity(1);
        self.read_replies(&mut one, 1).await?;
        self.broken = false;
        one.pop().ok_or(Why::Closed)
    }

    async fn read_replies(&mut self, replies: &mut Vec<Reply>, count: usize) -> Result<(), Why> {
        loop {
            while replies.len() < count {
                match resp::decode(&mut self.inbuf)? {
                    Some(reply) => replies.push(reply),
                    None => break,
                }
            }
            if replies.len() == count {
                return Ok(());
            }
            // Read into a buffer of its own and append: `inbuf` stays with the connection
            // whatever happens to this future.
            let (res, scratch) = self.stream.read(vec![0u8; 16 << 10]).await;
            let n = res?;
            self.inbuf.extend_from_slice(&scratch[..n.min(scratch.len())]);
            if n == 0 {
                return Err(Why::Closed);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};

    /// A `redis-server` of its own on a free loopback port, stopped when dropped; `None`
    /// where none is installed (CI installs it and sets `HERALD_REQUIRE_REDIS`).
    pub(crate) struct RedisServer {
        pub(crate) child: Child,
        pub(crate) addr: String,
    }

    impl RedisServer {
        pub(crate) fn start() -> Option<RedisServer> {
            let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
            let spawned = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child = match spawned {
                Ok(c) => c,
                Err(e) if std::env::var_os("HERALD_REQUIRE_REDIS").is_some() => panic!("redis-server: {e}"),
                Err(_) => return None,
            };
            let addr = format!("127.0.0.1:{port}");
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(&addr).is_err() {
                assert!(std::time::Instant::now() < deadline, "redis-server never listened on {addr}");
                std::thread::sleep(Duration::from_millis(10));
            }
            Some(RedisServer { child, addr })
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    pub(crate) fn run<F: std::future::Future>(f: F) -> F::Output {
        let mut rt =
            monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build().expect("a monoio runtime");
        rt.block_on(f)
    }

    fn text(r: &Reply) -> &str {
        std::str::from_utf8(r.as_bytes().unwrap_or_default()).unwrap_or_default()
    }

    #[test]
    fn a_batch_of_commands_is_one_round_trip_with_replies_in_order() {
        let Some(redis) = RedisServer::start() else { return };
        run(async {
            let mut c = Connection::connect(&redis.addr, Duration::from_secs(10)).await.expect("connect");
            assert_eq!(text(&c.call(&["PING"]).await.expect("ping")), "PONG");
            let mut out = BytesMut::new();
            let n = 10_000;
            for _ in 0..n {
                resp::encode(&mut out, &["INCR", "counter"]);
            }
            resp::encode(&mut out, &["NOSUCHCOMMAND"]);
            resp::encode(&mut out, &["GET", "counter"]);
            let replies = c.batch(out, n + 2).await.expect("a batch");
            assert_eq!(replies.len(), n + 2);
            for (i, r) in replies[..n].iter().enumerate() {
                assert_eq!(r, &Reply::Integer(i as i64 + 1));
            }
            // A command Redis refuses is a reply; the connection goes on.
            assert!(replies[n].is_error(), "{:?}", replies[n]);
            assert_eq!(replies[n + 1].as_int(), Some(n as i64));
            // A reply larger than a read, and a script.
            let big = "x".repeat(1 << 20);
            assert_eq!(text(&c.call(&["SET", "big", &big]).await.expect("set")), "OK");
            assert_eq!(c.call(&["GET", "big"]).await.expect("get").as_bytes().map(<[u8]>::len), Some(1 << 20));
            let script = "return {redis.call('INCRBY', KEYS[1], ARGV[1]), ARGV[2]}";
            let r = c.call(&["EVAL", script, "1", "counter", "5", "tag"]).await.expect("eval");
            let items = r.as_array().expect("an array");
            assert_eq!((items[0].as_int(), text(&items[1])), (Some(n as i64 + 5), "tag"));
        });
    }

    #[test]
    fn a_lost_server_is_a_failure_that_says_whether_the_batch_may_have_run() {
        let Some(mut redis) = RedisServer::start() else { return };
        let addr = redis.addr.clone();
        run(async move {
            let mut c = Connection::connect(&addr, Duration::from_secs(10)).await.expect("connect");
            assert!(c.call(&["PING"]).await.is_ok());
            let _ = redis.child.kill();
            let _ = redis.child.wait();
            let failed = c.call(&["INCR", "n"]).await.expect_err("no server");
            assert!(failed.sent, "a batch written before the loss was found may have run: {failed:?}");
            let refused = Connection::connect(&addr, Duration::from_secs(10)).await.err().expect("nobody listens");
            assert!(!refused.sent, "{refused:?}");
        });
    }

    #[test]
    fn a_server_that_answers_nothing_times_out() {
        // Something that accepts and never answers, as a hung or paused Redis would.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = silent.local_addr().expect("addr").to_string();
        run(async move {
            let mut c = Connection::connect(&addr, Duration::from_millis(300)).await.expect("connect");
            let failed = c.call(&["PING"]).await.expect_err("no answer");
            assert!(failed.sent && matches!(failed.why, Why::TimedOut(_)), "{failed:?}");
            // Its late reply could be taken for the next command's: nothing more goes out.
            let after = c.call(&["PING"]).await.expect_err("broken");
            assert!(!after.sent && matches!(after.why, Why::Broken), "{after:?}");
            // Likewise when the caller gives up first: the future dropped midway.
            let mut c = Connection::connect(&addr, Duration::from_secs(10)).await.expect("connect");
            assert!(timeout(Duration::from_millis(50), c.call(&["PING"])).await.is_err());
            let after = c.call(&["PING"]).await.expect_err("broken");
            assert!(!after.sent && matches!(after.why, Why::Broken), "{after:?}");
        });
        drop(silent);
    }
}

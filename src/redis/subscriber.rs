//! A subscriber connection (cluster mode, issue 16): the channels of the topics a worker
//! owns and has local interest in, and the events published on them by any node.
//!
//! Commands go out in batches of at most `MAX_PER_COMMAND` channels; their confirmations
//! come back among the messages, in order, as [`Push`]es. The caller keeps the state (which
//! topics are subscribing, live, leaving), confirms each subscription before reading the
//! topic's history (so nothing published in between is missed), and probes an idle
//! connection with [`Subscriber::ping`]: a subscriber connection that silently stopped
//! receiving is the failure peers have shipped (a node delivering nothing while healthy).

use bytes::{Bytes, BytesMut};

use super::{Connection, Failed, Why};
use crate::proto::resp::{self, Reply};

/// Most channels named in one SUBSCRIBE or UNSUBSCRIBE.
pub const MAX_PER_COMMAND: usize = 512;

/// What a subscriber connection receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    Message {
        channel: Bytes,
        payload: Bytes,
    },
    /// A channel's subscription is in force; `count` channels in all.
    Subscribed {
        channel: Bytes,
        count: i64,
    },
    Unsubscribed {
        channel: Bytes,
        count: i64,
    },
    /// The answer to [`Subscriber::ping`]: the connection is alive and in order.
    Pong,
}

pub struct Subscriber {
    conn: Connection,
}

impl Subscriber {
    pub fn new(conn: Connection) -> Subscriber {
        Subscriber { conn }
    }

    /// Subscribes to `channels`, in as many commands as they take; their confirmations
    /// come as `Push::Subscribed`.
    pub async fn subscribe(&mut self, channels: &[&str]) -> Result<(), Failed> {
        self.command(b"SUBSCRIBE", channels).await
    }

    pub async fn unsubscribe(&mut self, channels: &[&str]) -> Result<(), Failed> {
        self.command(b"UNSUBSCRIBE", channels).await
    }

    /// Asks for a `Push::Pong`, behind everything already sent to this connection.
    pub async fn ping(&mut self) -> Result<(), Failed> {
        let mut out = BytesMut::new();
        resp::encode(&mut out, &["PING"]);
        self.conn.send(out).await
    }

    async fn command(&mut self, verb: &[u8], channels: &[&str]) -> Result<(), Failed> {
        let mut out = BytesMut::new();
        for chunk in channels.chunks(MAX_PER_COMMAND) {
            let mut args: Vec<&[u8]> = Vec::with_capacity(chunk.len() + 1);
            args.push(verb);
            args.extend(chunk.iter().map(|c| c.as_bytes()));
            resp::encode(&mut out, &args);
        }
        if out.is_empty() {
            return Ok(());
        }
        self.conn.send(out).await
    }

    /// The next thing received. An error here ends the connection: every subscription on it
    /// is gone, and what was published meanwhile must be read back from the streams.
    pub async fn next(&mut self) -> Result<Push, Why> {
        let reply = self.conn.next().await?;
        push(&reply).ok_or(Why::Unexpected(reply))
    }
}

/// A reply as a subscriber connection's push.
fn push(reply: &Reply) -> Option<Push> {
    // With no channel subscribed, RESP2 answers PING as to any client.
    if matches!(reply, Reply::Status(s) if &s[..] == b"PONG") {
        return Some(Push::Pong);
    }
    let items = reply.as_array()?;
    let kind = items.first()?.as_bytes()?;
    let bulk = |i: usize| items.get(i).and_then(Reply::as_bytes).map(Bytes::copy_from_slice);
    match kind {
        b"message" => Some(Push::Message { channel: bulk(1)?, payload: bulk(2)? }),
        b"subscribe" => Some(Push::Subscribed { channel: bulk(1)?, count: items.get(2)?.as_int()? }),
        b"unsubscribe" => Some(Push::Unsubscribed { channel: bulk(1)?, count: items.get(2)?.as_int()? }),
        b"pong" => Some(Push::Pong),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::Cursor;
    use crate::redis::publish::{self, Layout, Outcome, Publish};
    use crate::redis::tests::{RedisServer, run};
    use std::time::Duration;

    #[test]
    fn events_published_by_the_script_reach_a_subscriber_after_its_confirmation() {
        let Some(redis) = RedisServer::start() else { return };
        run(async {
            let patience = Duration::from_secs(10);
            let mut c = Connection::connect(&redis.addr, patience).await.expect("connect");
            let mut sub = Subscriber::new(Connection::connect(&redis.addr, patience).await.expect("connect"));
            let layout = Layout {
                prefix: "h".into(),
                history: 100,
                stream_ttl_ms: 60_000,
                meta_ttl_ms: 3_600_000,
                idempotency_ttl_ms: 60_000,
            };
            // More channels than one command takes: confirmed one by one, in order.
            let names: Vec<String> = (0..600).map(|i| layout.channel(&format!("t{i}"))).collect();
            let channels: Vec<&str> = names.iter().map(String::as_str).collect();
            sub.subscribe(&channels).await.expect("subscribe");
            for (i, name) in names.iter().enumerate() {
                let expected =
                    Push::Subscribed { channel: Bytes::copy_from_slice(name.as_bytes()), count: i as i64 + 1 };
                assert_eq!(sub.next().await.expect("a confirmation"), expected);
            }
            let sha = publish::load(&mut c).await.expect("load").expect("a sha");
            let id = publish::run_id(&mut c).await.expect("info").expect("run_id");
            let mut out = BytesMut::new();
            for data in [&b"a"[..], b"b:c", b""] {
                let p = Publish { topic: "t7", kind: Some("goal:x"), data, key: None };
                layout.encode(&mut out, &sha, &p, 0x5eed, &id);
            }
            let replies = c.batch(out, 3).await.expect("publishes");
            let cursors: Vec<Outcome> = replies.iter().filter_map(publish::outcome).collect();
            assert_eq!(cursors, (1..=3).map(|s| Outcome::Published(Cursor::new(0x5eed, s))).collect::<Vec<_>>());
            for (seq, data) in [(1, &b"a"[..]), (2, b"b:c"), (3, b"")] {
                let Push::Message { channel, payload } = sub.next().await.expect("a message") else {
                    panic!("not a message")
                };
                assert_eq!(&channel[..], layout.channel("t7").as_bytes());
                let m = publish::message(&payload).expect("a script message");
                assert_eq!(
                    (m.cursor, m.kind.as_deref(), &m.data[..]),
                    (Cursor::new(0x5eed, seq), Some(&b"goal:x"[..]), data)
                );
            }
            sub.ping().await.expect("ping");
            assert_eq!(sub.next().await.expect("pong"), Push::Pong);
            sub.unsubscribe(&channels[..1]).await.expect("unsubscribe");
            assert!(matches!(sub.next().await.expect("confirmation"), Push::Unsubscribed { count: 599, .. }));
            // Redis drops subscriber connections (a restart, CLIENT KILL, the output buffer
            // limit): the subscriber is told, it does not hang.
            let killed = c.call(&["CLIENT", "KILL", "TYPE", "pubsub"]).await.expect("kill");
            assert_eq!(killed.as_int(), Some(1));
            assert!(matches!(sub.next().await, Err(Why::Closed | Why::Io(_))));
        });
    }

    #[test]
    fn pushes_are_read_from_their_replies() {
        let bulk = |s: &str| Reply::Bulk(Some(Bytes::copy_from_slice(s.as_bytes())));
        let msg = Reply::Array(Some(vec![bulk("message"), bulk("c"), bulk("p")]));
        assert_eq!(
            push(&msg),
            Some(Push::Message { channel: Bytes::from_static(b"c"), payload: Bytes::from_static(b"p") })
        );
        assert_eq!(push(&Reply::Array(Some(vec![bulk("pong"), bulk("")]))), Some(Push::Pong));
        assert_eq!(push(&Reply::Array(Some(vec![bulk("message"), bulk("c")]))), None);
        assert_eq!(push(&Reply::Status(Bytes::from_static(b"PONG"))), Some(Push::Pong));
        assert_eq!(push(&Reply::Integer(1)), None);
    }
}

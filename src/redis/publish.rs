//! The publish script (cluster mode, issue 16): one Lua script per publish assigns the event
//! its cursor, stores it and publishes it to every node, atomically (Redis runs scripts one
//! at a time), so a topic's events have one order everywhere and no id is assigned that was
//! not stored.
//!
//! Keys of topic T (one hash tag, ready for Redis Cluster): `{prefix}:{T}:m`, the meta hash
//! (`e` epoch as 16 hex digits, `s` the last sequence, `r` the `run_id` of the Redis process
//! that minted `e`); `{prefix}:{T}:x`, the stream, entry ids `<seq>-0` with fields `d` (data)
//! and `t` (type); `{prefix}:{T}:i:<key>`, an idempotency key's `<epoch>:<seq>:<event
//! fingerprint>`; channel `{prefix}:{T}`.
//!
//! **No sequence is ever issued twice under an epoch clients have seen**: the epoch is
//! replaced (and the stream emptied) whenever meta is gone *or was written under another
//! identity of the Redis it runs on*, its `run_id` and `master_replid` read inside the script:
//! a restart from a snapshot or AOF, a promoted replica, or a master that resynced from a
//! lagging replica and was promoted back (same process, new replication id) may all bring back
//! an older `s`, and a new epoch turns that into an explicit gap instead of reissued ids. Nothing here
//! depends on a clock: sequences come from `HINCRBY`, epochs are random, stream ids are given.

use bytes::{Bytes, BytesMut};

use super::{Connection, Failed};
use crate::cursor::Cursor;
use crate::proto::resp::{self, Reply};

/// The script. KEYS: meta, stream, idempotency key (meta again when there is none). ARGV:
/// data, type (`""` for none), stream length, stream TTL (ms), meta TTL (ms), an epoch to
/// adopt when a new one is needed (fresh and random for every call: a constant would reissue
/// sequences after meta is lost), unused (was the node's idea of the identity, now read in the
/// script), the idempotency TTL (ms, `0` for none), the channel, the event's fingerprint (the
/// same on every node and version: a fixed-key hash). Returns `{epoch, seq, state}`: state 0
/// published, 1 a duplicate (the first event's cursor), 2 the key was used for another event.
pub const SCRIPT: &str = r#"
local info = redis.call('INFO', 'server') .. redis.call('INFO', 'replication')
local id = (string.match(info, 'run_id:(%w+)') or '?') .. ':' .. (string.match(info, 'master_replid:(%w+)') or '?')
local m = redis.call('HMGET', KEYS[1], 'e', 's', 'r')
local e = m[1]
if not e or not m[2] or m[3] ~= id then
  e = ARGV[6]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', e, 's', 0, 'r', id)
end
if ARGV[8] ~= '0' then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    local se, ss, sf = string.match(seen, '^(%x+):(%d+):(.*)$')
    if se == e then
      if sf == ARGV[10] then return {e, tonumber(ss), 1} end
      return {e, tonumber(ss), 2}
    end
  end
end
local seq = redis.call('HINCRBY', KEYS[1], 's', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '=', ARGV[3], string.format('%d-0', seq), 'd', ARGV[1], 't', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', ARGV[9], string.format('v1:%s:%d:%d:', e, seq, #ARGV[2]) .. ARGV[2] .. ARGV[1])
if ARGV[8] ~= '0' then
  redis.call('SET', KEYS[3], string.format('%s:%d:', e, seq) .. ARGV[10], 'PX', ARGV[8])
end
return {e, seq, 0}
"#;

/// One publish, as the script takes it.
pub struct Publish<'a> {
    pub topic: &'a str,
    pub kind: Option<&'a str>,
    pub data: &'a [u8],
    /// The idempotency key and the event's fingerprint.
    pub key: Option<(&'a str, u64)>,
}

/// Where a cluster's keys live and how long they stay.
pub struct Layout {
    /// `redis_prefix`: separates clusters sharing a Redis.
    pub prefix: String,
    /// Events kept per topic.
    pub history: usize,
    pub stream_ttl_ms: u64,
    /// Much longer than the stream's: a cursor older than the stream then finds its epoch
    /// and is told of a gap, rather than meeting a new epoch by chance.
    pub meta_ttl_ms: u64,
    pub idempotency_ttl_ms: u64,
}

/// What the script did with one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Published(Cursor),
    Duplicate(Cursor),
    KeyReused,
}

impl Layout {
    pub fn meta(&self, topic: &str) -> String {
        format!("{}:{{{topic}}}:m", self.prefix)
    }

    pub fn stream(&self, topic: &str) -> String {
        format!("{}:{{{topic}}}:x", self.prefix)
    }

    pub fn channel(&self, topic: &str) -> String {
        format!("{}:{{{topic}}}", self.prefix)
    }

    fn idempotency(&self, topic: &str, key: &str) -> String {
        format!("{}:{{{topic}}}:i:{key}", self.prefix)
    }

    /// Appends the `EVALSHA` of `p` to `out`; `new_epoch` is adopted if the topic needs one.
    pub fn encode(&self, out: &mut BytesMut, sha: &str, p: &Publish<'_>, new_epoch: u64, run_id: &str) {
        let (meta, stream) = (self.meta(p.topic), self.stream(p.topic));
        let (idem, fingerprint, idem_ttl) = match p.key {
            Some((key, fp)) => (self.idempotency(p.topic, key), format!("{fp:016x}"), self.idempotency_ttl_ms),
            None => (meta.clone(), String::new(), 0),
        };
        let (history, stream_ttl, meta_ttl) =
            (self.history.to_string(), self.stream_ttl_ms.to_string(), self.meta_ttl_ms.to_string());
        let (epoch, idem_ttl, channel) =
            (format!("{:016x}", new_epoch.max(1)), idem_ttl.to_string(), self.channel(p.topic));
        let all: [&[u8]; 16] = [
            b"EVALSHA",
            sha.as_bytes(),
            b"3",
            meta.as_bytes(),
            stream.as_bytes(),
            idem.as_bytes(),
            p.data,
            p.kind.unwrap_or("").as_bytes(),
            history.as_bytes(),
            stream_ttl.as_bytes(),
            meta_ttl.as_bytes(),
            epoch.as_bytes(),
            run_id.as_bytes(),
            idem_ttl.as_bytes(),
            channel.as_bytes(),
            fingerprint.as_bytes(),
        ];
        resp::encode(out, &all);
    }
}

/// The outcome a script reply says, or `None` for a reply that is not one (an error).
pub fn outcome(reply: &Reply) -> Option<Outcome> {
    let [e, s, state] = reply.as_array()? else { return None };
    let epoch = u64::from_str_radix(std::str::from_utf8(e.as_bytes()?).ok()?, 16).ok()?;
    let cursor = Cursor::new(epoch, u64::try_from(s.as_int()?).ok()?);
    match state.as_int()? {
        0 => Some(Outcome::Published(cursor)),
        1 => Some(Outcome::Duplicate(cursor)),
        2 => Some(Outcome::KeyReused),
        _ => None,
    }
}

/// An event as the script publishes it on its topic's channel: `v1:<epoch>:<seq>:<type
/// length>:<type><data>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub cursor: Cursor,
    pub kind: Option<Bytes>,
    pub data: Bytes,
}

/// Reads a channel message; `None` if it is not one the script wrote.
pub fn message(raw: &Bytes) -> Option<Message> {
    let mut parts = raw.splitn(5, |&b| b == b':');
    let (version, epoch, seq, kind_len) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let rest_at = version.len() + epoch.len() + seq.len() + kind_len.len() + 4;
    if version != b"v1" || raw.len() < rest_at {
        return None;
    }
    let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_owned);
    let epoch = u64::from_str_radix(&text(epoch)?, 16).ok()?;
    let seq: u64 = text(seq)?.parse().ok()?;
    let kind_len: usize = text(kind_len)?.parse().ok()?;
    let kind_end = rest_at.checked_add(kind_len).filter(|&end| end <= raw.len())?;
    let kind = (kind_len > 0).then(|| raw.slice(rest_at..kind_end));
    Some(Message { cursor: Cursor::new(epoch, seq), kind, data: raw.slice(kind_end..) })
}

/// Loads the script; its SHA-1, for `EVALSHA`.
pub async fn load(c: &mut Connection) -> Result<Result<String, Reply>, Failed> {
    let reply = c.call(&["SCRIPT", "LOAD", SCRIPT]).await?;
    let sha = match &reply {
        Reply::Bulk(Some(b)) if b.len() == 40 && b.iter().all(u8::is_ascii_hexdigit) => {
            String::from_utf8_lossy(b).into_owned()
        }
        // LOADING after a restart, NOPERM, …: not a SHA to call.
        _ => return Ok(Err(reply)),
    };
    Ok(Ok(sha))
}

/// This Redis process's `run_id` (`INFO server`): a restart or a failover changes it.
pub async fn run_id(c: &mut Connection) -> Result<Option<String>, Failed> {
    let reply = c.call(&["INFO", "server"]).await?;
    let text = String::from_utf8_lossy(reply.as_bytes().unwrap_or_default()).into_owned();
    Ok(text.lines().find_map(|l| l.strip_prefix("run_id:")).map(|id| id.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::tests::{RedisServer, run};
    use std::time::Duration;

    fn layout() -> Layout {
        Layout {
            prefix: "herald".into(),
            history: 3,
            stream_ttl_ms: 60_000,
            meta_ttl_ms: 3_600_000,
            idempotency_ttl_ms: 60_000,
        }
    }

    async fn publish(c: &mut Connection, sha: &str, p: &Publish<'_>, epoch: u64, run_id: &str) -> Outcome {
        let mut out = BytesMut::new();
        layout().encode(&mut out, sha, p, epoch, run_id);
        let reply = c.batch(out, 1).await.expect("a reply").remove(0);
        outcome(&reply).unwrap_or_else(|| panic!("not an outcome: {reply:?}"))
    }

    fn plain<'a>(topic: &'a str, data: &'a [u8]) -> Publish<'a> {
        Publish { topic, kind: None, data, key: None }
    }

    #[test]
    fn sequences_epochs_idempotency_and_another_redis_process() {
        let Some(redis) = RedisServer::start() else { return };
        run(async {
            let mut c = Connection::connect(&redis.addr, Duration::from_secs(10)).await.expect("connect");
            let sha = load(&mut c).await.expect("script loaded").expect("a sha");
            let id = run_id(&mut c).await.expect("info").expect("a run_id");
            // The first publish adopts the epoch given; later ones keep it and count on.
            for seq in 1..=5 {
                assert_eq!(
                    publish(&mut c, &sha, &plain("t", b"x"), 0xabc + seq, &id).await,
                    Outcome::Published(Cursor::new(0xabc + 1, seq))
                );
            }
            // The stream keeps `history` events, under their sequences as ids.
            let ids = c.call(&["XRANGE", "herald:{t}:x", "-", "+"]).await.expect("xrange");
            let ids: Vec<&[u8]> =
                ids.as_array().expect("entries").iter().filter_map(|e| e.as_array()?[0].as_bytes()).collect();
            assert_eq!(ids, [&b"3-0"[..], b"4-0", b"5-0"]);
            // Idempotency: one cursor for the retry, nothing stored again; another event refused.
            let keyed = Publish { topic: "t", kind: Some("k"), data: b"y", key: Some(("order-7", 42)) };
            let first = publish(&mut c, &sha, &keyed, 1, &id).await;
            assert_eq!(first, Outcome::Published(Cursor::new(0xabd, 6)));
            assert_eq!(publish(&mut c, &sha, &keyed, 1, &id).await, Outcome::Duplicate(Cursor::new(0xabd, 6)));
            let other = Publish { key: Some(("order-7", 43)), ..keyed };
            assert_eq!(publish(&mut c, &sha, &other, 1, &id).await, Outcome::KeyReused);
            assert_eq!(c.call(&["HGET", "herald:{t}:m", "s"]).await.expect("meta").as_int(), Some(6));
            // Meta written under another identity of Redis (a restart from a snapshot, a
            // promoted replica, a master resynced from a replica and promoted back: another
            // run_id or replication id): a new epoch, so no sequence is issued again under the
            // old one; the old idempotency key belongs to the old epoch and publishes again.
            c.call(&["HSET", "herald:{t}:m", "r", "restored-elsewhere:0"]).await.expect("hset");
            assert_eq!(
                publish(&mut c, &sha, &plain("t", b"z"), 0x777, &id).await,
                Outcome::Published(Cursor::new(0x777, 1))
            );
            assert_eq!(c.call(&["XLEN", "herald:{t}:x"]).await.expect("xlen").as_int(), Some(1));
            assert_eq!(publish(&mut c, &sha, &keyed, 0x888, &id).await, Outcome::Published(Cursor::new(0x777, 2)));
            // The identity now stored is this Redis's run_id and replication id.
            let r = c.call(&["HGET", "herald:{t}:m", "r"]).await.expect("meta");
            let r = String::from_utf8_lossy(r.as_bytes().unwrap_or_default()).into_owned();
            assert!(r.starts_with(&format!("{id}:")) && r.len() > id.len() + 30, "{r}");
            // A sequence is written in full however large (Lua would print 1e+14).
            c.call(&["HSET", "herald:{t}:m", "s", "99999999999999"]).await.expect("hset");
            assert_eq!(
                publish(&mut c, &sha, &plain("t", b"big"), 0x1, &id).await,
                Outcome::Published(Cursor::new(0x777, 100_000_000_000_000))
            );
            // Meta lost (evicted, expired, deleted): a new epoch too.
            c.call(&["DEL", "herald:{t}:m"]).await.expect("del");
            assert_eq!(
                publish(&mut c, &sha, &plain("t", b"w"), 0x999, &id).await,
                Outcome::Published(Cursor::new(0x999, 1))
            );
        });
    }

    #[test]
    fn channel_messages_carry_the_cursor_type_and_data() {
        let raw = Bytes::from_static(b"v1:00000000000000ab:7:4:goal1-0: Kane");
        let m = message(&raw).expect("a message");
        assert_eq!(m.cursor, Cursor::new(0xab, 7));
        assert_eq!(m.kind.as_deref(), Some(&b"goal"[..]));
        assert_eq!(&m.data[..], b"1-0: Kane");
        let untyped = message(&Bytes::from_static(b"v1:ab:1:0:")).expect("an empty event");
        assert_eq!((untyped.kind, &untyped.data[..]), (None, &b""[..]));
        for bad in [&b"v2:ab:1:0:x"[..], b"v1:zz:1:0:x", b"v1:ab:1:9:xy", b"v1:ab:-1:0:", b"v1:ab:1", b""] {
            assert_eq!(message(&Bytes::copy_from_slice(bad)), None, "{bad:?}");
        }
    }
}

//! The messages that cross cores, between topic owners and the workers hosting subscribers.

use std::sync::Arc;

use bytes::Bytes;

use crate::cursor::{Cursor, Resume};
use crate::frames::Frame;
use crate::keys::{PublishKey, SubscriptionKey};
use crate::pubsub::probe::ProbePart;

/// Where a reply goes: a worker, the key of the slot there that waits for it (`PublishKey`
/// for a publish, `SubscriptionKey` for a subscription), and an index within it (a batch line, a
/// topic of the subscription). The owner only hands it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo<K> {
    pub worker: u16,
    pub key: K,
    pub index: u32,
}

/// Why an event of a publish was not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The publisher has no right to the event's topic: 403.
    Forbidden,
    /// The event's topic is new and the server already keeps `max_topics`: 503.
    TooManyTopics,
    /// Another event was published to the topic under the same `Idempotency-Key` within
    /// `idempotency_ttl`: 422.
    KeyReused,
}

/// The cursor an event of a publish got; `duplicate` when it was published before under the
/// same `Idempotency-Key` (this is that event's cursor, and nothing was delivered again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    pub cursor: Cursor,
    pub duplicate: bool,
}

/// Which topic names an asker may be shown.
#[derive(Clone)]
pub struct Shows(pub Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl Shows {
    pub fn shows(&self, topic: &str) -> bool {
        (self.0)(topic)
    }
}

impl std::fmt::Debug for Shows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shows")
    }
}

/// Work for a topic's owner.
#[derive(Debug)]
pub enum ToOwner {
    /// Assign a cursor, keep it in history, forward it, reply with the cursor; with an
    /// idempotency `key` seen within `idempotency_ttl`, reply with the first cursor instead.
    Publish {
        topic: Arc<str>,
        kind: Option<Box<str>>,
        data: Bytes,
        ts_micros: u64,
        key: Option<Box<str>>,
        reply: ReplyTo<PublishKey>,
    },
    /// Register `reply.worker` as hosting subscribers of `topic` and reply with the head
    /// and, when resuming, the events after the resume point — in one step, so nothing
    /// falls between. A topic made for an `open_name` (one anyone may name: a public topic,
    /// or a private one without a verified identity behind it) counts against the half of
    /// `max_topics` such names share.
    Subscribe { topic: Arc<str>, resume: Resume, reply: ReplyTo<SubscriptionKey>, open_name: bool },
    /// `worker` no longer hosts subscribers of `topic`.
    Unsubscribe { topic: Arc<str>, worker: u16 },
    /// Periodic housekeeping: expire history by TTL, forget idle topics.
    Tick,
    /// Write `topic`'s newest cursor and what its history holds into `part` (`GET /topics`).
    Describe { topic: Arc<str>, part: ProbePart },
    /// List into `part` the first `limit` names, by name, of the topics here that start with
    /// `prefix`, come after `after`, have subscribers or history, and that `may` shows (the
    /// asker's rights) (`GET /topics?prefix=`).
    List { prefix: Box<str>, after: Option<Box<str>>, limit: usize, may: Shows, part: ProbePart },
    /// Subscriber counts, taken at `asked` (`ts_micros` on the wall clock), of the topics that
    /// `$occupancy:` topics owned here watch, by the `$occupancy:` name: each is published
    /// (type `occupancy`) if it changed and its topic's last value was taken an
    /// `occupancy_interval` before.
    Report { counts: Vec<(Arc<str>, u64)>, ts_micros: u64, asked: std::time::Instant },
    /// `worker` has (`here`) its first subscription of `user` to `topic` (under
    /// `presence_prefixes`), or no longer has any.
    Present { topic: Arc<str>, user: Arc<str>, worker: u16, here: bool },
    /// List into `part` the users present on `topic` (`GET /topics/{topic}/presence`).
    Users { topic: Arc<str>, part: ProbePart },
}

/// Work for a worker hosting subscribers.
#[derive(Debug)]
pub enum ToWorker {
    /// An event to fan out to the local subscribers of its topic.
    Event(Arc<Frame>),
    /// The cursor a publish got, or why it got none.
    Published { reply: ReplyTo<PublishKey>, cursor: Result<Assigned, Refusal> },
    /// The owner registered this worker for a topic (see `ToOwner::Subscribe`).
    Subscribed(Box<SubscribeAck>),
    /// Shed every stream that may be shed and whose groups are not in `except`: tell it to
    /// come back in `delay_ms`, and close it (load shedding, maintenance).
    Shed { delay_ms: u64, except: Arc<[String]> },
    /// Count the subscribers here of each of `topics`, by transport, into `part` (`GET
    /// /topics`).
    Count { topics: Arc<[Arc<str>]>, part: ProbePart },
    /// From this worker's own owner: the `$occupancy:` topic `meta` has subscribers now (or one
    /// with no value to give); count what it watches at once, then every `occupancy_interval`.
    Watched { meta: Arc<str> },
    /// From this worker's own owner: `meta` has no subscribers left; stop counting for it.
    Unwatched { meta: Arc<str> },
}

/// A resume history could not cover.
#[derive(Debug)]
pub struct Gap {
    /// What the client sent, as the notice's `missed_from`.
    pub missed: Arc<str>,
    /// Where the subscriber stands once told: just before the first event replayed.
    pub resume_at: Cursor,
}

#[derive(Debug)]
pub struct SubscribeAck {
    pub reply: ReplyTo<SubscriptionKey>,
    pub topic: Arc<str>,
    /// Where the subscriber stands until something is sent for this topic: its resume
    /// cursor, or the head when it starts live. With a gap, a cursor that reports the gap
    /// again (the client's own, or `0-0` for one it could not read): a multi-topic id sent
    /// before this topic's gap notice must not skip it.
    pub start: Cursor,
    /// The topic's newest cursor when the registration took effect.
    pub head: Cursor,
    /// Set when history could not cover the resume.
    pub gap: Option<Gap>,
    /// Retained events after the resume cursor, oldest first.
    pub replay: Vec<Arc<Frame>>,
    /// The topic was made for this subscription (it had no history and no subscribers): what
    /// a connection's naming budget is charged for.
    pub created: bool,
    /// The topic would have been new and the node keeps `max_topics` already: nothing was
    /// registered.
    pub refused: bool,
}

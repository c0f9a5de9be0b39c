//! The owner side of the pub/sub core: one task per worker that owns the topics hashed to it.
//!
//! For each owned topic it assigns cursors, keeps the history ring, knows which workers host
//! subscribers, and forwards each new event — one shared `Arc<Frame>` — to exactly those
//! workers. Everything for one topic happens on this one task, in inbox order, which is what
//! gives every subscriber the same order and makes "replay then go live" a single step.

use std::collections::hash_map::Entry;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::config::Config;
use bytes::Bytes;

use crate::cursor::{Cursor, Resume};
use crate::frames::Frame;
use crate::pubsub::history::History;
use crate::pubsub::idempotency::{Idempotency, Seen};
use crate::pubsub::msg::{Assigned, Gap, Refusal, SubscribeAck, ToOwner, ToWorker};
use crate::pubsub::parts::{PARTS, Parts};
use crate::pubsub::presence::{Change, Presences};
use crate::pubsub::sequencer::{Sequencer, Stats};
use crate::pubsub::tombstones::Tombstones;
use crate::pubsub::topic::{PRESENCE, occupancy_of, presence_of};
use crate::pubsub::workers::WorkerSet;

struct OwnedTopic {
    epoch: u64,
    head: u64,
    history: History,
    workers: WorkerSet,
    /// When it was last published to (`Owner::tenths`).
    last_publish: u32,
    /// Since when no worker has subscribers of it (its making, or the last one leaving).
    unwatched_since: u32,
    /// The check of the last cursor of the life before this one, if its tombstone was kept
    /// (else 0): who resumes from it missed nothing before this life (see `Epochs`).
    pred: u32,
    /// Made by a subscriber and not published to since (counted in `TopicCount::named`).
    named: bool,
}

impl OwnedTopic {
    fn cursor(&self, seq: u64) -> Cursor {
        Cursor::new(self.epoch, seq)
    }
}

/// How an owner names the lives of its topics, and what it remembers of forgotten ones.
///
/// An epoch is a keyed hash of the run's random key, the owner, the topic's name and the
/// topic's *life*. So two topics never share an epoch (a cursor of one is never a position in
/// another), and a restarted server never reuses one.
///
/// A forgotten topic leaves a tombstone (`Tombstones`, 12 bytes): 64 bits of a keyed hash of
/// its name and 32 of a keyed hash of its name and last cursor, the *check*. When the name
/// comes back, it starts a new life (numbered from 1) and takes its tombstone's check as
/// `OwnedTopic::pred`: a client resuming from a cursor of another life whose check is `pred`
/// saw everything before this life, and stands at its start (`{epoch}-0`): no gap if the
/// life's events are all held. Any other cursor of an old life is a gap, as the forgotten
/// events are gone. Taking the tombstone when the name comes back is what keeps a cursor from
/// answering for more than one life: once that life is forgotten in turn, its own last cursor
/// is the only one that resumes without a gap. A check matching a cursor it was not made from
/// is a chance of 2⁻³² per resume from a stale cursor (keyed, so nobody can aim for it).
///
/// A life that took a tombstone is named by its check: its epoch is a hash of it. A life
/// forgotten without events puts its `pred` back, so the next life has the same epoch, and a
/// client holding that life's `{epoch}-0` (what a stream of an empty topic, a long-poll that
/// timed out, or a gap notice hands out) stands at the start of the next one, as does one
/// holding the last cursor before it. A life without a tombstone is named by the number of
/// tombstone generations dropped so far: a topic that never had events comes back under the
/// same epoch, and one whose tombstone was dropped (the oldest go first, `TOMBSTONES` per
/// owner are bounded) under a new one, with every cursor of its old lives a gap. Two lives of
/// one topic share an epoch (other than on purpose, above) only if their checks do: 2⁻³².
struct Epochs {
    hasher: foldhash::quality::FixedState,
    owner: usize,
    tombstones: Tombstones,
}

/// How often housekeeping visits every topic (see `Owner::housekeep`).
fn sweep_period(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// How long an `$occupancy:` topic nobody watches keeps its value (it is visited by
/// housekeeping up to a sweep later): long enough for a long-poller between polls or a stream
/// reconnecting, short enough that names anyone can make up give their memory back soon.
fn occupancy_grace(interval: Duration) -> Duration {
    (interval * 2).max(Duration::from_secs(10))
}

/// The TTL of `topic`'s history: an `$occupancy:` topic's one value is its current count
/// while it is kept (see `occupancy_grace`), however old.
fn ttl_of(topic: &str, ttl: Duration) -> Duration {
    if occupancy_of(topic).is_some() { Duration::MAX } else { ttl }
}

/// Topics forgotten, since the last time, past which the memory they held is given back to
/// the kernel (and at the first tick that forgets none).
const TRIM_AFTER: usize = 1024;

/// Fewer forgotten than this since the last trim are not worth a trim of their own when the
/// wave ends: subscribers coming and going on topics of their own would have every tick trim.
const TRIM_AT_END: usize = 64;

/// Tombstones kept per owner before the oldest are dropped (a million forgotten topics on a
/// node of two workers): 12 bytes each, at most ~9 MiB per owner with room for merging,
/// against ~500 bytes for a topic kept alive.
const TOMBSTONES: usize = 1 << 19;

impl Epochs {
    fn new(run_key: u64, owner: usize) -> Epochs {
        Epochs {
            hasher: foldhash::quality::FixedState::with_seed(run_key),
            owner,
            tombstones: Tombstones::new(TOMBSTONES),
        }
    }

    /// The epoch of `topic`'s next life, which follows the life whose last cursor's check is
    /// `pred` (0: none kept).
    fn epoch(&self, topic: &str, pred: u32) -> u64 {
        let epoch = if pred != 0 {
            self.hasher.hash_one((self.owner, topic, "after", pred))
        } else {
            self.hasher.hash_one((self.owner, topic, self.tombstones.dropped()))
        };
        // Never 0: `0-0` is the position of a subscription before it is registered.
        epoch.max(1)
    }

    fn name(&self, topic: &str) -> u64 {
        self.hasher.hash_one((topic, "tombstone"))
    }

    /// Where `topic`, being made, starts: the epoch of its next life, and the check of its
    /// last life's last cursor if its tombstone was kept (else 0).
    fn start(&mut self, topic: &str) -> (u64, u32) {
        let pred = self.tombstones.take(self.name(topic)).unwrap_or(0);
        (self.epoch(topic, pred), pred)
    }

    /// `topic` is forgotten: a life with events leaves the check of its last cursor; one
    /// without passes on its `pred` (if it has none, its next life has its epoch anyway).
    fn forget(&mut self, topic: &str, t: &OwnedTopic) {
        if t.head > 0 {
            self.tombstones.put(self.name(topic), check(&self.hasher, topic, t.cursor(t.head)));
        } else if t.pred != 0 {
            self.tombstones.put(self.name(topic), t.pred);
        }
    }
}

/// The check of `last` as the last cursor of `topic`'s life (see `Epochs`); never 0.
fn check(hasher: &foldhash::quality::FixedState, topic: &str, last: Cursor) -> u32 {
    (hasher.hash_one((topic, last.epoch, last.seq)) as u32).max(1)
}

/// The topics one worker owns.
pub struct Owner {
    id: usize,
    epochs: Epochs,
    /// Keyed with foldhash: several times faster than SipHash on short names, and seeded per
    /// process, so clients choosing topic names cannot aim for one bucket.
    topics: Parts<OwnedTopic>,
    /// What `tenths` count from.
    started: Instant,
    /// The part housekeeping visits next, when it last did, and topics forgotten (and whether
    /// a part gave room back) since the heap was last trimmed.
    next_part: usize,
    last_sweep: Instant,
    forgotten_since_trim: usize,
    room_given_back: bool,
    history: usize,
    history_ttl: Duration,
    occupancy_interval: Duration,
    /// Who is on the topics here under `presence_prefixes`.
    presences: Presences,
    /// The idempotency keys of publishes to the topics here, within `idempotency_ttl`.
    keys: Idempotency,
    /// Events held across this owner's rings (kept up to date, for the metrics gauge).
    held: usize,
    /// What they cost (`Frame::cost`), and the most they may: this owner's share of
    /// `max_history_bytes`.
    held_bytes: usize,
    max_held_bytes: usize,
    /// Events evicted to stay within `max_held_bytes`.
    evicted: u64,
    /// Events published through this owner.
    published: u64,
    /// Topics kept across every owner of the node, and the most there may be.
    count: Arc<TopicCount>,
    max_topics: usize,
}

/// The topics every owner of the node keeps, counted together against `max_topics`.
#[derive(Debug, Default)]
pub struct TopicCount {
    /// All of them.
    pub all: AtomicUsize,
    /// Those only named (by subscribers): nothing was published to them since. They may take
    /// at most half of `max_topics`, so subscribers naming topics (anyone can) never lock
    /// publishers out of new topics.
    pub named: AtomicUsize,
}

/// Why a topic is being made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Making {
    Publish,
    /// A subscriber names it. Names anyone may make up (`open_name`: public topics, whoever
    /// asks) may take at most half of `max_topics` in topics only named, so that made-up
    /// names lock out neither publishers nor subscribers of their own private topics (which
    /// only a verified identity names, within what its token grants).
    Subscribe {
        open_name: bool,
    },
}

impl Owner {
    /// The owner of worker `id`; `run_key` is this run's random key (see `Epochs`).
    pub fn new(id: usize, run_key: u64, config: &Config) -> Owner {
        Owner {
            id,
            epochs: Epochs::new(run_key, id),
            topics: Parts::new(run_key),
            next_part: 0,
            started: Instant::now(),
            last_sweep: Instant::now(),
            forgotten_since_trim: 0,
            room_given_back: false,
            history: config.history,
            history_ttl: config.history_ttl,
            occupancy_interval: config.occupancy_interval,
            presences: Presences::new(config.presence_linger),
            keys: Idempotency::new(
                u32::try_from(config.idempotency_ttl.as_millis() / 100).unwrap_or(u32::MAX),
                // Each owner its share: together never more than the bound.
                config.max_idempotency_keys / config.workers,
            ),
            held: 0,
            held_bytes: 0,
            max_held_bytes: usize::try_from(config.max_history_bytes / config.workers as u64).unwrap_or(usize::MAX),
            evicted: 0,
            published: 0,
            count: Arc::default(),
            max_topics: config.max_topics,
        }
    }

    /// `now` in tenths of a second since the owner started: a topic's times in four bytes
    /// each rather than sixteen (an `Instant`), good for 13 years. They decide when an idle
    /// topic is forgotten, which needs no finer grain.
    fn tenths(&self, now: Instant) -> u32 {
        // Not `as_millis() / 100`: that is a 128-bit division, on every message an owner handles.
        let d = now.saturating_duration_since(self.started);
        u32::try_from(d.as_secs() * 10 + u64::from(d.subsec_millis() / 100)).unwrap_or(u32::MAX)
    }

    /// Counts this owner's topics in `count`, which every owner of the node shares.
    pub fn counting_in(mut self, count: Arc<TopicCount>) -> Owner {
        self.count = count;
        self
    }

    /// The topic `name`, made if need be (`true`); `None` when it would be new and the node
    /// keeps `max_topics` already (or, for a subscription, half of it in topics only named).
    /// `now` is in `tenths`.
    fn topic(&mut self, name: &Arc<str>, now: u32, making: Making) -> Option<(&mut OwnedTopic, bool)> {
        let epochs = &mut self.epochs;
        match self.topics.entry(name.clone()) {
            Entry::Occupied(e) => Some((e.into_mut(), false)),
            Entry::Vacant(e) => {
                // Two owners may both take the last place: the cap is exceeded by fewer than
                // the number of workers.
                let full = self.count.all.load(Ordering::Relaxed) >= self.max_topics
                    || (making == (Making::Subscribe { open_name: true })
                        && self.count.named.load(Ordering::Relaxed) >= self.max_topics.div_ceil(2));
                if full {
                    return None;
                }
                let (epoch, pred) = epochs.start(name);
                // Joins and leaves are published only while someone follows: a `$presence:`
                // topic forgotten and made again missed those in between, so its last cursor is
                // a gap, not the start of the new life.
                let pred = if presence_of(name).is_some() { 0 } else { pred };
                self.count.all.fetch_add(1, Ordering::Relaxed);
                let named = matches!(making, Making::Subscribe { .. });
                if named {
                    self.count.named.fetch_add(1, Ordering::Relaxed);
                }
                let t = OwnedTopic {
                    epoch,
                    head: 0,
                    pred,
                    history: History::default(),
                    workers: WorkerSet::default(),
                    last_publish: now,
                    unwatched_since: now,
                    named,
                };
                Some((e.insert(t), true))
            }
        }
    }

    /// Forgets `n` topics from the node's count, `named` of them only named.
    fn forgot(&self, n: usize, named: usize) {
        if n > 0 {
            self.count.all.fetch_sub(n, Ordering::Relaxed);
        }
        if named > 0 {
            self.count.named.fetch_sub(named, Ordering::Relaxed);
        }
    }

    /// Handles one message, pushing what must go out into `out` as (worker, message).
    pub fn handle(&mut self, msg: ToOwner, now: Instant, out: &mut Vec<(usize, ToWorker)>) {
        let tenths = self.tenths(now);
        match msg {
            ToOwner::Publish { topic, kind, data, ts_micros, key, reply } => {
                // The key is checked and remembered here, where the topic's cursors are
                // assigned one at a time: two retries racing through two workers meet here.
                let seen = key.map(|k| self.keys.check(&topic, &k, kind.as_deref(), &data, tenths));
                let cursor = match seen {
                    Some(Seen::Duplicate(cursor)) => Ok(Assigned { cursor, duplicate: true }),
                    Some(Seen::Reused) => Err(Refusal::KeyReused),
                    seen => {
                        let appended = self.append(&topic, kind, data, ts_micros, now, out);
                        if let (Some(Seen::New(ticket)), Ok(c)) = (seen, appended) {
                            self.keys.remember(ticket, c, tenths);
                        }
                        appended.map(|cursor| Assigned { cursor, duplicate: false })
                    }
                };
                out.push((usize::from(reply.worker), ToWorker::Published { reply, cursor }));
            }
            ToOwner::Subscribe { topic, resume, reply, open_name } => {
                let (ttl, hasher) = (ttl_of(&topic, self.history_ttl), self.epochs.hasher.clone());
                let id = self.id;
                let Some((t, created)) = self.topic(&topic, tenths, Making::Subscribe { open_name }) else {
                    let none = Cursor::default();
                    let ack = SubscribeAck {
                        reply,
                        topic,
                        start: none,
                        head: none,
                        gap: None,
                        replay: Vec::new(),
                        created: false,
                        refused: true,
                    };
                    out.push((usize::from(reply.worker), ToWorker::Subscribed(Box::new(ack))));
                    return;
                };
                let before_bytes = t.history.bytes();
                let expired = t.history.expire(now, ttl);
                let expired_bytes = before_bytes - t.history.bytes();
                let meta = occupancy_of(&topic).is_some();
                let first_watch = meta && t.workers.is_empty();
                // Nobody kept an unwatched count current, and there may be none yet: counted at
                // once (published only if it changed, an interval after the last value).
                let count_now = first_watch || (meta && t.history.is_empty());
                t.workers.insert(usize::from(reply.worker));
                let head = t.cursor(t.head);
                // A cursor is a position only in the life of the topic it was issued for, or
                // the start of this life if it was the last of the one before (`pred`).
                let (epoch, pred) = (t.epoch, t.pred);
                let mine = |c: &Cursor| {
                    if c.epoch == epoch {
                        Some(*c)
                    } else {
                        (pred != 0 && check(&hasher, &topic, *c) == pred).then(|| Cursor::new(epoch, 0))
                    }
                };
                // Not ours: `start` is what reports the gap again if the client resumes
                // before it was told (the cursor it sent, or `0-0` for an unreadable id).
                let ours: Option<Result<Cursor, (Cursor, Arc<str>)>> = match &resume {
                    Resume::Live => None,
                    Resume::After(c) => Some(mine(c).ok_or_else(|| (*c, c.to_string().into()))),
                    Resume::Listed { at, all } => {
                        Some(mine(at).or_else(|| all.iter().find_map(mine)).ok_or_else(|| (*at, at.to_string().into())))
                    }
                    Resume::Unknown { cursors, sent } => {
                        Some(cursors.iter().find_map(mine).ok_or_else(|| (Cursor::default(), sent.clone())))
                    }
                };
                let (start, missed, replay) = match ours {
                    // A count is a value, not a change: whoever does not stand at the newest
                    // gets the newest, and has missed nothing.
                    _ if meta => {
                        let at_newest = matches!(ours, Some(Ok(c)) if c.seq == t.head);
                        let replay = if at_newest { Vec::new() } else { t.history.all() };
                        (replay.first().map_or(head, |f| t.cursor(f.cursor.seq - 1)), None, replay)
                    }
                    None => (head, None, Vec::new()),
                    Some(Ok(c)) => {
                        let r = t.history.since(c.seq, t.head);
                        (c, r.gap.then(|| c.to_string().into()), r.frames)
                    }
                    Some(Err((start, sent))) => (start, Some(sent), t.history.all()),
                };
                // Once told of the gap, the subscriber stands just before the first event
                // replayed, so a client cut right after the notice is not told twice.
                let gap = missed.map(|missed| {
                    let resume_at = replay.first().map_or(head, |f| t.cursor(f.cursor.seq - 1));
                    Gap { missed, resume_at }
                });
                let watch = count_now.then(|| topic.clone());
                let ack = SubscribeAck { reply, topic, start, head, gap, replay, created, refused: false };
                out.push((usize::from(reply.worker), ToWorker::Subscribed(Box::new(ack))));
                if let Some(meta) = watch {
                    out.push((id, ToWorker::Watched { meta }));
                }
                self.held -= expired;
                self.held_bytes -= expired_bytes;
            }
            ToOwner::Unsubscribe { topic, worker } => {
                if let Some(t) = self.topics.get_mut(&topic) {
                    t.workers.remove(usize::from(worker));
                    if t.workers.is_empty() {
                        t.unwatched_since = tenths;
                        if occupancy_of(&topic).is_some() {
                            out.push((self.id, ToWorker::Unwatched { meta: topic.clone() }));
                        }
                    }
                    // A name nobody publishes to or listens to any more costs nothing: anyone can
                    // name topics by subscribing, and must not be able to pile them up. (An
                    // `$occupancy:` topic keeps its value a little longer: `housekeep`.)
                    if t.workers.is_empty() && t.named && occupancy_of(&topic).is_none() {
                        self.epochs.forget(&topic, t);
                        self.topics.remove(&topic);
                        self.forgot(1, 1);
                        // Given back at the next tick, as what housekeeping forgets is.
                        self.forgotten_since_trim += 1;
                    }
                }
            }
            ToOwner::Tick => {
                for (topic, user) in self.presences.due(now) {
                    self.tell_presence(&topic, &user, Change::Leave, now, out);
                }
                self.housekeep(now);
                self.keys.expire(tenths);
            }
            ToOwner::Report { counts, ts_micros, asked } => self.report(counts, ts_micros, asked, out),
            ToOwner::Present { topic, user, worker, here } => {
                if let Some(change) = self.presences.change(&topic, &user, usize::from(worker), here, now) {
                    self.tell_presence(&topic, &user, change, now, out);
                }
            }
            ToOwner::Users { topic, part } => part.list(self.presences.users(&topic), false),
            ToOwner::Describe { topic, part } => {
                // Only looked at: asking about a topic does not make it.
                if let Some(t) = self.topics.get_mut(&topic) {
                    let before_bytes = t.history.bytes();
                    self.held -= t.history.expire(now, self.history_ttl);
                    self.held_bytes -= before_bytes - t.history.bytes();
                    let head = (t.head > 0).then(|| t.cursor(t.head));
                    part.describe(head, t.history.len(), t.history.data_bytes());
                }
            }
            ToOwner::List { prefix, after, limit, may, part } => {
                let ttl = self.history_ttl;
                // The `limit` smallest names, kept in a max-heap: one pass over the topics, and
                // memory for `limit` names only.
                let mut first = std::collections::BinaryHeap::with_capacity(limit + 1);
                let mut more = false;
                let listed = self.topics.iter().filter(|(name, t)| {
                    // `$occupancy:` topics are about topics, not topics anyone publishes to.
                    !name.starts_with('$')
                        && name.starts_with(&*prefix)
                        && after.as_deref().is_none_or(|a| &***name > a)
                        && (!t.workers.is_empty() || t.history.holds_any_younger_than(now, ttl))
                        // Before the page is cut, so that `next` never names a topic the
                        // asker may not see.
                        && may.shows(name)
                });
                for (name, _) in listed {
                    first.push(name.clone());
                    if first.len() > limit {
                        first.pop();
                        more = true;
                    }
                }
                part.list(first.into_vec(), more);
            }
        }
    }

    /// Publishes an event to `topic` (made if need be): assigns its cursor, keeps it in
    /// history, forwards it to the workers with subscribers.
    fn append(
        &mut self,
        topic: &Arc<str>,
        kind: Option<Box<str>>,
        data: Bytes,
        ts_micros: u64,
        now: Instant,
        out: &mut Vec<(usize, ToWorker)>,
    ) -> Result<Cursor, Refusal> {
        let tenths = self.tenths(now);
        // An `$occupancy:` topic's history is its latest value (API.md §9).
        let (history, ttl) =
            (if occupancy_of(topic).is_some() { 1 } else { self.history }, ttl_of(topic, self.history_ttl));
        let Some((t, _)) = self.topic(topic, tenths, Making::Publish) else { return Err(Refusal::TooManyTopics) };
        let (before, before_bytes) = (t.history.len(), t.history.bytes());
        // A topic only named until now is a published one from here on; not one about a topic
        // (`$occupancy:`, `$presence:`): herald publishes there, for subscribers who made it.
        let was_named = !topic.starts_with('$') && std::mem::take(&mut t.named);
        t.history.expire(now, ttl);
        t.head += 1;
        let cursor = t.cursor(t.head);
        let frame = Arc::new(Frame::new(topic.clone(), cursor, kind, data, ts_micros));
        t.history.push(frame.clone(), now, history);
        let (after, after_bytes) = (t.history.len(), t.history.bytes());
        t.last_publish = tenths;
        for w in t.workers.iter() {
            out.push((w, ToWorker::Event(frame.clone())));
        }
        // Expiry and eviction above never take more than the ring held.
        self.held = self.held + after - before;
        self.held_bytes = self.held_bytes + after_bytes - before_bytes;
        self.published += 1;
        if was_named {
            self.count.named.fetch_sub(1, Ordering::Relaxed);
        }
        if self.held_bytes > self.max_held_bytes {
            self.evict();
        }
        Ok(cursor)
    }

    /// Counts taken at `asked` for the `$occupancy:` topics owned here (`ToOwner::Report`):
    /// each that is still watched, changed since its last value and was not taken within
    /// `occupancy_interval` of it is published, kept in history as of `asked`. Comparing the
    /// times counts were taken (the reporter takes them at least an interval apart) keeps the
    /// interval without pushing every change to the round after next.
    fn report(
        &mut self,
        counts: Vec<(Arc<str>, u64)>,
        ts_micros: u64,
        asked: Instant,
        out: &mut Vec<(usize, ToWorker)>,
    ) {
        let interval = self.occupancy_interval;
        // Without a value in history (evicted for memory), the time of the last publish, in
        // whole tenths: more than the interval's tenths apart is at least the interval apart.
        let (asked_tenths, interval_tenths) = (self.tenths(asked), (interval.as_secs_f64() * 10.0).ceil() as u32);
        for (meta, n) in counts {
            let Some(watched) = occupancy_of(&meta) else { continue };
            let Some(t) = self.topics.get_mut(&meta).filter(|t| !t.workers.is_empty()) else { continue };
            // A topic's name needs no escaping in JSON.
            let data = format!(r#"{{"topic":"{watched}","subscribers":{n}}}"#);
            let too_soon = match t.history.newest() {
                Some((at, last)) => last.data == data.as_bytes() || asked.saturating_duration_since(at) < interval,
                None => t.head > 0 && asked_tenths.saturating_sub(t.last_publish) <= interval_tenths,
            };
            if too_soon {
                continue;
            }
            // Watched, so kept: this makes no topic.
            let _ = self.append(&meta, Some("occupancy".into()), Bytes::from(data), ts_micros, asked, out);
        }
    }

    /// Publishes `user`'s join or leave of `topic` to `$presence:{topic}`, if that topic is
    /// kept (someone subscribed to it, and it is not forgotten): presence nobody follows makes
    /// no topic and keeps no history.
    fn tell_presence(
        &mut self,
        topic: &str,
        user: &str,
        change: Change,
        now: Instant,
        out: &mut Vec<(usize, ToWorker)>,
    ) {
        let meta: Arc<str> = format!("{PRESENCE}{topic}").into();
        if self.topics.get_mut(&meta).is_none() {
            return;
        }
        let kind = match change {
            Change::Join => "join",
            Change::Leave => "leave",
        };
        let data = serde_json::json!({"topic": topic, "user": user}).to_string();
        let _ = self.append(&meta, Some(kind.into()), Bytes::from(data), crate::clock::now_micros(), now, out);
    }

    /// Expires history by TTL and forgets topics nobody listens to that hold nothing: their
    /// memory must not grow with every name ever used. A topic that had events is kept a TTL
    /// longer than its last event, and a TTL after its last subscriber left: a client that
    /// comes back with the newest cursor of a quiet topic resumes it without a gap, rather
    /// than finding a new life of it.
    ///
    /// A tick visits a few parts of the topics, not all of them, so that a million topics are
    /// no pause on the worker: every topic is visited once per `sweep_period` (a quarter of
    /// the TTL, from 1 to 30 s), rounded up to whole ticks (one a second), and found expired
    /// or idle that much later at most. History
    /// is also expired whenever a topic is published to or subscribed, so no replay sends an
    /// event past its TTL.
    fn housekeep(&mut self, now: Instant) {
        let tenths = self.tenths(now);
        let ttl = self.history_ttl;
        let period = sweep_period(ttl);
        let elapsed = now.saturating_duration_since(self.last_sweep);
        let parts = ((elapsed.as_secs_f64() / period.as_secs_f64()) * PARTS as f64).ceil() as usize;
        self.last_sweep = now;
        let (mut expired, mut expired_bytes, mut named, mut forgotten) = (0, 0, 0, 0);
        let occupancy_grace = occupancy_grace(self.occupancy_interval);
        let epochs = &mut self.epochs;
        for _ in 0..parts.clamp(1, PARTS) {
            let part = self.next_part;
            self.next_part = (part + 1) % PARTS;
            forgotten += self.topics.retain_in(part, |name, t| {
                let before = t.history.bytes();
                expired += t.history.expire(now, ttl_of(name, ttl));
                expired_bytes += before - t.history.bytes();
                // Both ends are rounded down to a tenth: one tenth less never overstates the
                // time passed, so nothing is forgotten early (up to 0.2 s late).
                let quiet_for =
                    |since: u32| Duration::from_millis(u64::from(tenths.saturating_sub(since).saturating_sub(1)) * 100);
                let idle = if occupancy_of(name).is_some() {
                    // Its value is kept for a watcher coming back (a long-poller between polls,
                    // a stream reconnecting), not for long: it is not kept current.
                    t.workers.is_empty() && quiet_for(t.unwatched_since) >= occupancy_grace
                } else {
                    t.workers.is_empty()
                        && t.history.is_empty()
                        && if t.named {
                            quiet_for(t.last_publish) >= ttl
                        } else {
                            quiet_for(t.last_publish) >= ttl * 2 && quiet_for(t.unwatched_since) >= ttl
                        }
                };
                if idle {
                    epochs.forget(name, t);
                }
                if idle && t.named {
                    named += 1;
                }
                !idle
            });
        }
        self.forgot(forgotten, named);
        self.held -= expired;
        self.held_bytes -= expired_bytes;
        let swept = Instant::now();
        self.forgotten_since_trim += forgotten;
        // A part that gave its room back (after subscribers left thousands of topics of their
        // own, say) freed a table: given back at the first tick that forgets none.
        self.room_given_back |= self.topics.take_shrunk();
        // Also when a wave of forgetting ends, so that its last few hundred give theirs back.
        let wave_ended = forgotten == 0 && (self.forgotten_since_trim >= TRIM_AT_END || self.room_given_back);
        if self.forgotten_since_trim >= TRIM_AFTER || wave_ended {
            self.room_given_back = false;
            self.forgotten_since_trim = 0;
            crate::sys::trim_heap();
        }
        if forgotten > 0 {
            tracing::debug!(
                owner = self.id,
                forgotten,
                sweep_us = swept.saturating_duration_since(now).as_micros() as u64,
                trim_us = swept.elapsed().as_micros() as u64,
                "topics forgotten"
            );
        }
    }

    /// History costs more than this owner's budget: evict the oldest events of the largest
    /// topics first, down to 90 % of the budget (so the scan, which visits every topic, is
    /// paid once per tenth of the budget published, not once per publish). Every topic
    /// larger than a level is cut down to it; the level is the highest that frees enough.
    /// A resume that needed an evicted event gets a gap, as for any event history no longer
    /// has.
    fn evict(&mut self) {
        let target = self.max_held_bytes - self.max_held_bytes / 10;
        let Some(excess) = self.held_bytes.checked_sub(target).filter(|&e| e > 0) else { return };
        let mut sizes: Vec<usize> = self.topics.values().map(|t| t.history.bytes()).filter(|&b| b > 0).collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        let level = water_level(&sizes, excess);
        let (mut events, mut freed) = (0, 0);
        for t in self.topics.values_mut().filter(|t| t.history.bytes() > level) {
            let before = t.history.bytes();
            events += t.history.trim_to(level);
            freed += before - t.history.bytes();
        }
        self.held -= events;
        self.held_bytes -= freed;
        self.evicted += events as u64;
    }

    pub fn id(&self) -> usize {
        self.id
    }
}

impl Sequencer for Owner {
    fn handle(&mut self, msg: ToOwner, now: Instant, out: &mut Vec<(usize, ToWorker)>) {
        Owner::handle(self, msg, now, out);
    }

    fn stats(&self) -> Stats {
        Stats {
            published: self.published,
            history_events: self.held,
            history_bytes: self.held_bytes,
            evicted: self.evicted,
            topics: self.topics.len(),
            idempotency_keys: self.keys.len(),
            idempotency_dropped: self.keys.dropped,
        }
    }
}

/// The highest level such that cutting every size in `sorted` (largest first) down to it
/// frees at least `excess`.
fn water_level(sorted: &[usize], excess: usize) -> usize {
    let mut above = 0usize;
    for (k, &size) in sorted.iter().enumerate() {
        above += size;
        let next = sorted.get(k + 1).copied().unwrap_or(0);
        // Cutting the k + 1 largest down to `next` frees `above - (k + 1) * next`.
        let n = k + 1;
        if above - n * next >= excess {
            return (above - excess) / n;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Key;
    use crate::pubsub::msg::{ReplyTo, Shows};
    use crate::pubsub::probe::{Answer, TopicProbe};
    use bytes::Bytes;

    #[test]
    fn an_owned_topic_is_small() {
        // Its entry is paid by every topic, the million per-user topics of a node included.
        assert!(size_of::<OwnedTopic>() <= 56, "{} bytes", size_of::<OwnedTopic>());
    }

    fn owner(history: usize) -> Owner {
        let config = Config { history, history_ttl: Duration::from_secs(60), ..Config::default() };
        Owner::new(0, 0xabcd, &config)
    }

    fn missed(ack: &SubscribeAck) -> Option<&str> {
        ack.gap.as_ref().map(|g| &*g.missed)
    }

    fn reply<K>(worker: u16) -> ReplyTo<Key<K>> {
        ReplyTo { worker, key: Key::new(1, 1), index: 0 }
    }

    fn publish_msg(topic: &str) -> ToOwner {
        ToOwner::Publish {
            topic: topic.into(),
            kind: None,
            data: Bytes::from_static(b"x"),
            ts_micros: 0,
            key: None,
            reply: reply(0),
        }
    }

    fn publish(o: &mut Owner, topic: &str, out: &mut Vec<(usize, ToWorker)>) -> Cursor {
        o.handle(publish_msg(topic), Instant::now(), out);
        match out.pop() {
            Some((0, ToWorker::Published { cursor: Ok(Assigned { cursor, .. }), .. })) => cursor,
            other => panic!("no publish reply: {other:?}"),
        }
    }

    fn subscribe(o: &mut Owner, topic: &str, worker: u16, from: Option<Cursor>) -> SubscribeAck {
        let resume = from.map_or(Resume::Live, Resume::After);
        let mut out = Vec::new();
        o.handle(
            ToOwner::Subscribe { topic: topic.into(), resume, reply: reply(worker), open_name: true },
            Instant::now(),
            &mut out,
        );
        match out.pop() {
            Some((_, ToWorker::Subscribed(ack))) => *ack,
            other => panic!("no ack: {other:?}"),
        }
    }

    #[test]
    fn a_keyed_retry_is_answered_with_the_first_cursor_and_forwarded_to_no_one() {
        let mut o = owner(10);
        subscribe(&mut o, "t", 1, None);
        let keyed = |data: &'static [u8]| ToOwner::Publish {
            topic: "t".into(),
            kind: None,
            data: Bytes::from_static(data),
            ts_micros: 0,
            key: Some("k".into()),
            reply: reply(0),
        };
        let mut out = Vec::new();
        o.handle(keyed(b"x"), Instant::now(), &mut out);
        let first = match &out[..] {
            [(1, ToWorker::Event(_)), (0, ToWorker::Published { cursor: Ok(a), .. })] if !a.duplicate => a.cursor,
            other => panic!("{other:?}"),
        };
        out.clear();
        o.handle(keyed(b"x"), Instant::now(), &mut out);
        match &out[..] {
            [(0, ToWorker::Published { cursor: Ok(a), .. })] => {
                assert_eq!(*a, Assigned { cursor: first, duplicate: true })
            }
            other => panic!("the retry went out: {other:?}"),
        }
        out.clear();
        o.handle(keyed(b"y"), Instant::now(), &mut out);
        assert!(matches!(&out[..], [(0, ToWorker::Published { cursor: Err(Refusal::KeyReused), .. })]), "{out:?}");
        assert_eq!(o.stats().published, 1);
        assert_eq!(o.stats().idempotency_keys, 1);
    }

    #[test]
    fn events_go_only_to_registered_workers() {
        let mut o = owner(10);
        let mut out = Vec::new();
        publish(&mut o, "t", &mut out);
        assert!(out.is_empty());
        subscribe(&mut o, "t", 1, None);
        subscribe(&mut o, "t", 3, None);
        publish(&mut o, "t", &mut out);
        let targets: Vec<usize> = out.iter().map(|(w, _)| *w).collect();
        assert_eq!(targets, [1, 3]);
        o.handle(ToOwner::Unsubscribe { topic: "t".into(), worker: 1 }, Instant::now(), &mut Vec::new());
        out.clear();
        publish(&mut o, "t", &mut out);
        assert_eq!(out.iter().map(|(w, _)| *w).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn resume_replays_then_registers() {
        let mut o = owner(10);
        let mut out = Vec::new();
        let c: Vec<Cursor> = (0..5).map(|_| publish(&mut o, "t", &mut out)).collect();
        let ack = subscribe(&mut o, "t", 1, Some(c[1]));
        assert!(ack.gap.is_none());
        assert_eq!(ack.replay.iter().map(|f| f.cursor).collect::<Vec<_>>(), &c[2..]);
        assert_eq!(ack.head, c[4]);
    }

    #[test]
    fn stale_epochs_and_overflow_are_gaps() {
        let mut o = owner(2);
        let mut out = Vec::new();
        let c: Vec<Cursor> = (0..5).map(|_| publish(&mut o, "t", &mut out)).collect();
        let ack = subscribe(&mut o, "t", 1, Some(c[0]));
        assert_eq!(missed(&ack), Some(&*c[0].to_string()));
        assert_eq!(ack.replay.len(), 2);
        assert_eq!(ack.start, c[0], "until told, a cursor that reports the gap again");
        assert_eq!(ack.gap.as_ref().map(|g| g.resume_at), Some(c[2]), "once told, just before the first replayed");
        let stale = Cursor::new(c[0].epoch ^ 1, 3);
        let ack = subscribe(&mut o, "t", 1, Some(stale));
        assert_eq!(missed(&ack), Some(&*stale.to_string()));
        assert_eq!(ack.replay.len(), 2);
        let ack = subscribe(&mut o, "t", 1, Some(c[4]));
        assert!(ack.gap.is_none());
        assert!(ack.replay.is_empty());
    }

    #[test]
    fn held_events_are_counted_exactly() {
        let mut o = owner(3);
        let mut out = Vec::new();
        for _ in 0..5 {
            publish(&mut o, "a", &mut out);
        }
        publish(&mut o, "b", &mut out);
        assert_eq!(o.stats().history_events, 4);
        assert_eq!(o.stats().published, 6);
        o.handle(ToOwner::Tick, Instant::now() + Duration::from_secs(120), &mut out);
        assert_eq!(o.stats().history_events, 0);
    }

    /// An owner whose TTL is 1 ms, and a moment by which everything of it is forgotten.
    fn forgetful() -> (Owner, Instant) {
        let config = Config { history: 10, history_ttl: Duration::from_millis(1), ..Config::default() };
        (Owner::new(0, 7, &config), Instant::now() + Duration::from_secs(1))
    }

    fn cursors(ack: &SubscribeAck) -> Vec<Cursor> {
        ack.replay.iter().map(|f| f.cursor).collect()
    }

    #[test]
    fn a_forgotten_topic_resumed_from_its_last_cursor_is_no_gap() {
        let (mut o, later) = forgetful();
        let mut out = Vec::new();
        let c: Vec<Cursor> = (0..3).map(|_| publish(&mut o, "t", &mut out)).collect();
        o.handle(ToOwner::Tick, later, &mut out);
        assert!(o.topics.is_empty());
        assert_eq!(o.epochs.tombstones.kept(), 1);
        let newest = subscribe(&mut o, "t", 1, Some(c[2]));
        assert!(newest.gap.is_none() && newest.replay.is_empty(), "the newest cursor missed nothing");
        let life = newest.head.epoch;
        assert_ne!(life, c[2].epoch, "a new life");
        assert_eq!((newest.start, newest.head), (Cursor::new(life, 0), Cursor::new(life, 0)));
        assert_eq!(o.epochs.tombstones.kept(), 0, "taken by the topic's new life");
        let next = publish(&mut o, "t", &mut out);
        assert_eq!(next, Cursor::new(life, 1));
        let again = subscribe(&mut o, "t", 2, Some(c[2]));
        assert!(again.gap.is_none(), "still the start of this life");
        assert_eq!(cursors(&again), [next]);
        let older = subscribe(&mut o, "t", 2, Some(c[1]));
        assert_eq!(missed(&older), Some(&*c[1].to_string()), "the forgotten event is a gap");
        assert_eq!(cursors(&older), [next]);
        assert_eq!(o.count.named.load(Ordering::Relaxed), 0, "a topic with events is not only named");
    }

    #[test]
    fn a_cursor_answers_for_one_life_only() {
        let (mut o, later) = forgetful();
        let mut out = Vec::new();
        let first = publish(&mut o, "t", &mut out);
        o.handle(ToOwner::Tick, later, &mut out);
        let second = publish(&mut o, "t", &mut out);
        o.handle(ToOwner::Tick, later + Duration::from_secs(1), &mut out);
        let third = publish(&mut o, "t", &mut out);
        let ack = subscribe(&mut o, "t", 1, Some(first));
        assert_eq!(missed(&ack), Some(&*first.to_string()), "the second life's event was missed");
        assert_eq!(cursors(&ack), [third]);
        let ack = subscribe(&mut o, "t", 1, Some(second));
        assert!(ack.gap.is_none());
        assert_eq!(cursors(&ack), [third]);
    }

    #[test]
    fn a_life_forgotten_without_events_passes_its_tombstone_on() {
        let (mut o, later) = forgetful();
        let mut out = Vec::new();
        let last = publish(&mut o, "t", &mut out);
        o.handle(ToOwner::Tick, later, &mut out);
        subscribe(&mut o, "t", 1, None);
        o.handle(ToOwner::Unsubscribe { topic: "t".into(), worker: 1 }, later, &mut out);
        assert!(o.topics.is_empty(), "a name nobody watches is forgotten at once");
        assert_eq!(o.epochs.tombstones.kept(), 1);
        let ack = subscribe(&mut o, "t", 1, Some(last));
        assert!(ack.gap.is_none(), "nothing was published since");
    }

    /// Publishes one event to each of `n` topics named after `tag`, and forgets them all.
    fn churn(o: &mut Owner, tag: &str, n: usize, at: Instant) {
        let mut out = Vec::new();
        for i in 0..n {
            publish(o, &format!("{tag}{i}"), &mut out);
        }
        // Never before the last of them is quiet, however long publishing took.
        let at = at.max(Instant::now() + Duration::from_secs(1));
        o.handle(ToOwner::Tick, at, &mut out);
        assert!(o.topics.is_empty());
    }

    #[test]
    fn two_hundred_thousand_forgotten_topics_each_resume_from_their_last_cursor() {
        // With 32-bit names about five pairs of these shared a name, and one of each pair was
        // told of a gap it did not have (an outside test's reproducer, at 250 000).
        let (mut o, _) = forgetful();
        let mut out = Vec::new();
        let n = 200_000;
        let last: Vec<Cursor> = (0..n).map(|i| publish(&mut o, &format!("t{i}"), &mut out)).collect();
        // Taken after publishing, which may take seconds on a loaded machine.
        let later = Instant::now() + Duration::from_secs(1);
        o.handle(ToOwner::Tick, later, &mut out);
        assert!(o.topics.is_empty());
        let gaps: Vec<usize> =
            (0..n).filter(|&i| subscribe(&mut o, &format!("t{i}"), 1, Some(last[i])).gap.is_some()).collect();
        assert!(gaps.is_empty(), "{} false gaps, e.g. t{}", gaps.len(), gaps[0]);
    }

    #[test]
    fn describing_a_topic_expires_its_history_first_and_never_makes_one() {
        let (mut o, later) = forgetful();
        let mut out = Vec::new();
        let describe = |o: &mut Owner, topic: &str, at: Instant| {
            let (probe, mut parts) = TopicProbe::new(1, 1);
            let part = parts.pop().expect("one part");
            o.handle(ToOwner::Describe { topic: topic.into(), part }, at, &mut Vec::new());
            probe.answered_now().expect("the owner let go of its part")
        };
        assert_eq!(describe(&mut o, "none", later), Answer::default());
        assert!(o.topics.is_empty(), "asking made nothing");
        publish(&mut o, "t", &mut out);
        let last = publish(&mut o, "t", &mut out);
        let now = describe(&mut o, "t", Instant::now());
        assert_eq!((now.head, now.events), (Some(last), 2));
        let expired = describe(&mut o, "t", later);
        assert_eq!((expired.head, expired.events, expired.bytes), (Some(last), 0, 0), "past the TTL");
        assert_eq!(o.stats().history_events, 0, "and counted as expired");
    }

    #[test]
    fn a_listing_leaves_out_expired_history_and_what_the_asker_may_not_see() {
        let (mut o, later) = forgetful();
        let mut out = Vec::new();
        let list = |o: &mut Owner, at: Instant| {
            let (probe, mut parts) = TopicProbe::new(1, 0);
            let (part, may) = (parts.pop().expect("one part"), Shows(Arc::new(|t: &str| t != "hidden")));
            o.handle(ToOwner::List { prefix: "".into(), after: None, limit: 10, may, part }, at, &mut Vec::new());
            assert!(probe.answered_now().is_some());
            probe.listed().0.iter().map(|n| n.to_string()).collect::<Vec<_>>()
        };
        for t in ["a", "hidden", "b"] {
            publish(&mut o, t, &mut out);
        }
        assert_eq!(list(&mut o, Instant::now()), ["a", "b"]);
        // Past the TTL and before any sweep: nothing is held any more.
        assert_eq!(list(&mut o, later), Vec::<String>::new());
    }

    #[test]
    fn an_empty_topic_forgotten_comes_back_where_it_was_whatever_was_forgotten_meanwhile() {
        let (mut o, later) = forgetful();
        let mut out = Vec::new();
        let start = subscribe(&mut o, "empty", 1, None).head;
        o.handle(ToOwner::Unsubscribe { topic: "empty".into(), worker: 1 }, later, &mut out);
        assert!(o.topics.is_empty());
        churn(&mut o, "other", 5_000, later);
        let ack = subscribe(&mut o, "empty", 1, Some(start));
        assert!(ack.gap.is_none(), "nothing was ever published to it");
        assert_eq!(ack.head, start);
        let first = publish(&mut o, "empty", &mut out);
        assert_eq!(first, Cursor::new(start.epoch, 1));
    }

    #[test]
    fn an_empty_life_after_a_forgotten_one_answers_for_both_of_their_cursors() {
        let (mut o, later) = forgetful();
        let mut out = Vec::new();
        let last = publish(&mut o, "t", &mut out);
        o.handle(ToOwner::Tick, later, &mut out);
        let start = subscribe(&mut o, "t", 1, Some(last)).head;
        assert_ne!(start.epoch, last.epoch);
        o.handle(ToOwner::Unsubscribe { topic: "t".into(), worker: 1 }, later, &mut out);
        churn(&mut o, "other", 5_000, later + Duration::from_secs(1));
        for cursor in [start, last] {
            let ack = subscribe(&mut o, "t", 1, Some(cursor));
            assert!(ack.gap.is_none(), "{cursor}: nothing was published since");
            assert_eq!(ack.head, start, "the same life again");
        }
        let next = publish(&mut o, "t", &mut out);
        for cursor in [start, last] {
            assert_eq!(cursors(&subscribe(&mut o, "t", 2, Some(cursor))), [next]);
        }
    }

    #[test]
    fn an_empty_topic_whose_tombstones_were_dropped_meanwhile_is_told_of_a_gap() {
        let (mut o, later) = forgetful();
        o.epochs.tombstones = Tombstones::new(4);
        let mut out = Vec::new();
        let last = publish(&mut o, "t", &mut out);
        o.handle(ToOwner::Tick, later, &mut out);
        let start = subscribe(&mut o, "t", 1, Some(last)).head;
        o.handle(ToOwner::Unsubscribe { topic: "t".into(), worker: 1 }, later, &mut out);
        churn(&mut o, "other", 20, later + Duration::from_secs(1));
        let next = publish(&mut o, "t", &mut out);
        assert_ne!(next.epoch, start.epoch, "never a position in a life that may have had events");
        for cursor in [start, last] {
            let ack = subscribe(&mut o, "t", 1, Some(cursor));
            assert_eq!(missed(&ack), Some(&*cursor.to_string()), "its tombstone was dropped: a gap");
            assert_eq!(cursors(&ack), [next]);
        }
    }

    #[test]
    fn a_forgotten_topic_without_its_tombstone_comes_back_with_a_new_epoch() {
        let (mut o, later) = forgetful();
        o.epochs.tombstones = Tombstones::new(1);
        let mut out = Vec::new();
        let a = publish(&mut o, "a", &mut out);
        o.handle(ToOwner::Tick, later, &mut out);
        publish(&mut o, "b", &mut out);
        o.handle(ToOwner::Tick, later + Duration::from_secs(1), &mut out);
        assert_eq!(o.epochs.tombstones.kept(), 2, "two fit");
        let c = publish(&mut o, "c", &mut out);
        o.handle(ToOwner::Tick, later + Duration::from_secs(2), &mut out);
        assert_eq!(o.epochs.tombstones.kept(), 1, "a's and b's tombstones made room for c's");
        let again = publish(&mut o, "a", &mut out);
        assert_ne!(again.epoch, a.epoch);
        let ack = subscribe(&mut o, "a", 0, Some(a));
        assert_eq!(missed(&ack), Some(&*a.to_string()), "a cursor of the old life is a gap");
        assert_eq!(cursors(&ack), [again], "never a position in the new");
        let ack = subscribe(&mut o, "c", 0, Some(c));
        assert!(ack.gap.is_none(), "c's tombstone was kept");
    }

    #[test]
    fn a_tick_visits_a_few_parts_and_a_period_all_of_them() {
        let ttl = Duration::from_secs(120);
        assert_eq!(sweep_period(ttl), Duration::from_secs(30));
        let config = Config { history: 10, history_ttl: ttl, ..Config::default() };
        let mut o = Owner::new(0, 7, &config);
        let mut out = Vec::new();
        for i in 0..6400 {
            publish(&mut o, &format!("t{i}"), &mut out);
        }
        // Every topic is long idle; a tick one second after the last visits ~3 of 64 parts.
        let mut at = Instant::now() + ttl * 3;
        o.last_sweep = at - Duration::from_secs(1);
        o.handle(ToOwner::Tick, at, &mut out);
        let left = o.topics.len();
        assert!((6400 - 6400 / 8..6400).contains(&left), "one second of a 30 s period: {left} left");
        for _ in 0..30 {
            at += Duration::from_secs(1);
            o.handle(ToOwner::Tick, at, &mut out);
        }
        assert!(o.topics.is_empty(), "a period visits every part");
        assert_eq!(o.stats().history_events, 0);
    }

    #[test]
    fn a_quiet_topic_outlives_its_last_event_by_a_ttl() {
        // An outside attack: the topic was forgotten the moment its last event expired, so a
        // client coming back with the newest cursor was told of a gap it did not have.
        let ttl = Duration::from_secs(10);
        let config = Config { history: 10, history_ttl: ttl, ..Config::default() };
        let mut o = Owner::new(0, 7, &config);
        let mut out = Vec::new();
        let t0 = Instant::now();
        let newest = publish(&mut o, "t", &mut out);
        o.handle(ToOwner::Tick, t0 + ttl + Duration::from_secs(1), &mut out);
        assert_eq!(o.stats().history_events, 0, "the event expired");
        assert_eq!(o.topics.len(), 1, "the topic is kept a TTL longer");
        let mut ack = None;
        o.handle(
            ToOwner::Subscribe { topic: "t".into(), resume: Resume::After(newest), reply: reply(1), open_name: true },
            t0 + ttl + Duration::from_secs(2),
            &mut out,
        );
        if let Some((_, ToWorker::Subscribed(a))) = out.pop() {
            ack = Some(*a);
        }
        let ack = ack.expect("an ack");
        assert!(ack.gap.is_none() && ack.replay.is_empty(), "the newest cursor resumes without a gap");
        // Watched until its subscriber leaves at 30 s: forgotten a TTL after that, not before.
        let left = t0 + Duration::from_secs(30);
        o.handle(ToOwner::Unsubscribe { topic: "t".into(), worker: 1 }, left, &mut out);
        o.handle(ToOwner::Tick, left + ttl / 2, &mut out);
        assert_eq!(o.topics.len(), 1);
        // Idle times are counted in tenths of a second, never overstated: up to 0.2 s late.
        o.handle(ToOwner::Tick, left + ttl - Duration::from_millis(1), &mut out);
        assert_eq!(o.topics.len(), 1, "not a moment early");
        // A tick visits the parts due since the last one: a sweep period later, all of them.
        o.handle(ToOwner::Tick, left + ttl + sweep_period(ttl) + Duration::from_millis(200), &mut out);
        assert!(o.topics.is_empty(), "then it is forgotten");
    }

    #[test]
    fn over_budget_the_largest_topics_lose_their_oldest_events_first() {
        let config = Config { history: 1000, max_history_bytes: 60_000, ..Config::default() };
        let mut o = Owner::new(0, 1, &config);
        let mut out = Vec::new();
        let small = publish(&mut o, "small", &mut out);
        let first_big = publish(&mut o, "big", &mut out);
        for _ in 0..400 {
            publish(&mut o, "big", &mut out);
        }
        assert!(o.stats().history_bytes <= 60_000, "{} bytes held", o.stats().history_bytes);
        assert!(o.stats().evicted > 0);
        assert_eq!(o.stats().history_events as u64 + o.stats().evicted, 402);
        let ack = subscribe(&mut o, "big", 1, Some(first_big));
        assert_eq!(missed(&ack), Some(&*first_big.to_string()), "what it needed was evicted: a gap");
        let ack = subscribe(&mut o, "small", 1, Some(Cursor::new(small.epoch, 0)));
        assert!(ack.gap.is_none() && ack.replay.len() == 1, "the small topic kept its event");
        assert_eq!(water_level(&[100, 50, 10], 60), 45);
        assert_eq!(water_level(&[10, 10], 20), 0);
        assert_eq!(water_level(&[30, 10], 5), 25);
    }

    #[test]
    fn past_max_topics_new_topics_are_refused_and_known_ones_served() {
        let config = Config { max_topics: 4, ..Config::default() };
        let mut o = Owner::new(0, 1, &config);
        let mut out = Vec::new();
        assert!(subscribe(&mut o, "n1", 1, None).created);
        assert!(subscribe(&mut o, "n2", 1, None).created);
        assert!(subscribe(&mut o, "n3", 1, None).refused, "topics only named take half the cap at most");
        publish(&mut o, "p1", &mut out);
        publish(&mut o, "n1", &mut out);
        assert!(subscribe(&mut o, "n3", 1, None).created, "n1 is a published topic now");
        o.handle(publish_msg("p2"), Instant::now(), &mut out);
        assert!(matches!(out.pop(), Some((0, ToWorker::Published { cursor: Err(Refusal::TooManyTopics), .. }))));
        assert!(subscribe(&mut o, "n4", 1, None).refused);
        assert!(!subscribe(&mut o, "p1", 1, None).refused, "a topic it has is served");
        o.handle(ToOwner::Unsubscribe { topic: "n2".into(), worker: 1 }, Instant::now(), &mut out);
        publish(&mut o, "p2", &mut out);
        assert_eq!(o.count.all.load(Ordering::Relaxed), 4);
        assert_eq!(o.count.named.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn made_up_names_lock_out_no_subscriber_of_its_own_private_topic() {
        // Before, made-up names filled the named half, and then a user's own new private
        // topic was refused (503).
        let config = Config { max_topics: 4, ..Config::default() };
        let mut o = Owner::new(0, 1, &config);
        assert!(subscribe(&mut o, "junk1", 1, None).created);
        assert!(subscribe(&mut o, "junk2", 1, None).created);
        assert!(subscribe(&mut o, "junk3", 1, None).refused, "made-up names: half the cap");
        let mut out = Vec::new();
        let identified = |o: &mut Owner, topic: &str, out: &mut Vec<(usize, ToWorker)>| {
            let msg =
                ToOwner::Subscribe { topic: topic.into(), resume: Resume::Live, reply: reply(1), open_name: false };
            o.handle(msg, Instant::now(), out);
            match out.pop() {
                Some((_, ToWorker::Subscribed(ack))) => *ack,
                other => panic!("no ack: {other:?}"),
            }
        };
        assert!(identified(&mut o, "user:42", &mut out).created, "a known subscriber's topic");
        assert!(identified(&mut o, "user:43", &mut out).created);
        assert!(identified(&mut o, "user:44", &mut out).refused, "the whole cap still holds");
    }

    #[test]
    fn no_two_topics_share_an_epoch() {
        // Before, the n-th topic of every owner had the same epoch: a cursor of one was read
        // as a position in the other.
        let config = Config::default();
        let (mut a, mut b) = (Owner::new(0, 99, &config), Owner::new(1, 99, &config));
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            assert!(seen.insert(publish(&mut a, &format!("a{i}"), &mut out).epoch));
            assert!(seen.insert(publish(&mut b, &format!("b{i}"), &mut out).epoch));
        }
        let foreign = publish(&mut a, "a0", &mut out);
        let ack = subscribe(&mut b, "b0", 1, Some(foreign));
        assert_eq!(missed(&ack), Some(&*foreign.to_string()), "another topic's cursor is a gap");
        assert_eq!(ack.replay.len(), 1, "then what history has");
        for pred in [0, 7] {
            let other_run = Owner::new(0, 100, &config).epochs.epoch("a0", pred);
            assert_ne!(other_run, a.epochs.epoch("a0", pred), "another run");
        }
    }

    #[test]
    fn an_unreadable_id_is_searched_for_this_topics_cursor() {
        let mut o = owner(10);
        let mut out = Vec::new();
        let a: Vec<Cursor> = (0..3).map(|_| publish(&mut o, "a", &mut out)).collect();
        let b = publish(&mut o, "b", &mut out);
        let list = |cursors: &[Cursor]| Resume::Unknown { cursors: cursors.into(), sent: "what was sent".into() };
        let mut ack = |resume| {
            let mut out = Vec::new();
            o.handle(
                ToOwner::Subscribe { topic: "a".into(), resume, reply: reply(1), open_name: true },
                Instant::now(),
                &mut out,
            );
            match out.pop() {
                Some((_, ToWorker::Subscribed(ack))) => *ack,
                other => panic!("no ack: {other:?}"),
            }
        };
        let found = ack(list(&[b, a[0]]));
        assert!(found.gap.is_none());
        assert_eq!(found.start, a[0]);
        assert_eq!(found.replay.iter().map(|f| f.cursor).collect::<Vec<_>>(), &a[1..]);
        let missing = ack(list(&[b]));
        assert_eq!(missed(&missing), Some("what was sent"));
        assert_eq!(missing.replay.len(), 3);
    }

    #[test]
    fn an_empty_topic_nobody_watches_is_forgotten_at_once_and_comes_back_the_same() {
        let mut o = owner(10);
        let ack = subscribe(&mut o, "quiet", 1, None);
        o.handle(ToOwner::Unsubscribe { topic: "quiet".into(), worker: 1 }, Instant::now(), &mut Vec::new());
        assert!(o.topics.is_empty(), "a name that never had an event costs nothing");
        let again = subscribe(&mut o, "quiet", 1, Some(ack.head));
        assert!(again.gap.is_none(), "its `epoch-0` cursor still resumes");
        assert_eq!(again.start, ack.head);
        let mut out = Vec::new();
        publish(&mut o, "quiet", &mut out);
        o.handle(ToOwner::Unsubscribe { topic: "quiet".into(), worker: 1 }, Instant::now(), &mut Vec::new());
        assert_eq!(o.topics.len(), 1, "a topic with history stays");
    }

    /// Subscribes worker `worker` to `$occupancy:` topic `meta` from `from`: the ack, and
    /// whether the owner told its own worker to count it at once (`Watched`).
    fn watch(o: &mut Owner, meta: &str, worker: u16, from: Option<Cursor>, at: Instant) -> (SubscribeAck, bool) {
        let mut out = Vec::new();
        let resume = from.map_or(Resume::Live, Resume::After);
        o.handle(
            ToOwner::Subscribe { topic: meta.into(), resume, reply: reply(worker), open_name: true },
            at,
            &mut out,
        );
        let mut ack = None;
        let mut told = false;
        for (w, msg) in out {
            match msg {
                ToWorker::Subscribed(a) => ack = Some(*a),
                ToWorker::Watched { meta: m } if w == 0 && &*m == meta => told = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        (ack.expect("an ack"), told)
    }

    /// Reports `n` subscribers for `meta`, counted at `asked`: the events it published.
    fn report(o: &mut Owner, meta: &str, n: u64, asked: Instant) -> Vec<Arc<Frame>> {
        let mut out = Vec::new();
        o.handle(ToOwner::Report { counts: vec![(meta.into(), n)], ts_micros: 7, asked }, asked, &mut out);
        out.into_iter()
            .map(|(_, m)| match m {
                ToWorker::Event(f) => f,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn occupancy_topics_publish_changed_counts_at_most_once_an_interval() {
        let mut o = owner(10);
        let meta = "$occupancy:news";
        let t0 = Instant::now();
        let (ack, told) = watch(&mut o, meta, 1, None, t0);
        assert!(ack.replay.is_empty() && ack.gap.is_none());
        assert!(told, "no value yet: counted at once");
        let first = report(&mut o, meta, 3, t0);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].data, r#"{"topic":"news","subscribers":3}"#.as_bytes());
        assert_eq!(first[0].kind.as_deref(), Some("occupancy"));
        let second = Duration::from_secs(1);
        assert!(report(&mut o, meta, 4, t0 + second / 2).is_empty(), "within the interval");
        assert!(report(&mut o, meta, 3, t0 + second).is_empty(), "unchanged");
        let later = report(&mut o, meta, 5, t0 + second);
        assert_eq!(later.len(), 1, "changed, an interval after the last value");
        assert!(report(&mut o, "$occupancy:other", 5, t0 + second * 3).is_empty(), "nobody watches it");
        assert!(report(&mut o, "news", 5, t0 + second * 3).is_empty(), "not an occupancy topic");

        // Its history is the latest value, given to whoever does not stand at it, never as a gap.
        let (ack, told) = watch(&mut o, meta, 2, None, t0 + second);
        assert!(!told, "watched already, and it has a value");
        assert_eq!(ack.replay.iter().map(|f| f.cursor).collect::<Vec<_>>(), [later[0].cursor]);
        assert_eq!(ack.start.seq + 1, later[0].cursor.seq, "stands just before it");
        for from in [first[0].cursor, Cursor::new(12345, 9), Cursor::default()] {
            let (ack, _) = watch(&mut o, meta, 2, Some(from), t0 + second);
            assert!(ack.gap.is_none(), "{from}");
            assert_eq!(ack.replay.len(), 1, "{from}");
        }
        let (ack, _) = watch(&mut o, meta, 2, Some(later[0].cursor), t0 + second);
        assert!(ack.replay.is_empty() && ack.gap.is_none(), "at the newest: nothing");

        // The last watcher gone: the reporter is told. Watched again: the last value at once,
        // counted at once, and published again only if it changed (no new id for the same).
        let mut out = Vec::new();
        for w in [1, 2] {
            o.handle(ToOwner::Unsubscribe { topic: meta.into(), worker: w }, t0 + second, &mut out);
        }
        assert!(matches!(&out[..], [(0, ToWorker::Unwatched { meta: m })] if &**m == meta), "{out:?}");
        let back = t0 + Duration::from_secs(600);
        let (ack, told) = watch(&mut o, meta, 1, Some(later[0].cursor), back);
        assert!(told && ack.replay.is_empty(), "at the newest, held; counted at once");
        assert!(report(&mut o, meta, 5, back).is_empty(), "unchanged: nothing new, however old the value");
        assert_eq!(o.stats().history_events, 1, "a watched count does not expire with the history TTL");
        assert_eq!(report(&mut o, meta, 6, back).len(), 1, "changed");
    }

    #[test]
    fn an_unwatched_occupancy_topic_is_forgotten_after_its_grace_and_stays_a_subscribers_name() {
        let mut o = owner(10);
        let meta = "$occupancy:gone";
        let t0 = Instant::now();
        let _ = watch(&mut o, meta, 1, None, t0);
        assert_eq!(report(&mut o, meta, 1, t0).len(), 1);
        assert_eq!(o.count.named.load(Ordering::Relaxed), 1, "made by a subscriber, kept as one though published to");
        o.handle(ToOwner::Unsubscribe { topic: meta.into(), worker: 1 }, t0, &mut Vec::new());
        assert_eq!(o.topics.len(), 1, "kept for a watcher coming back");
        for s in 1..=120 {
            o.handle(ToOwner::Tick, t0 + Duration::from_secs(s), &mut Vec::new());
        }
        assert!(o.topics.is_empty(), "forgotten");
        assert_eq!(o.count.named.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn occupancy_topics_are_not_listed() {
        let mut o = owner(10);
        let _ = watch(&mut o, "$occupancy:a", 1, None, Instant::now());
        report(&mut o, "$occupancy:a", 1, Instant::now());
        subscribe(&mut o, "a", 1, None);
        let (probe, mut parts) = TopicProbe::new(1, 0);
        let may = Shows(Arc::new(|_: &str| true));
        let part = parts.pop().expect("one part");
        o.handle(
            ToOwner::List { prefix: "".into(), after: None, limit: 10, may, part },
            Instant::now(),
            &mut Vec::new(),
        );
        assert!(probe.answered_now().is_some());
        assert_eq!(probe.listed().0, [Arc::from("a")]);
    }
}

//! A subscription as one connection holds it: its topics and positions, how its events
//! reach the connection (`Delivery`), what is still to be rendered before it goes live (the
//! prelude: acknowledgements awaited, gap notices, replays), and the per-worker index entry
//! of a topic (`LocalTopic`).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use smallvec::SmallVec;

use crate::clock::Stamp;
use crate::cursor::Cursor;
use crate::frames::Frame;
use crate::proto::{longpoll, sse, ws};
use crate::pubsub::probe::Via;
use crate::shard::outbox::Outbox;
use crate::shard::subscribers::Subscribers;

/// How a subscription's events reach its connection.
#[derive(Debug)]
pub enum Delivery {
    /// An event stream: each event goes to the outbox as it comes. `chunked` is HTTP/1.1
    /// framing (else HTTP/1.0, bare bytes until close).
    Sse { chunked: bool },
    /// A held long-poll: events are collected, up to its `max`, for one answer.
    Held(Held),
    /// A WebSocket: each event goes to the outbox as a text frame; topics come and go.
    Ws,
    /// A WebSocket that is sent each event's data alone, as it is: no JSON envelope, no id
    /// (for clients that take the publisher's own message format).
    WsData,
}

impl Delivery {
    /// The transport `GET /topics/{topic}` counts this subscriber under.
    pub fn via(&self) -> Via {
        match self {
            Delivery::Sse { .. } => Via::Sse,
            Delivery::Ws | Delivery::WsData => Via::Ws,
            Delivery::Held(_) => Via::Poll,
        }
    }
}

/// What a held long-poll has collected. Inline in the subscription, not boxed: a box made
/// while the connection's request-phase allocations are live stays behind when they are
/// freed and pins their memory (about 500 bytes per held poll, measured).
#[derive(Debug)]
pub struct Held {
    pub items: Vec<HeldItem>,
    /// When to answer `204` if nothing came.
    pub deadline: Stamp,
    /// Answer now with what there is: its deadline passed, its token expired, or it asked
    /// not to wait (`timeout=0`).
    pub due: bool,
    max: u32,
    /// The answer stops growing past this many bytes of event data (`max_pending_bytes`):
    /// the same cap a stream's queue has. What is left comes with the next poll.
    max_bytes: u32,
    events: u32,
    bytes: u32,
}

#[derive(Debug)]
pub enum HeldItem {
    Event(Arc<Frame>),
    /// A gap notice, already encoded.
    Gap(Bytes),
}

impl Held {
    pub fn new(max: usize, max_bytes: usize, deadline: Stamp) -> Held {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Held {
            items: Vec::new(),
            deadline,
            due: false,
            max: clamp(max),
            max_bytes: clamp(max_bytes),
            events: 0,
            bytes: 0,
        }
    }

    fn full(&self) -> bool {
        self.events >= self.max || self.bytes >= self.max_bytes
    }

    fn push(&mut self, frame: &Arc<Frame>) {
        self.events += 1;
        self.bytes = self.bytes.saturating_add(u32::try_from(frame.data.len()).unwrap_or(u32::MAX));
        self.items.push(HeldItem::Event(frame.clone()));
    }
}

/// Per topic of a subscription; most subscriptions have one, kept inline (no allocation).
pub type PerTopic<T> = SmallVec<[T; 1]>;

/// Whose a subscription's topic names are, for the half of `max_topics` that names anyone
/// may make up share (topics only named, no event published yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namer {
    /// The client's, whoever it is: any name may be made up.
    Client,
    /// A verified identity's (a token, a gateway's word for the member): its private topics
    /// are its own, within what the token grants; its public names are made up like anyone's.
    Identity,
    /// The route's own (the push module's stream: `broadcast` and the identity's topics):
    /// nothing is made up.
    Route,
}

impl Namer {
    /// The client's, or a verified identity's when it has one.
    pub fn of(who: &crate::auth::rights::Identity) -> Namer {
        if who.is_identified() { Namer::Identity } else { Namer::Client }
    }

    /// Whether `topic`, named by this namer, is one anyone may make up.
    pub fn made_up(self, topic: &str) -> bool {
        match self {
            Namer::Client => true,
            // `$occupancy:user:42` is as private as `user:42`.
            Namer::Identity => !crate::auth::rights::is_private(crate::pubsub::topic::rights_name(topic)),
            Namer::Route => false,
        }
    }
}

/// One connection's subscription.
#[derive(Debug)]
pub struct Subscription {
    pub topics: PerTopic<Arc<str>>,
    /// Per topic, the cursor of the last event this connection was given (or its start).
    pub positions: PerTopic<Cursor>,
    pub types: Option<Box<[Box<str>]>>,
    pub delivery: Delivery,
    /// Topics still waiting for their owner's acknowledgement.
    pub pending_acks: u16,
    /// Whose its topic names are: which of them count as made up (see `Namer`).
    pub names: Namer,
    /// The generation this subscription was given when it joined (see `SubscriptionKey`).
    pub serial: u32,
    /// What is still to be rendered, in order: what arrived while acknowledgements were
    /// outstanding (rendered once all are in, when every topic's starting position is known,
    /// so the ids of a multi-topic stream are right from its first event), and the replays
    /// of a resume, which are pulled into the outbox as the socket drains (see
    /// `RENDER_AHEAD`), with the live events that came meanwhile behind them.
    pub(super) prelude: VecDeque<Prelude>,
    /// What few subscriptions have (a pause's groups, a token's expiry), boxed so that the
    /// others pay 8 bytes for it.
    pub rare: Option<Box<Rare>>,
}

/// What few subscriptions have.
#[derive(Debug, Default)]
pub struct Rare {
    /// Set on streams that may be shed (told to come back later, and closed): the groups
    /// that can spare them.
    pub shed_groups: Option<Box<[String]>>,
    /// When the token the subscription was opened with expires (Unix milliseconds): the stream
    /// ends then, and its client comes back with a fresh one. (Non-zero, so that with `user`
    /// the box is no larger than without: every tokened stream has one.)
    pub expires: Option<std::num::NonZeroU64>,
    /// Whose presence it is (its token's `sub`), on the topics under `presence_prefixes`: set
    /// only when it has such topics.
    pub user: Option<Arc<str>>,
}

#[derive(Debug)]
pub(super) enum Prelude {
    /// A reply that must reach the client before what follows (a WebSocket `subscribed`).
    Reply(Bytes),
    Gap {
        idx: usize,
        missed: Arc<str>,
        resume_at: Cursor,
    },
    /// A resume's replay of one topic: the events still to send are `frames[next..]`. The
    /// frames are history's; only the pointers are the subscription's own.
    Replay {
        idx: usize,
        frames: Vec<Arc<Frame>>,
        next: usize,
    },
    /// A live event that came while acknowledgements or a replay were outstanding.
    Event {
        idx: usize,
        frame: Arc<Frame>,
    },
}

/// An item handed to a subscription, by reference (the fanout must not touch the frame's
/// reference count more than the bytes it queues already do).
pub(super) enum Item<'a> {
    Gap { idx: usize, missed: &'a str, resume_at: Cursor },
    Event { idx: usize, frame: &'a Arc<Frame>, replay: bool },
}

/// Most bytes a stream's prelude is rendered ahead of what its socket has taken: a resume of
/// 64 topics × 1000 events is pulled as the socket drains, not queued whole.
const RENDER_AHEAD: usize = 64 * 1024;

/// Where `Subscription::take` put an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Taken {
    Nothing,
    /// Queued on the outbox: flush it.
    Outbox,
    /// Collected by a held poll: wake its task to answer.
    Held,
}

/// The last multi-topic `id:` chunk built during one fanout. Subscribers of the same topic
/// list that have seen the same events stand at the same positions, so they share one
/// encoded id instead of each formatting its own.
#[derive(Default)]
pub(super) struct IdMemo {
    positions: Vec<Cursor>,
    chunked: bool,
    chunk: Option<Bytes>,
}

impl IdMemo {
    pub(super) fn id_chunk(&mut self, positions: &[Cursor], chunked: bool) -> Bytes {
        match &self.chunk {
            Some(c) if self.chunked == chunked && self.positions == positions => c.clone(),
            _ => {
                let c = sse::id_chunk(&Cursor::join(positions)).for_version(chunked);
                self.positions.clear();
                self.positions.extend_from_slice(positions);
                self.chunked = chunked;
                self.chunk = Some(c.clone());
                c
            }
        }
    }
}

/// Most events a subscription may collect while waiting for its acknowledgements.
pub(super) const MAX_PRELUDE: usize = 1 << 16;

impl Subscription {
    pub fn new(topics: Vec<Arc<str>>, types: Option<Box<[Box<str>]>>, delivery: Delivery) -> Subscription {
        let n = topics.len();
        Subscription {
            topics: topics.into_iter().collect(),
            positions: smallvec::smallvec![Cursor::new(0, 0); n],
            types,
            delivery,
            pending_acks: 0,
            names: Namer::Client,
            serial: 0,
            prelude: VecDeque::new(),
            rare: None,
        }
    }

    /// Ends the subscription's stream at `expires` (Unix milliseconds), when its token expires.
    pub fn expires_at(&mut self, expires: Option<u64>) {
        if let Some(at) = expires {
            // A token that expired at the epoch has expired: one millisecond later is the same.
            self.rare.get_or_insert_with(Box::default).expires = std::num::NonZeroU64::new(at.max(1));
        }
    }

    /// The subscription is `user`'s presence on its topics under `presence_prefixes` (`user`
    /// is the token's `sub`; kept only for a subscription with such topics).
    pub fn present_as(&mut self, user: Option<Arc<str>>) {
        if let Some(user) = user {
            self.rare.get_or_insert_with(Box::default).user = Some(user);
        }
    }

    /// Whose presence the subscription is, if anyone's.
    pub fn user(&self) -> Option<&Arc<str>> {
        self.rare.as_ref().and_then(|r| r.user.as_ref())
    }

    /// When the subscription's token expires (Unix milliseconds), if it does.
    pub fn expires(&self) -> Option<u64> {
        self.rare.as_ref().and_then(|r| r.expires).map(std::num::NonZeroU64::get)
    }

    /// What an event stream the server ends says last (nothing for other deliveries): where
    /// it stands, so that a client that had no event yet resumes from here and misses
    /// nothing meanwhile; a reconnection delay if one is asked for; the chunked terminator.
    pub fn sse_last_word(&self, retry_ms: Option<u64>, outbox: &mut Outbox) {
        if let Delivery::Sse { chunked } = self.delivery {
            outbox.push(sse::resume_point(&self.resume_id(), retry_ms).for_version(chunked));
            if chunked {
                outbox.push(Bytes::from_static(sse::TERMINATOR));
            }
        }
    }

    /// The id that resumes this subscription where it stands: the topic's cursor for one
    /// topic, the list of every topic's cursor for several.
    pub fn resume_id(&self) -> String {
        Cursor::join(&self.positions)
    }

    /// Takes one event or gap notice: an event stream queues it on `outbox` (a single-topic
    /// stream shares the frame's bytes as they are; a multi-topic stream sends its own id —
    /// every topic's position — in front of them); a held poll collects it up to its `max`,
    /// and once full takes nothing more, so its positions stay those of what it answers with.
    pub(super) fn take(&mut self, item: Item<'_>, outbox: &mut Outbox, ids: &mut IdMemo) -> Taken {
        let multi = self.topics.len() > 1;
        match (&mut self.delivery, item) {
            (Delivery::Held(held), _) if held.full() => Taken::Nothing,
            (Delivery::Held(held), Item::Gap { idx, missed, resume_at }) => {
                self.positions[idx] = resume_at;
                let now = crate::clock::now_micros();
                held.items.push(HeldItem::Gap(longpoll::gap_object(&self.topics[idx], resume_at, missed, now)));
                Taken::Held
            }
            (Delivery::Held(held), Item::Event { idx, frame, .. }) => {
                self.positions[idx] = frame.cursor;
                if !frame.passes(self.types.as_deref()) {
                    return Taken::Nothing;
                }
                held.push(frame);
                Taken::Held
            }
            (Delivery::Ws | Delivery::WsData, Item::Gap { idx, missed, .. }) => {
                let gap = serde_json::json!({"event": "gap", "topic": &*self.topics[idx], "missed_from": missed});
                outbox.push_replay(ws::encode_frame(ws::Opcode::Text, gap.to_string().as_bytes()));
                Taken::Outbox
            }
            (Delivery::Ws | Delivery::WsData, Item::Event { idx, frame, replay }) => {
                self.positions[idx] = frame.cursor;
                if !frame.passes(self.types.as_deref()) {
                    return Taken::Nothing;
                }
                let raw = matches!(self.delivery, Delivery::WsData);
                push(outbox, if raw { frame.ws_raw() } else { frame.ws() }, replay);
                Taken::Outbox
            }
            (&mut Delivery::Sse { chunked }, Item::Gap { idx, missed, resume_at }) => {
                self.positions[idx] = resume_at;
                let id = Cursor::join(&self.positions);
                let gap = sse::gap_chunk(&self.topics[idx], missed, &id);
                outbox.push_replay(gap.for_version(chunked));
                Taken::Outbox
            }
            (&mut Delivery::Sse { chunked }, Item::Event { idx, frame, replay }) => {
                self.positions[idx] = frame.cursor;
                if !frame.passes(self.types.as_deref()) {
                    return Taken::Nothing;
                }
                if multi {
                    push(outbox, ids.id_chunk(&self.positions, chunked), replay);
                    push(outbox, frame.sse_anonymous(chunked), replay);
                } else {
                    push(outbox, frame.sse(chunked), replay);
                }
                Taken::Outbox
            }
        }
    }

    /// Renders the prelude, once every starting position is known: a held poll takes what
    /// it can answer with; a stream up to `RENDER_AHEAD` bytes queued, the rest when its
    /// socket has taken them (`Shard::flush` calls again).
    pub(super) fn render_prelude(&mut self, outbox: &mut Outbox) -> Taken {
        let ahead = if matches!(self.delivery, Delivery::Held(_)) { usize::MAX } else { RENDER_AHEAD };
        let mut taken = Taken::Nothing;
        let mut ids = IdMemo::default();
        let mut note = |t: Taken| {
            if t != Taken::Nothing {
                taken = t;
            }
        };
        while outbox.queued() < ahead {
            let Some(entry) = self.prelude.pop_front() else { break };
            match entry {
                Prelude::Reply(reply) => {
                    outbox.push(reply);
                    note(Taken::Outbox);
                }
                Prelude::Gap { idx, missed, resume_at } => {
                    note(self.take(Item::Gap { idx, missed: &missed, resume_at }, outbox, &mut ids))
                }
                Prelude::Event { idx, frame } => {
                    note(self.take(Item::Event { idx, frame: &frame, replay: false }, outbox, &mut ids))
                }
                Prelude::Replay { idx, frames, mut next } => {
                    while next < frames.len() && outbox.queued() < ahead {
                        note(self.take(Item::Event { idx, frame: &frames[next], replay: true }, outbox, &mut ids));
                        next += 1;
                    }
                    if next < frames.len() {
                        self.prelude.push_front(Prelude::Replay { idx, frames, next });
                    }
                }
            }
        }
        taken
    }

    /// Whether something is still to be rendered once the outbox drains.
    pub fn rendering(&self) -> bool {
        self.pending_acks == 0 && !self.prelude.is_empty()
    }

    /// Renders more of the prelude into `outbox`, which the socket has just emptied.
    pub fn render_more(&mut self, outbox: &mut Outbox) -> bool {
        self.render_prelude(outbox) != Taken::Nothing
    }
}

fn push(outbox: &mut Outbox, b: Bytes, replay: bool) {
    if replay { outbox.push_replay(b) } else { outbox.push(b) }
}

/// A topic as one worker sees it.
#[derive(Debug, Default)]
pub struct LocalTopic {
    /// Live subscribers: connection token → index of the topic in its subscription.
    pub(super) subs: Subscribers,
    /// Newest cursor seen here (valid while registered).
    pub(super) head: Cursor,
    /// Subscribe requests sent and not yet acknowledged.
    pub(super) pending: u32,
    /// The owner forwards this topic's events here.
    pub(super) registered: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rare_box_is_no_larger_for_presence() {
        // 40 bytes: the same 48-byte heap chunk as before presence, which every stream opened
        // with a token that expires pays, under presence_prefixes or not.
        assert!(size_of::<Rare>() <= 40, "{} bytes", size_of::<Rare>());
    }

    #[test]
    fn subscribers_at_the_same_positions_share_one_id_chunk() {
        let mut memo = IdMemo::default();
        let at = [Cursor::new(1, 5), Cursor::new(2, 0)];
        let a = memo.id_chunk(&at, true);
        let b = memo.id_chunk(&at, true);
        assert_eq!(a.as_ptr(), b.as_ptr(), "the same bytes, not a second encoding");
        let c = memo.id_chunk(&[Cursor::new(1, 5), Cursor::new(2, 1)], true);
        assert_ne!(a, c);
        assert!(c.ends_with(b"id: 1-5,2-1\n\r\n"));
        let bare = memo.id_chunk(&[Cursor::new(1, 5), Cursor::new(2, 1)], false);
        assert_eq!(&bare[..], b"id: 1-5,2-1\n");
    }
}

//! `GET /topics/{topic}` (API.md §9): a topic's subscribers by transport, summed over every
//! worker at the moment of the answer, its newest cursor and what its history holds. Asking
//! needs the right to publish to the topic (§6), and never makes the topic.

use std::sync::Arc;

use serde_json::json;

use crate::api::ctx::Ctx;
use crate::api::publish::{NotPrepared, Prepared, path_topic, prepare_for};
use crate::proto::http1::{RequestHead, Response, Status};
use crate::pubsub::msg::{ToOwner, ToWorker};
use crate::pubsub::probe::TopicProbe;
use crate::pubsub::topic::owner_of;

/// Checks the head: publish rights, the topic, and the right to publish there.
pub fn prepare(ctx: &Ctx, head: &RequestHead, raw_topic: &str) -> Result<Prepared, NotPrepared> {
    prepare_for(ctx, head, || path_topic(raw_topic), "/topic")
}

/// Asks every worker and the topic's owner at once, and answers when all have.
pub async fn info(ctx: &Ctx, topic: Arc<str>) -> Response {
    let workers = ctx.mesh.workers;
    let (probe, mut parts) = TopicProbe::new(workers + 1);
    let owner_part = parts.pop();
    for (inbox, part) in ctx.mesh.to_worker.iter().zip(parts) {
        inbox.send(ToWorker::Count { topic: topic.clone(), part }).await;
    }
    if let Some(part) = owner_part {
        ctx.mesh.to_owner[owner_of(&topic, workers)].send(ToOwner::Describe { topic: topic.clone(), part }).await;
    }
    let answer = probe.answered().await;
    let [sse, ws, poll] = answer.by_via;
    Response::json(
        Status::Ok,
        &json!({
            "topic": &*topic,
            "subscribers": sse + ws + poll,
            "by_transport": {"sse": sse, "ws": ws, "poll": poll},
            "last_event_id": answer.head.map(|c| c.to_string()),
            "history": {"events": answer.events, "bytes": answer.bytes},
        }),
    )
}

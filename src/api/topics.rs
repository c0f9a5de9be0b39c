//! Topic information (API.md §9): `GET /topics/{topic}` — a topic's subscribers by transport,
//! summed over every worker at the moment of the answer, its newest cursor and what its
//! history holds —, `GET /topics?prefix=` — the topics with subscribers or history, by
//! name, a page at a time — and `GET /topics/{topic}/presence` — who is subscribed. Asking
//! needs publish rights (§6; a topic is listed only to who may publish to it), and never makes
//! a topic.

use std::sync::Arc;

use serde_json::json;

use crate::api::bad_request;
use crate::api::ctx::Ctx;
use crate::api::publish::{NotPrepared, Prepared, Publisher, check_rights, path_topic, prepare_for};
use crate::proto::http1::{RequestHead, Response, Status};
use crate::proto::query::param;
use crate::pubsub::msg::{Shows, ToOwner};
use crate::pubsub::probe::TopicProbe;
use crate::pubsub::topic::{presence_owner, valid_topic};

/// Topics in a page of `GET /topics` unless `limit` says otherwise, and the most it may ask.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// Checks the head of `GET /topics`: publish rights, to some topic at least.
pub fn admit_list(ctx: &Ctx, head: &RequestHead) -> Result<Publisher, Response> {
    let who = check_rights(ctx, head)?;
    if !who.may_publish_somewhere() {
        return Err(Response::error(
            Status::Forbidden,
            "listing topics needs the right to publish",
            "/headers/authorization",
        ));
    }
    Ok(who)
}

/// Checks the head of `GET /topics/{topic}`: publish rights, the topic, and the right to
/// publish there.
pub fn prepare(ctx: &Ctx, head: &RequestHead, raw_topic: &str) -> Result<Prepared, NotPrepared> {
    prepare_for(ctx, head, || path_topic(raw_topic), "/topic")
}

/// `GET /topics/{topic}`: asks every worker and the topic's owner at once.
pub async fn info(ctx: &Ctx, topic: Arc<str>) -> Response {
    let probe = ctx.mesh.count(Arc::from([topic.clone()]), true).await;
    let answer = probe.answer(0);
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

/// `GET /topics/{topic}/presence`: the users (JWT `sub`s) with subscriptions to `topic`, from
/// its owner; 404 for a topic outside `presence_prefixes`, for which none are kept.
pub async fn presence(ctx: &Ctx, topic: Arc<str>) -> Response {
    if !ctx.config.keeps_presence(&topic) {
        return Response::error(
            Status::NotFound,
            &format!("no presence is kept for {topic:?}: it is under none of presence_prefixes"),
            "/topic",
        );
    }
    let (probe, mut parts) = TopicProbe::new(1, 0);
    if let Some(part) = parts.pop() {
        let owner = presence_owner(&topic, ctx.mesh.workers);
        ctx.mesh.to_owner[owner].send(ToOwner::Users { topic: topic.clone(), part }).await;
    }
    probe.answered().await;
    let (users, _) = probe.listed();
    let users: Vec<&str> = users.iter().map(|u| &**u).collect();
    Response::json(Status::Ok, &json!({"topic": &*topic, "users": users, "count": users.len()}))
}

/// `GET /topics?prefix=P&limit=N&after=T` (rights checked at admission): every owner lists its
/// first `limit` names after `after`; the first `limit` of all of them are the page, counted
/// by every worker. `next` is where the following page starts, null after the last one. The
/// owners leave out the topics `who` may not publish to, before the page is cut.
pub async fn list(ctx: &Ctx, head: &RequestHead, who: &Publisher) -> Response {
    let query = head.query();
    let text = |key: &str| match param(query, key) {
        Some(Ok(v)) => Ok(Some(v)),
        Some(Err(())) => Err(bad_request(format!("{key} is not valid percent-encoding"), &format!("/query/{key}"))),
        None => Ok(None),
    };
    let (prefix, after, limit) = match (text("prefix"), text("after"), text("limit")) {
        (Ok(p), Ok(a), Ok(l)) => (p.unwrap_or_default(), a, l),
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
    };
    if !prefix.is_empty() && !valid_topic(&prefix) {
        return bad_request("prefix must be the start of a topic name: up to 128 of [A-Za-z0-9_.:@-]", "/query/prefix");
    }
    if after.as_deref().is_some_and(|a| !valid_topic(a)) {
        return bad_request("after must be a topic name (from a page's next)", "/query/after");
    }
    let limit = match limit.map(|l| l.parse::<usize>()) {
        None => PAGE,
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => return bad_request(format!("limit must be a whole number from 1 to {MAX_PAGE}"), "/query/limit"),
    };
    let workers = ctx.mesh.workers;
    let (probe, parts) = TopicProbe::new(workers, 0);
    let shown = who.clone();
    let may = Shows(Arc::new(move |topic: &str| shown.may(topic)));
    for (inbox, part) in ctx.mesh.to_owner.iter().zip(parts) {
        let (prefix, after) = (prefix.as_str().into(), after.as_deref().map(Box::from));
        inbox.send(ToOwner::List { prefix, after, limit, may: may.clone(), part }).await;
    }
    probe.answered().await;
    let (mut names, owner_had_more) = probe.listed();
    let more = owner_had_more || names.len() > limit;
    names.truncate(limit);
    let next = if more { names.last().map(|n| n.to_string()) } else { None };
    let names: Arc<[Arc<str>]> = names.into();
    let counted = ctx.mesh.count(names.clone(), false).await;
    let topics: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"topic": &**n, "subscribers": counted.answer(i).by_via.iter().sum::<u64>()}))
        .collect();
    Response::json(Status::Ok, &json!({"topics": topics, "next": next}))
}

//! Seed 003 — EventSource push (`shared/seeds/003_*`): `GET /eventsource` and
//! `/eventsource/{type,type}` open one SSE stream carrying the topic `broadcast` plus the
//! caller's own `session:{session}`, `user:{sub}` and `group:{g}` topics (from the token),
//! filtered to the listed event types. Publishers target all, a session, users or groups
//! with the ordinary publish API. `POST /admin/pause?delay_ms=N[&except_groups=a,b]` sends
//! `retry: N` to every such stream (but those of the excepted groups) and closes it, so
//! clients come back after the delay and resume with `Last-Event-ID`.

use std::sync::Arc;

use serde_json::json;

use crate::api::bad_request;
use crate::api::ctx::Ctx;
use crate::api::publish::{Publisher, check_rights};
use crate::api::subscribe::{StreamRequest, authorize, parse_resume};
use crate::auth::rights::Identity;
use crate::proto::http1::{RequestHead, Response, Status};
use crate::proto::query::{param, percent_decode};
use crate::pubsub::msg::ToWorker;
use crate::pubsub::topic::{MAX_TOPICS_PER_SUBSCRIPTION, valid_topic, valid_type};
use crate::shard::subscription::Namer;

/// Longest pause a client may be asked to wait.
const MAX_PAUSE_MS: u64 = 24 * 3600 * 1000;

/// The stream's topics for `who`: `broadcast`, then the token's session and user, then its
/// groups in sorted order. The order is canonical — the stream's id lists one cursor per
/// topic in this order — so a token re-issued with its groups in another order resumes the
/// same positions.
pub fn topics_for(who: &Identity) -> Vec<Arc<str>> {
    let mut topics: Vec<Arc<str>> = vec!["broadcast".into()];
    if let Identity::Token(c) = who {
        let mut groups: Vec<&String> = c.groups.iter().collect();
        groups.sort();
        let own = c.session.iter().map(|s| format!("session:{s}")).chain(c.sub.iter().map(|s| format!("user:{s}")));
        for t in own.chain(groups.into_iter().map(|g| format!("group:{g}"))) {
            if valid_topic(&t) && !topics.iter().any(|x| **x == *t) && topics.len() < MAX_TOPICS_PER_SUBSCRIPTION {
                topics.push(t.into());
            }
        }
    }
    topics
}

/// `GET /eventsource[/{types}]`: the caller's stream, pausable, spared by its groups.
pub fn subscribe(ctx: &Ctx, head: &RequestHead, raw_types: &str) -> Result<StreamRequest, Response> {
    let who = authorize(&ctx.config, head, &[])?;
    let types = if raw_types.is_empty() {
        None
    } else {
        let decoded = percent_decode(raw_types, false).unwrap_or_default();
        let list: Vec<Box<str>> = decoded.split(',').map(|t| t.trim().into()).collect();
        if list.iter().any(|t| !valid_type(t)) {
            return Err(bad_request(
                "event types in the path must be 1-64 of [A-Za-z0-9_.:-], comma-separated",
                "/types",
            ));
        }
        Some(list.into())
    };
    let topics = topics_for(&who);
    let from = parse_resume(head, topics.len())?;
    let groups = match &who {
        Identity::Token(c) => c.groups.clone(),
        Identity::Anonymous => Vec::new(),
    };
    let expires = who.expires();
    Ok(StreamRequest {
        topics,
        from,
        types,
        padding: false,
        sheddable: Some(groups.into()),
        expires,
        names: Namer::Route,
        user: who.user().map(Arc::from),
    })
}

/// Who may `POST /admin/pause` (API.md §7): the publish key (or loopback when none is
/// set), or a token whose `publish` claim is `*` — it acts on every stream.
pub fn admit_pause(ctx: &Ctx, head: &RequestHead) -> Result<Publisher, Response> {
    let who = check_rights(ctx, head)?;
    if !who.may_administer() {
        return Err(Response::error(
            Status::Forbidden,
            "pausing every stream needs the publish key or a token whose publish claim is \"*\"",
            "/headers/authorization",
        ));
    }
    Ok(who)
}

/// `POST /admin/pause?delay_ms=N[&except_groups=a,b]` (rights checked by `admit_pause`).
pub async fn pause(ctx: &Ctx, head: &RequestHead) -> Response {
    let delay_ms = match param(head.query(), "delay_ms") {
        Some(Ok(v)) => match v.parse::<u64>() {
            Ok(ms) if ms <= MAX_PAUSE_MS => ms,
            _ => {
                return bad_request(
                    format!("delay_ms must be a whole number of milliseconds ≤ {MAX_PAUSE_MS}"),
                    "/query/delay_ms",
                );
            }
        },
        _ => return bad_request("delay_ms is required", "/query/delay_ms"),
    };
    let except: Arc<[String]> = match param(head.query(), "except_groups") {
        Some(Ok(v)) => v.split(',').map(|g| g.trim().to_string()).filter(|g| !g.is_empty()).collect(),
        Some(Err(())) => return bad_request("except_groups is not valid percent-encoding", "/query/except_groups"),
        None => Arc::from([]),
    };
    for inbox in ctx.mesh.to_worker.iter() {
        inbox.send(ToWorker::Shed { delay_ms, except: except.clone() }).await;
    }
    Response::json(Status::Ok, &json!({"paused": true, "delay_ms": delay_ms, "except_groups": &*except}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwt::Claims;

    #[test]
    fn topics_from_the_token() {
        assert_eq!(topics_for(&Identity::Anonymous), vec![Arc::<str>::from("broadcast")]);
        let c = Claims {
            sub: Some("42".into()),
            session: Some("s1".into()),
            groups: vec!["Marketing".into(), "Engineering".into()],
            ..Claims::default()
        };
        let t: Vec<String> = topics_for(&Identity::Token(Box::new(c))).iter().map(|t| t.to_string()).collect();
        assert_eq!(t, ["broadcast", "session:s1", "user:42", "group:Engineering", "group:Marketing"]);
    }
}

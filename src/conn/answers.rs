//! The answers a connection owes its client, in request order: encoded responses held back to
//! leave in one write, and single publishes already handed to their owners whose cursors are
//! still to come.
//!
//! A client that pipelines publishes has them sent to their owners together and waits for
//! the cursors together: one trip through the worker's run queue per batch rather than per
//! publish. That trip is long when thousands of subscribers' tasks are runnable (long-polls
//! answered by the last publish), and paying it once per publish starved the publisher.

use std::sync::Arc;

use bytes::BytesMut;
use monoio::net::TcpStream;
use monoio::time::Instant;

use super::request;
use crate::api::ctx::Ctx;
use crate::api::publish::{self, NewEvent, Publisher, Submitted};
use crate::proto::http1::{Response, Status, Wire};
use crate::shard::outbox::Outbox;

/// Most answer bytes held back for pipelined requests before they are written anyway.
const MAX_HELD_BYTES: usize = 64 * 1024;

/// Most buffer capacity kept for the next batch of answers once a batch is written.
const KEPT_BYTES: usize = 4096;

/// Most publishes taken in before their cursors are waited for.
const MAX_DEFERRED: usize = 128;

#[derive(Default)]
pub struct Answers {
    /// Encoded answers, back to back. The buffer is reused from batch to batch once the
    /// write of the last one has let go of it.
    ready: BytesMut,
    publishes: Vec<Deferred>,
}

/// A single publish submitted ahead of its answer.
struct Deferred {
    submitted: Submitted,
    topic: Arc<str>,
    minor_version: u8,
    cors: Vec<(&'static str, String)>,
}

impl Answers {
    /// Whether another publish may be taken in before the answers are settled.
    pub fn may_defer(&self) -> bool {
        self.publishes.len() < MAX_DEFERRED && self.ready.len() < MAX_HELD_BYTES
    }

    /// Whether nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.publishes.is_empty() && self.ready.is_empty()
    }

    /// Whether enough is held back that it should be written now.
    pub fn full(&self) -> bool {
        self.ready.len() >= MAX_HELD_BYTES
    }

    /// Hands a validated single publish to its owner; its answer comes with [`Answers::settle`].
    pub async fn defer(
        &mut self,
        ctx: &Ctx,
        publisher: Publisher,
        ev: NewEvent,
        minor_version: u8,
        keep_alive: bool,
        cors: Vec<(&'static str, String)>,
    ) {
        let topic = ev.topic.clone();
        match publish::submit(ctx, &publisher, smallvec::smallvec![ev]).await {
            Ok(submitted) => self.publishes.push(Deferred { submitted, topic, minor_version, cors }),
            Err(refused) => {
                let r = refused.response("/topic").with_headers(cors);
                self.add(ctx, r, Wire { minor_version, keep_alive, head_only: false }).await;
            }
        }
    }

    /// Waits for the deferred publishes' cursors and encodes their answers, in order.
    pub async fn settle(&mut self, ctx: &Ctx) {
        let metrics = &ctx.mesh.metrics.workers[ctx.worker];
        for d in self.publishes.drain(..) {
            let start = self.ready.len();
            match publish::cursors(ctx, d.submitted).await {
                // Only keep-alive requests are deferred.
                Ok(cursors) => {
                    publish::write_published(&mut self.ready, cursors[0], &d.topic, d.minor_version, &d.cors);
                    metrics.response(Status::Ok.code());
                }
                Err(refused) => {
                    let r = refused.response("/topic").with_headers(d.cors);
                    r.encode_into(&mut self.ready, Wire::kept(d.minor_version));
                    metrics.response(r.status.code());
                }
            }
            metrics.bytes_written.add((self.ready.len() - start) as u64);
        }
    }

    /// Adds the answer to the request just read, behind every answer owed before it.
    pub async fn add(&mut self, ctx: &Ctx, response: Response, wire: Wire) {
        self.settle(ctx).await;
        let start = self.ready.len();
        response.encode_into(&mut self.ready, wire);
        let metrics = &ctx.mesh.metrics.workers[ctx.worker];
        metrics.response(response.status.code());
        metrics.bytes_written.add((self.ready.len() - start) as u64);
    }

    /// Settles and writes everything owed; `false` when the client does not take it in time.
    pub async fn write(&mut self, ctx: &Ctx, stream: &TcpStream) -> bool {
        self.settle(ctx).await;
        if self.ready.is_empty() {
            return true;
        }
        let size = self.ready.len() + self.ready.capacity();
        let mut out = Outbox::default();
        out.push(self.ready.split().freeze());
        let deadline = Instant::now() + ctx.config.head_timeout * 3;
        // A failed write leaves nothing owed (the client is not taking it), and no second
        // deadline.
        let written = Box::pin(request::write_out(stream, &mut out, deadline)).await.is_ok();
        if size > KEPT_BYTES {
            // A connection that goes quiet after a large batch does not keep its buffer.
            self.ready = BytesMut::new();
        }
        written
    }
}

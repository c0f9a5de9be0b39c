//! herald's own HTTP API (API.md §2–3): request validation and the calls into the engine.
//! Handlers return a `Response` or hand the connection over to a stream.

pub mod ctx;
pub mod publish;
pub mod subscribe;
pub mod topics;
pub mod ws;

use crate::proto::http1::{Response, Status};

/// A 400 with the JSON error body.
pub fn bad_request(message: impl AsRef<str>, path: &str) -> Response {
    Response::error(Status::BadRequest, message.as_ref(), path)
}

//! Our own HTTP/1.1: request heads on httparse, bodies by length or chunked, responses.

pub mod body;
pub mod head;
pub mod response;

pub use body::{BodyDecoder, BodyError};
pub use head::{BodyKind, HeadError, Method, RequestHead, parse_head};
pub use response::{Head, Response, Status, Wire};

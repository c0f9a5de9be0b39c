//! Response encoding: status lines, the few headers herald sends, and JSON error bodies.

use bytes::{BufMut, Bytes, BytesMut};

/// The statuses herald answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Continue,
    Ok,
    NoContent,
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Unprocessable,
    MethodNotAllowed,
    RequestTimeout,
    PayloadTooLarge,
    UpgradeRequired,
    TooManyRequests,
    HeadersTooLarge,
    Internal,
    NotImplemented,
    Unavailable,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Continue => 100,
            Status::Ok => 200,
            Status::NoContent => 204,
            Status::BadRequest => 400,
            Status::Unauthorized => 401,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::Unprocessable => 422,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::PayloadTooLarge => 413,
            Status::UpgradeRequired => 426,
            Status::TooManyRequests => 429,
            Status::HeadersTooLarge => 431,
            Status::Internal => 500,
            Status::NotImplemented => 501,
            Status::Unavailable => 503,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Status::Continue => "Continue",
            Status::Ok => "OK",
            Status::NoContent => "No Content",
            Status::BadRequest => "Bad Request",
            Status::Unauthorized => "Unauthorized",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::Unprocessable => "Unprocessable Content",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::PayloadTooLarge => "Payload Too Large",
            Status::UpgradeRequired => "Upgrade Required",
            Status::TooManyRequests => "Too Many Requests",
            Status::HeadersTooLarge => "Request Header Fields Too Large",
            Status::Internal => "Internal Server Error",
            Status::NotImplemented => "Not Implemented",
            Status::Unavailable => "Service Unavailable",
        }
    }
}

/// The interim response sent before reading a body the client is holding back.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A complete response with a body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: Status,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Response {
    pub fn new(status: Status, content_type: &'static str, body: impl Into<Bytes>) -> Response {
        Response { status, content_type, headers: Vec::new(), body: body.into() }
    }

    /// `200 application/json` with `body`.
    pub fn json(status: Status, body: &serde_json::Value) -> Response {
        Response::new(status, "application/json", body.to_string())
    }

    /// The JSON error body every error carries: `{"error":{"message","path"}}`.
    pub fn error(status: Status, message: &str, path: &str) -> Response {
        let body = serde_json::json!({"error": {"message": message, "path": path}});
        Response::json(status, &body)
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    pub fn with_headers(mut self, headers: Vec<(&'static str, String)>) -> Response {
        self.headers.extend(headers);
        self
    }

    /// Encodes head and body as `wire` says.
    pub fn encode(&self, wire: Wire) -> Bytes {
        let mut out = BytesMut::with_capacity(160 + self.body.len());
        self.encode_into(&mut out, wire);
        out.freeze()
    }

    /// Appends the encoded response to `out` (see `encode`).
    pub fn encode_into(&self, out: &mut BytesMut, wire: Wire) {
        let head = Head {
            status: self.status,
            content_type: self.content_type,
            content_length: self.body.len(),
            headers: &self.headers,
            minor_version: wire.minor_version,
            keep_alive: wire.keep_alive,
        };
        head.write(out);
        if !wire.head_only && self.status != Status::NoContent {
            out.put_slice(&self.body);
        }
    }
}

/// How a response goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wire {
    /// The request's HTTP/1.x minor version, answered in kind.
    pub minor_version: u8,
    /// Whether the connection stays open (the `Connection` header says which).
    pub keep_alive: bool,
    /// A HEAD request's answer: the length stays, the body goes.
    pub head_only: bool,
}

impl Wire {
    /// A whole answer on a connection that stays open.
    pub fn kept(minor_version: u8) -> Wire {
        Wire { minor_version, keep_alive: true, head_only: false }
    }

    /// A whole answer, after which the connection closes.
    pub fn closing(minor_version: u8) -> Wire {
        Wire { minor_version, keep_alive: false, head_only: false }
    }
}

/// A response head on its own, for bodies sent as separate pieces.
pub struct Head<'a> {
    pub status: Status,
    pub content_type: &'static str,
    pub content_length: usize,
    pub headers: &'a [(&'static str, String)],
    pub minor_version: u8,
    pub keep_alive: bool,
}

impl Head<'_> {
    pub fn write(&self, out: &mut BytesMut) {
        out.put_slice(if self.minor_version == 0 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
        out.put_slice(itoa::Buffer::new().format(self.status.code()).as_bytes());
        out.put_u8(b' ');
        out.put_slice(self.status.reason().as_bytes());
        out.put_slice(b"\r\n");
        if self.status != Status::NoContent {
            out.put_slice(b"Content-Type: ");
            out.put_slice(self.content_type.as_bytes());
            out.put_slice(b"\r\nContent-Length: ");
            out.put_slice(itoa::Buffer::new().format(self.content_length).as_bytes());
            out.put_slice(b"\r\n");
        }
        for (k, v) in self.headers {
            out.put_slice(k.as_bytes());
            out.put_slice(b": ");
            out.put_slice(v.as_bytes());
            out.put_slice(b"\r\n");
        }
        match (self.keep_alive, self.minor_version) {
            (false, 1) => out.put_slice(b"Connection: close\r\n"),
            (true, 0) => out.put_slice(b"Connection: keep-alive\r\n"),
            _ => {}
        }
        out.put_slice(b"\r\n");
    }

    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(192);
        self.write(&mut out);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_json_with_message_and_path() {
        let r = Response::error(Status::BadRequest, "bad \"topic\"", "/topic");
        let text = String::from_utf8(r.encode(Wire::kept(1)).to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["message"], "bad \"topic\"");
        assert_eq!(v["error"]["path"], "/topic");
    }

    #[test]
    fn connection_header_follows_version_and_keep_alive() {
        let r = Response::new(Status::Ok, "text/plain", "ok");
        let s = |v, k| {
            String::from_utf8(r.encode(Wire { minor_version: v, keep_alive: k, head_only: false }).to_vec()).unwrap()
        };
        assert!(s(1, false).contains("Connection: close\r\n"));
        assert!(!s(1, true).contains("Connection"));
        assert!(s(0, true).contains("Connection: keep-alive\r\n"));
        assert!(s(0, true).starts_with("HTTP/1.0 200 OK"));
        let head = String::from_utf8(r.encode(Wire { head_only: true, ..Wire::kept(1) }).to_vec()).unwrap();
        assert!(head.ends_with("\r\n\r\n") && head.contains("Content-Length: 2"));
    }
}

//! The opening handshake (RFC 6455 §4.2): checking the client's request and computing
//! `Sec-WebSocket-Accept`. Nothing is upgraded until every check has passed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use sha1::{Digest, Sha1};

use crate::proto::http1::{Method, RequestHead, Response, Status};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `base64(SHA-1(key + GUID))`.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    STANDARD.encode(h.finalize())
}

/// Checks an upgrade request; returns the accept value, or the refusal to send instead.
pub fn check(head: &RequestHead) -> Result<String, Response> {
    let bad = |m: &str, path: &str| Response::error(Status::BadRequest, m, path);
    if head.method != Method::Get || head.minor_version != 1 {
        return Err(bad("a WebSocket upgrade must be an HTTP/1.1 GET", "/method"));
    }
    let connection_upgrade =
        head.header_str("connection").is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    if !connection_upgrade {
        return Err(bad("a WebSocket upgrade needs Connection: Upgrade", "/headers/connection"));
    }
    if head.header_str("sec-websocket-version") != Some("13") {
        return Err(Response::error(
            Status::UpgradeRequired,
            "only WebSocket version 13 is supported",
            "/headers/sec-websocket-version",
        )
        .with_header("Sec-WebSocket-Version", "13"));
    }
    let key = head.header_str("sec-websocket-key").unwrap_or("");
    match STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => Ok(accept_key(key)),
        _ => Err(bad("Sec-WebSocket-Key must be 16 bytes in base64", "/headers/sec-websocket-key")),
    }
}

/// The `101 Switching Protocols` head, with `extra` headers. No extension is negotiated (an
/// offered permessage-deflate is simply not accepted).
pub fn switching(accept: &str, extra: &[(&str, &str)]) -> Bytes {
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http1::parse_head;

    #[test]
    fn rfc_example_key() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    fn head(extra: &str) -> RequestHead {
        let raw = format!("GET /sub/a HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n{extra}\r\n");
        parse_head(raw.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn checks() {
        let ok = head(
            "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        );
        assert_eq!(check(&ok).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let v8 =
            head("Connection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n");
        let r = check(&v8).unwrap_err();
        assert_eq!(r.status, Status::UpgradeRequired);
        assert!(r.headers.iter().any(|(k, v)| *k == "Sec-WebSocket-Version" && v == "13"));
        for extra in [
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n",
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        ] {
            assert_eq!(check(&head(extra)).unwrap_err().status, Status::BadRequest, "{extra:?}");
        }
    }
}

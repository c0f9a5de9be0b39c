//! Seed 002 — the chat client's WebSocket events API (`shared/seeds/002_*`), on `/events`
//! with `Upgrade: websocket`. It needs an authenticated session (the JWT by header, cookie or
//! `?token=`); without one the socket sends an error message and closes. Messages carry a
//! `method` and an `id`: `ping` → `pong` with `ts`; `send` echoes every input key back with
//! `"event":"sent"`; `debug` logs what it is given; anything else gets an error whose `path`
//! is a JSON pointer into the message. The user's own events — whatever is published to
//! `user:{sub}` — are pushed as they are.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::api::ws::{error_reply, text_frame};
use crate::proto::longpoll::ts_json;

/// The reply to one message, if it gets one (`debug` does not).
pub fn on_message(text: &str, now_micros: u64) -> Option<Bytes> {
    let input = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Some(error_reply("error", &Map::new(), &[("a message must be a JSON object".into(), "/".into())]));
        }
        Err(e) => return Some(error_reply("error", &Map::new(), &[(format!("invalid JSON: {e}"), "/".into())])),
    };
    let method = input.get("method").and_then(Value::as_str).unwrap_or_default().to_string();
    match method.as_str() {
        "ping" => {
            let ts: Value = serde_json::from_str(&ts_json(now_micros)).unwrap_or(Value::Null);
            let mut out = Map::new();
            out.insert("event".into(), "pong".into());
            if let Some(id) = input.get("id") {
                out.insert("id".into(), id.clone());
            }
            out.insert("ts".into(), ts);
            Some(text_frame(&Value::Object(out)))
        }
        "send" => Some(send(input)),
        "debug" => {
            let logged = Value::Object(input).to_string();
            tracing::debug!("chat debug message: {logged}");
            None
        }
        "" => Some(error_reply("error", &input, &[("missing method".into(), "/method".into())])),
        other => Some(error_reply("error", &input, &[(format!("unknown method {other:?}"), "/method".into())])),
    }
}

/// `send`: validated like the original (a connection to send through, a string message),
/// then every input key echoed back with `"event":"sent"`.
fn send(input: Map<String, Value>) -> Bytes {
    let mut errors = Vec::new();
    match input.get("connection_id") {
        Some(Value::String(c)) if !c.is_empty() => {}
        _ => errors.push(("Missing connection ID.".to_string(), "/connection_id".to_string())),
    }
    if let Some(m) = input.get("message")
        && !m.is_string()
    {
        errors.push(("message must be a string".to_string(), "/message".to_string()));
    }
    if !errors.is_empty() {
        return error_reply("sent", &input, &errors);
    }
    let mut out = input;
    out.insert("event".into(), json!("sent"));
    text_frame(&Value::Object(out))
}

/// What an unauthenticated socket is told before it is closed.
pub fn no_session(why: &str) -> Bytes {
    error_reply("handshake", &Map::new(), &[(format!("an active session is required: {why}"), "/".into())])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_of(frame: &[u8]) -> Value {
        let h = crate::proto::ws::frame::parse_head(frame).unwrap().unwrap();
        serde_json::from_slice(&frame[h.head_len..]).unwrap()
    }

    #[test]
    fn seed_methods() {
        let pong = json_of(&on_message(r#"{"method":"ping","id":9}"#, 1_593_647_381_729_490).unwrap());
        assert_eq!(pong, json!({"event": "pong", "id": 9, "ts": 1593647381.72949}));
        let sent = json_of(
            &on_message(
                r##"{"method":"send","connection_id":"irc-x","conversation_id":"#c","id":42,"message":"hi"}"##,
                0,
            )
            .unwrap(),
        );
        assert_eq!(
            sent,
            json!({"method": "send", "connection_id": "irc-x", "conversation_id": "#c", "id": 42, "message": "hi", "event": "sent"})
        );
        assert!(on_message(r#"{"method":"debug","whatEver":42}"#, 0).is_none());
    }

    #[test]
    fn errors_carry_pointers_and_echo_the_input() {
        let e = json_of(&on_message(r#"{"method":"send","id":42,"message":"m"}"#, 0).unwrap());
        assert_eq!(e["event"], "sent");
        assert_eq!(e["errors"][0]["path"], "/connection_id");
        assert_eq!(e["id"], 42);
        assert_eq!(e["message"], "m");
        let e = json_of(&on_message(r#"{"method":"fly","id":1}"#, 0).unwrap());
        assert_eq!(e["errors"][0]["path"], "/method");
        assert_eq!(e["method"], "fly");
        let e = json_of(&on_message("nope", 0).unwrap());
        assert_eq!(e["errors"][0]["path"], "/");
    }
}

//! HS256 JSON Web Tokens: verification with HMAC-SHA-256 (RustCrypto's `hmac`, constant-time
//! comparison) and the claims herald reads. Only `alg: HS256` is accepted — `none` and every
//! other algorithm are refused, so a token cannot choose how it is checked.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// The claims of a verified token.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Claims {
    /// The user.
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub session: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Topic patterns this token may subscribe to (`*` as a suffix wildcard).
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Topic patterns this token may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Expiry, Unix seconds.
    #[serde(default)]
    pub exp: Option<f64>,
    /// Not before, Unix seconds.
    #[serde(default)]
    pub nbf: Option<f64>,
}

/// Why a token was refused (each is a 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not a JWT")]
    Malformed,
    #[error("token algorithm must be HS256")]
    Algorithm,
    #[error("token signature does not match")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token claims are malformed (or name an empty sub, session or group)")]
    Claims,
    #[error("token header lists critical extensions (crit) herald does not understand")]
    Critical,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    /// Extensions the token says must be understood (RFC 7515 §4.1.11): herald understands
    /// none, so a token whose header has the member at all (even `null`) is refused.
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

/// A member that is there, whatever its value.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

/// Most bytes of a token we look at.
const MAX_TOKEN: usize = 8192;

/// Verifies `token` with `secret` at time `now` (Unix seconds).
pub fn verify(token: &str, secret: &[u8], now: f64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    let header_json = URL_SAFE_NO_PAD.decode(h).map_err(|_| TokenError::Malformed)?;
    let header: Header = serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
    if header.alg != "HS256" {
        return Err(TokenError::Algorithm);
    }
    if header.crit {
        return Err(TokenError::Critical);
    }
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| TokenError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| TokenError::Signature)?;
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    mac.verify_slice(&sig).map_err(|_| TokenError::Signature)?;
    let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Claims)?;
    // An empty name would name `user:`, `session:` or `group:` itself.
    let empty = |v: &str| v.is_empty();
    if claims.sub.as_deref().is_some_and(empty)
        || claims.session.as_deref().is_some_and(empty)
        || claims.groups.iter().any(|g| empty(g))
    {
        return Err(TokenError::Claims);
    }
    if claims.exp.is_some_and(|exp| now >= exp) {
        return Err(TokenError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| now < nbf) {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

/// Signs `claims` (a JSON object) with `secret`: for tests and tools.
pub fn sign(claims: &serde_json::Value, secret: &[u8]) -> String {
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    let s = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{h}.{p}.{s}")
}

/// Whether `token` looks like a JWT at all (three dot-separated parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &[u8] = b"secret";

    #[test]
    fn a_valid_token_gives_its_claims() {
        let t = sign(&json!({"sub": "42", "groups": ["Marketing"], "subscribe": ["news:*"], "exp": 2e9}), KEY);
        let c = verify(&t, KEY, 1.7e9).unwrap();
        assert_eq!(c.sub.as_deref(), Some("42"));
        assert_eq!(c.groups, ["Marketing"]);
        assert_eq!(c.subscribe, ["news:*"]);
    }

    #[test]
    fn refusals() {
        let good = sign(&json!({"sub": "42", "exp": 2e9}), KEY);
        assert_eq!(verify(&good, b"other", 1.7e9), Err(TokenError::Signature));
        assert_eq!(verify(&good, KEY, 2e9 + 1.0), Err(TokenError::Expired));
        let nbf = sign(&json!({"nbf": 1.8e9}), KEY);
        assert_eq!(verify(&nbf, KEY, 1.7e9), Err(TokenError::NotYetValid));
        // alg none, with or without a signature
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let p = URL_SAFE_NO_PAD.encode(br#"{"sub":"42"}"#);
        assert_eq!(verify(&format!("{h}.{p}."), KEY, 0.0), Err(TokenError::Algorithm));
        let h384 = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS384"}"#);
        assert_eq!(verify(&format!("{h384}.{p}.AAAA"), KEY, 0.0), Err(TokenError::Algorithm));
        // An extension it does not understand, signed properly (an outside attack found it
        // accepted).
        let hcrit = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","crit":["exp"]}"#);
        let mut mac = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
        mac.update(format!("{hcrit}.{p}").as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        assert_eq!(verify(&format!("{hcrit}.{p}.{sig}"), KEY, 0.0), Err(TokenError::Critical));
        let hnull = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","crit":null}"#);
        let mut mac = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
        mac.update(format!("{hnull}.{p}").as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        assert_eq!(verify(&format!("{hnull}.{p}.{sig}"), KEY, 0.0), Err(TokenError::Critical));
        // tampered payload
        let mut parts: Vec<&str> = good.split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode(br#"{"sub":"admin","exp":2e9}"#);
        parts[1] = &evil;
        assert_eq!(verify(&parts.join("."), KEY, 1.7e9), Err(TokenError::Signature));
        for junk in ["", "a", "a.b", "a.b.c.d", "!!.??.%%", &"x".repeat(MAX_TOKEN + 1)] {
            assert!(verify(junk, KEY, 0.0).is_err(), "{junk:?}");
        }
        let not_object = sign(&json!([1, 2]), KEY);
        assert_eq!(verify(&not_object, KEY, 0.0), Err(TokenError::Claims));
        for empty in [json!({"sub": ""}), json!({"session": ""}), json!({"groups": ["a", ""]})] {
            assert_eq!(verify(&sign(&empty, KEY), KEY, 0.0), Err(TokenError::Claims), "{empty}");
        }
    }
}

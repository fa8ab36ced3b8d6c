//! HS512 JWTs shaped like Dhan's access tokens (docs/dhan-api.md §5).
//!
//! Clients are expected to decode the payload *without* verifying the signature, so the mock signs
//! with a key only it knows: a client that tried to verify would fail, which is the point.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha512;

/// Claims in the order observed on real tokens (§5). `iat`'s position is a guess.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    pub iss: String,
    pub partner_id: String,
    pub exp: i64,
    pub iat: i64,
    pub token_consumer_type: String,
    pub webhook_url: String,
    pub dhan_client_id: String,
}

impl Claims {
    pub fn new(client_id: &str, kind: &str, iat: i64, exp: i64) -> Self {
        Claims {
            iss: "dhan".into(),
            partner_id: String::new(),
            exp,
            iat,
            token_consumer_type: kind.into(),
            webhook_url: String::new(),
            dhan_client_id: client_id.into(),
        }
    }
}

const HEADER: &str = r#"{"typ":"JWT","alg":"HS512"}"#;

pub fn encode(claims: &Claims, key: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(HEADER);
    let payload =
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims always serialize"));
    let signing_input = format!("{header}.{payload}");
    let mut mac = Hmac::<Sha512>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// Reads the claims without checking the signature. `None` means "malformed", which on the real
/// API is answered by the gateway rather than by Dhan itself (§6 shape 4).
pub fn decode_unverified(token: &str) -> Option<Claims> {
    let mut parts = token.split('.');
    let (header, payload, sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || sig.is_empty() {
        return None;
    }
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    header.get("alg")?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_dhan_tokens() {
        let token = encode(&Claims::new("1000000001", "APP", 1_000, 87_400), b"k");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"typ":"JWT","alg":"HS512"}));
        let payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(payload["iss"], "dhan");
        assert_eq!(payload["tokenConsumerType"], "APP");
        assert_eq!(payload["dhanClientId"], "1000000001");
        assert_eq!(payload["webhookUrl"], "");
        assert!(payload.get("partnerId").is_some());
        assert_eq!(
            payload["exp"].as_i64().unwrap() - payload["iat"].as_i64().unwrap(),
            86_400
        );
        // HS512 signature: 64 bytes.
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);
    }

    #[test]
    fn signature_depends_on_key_and_decode_round_trips() {
        let c = Claims::new("1", "SELF", 5, 10);
        assert_ne!(encode(&c, b"a"), encode(&c, b"b"));
        assert_eq!(decode_unverified(&encode(&c, b"a")), Some(c));
        assert_eq!(decode_unverified("not-a-jwt"), None);
        assert_eq!(decode_unverified("a.b.c"), None);
    }
}

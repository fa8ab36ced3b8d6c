//! Reading the claims of a Dhan access token.
//!
//! Dhan tokens are HS512 JWTs (docs/dhan-api.md §5). The operator has no key to verify them and does
//! not need one: it only reads `exp` (the real expiry), `iat` and `tokenConsumerType` (`SELF`
//! tokens can be renewed, `APP` tokens cannot — §2) to plan its own work. Dhan decides whether a
//! token is valid.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::error::DhanError;

/// The claims the operator reads from a Dhan JWT (docs/dhan-api.md §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// `exp`: when Dhan stops accepting the token. The source of truth for expiry (§1).
    pub exp: DateTime<Utc>,
    /// `iat`: when the token was issued.
    pub iat: Option<DateTime<Utc>>,
    /// `tokenConsumerType`: `"SELF"` for Dhan Web tokens (renewable), `"APP"` for TOTP mints.
    pub consumer_type: Option<String>,
    /// `dhanClientId`, when present.
    pub client_id: Option<String>,
}

impl TokenClaims {
    /// Whether Dhan documents this token as renewable through `RenewToken` (docs/dhan-api.md §2):
    /// only tokens generated on Dhan Web (`tokenConsumerType: "SELF"`) are.
    pub fn is_renewable(&self) -> bool {
        self.consumer_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("SELF"))
    }
}

/// JWTs use unpadded base64url; accepting padding (and, below, the standard alphabet) costs
/// nothing and survives tokens that went through a sloppy copy-paste or proxy.
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes the payload of `token` without checking its signature.
///
/// Errors are [`DhanError::MalformedToken`] with a fixed description: nothing of the token ever
/// ends up in the error.
pub fn decode_claims(token: &str) -> Result<TokenClaims, DhanError> {
    let malformed = |detail: &'static str| DhanError::MalformedToken { detail };
    let mut parts = token.trim().split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("not a JWT (expected three dot-separated parts)"));
    };
    let bytes = URL_SAFE_LENIENT
        .decode(payload)
        .or_else(|_| STANDARD_LENIENT.decode(payload))
        .map_err(|_| malformed("JWT payload is not base64url"))?;
    let claims: Value =
        serde_json::from_slice(&bytes).map_err(|_| malformed("JWT payload is not JSON"))?;
    let Value::Object(claims) = claims else {
        return Err(malformed("JWT payload is not a JSON object"));
    };
    let exp = claims
        .get("exp")
        .and_then(unix_seconds)
        .ok_or_else(|| malformed("JWT has no readable exp claim"))?;
    Ok(TokenClaims {
        exp,
        iat: claims.get("iat").and_then(unix_seconds),
        consumer_type: claims.get("tokenConsumerType").and_then(scalar_string),
        client_id: claims.get("dhanClientId").and_then(scalar_string),
    })
}

/// Unix seconds as a JSON integer, float or numeric string.
fn unix_seconds(value: &Value) -> Option<DateTime<Utc>> {
    let seconds = match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    DateTime::from_timestamp(seconds, 0)
}

/// A JSON string or number as text (Dhan is not consistent about client IDs, §5).
pub(crate) fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Builds unsigned JWT-shaped test tokens.
#[cfg(test)]
pub(crate) mod testing {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::Value;

    /// A JWT with Dhan's header, the given claims and a fake signature.
    pub(crate) fn jwt(claims: Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS512"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signature = URL_SAFE_NO_PAD.encode([7u8; 64]);
        format!("{header}.{payload}.{signature}")
    }
}

#[cfg(test)]
mod tests {
    use super::testing::jwt;
    use super::*;
    use serde_json::json;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn reads_exp_iat_consumer_type_and_client_id() {
        let token = jwt(json!({
            "iss": "dhan", "partnerId": "", "exp": 1_758_700_000, "iat": 1_758_613_600,
            "tokenConsumerType": "APP", "webhookUrl": "", "dhanClientId": "1000000001"
        }));
        let claims = decode_claims(&token).unwrap();
        assert_eq!(
            claims,
            TokenClaims {
                exp: at(1_758_700_000),
                iat: Some(at(1_758_613_600)),
                consumer_type: Some("APP".into()),
                client_id: Some("1000000001".into()),
            }
        );
        assert!(!claims.is_renewable());
    }

    #[test]
    fn self_token_is_renewable() {
        let claims = decode_claims(&jwt(json!({"exp": 10, "tokenConsumerType": "SELF"}))).unwrap();
        assert!(claims.is_renewable());
        let unknown = decode_claims(&jwt(json!({"exp": 10}))).unwrap();
        assert!(!unknown.is_renewable());
    }

    #[test]
    fn optional_claims_may_be_missing_or_odd_typed() {
        let claims = decode_claims(&jwt(json!({
            "exp": "1758700000", "iat": 1_758_613_600.0, "dhanClientId": 1_000_000_001u64
        })))
        .unwrap();
        assert_eq!(claims.exp, at(1_758_700_000));
        assert_eq!(claims.iat, Some(at(1_758_613_600)));
        assert_eq!(claims.consumer_type, None);
        assert_eq!(claims.client_id.as_deref(), Some("1000000001"));
    }

    #[test]
    fn padded_or_standard_alphabet_payloads_are_accepted() {
        use base64::engine::general_purpose::STANDARD;
        // A payload whose base64 needs padding and contains '+' or '/' in the standard alphabet.
        let payload = STANDARD.encode(r#"{"exp":1758700000,"x":"??>>"}"#);
        let token = format!("eyJhbGciOiJIUzUxMiJ9.{payload}.c2ln");
        assert_eq!(decode_claims(&token).unwrap().exp, at(1_758_700_000));
    }

    #[test]
    fn malformed_tokens_are_errors_that_do_not_echo_the_token() {
        let secret_payload = base64url("not json but secret-ish");
        let cases = [
            "".to_owned(),
            "only-one-part".to_owned(),
            "a.b".to_owned(),
            "a.b.c.d".to_owned(),
            "a.!!!.c".to_owned(),
            format!("a.{secret_payload}.c"),
            jwt(json!(["an", "array"])),
            jwt(json!({"iat": 5})),
            jwt(json!({"exp": "soon"})),
        ];
        for token in cases {
            let err = decode_claims(&token).unwrap_err();
            assert_eq!(err.reason(), "MalformedToken", "{token}");
            for text in [err.to_string(), format!("{err:?}")] {
                assert!(token.is_empty() || !text.contains(&token), "{text}");
                assert!(!text.contains(&secret_payload), "{text}");
            }
        }
    }

    fn base64url(s: &str) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        URL_SAFE_NO_PAD.encode(s)
    }
}

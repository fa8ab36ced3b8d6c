//! The access token and what Dhan says about a freshly issued one.

use std::fmt;

use chrono::{DateTime, Utc};

use super::error::DhanError;
use super::jwt::{self, TokenClaims};

/// A Dhan access token (a JWT, docs/dhan-api.md §5).
///
/// It prints as `AccessToken(<redacted>)` through both `Debug` and `Display`, so a token inside
/// a struct, an error or a log line can never leak by accident; [`AccessToken::expose`] is the
/// one deliberate way to read it. It is deliberately not `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    /// The raw token, for the `access-token` header or the output Secret. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads the JWT claims without verifying the signature (docs/dhan-api.md §5).
    pub fn claims(&self) -> Result<TokenClaims, DhanError> {
        jwt::decode_claims(&self.0)
    }
}

impl From<String> for AccessToken {
    fn from(raw: String) -> Self {
        Self(raw)
    }
}

impl From<&str> for AccessToken {
    fn from(raw: &str) -> Self {
        Self(raw.to_owned())
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

impl fmt::Display for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// A token Dhan just handed out (mint, renew or consent, docs/dhan-api.md §1–§3).
///
/// Minting and renewing invalidate the previous token of the client (§1, §2), so the caller must
/// switch to this one at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The new token.
    pub token: AccessToken,
    /// When it expires: the JWT `exp` claim; Dhan's `expiryTime` (IST) only when the JWT cannot
    /// be read; 24 h after receipt when neither can (§1: tokens live exactly 86400 s).
    pub expires_at: DateTime<Utc>,
    /// The JWT `iat` claim.
    pub issued_at: Option<DateTime<Utc>>,
    /// The JWT `tokenConsumerType` (`SELF`, `APP`, …).
    pub consumer_type: Option<String>,
    /// `dhanClientName` from the response.
    pub client_name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzUxMiJ9.c2VjcmV0.c2lnbmF0dXJl";

    #[test]
    fn access_token_never_prints_its_value() {
        let token = AccessToken::from(SECRET_TOKEN.to_owned());
        assert_eq!(format!("{token:?}"), "AccessToken(<redacted>)");
        assert_eq!(token.to_string(), "AccessToken(<redacted>)");
        assert_eq!(token.expose(), SECRET_TOKEN);
    }

    #[test]
    fn issued_token_debug_hides_the_token() {
        let issued = IssuedToken {
            token: AccessToken::from(SECRET_TOKEN),
            expires_at: DateTime::from_timestamp(1_758_700_000, 0).unwrap(),
            issued_at: None,
            consumer_type: Some("APP".into()),
            client_name: Some("Alice".into()),
        };
        let printed = format!("{issued:?} {issued:#?}");
        assert!(!printed.contains(SECRET_TOKEN));
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn claims_come_from_the_jwt_payload() {
        let token = AccessToken::from(jwt::testing::jwt(
            json!({"exp": 1_758_700_000, "tokenConsumerType": "SELF"}),
        ));
        let claims = token.claims().unwrap();
        assert_eq!(claims.exp.timestamp(), 1_758_700_000);
        assert!(claims.is_renewable());
    }
}

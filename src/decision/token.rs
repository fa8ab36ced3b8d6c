//! What the decision needs to know about a token, and what a probe of it found.

use crate::dhan::AccessToken;
use chrono::{DateTime, Utc};

/// A token the operator holds (or could adopt).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFacts {
    /// The JWT `exp`.
    pub expires_at: DateTime<Utc>,
    /// The JWT `iat` (or `exp − 24h` when absent).
    pub issued_at: DateTime<Utc>,
    /// When the operator obtained it, by its own clock (`issued_at` when unknown).
    pub obtained_at: DateTime<Utc>,
    /// `tokenConsumerType`: `SELF` for Dhan Web tokens, which alone can be renewed.
    pub consumer_type: Option<String>,
    /// Keyed hash of the token.
    pub hash: String,
}

impl TokenFacts {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at
    }

    pub fn is_web_token(&self) -> bool {
        self.consumer_type.as_deref() == Some("SELF")
    }
}

/// A token with what is known of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub value: AccessToken,
    pub facts: TokenFacts,
}

/// What a liveness probe of the current token found (docs/dhan-api.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeVerdict {
    Alive,
    /// Dhan rejected the token, and again when asked a second time (or RenewToken refused it
    /// as dead).
    Dead,
    /// Dhan rejected the token once. A fresh token has been seen to answer 401 once and then
    /// work (docs/dhan-api.md §9): not a reason to mint until a second probe confirms it.
    DeadUnconfirmed,
    /// 429, 5xx, timeouts: not a reason to mint.
    Unknown,
}

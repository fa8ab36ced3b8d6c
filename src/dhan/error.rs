//! What went wrong talking to Dhan, and what the caller should do about it.
//!
//! [`DhanError`] names what happened; [`DhanError::kind`] says what to do next. The guiding
//! rule: only signals specific enough to be sure of may be `Permanent` or `TokenDead`; anything
//! else is `Unknown`, a transient "don't know" that is retried and never re-mints (a needless
//! mint kills the token running trading pods hold, §1/§8). Turning Dhan's answers into these
//! errors is [`super::classify()`]'s job.
//!
//! Every variant carries only safe text: fixed strings, status codes, Dhan's error codes and
//! Dhan's own (truncated, JWT-scrubbed) messages. Never a token, PIN, TOTP code, app secret or
//! a URL with its query string.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::ist;

/// Wait this long after Dhan's "Token can be generated once every 2 minutes." (§1, §8): two
/// minutes plus margin for clock differences.
pub const MINT_THROTTLE: Duration = Duration::from_secs(125);

/// What the caller should do about a [`DhanError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The credentials or the account are wrong: do not retry until they change.
    Permanent,
    /// Dhan said "Invalid TOTP". It says so for a correct code replayed within its 30 s step as
    /// well (§1), so retry once with a later code — after the 2-minute lock the refusal re-armed
    /// (§9); failing again means a wrong secret or skew.
    TotpRejected,
    /// Dhan asked to come back later: wait at least this long.
    RetryAfter(Duration),
    /// The daily consent limit is reached (§3): retry after the next IST midnight
    /// ([`ist::next_ist_midnight`], or [`DhanError::retry_at`]).
    ConsentLimit,
    /// The access token no longer works (§4): a new one is needed.
    TokenDead,
    /// Don't know (rate limits, server errors, timeouts, unreadable answers): back off and try
    /// again; never conclude that the token is dead or the credentials wrong.
    Unknown,
}

/// An error from the Dhan client. `reason()` is a stable CamelCase label; `Display` is a
/// sentence a person can act on. No variant ever holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhanError {
    /// "Invalid Pin" on a mint (§1).
    #[error("Dhan rejected the PIN ({message}); fix the PIN in the credentials Secret")]
    InvalidPin {
        /// Dhan's message.
        message: String,
    },
    /// "Invalid TOTP" on a mint, also sent for a replayed code (§1).
    #[error(
        "Dhan rejected the TOTP code ({message}): the TOTP key is wrong, the code was used \
         elsewhere in its 30 s step, or this node's clock is off (TOTP codes follow it)"
    )]
    InvalidTotp {
        /// Dhan's message.
        message: String,
    },
    /// "Token can be generated once every 2 minutes." (§1).
    #[error("Dhan allows one token mint per client every 2 minutes; retrying later")]
    MintThrottled,
    /// RenewToken refused for a non-web (`APP` or API-key) token: HTTP 500 DH-905 (§2).
    #[error("Dhan does not allow renewing this token type (only Dhan Web tokens renew)")]
    RenewNotAllowed,
    /// More than 25 consents today (§3).
    #[error("Dhan's daily consent limit for this client is reached ({message})")]
    ConsentLimitExceeded {
        /// Dhan's message.
        message: String,
    },
    /// HTTP 401 on the consent endpoints: wrong API key or secret (§3).
    #[error("Dhan rejected the API key or secret ({message})")]
    AppUnauthorized {
        /// Dhan's message.
        message: String,
    },
    /// A mint refused in words that name no precise reason: "Login failed. Please retry with
    /// valid credentials.", a DH-901, any other refusal that is not "later" (§1, §9).
    #[error("Dhan refused the client ID/PIN/TOTP ({message})")]
    InvalidCredentials {
        /// Dhan's message.
        message: String,
    },
    /// "Invalid Client": Dhan does not know the client ID (§1 [?]; an account fact, so
    /// permanent).
    #[error("Dhan does not know this client ID ({message}); check spec.clientId")]
    InvalidClientId {
        /// Dhan's message.
        message: String,
    },
    /// TOTP is not enabled on the account, so PIN + TOTP minting cannot work (§1: "Works only
    /// if TOTP was enabled on the account").
    #[error("TOTP is not enabled on this Dhan account ({message}); enable it on Dhan Web")]
    TotpNotEnabled {
        /// Dhan's message.
        message: String,
    },
    /// Dhan locked or blocked the account, e.g. after repeated wrong PINs (§3 [seen in similar
    /// brokers' tools]).
    #[error("Dhan reports the account as locked ({message}); unlock it on Dhan Web")]
    AccountLocked {
        /// Dhan's message.
        message: String,
    },
    /// The consent's `tokenId` was already used or has expired (§3 step 3): a new login is
    /// needed, the app credentials are fine.
    #[error("Dhan no longer accepts the login's tokenId ({message}); a new login is needed")]
    ConsentExpired {
        /// Dhan's message.
        message: String,
    },
    /// DH-902: the account has no API access or data subscription (§6).
    #[error("Dhan says the account has no API access ({message})")]
    NoApiAccess {
        /// Dhan's message.
        message: String,
    },
    /// DH-903: a problem with the account itself (§6).
    #[error("Dhan reports a problem with the account ({message})")]
    AccountIssue {
        /// Dhan's message.
        message: String,
    },
    /// The access token is expired, revoked or malformed as far as Dhan is concerned (§4).
    #[error("Dhan no longer accepts the access token ({signal}: {message})")]
    TokenDead {
        /// Which signal said so (`HTTP 401`, `DH-901`, `DH-906 Invalid Token`, `data 808`, …).
        signal: String,
        /// Dhan's message.
        message: String,
    },
    /// The token could not be read as a JWT, or cannot be sent as a header.
    #[error("the access token is malformed: {detail}")]
    MalformedToken {
        /// A fixed description.
        detail: &'static str,
    },
    /// HTTP 429, DH-904 or data code 805 (§4, §6).
    #[error("Dhan rate limit hit ({message})")]
    RateLimited {
        /// Dhan's message.
        message: String,
    },
    /// HTTP 5xx, DH-908, DH-909.
    #[error("Dhan server error (HTTP {status}{}{message})", if message.is_empty() { "" } else { ": " })]
    ServerError {
        /// HTTP status.
        status: u16,
        /// Dhan's message, possibly empty.
        message: String,
    },
    /// A recognisable Dhan error that means nothing specific to token management.
    #[error("Dhan rejected the request (HTTP {status}, {code}: {message})")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Dhan's error code, or `-`.
        code: String,
        /// Dhan's message.
        message: String,
    },
    /// An answer that is neither a success nor a recognisable error.
    #[error("unexpected answer from Dhan (HTTP {status}): {detail}")]
    UnexpectedResponse {
        /// HTTP status.
        status: u16,
        /// A description of the shape, never the body itself.
        detail: String,
    },
    /// The request did not complete in time.
    #[error("Dhan did not answer in time")]
    Timeout,
    /// The connection could not be opened: the request never reached Dhan.
    #[error("could not reach Dhan: {detail}")]
    Network {
        /// The transport error chain, without the URL.
        detail: String,
    },
    /// The connection broke after the request went out (a reset, a dropped connection): Dhan
    /// may have carried the request out — a mint, and revoked the previous token (§1).
    #[error("the connection to Dhan broke before its answer: {detail}")]
    ConnectionLost {
        /// The transport error chain, without the URL.
        detail: String,
    },
    /// The client was configured with an unusable base URL.
    #[error("invalid Dhan client configuration: {detail}")]
    InvalidConfig {
        /// What is wrong.
        detail: String,
    },
}

impl DhanError {
    /// What the caller should do.
    pub fn kind(&self) -> ErrorKind {
        use DhanError::*;
        match self {
            InvalidPin { .. }
            | RenewNotAllowed
            | AppUnauthorized { .. }
            | InvalidCredentials { .. }
            | InvalidClientId { .. }
            | TotpNotEnabled { .. }
            | AccountLocked { .. }
            | NoApiAccess { .. }
            | AccountIssue { .. }
            | MalformedToken { .. }
            | InvalidConfig { .. } => ErrorKind::Permanent,
            InvalidTotp { .. } => ErrorKind::TotpRejected,
            MintThrottled => ErrorKind::RetryAfter(MINT_THROTTLE),
            ConsentLimitExceeded { .. } => ErrorKind::ConsentLimit,
            TokenDead { .. } => ErrorKind::TokenDead,
            RateLimited { .. }
            | ServerError { .. }
            | Rejected { .. }
            | UnexpectedResponse { .. }
            | ConsentExpired { .. }
            | Timeout
            | Network { .. }
            | ConnectionLost { .. } => ErrorKind::Unknown,
        }
    }

    /// A stable CamelCase label for status-condition reasons and metric labels.
    pub fn reason(&self) -> &'static str {
        use DhanError::*;
        match self {
            InvalidPin { .. } => "InvalidPin",
            InvalidTotp { .. } => "InvalidTotp",
            MintThrottled => "MintThrottled",
            RenewNotAllowed => "RenewNotAllowed",
            ConsentLimitExceeded { .. } => "ConsentLimitExceeded",
            AppUnauthorized { .. } => "AppUnauthorized",
            InvalidCredentials { .. } => "InvalidCredentials",
            InvalidClientId { .. } => "InvalidClientId",
            TotpNotEnabled { .. } => "TotpNotEnabled",
            AccountLocked { .. } => "AccountLocked",
            ConsentExpired { .. } => "ConsentExpired",
            NoApiAccess { .. } => "NoApiAccess",
            AccountIssue { .. } => "AccountIssue",
            TokenDead { .. } => "TokenDead",
            MalformedToken { .. } => "MalformedToken",
            RateLimited { .. } => "RateLimited",
            ServerError { .. } => "ServerError",
            Rejected { .. } => "Rejected",
            UnexpectedResponse { .. } => "UnexpectedResponse",
            Timeout => "Timeout",
            Network { .. } => "Network",
            ConnectionLost { .. } => "ConnectionLost",
            InvalidConfig { .. } => "InvalidConfig",
        }
    }

    /// The earliest time a retry makes sense, when Dhan told us (throttle, consent limit).
    pub fn retry_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.kind() {
            ErrorKind::RetryAfter(wait) => {
                Some(now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX))
            }
            ErrorKind::ConsentLimit => Some(ist::next_ist_midnight(now)),
            _ => None,
        }
    }

    /// Replaces every occurrence of the given secrets in the error's text (defence in depth:
    /// Dhan's messages or transport errors could conceivably echo a request value).
    pub(crate) fn redact(self, secrets: &[&str]) -> Self {
        use DhanError::*;
        let r = |s: String| redact_text(s, secrets);
        match self {
            InvalidPin { message } => InvalidPin {
                message: r(message),
            },
            InvalidTotp { message } => InvalidTotp {
                message: r(message),
            },
            ConsentLimitExceeded { message } => ConsentLimitExceeded {
                message: r(message),
            },
            AppUnauthorized { message } => AppUnauthorized {
                message: r(message),
            },
            InvalidCredentials { message } => InvalidCredentials {
                message: r(message),
            },
            InvalidClientId { message } => InvalidClientId {
                message: r(message),
            },
            TotpNotEnabled { message } => TotpNotEnabled {
                message: r(message),
            },
            AccountLocked { message } => AccountLocked {
                message: r(message),
            },
            ConsentExpired { message } => ConsentExpired {
                message: r(message),
            },
            NoApiAccess { message } => NoApiAccess {
                message: r(message),
            },
            AccountIssue { message } => AccountIssue {
                message: r(message),
            },
            TokenDead { signal, message } => TokenDead {
                signal: r(signal),
                message: r(message),
            },
            RateLimited { message } => RateLimited {
                message: r(message),
            },
            ServerError { status, message } => ServerError {
                status,
                message: r(message),
            },
            Rejected {
                status,
                code,
                message,
            } => Rejected {
                status,
                code: r(code),
                message: r(message),
            },
            UnexpectedResponse { status, detail } => UnexpectedResponse {
                status,
                detail: r(detail),
            },
            Network { detail } => Network { detail: r(detail) },
            ConnectionLost { detail } => ConnectionLost { detail: r(detail) },
            InvalidConfig { detail } => InvalidConfig { detail: r(detail) },
            other @ (MintThrottled | RenewNotAllowed | MalformedToken { .. } | Timeout) => other,
        }
    }
}

fn redact_text(text: String, secrets: &[&str]) -> String {
    crate::redact::redact(&text, secrets)
}

/// Dhan endpoints whose errors need context to classify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST {auth}/app/generateAccessToken` (§1).
    GenerateAccessToken,
    /// `GET {api}/v2/RenewToken` (§2).
    RenewToken,
    /// `POST {auth}/app/generate-consent` (§3).
    GenerateConsent,
    /// `{auth}/app/consumeApp-consent` (§3).
    ConsumeConsent,
    /// `GET {api}/v2/profile` (§4).
    Profile,
    /// `GET {api}/v2/ip/getIP` (§7).
    IpInfo,
}

/// The metric label of a call's result: `Success`, or the error's [`DhanError::reason`].
pub fn outcome_label<T>(result: &Result<T, DhanError>) -> &'static str {
    match result {
        Ok(_) => "Success",
        Err(e) => e.reason(),
    }
}

impl Endpoint {
    /// A stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::GenerateAccessToken => "generateAccessToken",
            Endpoint::RenewToken => "RenewToken",
            Endpoint::GenerateConsent => "generate-consent",
            Endpoint::ConsumeConsent => "consumeApp-consent",
            Endpoint::Profile => "profile",
            Endpoint::IpInfo => "getIP",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
    }

    fn every_variant() -> Vec<DhanError> {
        let m = || "msg".to_owned();
        vec![
            DhanError::InvalidPin { message: m() },
            DhanError::InvalidTotp { message: m() },
            DhanError::MintThrottled,
            DhanError::RenewNotAllowed,
            DhanError::ConsentLimitExceeded { message: m() },
            DhanError::AppUnauthorized { message: m() },
            DhanError::InvalidCredentials { message: m() },
            DhanError::InvalidClientId { message: m() },
            DhanError::TotpNotEnabled { message: m() },
            DhanError::AccountLocked { message: m() },
            DhanError::ConsentExpired { message: m() },
            DhanError::NoApiAccess { message: m() },
            DhanError::AccountIssue { message: m() },
            DhanError::TokenDead {
                signal: m(),
                message: m(),
            },
            DhanError::MalformedToken { detail: "x" },
            DhanError::RateLimited { message: m() },
            DhanError::ServerError {
                status: 500,
                message: m(),
            },
            DhanError::Rejected {
                status: 400,
                code: m(),
                message: m(),
            },
            DhanError::UnexpectedResponse {
                status: 200,
                detail: m(),
            },
            DhanError::Timeout,
            DhanError::Network { detail: m() },
            DhanError::ConnectionLost { detail: m() },
            DhanError::InvalidConfig { detail: m() },
        ]
    }

    #[test]
    fn reasons_are_camel_case_and_unique() {
        let all = every_variant();
        let mut reasons: Vec<_> = all.iter().map(DhanError::reason).collect();
        for reason in &reasons {
            assert!(
                reason.starts_with(|c: char| c.is_ascii_uppercase()),
                "{reason}"
            );
            assert!(
                reason.chars().all(|c| c.is_ascii_alphanumeric()),
                "{reason}"
            );
        }
        reasons.sort();
        reasons.dedup();
        assert_eq!(reasons.len(), all.len());
    }

    #[test]
    fn kinds_follow_the_brief() {
        use ErrorKind::*;
        let expected = [
            ("InvalidPin", Permanent),
            ("InvalidTotp", TotpRejected),
            ("MintThrottled", RetryAfter(Duration::from_secs(125))),
            ("RenewNotAllowed", Permanent),
            ("ConsentLimitExceeded", ConsentLimit),
            ("AppUnauthorized", Permanent),
            ("InvalidCredentials", Permanent),
            ("InvalidClientId", Permanent),
            ("TotpNotEnabled", Permanent),
            ("AccountLocked", Permanent),
            ("ConsentExpired", Unknown),
            ("NoApiAccess", Permanent),
            ("AccountIssue", Permanent),
            ("TokenDead", TokenDead),
            ("MalformedToken", Permanent),
            ("RateLimited", Unknown),
            ("ServerError", Unknown),
            ("Rejected", Unknown),
            ("UnexpectedResponse", Unknown),
            ("Timeout", Unknown),
            ("Network", Unknown),
            ("ConnectionLost", Unknown),
            ("InvalidConfig", Permanent),
        ];
        let actual: Vec<_> = every_variant()
            .iter()
            .map(|e| (e.reason(), e.kind()))
            .collect();
        assert_eq!(actual, expected);
    }

    #[test]
    fn throttle_retry_is_at_least_two_minutes_away() {
        let now = at("2025-09-23T04:30:00Z");
        assert_eq!(
            DhanError::MintThrottled.retry_at(now),
            Some(at("2025-09-23T04:32:05Z"))
        );
    }

    #[test]
    fn consent_limit_retries_after_next_ist_midnight() {
        let error = DhanError::ConsentLimitExceeded {
            message: String::new(),
        };
        // 10:00 IST → 00:00 IST the next day = 18:30 UTC today.
        let now = at("2025-09-23T04:30:00Z");
        assert_eq!(error.retry_at(now), Some(at("2025-09-23T18:30:00Z")));
    }

    #[test]
    fn other_errors_suggest_no_retry_time() {
        let now = at("2025-09-23T04:30:00Z");
        for error in every_variant() {
            if !matches!(
                error,
                DhanError::MintThrottled | DhanError::ConsentLimitExceeded { .. }
            ) {
                assert_eq!(error.retry_at(now), None, "{error:?}");
            }
        }
    }

    #[test]
    fn redact_replaces_secrets_in_every_text_field() {
        let pin = "482913";
        let errors = [
            DhanError::InvalidPin {
                message: format!("pin {pin} wrong"),
            },
            DhanError::Network {
                detail: format!("failed {pin}"),
            },
            DhanError::Rejected {
                status: 400,
                code: pin.into(),
                message: pin.into(),
            },
            DhanError::TokenDead {
                signal: pin.into(),
                message: pin.into(),
            },
            DhanError::UnexpectedResponse {
                status: 200,
                detail: pin.into(),
            },
            DhanError::ServerError {
                status: 500,
                message: pin.into(),
            },
        ];
        for error in errors {
            let reason = error.reason();
            let redacted = error.redact(&[pin, "", "  "]);
            assert_eq!(redacted.reason(), reason);
            let text = format!("{redacted} {redacted:?}");
            assert!(!text.contains(pin), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
    }

    #[test]
    fn server_error_display_reads_well_with_and_without_message() {
        let bare = DhanError::ServerError {
            status: 502,
            message: String::new(),
        };
        assert_eq!(bare.to_string(), "Dhan server error (HTTP 502)");
        let with_message = DhanError::ServerError {
            status: 500,
            message: "boom".into(),
        };
        assert_eq!(
            with_message.to_string(),
            "Dhan server error (HTTP 500: boom)"
        );
    }

    #[test]
    fn endpoint_labels_are_stable() {
        assert_eq!(
            Endpoint::GenerateAccessToken.as_str(),
            "generateAccessToken"
        );
        assert_eq!(Endpoint::RenewToken.as_str(), "RenewToken");
        assert_eq!(Endpoint::ConsumeConsent.as_str(), "consumeApp-consent");
    }
}

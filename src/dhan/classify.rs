//! Turning any Dhan answer into a [`DhanError`] (docs/dhan-api.md §1, §2, §4, §6).
//!
//! Dhan's failures are mostly undocumented: four body shapes (§6), HTTP 200 with error bodies
//! (§1), application errors sent as HTTP 500 (§2). Classification is a pure function of status
//! and body (plus, for the auth host, which endpoint answered) so that it can be pinned by
//! tables of real-world answers.

use serde_json::{Map, Value};

use super::error::{DhanError, Endpoint};
use super::jwt::scalar_string;

/// Longest piece of server text kept in an error.
const MAX_MESSAGE_CHARS: usize = 200;

/// Classifies a response that is not a success, as for an endpoint that takes an access token
/// (`RenewToken`, `profile`, `getIP`). See [`classify_for`] for the auth-host endpoints.
///
/// Order matters and is deliberate:
/// 1. Specific messages, whatever the status (Dhan sends them with 200, 400, 401 and 500):
///    PIN, TOTP, mint throttle, renew-not-allowed, consent limit.
/// 2. "Don't know" signals — 429, DH-904, data 805, any 5xx — before any "dead" signal: a 5xx
///    never proves a token dead, and a false "dead" costs a mint that kills running traders'
///    tokens, while a false "unknown" only costs a retry.
/// 3. Account codes DH-902/DH-903 (permanent: a new token would not help).
/// 4. Dead-token signals (§4): HTTP 401, DH-901, "Invalid Token" (DH-906), data 807–810, the
///    RS-9005/UNAUTHORIZED gateway shape.
/// 5. Everything else is `Unknown`.
pub fn classify(status: u16, body: &str) -> DhanError {
    let parsed = ErrorBody::parse(body);

    if let Some(error) = classify_by_message(&parsed) {
        return error;
    }

    let message = parsed.display_message();
    if status == 429 || parsed.has_code("DH904") || parsed.has_data_code(805) {
        return DhanError::RateLimited { message };
    }
    if status >= 500 || parsed.has_code("DH908") || parsed.has_code("DH909") {
        return DhanError::ServerError { status, message };
    }
    if parsed.has_code("DH902") {
        return DhanError::NoApiAccess { message };
    }
    if parsed.has_code("DH903") {
        return DhanError::AccountIssue { message };
    }
    if let Some(signal) = dead_token_signal(status, &parsed) {
        return DhanError::TokenDead { signal, message };
    }

    match &parsed.json {
        None => DhanError::UnexpectedResponse {
            status,
            detail: describe_unparsed(body),
        },
        Some(_) if parsed.looks_like_error() => DhanError::Rejected {
            status,
            code: parsed.code_label(),
            message,
        },
        Some(_) => DhanError::UnexpectedResponse {
            status,
            detail: "JSON without the expected fields and without an error marker".into(),
        },
    }
}

/// Classifies a non-success response of a specific endpoint.
///
/// The auth-host endpoints carry no access token, so "unauthorized" there cannot mean a dead
/// token:
/// - `generateAccessToken`: see [`mint_refusal`]: every refusal that is not clearly "later" is
///   a refusal of the credentials.
/// - consent endpoints: 401 means wrong API key/secret (§3) → [`DhanError::AppUnauthorized`].
///   `consumeApp-consent` sends the same headers, so it is read the same way.
pub fn classify_for(endpoint: Endpoint, status: u16, body: &str) -> DhanError {
    let error = classify(status, body);
    match (endpoint, error) {
        (Endpoint::GenerateAccessToken, error) => mint_refusal(status, error),
        (
            Endpoint::GenerateConsent | Endpoint::ConsumeConsent,
            DhanError::TokenDead { message, .. },
        ) => DhanError::AppUnauthorized { message },
        (_, error) => error,
    }
}

/// A refused `generateAccessToken`, by rule rather than by phrase: Dhan words a refused PIN in
/// more ways than "Invalid Pin" (docs/dhan-api.md §9), and re-sending credentials it refused is
/// the one retry that can lock the account. So everything refused is
/// [`DhanError::InvalidCredentials`] (permanent), except:
/// - the precise reasons Dhan's words give (PIN, TOTP, client ID, TOTP not enabled, locked);
/// - "later": the mint throttle, a rate limit, a server error (§1, §4);
/// - an answer that refuses nothing: a 2xx (or 3xx) with neither a token nor a readable error.
///   Dhan may have minted (§1), so it stays a transient [`DhanError::UnexpectedResponse`].
fn mint_refusal(status: u16, error: DhanError) -> DhanError {
    use DhanError::*;
    let message = match error {
        InvalidPin { .. }
        | InvalidTotp { .. }
        | InvalidClientId { .. }
        | TotpNotEnabled { .. }
        | AccountLocked { .. }
        | MintThrottled
        | RateLimited { .. }
        | ServerError { .. } => return error,
        UnexpectedResponse { status, .. } if status < 400 => return error,
        UnexpectedResponse { .. } => String::new(),
        TokenDead { message, .. }
        | Rejected { message, .. }
        | ConsentLimitExceeded { message }
        | AppUnauthorized { message }
        | InvalidCredentials { message }
        | ConsentExpired { message }
        | NoApiAccess { message }
        | AccountIssue { message } => message,
        RenewNotAllowed
        | MalformedToken { .. }
        | Timeout
        | Network { .. }
        | ConnectionLost { .. }
        | InvalidConfig { .. } => String::new(),
    };
    let message = if message.is_empty() {
        format!("HTTP {status}")
    } else {
        message
    };
    InvalidCredentials { message }
}

/// Phrases, and the error they mean given Dhan's message.
type MessageRule = (&'static [&'static str], fn(String) -> DhanError);

/// Phrases that name what happened, whatever the status, in order of precedence, with the
/// error each means. (A wrong PIN stays a wrong PIN when the text also mentions the account.)
const MESSAGE_RULES: &[MessageRule] = &[
    (
        &[
            "invalid pin",
            "incorrect pin",
            "wrong pin",
            "pin is invalid",
        ],
        |message| DhanError::InvalidPin { message },
    ),
    (
        &[
            "invalid totp",
            "incorrect totp",
            "wrong totp",
            "totp is invalid",
        ],
        |message| DhanError::InvalidTotp { message },
    ),
    (
        &[
            "generated once every",
            "once every 2 minutes",
            "once every two minutes",
        ],
        |_| DhanError::MintThrottled,
    ),
    (
        &[
            "renewal of token not allowed",
            "not allowed for this token type",
        ],
        |_| DhanError::RenewNotAllowed,
    ),
    (&["consent limit"], |message| {
        DhanError::ConsentLimitExceeded { message }
    }),
    // Before "invalid token", which "Invalid Token Id" also contains: a used or expired
    // tokenId says nothing about the app's credentials (§3 step 3).
    (
        &[
            "invalid token id",
            "invalid tokenid",
            "token id expired",
            "tokenid expired",
            "token id already used",
            "tokenid already used",
        ],
        |message| DhanError::ConsentExpired { message },
    ),
    (
        &[
            "invalid client",
            "client id invalid",
            "invalid dhan client",
            "client not found",
        ],
        |message| DhanError::InvalidClientId { message },
    ),
    (
        &[
            "totp not enabled",
            "totp is not enabled",
            "totp has not been enabled",
            "enable totp",
        ],
        |message| DhanError::TotpNotEnabled { message },
    ),
    (
        &[
            "account locked",
            "account is locked",
            "account has been locked",
            "account blocked",
            "account is blocked",
            "account has been blocked",
            "user blocked",
            "user is blocked",
        ],
        |message| DhanError::AccountLocked { message },
    ),
];

fn classify_by_message(parsed: &ErrorBody) -> Option<DhanError> {
    MESSAGE_RULES
        .iter()
        .find(|(phrases, _)| has_any(&parsed.match_text, phrases))
        .map(|(_, error)| error(parsed.display_message()))
}

fn dead_token_signal(status: u16, parsed: &ErrorBody) -> Option<String> {
    if parsed.has_code("DH901") {
        return Some("DH-901".into());
    }
    if has_any(&parsed.match_text, &["invalid token"]) {
        return Some(if parsed.has_code("DH906") {
            "DH-906 Invalid Token".into()
        } else {
            "Invalid Token".into()
        });
    }
    if let Some(code) = [807u16, 808, 809, 810]
        .into_iter()
        .find(|c| parsed.has_data_code(*c))
    {
        return Some(format!("data {code}"));
    }
    if parsed.has_code("RS9005") {
        return Some("RS-9005".into());
    }
    if parsed.has_code("UNAUTHORIZED") {
        return Some("UNAUTHORIZED".into());
    }
    if status == 401 {
        return Some("HTTP 401".into());
    }
    None
}

/// The error-relevant parts of a Dhan body, whichever of the §6 shapes it has.
pub(crate) struct ErrorBody {
    json: Option<Map<String, Value>>,
    /// Normalised codes: `errorCode`, `internalErrorCode`, `httpStatus`, upper case,
    /// alphanumerics only (`DH-901` → `DH901`).
    codes: Vec<String>,
    /// Numeric keys of a `data` object (`{"data":{"808":"…"}}`).
    data_codes: Vec<u16>,
    /// Human messages, in order of preference.
    messages: Vec<String>,
    /// Messages, codes and types, normalised for phrase matching.
    match_text: String,
}

impl ErrorBody {
    pub(crate) fn parse(body: &str) -> Self {
        let json = match serde_json::from_str::<Value>(body.trim()) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        };
        let mut codes = Vec::new();
        let mut data_codes = Vec::new();
        let mut messages = Vec::new();
        let mut raw_match = Vec::new();
        if let Some(map) = &json {
            let text = |key: &str| map.get(key).and_then(scalar_string);
            for key in ["errorCode", "internalErrorCode", "httpStatus"] {
                if let Some(code) = text(key) {
                    raw_match.push(code.clone());
                    codes.push(normalise_code(&code));
                }
            }
            if let Some(kind) = text("errorType") {
                raw_match.push(kind);
            }
            for key in [
                "message",
                "errorMessage",
                "remarks",
                "internalErrorMessage",
                "error",
            ] {
                if let Some(message) = text(key) {
                    raw_match.push(message.clone());
                    messages.push(message);
                }
            }
            if let Some(Value::Object(data)) = map.get("data") {
                for (key, value) in data {
                    if let Ok(code) = key.trim().parse::<u16>() {
                        data_codes.push(code);
                        if let Some(message) = scalar_string(value) {
                            raw_match.push(message.clone());
                            messages.push(message);
                        }
                    }
                }
            }
        }
        let match_text = normalise_text(&raw_match.join(" "));
        Self {
            json,
            codes,
            data_codes,
            messages,
            match_text,
        }
    }

    fn has_code(&self, normalised: &str) -> bool {
        self.codes.iter().any(|c| c == normalised)
    }

    fn has_data_code(&self, code: u16) -> bool {
        self.data_codes.contains(&code)
    }

    /// Whether the body says it is an error, in any of the §6 shapes.
    pub(crate) fn looks_like_error(&self) -> bool {
        let Some(map) = &self.json else {
            return false;
        };
        let status_says_error = map.get("status").and_then(scalar_string).is_some_and(|s| {
            matches!(
                s.to_ascii_lowercase().as_str(),
                "error" | "failed" | "failure" | "fail"
            )
        });
        status_says_error
            || !self.codes.is_empty()
            || !self.data_codes.is_empty()
            || map.contains_key("errorType")
            || map.contains_key("errorMessage")
    }

    fn display_message(&self) -> String {
        self.messages
            .first()
            .map(|m| safe_text(m))
            .unwrap_or_default()
    }

    fn code_label(&self) -> String {
        let from_json = self.json.as_ref().and_then(|map| {
            ["errorCode", "internalErrorCode"]
                .iter()
                .find_map(|key| map.get(*key).and_then(scalar_string))
        });
        match (from_json, self.data_codes.first()) {
            (Some(code), _) => safe_text(&code),
            (None, Some(code)) => code.to_string(),
            (None, None) => "-".into(),
        }
    }
}

fn normalise_code(code: &str) -> String {
    code.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Lower case, every run of non-alphanumerics replaced by one space, padded with spaces so that
/// phrases match on word boundaries (`"Invalid TOTP."` and `INVALID_TOTP` both contain
/// `" invalid totp "`; `"Invalid tokenId"` does not contain `" invalid token "`).
fn normalise_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push(' ');
    for c in text.chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.ends_with(' ') {
            out.push(' ');
        }
    }
    if !out.ends_with(' ') {
        out.push(' ');
    }
    out
}

fn has_any(normalised: &str, phrases: &[&str]) -> bool {
    phrases
        .iter()
        .any(|phrase| normalised.contains(&format!(" {phrase} ")))
}

/// Server text made safe to keep: control characters removed, anything that looks like a JWT
/// replaced, and length capped.
pub(crate) fn safe_text(text: &str) -> String {
    let cleaned: String = text
        .split_whitespace()
        .map(|word| {
            if word.starts_with("eyJ") && word.len() > 20 {
                "<redacted>"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let mut out: String = cleaned
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if cleaned.chars().count() > MAX_MESSAGE_CHARS {
        out.push('…');
    }
    out
}

/// Describes a body that is not a JSON object without quoting it (it could be anything,
/// including a reflected request).
fn describe_unparsed(body: &str) -> String {
    let trimmed = body.trim_start();
    let shape = if trimmed.is_empty() {
        "empty body"
    } else if trimmed.starts_with('<') {
        "HTML or XML instead of JSON"
    } else if serde_json::from_str::<Value>(trimmed).is_ok() {
        "JSON that is not an object"
    } else {
        "body is not JSON"
    };
    format!("{shape} ({} bytes)", body.len())
}

#[cfg(test)]
mod tests;

//! The login Job's result, as the `login` container writes it to its termination log and the
//! operator reads it from the Pod: a small versioned JSON document, defined here once for both.
//!
//! ```json
//! {"version":1,"outcome":"loggedIn","tokenId":"9f1c…"}
//! {"version":1,"outcome":"failed","step":"pin","class":"pin","pageText":"Invalid PIN",
//!  "detail":null,"reachedCredentialStep":true}
//! ```
//!
//! The parser accepts exactly this and nothing else; its errors never repeat what they were given,
//! so neither a raw termination message nor a `tokenId` can reach a status, an event or a log.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::{FailureClass, LoginFailure, Step};

/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Kubernetes keeps at most this much of a termination message.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Page texts are cut to this many characters, leaving the document well inside the limit.
pub const MAX_PAGE_TEXT_CHARS: usize = 200;

/// Dhan's single-use `tokenId` from the login's redirect (docs/dhan-api.md §3). Whoever holds it
/// and the app secret gets a token, so it has no `Display`, a redacted `Debug`, no `Serialize`,
/// and leaves this type only through [`TokenId::expose`] for the consent exchange.
pub struct TokenId(String);

impl TokenId {
    /// A `tokenId` is one opaque word (a UUID at Dhan); anything else is not one.
    pub fn new(text: &str) -> Option<TokenId> {
        let text = text.trim();
        let plausible = !text.is_empty()
            && text.len() <= 512
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.~=+/".contains(c));
        plausible.then(|| TokenId(text.to_owned()))
    }

    /// The value, for the `consumeApp-consent` call only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenId(<redacted>)")
    }
}

/// What one login came to.
#[derive(Debug)]
pub enum LoginReport {
    LoggedIn(TokenId),
    Failed(LoginFailure),
}

/// Why a termination message is not a login report. Never carries the message itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("the login container left no result")]
    Empty,
    #[error("the login container's result is not a login report ({0} bytes)")]
    Malformed(usize),
    #[error("the login container wrote report version {0}, this operator reads version {VERSION}")]
    UnsupportedVersion(u32),
    #[error("the login container's result carries no usable tokenId")]
    BadTokenId,
}

#[derive(Serialize, Deserialize)]
#[serde(
    tag = "outcome",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
enum Wire {
    LoggedIn {
        version: u32,
        token_id: String,
    },
    Failed {
        version: u32,
        step: Step,
        class: FailureClass,
        page_text: Option<String>,
        detail: Option<String>,
        reached_credential_step: bool,
    },
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

fn bounded(text: Option<String>) -> Option<String> {
    text.map(|t| match t.char_indices().nth(MAX_PAGE_TEXT_CHARS) {
        Some((cut, _)) => format!("{}…", &t[..cut]),
        None => t,
    })
}

impl LoginReport {
    /// The termination message for this result.
    pub fn to_message(&self) -> String {
        let wire = match self {
            LoginReport::LoggedIn(token_id) => Wire::LoggedIn {
                version: VERSION,
                token_id: token_id.0.clone(),
            },
            LoginReport::Failed(failure) => Wire::Failed {
                version: VERSION,
                step: failure.step,
                class: failure.class,
                page_text: bounded(failure.page_text.clone()),
                detail: bounded(failure.detail.clone()),
                reached_credential_step: failure.reached_credential_step,
            },
        };
        serde_json::to_string(&wire).expect("a login report serializes")
    }

    /// Reads a termination message; anything but a report of [`VERSION`] is an error.
    pub fn parse(message: &str) -> Result<LoginReport, ReportError> {
        let text = message.trim();
        if text.is_empty() {
            return Err(ReportError::Empty);
        }
        let malformed = || ReportError::Malformed(text.len());
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(malformed());
        }
        let version = serde_json::from_str::<VersionOnly>(text)
            .map_err(|_| malformed())?
            .version;
        if version != VERSION {
            return Err(ReportError::UnsupportedVersion(version));
        }
        match serde_json::from_str::<Wire>(text).map_err(|_| malformed())? {
            Wire::LoggedIn { token_id, .. } => TokenId::new(&token_id)
                .map(LoginReport::LoggedIn)
                .ok_or(ReportError::BadTokenId),
            Wire::Failed {
                step,
                class,
                page_text,
                detail,
                reached_credential_step,
                ..
            } => Ok(LoginReport::Failed(LoginFailure {
                step,
                class,
                page_text: bounded(page_text),
                detail: bounded(detail),
                reached_credential_step,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "9f1c2d3e-aa01-4c5b-9d7e-1234567890ab";

    #[test]
    fn a_success_round_trips_and_holds_only_the_token_id() {
        let message = LoginReport::LoggedIn(TokenId::new(TOKEN).unwrap()).to_message();
        assert_eq!(
            message,
            format!(r#"{{"outcome":"loggedIn","version":1,"tokenId":"{TOKEN}"}}"#)
        );
        match LoginReport::parse(&message).unwrap() {
            LoginReport::LoggedIn(token_id) => assert_eq!(token_id.expose(), TOKEN),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failure_round_trips_with_step_class_text_and_the_lockout_flag() {
        let mut failure = LoginFailure::rejected(Step::Pin, FailureClass::Pin, "Invalid PIN");
        failure.reached_credential_step = true;
        let message = LoginReport::Failed(failure.clone()).to_message();
        assert!(message.len() < MAX_MESSAGE_BYTES);
        match LoginReport::parse(&message).unwrap() {
            LoginReport::Failed(parsed) => assert_eq!(parsed, failure),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn long_page_texts_are_cut_to_fit_the_termination_message() {
        let failure = LoginFailure::rejected(Step::Pin, FailureClass::Unknown, "x".repeat(5000));
        let message = LoginReport::Failed(failure).to_message();
        assert!(message.len() < MAX_MESSAGE_BYTES, "{}", message.len());
        assert!(LoginReport::parse(&message).is_ok());
    }

    #[test]
    fn anything_but_a_report_is_rejected_without_repeating_it() {
        let cases = [
            ("", ReportError::Empty),
            (TOKEN, ReportError::Malformed(TOKEN.len())),
            ("PIN rejected: Invalid PIN", ReportError::Malformed(25)),
            (
                r#"{"version":2,"outcome":"loggedIn","tokenId":"abc"}"#,
                ReportError::UnsupportedVersion(2),
            ),
            (
                r#"{"version":1,"outcome":"loggedIn","tokenId":"a b"}"#,
                ReportError::BadTokenId,
            ),
        ];
        for (message, expected) in cases {
            let error = LoginReport::parse(message).unwrap_err();
            assert_eq!(error, expected, "{message:?}");
            if !message.is_empty() {
                assert!(!error.to_string().contains(message), "{error}");
            }
        }
        for message in [
            r#"{"version":1,"outcome":"loggedIn","tokenId":"abc","extra":1}"#,
            r#"{"version":1,"outcome":"won","tokenId":"abc"}"#,
            r#"{"version":1,"outcome":"failed","step":"pin","class":"pin"}"#,
            r#"{"version":1,"outcome":"failed","step":"elsewhere","class":"pin","pageText":null,"detail":null,"reachedCredentialStep":false}"#,
            r#"{"version":"1","outcome":"loggedIn","tokenId":"abc"}"#,
        ] {
            assert!(
                matches!(LoginReport::parse(message), Err(ReportError::Malformed(_))),
                "{message}"
            );
        }
    }

    #[test]
    fn a_token_id_is_one_opaque_word_and_never_shown() {
        assert_eq!(
            TokenId::new(&format!("  {TOKEN}\n")).unwrap().expose(),
            TOKEN
        );
        assert!(TokenId::new("").is_none());
        assert!(TokenId::new("PIN rejected: Invalid PIN").is_none());
        assert!(TokenId::new(&"a".repeat(513)).is_none());
        let shown = format!("{:?}", LoginReport::LoggedIn(TokenId::new(TOKEN).unwrap()));
        assert!(!shown.contains(TOKEN), "{shown}");
    }
}

//! Why a browser login failed, phrased for the termination message of the login Job's Pod.
//!
//! No variant holds a credential: the step names what was being entered, never the value, and
//! every text taken from the page or from the browser passes through [`LoginError::redacted`].

use std::fmt;

/// What the login was doing, as named in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Reaching the Chromium sidecar's DevTools endpoint.
    Connect,
    /// Opening the consent login page.
    LoginPage,
    /// Entering the registered mobile number.
    Mobile,
    /// Entering the code from the authenticator app.
    Totp,
    /// Entering the Dhan PIN.
    Pin,
    /// A code field that the page did not say was for the TOTP or for the PIN.
    TotpOrPin,
    /// Waiting for the 302 to `<redirect URL>?tokenId=<id>` (docs/dhan-api.md §3).
    Redirect,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Connect => "Chromium connection",
            Step::LoginPage => "login page",
            Step::Mobile => "mobile number",
            Step::Totp => "TOTP",
            Step::Pin => "PIN",
            Step::TotpOrPin => "TOTP or PIN",
            Step::Redirect => "redirect",
        })
    }
}

/// A failed browser login. `Display` is one line and never contains a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// A required environment variable is missing or malformed; names the variable only.
    #[error("configuration: {0}")]
    Config(String),
    /// The page never showed a field for the step.
    #[error("no {step} field found")]
    NoField {
        /// The field that was looked for.
        step: Step,
    },
    /// The page showed an error text after a value was submitted.
    #[error("{step} rejected: {page_message}")]
    Rejected {
        /// What was submitted.
        step: Step,
        /// What the page said, redacted.
        page_message: String,
    },
    /// The page did something the driver cannot follow.
    #[error("{step}: {detail}")]
    UnexpectedPage {
        /// Where it happened.
        step: Step,
        /// What was seen.
        detail: String,
    },
    /// The login timeout (`LOGIN_TIMEOUT`) ran out.
    #[error("timed out at the {step} step")]
    Timeout {
        /// The step in progress.
        step: Step,
    },
    /// The redirect URL was reached without a `tokenId` in its query.
    #[error("the redirect carried no tokenId")]
    NoTokenId,
    /// The DevTools protocol failed.
    #[error("browser error: {0}")]
    Cdp(String),
}

impl LoginError {
    /// Stable reason, e.g. for metrics or a status condition on the operator side.
    pub fn reason(&self) -> &'static str {
        match self {
            LoginError::Config(_) => "Config",
            LoginError::NoField { .. } => "NoField",
            LoginError::Rejected { .. } => "Rejected",
            LoginError::UnexpectedPage { .. } => "UnexpectedPage",
            LoginError::Timeout { .. } => "Timeout",
            LoginError::NoTokenId => "NoTokenId",
            LoginError::Cdp(_) => "Cdp",
        }
    }

    /// The same error with every occurrence of `secrets` in its free texts replaced. Page texts
    /// and browser errors are not ours: a page could echo what was typed.
    pub fn redacted(self, secrets: &[&str]) -> LoginError {
        let clean = |text: String| redact(&text, secrets);
        match self {
            LoginError::Config(text) => LoginError::Config(clean(text)),
            LoginError::Rejected { step, page_message } => LoginError::Rejected {
                step,
                page_message: clean(page_message),
            },
            LoginError::UnexpectedPage { step, detail } => LoginError::UnexpectedPage {
                step,
                detail: clean(detail),
            },
            LoginError::Cdp(text) => LoginError::Cdp(clean(text)),
            other => other,
        }
    }
}

/// Replaces each secret (ignoring ones too short to be credentials) with `<redacted>`, and folds
/// the text onto one line.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut secrets: Vec<&str> = secrets
        .iter()
        .map(|s| s.trim())
        .filter(|s| s.len() >= 4)
        .collect();
    // Longest first, so a secret containing another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in secrets {
        out = out.replace(secret, "<redacted>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOBILE: &str = "9876543210";
    const PIN: &str = "482913";
    const SECRET: &str = "JBSWY3DPEHPK3PXP";
    const CODE: &str = "731904";

    fn every_variant(text: &str) -> Vec<LoginError> {
        let steps = [
            Step::Connect,
            Step::LoginPage,
            Step::Mobile,
            Step::Totp,
            Step::Pin,
            Step::TotpOrPin,
            Step::Redirect,
        ];
        let mut all = vec![
            LoginError::Config(text.into()),
            LoginError::NoTokenId,
            LoginError::Cdp(text.into()),
        ];
        for step in steps {
            all.push(LoginError::NoField { step });
            all.push(LoginError::Timeout { step });
            all.push(LoginError::Rejected {
                step,
                page_message: text.into(),
            });
            all.push(LoginError::UnexpectedPage {
                step,
                detail: text.into(),
            });
        }
        all
    }

    #[test]
    fn no_variant_leaks_credentials_once_redacted() {
        let echoed = format!("Invalid PIN {PIN} for +91 {MOBILE}, key {SECRET}, code {CODE}");
        for error in every_variant(&echoed) {
            let line = error.redacted(&[MOBILE, PIN, SECRET, CODE]).to_string();
            for secret in [MOBILE, PIN, SECRET, CODE] {
                assert!(!line.contains(secret), "{secret} leaked in {line:?}");
            }
            assert!(!line.contains('\n'));
        }
    }

    #[test]
    fn messages_name_the_step_and_the_page_text() {
        let rejected = LoginError::Rejected {
            step: Step::Pin,
            page_message: "Invalid PIN".into(),
        };
        assert_eq!(rejected.to_string(), "PIN rejected: Invalid PIN");
        assert_eq!(
            LoginError::NoField { step: Step::Pin }.to_string(),
            "no PIN field found"
        );
        assert_eq!(
            LoginError::Timeout { step: Step::Totp }.to_string(),
            "timed out at the TOTP step"
        );
    }

    #[test]
    fn redaction_replaces_longest_first_and_folds_lines() {
        assert_eq!(
            redact("a\n 919876543210 b", &["9876543210", "919876543210"]),
            "a <redacted> b"
        );
        // A one-digit "secret" would shred ordinary text; such values are not credentials.
        assert_eq!(redact("step 1 of 3", &["1", ""]), "step 1 of 3");
    }
}

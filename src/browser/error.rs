//! Why a browser login failed: the step, a class a person (and the operator) can act on, what the
//! page said, and whether a credential went to Dhan.
//!
//! No field holds a credential: the step names what was being entered, never the value, and every
//! text taken from the page or from the browser passes through [`LoginFailure::redacted`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// What the login was doing, as named in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Step {
    /// Reaching the Chromium sidecar's DevTools endpoint.
    Connect,
    /// Opening the consent login page.
    LoginPage,
    /// Entering the registered mobile number.
    Mobile,
    /// Entering the account password (some page variants ask for it, docs/dhan-api.md §3).
    Password,
    /// Entering the code from the authenticator app.
    Totp,
    /// Entering the Dhan PIN.
    Pin,
    /// A code field that the page did not say was for the TOTP or for the PIN.
    TotpOrPin,
    /// Waiting for the 302 to `<redirect URL>?tokenId=<id>` (docs/dhan-api.md §3).
    Redirect,
}

impl Step {
    /// Whether a value typed at this step counts against the account at Dhan: wrong PINs (and
    /// codes) typed repeatedly can lock it (docs/dhan-api.md §3).
    pub fn is_credential(self) -> bool {
        matches!(
            self,
            Step::Password | Step::Totp | Step::Pin | Step::TotpOrPin
        )
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Connect => "Chromium connection",
            Step::LoginPage => "login page",
            Step::Mobile => "mobile number",
            Step::Password => "password",
            Step::Totp => "TOTP",
            Step::Pin => "PIN",
            Step::TotpOrPin => "TOTP or PIN",
            Step::Redirect => "redirect",
        })
    }
}

/// What kind of failure it was, whatever step it happened at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailureClass {
    /// Dhan refused the PIN.
    Pin,
    /// Dhan refused the TOTP code (a wrong key, clock skew, or a replayed step, docs/dhan-api.md §1).
    Totp,
    /// Dhan did not accept the mobile number.
    Mobile,
    /// Dhan refused the password, or asked for one and none is configured.
    Password,
    /// The consent or the login session expired or is unknown; a new consent is needed.
    SessionExpired,
    /// Dhan refuses logins for now after repeated failures.
    TooManyAttempts,
    /// The page went to a host that is not an allowed login host: nothing was typed there.
    OriginRefused,
    /// The login page answered with an HTTP error.
    PageUnavailable,
    /// The page's fields could not be read (none found, or none named).
    PageNotUnderstood,
    /// The login timeout ran out.
    Timeout,
    /// Chromium or the DevTools connection failed.
    Browser,
    /// The login Job's environment is missing or malformed.
    Config,
    /// The redirect arrived without a `tokenId`.
    NoTokenId,
    /// The page showed a message that says none of the above.
    Unknown,
}

impl FailureClass {
    /// Stable name for reasons and metrics (`InvalidPin`, `LoginTimeout`, …).
    pub fn reason(self) -> &'static str {
        match self {
            FailureClass::Pin => "InvalidPin",
            FailureClass::Totp => "InvalidTotp",
            FailureClass::Mobile => "InvalidMobile",
            FailureClass::Password => "InvalidPassword",
            FailureClass::SessionExpired => "LoginSessionExpired",
            FailureClass::TooManyAttempts => "TooManyLoginAttempts",
            FailureClass::OriginRefused => "LoginOriginRefused",
            FailureClass::PageUnavailable => "LoginPageUnavailable",
            FailureClass::PageNotUnderstood => "LoginPageNotUnderstood",
            FailureClass::Timeout => "LoginTimeout",
            FailureClass::Browser => "LoginBrowserError",
            FailureClass::Config => "LoginConfig",
            FailureClass::NoTokenId => "LoginNoTokenId",
            FailureClass::Unknown => "LoginRejected",
        }
    }

    /// Failures that do not change until the credentials, the spec or the operator's settings
    /// do: retrying on a timer would only type the same wrong value into Dhan again.
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            FailureClass::Pin
                | FailureClass::Totp
                | FailureClass::Mobile
                | FailureClass::Password
                | FailureClass::TooManyAttempts
                | FailureClass::OriginRefused
                | FailureClass::Config
        )
    }

    fn describe(self) -> &'static str {
        match self {
            FailureClass::Pin => "wrong PIN",
            FailureClass::Totp => "TOTP refused",
            FailureClass::Mobile => "mobile number refused",
            FailureClass::Password => "password refused",
            FailureClass::SessionExpired => "session expired",
            FailureClass::TooManyAttempts => "too many attempts",
            FailureClass::Unknown => "unrecognised message",
            _ => "",
        }
    }

    /// The class a rejection at `step` has when the page's text does not say otherwise.
    fn of_step(step: Step) -> Option<FailureClass> {
        match step {
            Step::Pin => Some(FailureClass::Pin),
            Step::Totp => Some(FailureClass::Totp),
            Step::Mobile => Some(FailureClass::Mobile),
            Step::Password => Some(FailureClass::Password),
            _ => None,
        }
    }
}

/// A failed browser login. `Display` is one line and never contains a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginFailure {
    pub step: Step,
    pub class: FailureClass,
    /// What the page said (redacted, one line, bounded).
    pub page_text: Option<String>,
    /// What the driver saw, in its own words (redacted).
    pub detail: Option<String>,
    /// A PIN, TOTP code or password was submitted to Dhan during this login: the failure counts
    /// toward the account's lockout budget.
    pub reached_credential_step: bool,
}

impl LoginFailure {
    fn new(step: Step, class: FailureClass) -> LoginFailure {
        LoginFailure {
            step,
            class,
            page_text: None,
            detail: None,
            reached_credential_step: false,
        }
    }

    fn with_detail(mut self, detail: impl Into<String>) -> LoginFailure {
        self.detail = Some(detail.into());
        self
    }

    fn with_page_text(mut self, text: impl Into<String>) -> LoginFailure {
        self.page_text = Some(text.into());
        self
    }

    /// A required environment variable is missing or malformed; names the variable only.
    pub fn config(detail: impl Into<String>) -> LoginFailure {
        LoginFailure::new(Step::Connect, FailureClass::Config).with_detail(detail)
    }

    /// The page showed `page_text` after `step` was submitted (or while it was shown).
    pub fn rejected(step: Step, class: FailureClass, page_text: impl Into<String>) -> LoginFailure {
        LoginFailure::new(step, class).with_page_text(page_text)
    }

    /// The page never showed a field for the step.
    pub fn no_field(step: Step) -> LoginFailure {
        LoginFailure::new(step, FailureClass::PageNotUnderstood)
            .with_detail(format!("no {step} field found"))
    }

    /// The page did something the driver cannot follow.
    pub fn unexpected(step: Step, detail: impl Into<String>) -> LoginFailure {
        LoginFailure::new(step, FailureClass::PageNotUnderstood).with_detail(detail)
    }

    /// The login page answered with an HTTP error page.
    pub fn page_unavailable(status: u16, page_text: impl Into<String>) -> LoginFailure {
        LoginFailure::new(Step::LoginPage, FailureClass::PageUnavailable)
            .with_detail(format!("HTTP {status}"))
            .with_page_text(page_text)
    }

    /// The page went to `origin`, which is not an allowed login host.
    pub fn origin_refused(step: Step, origin: &str) -> LoginFailure {
        LoginFailure::new(step, FailureClass::OriginRefused).with_detail(format!(
            "the page went to {origin}, which is not an allowed login host; nothing was typed there"
        ))
    }

    /// The page asks for a password and none is configured.
    pub fn password_not_configured() -> LoginFailure {
        LoginFailure::new(Step::Password, FailureClass::Password).with_detail(
            "the page asks for a password and none is configured (DHAN_PASSWORD); nothing was typed",
        )
    }

    /// The login timeout (`LOGIN_TIMEOUT`) ran out.
    pub fn timeout(step: Step) -> LoginFailure {
        LoginFailure::new(step, FailureClass::Timeout)
    }

    /// The redirect URL was reached without a usable `tokenId` in its query.
    pub fn no_token_id() -> LoginFailure {
        LoginFailure::new(Step::Redirect, FailureClass::NoTokenId)
    }

    /// The DevTools protocol failed.
    pub fn browser(step: Step, detail: impl Into<String>) -> LoginFailure {
        LoginFailure::new(step, FailureClass::Browser).with_detail(detail)
    }

    /// The same failure with every occurrence of `secrets` in its free texts replaced. Page texts
    /// and browser errors are not ours: a page could echo what was typed.
    pub fn redacted(mut self, secrets: &[&str]) -> LoginFailure {
        self.page_text = self.page_text.map(|t| redact(&t, secrets));
        self.detail = self.detail.map(|t| redact(&t, secrets));
        self
    }
}

impl fmt::Display for LoginFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = self.step;
        match (self.class, &self.page_text, &self.detail) {
            (FailureClass::Timeout, _, _) => write!(f, "timed out at the {step} step"),
            (FailureClass::NoTokenId, _, _) => f.write_str("the redirect carried no tokenId"),
            (FailureClass::Config, _, Some(detail)) => write!(f, "configuration: {detail}"),
            (FailureClass::Browser, _, Some(detail)) => write!(f, "browser error: {detail}"),
            (class, Some(text), detail) => {
                let prefix = if class == FailureClass::PageUnavailable {
                    format!("{step} unavailable")
                } else {
                    format!("{step} rejected")
                };
                let own = FailureClass::of_step(step) == Some(class);
                match (own, class.describe(), detail) {
                    (false, why, _) if !why.is_empty() => write!(f, "{prefix} ({why}): {text}"),
                    (_, _, Some(detail)) => write!(f, "{prefix} ({detail}): {text}"),
                    _ => write!(f, "{prefix}: {text}"),
                }
            }
            (_, None, Some(detail)) => write!(f, "{step}: {detail}"),
            (class, None, None) => write!(f, "{step}: {}", class.reason()),
        }
    }
}

/// Replaces each secret with `<redacted>` ([`crate::redact::redact`]) and folds the text onto
/// one line.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    crate::redact::redact(&folded, secrets)
}

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;

//! Why a refresh failed, as one typed value from the Dhan answer (or the login page, or the
//! Kubernetes API) to the status condition's reason, the metric label and the event.
//!
//! A [`FailureKind`] says what happened; [`FailureKind::handling`] says what the operator does
//! about it. The rule for an unknown: anything about the account or its credentials is
//! permanent (a person must look; retrying a wrong PIN can lock the account), anything about
//! the service is transient (docs/dhan-api.md §1, §6).

use crate::dhan::{DhanError, ErrorKind};
use chrono::{DateTime, Utc};

/// What went wrong. `reason()` is the stable CamelCase label used everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::VariantArray)]
pub enum FailureKind {
    // Refusals of what the user configured: held until the inputs change.
    InvalidPin,
    InvalidTotp,
    InvalidCredentials,
    InvalidClientId,
    TotpNotEnabled,
    AccountLocked,
    AppUnauthorized,
    NoApiAccess,
    AccountIssue,
    RenewNotAllowed,
    MalformedToken,
    InvalidConfig,
    /// A web token Dhan no longer accepts cannot be renewed (docs/dhan-api.md §2).
    TokenDead,
    // Browser logins (docs/dhan-api.md §3), held: the same wrong value would be typed again.
    InvalidMobile,
    InvalidPassword,
    TooManyLoginAttempts,
    LoginOriginRefused,
    LoginConfig,
    /// The day's cap on refused credential submissions for the client is reached: stop before
    /// Dhan locks the account, until the next IST day.
    LoginLockout,
    /// Dhan refused these very credentials for this client earlier today (IST): they are not
    /// sent again, by any account.
    CredentialsRefusedToday,
    /// Not sent: too close to IST midnight, when Dhan could count it in the other day.
    NearIstMidnight,
    /// No method can be used with what the account has.
    NoUsableMethod,
    // Dhan's limits: retried when they allow.
    MintThrottled,
    ConsentLimitExceeded,
    // The service: backed off and retried.
    RateLimited,
    ServerError,
    Rejected,
    UnexpectedResponse,
    Timeout,
    Network,
    /// The connection broke after the request went out: Dhan may have carried it out.
    ConnectionLost,
    /// A 2xx answer with neither a token nor a readable error: Dhan may have carried the call
    /// out (docs/dhan-api.md §1).
    MalformedAnswer,
    /// The consent's single-use `tokenId` was already used or expired: a new login is needed.
    ConsentExpired,
    // Browser logins, backed off: a new consent and login may work.
    LoginSessionExpired,
    LoginPageUnavailable,
    LoginPageNotUnderstood,
    LoginTimeout,
    LoginBrowserError,
    LoginNoTokenId,
    /// The page refused with a message that says nothing more specific.
    LoginRejected,
    /// The login Job ended, vanished or outlived its deadline without a report.
    LoginFailed,
}

/// What the operator does after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handling {
    /// Wait for the DhanAccount or a credential Secret to change.
    Hold,
    /// Exponential backoff.
    Backoff,
    /// Dhan said when: the mint throttle.
    AfterMintInterval,
    /// The next IST day: Dhan's daily consent limit, a refused TOTP code (a clock that is
    /// off heals), credentials refused earlier today.
    NextIstDay,
}

impl FailureKind {
    pub fn reason(self) -> &'static str {
        use FailureKind::*;
        match self {
            InvalidPin => "InvalidPin",
            InvalidTotp => "InvalidTotp",
            InvalidCredentials => "InvalidCredentials",
            InvalidClientId => "InvalidClientId",
            TotpNotEnabled => "TotpNotEnabled",
            AccountLocked => "AccountLocked",
            AppUnauthorized => "AppUnauthorized",
            NoApiAccess => "NoApiAccess",
            AccountIssue => "AccountIssue",
            RenewNotAllowed => "RenewNotAllowed",
            MalformedToken => "MalformedToken",
            InvalidConfig => "InvalidConfig",
            TokenDead => "TokenDead",
            InvalidMobile => "InvalidMobile",
            InvalidPassword => "InvalidPassword",
            TooManyLoginAttempts => "TooManyLoginAttempts",
            LoginOriginRefused => "LoginOriginRefused",
            LoginConfig => "LoginConfig",
            LoginLockout => "LoginLockout",
            CredentialsRefusedToday => "CredentialsRefusedToday",
            NearIstMidnight => "NearIstMidnight",
            NoUsableMethod => "NoUsableMethod",
            MintThrottled => "MintThrottled",
            ConsentLimitExceeded => "ConsentLimitExceeded",
            RateLimited => "RateLimited",
            ServerError => "ServerError",
            Rejected => "Rejected",
            UnexpectedResponse => "UnexpectedResponse",
            Timeout => "Timeout",
            Network => "Network",
            ConnectionLost => "ConnectionLost",
            MalformedAnswer => "MalformedAnswer",
            ConsentExpired => "ConsentExpired",
            LoginSessionExpired => "LoginSessionExpired",
            LoginPageUnavailable => "LoginPageUnavailable",
            LoginPageNotUnderstood => "LoginPageNotUnderstood",
            LoginTimeout => "LoginTimeout",
            LoginBrowserError => "LoginBrowserError",
            LoginNoTokenId => "LoginNoTokenId",
            LoginRejected => "LoginRejected",
            LoginFailed => "LoginFailed",
        }
    }

    pub fn handling(self) -> Handling {
        use FailureKind::*;
        match self {
            InvalidPin | InvalidCredentials | InvalidClientId | TotpNotEnabled | AccountLocked
            | AppUnauthorized | NoApiAccess | AccountIssue | RenewNotAllowed | MalformedToken
            | InvalidConfig | TokenDead | InvalidMobile | InvalidPassword
            | TooManyLoginAttempts | LoginOriginRefused | LoginConfig | NoUsableMethod => {
                Handling::Hold
            }
            MintThrottled | NearIstMidnight => Handling::AfterMintInterval,
            // Dhan's daily limits; a TOTP code made by a clock that is off, or credentials
            // refused earlier today: tried again on the next IST day, not held for good.
            ConsentLimitExceeded | LoginLockout | InvalidTotp | CredentialsRefusedToday => {
                Handling::NextIstDay
            }
            RateLimited
            | ServerError
            | Rejected
            | UnexpectedResponse
            | Timeout
            | Network
            | ConnectionLost
            | MalformedAnswer
            | ConsentExpired
            | LoginSessionExpired
            | LoginPageUnavailable
            | LoginPageNotUnderstood
            | LoginTimeout
            | LoginBrowserError
            | LoginNoTokenId
            | LoginRejected
            | LoginFailed => Handling::Backoff,
        }
    }

    /// The kind whose [`FailureKind::reason`] is `reason` (as the status records it).
    pub fn from_reason(reason: &str) -> Option<FailureKind> {
        <FailureKind as strum::VariantArray>::VARIANTS
            .iter()
            .copied()
            .find(|k| k.reason() == reason)
    }

    /// A refusal of the credentials themselves: retrying it on a timer could lock the
    /// account, so it wins over any transient failure of another method.
    pub fn refuses_credentials(self) -> bool {
        use FailureKind::*;
        matches!(
            self,
            InvalidPin
                | InvalidTotp
                | InvalidCredentials
                | InvalidClientId
                | TotpNotEnabled
                | AccountLocked
                | AppUnauthorized
                | InvalidMobile
                | InvalidPassword
                | TooManyLoginAttempts
                | CredentialsRefusedToday
        )
    }

    /// Whether a call that failed this way may have reached Dhan: all but a connection that
    /// never opened and the calls the operator would not send.
    pub fn may_have_reached_dhan(self) -> bool {
        use FailureKind::*;
        !matches!(
            self,
            Network | InvalidConfig | MalformedToken | NoUsableMethod | NearIstMidnight
        )
    }

    /// Whether a call that failed this way may still have been carried out by Dhan: a mint
    /// whose answer was lost may have revoked the previous token (docs/dhan-api.md §1).
    pub fn outcome_unknown(self) -> bool {
        use FailureKind::*;
        matches!(
            self,
            Timeout | ServerError | ConnectionLost | MalformedAnswer
        )
    }
}

impl From<&DhanError> for FailureKind {
    fn from(error: &DhanError) -> Self {
        use DhanError as E;
        match error {
            E::InvalidPin { .. } => FailureKind::InvalidPin,
            E::InvalidTotp { .. } => FailureKind::InvalidTotp,
            E::MintThrottled => FailureKind::MintThrottled,
            E::RenewNotAllowed => FailureKind::RenewNotAllowed,
            E::ConsentLimitExceeded { .. } => FailureKind::ConsentLimitExceeded,
            E::AppUnauthorized { .. } => FailureKind::AppUnauthorized,
            E::InvalidCredentials { .. } => FailureKind::InvalidCredentials,
            E::InvalidClientId { .. } => FailureKind::InvalidClientId,
            E::TotpNotEnabled { .. } => FailureKind::TotpNotEnabled,
            E::AccountLocked { .. } => FailureKind::AccountLocked,
            E::ConsentExpired { .. } => FailureKind::ConsentExpired,
            E::NoApiAccess { .. } => FailureKind::NoApiAccess,
            E::AccountIssue { .. } => FailureKind::AccountIssue,
            E::TokenDead { .. } => FailureKind::TokenDead,
            E::MalformedToken { .. } => FailureKind::MalformedToken,
            E::RateLimited { .. } => FailureKind::RateLimited,
            E::ServerError { .. } => FailureKind::ServerError,
            E::Rejected { .. } => FailureKind::Rejected,
            E::UnexpectedResponse { status, .. } if (200..300).contains(status) => {
                FailureKind::MalformedAnswer
            }
            E::UnexpectedResponse { .. } => FailureKind::UnexpectedResponse,
            E::Timeout => FailureKind::Timeout,
            E::Network { .. } => FailureKind::Network,
            E::ConnectionLost { .. } => FailureKind::ConnectionLost,
            E::InvalidConfig { .. } => FailureKind::InvalidConfig,
        }
    }
}

/// A failure with the sentence that explains it (never a credential).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

impl From<&DhanError> for Failure {
    fn from(error: &DhanError) -> Self {
        debug_assert!(
            error.kind() != ErrorKind::TotpRejected
                || FailureKind::from(error).refuses_credentials()
        );
        Failure::new(FailureKind::from(error), error.to_string())
    }
}

/// Why one method produced no token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MethodFailure {
    /// The method cannot be used with what the account has; says what is missing.
    NotApplicable(String),
    /// It was tried and failed.
    Failed(Failure),
}

/// One failed attempt, folded from its methods' failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub failure: Failure,
    /// When the attempt failed.
    pub at: DateTime<Utc>,
}

/// Folds the failures of the methods tried, in order, into one. A refused credential wins
/// (retrying a wrong PIN on a timer could lock the account); otherwise anything that may work
/// later (a transient failure, a limit) wins over methods that cannot work until the inputs
/// change; with only those, nothing is usable.
pub fn summarise(failures: &[(super::Method, MethodFailure)]) -> Failure {
    let message = failures
        .iter()
        .map(|(method, failure)| match failure {
            MethodFailure::NotApplicable(why) => format!("{}: {why}", method.as_str()),
            MethodFailure::Failed(f) => format!("{}: {}", method.as_str(), f.message),
        })
        .collect::<Vec<_>>()
        .join("; ");
    let tried: Vec<FailureKind> = failures
        .iter()
        .filter_map(|(_, f)| match f {
            MethodFailure::Failed(f) => Some(f.kind),
            MethodFailure::NotApplicable(_) => None,
        })
        .collect();
    let pick = tried
        .iter()
        .find(|k| k.refuses_credentials())
        .or_else(|| {
            // The latest wait Dhan asked for, then any transient failure.
            tried
                .iter()
                .find(|k| k.handling() == Handling::NextIstDay)
                .or_else(|| {
                    tried
                        .iter()
                        .find(|k| k.handling() == Handling::AfterMintInterval)
                })
                .or_else(|| {
                    tried
                        .iter()
                        .rev()
                        .find(|k| k.handling() == Handling::Backoff)
                })
        })
        .or(tried.last());
    match pick {
        Some(kind) => Failure::new(*kind, message),
        None => Failure::new(
            FailureKind::NoUsableMethod,
            format!("no usable method: {message}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Method;
    use super::*;

    fn failed(kind: FailureKind) -> MethodFailure {
        MethodFailure::Failed(Failure::new(kind, kind.reason()))
    }

    #[test]
    fn folding_method_failures() {
        use FailureKind::*;
        let na = || MethodFailure::NotApplicable("needs pin".into());
        let cases: Vec<(Vec<(Method, MethodFailure)>, FailureKind)> = vec![
            // A wrong PIN is never retried on a timer, whatever else happened.
            (
                vec![
                    (Method::Renew, failed(Timeout)),
                    (Method::Totp, failed(InvalidPin)),
                ],
                InvalidPin,
            ),
            // A revoked web token whose TOTP fallback failed transiently backs off.
            (
                vec![
                    (Method::Renew, failed(TokenDead)),
                    (Method::Totp, failed(Timeout)),
                ],
                Timeout,
            ),
            // …and with no fallback, nothing can work until a new web token is pasted.
            (
                vec![(Method::Renew, failed(TokenDead)), (Method::Totp, na())],
                TokenDead,
            ),
            (vec![(Method::Totp, failed(MintThrottled))], MintThrottled),
            (
                vec![
                    (Method::Totp, failed(ServerError)),
                    (Method::Browser, failed(ConsentLimitExceeded)),
                ],
                ConsentLimitExceeded,
            ),
            (
                vec![(Method::Renew, na()), (Method::Totp, na())],
                NoUsableMethod,
            ),
            (
                vec![(Method::Totp, failed(InvalidClientId))],
                InvalidClientId,
            ),
        ];
        for (failures, expected) in cases {
            let folded = summarise(&failures);
            assert_eq!(folded.kind, expected, "{failures:?}");
            for (method, _) in &failures {
                assert!(
                    folded.message.contains(method.as_str()),
                    "{}",
                    folded.message
                );
            }
        }
    }

    #[test]
    fn every_kind_has_a_distinct_camel_case_reason() {
        let all = <FailureKind as strum::VariantArray>::VARIANTS;
        let mut reasons: Vec<_> = all.iter().map(|k| k.reason()).collect();
        assert!(
            reasons
                .iter()
                .all(|r| r.chars().all(|c| c.is_ascii_alphanumeric()))
        );
        reasons.sort();
        reasons.dedup();
        assert_eq!(reasons.len(), all.len());
        // Credential refusals are held, or wait for the next IST day; never backed off.
        for kind in all.iter().filter(|k| k.refuses_credentials()) {
            assert!(
                matches!(kind.handling(), Handling::Hold | Handling::NextIstDay),
                "{kind:?}"
            );
        }
    }
}

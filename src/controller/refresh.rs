//! Obtaining a new token: the account's methods tried in order, each skipped when its
//! credentials are missing, falling through to the next on failure.

use super::credentials::{CredentialKey, Credentials};
use crate::decision::TokenFacts;
use crate::decision::policy::Method;
use crate::dhan::{
    AccessToken, CodePlan, DhanClient, DhanError, Endpoint, ErrorKind, IssuedToken, TotpKey,
    outcome_label,
};
use crate::rate_limit::RateLimiter;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Why a method could not produce a token.
#[derive(Debug)]
pub enum MethodFailure {
    /// The method cannot be used with what the account has; says what is missing.
    NotApplicable(String),
    /// Dhan refused or failed.
    Dhan(DhanError),
    /// A browser login could not be started or did not finish; retried with backoff.
    Login(String),
    /// A browser login ended with a refusal that will not change on its own (wrong PIN, wrong
    /// TOTP key, unusable mobile number): retried only once the inputs change.
    LoginRefused {
        reason: &'static str,
        message: String,
    },
}

/// What starting a browser login came to.
#[derive(Debug)]
pub enum LoginStart {
    /// A consent was generated and the login Job created (or an unrecorded running one found);
    /// its result arrives later.
    Started {
        job_name: String,
        started_at: DateTime<Utc>,
    },
    /// The cap on concurrent login Jobs is reached: no consent was spent, try again shortly.
    Queued(String),
}

/// A token the operator may renew: the current one, or the Dhan Web token in the credentials.
pub struct Renewable<'a> {
    pub token: &'a AccessToken,
    pub facts: &'a TokenFacts,
}

/// Checks whether `method` can be tried, without calling Dhan.
pub fn applicability(
    method: Method,
    credentials: &Credentials,
    renewable: Option<&Renewable<'_>>,
    browser_logins: bool,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let need = |keys: &[CredentialKey]| -> Result<(), String> {
        let missing: Vec<String> = keys
            .iter()
            .filter_map(|k| {
                credentials
                    .get(*k)
                    .err()
                    .map(|m| format!("{} ({m})", k.default_key()))
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("needs {}", missing.join(", ")))
        }
    };
    let usable_totp_key = || {
        let raw = credentials
            .get(CredentialKey::TotpSecret)
            .map_err(|m| m.to_string())?;
        TotpKey::parse(raw.expose()).map(|_| ()).map_err(|e| {
            format!(
                "{} is not a usable TOTP key: {e}",
                credentials.describe(CredentialKey::TotpSecret)
            )
        })
    };
    match method {
        Method::Renew => match renewable {
            Some(r) if r.facts.is_live(now) && r.facts.is_web_token() => Ok(()),
            // RenewToken refuses APP and API-key tokens with HTTP 500 DH-905 and cannot revive
            // an expired one (docs/dhan-api.md §2): never send it such a token.
            _ => Err("needs a live Dhan Web (SELF) token in accessToken".into()),
        },
        Method::Totp => {
            need(&[CredentialKey::Pin, CredentialKey::TotpSecret])?;
            usable_totp_key()
        }
        Method::Browser => {
            if !browser_logins {
                return Err("browser logins are off on this operator (start it with \
                            --browser-logins; Helm value browserLogin.enabled)"
                    .into());
            }
            need(&[
                CredentialKey::ApiKey,
                CredentialKey::ApiSecret,
                CredentialKey::Mobile,
                CredentialKey::Pin,
                CredentialKey::TotpSecret,
            ])?;
            usable_totp_key()?;
            let mobile = credentials
                .get(CredentialKey::Mobile)
                .map_err(|m| m.to_string())?;
            if crate::browser::config::mobile_digits(mobile.expose()).len() < 10 {
                return Err(format!(
                    "{} is not a mobile number (fewer than 10 digits)",
                    credentials.describe(CredentialKey::Mobile)
                ));
            }
            Ok(())
        }
    }
}

/// Everything a refresh attempt needs.
pub struct Attempt<'a> {
    pub dhan: &'a DhanClient,
    pub limiter: &'a RateLimiter,
    pub client_id: &'a str,
    pub methods: &'a [Method],
    pub credentials: &'a Credentials,
    pub renewable: Option<Renewable<'a>>,
    /// Last TOTP step submitted for this client (status), so a step is never reused.
    pub last_totp_step: Option<u64>,
    /// Whether this operator runs login Jobs for the `browser` method.
    pub browser_logins: bool,
}

/// What an attempt came to.
pub enum AttemptOutcome {
    /// A method produced a token.
    Token(IssuedToken, Method),
    /// The `browser` method started (or queued) a login; the methods before it failed.
    Login(LoginStart, Vec<(Method, MethodFailure)>),
    /// Every method failed or did not apply.
    Failed(Vec<(Method, MethodFailure)>),
}

/// What an attempt produced.
pub struct AttemptResult {
    pub outcome: AttemptOutcome,
    /// Last TOTP step submitted, to persist.
    pub last_totp_step: Option<u64>,
    /// Dhan calls made, by endpoint and outcome, for metrics.
    pub calls: Vec<(Endpoint, &'static str)>,
}

impl Attempt<'_> {
    /// Tries the methods in order. `start_login` starts the browser login (consent + Job) when
    /// the `browser` method is reached and applicable; its result arrives in a later reconcile.
    pub async fn run(
        self,
        start_login: impl AsyncFnOnce() -> Result<LoginStart, MethodFailure>,
    ) -> AttemptResult {
        let mut failures = Vec::new();
        let mut last_totp_step = self.last_totp_step;
        let mut calls = Vec::new();
        let mut start_login = Some(start_login);
        for &method in self.methods {
            if let Err(why) = applicability(
                method,
                self.credentials,
                self.renewable.as_ref(),
                self.browser_logins,
                Utc::now(),
            ) {
                failures.push((method, MethodFailure::NotApplicable(why)));
                continue;
            }
            let result = match method {
                Method::Renew => {
                    let token = self.renewable.as_ref().expect("checked above").token;
                    self.limiter.acquire().await;
                    let result = self.dhan.renew_token(self.client_id, token).await;
                    calls.push((Endpoint::RenewToken, outcome_label(&result)));
                    result
                }
                Method::Totp => self.mint_with_totp(&mut last_totp_step, &mut calls).await,
                Method::Browser => {
                    let Some(start) = start_login.take() else {
                        // `methods` is de-duplicated by the policy; be safe anyway.
                        continue;
                    };
                    match start().await {
                        Ok(started) => {
                            return AttemptResult {
                                outcome: AttemptOutcome::Login(started, failures),
                                last_totp_step,
                                calls,
                            };
                        }
                        Err(failure) => {
                            failures.push((method, failure));
                            continue;
                        }
                    }
                }
            };
            match result {
                Ok(issued) => {
                    return AttemptResult {
                        outcome: AttemptOutcome::Token(issued, method),
                        last_totp_step,
                        calls,
                    };
                }
                Err(error) => failures.push((method, MethodFailure::Dhan(error))),
            }
        }
        AttemptResult {
            outcome: AttemptOutcome::Failed(failures),
            last_totp_step,
            calls,
        }
    }

    /// generateAccessToken with a fresh code: never with < 5 s left in its step, never a step
    /// used before for this client, and one retry at the next step after "Invalid TOTP", which
    /// Dhan also answers to a replayed code (docs/dhan-api.md §1).
    async fn mint_with_totp(
        &self,
        last_step: &mut Option<u64>,
        calls: &mut Vec<(Endpoint, &'static str)>,
    ) -> Result<IssuedToken, DhanError> {
        let pin = self.credentials.get(CredentialKey::Pin).expect("checked");
        let key = TotpKey::parse(
            self.credentials
                .get(CredentialKey::TotpSecret)
                .expect("checked")
                .expose(),
        )
        .expect("checked");
        let mut tries = 0;
        loop {
            let (code, step) = loop {
                match key.plan(Utc::now(), *last_step) {
                    CodePlan::Send { code, step } => break (code, step),
                    CodePlan::WaitUntil(at) => {
                        let wait = (at - Utc::now()).to_std().unwrap_or_default();
                        tokio::time::sleep(wait + Duration::from_millis(50)).await;
                    }
                }
            };
            self.limiter.acquire().await;
            *last_step = Some(step);
            tries += 1;
            let result = self
                .dhan
                .generate_access_token(self.client_id, pin.expose(), &code)
                .await;
            calls.push((Endpoint::GenerateAccessToken, outcome_label(&result)));
            match result {
                Err(e) if e.kind() == ErrorKind::TotpRejected && tries < 2 => continue,
                other => return other,
            }
        }
    }
}

/// How a failed attempt is handled.
#[derive(Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// Wrong credentials or nothing usable: wait for the user to change something.
    Permanent,
    /// Dhan said when to come back.
    RetryAt(DateTime<Utc>),
    /// Back off and retry.
    Transient,
}

/// Summary of a failed attempt: the class, a reason label and a message naming each method.
pub struct FailureSummary {
    pub class: FailureClass,
    pub reason: &'static str,
    pub message: String,
}

/// Folds the per-method failures into one verdict. A permanent credential failure wins: retrying
/// a wrong PIN on a timer could get the account locked.
pub fn summarise(failures: &[(Method, MethodFailure)], now: DateTime<Utc>) -> FailureSummary {
    let message = failures
        .iter()
        .map(|(method, failure)| match failure {
            MethodFailure::NotApplicable(why) | MethodFailure::Login(why) => {
                format!("{}: {why}", method.as_str())
            }
            MethodFailure::LoginRefused { message, .. } => {
                format!("{}: {message}", method.as_str())
            }
            MethodFailure::Dhan(e) => format!("{}: {e}", method.as_str()),
        })
        .collect::<Vec<_>>()
        .join("; ");
    if let Some(reason) = failures.iter().find_map(|(_, f)| match f {
        MethodFailure::LoginRefused { reason, .. } => Some(*reason),
        _ => None,
    }) {
        return FailureSummary {
            class: FailureClass::Permanent,
            reason,
            message,
        };
    }
    let dhan_errors: Vec<(Method, &DhanError)> = failures
        .iter()
        .filter_map(|(m, f)| match f {
            MethodFailure::Dhan(e) => Some((*m, e)),
            _ => None,
        })
        .collect();
    let permanent = dhan_errors.iter().find(|(method, e)| match e.kind() {
        ErrorKind::Permanent => true,
        // The retry at the next step already happened.
        ErrorKind::TotpRejected => true,
        // A dead web token will not renew again; only a new one in the credentials helps.
        ErrorKind::TokenDead => *method == Method::Renew,
        _ => false,
    });
    if let Some((_, e)) = permanent {
        return FailureSummary {
            class: FailureClass::Permanent,
            reason: e.reason(),
            message,
        };
    }
    if let Some((e, at)) = dhan_errors
        .iter()
        .filter_map(|(_, e)| e.retry_at(now).map(|at| (e, at)))
        .max_by_key(|(_, at)| *at)
    {
        return FailureSummary {
            class: FailureClass::RetryAt(at),
            reason: e.reason(),
            message,
        };
    }
    let login_failed = failures
        .iter()
        .any(|(_, f)| matches!(f, MethodFailure::Login(_)));
    match dhan_errors.last() {
        Some((_, e)) => FailureSummary {
            class: FailureClass::Transient,
            reason: e.reason(),
            message,
        },
        None if login_failed => FailureSummary {
            class: FailureClass::Transient,
            reason: "LoginFailed",
            message,
        },
        None => FailureSummary {
            class: FailureClass::Permanent,
            reason: "NoUsableMethod",
            message: format!("no usable method: {message}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-23T02:30:00Z".parse().unwrap()
    }

    fn dhan(e: DhanError) -> MethodFailure {
        MethodFailure::Dhan(e)
    }

    #[test]
    fn wrong_pin_is_permanent_even_when_another_method_had_a_transient_error() {
        let failures = vec![
            (Method::Renew, dhan(DhanError::Timeout)),
            (
                Method::Totp,
                dhan(DhanError::InvalidPin {
                    message: "Invalid Pin".into(),
                }),
            ),
        ];
        let summary = summarise(&failures, now());
        assert_eq!(summary.class, FailureClass::Permanent);
        assert_eq!(summary.reason, "InvalidPin");
        assert!(summary.message.contains("renew: "), "{}", summary.message);
        assert!(summary.message.contains("totp: "), "{}", summary.message);
    }

    #[test]
    fn throttle_waits_until_dhan_allows() {
        let failures = vec![(Method::Totp, dhan(DhanError::MintThrottled))];
        let summary = summarise(&failures, now());
        assert_eq!(
            summary.class,
            FailureClass::RetryAt(now() + chrono::Duration::seconds(125))
        );
        assert_eq!(summary.reason, "MintThrottled");
    }

    #[test]
    fn server_errors_are_transient() {
        let failures = vec![(Method::Totp, dhan(DhanError::Timeout))];
        assert_eq!(summarise(&failures, now()).class, FailureClass::Transient);
    }

    #[test]
    fn nothing_applicable_is_permanent_and_says_what_is_missing() {
        let failures = vec![
            (
                Method::Renew,
                MethodFailure::NotApplicable("needs a live Dhan Web (SELF) token".into()),
            ),
            (
                Method::Totp,
                MethodFailure::NotApplicable(
                    "needs totpSecret (Secret \"a\" has no key \"totpSecret\")".into(),
                ),
            ),
        ];
        let summary = summarise(&failures, now());
        assert_eq!(summary.class, FailureClass::Permanent);
        assert_eq!(summary.reason, "NoUsableMethod");
        assert!(summary.message.contains("totpSecret"));
    }

    #[test]
    fn renew_is_never_applicable_to_an_app_token() {
        let token = AccessToken::from("x".to_string());
        let facts = TokenFacts {
            expires_at: now() + chrono::Duration::hours(2),
            issued_at: now(),
            obtained_at: now(),
            consumer_type: Some("APP".into()),
            hash: "h".into(),
        };
        let renewable = Renewable {
            token: &token,
            facts: &facts,
        };
        let creds = Credentials::default();
        assert!(applicability(Method::Renew, &creds, Some(&renewable), false, now()).is_err());
        let web = TokenFacts {
            consumer_type: Some("SELF".into()),
            ..facts.clone()
        };
        let renewable = Renewable {
            token: &token,
            facts: &web,
        };
        assert!(applicability(Method::Renew, &creds, Some(&renewable), false, now()).is_ok());
        let expired = TokenFacts {
            expires_at: now() - chrono::Duration::seconds(1),
            ..web.clone()
        };
        let renewable = Renewable {
            token: &token,
            facts: &expired,
        };
        assert!(applicability(Method::Renew, &creds, Some(&renewable), false, now()).is_err());
    }
}

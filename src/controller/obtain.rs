//! Obtaining a new token and recording what came of it: the Secret first (the previous token is
//! dead the moment Dhan issues a new one), then the caller writes status.

use super::Context;
use super::credentials::Credentials;
use super::login::{self, Progress};
use super::output;
use super::reconcile::{Error, publish};
use super::refresh::{
    Attempt, AttemptOutcome, FailureClass as AttemptFailure, LoginStart, MethodFailure, Renewable,
    summarise,
};
use crate::crd::{ConsentCount, DhanAccount, LoginStatus, StaticIpStatus};
use crate::decision::policy::{Method, Policy};
use crate::decision::{FailureClass, Memory, ProbeVerdict, RefreshReason, TokenFacts};
use crate::dhan::{AccessToken, Endpoint, ErrorKind, IssuedToken, outcome_label};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use std::time::Instant;
use tracing::{info, warn};

/// Where a refresh or probe left the account, for status and events.
pub struct Outcome {
    pub token: Option<(AccessToken, TokenFacts)>,
    pub method: Option<String>,
    pub memory: Memory,
    pub last_totp_step: Option<u64>,
    pub last_failure_reason: Option<String>,
    /// The last failure's message, shown until the next success.
    pub failure_message: Option<String>,
    pub probe: Option<(DateTime<Utc>, ProbeVerdict)>,
    pub static_ip: Option<StaticIpStatus>,
    /// The browser login in progress.
    pub login: Option<LoginStatus>,
    /// Why a browser login is due but waits for a free slot.
    pub login_queued: Option<String>,
    pub consents: Option<ConsentCount>,
}

/// What a refresh is for: the reason and the refresh-requested value it answers.
#[derive(Clone)]
pub struct Purpose {
    pub reason: String,
    pub describe: String,
    pub refresh_request: Option<String>,
}

impl Purpose {
    pub fn new(reason: RefreshReason, refresh_request: Option<String>) -> Purpose {
        Purpose {
            reason: reason.as_str().into(),
            describe: reason.describe().into(),
            refresh_request,
        }
    }

    fn of_login(login: &LoginStatus) -> Purpose {
        let describe = match login.reason.as_str() {
            "NoToken" => RefreshReason::NoToken.describe(),
            "Expired" => RefreshReason::Expired.describe(),
            "ProbedDead" => RefreshReason::ProbedDead.describe(),
            "Requested" => RefreshReason::Requested.describe(),
            "Scheduled" => RefreshReason::Scheduled.describe(),
            "SafetyNet" => RefreshReason::SafetyNet.describe(),
            _ => "browser login",
        };
        Purpose {
            reason: login.reason.clone(),
            describe: describe.into(),
            refresh_request: login.refresh_request.clone(),
        }
    }
}

/// Obtains a token with the account's methods. The `browser` method only starts a login here;
/// [`follow_login`] finishes it in a later reconcile.
#[allow(clippy::too_many_arguments)]
pub async fn refresh(
    ctx: &Context,
    account: &DhanAccount,
    secrets: &Api<Secret>,
    policy: &Policy,
    credentials: &Credentials,
    web_token: Option<&(AccessToken, TokenFacts)>,
    outcome: &mut Outcome,
    purpose: Purpose,
) -> Result<(), Error> {
    let started = Instant::now();
    let renewable = outcome
        .token
        .as_ref()
        .filter(|(_, f)| f.is_web_token() && f.is_live(Utc::now()))
        .or(web_token.filter(|(_, f)| f.is_web_token()))
        .map(|(token, facts)| Renewable { token, facts });
    let consents = &mut outcome.consents;
    let totp_after_step = outcome.last_totp_step;
    let attempt = Attempt {
        dhan: &ctx.dhan,
        limiter: &ctx.limiter,
        client_id: &policy.client_id,
        methods: &policy.methods,
        credentials,
        renewable,
        last_totp_step: outcome.last_totp_step,
        browser_logins: ctx.login.enabled,
    }
    .run(async || {
        login::start(
            ctx,
            account,
            &policy.client_id,
            credentials,
            consents,
            totp_after_step,
        )
        .await
    })
    .await;
    for (endpoint, result) in &attempt.calls {
        ctx.metrics.dhan_call(*endpoint, result);
    }
    outcome.last_totp_step = attempt.last_totp_step;
    match attempt.outcome {
        AttemptOutcome::Token(issued, method) => {
            accept(
                ctx, account, secrets, outcome, issued, method, &purpose, started,
            )
            .await?;
        }
        AttemptOutcome::Failed(failures) => {
            record_failure(ctx, account, credentials, outcome, &failures, &purpose).await;
        }
        AttemptOutcome::Login(
            LoginStart::Started {
                job_name,
                started_at,
            },
            _,
        ) => {
            info!(account = %account.name_any(), namespace = %account.namespace().unwrap_or_default(),
                job = %job_name, reason = purpose.reason.as_str(), "started a browser login");
            publish(
                ctx,
                account,
                EventType::Normal,
                "LoginStarted",
                format!(
                    "Generated a consent and started the browser login Job {job_name} ({})",
                    purpose.describe
                ),
            )
            .await;
            outcome.login = Some(LoginStatus {
                job_name,
                started_at,
                reason: purpose.reason,
                refresh_request: purpose.refresh_request,
            });
            outcome.login_queued = None;
        }
        AttemptOutcome::Login(LoginStart::Queued(why), failures)
            if failures
                .iter()
                .any(|(_, f)| matches!(f, MethodFailure::Dhan(_))) =>
        {
            // Waiting for a slot re-runs the methods before `browser` every few seconds: after
            // a Dhan failure among them, back off instead.
            let mut failures = failures;
            failures.push((Method::Browser, MethodFailure::Login(why)));
            record_failure(ctx, account, credentials, outcome, &failures, &purpose).await;
        }
        AttemptOutcome::Login(LoginStart::Queued(why), _) => {
            outcome.login_queued = Some(why);
        }
    }
    Ok(())
}

/// Follows the browser login recorded in status: nothing while its Job runs; once it has
/// finished, exchanges the `tokenId` for a token (or records the failure) and clears the login.
/// Returns whether the login is still running.
pub async fn follow_login(
    ctx: &Context,
    account: &DhanAccount,
    secrets: &Api<Secret>,
    credentials: &Credentials,
    outcome: &mut Outcome,
) -> Result<bool, Error> {
    let Some(login) = outcome.login.clone() else {
        return Ok(false);
    };
    let namespace = account.namespace().unwrap_or_default();
    let uid = account.uid().unwrap_or_default();
    let purpose = Purpose::of_login(&login);
    let progress = login::progress(
        ctx,
        &namespace,
        &login.job_name,
        login.started_at,
        credentials,
    )
    .await?;
    if !matches!(progress, Progress::Running { .. }) {
        // The Job typed a TOTP code of some step up to now; the next code (in a login or a
        // mint) must come from a later step, or Dhan rejects it as a replay (docs/dhan-api.md §1).
        let now_step = crate::dhan::totp::step_at(Utc::now());
        outcome.last_totp_step = outcome.last_totp_step.max(Some(now_step));
    }
    let failure = match progress {
        Progress::Running { .. } => return Ok(true),
        Progress::Failed(failure) => Some(failure),
        Progress::LoggedIn(token_id) => {
            let app = (
                credentials.get(super::credentials::CredentialKey::ApiKey),
                credentials.get(super::credentials::CredentialKey::ApiSecret),
            );
            match app {
                (Ok(app_id), Ok(app_secret)) => {
                    ctx.limiter.acquire().await;
                    let result = ctx
                        .dhan
                        .consume_consent(token_id.expose(), app_id.expose(), app_secret.expose())
                        .await;
                    ctx.metrics
                        .dhan_call(Endpoint::ConsumeConsent, outcome_label(&result));
                    match result {
                        Ok(issued) => {
                            let started = Instant::now();
                            accept(
                                ctx,
                                account,
                                secrets,
                                outcome,
                                issued,
                                Method::Browser,
                                &purpose,
                                started,
                            )
                            .await?;
                            login::delete_job(ctx, &namespace, &login.job_name).await;
                            None
                        }
                        Err(error) => Some(MethodFailure::Dhan(error)),
                    }
                }
                _ => Some(MethodFailure::NotApplicable(
                    "the app's apiKey/apiSecret disappeared during the login".into(),
                )),
            }
        }
    };
    if let Some(failure) = failure {
        record_failure(
            ctx,
            account,
            credentials,
            outcome,
            &[(Method::Browser, failure)],
            &purpose,
        )
        .await;
    }
    outcome.login = None;
    ctx.logins.release(&uid);
    Ok(false)
}

/// Stops a login in progress (the account was suspended): deletes its Job.
pub async fn abandon_login(ctx: &Context, account: &DhanAccount, outcome: &mut Outcome) {
    if let Some(login) = outcome.login.take() {
        let namespace = account.namespace().unwrap_or_default();
        login::delete_job(ctx, &namespace, &login.job_name).await;
        ctx.logins.release(&account.uid().unwrap_or_default());
    }
}

/// A new token: into the Secret at once, then into the outcome for status.
#[allow(clippy::too_many_arguments)]
async fn accept(
    ctx: &Context,
    account: &DhanAccount,
    secrets: &Api<Secret>,
    outcome: &mut Outcome,
    issued: IssuedToken,
    method: Method,
    purpose: &Purpose,
    started: Instant,
) -> Result<(), Error> {
    let now = Utc::now();
    let uid = account.uid().unwrap_or_default();
    let facts = output::token_facts(&uid, &issued.token, Some(now)).unwrap_or_else(|| TokenFacts {
        expires_at: issued.expires_at,
        issued_at: issued.issued_at.unwrap_or(now),
        obtained_at: now,
        consumer_type: issued.consumer_type.clone(),
        hash: crate::token_hash::token_hash(&uid, issued.token.expose()),
    });
    // The previous token is dead from this moment (docs/dhan-api.md §1, §2): write the new one
    // before anything else can fail.
    output::write(secrets, account, &issued.token, &facts, method.as_str()).await?;
    ctx.metrics
        .refresh_duration
        .get_or_create(&crate::metrics::MethodLabels {
            method: method.as_str().into(),
        })
        .observe(started.elapsed().as_secs_f64());
    info!(account = %account.name_any(), namespace = %account.namespace().unwrap_or_default(),
        method = method.as_str(), reason = purpose.reason.as_str(), expires_at = %facts.expires_at, "obtained a new token");
    publish(
        ctx,
        account,
        EventType::Normal,
        "Refreshed",
        format!(
            "Obtained a new token with {} ({}); valid until {}",
            method.as_str(),
            purpose.describe,
            output::rfc3339(facts.expires_at)
        ),
    )
    .await;
    // Dhan just issued it: count that as a probe, so the first one is due only after
    // `validateEvery` and the Dhan rate limit goes to accounts that need it.
    ctx.remember_probe(&uid, &facts.hash, now, ProbeVerdict::Alive);
    if let Some(ip) = static_ip(ctx, &issued.token).await {
        outcome.static_ip = Some(ip);
    }
    // A refresh request is honoured by a new token or by a permanent failure (held until the
    // inputs change). A transient failure leaves it pending, so it is retried with backoff
    // rather than silently dropped.
    let request_handled = purpose
        .refresh_request
        .clone()
        .or(outcome.memory.refresh_request_handled.clone());
    outcome.probe = Some((now, ProbeVerdict::Alive));
    outcome.token = Some((issued.token, facts));
    outcome.method = Some(method.as_str().into());
    outcome.memory = Memory {
        last_mint: Some(now),
        failed_attempts: 0,
        last_failure: None,
        permanent_failure_inputs: None,
        refresh_request_handled: request_handled,
    };
    outcome.last_failure_reason = None;
    outcome.failure_message = None;
    Ok(())
}

/// A failed attempt: how long to hold off, reported in events and (by the caller) status.
async fn record_failure(
    ctx: &Context,
    account: &DhanAccount,
    credentials: &Credentials,
    outcome: &mut Outcome,
    failures: &[(Method, MethodFailure)],
    purpose: &Purpose,
) {
    let now = Utc::now();
    let summary = summarise(failures, now);
    // Any token Dhan handed out is the only live one now, even if others failed.
    let dead_renew = failures
        .iter()
        .any(|(_, f)| matches!(f, MethodFailure::Dhan(e) if e.kind() == ErrorKind::TokenDead));
    if dead_renew
        && outcome
            .token
            .as_ref()
            .is_some_and(|(_, f)| f.is_web_token())
    {
        outcome.probe = Some((now, ProbeVerdict::Dead));
    }
    match summary.class {
        AttemptFailure::Permanent => {
            outcome.memory.refresh_request_handled = purpose
                .refresh_request
                .clone()
                .or(outcome.memory.refresh_request_handled.clone());
            outcome.memory.permanent_failure_inputs = Some(credentials.fingerprint.clone());
            outcome.memory.failed_attempts = 0;
            outcome.memory.last_failure = Some((now, FailureClass::Transient));
        }
        AttemptFailure::RetryAt(_) => {
            outcome.memory.failed_attempts += 1;
            // Persisted as the reason; `status::memory_from` maps it back.
            let class = if summary.reason == "ConsentLimitExceeded" {
                FailureClass::ConsentLimit
            } else {
                FailureClass::Throttled
            };
            outcome.memory.last_failure = Some((now, class));
        }
        AttemptFailure::Transient => {
            outcome.memory.failed_attempts += 1;
            outcome.memory.last_failure = Some((now, FailureClass::Transient));
        }
    }
    warn!(account = %account.name_any(), namespace = %account.namespace().unwrap_or_default(),
        reason = summary.reason, "refresh failed: {}", summary.message);
    publish(
        ctx,
        account,
        EventType::Warning,
        "RefreshFailed",
        format!(
            "{} ({}): {}",
            purpose.describe, summary.reason, summary.message
        ),
    )
    .await;
    outcome.last_failure_reason = Some(summary.reason.into());
    outcome.failure_message = Some(summary.message);
}

/// The account's registered static IPs (docs/dhan-api.md §7), read once per refresh. Orders from
/// other IPs fail, so this is worth showing; it is never changed from here.
async fn static_ip(ctx: &Context, token: &AccessToken) -> Option<StaticIpStatus> {
    ctx.limiter.acquire().await;
    let result = ctx.dhan.ip_info(token).await;
    ctx.metrics
        .dhan_call(Endpoint::IpInfo, outcome_label(&result));
    let info = result.ok()?;
    Some(StaticIpStatus {
        primary_ip: info.primary_ip.filter(|ip| !ip.is_empty()),
        secondary_ip: info.secondary_ip.filter(|ip| !ip.is_empty()),
        orders_allowed: info.orders_allowed,
        ip_match_status: info.ip_match_status,
    })
}

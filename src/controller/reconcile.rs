//! One reconcile: gather facts, ask the decision logic what to do, do it, report it.

use super::Context;
use super::conflict::winner_over;
use super::credentials::{CredentialKey, Credentials};
use super::output::{self, Current};
use super::refresh::{Attempt, FailureClass as AttemptFailure, Renewable, summarise};
use super::status::{Report, memory_from};
use crate::crd::{
    DhanAccount, DhanAccountStatus, Phase, REFRESH_REQUESTED_ANNOTATION, StaticIpStatus,
};
use crate::decision::duration::format_duration;
use crate::decision::policy::Policy;
use crate::decision::{
    Decision, Facts, FailureClass, Memory, ProbeVerdict, TokenFacts, Wait, decide,
};
use crate::dhan::{AccessToken, Endpoint, ErrorKind, outcome_label};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Errors that abort a reconcile; they are retried by the controller. Variant names double
/// as metric labels.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeApi",
        }
    }
}

/// Where a refresh or probe left the account, for status and events.
struct Outcome {
    token: Option<(AccessToken, TokenFacts)>,
    method: Option<String>,
    memory: Memory,
    last_totp_step: Option<u64>,
    last_failure_reason: Option<String>,
    /// The last failure's message, shown until the next success.
    failure_message: Option<String>,
    probe: Option<(DateTime<Utc>, ProbeVerdict)>,
    static_ip: Option<StaticIpStatus>,
}

pub async fn reconcile(account: Arc<DhanAccount>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(account) = current(&ctx, &account).await? else {
        return Ok(Action::await_change());
    };
    let namespace = account.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let old_status = account.status.clone().unwrap_or_default();
    let now = Utc::now();

    let policy = match Policy::from_spec(&account.spec) {
        Ok(policy) => policy,
        Err(error) => {
            let message = error.to_string();
            report_static(&ctx, &account, Phase::Failed, "InvalidSpec", message).await?;
            return Ok(Action::await_change());
        }
    };

    let all_accounts = ctx.store.state();
    if let Some(winner) = winner_over(&account, all_accounts.iter().map(|a| a.as_ref())) {
        let message = format!(
            "client ID {} is already managed by DhanAccount {winner}; only one account may mint \
             for a client ID (a new token invalidates the previous one)",
            policy.client_id
        );
        report_static(&ctx, &account, Phase::Conflict, "Conflict", message).await?;
        // Re-checked periodically so deleting the winner hands over without a spec change.
        return Ok(Action::requeue(Duration::from_secs(30)));
    }

    let (token, method) = match output::read(&secrets, &account).await? {
        Current::Foreign => {
            let message = format!(
                "Secret {:?} exists and is not owned by this DhanAccount; it is left untouched — \
                 delete it or choose another spec.secretName",
                output::secret_name(&account)
            );
            report_static(&ctx, &account, Phase::Failed, "SecretNotOwned", message).await?;
            return Ok(Action::await_change());
        }
        Current::Absent => (None, None),
        Current::Present { token, method } => (token, method),
    };
    let uid = account.uid().unwrap_or_default();
    let credentials = Credentials::load(&secrets, &account.spec, account.meta().generation).await?;
    let web_token = credentials
        .get(CredentialKey::AccessToken)
        .ok()
        .map(|v| AccessToken::from(v.expose().to_string()))
        .and_then(|t| output::token_facts(&uid, &t, None).map(|f| (t, f)));

    let mut outcome = Outcome {
        memory: memory_from(&old_status, token.as_ref().map(|(_, f)| f)),
        probe: ctx.probe_of(&uid, token.as_ref().map(|(_, f)| f.hash.as_str())),
        token,
        method: method.or(old_status.method.clone()),
        last_totp_step: old_status.last_totp_step,
        last_failure_reason: old_status.last_failure_reason.clone(),
        failure_message: old_status.last_failure_message.clone(),
        static_ip: old_status.static_ip.clone(),
    };
    let refresh_request = account
        .annotations()
        .get(REFRESH_REQUESTED_ANNOTATION)
        .cloned();

    if policy.suspend {
        let status = compose(
            &account,
            &outcome,
            &old_status,
            Phase::Suspended,
            "Suspended",
            "suspended: no calls to Dhan; the token Secret is left as it is".into(),
            None,
            now,
        );
        write_status(&ctx, &account, &old_status, status).await?;
        return Ok(Action::await_change());
    }

    let mut decision = Decision::Suspended;
    for _ in 0..4 {
        let facts = Facts {
            now: Utc::now(),
            policy: &policy,
            limits: &ctx.limits,
            token: outcome.token.as_ref().map(|(_, f)| f.clone()),
            web_token: web_token.as_ref().map(|(_, f)| f.clone()),
            probe: outcome.probe,
            memory: &outcome.memory,
            inputs_fingerprint: &credentials.fingerprint,
            refresh_request: refresh_request.as_deref(),
        };
        decision = decide(&facts);
        match &decision {
            Decision::Adopt => {
                let (token, facts) = web_token.clone().expect("adopt only with a web token");
                output::write(&secrets, &account, &token, &facts, "adopted").await?;
                publish(
                    &ctx,
                    &account,
                    EventType::Normal,
                    "TokenAdopted",
                    format!(
                        "Adopted the Dhan Web token from {}; valid until {}",
                        credentials.describe(CredentialKey::AccessToken),
                        output::rfc3339(facts.expires_at)
                    ),
                )
                .await;
                outcome.token = Some((token, facts));
                outcome.method = Some("adopted".into());
                outcome.probe = None;
            }
            Decision::Refresh(reason) => {
                refresh(
                    &ctx,
                    &account,
                    &secrets,
                    &policy,
                    &credentials,
                    web_token.as_ref(),
                    &mut outcome,
                    *reason,
                    refresh_request.clone(),
                )
                .await?;
            }
            Decision::Probe => {
                let (token, facts) = outcome.token.clone().expect("probe only a live token");
                let verdict = probe(&ctx, &token).await;
                let at = Utc::now();
                ctx.remember_probe(&uid, &facts.hash, at, verdict);
                if verdict == ProbeVerdict::Dead
                    && outcome.probe.map(|(_, v)| v) != Some(ProbeVerdict::Dead)
                {
                    publish(
                        &ctx,
                        &account,
                        EventType::Warning,
                        "TokenRejected",
                        "Dhan rejected the current token before its expiry; replacing it".into(),
                    )
                    .await;
                }
                outcome.probe = Some((at, verdict));
            }
            Decision::Suspended | Decision::HoldFailed { .. } | Decision::Wait(_) => break,
        }
    }

    let now = Utc::now();
    let (phase, reason, message, next_refresh, requeue) = assess(&decision, &outcome, now);
    if let Some((_, facts)) = &outcome.token
        && old_status.token_hash.as_deref() != Some(facts.hash.as_str())
        && let Some(targets) = &account.spec.rollout_restart_targets
    {
        // After the Secret and before status: a crash in between repeats this on restart,
        // and the hash check inside makes the repeat a no-op.
        let problems =
            super::rollout::restart_targets(&ctx.client, &namespace, targets, &facts.hash).await;
        if problems.is_empty() {
            publish(
                &ctx,
                &account,
                EventType::Normal,
                "RolloutRestarted",
                format!("Restarted {} workload(s) for the new token", targets.len()),
            )
            .await;
        } else {
            publish(
                &ctx,
                &account,
                EventType::Warning,
                "RolloutRestartFailed",
                problems.join("; "),
            )
            .await;
        }
    }
    let status = compose(
        &account,
        &outcome,
        &old_status,
        phase,
        reason,
        message,
        next_refresh,
        now,
    );
    write_status(&ctx, &account, &old_status, status).await?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// The account as the API server has it now, or `None` once it is gone. The controller hands
/// over its cached copy, which can lag behind this process's own last status write: a
/// reconcile queued during the previous one (say by a Secret event) starts the moment that one
/// returns. Status is the only memory of a failed attempt, so deciding on the older copy would
/// retry at once, ignoring the backoff or the hold on a wrong PIN.
async fn current(ctx: &Context, account: &DhanAccount) -> Result<Option<Arc<DhanAccount>>, Error> {
    let api: Api<DhanAccount> =
        Api::namespaced(ctx.client.clone(), &account.namespace().unwrap_or_default());
    Ok(api.get_opt(&account.name_any()).await?.map(Arc::new))
}

/// Obtains a token with the account's methods and records the result: Secret first, then the
/// caller writes status.
#[allow(clippy::too_many_arguments)]
async fn refresh(
    ctx: &Context,
    account: &DhanAccount,
    secrets: &Api<Secret>,
    policy: &Policy,
    credentials: &Credentials,
    web_token: Option<&(AccessToken, TokenFacts)>,
    outcome: &mut Outcome,
    reason: crate::decision::RefreshReason,
    refresh_request: Option<String>,
) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let renewable = outcome
        .token
        .as_ref()
        .filter(|(_, f)| f.is_web_token() && f.is_live(Utc::now()))
        .or(web_token.filter(|(_, f)| f.is_web_token()))
        .map(|(token, facts)| Renewable { token, facts });
    let attempt = Attempt {
        dhan: &ctx.dhan,
        limiter: &ctx.limiter,
        client_id: &policy.client_id,
        methods: &policy.methods,
        credentials,
        renewable,
        last_totp_step: outcome.last_totp_step,
    }
    .run()
    .await;
    for (endpoint, result) in &attempt.calls {
        ctx.metrics.dhan_call(*endpoint, result);
    }
    outcome.last_totp_step = attempt.last_totp_step;
    // A refresh request is honoured by a new token or by a permanent failure (held until the
    // inputs change). A transient failure leaves it pending, so it is retried with backoff
    // rather than silently dropped.
    let request_handled = refresh_request.or(outcome.memory.refresh_request_handled.clone());
    let now = Utc::now();
    match attempt.outcome {
        Ok((issued, method)) => {
            outcome.memory.refresh_request_handled = request_handled;
            let uid = account.uid().unwrap_or_default();
            let facts =
                output::token_facts(&uid, &issued.token, Some(now)).unwrap_or_else(|| TokenFacts {
                    expires_at: issued.expires_at,
                    issued_at: issued.issued_at.unwrap_or(now),
                    obtained_at: now,
                    consumer_type: issued.consumer_type.clone(),
                    hash: crate::token_hash::token_hash(&uid, issued.token.expose()),
                });
            // The previous token is dead from this moment (dhan-api.md §1, §2): write the new
            // one before anything else can fail.
            output::write(secrets, account, &issued.token, &facts, method.as_str()).await?;
            ctx.metrics
                .refresh_duration
                .get_or_create(&crate::metrics::MethodLabels {
                    method: method.as_str().into(),
                })
                .observe(started.elapsed().as_secs_f64());
            info!(account = %account.name_any(), namespace = %account.namespace().unwrap_or_default(),
                method = method.as_str(), reason = reason.as_str(), expires_at = %facts.expires_at, "obtained a new token");
            publish(
                ctx,
                account,
                EventType::Normal,
                "Refreshed",
                format!(
                    "Obtained a new token with {} ({}); valid until {}",
                    method.as_str(),
                    reason.describe(),
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
            outcome.probe = Some((now, ProbeVerdict::Alive));
            outcome.token = Some((issued.token, facts));
            outcome.method = Some(method.as_str().into());
            outcome.memory = Memory {
                last_mint: Some(now),
                failed_attempts: 0,
                last_failure: None,
                permanent_failure_inputs: None,
                refresh_request_handled: outcome.memory.refresh_request_handled.clone(),
            };
            outcome.last_failure_reason = None;
            outcome.failure_message = None;
        }
        Err(failures) => {
            let summary = summarise(&failures, now);
            // Any token Dhan handed out is the only live one now, even if others failed.
            let dead_renew = failures.iter().any(|(_, f)| {
                matches!(f,
                super::refresh::MethodFailure::Dhan(e) if e.kind() == ErrorKind::TokenDead)
            });
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
                    outcome.memory.refresh_request_handled = request_handled;
                    outcome.memory.permanent_failure_inputs = Some(credentials.fingerprint.clone());
                    outcome.memory.failed_attempts = 0;
                    outcome.memory.last_failure = Some((now, FailureClass::Transient));
                }
                AttemptFailure::RetryAt(_) => {
                    outcome.memory.failed_attempts += 1;
                    outcome.memory.last_failure = Some((now, FailureClass::Throttled));
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
                    reason.describe(),
                    summary.reason,
                    summary.message
                ),
            )
            .await;
            outcome.last_failure_reason = Some(summary.reason.into());
            outcome.failure_message = Some(summary.message);
        }
    }
    Ok(())
}

/// The account's registered static IPs (dhan-api.md §7), read once per refresh. Orders from
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

/// Asks Dhan whether `token` still works (dhan-api.md §4).
async fn probe(ctx: &Context, token: &AccessToken) -> ProbeVerdict {
    ctx.limiter.acquire().await;
    let result = ctx.dhan.profile(token).await;
    let verdict = match &result {
        Ok(_) => ProbeVerdict::Alive,
        Err(e) if e.kind() == ErrorKind::TokenDead => ProbeVerdict::Dead,
        Err(_) => ProbeVerdict::Unknown,
    };
    ctx.metrics
        .dhan_call(Endpoint::Profile, outcome_label(&result));
    verdict
}

type Assessment = (
    Phase,
    &'static str,
    String,
    Option<DateTime<Utc>>,
    Option<Duration>,
);

/// Phase, Ready reason, message, next refresh time and requeue delay for where things stand.
fn assess(decision: &Decision, outcome: &Outcome, now: DateTime<Utc>) -> Assessment {
    let token = outcome.token.as_ref().map(|(_, f)| f);
    let dead = matches!(outcome.probe, Some((_, ProbeVerdict::Dead)));
    let live = token.filter(|t| t.is_live(now) && !dead);
    let validity = match (token, live) {
        (_, Some(t)) => format!(
            "current token valid until {}",
            output::rfc3339(t.expires_at)
        ),
        (Some(_), None) if dead => "Dhan rejected the current token".into(),
        (Some(t), None) => format!("current token expired at {}", output::rfc3339(t.expires_at)),
        (None, _) => "no token yet".into(),
    };
    let until = |t: DateTime<Utc>| {
        (t - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_secs(1))
    };
    match decision {
        Decision::HoldFailed { until: wake } => {
            let why = outcome.failure_message.clone().unwrap_or_else(|| {
                format!(
                    "last refresh failed ({})",
                    outcome.last_failure_reason.as_deref().unwrap_or("unknown")
                )
            });
            let message = format!(
                "{why}; not retrying until the DhanAccount or one of its credential Secrets \
                 changes; {validity}"
            );
            let reason = if live.is_some() {
                "TokenValid"
            } else {
                "RefreshFailed"
            };
            let wake = wake.filter(|t| *t > now).map(until);
            (Phase::Failed, reason, message, None, wake)
        }
        Decision::Wait(Wait {
            until: at,
            next_refresh,
            blocked,
        }) => {
            let (phase, reason, message) = match (blocked, live) {
                (None, Some(_)) => (
                    Phase::Ready,
                    "TokenValid",
                    format!(
                        "{validity}; next refresh at {}",
                        output::rfc3339(*next_refresh)
                    ),
                ),
                (Some(_), _) if outcome.memory.failed_attempts > 0 => {
                    let why = outcome
                        .failure_message
                        .clone()
                        .unwrap_or_else(|| outcome.last_failure_reason.clone().unwrap_or_default());
                    (
                        Phase::Backoff,
                        if live.is_some() {
                            "TokenValid"
                        } else {
                            "RefreshFailed"
                        },
                        format!(
                            "attempt {} failed: {why}; retrying at {} (in {}); {validity}",
                            outcome.memory.failed_attempts,
                            output::rfc3339(*next_refresh),
                            format_duration(until(*next_refresh))
                        ),
                    )
                }
                (Some(reason), Some(_)) => (
                    Phase::Ready,
                    "TokenValid",
                    format!(
                        "{validity}; refresh ({}) held until {} by Dhan's mint limit",
                        reason.describe(),
                        output::rfc3339(*next_refresh)
                    ),
                ),
                (Some(reason), None) => {
                    let phase = if token.is_some() {
                        Phase::Expired
                    } else {
                        Phase::Pending
                    };
                    (
                        phase,
                        "NoValidToken",
                        format!(
                            "{}; {validity}; Dhan's limits allow the next token at {}",
                            reason.describe(),
                            output::rfc3339(*next_refresh)
                        ),
                    )
                }
                (None, None) => (Phase::Expired, "NoValidToken", validity.clone()),
            };
            (
                phase,
                reason,
                message,
                Some(*next_refresh),
                Some(until(*at)),
            )
        }
        // The loop stopped on a refresh failure or after its iteration budget.
        Decision::Refresh(_) | Decision::Probe | Decision::Adopt | Decision::Suspended => (
            Phase::Refreshing,
            if live.is_some() {
                "TokenValid"
            } else {
                "NoValidToken"
            },
            format!("refresh in progress; {validity}"),
            None,
            Some(Duration::from_secs(5)),
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn compose(
    account: &DhanAccount,
    outcome: &Outcome,
    old: &DhanAccountStatus,
    phase: Phase,
    reason: &str,
    message: String,
    next_refresh: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> DhanAccountStatus {
    Report {
        phase,
        message,
        reason,
        token: outcome.token.as_ref().map(|(_, f)| f),
        token_dead: matches!(outcome.probe, Some((_, ProbeVerdict::Dead))),
        method: outcome.token.as_ref().and(outcome.method.clone()),
        memory: &outcome.memory,
        last_failure_reason: outcome.last_failure_reason.clone(),
        last_failure_message: outcome.failure_message.clone(),
        last_totp_step: outcome.last_totp_step,
        next_refresh,
        static_ip: outcome.static_ip.clone(),
        generation: account.meta().generation,
        now,
    }
    .compose(old)
}

/// Reports a state that needs no Dhan call (bad spec, conflict, foreign Secret), keeping the
/// token facts already in status. Emits a warning event when the message changes.
async fn report_static(
    ctx: &Context,
    account: &DhanAccount,
    phase: Phase,
    reason: &'static str,
    message: String,
) -> Result<(), Error> {
    let old = account.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.phase = Some(phase);
    status.message = Some(message.clone());
    status.next_refresh_time = None;
    status.observed_generation = account.meta().generation;
    let live = old.expires_at.is_some_and(|t| t > Utc::now());
    status.conditions = vec![super::status::ready_condition(
        &old,
        live && phase != Phase::Conflict,
        reason,
        &message,
        account.meta().generation,
        Utc::now(),
    )];
    if old.message.as_deref() != Some(message.as_str()) || old.phase != Some(phase) {
        publish(ctx, account, EventType::Warning, reason, message).await;
    }
    write_status(ctx, account, &old, status).await
}

/// Server-side applies the status, unless it equals the current one.
async fn write_status(
    ctx: &Context,
    account: &DhanAccount,
    old: &DhanAccountStatus,
    status: DhanAccountStatus,
) -> Result<(), Error> {
    if &status == old {
        return Ok(());
    }
    let api: Api<DhanAccount> =
        Api::namespaced(ctx.client.clone(), &account.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "dhan-operator.dev/v1alpha1",
        "kind": "DhanAccount",
        "status": status,
    });
    api.patch_status(
        &account.name_any(),
        &PatchParams::apply(output::FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}

async fn publish(
    ctx: &Context,
    account: &DhanAccount,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &account.object_ref(&())).await {
        warn!(%error, "could not publish event");
    }
}

/// Requeue after an error from the Kubernetes API.
pub fn error_policy(_account: Arc<DhanAccount>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(%error, "reconcile failed");
    ctx.metrics
        .reconcile_errors
        .get_or_create(&crate::metrics::ReasonLabels {
            reason: error.metric_label().into(),
        })
        .inc();
    Action::requeue(Duration::from_secs(15))
}

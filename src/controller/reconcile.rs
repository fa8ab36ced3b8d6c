//! One reconcile: gather facts, ask the decision logic what to do, do it, report it.

use super::Context;
use super::conflict::winner_over;
use super::credentials::{CredentialKey, Credentials};
use super::obtain::{Outcome, Purpose, abandon_login, follow_login, refresh};
use super::output::{self, Current};
use super::status::{Report, memory_from};
use crate::crd::{DhanAccount, DhanAccountStatus, Phase, REFRESH_REQUESTED_ANNOTATION};
use crate::decision::duration::format_duration;
use crate::decision::policy::Policy;
use crate::decision::{Decision, Facts, ProbeVerdict, Wait, decide};
use crate::dhan::{AccessToken, Endpoint, ErrorKind, outcome_label};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

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

pub async fn reconcile(account: Arc<DhanAccount>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(account) = current(&ctx, &account).await? else {
        // Gone: its login Job goes with it (owner reference), and so does its login slot.
        ctx.logins.release(&account.uid().unwrap_or_default());
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
        login: old_status.login.clone(),
        login_queued: None,
        consents: old_status.consents.clone(),
    };
    let refresh_request = account
        .annotations()
        .get(REFRESH_REQUESTED_ANNOTATION)
        .cloned();

    if policy.suspend {
        abandon_login(&ctx, &account, &mut outcome).await;
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

    let login_running = follow_login(&ctx, &account, &secrets, &credentials, &mut outcome).await?;
    let mut decision = Decision::Suspended;
    for _ in 0..4 {
        if login_running || outcome.login.is_some() || outcome.login_queued.is_some() {
            break;
        }
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
                    Purpose::new(*reason, refresh_request.clone()),
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

/// Asks Dhan whether `token` still works (docs/dhan-api.md §4).
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
    let live = outcome.token.as_ref().is_some_and(|(_, t)| {
        t.is_live(now) && !matches!(outcome.probe, Some((_, ProbeVerdict::Dead)))
    });
    let reason = if live { "TokenValid" } else { "NoValidToken" };
    if let Some(login) = &outcome.login {
        // The Job's changes wake the reconciler; the requeue only bounds a missed event.
        let message = format!(
            "browser login running in Job {} since {}; {}",
            login.job_name,
            output::rfc3339(login.started_at),
            validity(outcome, now)
        );
        return (
            Phase::WaitingForLogin,
            reason,
            message,
            None,
            Some(Duration::from_secs(30)),
        );
    }
    if let Some(why) = &outcome.login_queued {
        let message = format!("{why}; {}", validity(outcome, now));
        return (
            Phase::WaitingForLogin,
            reason,
            message,
            None,
            Some(Duration::from_secs(10)),
        );
    }
    assess_decision(decision, outcome, now)
}

/// What the status says of the current token.
fn validity(outcome: &Outcome, now: DateTime<Utc>) -> String {
    let token = outcome.token.as_ref().map(|(_, f)| f);
    let dead = matches!(outcome.probe, Some((_, ProbeVerdict::Dead)));
    match token {
        Some(t) if t.is_live(now) && !dead => {
            format!(
                "current token valid until {}",
                output::rfc3339(t.expires_at)
            )
        }
        Some(_) if dead => "Dhan rejected the current token".into(),
        Some(t) => format!("current token expired at {}", output::rfc3339(t.expires_at)),
        None => "no token yet".into(),
    }
}

fn assess_decision(decision: &Decision, outcome: &Outcome, now: DateTime<Utc>) -> Assessment {
    let token = outcome.token.as_ref().map(|(_, f)| f);
    let dead = matches!(outcome.probe, Some((_, ProbeVerdict::Dead)));
    let live = token.filter(|t| t.is_live(now) && !dead);
    let validity = validity(outcome, now);
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
        login: outcome.login.clone(),
        consents: outcome.consents.clone(),
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

pub(super) async fn publish(
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

//! Applying what a round decided, in this order: the token to the output Secret (the previous
//! token is dead the moment Dhan issues a new one, so nothing may fail before this write), the
//! login Job, restarts of workloads, the status, the events. Nothing here decides: a refused
//! Secret write goes back to the round, which says what it means.

use super::Context;
use super::act::NotLeader;
use super::error::Error;
use super::events::{self, Occurrence};
use super::gather::{Blocked, Gathered};
use super::login;
use super::output;
use super::output::OutputSpec;
use super::pod_sync;
use super::rollout;
use super::status::{self, Report};
use crate::claims::ClaimError;
use crate::crd::{DhanAccount, DhanAccountStatus, PodSyncStatus};
use crate::decision::round::Note;
use crate::decision::{Phase, Round, Stored, assess};
use crate::metrics::MethodLabels;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use std::time::Duration;
use tracing::{info, warn};

/// How long after a refused write of a kept token no reconcile tries it again (the round asks
/// again after `decision::assess::WRITE_RETRY`).
const REFUSED_WRITE_PAUSE: Duration = Duration::from_secs(5);

/// Applies a finished round.
pub async fn apply(
    ctx: &Context,
    account: &DhanAccount,
    facts: Gathered,
) -> Result<Option<Duration>, Error> {
    let Gathered {
        spec,
        mut round,
        moved_from,
        secret_version,
        finished_jobs,
        ..
    } = facts;
    let at = Written {
        version: secret_version,
        moved_from,
    };
    store_token(ctx, account, &spec.output, &mut round, at).await?;
    login_jobs(ctx, account, &mut round, &finished_jobs.done).await;
    let old = account.status.clone().unwrap_or_default();
    let pod_sync = sync_pods(ctx, account, &old, &spec.output.name, &mut round).await;
    restart_workloads(ctx, account, &old, &spec.output.name, &mut round).await;
    remember(ctx, account, &round);

    let now = ctx.clock.now();
    let assessment = assess(&round, now);
    let holder = round
        .token
        .as_ref()
        .filter(|h| h.stored == Stored::Current)
        .map(|_| spec.output.name.as_str())
        .or(old.secret_name.as_deref());
    let report = Report::of(&round, &assessment, holder, account.meta().generation, now);
    let mut status = report.compose(&old);
    if pod_sync.is_some() {
        status.pod_sync = pod_sync;
    }
    write_status(ctx, account, &old, status).await?;
    // An account that keeps trying (Backoff) is obtaining a token: were it to let go between
    // attempts, an account of another install would take the claim and call Dhan in turn, each
    // call re-arming Dhan's 2-minute lock for the other (§9), and neither would ever mint.
    let obtaining = assessment.phase == Phase::Backoff;
    let token_obtained = round.token_facts().map(|t| t.obtained_at);
    let keep = round.keeps_claim(now) || obtaining;
    if let Some(note) = settle_claim(ctx, account, keep, token_obtained).await {
        round.notes.push(note);
    }
    for note in &round.notes {
        log_note(account, note);
        publish(ctx, account, note).await;
    }
    // A login Job still running after its token was taken is removed by the next reconcile:
    // its completion wakes the account, and this bounds a Chromium that never exits.
    let reap = round
        .job_still_running
        .then_some(login::REAP_AFTER + Duration::from_secs(1));
    let reap_due = finished_jobs
        .reap_at
        .map(|at| (at - now).to_std().unwrap_or_default() + Duration::from_secs(1));
    // What keeps the claim ends with the token, or with the life of whatever a lost mint made.
    let lost_mint_ends = round
        .memory
        .mint_unconfirmed
        .map(|at| at + crate::dhan::TOKEN_LIFETIME);
    let token_dies = round
        .token
        .as_ref()
        .map(|h| h.token.facts.expires_at)
        .max(lost_mint_ends);
    Ok([
        assessment.requeue,
        reap,
        reap_due,
        claim_ends(ctx, token_dies, now),
    ]
    .into_iter()
    .flatten()
    .min())
}

/// Where the token goes: the output Secret's version as read, the Secret it moves from.
struct Written {
    version: Option<String>,
    moved_from: Option<(String, String)>,
}

/// The token into the output Secret, first. A refused write keeps the token in memory (it is
/// the only live one) and goes back to the round, which reports it and retries the write. The
/// write is made on the Secret as read, and by the leader only: a token written since (by a new
/// leader, say) is never replaced with this one.
async fn store_token(
    ctx: &Context,
    account: &DhanAccount,
    spec: &OutputSpec,
    round: &mut Round,
    at: Written,
) -> Result<(), NotLeader> {
    let moved_from = at.moved_from;
    let Some(held) = round.token_to_store().cloned() else {
        return Ok(());
    };
    let uid = account.uid().unwrap_or_default();
    // One attempt per retry: a reconcile woken right after a refusal (by its own status write,
    // an event) does not try again at once, nor count another refusal.
    let now = ctx.clock.now();
    let refused_lately = ctx.memos.last_refused_write(&uid).is_some_and(|at| {
        now < at + chrono::Duration::from_std(REFUSED_WRITE_PAUSE).unwrap_or_default()
    });
    if matches!(held.stored, Stored::Unwritten { refusals: 1.., .. }) && refused_lately {
        return Ok(());
    }
    if let Some(leadership) = &ctx.leadership
        && !leadership.holds_for(Duration::ZERO).await
    {
        return Err(NotLeader);
    }
    let namespace = account.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret = output::secret_for(
        account,
        spec,
        &held.token,
        held.method.as_deref(),
        round.memory.refresh_request_handled.as_deref(),
    );
    let result = output::write(&secrets, &secret, at.version.as_deref()).await;
    match &result {
        Ok(version) => {
            ctx.own_writes
                .wrote(&namespace, &spec.name, version.clone());
            ctx.memos.written_token(&uid, &held.token.facts.hash);
            if let Some((name, from_uid)) = &moved_from {
                let removed = output::delete_moved(&secrets, name, from_uid).await;
                round.notes.push(Note {
                    warning: removed.is_err(),
                    reason: "TokenMoved",
                    message: match removed {
                        Ok(()) => format!(
                            "Moved the token from Secret {name:?} to {:?} without a new mint",
                            spec.name
                        ),
                        Err(e) => format!(
                            "Moved the token to Secret {:?} without a new mint; the old Secret \
                             {name:?} could not be removed: {}",
                            spec.name,
                            describe(&e)
                        ),
                    },
                });
            }
        }
        Err(error) => {
            ctx.memos.refused_write(&uid, now);
            warn!(account = %account.name_any(), namespace, %error,
            "the output Secret write was refused; the token is kept")
        }
    }
    round.stored(result.map(|_| ()).map_err(|e| describe(&e)));
    if let Some(held) = round
        .token
        .as_ref()
        .filter(|h| matches!(h.stored, Stored::Unwritten { .. }))
    {
        ctx.memos.keep_unwritten(&uid, held);
    }
    Ok(())
}

/// Deletes finished login Jobs, creates a new one, frees the slot of a login that ended.
async fn login_jobs(ctx: &Context, account: &DhanAccount, round: &mut Round, finished: &[String]) {
    let namespace = account.namespace().unwrap_or_default();
    for job in round.job_to_delete.iter().chain(finished) {
        login::delete_job(ctx, &namespace, job).await;
    }
    if let Some(plan) = &round.job_to_create {
        let reason = round
            .memory
            .login
            .as_ref()
            .map(|l| l.reason)
            .expect("a login record goes with a Job to create");
        if let Err(error) = login::create_job(ctx, account, plan, reason).await {
            let message = format!(
                "could not create the login Job {}: {}",
                plan.job_name,
                describe(&error)
            );
            round.notes.push(Note {
                warning: true,
                reason: "LoginJobFailed",
                message,
            });
        }
    }
    if round.login_ended && round.job_to_create.is_none() {
        ctx.logins.release(&account.uid().unwrap_or_default());
    }
}

/// Tells the running Pods that mount the output Secret and opted in to sync, after a real token
/// change: first of all after the Secret, as every second until their kubelets rewrite the
/// volume is a second their calls fail with a dead token. A crash before the status write
/// repeats it on restart; Pods told of this token already are not written again.
async fn sync_pods(
    ctx: &Context,
    account: &DhanAccount,
    old: &DhanAccountStatus,
    secret: &str,
    round: &mut Round,
) -> Option<PodSyncStatus> {
    if !ctx.sync_pods {
        return None;
    }
    let held = round
        .token
        .as_ref()
        .filter(|h| h.stored == Stored::Current)?;
    let facts = &held.token.facts;
    if old.token_hash.as_deref() == Some(facts.hash.as_str()) {
        return None;
    }
    let namespace = account.namespace().unwrap_or_default();
    let name = account.name_any();
    let synced = pod_sync::sync_pods(&ctx.client, &namespace, &name, secret, &facts.hash).await;
    let now = ctx.clock.now();
    if !synced.problems.is_empty() {
        round.notes.push(Note {
            warning: true,
            reason: "PodSyncFailed",
            message: format!(
                "{} Pod(s) told to sync to the new token; not told: {}",
                synced.pods,
                synced.problems.join("; ")
            ),
        });
    }
    if synced.pods == 0 && synced.problems.is_empty() {
        return None;
    }
    let after_mint = (now - facts.obtained_at).num_milliseconds().max(0);
    Some(PodSyncStatus {
        token_hash: facts.hash.clone(),
        pods: synced.pods,
        problems: u32::try_from(synced.problems.len()).unwrap_or(u32::MAX),
        synced_at: now,
        millis_after_mint: u64::try_from(after_mint).unwrap_or_default(),
    })
}

/// Restarts the rollout targets after a real token change. After the Secret and before
/// status: a crash in between repeats this on restart, and the hash check on each workload
/// makes the repeat a no-op.
async fn restart_workloads(
    ctx: &Context,
    account: &DhanAccount,
    old: &DhanAccountStatus,
    secret: &str,
    round: &mut Round,
) {
    let Some(held) = round.token.as_ref().filter(|h| h.stored == Stored::Current) else {
        return;
    };
    let Some(targets) = account
        .spec
        .rollout_restart_targets
        .as_ref()
        .filter(|t| !t.is_empty())
    else {
        return;
    };
    let hash = &held.token.facts.hash;
    if old.token_hash.as_deref() == Some(hash.as_str()) {
        return;
    }
    if !ctx.rollouts {
        round.notes.push(Note {
            warning: true,
            reason: "RolloutRestartsOff",
            message: format!(
                "rolloutRestartTargets not restarted: this operator does not restart workloads \
                 (--rollout-restarts is off); the new token is in Secret {secret:?}"
            ),
        });
        return;
    }
    let namespace = account.namespace().unwrap_or_default();
    let problems =
        rollout::restart_targets(&ctx.client, &namespace, &account.name_any(), targets, hash).await;
    round.notes.push(if problems.is_empty() {
        Note {
            warning: false,
            reason: "RolloutRestarted",
            message: format!("Restarted {} workload(s) for the new token", targets.len()),
        }
    } else {
        Note {
            warning: true,
            reason: "RolloutRestartFailed",
            message: problems.join("; "),
        }
    });
}

/// What this process keeps beyond the status: the probe, the refresh duration.
fn remember(ctx: &Context, account: &DhanAccount, round: &Round) {
    if let Some(held) = &round.token
        && let Some((at, verdict)) = round.probe
    {
        let uid = account.uid().unwrap_or_default();
        ctx.memos
            .remember_probe(&uid, &held.token.facts.hash, at, verdict);
    }
    if let Some(refreshed) = &round.refreshed {
        let seconds = (ctx.clock.now() - refreshed.began)
            .as_seconds_f64()
            .max(0.0);
        ctx.metrics
            .refresh_duration
            .get_or_create(&MethodLabels {
                method: refreshed.method.as_str().into(),
            })
            .observe(seconds);
    }
}

/// Applies a blocked account: any login in progress is abandoned (its Job deleted, its slot
/// freed), and the status says why nothing happens.
pub async fn blocked(
    ctx: &Context,
    account: &DhanAccount,
    why: Blocked,
) -> Result<Option<Duration>, kube::Error> {
    blocked_knowing(ctx, account, why, false).await
}

/// Applies a round stopped before its mint by the client-ID claim (taken by another account, or
/// unavailable while this process does not act for its install yet). What the round learned of
/// the token is kept: a token Dhan rejected is not reported valid meanwhile, nor probed afresh.
pub async fn unclaimed(
    ctx: &Context,
    account: &DhanAccount,
    why: Blocked,
    round: &Round,
) -> Result<Option<Duration>, kube::Error> {
    remember(ctx, account, round);
    blocked_knowing(ctx, account, why, round.token_rejected()).await
}

async fn blocked_knowing(
    ctx: &Context,
    account: &DhanAccount,
    why: Blocked,
    token_rejected: bool,
) -> Result<Option<Duration>, kube::Error> {
    let old = account.status.clone().unwrap_or_default();
    let uid = account.uid().unwrap_or_default();
    let mut memory = status::memory_from(&old, None, ctx.clock.now());
    if let Some(login) = memory.login.take() {
        login::delete_job(
            ctx,
            &account.namespace().unwrap_or_default(),
            &login.job_name,
        )
        .await;
        ctx.logins.release(&uid);
    }
    let now = ctx.clock.now();
    // A token of the client the account named before an edit keeps nothing of this one's.
    let ours = old.describes_client(&account.spec.client_id);
    let live = old.expires_at.is_some_and(|t| t > now) && ours;
    // The loser of a conflict gives its claim up (the winner mints, which kills its token);
    // otherwise a blocked account keeps it while its token lives, and the clock-skew margin
    // after, as an account that is not blocked does (`Round::keeps_claim`).
    let skew = chrono::Duration::from_std(crate::leader::SKEW_MARGIN).unwrap_or_default();
    let keep =
        why.phase != Phase::Conflict && ours && old.expires_at.is_some_and(|t| t + skew > now);
    // Dhan's tokens live 24 h from their mint (docs/dhan-api.md §1).
    let obtained = old.expires_at.map(|t| t - chrono::Duration::hours(24));
    let lost = settle_claim(ctx, account, keep, obtained).await;
    let claim_ends = claim_ends(ctx, old.expires_at.filter(|_| keep), now);
    let assessment = crate::decision::assess::blocked(
        why.phase,
        why.reason,
        why.message,
        live && !token_rejected,
        [why.requeue, claim_ends].into_iter().flatten().min(),
    );
    let status = status::blocked(&old, &memory, &assessment, account.meta().generation, now);
    if old.message.as_deref() != Some(assessment.message.as_str())
        || old.phase != Some(assessment.phase)
    {
        let note = Note {
            warning: true,
            reason: why.reason,
            message: assessment.message.clone(),
        };
        log_note(account, &note);
        publish(ctx, account, &note).await;
    }
    write_status(ctx, account, &old, status).await?;
    if let Some(note) = lost {
        log_note(account, &note);
        publish(ctx, account, &note).await;
    }
    Ok(assessment.requeue)
}

/// When a claim kept for a token that dies at `token_dies` is to be given up (the clock-skew
/// margin after, see `Round::keeps_claim`): a reconcile then lets it go, else a suspended (or
/// blocked) account would hold its client ID for ever and keep another install's account from
/// minting (found by the simulation, seed 2 of 2 days).
fn claim_ends(
    ctx: &Context,
    token_dies: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<Duration> {
    ctx.claims.as_ref()?;
    // The claim is kept for the skew margin past the token's death (`Round::keeps_claim`): the
    // next look is due at the margin's end, even when the token is already past its expiry
    // (a look that came early by a fast clock: the simulation, seed 2264).
    let skew = chrono::Duration::from_std(crate::leader::SKEW_MARGIN).ok()?;
    let left = (token_dies? + skew - now).to_std().ok()?;
    Some(left + Duration::from_secs(1))
}

/// Keeps the account's client-ID claim while it has something another minter would destroy (a
/// live token, a login under way, a mint whose answer was lost) — taking it again after a
/// restart, an upgrade or an adoption — and gives it up otherwise. A claim another install took
/// while this one was away is reported: that install's next mint kills this account's token.
async fn settle_claim(
    ctx: &Context,
    account: &DhanAccount,
    keep: bool,
    token_obtained: Option<DateTime<Utc>>,
) -> Option<Note> {
    let claims = ctx.claims.as_ref()?;
    let uid = account.uid().unwrap_or_default();
    if !keep {
        claims.release(&uid).await;
        return None;
    }
    match claims
        .ensure(&uid, account.spec.client_id.trim(), token_obtained)
        .await
    {
        Ok(()) => None,
        Err(ClaimError::Taken) => Some(Note {
            warning: true,
            reason: "ClaimLost",
            message: "another dhan-operator install holds this client ID's claim (taken while \
                      this install was away): its next token will replace this account's; \
                      only one account may mint for a client ID"
                .into(),
        }),
        Err(error) => {
            // Taken again by the next reconcile; nothing mints without it meanwhile.
            warn!(account = %account.name_any(), %error, "could not confirm the client-ID claim");
            None
        }
    }
}

/// A Kubernetes API error in words, without the request (which could carry a token).
fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(e) => format!("{} ({} {})", e.message, e.code, e.reason),
        other => other.to_string(),
    }
}

/// Server-side applies the status, unless it equals the current one.
async fn write_status(
    ctx: &Context,
    account: &DhanAccount,
    old: &DhanAccountStatus,
    mut status: DhanAccountStatus,
) -> Result<(), kube::Error> {
    // What the spec says of the API key's life, whichever way the status was made.
    let now = ctx.clock.now();
    let generation = account.meta().generation;
    status
        .conditions
        .retain(|c| c.type_ != status::API_KEY_CONDITION);
    let key = status::api_key_condition(old, account.spec.api_key_expires, generation, now);
    if let Some(condition) = key {
        let before = old
            .conditions
            .iter()
            .find(|c| c.type_ == status::API_KEY_CONDITION)
            .map(|c| c.reason.as_str());
        if condition.reason != "Valid" && before != Some(condition.reason.as_str()) {
            let note = Note {
                warning: true,
                reason: if condition.reason == "Expired" {
                    "APIKeyExpired"
                } else {
                    "APIKeyExpiresSoon"
                },
                message: condition.message.clone(),
            };
            log_note(account, &note);
            publish(ctx, account, &note).await;
        }
        status.conditions.push(condition);
    }
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
    let written = api
        .patch_status(
            &account.name_any(),
            &PatchParams::apply(output::FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    ctx.memos.remember_status_write(
        &account.uid().unwrap_or_default(),
        written.resource_version(),
    );
    Ok(())
}

fn log_note(account: &DhanAccount, note: &Note) {
    let name = account.name_any();
    let namespace = account.namespace().unwrap_or_default();
    if note.warning {
        warn!(account = %name, %namespace, reason = note.reason, "{}", note.message);
    } else {
        info!(account = %name, %namespace, reason = note.reason, "{}", note.message);
    }
}

async fn publish(ctx: &Context, account: &DhanAccount, note: &Note) {
    let what = Occurrence {
        warning: note.warning,
        reason: note.reason,
        action: "Reconcile",
        message: &note.message,
    };
    events::publish(ctx, &account.object_ref(&()), what).await;
}

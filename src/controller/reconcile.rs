//! One reconcile: gather the facts, let the round decide step by step (performing its Dhan
//! calls), then apply what it decided.

use super::Context;
use super::act::{self, Refused};
use super::apply;
pub use super::error::Error;
use super::gather::{self, Blocked, CONFLICT_FALLBACK, Facts};
use crate::claims::ClaimError;
use crate::crd::DhanAccount;
use crate::decision::{Phase, Step};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// A round takes at most this many steps (a probe, a few methods, a static-IP read).
const MAX_STEPS: usize = 8;

/// How soon an account whose claim could not be checked (the API server, this install's own
/// heartbeat) looks again.
const CLAIM_RECHECK: Duration = Duration::from_secs(30);

/// A reconcile is cut off after this long, so that no account's state (a clock gone wrong, an
/// API call that hangs) can hold a worker: the longest sound one waits at most 90 s for a TOTP
/// step, then for the rate limit, and makes bounded claim, Dhan and Kubernetes calls. Cutting
/// one off is as safe as a crash: a mint in flight is recorded on the claim before the call
/// (probed at the next round), and a token obtained is kept in memory as soon as it arrives.
/// The chart's termination grace period is longer, so a rolling upgrade lets one finish.
pub const RECONCILE_DEADLINE: Duration = Duration::from_secs(150);

pub async fn reconcile(account: Arc<DhanAccount>, ctx: Arc<Context>) -> Result<Action, Error> {
    let requeue = reconcile_bounded(account, ctx).await?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// [`reconcile_once`] within [`RECONCILE_DEADLINE`].
pub async fn reconcile_bounded(
    account: Arc<DhanAccount>,
    ctx: Arc<Context>,
) -> Result<Option<Duration>, Error> {
    tokio::time::timeout(RECONCILE_DEADLINE, reconcile_once(account, ctx))
        .await
        .map_err(|_| Error::Deadline(RECONCILE_DEADLINE))?
}

/// One reconcile; returns when to run again without an event.
pub async fn reconcile_once(
    account: Arc<DhanAccount>,
    ctx: Arc<Context>,
) -> Result<Option<Duration>, Error> {
    let Some(account) = current(&ctx, account).await? else {
        return Ok(None);
    };
    let gathered = match gather::gather(&ctx, &account).await? {
        Facts::Blocked(why) => return Ok(apply::blocked(&ctx, &account, why).await?),
        Facts::Gathered(gathered) => gathered,
    };
    let mut gathered = *gathered;
    if let (Some(claims), Some(answer)) = (&ctx.claims, &gathered.login_answer) {
        claims
            .answered(&account.uid().unwrap_or_default(), answer)
            .await;
    }
    for _ in 0..MAX_STEPS {
        let step = gathered.round.next(ctx.clock.now());
        if step == Step::Finish {
            break;
        }
        let outcome = match act::perform(&ctx, &account, &gathered, &step).await {
            Ok(outcome) => outcome,
            Err(Refused::NotLeader(e)) => return Err(e.into()),
            // Before any mint of this round: a token obtained earlier in it (none is, as the
            // claim is secured before the first mint) would still be kept in memory.
            Err(Refused::Claim(e)) => {
                let why = unclaimed(&e);
                return Ok(apply::unclaimed(&ctx, &account, why, &gathered.round).await?);
            }
        };
        gathered.round.absorb(outcome, ctx.clock.now());
    }
    apply::apply(&ctx, &account, gathered).await
}

/// Why an account that may not claim its client ID does nothing. The message names neither the
/// holder's namespace nor its name: it may belong to another tenant.
fn unclaimed(error: &ClaimError) -> Blocked {
    match error {
        ClaimError::Taken => Blocked {
            phase: Phase::Conflict,
            reason: "Conflict",
            message: "the client ID is claimed by another DhanAccount (in another namespace, or \
                      managed by another dhan-operator install); only one account may mint for a \
                      client ID, as a new token invalidates the previous one. The claim passes on \
                      when that account is deleted or no longer holds a token"
                .into(),
            // A change of the claim wakes it (`watch_claims`); this bounds a missed one.
            requeue: Some(CONFLICT_FALLBACK),
        },
        ClaimError::Unavailable { .. } | ClaimError::Refused(_) => Blocked {
            phase: Phase::Backoff,
            reason: "ClaimUnavailable",
            message: format!("not minting: {error}"),
            requeue: Some(CLAIM_RECHECK),
        },
    }
}

/// The account to reconcile, or `None` once it is gone. The controller hands over its cached
/// copy, which can lag behind this process's own last status write: a reconcile queued during
/// the previous one (say by a Secret event) starts the moment that one returns. Status is the
/// memory of a failed attempt, so deciding on the older copy would retry at once, ignoring
/// the backoff or the hold on a wrong PIN. The cache is used when it already shows that write.
async fn current(
    ctx: &Context,
    cached: Arc<DhanAccount>,
) -> Result<Option<Arc<DhanAccount>>, kube::Error> {
    let uid = cached.uid().unwrap_or_default();
    let last_write = ctx.memos.last_status_write(&uid);
    if last_write.is_none() || last_write == cached.resource_version() {
        return Ok(Some(cached));
    }
    let api: Api<DhanAccount> =
        Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
    let fresh = api.get_opt(&cached.name_any()).await?;
    if let Some(fresh) = &fresh {
        ctx.memos
            .remember_status_write(&uid, fresh.resource_version());
    } else {
        // Gone: its login Job goes with it (owner reference), and so does its login slot.
        ctx.memos.forget(&uid);
        ctx.logins.release(&uid);
    }
    Ok(fresh.map(Arc::new))
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

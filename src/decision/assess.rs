//! Where an account stands after a reconcile: its phase, the Ready condition, a message a
//! person can act on, the next refresh time and when to look again.

use super::decide::{Block, Decision, Wait};
use super::duration::format_duration;
use super::round::{LoginSeen, Round, Stored, rfc3339};
use super::token::ProbeVerdict;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Lifecycle phase of a DhanAccount.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    Pending,
    Refreshing,
    WaitingForLogin,
    Ready,
    Backoff,
    Expired,
    Failed,
    Conflict,
    Suspended,
}

impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::Pending,
        Phase::Refreshing,
        Phase::WaitingForLogin,
        Phase::Ready,
        Phase::Backoff,
        Phase::Expired,
        Phase::Failed,
        Phase::Conflict,
        Phase::Suspended,
    ];
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// What the status says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    pub phase: Phase,
    /// Whether a valid token is in the output Secret (the Ready condition).
    pub ready: bool,
    /// The Ready condition's reason: `TokenValid`, or why there is no valid token.
    pub reason: String,
    pub message: String,
    pub next_refresh: Option<DateTime<Utc>>,
    /// When to reconcile again without an event; `None` waits for a change.
    pub requeue: Option<Duration>,
}

/// Secret-write retries: 5 s, 10 s, 20 s … capped at 5 minutes.
fn write_retry(refusals: u32) -> Duration {
    let exponent = refusals.saturating_sub(1).min(10);
    Duration::from_secs(5)
        .saturating_mul(1 << exponent)
        .min(Duration::from_secs(300))
}

/// A state that needs no Dhan call: an invalid spec, a conflict, a Secret owned by someone
/// else. Keeps what is known of the token in the Secret.
pub fn blocked(
    phase: Phase,
    kind: &str,
    message: String,
    token_live: bool,
    requeue: Option<Duration>,
) -> Assessment {
    Assessment {
        phase,
        ready: token_live && phase != Phase::Conflict,
        reason: kind.into(),
        message,
        next_refresh: None,
        requeue,
    }
}

/// Where a round left the account.
pub fn assess(round: &Round, now: DateTime<Utc>) -> Assessment {
    let facts = round.token_facts();
    let dead = matches!(round.probe, Some((_, ProbeVerdict::Dead)));
    let unwritten = round.token.as_ref().and_then(|h| match &h.stored {
        Stored::Unwritten {
            refusals,
            last_error: Some(error),
        } => Some((*refusals, error.clone())),
        _ => None,
    });
    let live = facts.is_some_and(|t| t.is_live(now)) && !dead;
    let ready = live && unwritten.is_none();
    let until = |t: DateTime<Utc>| {
        (t - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_secs(1))
    };
    let validity = match facts {
        Some(t) if live => format!("current token valid until {}", rfc3339(t.expires_at)),
        Some(_) if dead => "Dhan rejected the current token".into(),
        Some(t) => format!("current token expired at {}", rfc3339(t.expires_at)),
        None => "no token yet".into(),
    };
    // The Ready reason: the token's state, or the failure that left none.
    let ready_reason = || match &round.memory.last_failure {
        _ if ready => "TokenValid".to_string(),
        Some(failure) => failure.reason.clone(),
        None => "NoValidToken".to_string(),
    };
    let plain = |live: bool| if live { "TokenValid" } else { "NoValidToken" }.to_string();
    if let Some((refusals, error)) = unwritten {
        let retry = write_retry(refusals);
        return Assessment {
            phase: Phase::Backoff,
            ready: false,
            reason: "SecretWriteRefused".into(),
            message: format!(
                "token obtained but the Secret write was refused ({refusals}×): {error}; the \
                 token is kept in memory and written again in {} — no new token is minted \
                 while it is valid",
                format_duration(retry)
            ),
            next_refresh: None,
            requeue: Some(retry),
        };
    }
    let base = |phase, reason, message| Assessment {
        phase,
        ready,
        reason,
        message,
        next_refresh: None,
        requeue: None,
    };
    if let Some(login) = round
        .memory
        .login
        .as_ref()
        .filter(|_| round.login == LoginSeen::Running)
    {
        // The Job's changes wake the reconciler; the requeue only bounds a missed event.
        return Assessment {
            requeue: Some(Duration::from_secs(30)),
            ..base(
                Phase::WaitingForLogin,
                plain(ready),
                format!(
                    "browser login running in Job {} since {}; {validity}",
                    login.job_name,
                    rfc3339(login.started_at)
                ),
            )
        };
    }
    if let Some(why) = &round.queued {
        return Assessment {
            requeue: Some(Duration::from_secs(10)),
            ..base(
                Phase::WaitingForLogin,
                plain(ready),
                format!("{why}; {validity}"),
            )
        };
    }
    let failure_text = || {
        round
            .memory
            .last_failure
            .as_ref()
            .map(|f| f.message.clone())
            .unwrap_or_else(|| "last refresh failed".into())
    };
    match round.decision.clone().unwrap_or(Decision::Suspended) {
        Decision::Suspended => base(
            Phase::Suspended,
            if ready { "TokenValid" } else { "Suspended" }.to_string(),
            "suspended: no calls to Dhan; the token Secret is left as it is".into(),
        ),
        Decision::HoldFailed { until: wake } => Assessment {
            requeue: wake.filter(|t| *t > now).map(until),
            ..base(
                Phase::Failed,
                ready_reason(),
                format!(
                    "{}; not retrying until the DhanAccount or one of its credential Secrets \
                     changes; {validity}",
                    failure_text()
                ),
            )
        },
        Decision::Wait(Wait {
            until: at,
            next_refresh,
            blocked,
        }) => {
            let (phase, reason, message) = match (blocked, ready) {
                (None, true) => (
                    Phase::Ready,
                    plain(true),
                    format!("{validity}; next refresh at {}", rfc3339(next_refresh)),
                ),
                (Some((reason, Block::MarketHours)), _) => (
                    Phase::Ready,
                    ready_reason(),
                    format!(
                        "{validity}; refresh ({}) held until {}: a new token during market \
                         hours would kill the one running pods hold",
                        reason.describe(),
                        rfc3339(next_refresh)
                    ),
                ),
                (Some(_), _) if round.memory.failed_attempts > 0 => (
                    Phase::Backoff,
                    ready_reason(),
                    format!(
                        "attempt {} failed: {}; retrying at {} (in {}); {validity}",
                        round.memory.failed_attempts,
                        failure_text(),
                        rfc3339(next_refresh),
                        format_duration(until(next_refresh))
                    ),
                ),
                (Some((reason, Block::Limits)), true) => (
                    Phase::Ready,
                    plain(true),
                    format!(
                        "{validity}; refresh ({}) held until {} by Dhan's mint limit",
                        reason.describe(),
                        rfc3339(next_refresh)
                    ),
                ),
                (Some((reason, Block::Limits)), false) => (
                    if facts.is_some() {
                        Phase::Expired
                    } else {
                        Phase::Pending
                    },
                    plain(false),
                    format!(
                        "{}; {validity}; Dhan's limits allow the next token at {}",
                        reason.describe(),
                        rfc3339(next_refresh)
                    ),
                ),
                (None, false) => (Phase::Expired, plain(false), validity.clone()),
            };
            Assessment {
                next_refresh: Some(next_refresh),
                requeue: Some(until(at)),
                ..base(phase, reason, message)
            }
        }
        // The round stopped before a decision settled (its step budget).
        Decision::Refresh(_) | Decision::Probe | Decision::Adopt => Assessment {
            requeue: Some(Duration::from_secs(5)),
            ..base(
                Phase::Refreshing,
                plain(ready),
                format!("refresh in progress; {validity}"),
            )
        },
    }
}

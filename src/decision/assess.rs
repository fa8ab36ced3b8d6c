//! Where an account stands after a reconcile: its phase, the Ready condition, a message a
//! person can act on, the next refresh time and when to look again.

use super::decide::{Block, Decision, Wait};
use super::duration::format_duration;
use super::rfc3339;
use super::round::{LoginSeen, Round, Stored};
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

/// How soon a refused Secret write of a kept token is tried again. Often, and without backoff:
/// a write costs Dhan nothing, and until it lands the trading pods have no live token (Dhan
/// revoked the previous one when it issued this one, docs/dhan-api.md §1).
pub const WRITE_RETRY: Duration = Duration::from_secs(15);

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

/// What the assessment of a round looks at.
struct View<'a> {
    round: &'a Round,
    now: DateTime<Utc>,
    /// A valid token is in the output Secret.
    ready: bool,
    /// "current token valid until …", "no token yet", …
    validity: String,
}

impl View<'_> {
    fn until(&self, t: DateTime<Utc>) -> Duration {
        (t - self.now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_secs(1))
    }

    /// The Ready reason: `TokenValid`, or the failure that left no valid token.
    fn reason(&self) -> String {
        match &self.round.memory.last_failure {
            _ if self.ready => "TokenValid".into(),
            Some(failure) => failure.reason.clone(),
            None => "NoValidToken".into(),
        }
    }

    fn failure_text(&self) -> String {
        self.round
            .memory
            .last_failure
            .as_ref()
            .map_or_else(|| "last refresh failed".into(), |f| f.message.clone())
    }

    fn assessment(&self, phase: Phase, message: String) -> Assessment {
        Assessment {
            phase,
            ready: self.ready,
            reason: self.reason(),
            message,
            next_refresh: None,
            requeue: None,
        }
    }
}

/// Where a round left the account.
pub fn assess(round: &Round, now: DateTime<Utc>) -> Assessment {
    let facts = round.token_facts();
    let dead = round.token_rejected();
    let live = facts.is_some_and(|t| t.is_live(now)) && !dead;
    let validity = match facts {
        Some(t) if live => format!("current token valid until {}", rfc3339(t.expires_at)),
        Some(_) if dead => "Dhan rejected the current token".into(),
        Some(t) => format!("current token expired at {}", rfc3339(t.expires_at)),
        None => "no token yet".into(),
    };
    if let Some(Stored::Unwritten {
        refusals,
        last_error: Some(error),
    }) = round.token.as_ref().map(|h| &h.stored)
    {
        return write_refused(*refusals, error);
    }
    let view = View {
        round,
        now,
        ready: live,
        validity,
    };
    if let Some(login) = round.memory.login.as_ref()
        && round.login == LoginSeen::Running
    {
        // The Job's changes wake the reconciler; the requeue only bounds a missed event.
        let message = format!(
            "browser login running in Job {} since {}; {}",
            login.job_name,
            rfc3339(login.started_at),
            view.validity
        );
        return Assessment {
            requeue: Some(Duration::from_secs(30)),
            ..view.assessment(Phase::WaitingForLogin, message)
        };
    }
    if let Some(why) = &round.queued {
        let message = format!("{why}; {}", view.validity);
        return Assessment {
            requeue: Some(Duration::from_secs(10)),
            ..view.assessment(Phase::WaitingForLogin, message)
        };
    }
    match round.decision.clone().unwrap_or(Decision::Suspended) {
        Decision::Suspended => view.assessment(
            Phase::Suspended,
            "suspended: no calls to Dhan; the token Secret is left as it is".into(),
        ),
        Decision::HoldFailed { until } => Assessment {
            requeue: until.filter(|t| *t > now).map(|t| view.until(t)),
            ..view.assessment(
                Phase::Failed,
                format!(
                    "{}; not retrying until the DhanAccount or one of its credential Secrets \
                     changes; {}",
                    view.failure_text(),
                    view.validity
                ),
            )
        },
        Decision::Wait(wait) => waiting(&view, &wait),
        // The round stopped before a decision settled (its step budget).
        Decision::Refresh(_) | Decision::Probe | Decision::Adopt => Assessment {
            requeue: Some(Duration::from_secs(5)),
            ..view.assessment(
                Phase::Refreshing,
                format!("refresh in progress; {}", view.validity),
            )
        },
    }
}

/// A new token that could not be written: the only live token, kept and written again.
fn write_refused(refusals: u32, error: &str) -> Assessment {
    let retry = WRITE_RETRY;
    Assessment {
        phase: Phase::Backoff,
        ready: false,
        reason: "SecretWriteRefused".into(),
        message: format!(
            "token obtained but the Secret write was refused ({refusals}×): {error}; the token \
             is kept in memory and written again in {} — no new token is minted while it is \
             valid",
            format_duration(retry)
        ),
        next_refresh: None,
        requeue: Some(retry),
    }
}

/// Nothing to do until `wait.until`: ready, held back, or backing off.
fn waiting(view: &View<'_>, wait: &Wait) -> Assessment {
    let next = rfc3339(wait.next_refresh);
    let validity = &view.validity;
    let (phase, message) = match (wait.blocked, view.ready) {
        (None, true) => (Phase::Ready, format!("{validity}; next refresh at {next}")),
        (Some((reason, Block::MarketHours)), _) => (
            Phase::Ready,
            format!(
                "{validity}; refresh ({}) held until {next}: a new token during market hours \
                 would kill the one running pods hold",
                reason.describe()
            ),
        ),
        (Some(_), _) if view.round.memory.failed_attempts > 0 => (
            Phase::Backoff,
            format!(
                "attempt {} failed: {}; retrying at {next} (in {}); {validity}",
                view.round.memory.failed_attempts,
                view.failure_text(),
                format_duration(view.until(wait.next_refresh))
            ),
        ),
        (Some((reason, Block::Limits)), true) => (
            Phase::Ready,
            format!(
                "{validity}; refresh ({}) held until {next} by Dhan's mint limit",
                reason.describe()
            ),
        ),
        (Some((reason, Block::Limits)), false) => (
            if view.round.token.is_some() {
                Phase::Expired
            } else {
                Phase::Pending
            },
            format!(
                "{}; {validity}; Dhan's limits allow the next token at {next}",
                reason.describe()
            ),
        ),
        (None, false) => (Phase::Expired, validity.clone()),
    };
    Assessment {
        next_refresh: Some(wait.next_refresh),
        requeue: Some(view.until(wait.until)),
        ..view.assessment(phase, message)
    }
}

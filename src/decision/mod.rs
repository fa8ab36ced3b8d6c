//! What should happen next for one account: a pure function of facts gathered by the
//! reconciler and an injected clock. No Kubernetes, no I/O.

pub mod backoff;
pub mod calendar;
pub mod duration;
pub mod market;
pub mod policy;
pub mod schedule;

use chrono::{DateTime, Utc};
use policy::Policy;
use schedule::{ProactiveTrigger, next_proactive_refresh};
use std::time::Duration;

/// Dhan answers "Token can be generated once every 2 minutes." (docs/dhan-api.md §1); a margin on
/// top keeps the operator from ever tripping it.
pub const DEFAULT_MIN_MINT_INTERVAL: Duration = Duration::from_secs(125);

/// Operator-wide limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Minimum spacing between two new tokens for one client ID.
    pub min_mint_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_mint_interval: DEFAULT_MIN_MINT_INTERVAL,
        }
    }
}

/// A token the operator holds (or could adopt), as far as the decision needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFacts {
    /// The JWT `exp`.
    pub expires_at: DateTime<Utc>,
    /// The JWT `iat` (or `exp − 24h` when absent).
    pub issued_at: DateTime<Utc>,
    /// When the operator obtained it, by its own clock (`issued_at` when unknown).
    pub obtained_at: DateTime<Utc>,
    /// `tokenConsumerType`: `SELF` for Dhan Web tokens, which alone can be renewed.
    pub consumer_type: Option<String>,
    /// Keyed hash of the token.
    pub hash: String,
}

impl TokenFacts {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at
    }

    pub fn is_web_token(&self) -> bool {
        self.consumer_type.as_deref() == Some("SELF")
    }
}

/// What a liveness probe of the current token found (docs/dhan-api.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeVerdict {
    Alive,
    Dead,
    /// 429, 5xx, timeouts: not a reason to mint.
    Unknown,
}

/// The kind of the last failure, as remembered in status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// Retry with exponential backoff.
    Transient,
    /// Dhan's mint throttle: retry once it allows.
    Throttled,
    /// Dhan's 25 consents per client per day are used up (docs/dhan-api.md §3): retry on the next
    /// IST day.
    ConsentLimit,
}

/// What the operator remembers about past attempts (from status, so it survives restarts).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// When the operator last obtained a new token for this client.
    pub last_mint: Option<DateTime<Utc>>,
    /// Consecutive transient failures since the last success.
    pub failed_attempts: u32,
    pub last_failure: Option<(DateTime<Utc>, FailureClass)>,
    /// Inputs fingerprint a permanent failure was seen with.
    pub permanent_failure_inputs: Option<String>,
    /// Last honoured value of the refresh-requested annotation.
    pub refresh_request_handled: Option<String>,
}

/// Everything the decision depends on.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    pub now: DateTime<Utc>,
    pub policy: &'a Policy,
    pub limits: &'a Limits,
    /// The token in the output Secret.
    pub token: Option<TokenFacts>,
    /// A Dhan Web token the user placed in the credentials.
    pub web_token: Option<TokenFacts>,
    /// The last probe of the current token by this process.
    pub probe: Option<(DateTime<Utc>, ProbeVerdict)>,
    pub memory: &'a Memory,
    /// Changes whenever the spec or a credential Secret changes.
    pub inputs_fingerprint: &'a str,
    /// Current value of the refresh-requested annotation.
    pub refresh_request: Option<&'a str>,
}

/// Why the operator wants a new token. Each shows up in events and messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshReason {
    NoToken,
    Expired,
    ProbedDead,
    Requested,
    Scheduled,
    SafetyNet,
}

impl RefreshReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshReason::NoToken => "NoToken",
            RefreshReason::Expired => "Expired",
            RefreshReason::ProbedDead => "ProbedDead",
            RefreshReason::Requested => "Requested",
            RefreshReason::Scheduled => "Scheduled",
            RefreshReason::SafetyNet => "SafetyNet",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            RefreshReason::NoToken => "no token yet",
            RefreshReason::Expired => "the token expired",
            RefreshReason::ProbedDead => "Dhan rejected the token",
            RefreshReason::Requested => "a refresh was requested",
            RefreshReason::Scheduled => "scheduled refresh",
            RefreshReason::SafetyNet => "the token would expire before the next scheduled refresh",
        }
    }
}

/// The next step for an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// `suspend: true`: no calls to Dhan.
    Suspended,
    /// A permanent failure with unchanged inputs: wait for the user. Wake at `until` (the
    /// current token's expiry) only to report it.
    HoldFailed { until: Option<DateTime<Utc>> },
    /// Copy the newer Dhan Web token from the credentials into the output Secret.
    Adopt,
    /// Obtain a new token now.
    Refresh(RefreshReason),
    /// Ask Dhan whether the current token still works.
    Probe,
    /// Nothing to do before `until`.
    Wait(Wait),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wait {
    /// When to look again.
    pub until: DateTime<Utc>,
    /// When the next refresh (or retry) will happen.
    pub next_refresh: DateTime<Utc>,
    /// A refresh that is due but held back by the throttle or backoff.
    pub blocked: Option<RefreshReason>,
}

fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The earliest time Dhan's limits and the backoff allow a new token.
pub fn earliest_attempt(memory: &Memory, limits: &Limits) -> Option<DateTime<Utc>> {
    let throttle = memory.last_mint.map(|t| after(t, limits.min_mint_interval));
    let backoff = memory.last_failure.map(|(at, class)| {
        let delay = backoff::delay(memory.failed_attempts.max(1));
        match class {
            FailureClass::Transient => after(at, delay),
            FailureClass::Throttled => after(at, limits.min_mint_interval),
            FailureClass::ConsentLimit => crate::dhan::ist::next_ist_midnight(at),
        }
    });
    throttle.max(backoff)
}

/// Decides the next step. Pure: the same facts always give the same decision.
pub fn decide(facts: &Facts<'_>) -> Decision {
    let now = facts.now;
    if facts.policy.suspend {
        return Decision::Suspended;
    }
    let live_token = facts.token.as_ref().filter(|t| t.is_live(now));
    let new_request = facts
        .refresh_request
        .filter(|r| Some(*r) != facts.memory.refresh_request_handled.as_deref());

    if facts.memory.permanent_failure_inputs.as_deref() == Some(facts.inputs_fingerprint)
        && new_request.is_none()
    {
        return Decision::HoldFailed {
            until: live_token.map(|t| t.expires_at),
        };
    }

    if let Some(web) = facts.web_token.as_ref().filter(|w| w.is_live(now)) {
        let newer = match &facts.token {
            None => true,
            Some(current) => web.hash != current.hash && web.issued_at > current.issued_at,
        };
        if newer {
            return Decision::Adopt;
        }
    }

    // refresh.tradingDaysOnly: a token that lapsed with no session before the next scheduled
    // refresh waits for it instead of being minted for nobody.
    if let (None, Some(_), None, Some(at)) = (
        live_token,
        &facts.token,
        new_request,
        facts.policy.schedule.lapse_until(now),
    ) {
        return Decision::Wait(Wait {
            until: at,
            next_refresh: at,
            blocked: None,
        });
    }

    let (due, next_refresh) = match live_token {
        None if facts.token.is_some() => (Some(RefreshReason::Expired), now),
        None => (Some(RefreshReason::NoToken), now),
        Some(token) => {
            let probed_dead = matches!(facts.probe, Some((_, ProbeVerdict::Dead)));
            let (at, trigger) = next_proactive_refresh(
                &facts.policy.schedule,
                facts.policy.renew_before,
                token.obtained_at,
                token.expires_at,
            );
            if probed_dead {
                (Some(RefreshReason::ProbedDead), now)
            } else if new_request.is_some() {
                (Some(RefreshReason::Requested), now)
            } else if at <= now {
                let reason = match trigger {
                    ProactiveTrigger::Scheduled => RefreshReason::Scheduled,
                    ProactiveTrigger::SafetyNet => RefreshReason::SafetyNet,
                };
                (Some(reason), now)
            } else {
                (None, at)
            }
        }
    };

    if let Some(reason) = due {
        return match earliest_attempt(facts.memory, facts.limits) {
            Some(earliest) if earliest > now => Decision::Wait(Wait {
                until: earliest,
                next_refresh: earliest,
                blocked: Some(reason),
            }),
            _ => Decision::Refresh(reason),
        };
    }

    let token = live_token.expect("a refresh is due whenever there is no live token");
    let next_probe = facts.policy.validate_every.map(|every| match facts.probe {
        Some((at, _)) => after(at, every),
        None => now,
    });
    if next_probe.is_some_and(|t| t <= now) {
        return Decision::Probe;
    }
    let until = [Some(next_refresh), next_probe, Some(token.expires_at)]
        .into_iter()
        .flatten()
        .min()
        .expect("next_refresh is always present");
    Decision::Wait(Wait {
        until,
        next_refresh,
        blocked: None,
    })
}

#[cfg(test)]
mod tests;

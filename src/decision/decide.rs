//! When to refresh, probe or wait: a pure function of the account's facts, the trading calendar
//! and the time, all handed in.

use super::after;
use super::calendar::TradingCalendar;
use super::failure::FailureKind;
use super::market::{in_market_hours, market_close};
use super::memory::Memory;
use super::policy::{Limits, Policy};
pub use super::reason::RefreshReason;
use super::schedule::{ProactiveTrigger, next_grid_slot_after, next_proactive_refresh};
use super::token::{ProbeVerdict, TokenFacts};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// How long after a mint with a lost answer the previous token is probed: long enough for a
/// request still in flight at Dhan to have landed.
pub const LATE_TOKEN_PROBE_DELAY: Duration = Duration::from_secs(30);

/// How long after a probe that found the token dead a second one confirms it: one dead answer
/// is not proof of death (docs/dhan-api.md §9), and a dead token must not wait for a slot.
pub const DEAD_PROBE_CONFIRMATION_DELAY: Duration = Duration::from_secs(10);

/// Everything the decision depends on.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    pub now: DateTime<Utc>,
    /// The operator's trading calendar: which sessions a proactive refresh stays out of.
    pub calendar: &'a TradingCalendar,
    pub policy: &'a Policy,
    pub limits: &'a Limits,
    /// The current token (in the output Secret, or minted and not yet written).
    pub token: Option<&'a TokenFacts>,
    /// A Dhan Web token the user placed in the credentials.
    pub web_token: Option<&'a TokenFacts>,
    /// The last probe of the current token.
    pub probe: Option<(DateTime<Utc>, ProbeVerdict)>,
    pub memory: &'a Memory,
    /// Changes whenever the spec or a credential Secret changes.
    pub inputs_fingerprint: &'a str,
    /// Current value of the refresh-requested annotation.
    pub refresh_request: Option<&'a str>,
}

/// The next step for an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// `suspend: true`: no calls to Dhan.
    Suspended,
    /// A held failure with unchanged inputs: wait for the user. Wake at `until` (the current
    /// token's expiry) only to report it.
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
    /// A refresh that is due but held back, and by what.
    pub blocked: Option<(RefreshReason, Block)>,
}

/// What holds a due refresh back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    /// Dhan's mint interval, the backoff after a failure, or the consent day.
    Limits,
    /// Market hours: a new token kills the one running pods hold (docs/dhan-api.md §8).
    MarketHours,
}

/// The earliest time Dhan's limits and the backoff allow a new token.
pub fn earliest_attempt(memory: &Memory, limits: &Limits) -> Option<DateTime<Utc>> {
    let throttle = |t: Option<DateTime<Utc>>| t.map(|t| after(t, limits.min_mint_interval));
    [
        throttle(memory.last_mint),
        throttle(memory.mint_unconfirmed),
        throttle(memory.last_mint_attempt),
        memory.retry_not_before,
    ]
    .into_iter()
    .flatten()
    .max()
}

/// Decides the next step. Pure: the same facts always give the same decision.
pub fn decide(facts: &Facts<'_>) -> Decision {
    let now = facts.now;
    if facts.policy.suspend {
        return Decision::Suspended;
    }
    let live_token = facts.token.filter(|t| t.is_live(now));
    let new_request = facts
        .refresh_request
        .filter(|r| Some(*r) != facts.memory.refresh_request_handled.as_deref());

    // A refused credential is not sent again because someone asked for a token: only a change
    // of the credentials lifts that hold. Other holds yield to a request.
    let refused_credentials = facts
        .memory
        .last_failure
        .as_ref()
        .and_then(|f| FailureKind::from_reason(&f.reason))
        .is_some_and(FailureKind::refuses_credentials);
    if facts.memory.held_inputs.as_deref() == Some(facts.inputs_fingerprint)
        && (new_request.is_none() || refused_credentials)
    {
        return Decision::HoldFailed {
            until: live_token.map(|t| t.expires_at),
        };
    }

    if let Some(web) = facts.web_token.filter(|w| w.is_live(now)) {
        let newer = match facts.token {
            None => true,
            Some(current) => web.hash != current.hash && web.issued_at > current.issued_at,
        };
        if newer {
            return Decision::Adopt;
        }
    }

    let Some(token) = live_token else {
        // refresh.tradingDaysOnly: a token that lapsed with no session before the next
        // scheduled refresh waits for it instead of being minted for nobody.
        if let (Some(_), None, Some(at)) = (
            facts.token,
            new_request,
            facts.policy.schedule.lapse_until(facts.calendar, now),
        ) {
            return Decision::Wait(Wait {
                until: at,
                next_refresh: at,
                blocked: None,
            });
        }
        let reason = if facts.token.is_some() {
            RefreshReason::Expired
        } else {
            RefreshReason::NoToken
        };
        return refresh_when_allowed(facts, reason, now);
    };
    let probed_dead = matches!(facts.probe, Some((_, ProbeVerdict::Dead)));
    let (scheduled_at, trigger) = next_proactive_refresh(
        facts.calendar,
        &facts.policy.schedule,
        whole_seconds(facts.policy.offset_within(facts.limits.refresh_spread)),
        facts.policy.renew_before,
        token.obtained_at,
        token.expires_at,
    );
    let due = if probed_dead {
        Some(RefreshReason::ProbedDead)
    } else if new_request.is_some() {
        Some(RefreshReason::Requested)
    } else if scheduled_at <= now {
        Some(match trigger {
            ProactiveTrigger::Scheduled => RefreshReason::Scheduled,
            ProactiveTrigger::SafetyNet => RefreshReason::SafetyNet,
        })
    } else {
        None
    };
    // `kubectl dhan refresh --now`: the person asking took the running Pods' token into account.
    let now_request = new_request.is_some_and(|r| r.starts_with(crate::crd::REFRESH_NOW_PREFIX));
    match due {
        Some(reason) if reason.is_emergency() => refresh_when_allowed(facts, reason, now),
        Some(RefreshReason::Requested) if now_request => {
            refresh_when_allowed(facts, RefreshReason::Requested, now)
        }
        Some(reason) => proactive(facts, token, reason),
        None => probe_or_wait(facts, token, scheduled_at),
    }
}

fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

/// A proactive refresh (scheduled, requested, safety net) waits out market hours, unless the
/// token would lapse first: then the safety net is the emergency.
fn proactive(facts: &Facts<'_>, token: &TokenFacts, reason: RefreshReason) -> Decision {
    let now = facts.now;
    if !in_market_hours(facts.calendar, now) {
        return refresh_when_allowed(facts, reason, now);
    }
    let lapse = token.expires_at
        - chrono::Duration::from_std(facts.policy.renew_before).unwrap_or_default();
    let close = market_close(facts.calendar, now);
    if lapse <= now {
        return refresh_when_allowed(facts, RefreshReason::SafetyNet, now);
    }
    let at = close.min(lapse);
    let until = probe_due(facts).map_or(at, |p| p.min(at)).max(now);
    if until <= now {
        return Decision::Probe;
    }
    Decision::Wait(Wait {
        until,
        next_refresh: at,
        blocked: Some((reason, Block::MarketHours)),
    })
}

fn refresh_when_allowed(facts: &Facts<'_>, reason: RefreshReason, now: DateTime<Utc>) -> Decision {
    match earliest_attempt(facts.memory, facts.limits) {
        Some(earliest) if earliest > now => {
            // A live token that a lost mint answer may have revoked is checked meanwhile.
            let until = facts
                .token
                .filter(|t| t.is_live(now))
                .and_then(|_| probe_due(facts))
                .map_or(earliest, |p| p.min(earliest));
            if until <= now {
                return Decision::Probe;
            }
            Decision::Wait(Wait {
                until,
                next_refresh: earliest,
                blocked: Some((reason, Block::Limits)),
            })
        }
        _ => Decision::Refresh(reason),
    }
}

/// When the current token should next be probed: at this account's slots, `validateEvery`
/// apart (a token never probed, at once), once shortly after a mint whose answer was lost, and
/// soon after a probe that found it dead, to confirm.
/// The slots are staggered across accounts and do not depend on when a token was minted:
/// thousands of accounts minted in the same minute do not probe in lockstep.
fn probe_due(facts: &Facts<'_>) -> Option<DateTime<Utc>> {
    let last_probe = facts.probe.map(|(at, _)| at);
    let regular = facts.policy.validate_every.map(|every| {
        let offset = facts.policy.offset_within(every);
        match last_probe {
            Some(at) => next_grid_slot_after(at, every, offset),
            None => facts.now,
        }
    });
    let late_check = facts
        .memory
        .mint_unconfirmed
        .map(|t| after(t, LATE_TOKEN_PROBE_DELAY))
        .filter(|due| last_probe.is_none_or(|probed| probed < *due));
    let confirmation = match facts.probe {
        Some((at, ProbeVerdict::DeadUnconfirmed)) => Some(after(at, DEAD_PROBE_CONFIRMATION_DELAY)),
        _ => None,
    };
    [regular, late_check, confirmation]
        .into_iter()
        .flatten()
        .min()
}

fn probe_or_wait(facts: &Facts<'_>, token: &TokenFacts, next_refresh: DateTime<Utc>) -> Decision {
    let next_probe = probe_due(facts);
    if next_probe.is_some_and(|t| t <= facts.now) {
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

//! The operator's functional core: what should happen next for one account, and what to
//! remember and report about it. Plain values, with the time and the trading calendar handed in:
//! no Kubernetes, no I/O, no clock or calendar of its own.
//!
//! - [`decide`](mod@decide): when to refresh, probe or wait (schedule, market hours, limits).
//! - [`round`]: one reconcile as a state machine — which method to try, how results and
//!   failures are folded into the [`Memory`].
//! - [`assess`](mod@assess): the phase, Ready condition and message for the status.
//! - [`failure`]: every failure as one typed [`FailureKind`].
//! - [`policy`], [`method`], [`token`], [`memory`]: the values these work on.
//! - [`schedule`], [`market`], [`calendar`], [`backoff`], [`duration`]: timing helpers and the
//!   trading calendar.

pub mod assess;
pub mod backoff;
pub mod calendar;
pub mod decide;
pub mod duration;
pub mod failure;
pub mod market;
pub mod memory;
pub mod method;
pub mod policy;
pub mod reason;
pub mod round;
pub mod schedule;
pub mod token;

pub use assess::{Assessment, Phase, assess};
pub use decide::{Block, Decision, Facts, Wait, decide};
pub use failure::{Failure, FailureKind, MethodFailure};
pub use memory::{DayCount, LastFailure, LoginRecord, Memory};
pub use method::{Method, Usable};
pub use policy::{Limits, Policy};
pub use reason::RefreshReason;
pub use round::{Held, Inputs, LoginSeen, Outcome, Round, Step, Stored};
pub use token::{ProbeVerdict, Token, TokenFacts};

use chrono::{DateTime, Utc};
use std::time::Duration;

fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// RFC 3339 in UTC with second precision, as written to Secrets, status and messages.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Retry time after the `failed_attempts`-th consecutive failure handled by backoff.
pub fn backoff_until(at: DateTime<Utc>, failed_attempts: u32) -> DateTime<Utc> {
    after(at, backoff::delay(failed_attempts.max(1)))
}

#[cfg(test)]
mod tests;

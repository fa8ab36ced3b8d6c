//! What the operator does for one account (the validated spec) and operator-wide limits.
//! Built from the DhanAccount by `controller::spec`; plain values here.

use super::method::Method;
use super::schedule::Schedule;
use std::time::Duration;

pub const DEFAULT_SCHEDULE: &str = "0 8 * * *";
pub const DEFAULT_TIME_ZONE: &str = "Asia/Kolkata";
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(10 * 60);
pub const DEFAULT_VALIDATE_EVERY: Duration = Duration::from_secs(15 * 60);
/// Scheduled refreshes of accounts sharing a schedule start spread over this much time before
/// it, so thousands of accounts do not all call Dhan in the same second.
pub const DEFAULT_REFRESH_SPREAD: Duration = Duration::from_secs(10 * 60);

/// Dhan answers "Token can be generated once every 2 minutes." (docs/dhan-api.md §1); a
/// margin on top keeps the operator from ever tripping it.
pub const DEFAULT_MIN_MINT_INTERVAL: Duration = crate::dhan::MINT_THROTTLE;

/// Refused credentials (mints, browser logins) per client and IST day after which the operator
/// stops: wrong PINs sent repeatedly can lock the account on Dhan's side (docs/dhan-api.md §3,
/// §9).
pub const DEFAULT_MAX_FAILED_LOGINS: u32 = 3;

/// What the operator does for one account.
#[derive(Clone, Debug)]
pub struct Policy {
    pub client_id: String,
    pub methods: Vec<Method>,
    pub schedule: Schedule,
    pub renew_before: Duration,
    /// `None` when probing is disabled (`validateEvery: 0`).
    pub validate_every: Option<Duration>,
    pub suspend: bool,
    /// Where this account's probes and scheduled refreshes fall within their spread, as a
    /// fraction of `2^32`: accounts sharing a schedule and a probe interval then call Dhan at
    /// different times. Derived from the account's name, so it holds across restarts.
    pub stagger: u32,
}

impl Policy {
    /// This account's share of `span`: `span × stagger / 2^32`, in whole milliseconds.
    pub fn offset_within(&self, span: Duration) -> Duration {
        let millis = (span.as_millis() * u128::from(self.stagger)) >> 32;
        Duration::from_millis(millis as u64)
    }
}

/// Operator-wide limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Minimum spacing between two new tokens for one client ID.
    pub min_mint_interval: Duration,
    /// Refused credentials (mints, browser logins) per client and IST day before the account is
    /// stopped.
    pub max_failed_logins: u32,
    /// How far before the schedule scheduled refreshes may start, by account.
    pub refresh_spread: Duration,
    /// No credentials are submitted within this long of IST midnight
    /// ([`crate::dhan::ist::MIDNIGHT_MARGIN`]).
    pub midnight_margin: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_mint_interval: DEFAULT_MIN_MINT_INTERVAL,
            max_failed_logins: DEFAULT_MAX_FAILED_LOGINS,
            refresh_spread: DEFAULT_REFRESH_SPREAD,
            midnight_margin: crate::dhan::ist::MIDNIGHT_MARGIN,
        }
    }
}

//! What the operator remembers about an account between reconciles. It lives in the status
//! (and the output Secret's annotations), so it survives restarts and leader changes.

use super::reason::RefreshReason;
use crate::dhan::IST;
use chrono::{DateTime, Utc};

/// The remembered state of one account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// When the operator last obtained a new token for this client.
    pub last_mint: Option<DateTime<Utc>>,
    /// Consecutive failed attempts since the last success (not counting held failures).
    pub failed_attempts: u32,
    /// The last failure, kept until the next success.
    pub last_failure: Option<LastFailure>,
    /// No new attempt before this time (backoff, Dhan's throttle, the next IST day).
    pub retry_not_before: Option<DateTime<Utc>>,
    /// Inputs fingerprint a held failure was seen with: nothing is retried until it changes.
    pub held_inputs: Option<String>,
    /// Last honoured value of the refresh-requested annotation.
    pub refresh_request_handled: Option<String>,
    /// The last 30-second TOTP step that may have been submitted for this client.
    pub last_totp_step: Option<u64>,
    /// Consents generated on one IST day (Dhan allows 25, docs/dhan-api.md §3).
    pub consents: Option<DayCount>,
    /// Refusals of the credentials on one IST day: PIN+TOTP mints Dhan refused, browser logins
    /// that failed after reaching its PIN/TOTP step.
    pub failed_logins: Option<DayCount>,
    /// The browser login in progress.
    pub login: Option<LoginRecord>,
    /// A mint whose answer was lost (timeout, 5xx, a reset connection, a 200 without a token)
    /// at this time: Dhan may still have carried it out and revoked the previous token, so that
    /// token is probed before anything else.
    pub mint_unconfirmed: Option<DateTime<Utc>>,
    /// The last call that could mint, reached Dhan and brought no token (refused, or its answer
    /// lost): Dhan's 2-minute lock re-arms on each refused attempt (docs/dhan-api.md §9).
    pub last_mint_attempt: Option<DateTime<Utc>>,
}

/// The last failure, as shown to people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastFailure {
    pub at: DateTime<Utc>,
    /// The failure kind's reason label (`InvalidPin`, `Timeout`, …).
    pub reason: String,
    pub message: String,
}

/// A browser login running in a Job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginRecord {
    pub job_name: String,
    pub started_at: DateTime<Utc>,
    pub reason: RefreshReason,
    /// The refresh-requested annotation value this login answers, if any.
    pub refresh_request: Option<String>,
}

/// A count on one IST calendar day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DayCount {
    /// The IST date, `YYYY-MM-DD`.
    pub day: String,
    pub count: u32,
}

/// The IST calendar day of `now`, as day counts record it.
pub fn ist_day(now: DateTime<Utc>) -> String {
    now.with_timezone(&IST).format("%Y-%m-%d").to_string()
}

impl DayCount {
    /// The count on the IST day of `now` (0 on any other day).
    pub fn today(count: Option<&DayCount>, now: DateTime<Utc>) -> u32 {
        count
            .filter(|c| c.day == ist_day(now))
            .map_or(0, |c| c.count)
    }

    /// `count` plus one, restarting on a new IST day.
    pub fn increment(count: Option<&DayCount>, now: DateTime<Utc>) -> DayCount {
        DayCount {
            day: ist_day(now),
            count: DayCount::today(count, now) + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn day_counts_restart_on_each_ist_day() {
        let count = DayCount {
            day: "2026-11-24".into(),
            count: 7,
        };
        // 2026-11-24 00:10 IST is 2026-11-23 18:40 UTC.
        assert_eq!(DayCount::today(Some(&count), at("2026-11-23T18:40:00Z")), 7);
        assert_eq!(DayCount::today(Some(&count), at("2026-11-24T18:29:59Z")), 7);
        assert_eq!(DayCount::today(Some(&count), at("2026-11-24T18:30:00Z")), 0);
        assert_eq!(DayCount::today(Some(&count), at("2026-11-23T18:29:59Z")), 0);
        assert_eq!(DayCount::today(None, at("2026-11-24T06:00:00Z")), 0);
        let next = DayCount::increment(Some(&count), at("2026-11-24T18:30:00Z"));
        assert_eq!((next.day.as_str(), next.count), ("2026-11-25", 1));
        let same = DayCount::increment(Some(&count), at("2026-11-24T06:00:00Z"));
        assert_eq!((same.day.as_str(), same.count), ("2026-11-24", 8));
    }
}

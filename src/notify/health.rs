//! What state an account is in, as far as a person wants to hear about it, and which changes of
//! that state deserve a message. Pure: status, trading calendar and clock in, a notice out.

use crate::crd::{DhanAccount, DhanAccountStatus, Phase};
use crate::decision::calendar::TradingCalendar;
use crate::decision::market::next_session;
use chrono::{DateTime, Utc};

/// How close to expiry a token with no refresh planned before it gets an alert.
pub const EXPIRY_WARNING: chrono::Duration = chrono::Duration::hours(1);

/// An account's state as notifications see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Refreshes fail and are being retried.
    RefreshFailing,
    /// A permanent failure: nothing happens until the user acts.
    Failed,
    Conflict,
    /// The token expires within the hour and nothing is planned before that.
    ExpiringUnplanned,
    /// `suspend: true`: the user asked for silence.
    Suspended,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "Healthy",
            Health::RefreshFailing => "RefreshFailing",
            Health::Failed => "Failed",
            Health::Conflict => "Conflict",
            Health::ExpiringUnplanned => "ExpiringUnplanned",
            Health::Suspended => "Suspended",
        }
    }

    pub fn parse(text: &str) -> Option<Health> {
        [
            Health::Healthy,
            Health::RefreshFailing,
            Health::Failed,
            Health::Conflict,
            Health::ExpiringUnplanned,
            Health::Suspended,
        ]
        .into_iter()
        .find(|h| h.as_str() == text)
    }

    fn is_trouble(self) -> bool {
        matches!(
            self,
            Health::RefreshFailing | Health::Failed | Health::Conflict | Health::ExpiringUnplanned
        )
    }
}

/// A message-worthy change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    RefreshFailed,
    Failed,
    Conflict,
    ExpiringSoon,
    Recovered,
}

impl Notice {
    /// The name used in `spec.events`.
    pub fn as_str(self) -> &'static str {
        match self {
            Notice::RefreshFailed => "RefreshFailed",
            Notice::Failed => "Failed",
            Notice::Conflict => "Conflict",
            Notice::ExpiringSoon => "ExpiringSoon",
            Notice::Recovered => "Recovered",
        }
    }
}

fn ready(status: &DhanAccountStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The account's state, or `None` while it is in passing (refreshing, a login running, a token
/// expired with no failure yet): a retry loop must not produce a message per attempt.
pub fn health_of(
    account: &DhanAccount,
    calendar: &TradingCalendar,
    now: DateTime<Utc>,
) -> Option<Health> {
    let status = account.status.as_ref()?;
    match status.phase? {
        Phase::Suspended => return Some(Health::Suspended),
        Phase::Failed => return Some(Health::Failed),
        Phase::Conflict => return Some(Health::Conflict),
        Phase::Refreshing | Phase::WaitingForLogin => return None,
        Phase::Backoff | Phase::Expired | Phase::Pending
            if status.failed_attempts.unwrap_or(0) > 0 =>
        {
            return Some(Health::RefreshFailing);
        }
        Phase::Ready => {}
        Phase::Backoff | Phase::Expired | Phase::Pending => return None,
    }
    if !ready(status) {
        return None;
    }
    let trading_days_only = trading_days_only(account);
    if expiring_unplanned(status, trading_days_only, calendar, now) {
        Some(Health::ExpiringUnplanned)
    } else {
        Some(Health::Healthy)
    }
}

fn expiring_unplanned(
    status: &DhanAccountStatus,
    trading_days_only: bool,
    calendar: &TradingCalendar,
    now: DateTime<Utc>,
) -> bool {
    let Some(expires) = status.expires_at else {
        return false;
    };
    if expires - now > EXPIRY_WARNING {
        return false;
    }
    match status.next_refresh_time {
        Some(next) if next < expires => false,
        // tradingDaysOnly lets a token lapse on purpose when no session comes before the
        // next refresh: nothing to warn about.
        Some(next) if trading_days_only => !no_session_between(calendar, expires, next),
        _ => true,
    }
}

fn trading_days_only(account: &DhanAccount) -> bool {
    account
        .spec
        .refresh
        .as_ref()
        .and_then(|r| r.trading_days_only)
        .unwrap_or(false)
}

fn no_session_between(calendar: &TradingCalendar, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    next_session(calendar, from).is_none_or(|(open, _)| open >= to)
}

/// Until when the account is without a valid token on purpose: with `tradingDaysOnly`, a token
/// that expires (or expired) with no session before the next refresh, of an account that is
/// not failing. The alerts on an account with no token (or one about to expire) keep quiet for
/// it (the metric `account_lapse_planned_until_timestamp_seconds`).
pub fn lapse_planned_until(
    account: &DhanAccount,
    calendar: &TradingCalendar,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let trading_days_only = trading_days_only(account);
    let status = account.status.as_ref()?;
    let quiet = matches!(status.phase, Some(Phase::Ready | Phase::Expired))
        && status.failed_attempts.unwrap_or(0) == 0;
    if !trading_days_only || !quiet {
        return None;
    }
    let next = status.next_refresh_time?;
    let from = status.expires_at.unwrap_or(now);
    (next > from && next > now && no_session_between(calendar, from, next)).then_some(next)
}

/// The message a change from `before` (what was last reported, if anything) to `now` calls
/// for. Only entering trouble and leaving it are worth a message; a first sight of a healthy
/// account is not.
pub fn notice_for(before: Option<Health>, now: Health) -> Option<Notice> {
    if before == Some(now) {
        return None;
    }
    match now {
        Health::RefreshFailing => Some(Notice::RefreshFailed),
        Health::Failed => Some(Notice::Failed),
        Health::Conflict => Some(Notice::Conflict),
        Health::ExpiringUnplanned => Some(Notice::ExpiringSoon),
        Health::Healthy if before.is_some_and(Health::is_trouble) => Some(Notice::Recovered),
        Health::Healthy | Health::Suspended => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Condition, DhanAccountSpec, RefreshSpec};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn account(phase: Phase, failed: u32, ready: bool) -> DhanAccount {
        let mut account = DhanAccount::new(
            "alice",
            DhanAccountSpec {
                client_id: "1000000001".into(),
                ..Default::default()
            },
        );
        account.status = Some(DhanAccountStatus {
            phase: Some(phase),
            failed_attempts: (failed > 0).then_some(failed),
            expires_at: Some(utc("2026-11-24T02:30:00Z")),
            next_refresh_time: Some(utc("2026-11-24T02:30:00Z") - chrono::Duration::minutes(30)),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                reason: "TokenValid".into(),
                message: String::new(),
                last_transition_time: utc("2026-11-23T02:30:00Z"),
                observed_generation: None,
            }],
            ..Default::default()
        });
        account
    }

    #[test]
    fn health_follows_phase_and_failures() {
        let calendar = TradingCalendar::parse("{}").unwrap();
        let now = utc("2026-11-23T12:00:00Z");
        let cases = [
            (account(Phase::Ready, 0, true), Some(Health::Healthy)),
            (
                account(Phase::Backoff, 1, true),
                Some(Health::RefreshFailing),
            ),
            (
                account(Phase::Backoff, 3, true),
                Some(Health::RefreshFailing),
            ),
            (
                account(Phase::Expired, 2, false),
                Some(Health::RefreshFailing),
            ),
            (account(Phase::Failed, 0, true), Some(Health::Failed)),
            (account(Phase::Conflict, 0, false), Some(Health::Conflict)),
            (account(Phase::Suspended, 0, true), Some(Health::Suspended)),
            (account(Phase::Refreshing, 1, true), None),
            (account(Phase::WaitingForLogin, 0, true), None),
            (account(Phase::Expired, 0, false), None),
        ];
        for (account, expected) in cases {
            let phase = account.status.as_ref().unwrap().phase;
            assert_eq!(health_of(&account, &calendar, now), expected, "{phase:?}");
        }
    }

    #[test]
    fn expiry_within_the_hour_alerts_only_without_a_plan_before_it() {
        let calendar = TradingCalendar::parse("{}").unwrap();
        let forty_minutes_before = utc("2026-11-24T01:50:00Z");
        let planned = account(Phase::Ready, 0, true);
        assert_eq!(
            health_of(&planned, &calendar, forty_minutes_before),
            Some(Health::Healthy)
        );
        let mut unplanned = account(Phase::Ready, 0, true);
        unplanned.status.as_mut().unwrap().next_refresh_time = None;
        assert_eq!(
            health_of(&unplanned, &calendar, forty_minutes_before),
            Some(Health::ExpiringUnplanned)
        );
        assert_eq!(
            health_of(&unplanned, &calendar, utc("2026-11-23T12:00:00Z")),
            Some(Health::Healthy),
            "more than an hour left"
        );
    }

    #[test]
    fn a_planned_weekend_lapse_is_no_alert() {
        let calendar = TradingCalendar::parse("{}").unwrap();
        // Expires Saturday 08:00 IST; tradingDaysOnly plans the next token for Monday 08:00.
        let mut lapse = account(Phase::Ready, 0, true);
        lapse.spec.refresh = Some(Box::new(RefreshSpec {
            trading_days_only: Some(true),
            ..Default::default()
        }));
        let status = lapse.status.as_mut().unwrap();
        status.expires_at = Some(utc("2026-11-28T02:30:00Z"));
        status.next_refresh_time = Some(utc("2026-11-30T02:30:00Z"));
        let before = utc("2026-11-28T02:00:00Z");
        assert_eq!(health_of(&lapse, &calendar, before), Some(Health::Healthy));
        lapse.spec.refresh = None;
        assert_eq!(
            health_of(&lapse, &calendar, before),
            Some(Health::ExpiringUnplanned)
        );
    }

    #[test]
    fn a_weekend_lapse_is_planned_until_monday_and_nothing_else_is() {
        let calendar = TradingCalendar::parse("{}").unwrap();
        let mut lapse = account(Phase::Expired, 0, false);
        lapse.spec.refresh = Some(Box::new(RefreshSpec {
            trading_days_only: Some(true),
            ..Default::default()
        }));
        let status = lapse.status.as_mut().unwrap();
        status.expires_at = Some(utc("2026-11-28T02:30:00Z"));
        let monday = utc("2026-11-30T02:30:00Z");
        status.next_refresh_time = Some(monday);
        let sunday = utc("2026-11-29T06:00:00Z");
        assert_eq!(lapse_planned_until(&lapse, &calendar, sunday), Some(monday));
        // Before the expiry, too: the lapse to come is planned.
        let friday = utc("2026-11-27T12:00:00Z");
        assert_eq!(lapse_planned_until(&lapse, &calendar, friday), Some(monday));

        // A session before the next refresh: not planned.
        let mut wednesday = lapse.clone();
        let status = wednesday.status.as_mut().unwrap();
        status.expires_at = Some(utc("2026-11-25T02:30:00Z"));
        status.next_refresh_time = Some(utc("2026-11-26T02:30:00Z"));
        assert_eq!(
            lapse_planned_until(&wednesday, &calendar, utc("2026-11-25T06:00:00Z")),
            None
        );
        // Failing, or without tradingDaysOnly: not planned.
        let mut failing = lapse.clone();
        failing.status.as_mut().unwrap().failed_attempts = Some(1);
        assert_eq!(lapse_planned_until(&failing, &calendar, sunday), None);
        let mut failed = lapse.clone();
        failed.status.as_mut().unwrap().phase = Some(Phase::Failed);
        assert_eq!(lapse_planned_until(&failed, &calendar, sunday), None);
        let mut every_day = lapse.clone();
        every_day.spec.refresh = None;
        assert_eq!(lapse_planned_until(&every_day, &calendar, sunday), None);
        // Over once the refresh is due.
        assert_eq!(
            lapse_planned_until(&lapse, &calendar, utc("2026-11-30T03:00:00Z")),
            None
        );
    }

    #[test]
    fn one_message_per_change_of_state() {
        use Health::*;
        let cases = [
            (None, Healthy, None),
            (None, Failed, Some(Notice::Failed)),
            (Some(Healthy), RefreshFailing, Some(Notice::RefreshFailed)),
            (Some(RefreshFailing), RefreshFailing, None),
            (Some(RefreshFailing), Failed, Some(Notice::Failed)),
            (Some(RefreshFailing), Healthy, Some(Notice::Recovered)),
            (Some(Failed), Healthy, Some(Notice::Recovered)),
            (Some(Conflict), Healthy, Some(Notice::Recovered)),
            (Some(ExpiringUnplanned), Healthy, Some(Notice::Recovered)),
            (Some(Healthy), ExpiringUnplanned, Some(Notice::ExpiringSoon)),
            (Some(Healthy), Conflict, Some(Notice::Conflict)),
            (Some(Failed), Suspended, None),
            (Some(Suspended), Healthy, None),
        ];
        for (before, now, expected) in cases {
            assert_eq!(notice_for(before, now), expected, "{before:?} -> {now:?}");
        }
    }
}

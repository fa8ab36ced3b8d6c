//! When the next proactive refresh is due: a pure function of the token, the policy, the
//! trading calendar and the clock, in the spirit of cert-manager's renewal-time calculation.

use super::calendar::TradingCalendar;
use super::market::{before_open, in_market_hours, ist_date, next_session};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// A cron schedule in a time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    time_zone: Tz,
    trading_days_only: bool,
}

/// Schedules parsed already, by expression and time zone: every reconcile reads its account's,
/// and parsing one costs more than the rest of reading the spec. At most [`PARSED_KEPT`]; a
/// tenant who writes many different ones only empties it.
static PARSED: LazyLock<Mutex<HashMap<(String, String), Schedule>>> =
    LazyLock::new(Default::default);
const PARSED_KEPT: usize = 64;

impl Schedule {
    /// Parses a 5-field cron expression (seconds are not allowed) and an IANA time zone.
    pub fn parse(expression: &str, time_zone: &str) -> Result<Self, ScheduleError> {
        let key = (expression.to_string(), time_zone.to_string());
        if let Some(parsed) = PARSED.lock().expect("schedules poisoned").get(&key) {
            return Ok(parsed.clone());
        }
        let parsed = Self::parse_new(expression, time_zone)?;
        let mut kept = PARSED.lock().expect("schedules poisoned");
        if kept.len() >= PARSED_KEPT {
            kept.clear();
        }
        kept.insert(key, parsed.clone());
        Ok(parsed)
    }

    fn parse_new(expression: &str, time_zone: &str) -> Result<Self, ScheduleError> {
        if expression.split_whitespace().count() != 5 && !expression.trim().starts_with('@') {
            return Err(ScheduleError::Expression(format!(
                "{expression:?} must have 5 fields (minute hour day-of-month month day-of-week)"
            )));
        }
        let cron = Cron::from_str(expression)
            .map_err(|e| ScheduleError::Expression(format!("{expression:?}: {e}")))?;
        let time_zone = Tz::from_str(time_zone)
            .map_err(|_| ScheduleError::TimeZone(format!("unknown time zone {time_zone:?}")))?;
        let schedule = Schedule {
            cron,
            time_zone,
            trading_days_only: false,
        };
        // A pattern such as "0 0 30 2 *" parses but never fires. Whether a 5-field pattern
        // fires does not depend on the date it is asked from.
        if schedule.next_after(DateTime::UNIX_EPOCH).is_none() {
            return Err(ScheduleError::Expression(format!(
                "{expression:?} never fires"
            )));
        }
        Ok(schedule)
    }

    /// `refresh.tradingDaysOnly`: fire only on IST dates the exchange trades, and let a token
    /// lapse between sessions rather than mint one nobody trades with.
    pub fn with_trading_days_only(self, trading_days_only: bool) -> Self {
        Schedule {
            trading_days_only,
            ..self
        }
    }

    pub fn trading_days_only(&self) -> bool {
        self.trading_days_only
    }

    /// The first occurrence strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.time_zone), false)
            .ok()
            .map(|next| next.with_timezone(&Utc))
    }

    /// The first occurrence strictly after `t` that is outside market hours (a proactive mint
    /// then would kill the token running trading pods hold, docs/dhan-api.md §8) and, with
    /// `tradingDaysOnly`, on a trading day.
    pub fn next_slot_after(
        &self,
        calendar: &TradingCalendar,
        t: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let mut candidate = self.next_after(t)?;
        for _ in 0..10_000 {
            let wanted = !self.trading_days_only || calendar.is_trading_day(ist_date(candidate));
            if wanted && !in_market_hours(calendar, candidate) {
                return Some(candidate);
            }
            candidate = self.next_after(candidate)?;
        }
        None
    }

    /// With `tradingDaysOnly`, a token that has expired while no session comes before the next
    /// scheduled refresh is left to wait for that refresh: the time to mint. `None` otherwise
    /// (mint now).
    pub fn lapse_until(
        &self,
        calendar: &TradingCalendar,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if !self.trading_days_only {
            return None;
        }
        let next = self.next_slot_after(calendar, now)?;
        match next_session(calendar, now) {
            Some((open, _)) if open < next => None,
            _ => Some(next),
        }
    }
}

/// A schedule that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid schedule {0}")]
    Expression(String),
    #[error("{0}")]
    TimeZone(String),
}

/// Why a proactive refresh is planned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProactiveTrigger {
    /// The schedule fired.
    Scheduled,
    /// The schedule would let the token lapse, so it is refreshed `renewBefore` ahead of expiry.
    SafetyNet,
}

/// Plans the next proactive refresh of a token obtained at `obtained_at` that expires at
/// `expires_at`.
///
/// Anchoring on the token's own issue time (not on "now") is what keeps a daily schedule from
/// drifting, and what makes the plan survive operator restarts: it is recomputed from the
/// token alone.
///
/// `lead` moves this account's scheduled times earlier (its share of the refresh spread):
/// earlier, not later, so a spread never pushes a refresh past the token's expiry or into the
/// pre-open, and the grid it shifts keeps a daily refresh from drifting.
pub fn next_proactive_refresh(
    calendar: &TradingCalendar,
    schedule: &Schedule,
    lead: Duration,
    renew_before: Duration,
    obtained_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> (DateTime<Utc>, ProactiveTrigger) {
    let lead = chrono::Duration::from_std(lead).unwrap_or_default();
    let scheduled = schedule
        .next_slot_after(calendar, obtained_at + lead)
        .map(|at| {
            // A schedule just after the close would lead into the session: not earlier then.
            let early = at - lead;
            if in_market_hours(calendar, early) {
                at
            } else {
                early
            }
        });
    let safety_net = expires_at - renew_before;
    match scheduled {
        Some(at) if at <= expires_at => (at, ProactiveTrigger::Scheduled),
        // tradingDaysOnly: the safety net is only for a token that would lapse before or
        // during a session; one that lapses between sessions waits for the schedule.
        Some(at)
            if schedule.trading_days_only
                && next_session(calendar, safety_net).is_none_or(|(open, _)| open >= at) =>
        {
            (at, ProactiveTrigger::Scheduled)
        }
        _ => {
            // Pull a safety net out of market hours, unless the token is younger than that:
            // then refreshing near expiry disturbs running pods least. Depends on the token
            // only, never on "now", so the plan cannot shift while it is waited for.
            let pulled_back = before_open(calendar, safety_net);
            let at = if in_market_hours(calendar, safety_net) && pulled_back > obtained_at {
                pulled_back
            } else {
                safety_net
            };
            (at, ProactiveTrigger::SafetyNet)
        }
    }
}

/// The first time strictly after `t` on the grid `offset + k × every` (k whole, from the Unix
/// epoch), to the millisecond.
pub fn next_grid_slot_after(t: DateTime<Utc>, every: Duration, offset: Duration) -> DateTime<Utc> {
    let every = (every.as_millis() as i64).max(1);
    let offset = offset.as_millis() as i64 % every;
    let slot = ((t.timestamp_millis() - offset).div_euclid(every) + 1) * every + offset;
    DateTime::from_timestamp_millis(slot).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests;

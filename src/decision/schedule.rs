//! When the next proactive refresh is due: a pure function of the token, the policy and the
//! clock, in the spirit of cert-manager's renewal-time calculation.

use super::market::{before_open, in_market_hours};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use std::str::FromStr;
use std::time::Duration;

/// A cron schedule in a time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    time_zone: Tz,
}

impl Schedule {
    /// Parses a 5-field cron expression (seconds are not allowed) and an IANA time zone.
    pub fn parse(expression: &str, time_zone: &str) -> Result<Self, ScheduleError> {
        if expression.split_whitespace().count() != 5 && !expression.trim().starts_with('@') {
            return Err(ScheduleError::Expression(format!(
                "{expression:?} must have 5 fields (minute hour day-of-month month day-of-week)"
            )));
        }
        let cron = Cron::from_str(expression)
            .map_err(|e| ScheduleError::Expression(format!("{expression:?}: {e}")))?;
        let time_zone = Tz::from_str(time_zone)
            .map_err(|_| ScheduleError::TimeZone(format!("unknown time zone {time_zone:?}")))?;
        let schedule = Schedule { cron, time_zone };
        // A pattern such as "0 0 30 2 *" parses but never fires. Whether a 5-field pattern
        // fires does not depend on the date it is asked from.
        if schedule.next_after(DateTime::UNIX_EPOCH).is_none() {
            return Err(ScheduleError::Expression(format!(
                "{expression:?} never fires"
            )));
        }
        Ok(schedule)
    }

    /// The first occurrence strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.time_zone), false)
            .ok()
            .map(|next| next.with_timezone(&Utc))
    }

    /// The first occurrence strictly after `t` that is outside market hours: a proactive mint
    /// then would kill the token running trading pods hold (docs/dhan-api.md §8).
    pub fn next_outside_market_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut candidate = self.next_after(t)?;
        for _ in 0..10_000 {
            if !in_market_hours(candidate) {
                return Some(candidate);
            }
            candidate = self.next_after(candidate)?;
        }
        None
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
    schedule: &Schedule,
    lead: Duration,
    renew_before: Duration,
    obtained_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> (DateTime<Utc>, ProactiveTrigger) {
    let lead = chrono::Duration::from_std(lead).unwrap_or_default();
    let scheduled = schedule
        .next_outside_market_after(obtained_at + lead)
        .map(|at| {
            // A schedule just after the close would lead into the session: not earlier then.
            let early = at - lead;
            if in_market_hours(early) { at } else { early }
        });
    match scheduled {
        Some(at) if at <= expires_at => (at, ProactiveTrigger::Scheduled),
        _ => {
            let safety_net = expires_at - renew_before;
            // Pull a safety net out of market hours, unless the token is younger than that:
            // then refreshing near expiry disturbs running pods least. Depends on the token
            // only, never on "now", so the plan cannot shift while it is waited for.
            let pulled_back = before_open(safety_net);
            let at = if in_market_hours(safety_net) && pulled_back > obtained_at {
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
pub fn next_slot_after(t: DateTime<Utc>, every: Duration, offset: Duration) -> DateTime<Utc> {
    let every = (every.as_millis() as i64).max(1);
    let offset = offset.as_millis() as i64 % every;
    let slot = ((t.timestamp_millis() - offset).div_euclid(every) + 1) * every + offset;
    DateTime::from_timestamp_millis(slot).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn daily_0800_ist() -> Schedule {
        Schedule::parse("0 8 * * *", "Asia/Kolkata").unwrap()
    }

    const TEN_MINUTES: Duration = Duration::from_secs(600);
    const DAY: chrono::Duration = chrono::Duration::hours(24);

    #[test]
    fn daily_schedule_fires_at_0800_ist_the_next_day() {
        // Minted Monday 08:00:03 IST, expires Tuesday 08:00:03 IST.
        let minted = utc("2026-11-23T02:30:03Z");
        let (at, trigger) = next_proactive_refresh(
            &daily_0800_ist(),
            Duration::ZERO,
            TEN_MINUTES,
            minted,
            minted + DAY,
        );
        assert_eq!(at, utc("2026-11-24T02:30:00Z"));
        assert_eq!(trigger, ProactiveTrigger::Scheduled);
    }

    #[test]
    fn sparse_schedule_uses_safety_net_before_expiry() {
        // Mondays only: Tuesday's expiry comes before the next Monday.
        let mondays = Schedule::parse("0 8 * * 1", "Asia/Kolkata").unwrap();
        let minted = utc("2026-11-23T02:30:03Z");
        let (at, trigger) =
            next_proactive_refresh(&mondays, Duration::ZERO, TEN_MINUTES, minted, minted + DAY);
        assert_eq!(at, minted + DAY - chrono::Duration::minutes(10));
        assert_eq!(trigger, ProactiveTrigger::SafetyNet);
    }

    #[test]
    fn scheduled_times_inside_market_hours_are_skipped() {
        // 11:00 IST daily is inside market hours on weekdays: only Saturday and Sunday remain.
        let schedule = Schedule::parse("0 11 * * *", "Asia/Kolkata").unwrap();
        let friday_noon = utc("2026-11-27T06:30:00Z");
        assert_eq!(
            schedule.next_outside_market_after(friday_noon),
            Some(utc("2026-11-28T05:30:00Z"))
        );
    }

    #[test]
    fn safety_net_inside_market_hours_moves_before_open() {
        // A token re-minted at 11:00 IST on Sunday (dead token) expires Monday 11:00 IST; a
        // weekly Saturday schedule cannot cover it, and 10:50 IST Monday is market time.
        let schedule = Schedule::parse("0 8 * * 6", "Asia/Kolkata").unwrap();
        let minted = utc("2026-11-22T05:30:00Z");
        let (at, trigger) =
            next_proactive_refresh(&schedule, Duration::ZERO, TEN_MINUTES, minted, minted + DAY);
        assert_eq!(at, utc("2026-11-23T03:15:00Z")); // Monday 08:45 IST
        assert_eq!(trigger, ProactiveTrigger::SafetyNet);
    }

    #[test]
    fn safety_net_stays_near_expiry_for_a_token_younger_than_before_open() {
        // Minted Monday 08:50 IST (a dead token replaced), expiring Tuesday 08:50 IST: its
        // safety net is not in market hours, and pulling it back would be pointless anyway.
        let schedule = Schedule::parse("0 8 * * 6", "Asia/Kolkata").unwrap();
        let minted = utc("2026-11-23T03:20:00Z");
        let (at, _) =
            next_proactive_refresh(&schedule, Duration::ZERO, TEN_MINUTES, minted, minted + DAY);
        assert_eq!(at, minted + DAY - chrono::Duration::minutes(10));
    }

    #[test]
    fn rejects_bad_expressions_and_zones() {
        assert!(matches!(
            Schedule::parse("every morning", "Asia/Kolkata"),
            Err(ScheduleError::Expression(_))
        ));
        assert!(matches!(
            Schedule::parse("0 0 8 * * *", "Asia/Kolkata"),
            Err(ScheduleError::Expression(_))
        ));
        assert!(matches!(
            Schedule::parse("0 8 * * *", "Asia/Mumbai"),
            Err(ScheduleError::TimeZone(_))
        ));
    }

    #[test]
    fn time_zone_is_honoured() {
        let schedule = Schedule::parse("0 8 * * *", "UTC").unwrap();
        assert_eq!(
            schedule.next_after(utc("2026-11-23T07:00:00Z")),
            Some(utc("2026-11-23T08:00:00Z"))
        );
    }

    #[test]
    fn a_lead_moves_the_refresh_earlier_and_keeps_it_daily() {
        let lead = Duration::from_secs(7 * 60);
        let mut minted = utc("2026-11-22T00:00:00Z"); // Sunday 05:30 IST
        for _ in 0..5 {
            let (at, trigger) =
                next_proactive_refresh(&daily_0800_ist(), lead, TEN_MINUTES, minted, minted + DAY);
            assert_eq!(trigger, ProactiveTrigger::Scheduled);
            assert_eq!(
                at.format("%H:%M").to_string(),
                "02:23",
                "07:53 IST every day"
            );
            assert!(at > minted && at < minted + DAY);
            // The next token comes a few seconds later, and is planned for the next day.
            minted = at + chrono::Duration::seconds(4);
        }
    }

    #[test]
    fn a_lead_never_moves_a_refresh_into_the_session() {
        let just_after_close = Schedule::parse("35 15 * * 1-5", "Asia/Kolkata").unwrap();
        let minted = utc("2026-11-23T00:00:00Z"); // Monday 05:30 IST
        let (at, _) = next_proactive_refresh(
            &just_after_close,
            Duration::from_secs(600),
            TEN_MINUTES,
            minted,
            minted + DAY,
        );
        assert_eq!(at, utc("2026-11-23T10:05:00Z"), "15:35 IST, not 15:25");
    }

    #[test]
    fn slots_are_every_apart_from_the_offset_and_strictly_later() {
        let every = Duration::from_secs(900);
        let offset = Duration::from_secs(100);
        let t = utc("2026-11-22T10:00:00Z");
        assert_eq!(
            next_slot_after(t, every, offset),
            utc("2026-11-22T10:01:40Z")
        );
        let slot = utc("2026-11-22T10:01:40Z");
        assert_eq!(
            next_slot_after(slot, every, offset),
            utc("2026-11-22T10:16:40Z")
        );
        assert_eq!(
            next_slot_after(slot + chrono::Duration::milliseconds(30), every, offset),
            utc("2026-11-22T10:16:40Z"),
            "a probe that ran late keeps the grid"
        );
    }
}

//! NSE trading hours in IST (docs/dhan-api.md §8). A new token kills the one running trading
//! processes hold, so proactive refreshes stay out of every session the trading calendar lists:
//! the regular 09:00–15:30 on trading days, and special sessions such as the Diwali Muhurat
//! evening; a holiday has none.

use super::calendar::{Session, TradingCalendar};
use chrono::{DateTime, Days, FixedOffset, NaiveDate, NaiveTime, TimeZone, Utc};

/// India Standard Time: UTC+05:30 all year (India has no daylight saving time).
pub fn ist() -> FixedOffset {
    FixedOffset::east_opt(5 * 3600 + 1800).expect("valid offset")
}

/// How long before a session a proactive refresh that would land in it is moved to.
const PULL_BACK: chrono::Duration = chrono::Duration::minutes(15);
/// How far ahead to look for the next session: beyond the longest run of holidays and weekends.
const LOOKAHEAD_DAYS: u64 = 30;

fn at(date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    ist()
        .from_local_datetime(&date.and_time(time))
        .single()
        .expect("IST has no gaps")
        .with_timezone(&Utc)
}

/// The IST calendar date of `t`.
pub fn ist_date(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&ist()).date_naive()
}

/// A session's window on its date, in UTC.
fn bounds(date: NaiveDate, session: Session) -> (DateTime<Utc>, DateTime<Utc>) {
    (at(date, session.open), at(date, session.close))
}

/// The session `t` falls in, if any.
pub fn session_at(
    calendar: &TradingCalendar,
    t: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let date = ist_date(t);
    calendar
        .sessions_on(date)
        .into_iter()
        .map(|s| bounds(date, s))
        .find(|(open, close)| *open <= t && t < *close)
}

/// The first session that has not ended at `t` (the one under way, or the next one).
pub fn next_session(
    calendar: &TradingCalendar,
    t: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let first = ist_date(t);
    (0..=LOOKAHEAD_DAYS)
        .filter_map(|n| first.checked_add_days(Days::new(n)))
        .flat_map(|date| {
            let mut sessions: Vec<_> = calendar
                .sessions_on(date)
                .into_iter()
                .map(|s| bounds(date, s))
                .collect();
            sessions.sort();
            sessions
        })
        .find(|(_, close)| *close > t)
}

/// True inside any session of `calendar`.
pub fn in_market_hours(calendar: &TradingCalendar, t: DateTime<Utc>) -> bool {
    session_at(calendar, t).is_some()
}

/// Fifteen minutes before the session `t` falls in (08:45 IST for the regular session); for a
/// `t` outside every session, 15 minutes before the regular open that day.
pub fn before_open(calendar: &TradingCalendar, t: DateTime<Utc>) -> DateTime<Utc> {
    let open = session_at(calendar, t)
        .map(|(open, _)| open)
        .unwrap_or_else(|| at(ist_date(t), calendar.regular_session().open));
    open - PULL_BACK
}

/// The close of the session `t` falls in (15:30 IST for the regular one); for a `t` outside
/// every session, the regular close that day.
pub fn market_close(calendar: &TradingCalendar, t: DateTime<Utc>) -> DateTime<Utc> {
    session_at(calendar, t)
        .map(|(_, close)| close)
        .unwrap_or_else(|| at(ist_date(t), calendar.regular_session().close))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// 2026's Diwali: Laxmi Pujan on Sunday 8 Nov with a Muhurat evening, Balipratipada on
    /// Tuesday 10 Nov.
    fn diwali_2026() -> TradingCalendar {
        TradingCalendar::parse(
            "holidays: [{date: 2026-11-10, name: Diwali-Balipratipada}]\n\
             specialSessions: [{date: 2026-11-08, open: '17:45', close: '19:30', name: Muhurat}]",
        )
        .unwrap()
    }

    #[test]
    fn market_hours_follow_the_trading_calendar() {
        let cases = [
            ("2026-11-23T03:29:59Z", false, "Monday 08:59:59 IST"),
            ("2026-11-23T03:30:00Z", true, "Monday 09:00 IST pre-open"),
            ("2026-11-23T05:30:00Z", true, "Monday 11:00 IST"),
            ("2026-11-23T09:59:59Z", true, "Monday 15:29:59 IST"),
            ("2026-11-23T10:00:00Z", false, "Monday 15:30 IST close"),
            ("2026-11-21T05:30:00Z", false, "Saturday 11:00 IST"),
            ("2026-11-22T05:30:00Z", false, "Sunday 11:00 IST"),
            (
                "2026-11-10T05:30:00Z",
                false,
                "Tuesday 11:00 IST, Diwali-Balipratipada",
            ),
            (
                "2026-11-08T05:30:00Z",
                false,
                "Sunday 11:00 IST, Laxmi Pujan",
            ),
            (
                "2026-11-08T12:15:00Z",
                true,
                "Sunday 17:45 IST, Muhurat pre-open",
            ),
            (
                "2026-11-08T13:30:00Z",
                true,
                "Sunday 19:00 IST, Muhurat session",
            ),
            (
                "2026-11-08T14:00:00Z",
                false,
                "Sunday 19:30 IST, after Muhurat",
            ),
            (
                "2026-11-09T05:30:00Z",
                true,
                "Monday 11:00 IST between the two",
            ),
        ];
        let calendar = diwali_2026();
        for (t, expected, what) in cases {
            assert_eq!(in_market_hours(&calendar, utc(t)), expected, "{what}");
        }
    }

    #[test]
    fn before_open_is_fifteen_minutes_before_the_session() {
        let calendar = diwali_2026();
        assert_eq!(
            before_open(&calendar, utc("2026-11-23T05:30:00Z")),
            utc("2026-11-23T03:15:00Z"),
            "08:45 IST on a regular day"
        );
        assert_eq!(
            before_open(&calendar, utc("2026-11-08T13:30:00Z")),
            utc("2026-11-08T12:00:00Z"),
            "17:30 IST before the Muhurat session"
        );
    }

    #[test]
    fn market_close_is_the_end_of_the_session() {
        let calendar = diwali_2026();
        assert_eq!(
            market_close(&calendar, utc("2026-11-23T05:30:00Z")),
            utc("2026-11-23T10:00:00Z"),
            "15:30 IST on a regular day"
        );
        assert_eq!(
            market_close(&calendar, utc("2026-11-08T13:00:00Z")),
            utc("2026-11-08T14:00:00Z"),
            "19:30 IST at the end of the Muhurat session"
        );
    }

    #[test]
    fn next_session_skips_weekends_and_holidays() {
        let calendar = diwali_2026();
        // Saturday 7 Nov noon: the next session is Sunday's Muhurat evening.
        assert_eq!(
            next_session(&calendar, utc("2026-11-07T06:30:00Z")).map(|s| s.0),
            Some(utc("2026-11-08T12:15:00Z"))
        );
        // Monday 9 Nov after close: Tuesday is a holiday, so Wednesday 09:00 IST.
        assert_eq!(
            next_session(&calendar, utc("2026-11-09T11:00:00Z")).map(|s| s.0),
            Some(utc("2026-11-11T03:30:00Z"))
        );
        // During a session, that session.
        assert_eq!(
            next_session(&calendar, utc("2026-11-09T05:30:00Z")).map(|s| s.0),
            Some(utc("2026-11-09T03:30:00Z"))
        );
    }
}

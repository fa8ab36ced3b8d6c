//! NSE trading hours in IST (docs/dhan-api.md §8). A new token kills the one running trading
//! processes hold, so proactive refreshes stay out of these hours.

use chrono::{DateTime, Datelike, FixedOffset, NaiveTime, TimeZone, Utc, Weekday};

/// India Standard Time: UTC+05:30 all year (India has no daylight saving time).
pub fn ist() -> FixedOffset {
    FixedOffset::east_opt(5 * 3600 + 1800).expect("valid offset")
}

/// Pre-open starts at 09:00; trading runs 09:15–15:30, Monday to Friday.
const GUARD_START: (u32, u32) = (9, 0);
const MARKET_CLOSE: (u32, u32) = (15, 30);
/// Where a proactive refresh that would land in market hours is moved to: well before pre-open.
const PULL_BACK_TO: (u32, u32) = (8, 45);

fn at(day: DateTime<FixedOffset>, (hour, minute): (u32, u32)) -> DateTime<Utc> {
    let time = NaiveTime::from_hms_opt(hour, minute, 0).expect("valid time");
    ist()
        .from_local_datetime(&day.date_naive().and_time(time))
        .single()
        .expect("IST has no gaps")
        .with_timezone(&Utc)
}

/// True from pre-open (09:00) to close (15:30) IST on weekdays. Exchange holidays are not
/// modelled: on a holiday this errs on the side of not minting.
pub fn in_market_hours(t: DateTime<Utc>) -> bool {
    let local = t.with_timezone(&ist());
    if matches!(local.weekday(), Weekday::Sat | Weekday::Sun) {
        return false;
    }
    at(local, GUARD_START) <= t && t < at(local, MARKET_CLOSE)
}

/// The 15:30 IST close of the day `t` falls on.
pub fn market_close(t: DateTime<Utc>) -> DateTime<Utc> {
    at(t.with_timezone(&ist()), MARKET_CLOSE)
}

/// The 08:45 IST before the session `t` falls in.
pub fn before_open(t: DateTime<Utc>) -> DateTime<Utc> {
    at(t.with_timezone(&ist()), PULL_BACK_TO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn market_hours_are_ist_weekdays() {
        // Monday 2026-11-23.
        let cases = [
            ("2026-11-23T03:29:59Z", false), // 08:59:59 IST
            ("2026-11-23T03:30:00Z", true),  // 09:00 IST pre-open
            ("2026-11-23T05:30:00Z", true),  // 11:00 IST
            ("2026-11-23T09:59:59Z", true),  // 15:29:59 IST
            ("2026-11-23T10:00:00Z", false), // 15:30 IST close
            ("2026-11-21T05:30:00Z", false), // Saturday 11:00 IST
            ("2026-11-22T05:30:00Z", false), // Sunday 11:00 IST
        ];
        for (t, expected) in cases {
            assert_eq!(in_market_hours(utc(t)), expected, "{t}");
        }
    }

    #[test]
    fn market_close_is_1530_ist_the_same_day() {
        assert_eq!(
            market_close(utc("2026-11-23T05:30:00Z")),
            utc("2026-11-23T10:00:00Z")
        );
    }

    #[test]
    fn before_open_is_0845_ist_the_same_day() {
        assert_eq!(
            before_open(utc("2026-11-23T05:30:00Z")),
            utc("2026-11-23T03:15:00Z")
        );
    }
}

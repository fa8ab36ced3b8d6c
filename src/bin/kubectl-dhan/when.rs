//! Times as people read them in a terminal: "in 17h", "3m ago", and IST wall-clock times.

use chrono::{DateTime, Utc};
use dhan_operator::decision::market::ist;

/// A duration in the largest unit that keeps it short, like kubectl's AGE column.
fn short(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// "in 17h" for the future, "3m ago" for the past.
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (t - now).num_seconds();
    if seconds >= 0 {
        format!("in {}", short(seconds))
    } else {
        format!("{} ago", short(-seconds))
    }
}

/// A time that has happened: "3m ago", and "0s ago" for a time a clock slightly ahead of ours
/// wrote.
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!("{} ago", short((now - t).num_seconds().max(0)))
}

/// An IST wall-clock time, the way Indian traders read it.
pub fn ist_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&ist())
        .format("%Y-%m-%d %H:%M:%S IST")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_like_kubectl_ages() {
        let now = DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let cases = [
            (17 * 3600 + 59 * 60, "in 17h"),
            (45, "in 45s"),
            (5 * 60 + 10, "in 5m"),
            (-3 * 60, "3m ago"),
            (3 * 86400, "in 3d"),
            (0, "in 0s"),
        ];
        for (offset, expected) in cases {
            let t = now + chrono::Duration::seconds(offset);
            assert_eq!(relative(t, now), expected, "{offset}");
        }
    }

    #[test]
    fn past_events_never_read_as_future() {
        let now = DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            ago(now + chrono::Duration::milliseconds(400), now),
            "0s ago"
        );
        assert_eq!(ago(now - chrono::Duration::seconds(5), now), "5s ago");
    }

    #[test]
    fn wall_clock_times_are_ist() {
        let t = DateTime::parse_from_rfc3339("2026-11-23T02:30:00Z").unwrap();
        assert_eq!(ist_time(t.with_timezone(&Utc)), "2026-11-23 08:00:00 IST");
    }
}

//! IST renderings. Dhan prints times as India local time *without* an offset (docs/dhan-api.md §1,
//! §4); India has no DST (§8), but chrono-tz is used anyway so the zone is named, not hard-coded.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Asia::Kolkata;

fn at_millis(unix_ms: i64) -> DateTime<chrono_tz::Tz> {
    DateTime::<Utc>::from_timestamp_millis(unix_ms)
        .unwrap_or_default()
        .with_timezone(&Kolkata)
}

/// `expiryTime` as the mint/renew responses carry it. Both forms have been seen (§1):
/// `2026-09-11T19:19:40.019` and `2025-09-23T12:37:23`. The fraction form mimics Java's
/// `LocalDateTime.toString()`, which drops the fraction entirely when the millis are zero.
pub fn expiry_time(unix_ms: i64, with_fraction: bool) -> String {
    let t = at_millis(unix_ms);
    let millis = unix_ms.rem_euclid(1000);
    if with_fraction && millis != 0 {
        format!("{}.{millis:03}", t.format("%Y-%m-%dT%H:%M:%S"))
    } else {
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    }
}

/// `tokenValidity` in `/v2/profile` (§4): `DD/MM/YYYY HH:MM`, IST.
pub fn token_validity(unix_secs: i64) -> String {
    at_millis(unix_secs * 1000)
        .format("%d/%m/%Y %H:%M")
        .to_string()
}

/// The IST calendar day, used for the 25-consents-per-day limit (§3: reset "probably midnight IST").
pub fn ist_date(unix_ms: i64) -> NaiveDate {
    at_millis(unix_ms).date_naive()
}

/// A plain IST date-time for informational fields (e.g. `dataValidity`).
pub fn plain(unix_ms: i64, fmt: &str) -> String {
    at_millis(unix_ms).format(fmt).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN1_2026_UTC_MS: i64 = 1_767_225_600_000;

    #[test]
    fn expiry_time_is_ist_without_offset() {
        assert_eq!(expiry_time(JAN1_2026_UTC_MS, false), "2026-01-01T05:30:00");
        // Zero millis: no fraction even in the fraction form (Java-like).
        assert_eq!(expiry_time(JAN1_2026_UTC_MS, true), "2026-01-01T05:30:00");
        assert_eq!(
            expiry_time(JAN1_2026_UTC_MS + 19, true),
            "2026-01-01T05:30:00.019"
        );
        assert_eq!(
            expiry_time(JAN1_2026_UTC_MS + 19, false),
            "2026-01-01T05:30:00"
        );
        // 18:30 UTC is already the next day in IST.
        assert_eq!(
            expiry_time(JAN1_2026_UTC_MS + 18 * 3_600_000 + 30 * 60_000, false),
            "2026-01-02T00:00:00"
        );
    }

    #[test]
    fn token_validity_and_date() {
        assert_eq!(token_validity(JAN1_2026_UTC_MS / 1000), "01/01/2026 05:30");
        let midnight_ist = JAN1_2026_UTC_MS - 5 * 3_600_000 - 30 * 60_000;
        assert_eq!(
            ist_date(midnight_ist - 1),
            NaiveDate::from_ymd_opt(2025, 12, 31).unwrap()
        );
        assert_eq!(
            ist_date(midnight_ist),
            NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
        );
    }
}

//! India Standard Time: how Dhan writes clock times.
//!
//! Dhan returns `expiryTime` and `tokenValidity` as IST wall-clock times without an offset
//! (docs/dhan-api.md §1, §4). Reading them as UTC is 5h30m wrong, so every such value goes through
//! this module. India has no daylight saving time (§8), so a fixed +05:30 offset is exact.

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// IST, UTC+05:30 all year round (docs/dhan-api.md §8).
pub const IST: FixedOffset = match FixedOffset::east_opt(5 * 3600 + 30 * 60) {
    Some(offset) => offset,
    None => panic!("+05:30 is a valid offset"),
};

/// A Dhan time string that could not be read. The value is not secret, so it is kept for the
/// message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable Dhan time {value:?}: expected {expected}")]
pub struct IstParseError {
    /// The offending input (truncated).
    pub value: String,
    /// The format that was expected.
    pub expected: &'static str,
}

impl IstParseError {
    fn new(value: &str, expected: &'static str) -> Self {
        Self {
            value: value.chars().take(40).collect(),
            expected,
        }
    }
}

/// Parses a token response's `expiryTime` (docs/dhan-api.md §1).
///
/// Dhan sends IST without an offset, with or without a fraction (`2026-09-11T19:19:40.019`,
/// `2025-09-23T12:37:23`). Should a server ever add `Z` or an explicit offset, that offset is
/// honoured instead of assuming IST.
pub fn parse_expiry_time(raw: &str) -> Result<DateTime<Utc>, IstParseError> {
    const EXPECTED: &str = "YYYY-MM-DDTHH:MM:SS[.fff] in IST";
    let value = raw.trim();
    if let Ok(with_offset) = DateTime::parse_from_rfc3339(value) {
        return Ok(with_offset.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(value, format) {
            return Ok(ist_to_utc(naive));
        }
    }
    // Offsets written without a colon (`+0530`) are not RFC 3339 but cost nothing to accept.
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(with_offset) = DateTime::parse_from_str(value, format) {
            return Ok(with_offset.with_timezone(&Utc));
        }
    }
    Err(IstParseError::new(raw, EXPECTED))
}

/// Parses the profile's `tokenValidity`, `DD/MM/YYYY HH:MM` in IST (docs/dhan-api.md §4).
pub fn parse_token_validity(raw: &str) -> Result<DateTime<Utc>, IstParseError> {
    const EXPECTED: &str = "DD/MM/YYYY HH:MM in IST";
    let value = raw.trim();
    for format in ["%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(value, format) {
            return Ok(ist_to_utc(naive));
        }
    }
    Err(IstParseError::new(raw, EXPECTED))
}

/// Reads a naive wall-clock time as IST.
pub fn ist_to_utc(naive: NaiveDateTime) -> DateTime<Utc> {
    // A fixed offset has exactly one mapping for every local time; no DST gaps or folds.
    IST.from_local_datetime(&naive)
        .single()
        .expect("a fixed offset maps every local time exactly once")
        .with_timezone(&Utc)
}

/// Dhan counts a day's refused logins by its own clock, and a node's may be off by minutes (a
/// clock that stepped, not yet set right by NTP): no credentials are sent within this margin
/// of IST midnight, and what waits for the next IST day goes this long after it, so each
/// submission lands in the day it is counted in, by either clock.
pub const MIDNIGHT_MARGIN: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// When the `margin` around IST midnight that `now` falls in ends; `None` outside it.
pub fn near_midnight(now: DateTime<Utc>, margin: std::time::Duration) -> Option<DateTime<Utc>> {
    if margin.is_zero() {
        return None;
    }
    let margin = Duration::from_std(margin).unwrap_or(Duration::MAX);
    let next = next_ist_midnight(now);
    if next - now <= margin {
        return Some(next + margin);
    }
    let last = next - Duration::days(1);
    (now - last < margin).then_some(last + margin)
}

/// The first IST midnight strictly after `now`.
///
/// Dhan's 25-consents-per-day limit (docs/dhan-api.md §3) most probably resets at midnight IST; the
/// exact reset time is undocumented, so callers should treat this as the earliest retry.
pub fn next_ist_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let today: NaiveDate = now.with_timezone(&IST).date_naive();
    let tomorrow = today + Duration::days(1);
    ist_to_utc(tomorrow.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn expiry_time_is_ist_not_utc() {
        assert_eq!(
            parse_expiry_time("2026-09-11T19:19:40.019").unwrap(),
            utc("2026-09-11T13:49:40.019Z")
        );
    }

    #[test]
    fn expiry_time_formats_dhan_has_been_seen_to_send() {
        let cases = [
            ("2026-09-11T19:19:40.019", "2026-09-11T13:49:40.019Z"),
            ("2025-09-23T12:37:23", "2025-09-23T07:07:23Z"),
            ("2025-09-23 12:37:23", "2025-09-23T07:07:23Z"),
            ("2025-09-23T12:37:23.123456", "2025-09-23T07:07:23.123456Z"),
            ("  2025-09-23T12:37:23  ", "2025-09-23T07:07:23Z"),
            ("2025-09-23T12:37", "2025-09-23T07:07:00Z"),
            // Just after midnight IST is the previous day in UTC.
            ("2025-09-24T02:00:00", "2025-09-23T20:30:00Z"),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_expiry_time(input).unwrap(), utc(expected), "{input}");
        }
    }

    #[test]
    fn expiry_time_with_explicit_offset_honours_the_offset() {
        let cases = [
            ("2025-09-23T12:37:23Z", "2025-09-23T12:37:23Z"),
            ("2025-09-23T12:37:23.5Z", "2025-09-23T12:37:23.5Z"),
            ("2025-09-23T12:37:23+05:30", "2025-09-23T07:07:23Z"),
            ("2025-09-23T12:37:23+0530", "2025-09-23T07:07:23Z"),
            ("2025-09-23T12:37:23-01:00", "2025-09-23T13:37:23Z"),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_expiry_time(input).unwrap(), utc(expected), "{input}");
        }
    }

    #[test]
    fn unreadable_expiry_time_is_an_error() {
        for input in [
            "",
            "tomorrow",
            "23/09/2025 12:37",
            "2025-13-01T00:00:00",
            "1758611243",
        ] {
            assert!(parse_expiry_time(input).is_err(), "{input:?}");
        }
    }

    #[test]
    fn token_validity_is_day_first_ist() {
        let cases = [
            ("30/03/2025 15:37", "2025-03-30T10:07:00Z"),
            ("01/12/2025 00:10", "2025-11-30T18:40:00Z"),
            ("01/12/2025 00:10:30", "2025-11-30T18:40:30Z"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_token_validity(input).unwrap(),
                utc(expected),
                "{input}"
            );
        }
    }

    #[test]
    fn token_validity_rejects_month_first_and_iso() {
        for input in ["03/30/2025 15:37", "2025-03-30T15:37:00", ""] {
            assert!(parse_token_validity(input).is_err(), "{input:?}");
        }
    }

    #[test]
    fn ist_is_five_and_a_half_hours_ahead_of_utc() {
        assert_eq!(IST.local_minus_utc(), 19_800);
    }

    #[test]
    fn next_ist_midnight_is_the_coming_indian_midnight() {
        let cases = [
            // 10:00 IST → midnight starting the next IST day (18:30 UTC the same day).
            ("2025-09-23T04:30:00Z", "2025-09-23T18:30:00Z"),
            // 23:59 IST.
            ("2025-09-23T18:29:00Z", "2025-09-23T18:30:00Z"),
            // Exactly midnight IST → the following midnight.
            ("2025-09-23T18:30:00Z", "2025-09-24T18:30:00Z"),
            // 00:30 IST on the 24th (still the 23rd in UTC).
            ("2025-09-23T19:00:00Z", "2025-09-24T18:30:00Z"),
        ];
        for (now, expected) in cases {
            assert_eq!(next_ist_midnight(utc(now)), utc(expected), "{now}");
        }
    }

    #[test]
    fn parse_error_message_names_the_expected_format() {
        let err = parse_token_validity("garbage").unwrap_err();
        assert!(err.to_string().contains("DD/MM/YYYY HH:MM"));
    }
}

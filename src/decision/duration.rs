//! Go-style durations (`90s`, `10m`, `1h30m`, `0`) as written in Kubernetes manifests.

use std::time::Duration;

/// Parses a duration such as `10m`, `1h30m`, `45s` or `0`. Units: `ms`, `s`, `m`, `h`, `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("is empty".into());
    }
    if text.starts_with('-') {
        return Err(format!("{text:?} is negative"));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("{text:?} is not a duration like 90s, 10m or 1h30m"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?} is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds_per_unit: f64 = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "" => return Err(format!("{text:?} lacks a unit (s, m, h)")),
            other => return Err(format!("{text:?} has an unknown unit {other:?}")),
        };
        rest = &rest[unit_len..];
        total += Duration::from_secs_f64(number as f64 * seconds_per_unit);
    }
    Ok(total)
}

/// Formats a duration compactly for messages: `2m5s`, `1h`, `30s`.
pub fn format_duration(duration: Duration) -> String {
    let mut secs = duration.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_people_write() {
        let cases = [
            ("0", 0),
            ("45s", 45),
            ("10m", 600),
            ("1h30m", 5400),
            ("2h", 7200),
            ("1d", 86400),
            (" 15m ", 900),
        ];
        for (text, secs) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn rejects_negative_unitless_and_unknown_units() {
        for text in ["-5m", "10", "5x", "m", "", "1h-2m", "ten minutes"] {
            assert!(parse_duration(text).is_err(), "{text:?} should be rejected");
        }
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format_duration(Duration::from_secs(125)), "2m5s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}

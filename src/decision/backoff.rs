//! Retry spacing after transient failures.

use std::time::Duration;

/// First retry after about a minute.
pub const INITIAL: Duration = Duration::from_secs(60);
/// Capped well under an hour so a recovered Dhan is noticed quickly.
pub const CAP: Duration = Duration::from_secs(30 * 60);

/// Delay before retry number `failed_attempts` (1 = after the first failure): 1m, 2m, 4m, … 30m.
pub fn delay(failed_attempts: u32) -> Duration {
    let exponent = failed_attempts.saturating_sub(1).min(16);
    INITIAL.saturating_mul(1 << exponent).min(CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_a_minute_and_caps_at_thirty_minutes() {
        let minutes: Vec<u64> = (1..=8).map(|n| delay(n).as_secs() / 60).collect();
        assert_eq!(minutes, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(delay(0), INITIAL);
        assert_eq!(delay(u32::MAX), CAP);
    }
}

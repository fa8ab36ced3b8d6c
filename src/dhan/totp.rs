//! TOTP codes for minting (docs/dhan-api.md §1) and when it is safe to send one.
//!
//! Dhan rejects a correct code that was already used within its 30-second step (replay
//! protection, §1), and a code sent in the last seconds of its step may arrive after the step has
//! ended. So the code itself is the easy part; [`TotpKey::plan`] decides *when* to send.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};

/// Length of a TOTP step (RFC 6238 default, which Dhan uses).
pub const STEP_SECONDS: u64 = 30;

/// Never submit a code with fewer than this many seconds left in its step: network latency
/// could carry it into the next step, where Dhan rejects it.
pub const MIN_REMAINING_SECONDS: u64 = 5;

/// Fewer base32 characters than this is certainly not an authenticator key (it would be under
/// 40 bits); most likely another credential (e.g. the PIN) pasted into the wrong field.
const MIN_KEY_CHARS: usize = 8;

/// A decoded TOTP shared secret. `Debug` never shows it.
#[derive(Clone)]
pub struct TotpKey {
    totp: totp_rs::Totp,
}

/// Why a TOTP secret was rejected. Never contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TotpKeyError {
    /// Nothing left after removing spaces, dashes and padding.
    #[error("the TOTP secret is empty")]
    Empty,
    /// A character outside the base32 alphabet. Only its position is reported.
    #[error(
        "the TOTP secret is not base32: character {position} is not one of A-Z or 2-7 \
         (spaces, dashes and trailing '=' are ignored)"
    )]
    NotBase32 {
        /// 1-based position in the secret as given.
        position: usize,
    },
    /// Too short to be an authenticator key.
    #[error("the TOTP secret is too short: {length} base32 characters, expected at least 8")]
    TooShort {
        /// Number of base32 characters found.
        length: usize,
    },
}

impl TotpKeyError {
    /// Stable reason for status conditions and metrics.
    pub fn reason(&self) -> &'static str {
        "InvalidTotpSecret"
    }
}

/// What to do about a TOTP code right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodePlan {
    /// Send this code now; record `step` as used for the client once it has been sent.
    Send {
        /// Six digits.
        code: String,
        /// The step the code belongs to (`unix seconds / 30`).
        step: u64,
    },
    /// No acceptable code now; ask again at this time (the start of the first acceptable step).
    WaitUntil(DateTime<Utc>),
}

impl TotpKey {
    /// Parses a base32 secret as users paste it.
    ///
    /// Accepts lower case, spaces, dashes and trailing `=` padding. Dhan's keys are 15–30+
    /// characters, not always a multiple of 8, and shorter than the 128 bits RFC 4226 asks for,
    /// so leftover bits are dropped (as authenticator apps do) and no minimum strength is imposed.
    pub fn parse(raw: &str) -> Result<TotpKey, TotpKeyError> {
        let mut symbols = Vec::with_capacity(raw.len());
        let mut padding_started = false;
        for (index, c) in raw.chars().enumerate() {
            let position = index + 1;
            match c {
                ' ' | '\t' | '\r' | '\n' | '-' => {}
                '=' => padding_started = true,
                _ if padding_started => return Err(TotpKeyError::NotBase32 { position }),
                _ => match base32_value(c) {
                    Some(v) => symbols.push(v),
                    None => return Err(TotpKeyError::NotBase32 { position }),
                },
            }
        }
        if symbols.is_empty() {
            return Err(TotpKeyError::Empty);
        }
        if symbols.len() < MIN_KEY_CHARS {
            return Err(TotpKeyError::TooShort {
                length: symbols.len(),
            });
        }
        let secret = decode_base32(&symbols);
        // `build_noncompliant` because `build` rejects secrets under 128 bits, which Dhan issues.
        let totp = totp_rs::Builder::new()
            .with_algorithm(totp_rs::Algorithm::SHA1)
            .with_digits(6)
            .with_step_duration(STEP_SECONDS)
            .with_secret(secret)
            .build_noncompliant();
        Ok(TotpKey { totp })
    }

    /// The six-digit code for a step (`unix seconds / 30`).
    pub fn code_for_step(&self, step: u64) -> String {
        self.totp.generate(step * STEP_SECONDS).to_string()
    }

    /// Decides whether a code can be sent at `now`.
    ///
    /// The current step is used unless fewer than [`MIN_REMAINING_SECONDS`] remain in it, or it
    /// is not after `last_used_step` — a step already used for this client would be rejected as
    /// a replay (docs/dhan-api.md §1). Otherwise the answer is to wait for the first acceptable step.
    pub fn plan(&self, now: DateTime<Utc>, last_used_step: Option<u64>) -> CodePlan {
        let current = step_at(now);
        let remaining = step_start(current + 1) - now;
        let mut candidate = if remaining < TimeDelta::seconds(MIN_REMAINING_SECONDS as i64) {
            current + 1
        } else {
            current
        };
        if let Some(last) = last_used_step {
            candidate = candidate.max(last.saturating_add(1));
        }
        if candidate == current {
            CodePlan::Send {
                code: self.code_for_step(current),
                step: current,
            }
        } else {
            CodePlan::WaitUntil(step_start(candidate))
        }
    }
}

impl fmt::Debug for TotpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpKey(<redacted>)")
    }
}

/// The TOTP step containing `now` (times before 1970 count as step 0).
pub fn step_at(now: DateTime<Utc>) -> u64 {
    u64::try_from(now.timestamp()).unwrap_or(0) / STEP_SECONDS
}

/// When `step` begins.
pub fn step_start(step: u64) -> DateTime<Utc> {
    let seconds = i64::try_from(step.saturating_mul(STEP_SECONDS)).unwrap_or(i64::MAX);
    DateTime::from_timestamp(seconds, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn base32_value(c: char) -> Option<u8> {
    match c.to_ascii_uppercase() {
        u @ 'A'..='Z' => Some(u as u8 - b'A'),
        d @ '2'..='7' => Some(d as u8 - b'2' + 26),
        _ => None,
    }
}

/// RFC 4648 base32 decoding of already validated 5-bit symbols; incomplete trailing bits are
/// dropped, as Google Authenticator and friends do for keys whose length is not a multiple of 8.
fn decode_base32(symbols: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(symbols.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &symbol in symbols {
        buffer = (buffer << 5) | u32::from(symbol);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Base32 of the RFC 6238 SHA-1 test key, the ASCII bytes "12345678901234567890".
    const RFC_KEY: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn at_millis(millis: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(millis).unwrap()
    }

    #[test]
    fn matches_rfc_6238_sha1_vectors_truncated_to_six_digits() {
        let key = TotpKey::parse(RFC_KEY).unwrap();
        let vectors = [
            (59u64, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
            (20_000_000_000, "353130"),
        ];
        for (unix, expected) in vectors {
            assert_eq!(key.code_for_step(unix / STEP_SECONDS), expected, "T={unix}");
        }
    }

    #[test]
    fn key_normalisation_accepts_how_people_paste_secrets() {
        let reference = TotpKey::parse(RFC_KEY).unwrap().code_for_step(1);
        let variants = [
            "gezdgnbvgy3tqojqgezdgnbvgy3tqojq",
            "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ",
            "gezd-gnbv-gy3t-qojq-gezd-gnbv-gy3t-qojq",
            "  GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ====",
        ];
        for variant in variants {
            let key = TotpKey::parse(variant).unwrap_or_else(|e| panic!("{variant:?}: {e}"));
            assert_eq!(key.code_for_step(1), reference, "{variant:?}");
        }
    }

    #[test]
    fn dhan_length_keys_of_15_to_32_chars_are_accepted() {
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        for length in 15..=32 {
            let key = TotpKey::parse(&alphabet[..length]).unwrap();
            let code = key.code_for_step(57_000_000);
            assert_eq!(code.len(), 6);
            assert!(code.chars().all(|c| c.is_ascii_digit()));
        }
    }

    #[test]
    fn non_multiple_of_eight_keys_drop_trailing_bits() {
        // 16 chars = 10 bytes exactly; appending 1–7 chars adds at most 4 bytes, and the
        // leftover bits are ignored rather than rejected.
        assert_eq!(decode_base32(&[0; 16]).len(), 10);
        assert_eq!(decode_base32(&[0; 15]).len(), 9);
        assert_eq!(decode_base32(&[0; 26]).len(), 16);
        // "MZXW6YQ" is base32 of "foob" minus padding.
        let symbols: Vec<u8> = "MZXW6YQ"
            .chars()
            .map(|c| base32_value(c).unwrap())
            .collect();
        assert_eq!(decode_base32(&symbols), b"foob");
    }

    #[test]
    fn invalid_keys_are_rejected_without_echoing_them() {
        let cases = [
            ("", TotpKeyError::Empty),
            ("  - -  ", TotpKeyError::Empty),
            ("====", TotpKeyError::Empty),
            ("JBSWY3DPEHPK3PX1", TotpKeyError::NotBase32 { position: 16 }),
            ("JBSWY3DPEHPK3PX0", TotpKeyError::NotBase32 { position: 16 }),
            ("JBSW8Y3DPEHPK3PX", TotpKeyError::NotBase32 { position: 5 }),
            ("JBSWY3DP=EHPK3PX", TotpKeyError::NotBase32 { position: 10 }),
            ("JBSWY3DPÉHPK3PXP", TotpKeyError::NotBase32 { position: 9 }),
            ("123456", TotpKeyError::NotBase32 { position: 1 }),
            ("JBSWY3D", TotpKeyError::TooShort { length: 7 }),
        ];
        for (input, expected) in cases {
            let err = TotpKey::parse(input).unwrap_err();
            assert_eq!(err, expected, "{input:?}");
            assert_eq!(err.reason(), "InvalidTotpSecret");
            let compact = input.trim();
            if compact.len() > 3 {
                assert!(!err.to_string().contains(compact), "{err}");
                assert!(!format!("{err:?}").contains(compact), "{err:?}");
            }
        }
    }

    #[test]
    fn totp_key_debug_is_redacted() {
        let key = TotpKey::parse(RFC_KEY).unwrap();
        let printed = format!("{key:?} {key:#?}");
        assert_eq!(format!("{key:?}"), "TotpKey(<redacted>)");
        assert!(!printed.contains(RFC_KEY));
        assert!(!printed.contains("12345678901234567890"));
    }

    #[test]
    fn fresh_step_sends_its_code() {
        let key = TotpKey::parse(RFC_KEY).unwrap();
        // T=59 is the last second of step 1 — too late; T=31 has 29 s left.
        assert_eq!(
            key.plan(at(31), None),
            CodePlan::Send {
                code: key.code_for_step(1),
                step: 1
            }
        );
    }

    #[test]
    fn plan_timing_table() {
        let key = TotpKey::parse(RFC_KEY).unwrap();
        let send = |step: u64| CodePlan::Send {
            code: key.code_for_step(step),
            step,
        };
        let wait = |secs: i64| CodePlan::WaitUntil(at(secs));
        let cases = [
            // (now in ms, last used step, expected)
            (30_000, None, send(1)),      // first second of a step: 30 s left
            (54_999, None, send(1)),      // 5.001 s left
            (55_000, None, send(1)),      // exactly 5 s left is still enough
            (55_001, None, wait(60)),     // 4.999 s left: too close to the edge
            (59_000, None, wait(60)),     // last second
            (30_000, Some(0), send(1)),   // previous step used: this one is fresh
            (30_000, Some(1), wait(60)),  // this step already used: never reuse it
            (56_000, Some(1), wait(60)),  // both rules agree on the next step
            (30_000, Some(5), wait(180)), // clock went backwards: still never reuse
        ];
        for (now_ms, last, expected) in cases {
            assert_eq!(
                key.plan(at_millis(now_ms), last),
                expected,
                "now={now_ms}ms last={last:?}"
            );
        }
    }

    #[test]
    fn reused_totp_step_waits_for_next_step() {
        let key = TotpKey::parse(RFC_KEY).unwrap();
        let now = at(1_758_600_001); // 1 s into step 58_620_000
        let CodePlan::Send { step, .. } = key.plan(now, None) else {
            panic!("a fresh step should be usable");
        };
        assert_eq!(step, 58_620_000);
        assert_eq!(
            key.plan(now, Some(step)),
            CodePlan::WaitUntil(step_start(step + 1))
        );
        // …and at that time the next step is sent.
        assert_eq!(
            key.plan(step_start(step + 1), Some(step)),
            CodePlan::Send {
                code: key.code_for_step(step + 1),
                step: step + 1
            }
        );
    }

    #[test]
    fn never_sends_a_code_with_less_than_five_seconds_left() {
        let key = TotpKey::parse(RFC_KEY).unwrap();
        let step_begin = 1_758_600_000_000i64;
        for offset_ms in (0..30_000).step_by(250) {
            let now = at_millis(step_begin + offset_ms);
            match key.plan(now, None) {
                CodePlan::Send { step, .. } => {
                    let left = step_start(step + 1) - now;
                    assert!(left >= TimeDelta::seconds(5), "sent with {left} left");
                    assert_eq!(step, step_at(now));
                }
                CodePlan::WaitUntil(when) => {
                    assert!(when > now);
                    assert!(when - now < TimeDelta::seconds(5));
                    assert!(matches!(key.plan(when, None), CodePlan::Send { .. }));
                }
            }
        }
    }

    #[test]
    fn step_helpers_round_trip() {
        assert_eq!(step_at(at(0)), 0);
        assert_eq!(step_at(at(29)), 0);
        assert_eq!(step_at(at(30)), 1);
        assert_eq!(step_at(at(-100)), 0);
        assert_eq!(step_start(step_at(at(1_758_600_017))), at(1_758_600_000));
    }
}

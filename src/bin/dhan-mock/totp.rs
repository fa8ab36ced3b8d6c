//! RFC 6238 checks (SHA1, 6 digits, 30 s) as Dhan does them for `generateAccessToken` and the
//! consent login page (docs/dhan-api.md §1, §3).
//!
//! `totp_rs::Builder::build_noncompliant` is used because Dhan secrets can be shorter than the
//! 128 bits the compliant constructor insists on.

use totp_rs::Builder;

pub const STEP_SECONDS: u64 = 30;

/// Decodes a base32 secret the way authenticator apps do: spaces, padding and case are ignored.
pub fn decode_secret(b32: &str) -> Option<Vec<u8>> {
    let cleaned: String = b32
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=' && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if cleaned.is_empty() {
        return None;
    }
    let secret = totp_rs::Secret::try_from_base32(&cleaned).ok()?;
    let bytes = secret.as_bytes().to_vec();
    (!bytes.is_empty()).then_some(bytes)
}

pub fn code_at(secret: &[u8], unix_secs: u64) -> String {
    Builder::new()
        .with_secret(secret.to_vec())
        .build_noncompliant()
        .generate(unix_secs)
        .to_string()
}

/// The step `code` belongs to: the current one or, for clock skew, the previous one.
/// Replay rejection is the caller's job (it needs per-client memory).
pub fn matching_step(secret: &[u8], code: &str, unix_secs: u64) -> Option<u64> {
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = unix_secs / STEP_SECONDS;
    [current, current.saturating_sub(1)]
        .into_iter()
        .find(|step| code_at(secret, step * STEP_SECONDS) == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vector() {
        // RFC 6238 appendix B, SHA1, T=59 → 94287082 (8 digits); 6-digit form is the last six.
        let secret = b"12345678901234567890";
        assert_eq!(code_at(secret, 59), "287082");
        assert_eq!(code_at(secret, 1_111_111_109), "081804");
    }

    #[test]
    fn base32_decoding_is_lenient_and_short_secrets_work() {
        // "GEZDGNBV" = "12345": 40 bits, far below RFC 4226's 128, as some Dhan keys are.
        assert_eq!(decode_secret("gezd gnbv").unwrap(), b"12345");
        assert_eq!(decode_secret("GEZDGNBV===").unwrap(), b"12345");
        assert!(decode_secret("not base32 !!").is_none());
        assert!(decode_secret("").is_none());
        let short = decode_secret("GEZDGNBV").unwrap();
        assert_eq!(code_at(&short, 100).len(), 6);
    }

    #[test]
    fn accepts_current_and_previous_step_only() {
        let secret = b"12345678901234567890";
        let now = 1_700_000_015; // step 56_666_667
        let step = now / 30;
        assert_eq!(
            matching_step(secret, &code_at(secret, now), now),
            Some(step)
        );
        assert_eq!(
            matching_step(secret, &code_at(secret, now - 30), now),
            Some(step - 1)
        );
        assert_eq!(matching_step(secret, &code_at(secret, now - 60), now), None);
        assert_eq!(matching_step(secret, &code_at(secret, now + 30), now), None);
        assert_eq!(matching_step(secret, "12345", now), None);
        assert_eq!(matching_step(secret, "abcdef", now), None);
    }
}

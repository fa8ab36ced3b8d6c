//! What a claim Lease says, and how claims are named: plain values, no API calls.

use crate::leader::SKEW_MARGIN;
use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::LeaseSpec;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// What a claim Lease says to a would-be holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No Lease yet.
    Absent,
    /// Held by `holder` already.
    Ours,
    /// Released, or not renewed in time by its holder.
    Free,
    /// Someone else holds it.
    Taken,
}

/// The verdict of a Lease's `spec` for `holder` at `now`. A lapsed claim counts as free only
/// [`SKEW_MARGIN`] after it lapsed by this clock; its holder stops minting that much before
/// by its own (see `crate::leader` for the clock assumption).
pub fn verdict(lease: Option<&LeaseSpec>, holder: &str, now: DateTime<Utc>) -> Verdict {
    let Some(spec) = lease else {
        return Verdict::Absent;
    };
    let Some(current) = spec.holder_identity.as_deref().filter(|h| !h.is_empty()) else {
        return Verdict::Free;
    };
    if current == holder {
        return Verdict::Ours;
    }
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .and_then(|t| DateTime::from_timestamp_micros(t.0.as_microsecond()));
    let duration = spec.lease_duration_seconds.unwrap_or(0).max(0) as u64;
    match renewed {
        Some(renewed) => {
            let lapsed = renewed + Duration::from_secs(duration) + SKEW_MARGIN;
            if now > lapsed {
                Verdict::Free
            } else {
                Verdict::Taken
            }
        }
        None => Verdict::Free,
    }
}

/// A short hash of a client ID: names its claim Lease and, when asked, stands for it in metric
/// labels. Not a secret: client IDs are short digit strings anyone can hash through.
pub fn client_hash(client_id: &str) -> String {
    let digest = Sha256::digest(format!("dhan-client-id:{}", client_id.trim()));
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The claim Lease's name for `client_id`.
pub fn lease_name(client_id: &str) -> String {
    format!("dhan-client-{}", client_hash(client_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    const NOW: &str = "2026-11-23T02:30:00Z";

    fn spec(holder: Option<&str>, renewed_secs_ago: i64, duration: i32) -> LeaseSpec {
        let now: DateTime<Utc> = NOW.parse().unwrap();
        let renewed = now - chrono::Duration::seconds(renewed_secs_ago);
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(
                k8s_openapi::jiff::Timestamp::from_microsecond(renewed.timestamp_micros()).unwrap(),
            )),
            ..LeaseSpec::default()
        }
    }

    fn at(spec: Option<&LeaseSpec>, holder: &str) -> Verdict {
        verdict(spec, holder, NOW.parse().unwrap())
    }

    #[test]
    fn a_missing_lease_is_absent_and_an_empty_holder_is_free() {
        assert_eq!(at(None, "a/1"), Verdict::Absent);
        assert_eq!(at(Some(&spec(None, 0, 1800)), "a/1"), Verdict::Free);
        assert_eq!(at(Some(&spec(Some(""), 0, 1800)), "a/1"), Verdict::Free);
    }

    #[test]
    fn a_live_claim_is_ours_or_taken_by_its_holder() {
        let live = spec(Some("install-a/uid-1"), 60, 1800);
        assert_eq!(at(Some(&live), "install-a/uid-1"), Verdict::Ours);
        assert_eq!(at(Some(&live), "install-b/uid-9"), Verdict::Taken);
        assert_eq!(
            at(Some(&live), "install-a/uid-2"),
            Verdict::Taken,
            "another account"
        );
    }

    #[test]
    fn a_lapsed_claim_is_free_only_after_the_skew_margin() {
        let skew = SKEW_MARGIN.as_secs() as i64;
        let just_lapsed = spec(Some("install-a/uid-1"), 1800 + skew - 1, 1800);
        assert_eq!(at(Some(&just_lapsed), "install-b/uid-9"), Verdict::Taken);
        let lapsed = spec(Some("install-a/uid-1"), 1800 + skew + 1, 1800);
        assert_eq!(at(Some(&lapsed), "install-b/uid-9"), Verdict::Free);
    }

    #[test]
    fn lease_names_are_stable_hashes_that_do_not_show_the_client_id() {
        let name = lease_name("1000000001");
        assert_eq!(name, lease_name(" 1000000001 "), "spaces do not matter");
        assert_ne!(name, lease_name("1000000002"));
        assert!(!name.contains("1000000001"));
        assert!(name.len() <= 63, "a valid object name: {name}");
    }
}

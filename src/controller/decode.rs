//! Reading DhanAccounts one by one. The watch lists them as untyped objects, so one object that
//! does not fit the Rust types (say a status field out of range, written by anyone with status
//! rights, or an object stored under an older schema) is left out on its own, named with the
//! path of the offending field, instead of failing the whole list — which would stop every
//! account in every namespace.
//!
//! An object left out still holds its client ID: it may hold a live token, which a mint by
//! another account of the same client would kill (docs/dhan-api.md §1). What the one-minter
//! rule needs of it is read on its own, leniently.

use super::conflict::{self, Claim};
use crate::crd::{DhanAccount, Phase};
use crate::health::Skipped;
use chrono::{DateTime, Utc};
use kube::ResourceExt;
use kube::api::DynamicObject;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The longest decode error kept: it ends up in events and `/readyz`.
const MAX_WHY: usize = 300;

/// An object that is not a readable DhanAccount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undecodable {
    pub uid: String,
    pub skipped: Skipped,
    pub claim: SkippedClaim,
}

/// What an unreadable account claims of its client ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkippedClaim {
    /// The claim any account with its metadata, client ID and status would make; an
    /// unreadable `status.phase` or `status.expiresAt` counts as holding for ever.
    Holds(String, Claim),
    /// Being deleted: it claims nothing, as any account being deleted.
    Deleting,
    /// `spec.clientId` cannot be read: there is nothing to claim.
    NoClientId,
}

impl SkippedClaim {
    /// The claim to file, if any.
    pub fn filed(&self) -> Option<(String, Claim)> {
        match self {
            SkippedClaim::Holds(client, claim) => Some((client.clone(), claim.clone())),
            SkippedClaim::Deleting | SkippedClaim::NoClientId => None,
        }
    }

    /// What it means for the account's client ID, for its owner.
    pub fn consequence(&self) -> &'static str {
        match self {
            SkippedClaim::Holds(..) => {
                "Meanwhile it keeps its claim on its client ID: no other DhanAccount mints for \
                 it, as a new token would kill the one this account may hold."
            }
            SkippedClaim::Deleting => "It is being deleted and claims its client ID no more.",
            SkippedClaim::NoClientId => {
                "Its spec.clientId cannot be read either, so it claims no client ID: another \
                 DhanAccount of the same client may mint, which kills any token this one holds."
            }
        }
    }
}

/// The claim of `object`, read without decoding the rest of it.
pub fn skipped_claim(object: &DynamicObject) -> SkippedClaim {
    let Some(client_id) = object
        .data
        .pointer("/spec/clientId")
        .and_then(Value::as_str)
    else {
        return SkippedClaim::NoClientId;
    };
    let status = object.data.get("status");
    let expires_at = status_field::<DateTime<Utc>>(status, "expiresAt");
    let suspended = object.data.pointer("/spec/suspend") == Some(&Value::Bool(true));
    let holds_until = match (status_field::<Phase>(status, "phase"), &expires_at) {
        (Ok(phase), Ok(expires_at)) => conflict::holds_until(phase, *expires_at, suspended),
        // It may record a live token the operator cannot see.
        _ => None,
    };
    match Claim::new(
        &object.metadata,
        client_id,
        holds_until,
        expires_at.ok().flatten(),
    ) {
        Some((client, claim)) => SkippedClaim::Holds(client, claim),
        None => SkippedClaim::Deleting,
    }
}

/// Field `name` of `status`: `Ok(None)` when either is absent, `Err` when it cannot be read.
fn status_field<T: DeserializeOwned>(status: Option<&Value>, name: &str) -> Result<Option<T>, ()> {
    let status = match status {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(status)) => status,
        Some(_) => return Err(()),
    };
    match status.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => T::deserialize(value).map(Some).map_err(|_| ()),
    }
}

/// The DhanAccount in `object`, or why it cannot be read.
pub fn decode(object: &DynamicObject) -> Result<DhanAccount, Box<Undecodable>> {
    let value = serde_json::to_value(object).expect("an object from the API serialises");
    serde_path_to_error::deserialize::<_, DhanAccount>(value).map_err(|error| {
        let path = error.path().to_string();
        let why: String = format!("{path}: {}", error.inner())
            .chars()
            .take(MAX_WHY)
            .collect();
        Box::new(Undecodable {
            uid: object.uid().unwrap_or_default(),
            claim: skipped_claim(object),
            skipped: Skipped {
                object: format!(
                    "{}/{}",
                    object.namespace().unwrap_or_default(),
                    object.name_any()
                ),
                resource_version: object.resource_version(),
                why,
            },
        })
    })
}

/// A stand-in carrying only `object`'s metadata: enough to drop it from the controller's cache
/// (which keys objects by namespace and name).
pub fn stand_in(object: &DynamicObject) -> DhanAccount {
    DhanAccount {
        metadata: object.metadata.clone(),
        spec: Default::default(),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn object(status: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "dhan-operator.dev/v1alpha1", "kind": "DhanAccount",
            "metadata": {"name": "bad", "namespace": "trading", "uid": "u-1",
                         "resourceVersion": "42",
                         "creationTimestamp": "2026-11-01T00:00:00Z"},
            "spec": {"clientId": "1000000001", "credentialsSecret": "creds"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_well_formed_account_decodes() {
        let account = decode(&object(json!({"phase": "Ready", "failedAttempts": 2}))).unwrap();
        assert_eq!(account.spec.client_id, "1000000001");
        assert_eq!(account.status.unwrap().failed_attempts, Some(2));
    }

    #[test]
    fn an_out_of_range_status_field_is_named_by_its_path() {
        let error = decode(&object(json!({"failedAttempts": 5_000_000_000u64}))).unwrap_err();
        assert_eq!(error.uid, "u-1");
        assert_eq!(error.skipped.object, "trading/bad");
        assert_eq!(error.skipped.resource_version.as_deref(), Some("42"));
        assert!(
            error.skipped.why.starts_with("status.failedAttempts: "),
            "{}",
            error.skipped.why
        );
    }

    #[test]
    fn a_spec_of_the_wrong_shape_is_named_too() {
        let mut bad = object(json!({}));
        bad.data["spec"]["refresh"] = json!({"schedule": 8});
        let error = decode(&bad).unwrap_err();
        assert!(
            error.skipped.why.starts_with("spec.refresh.schedule: "),
            "{}",
            error.skipped.why
        );
    }

    #[test]
    fn the_reason_is_cut_to_a_readable_length() {
        // serde quotes an unknown variant in full.
        let error = decode(&object(json!({"phase": "x".repeat(2000)}))).unwrap_err();
        assert!(error.skipped.why.starts_with("status.phase: "));
        assert_eq!(error.skipped.why.chars().count(), MAX_WHY);
    }

    /// The claim an account with `object`'s metadata makes, holding until `until`.
    fn holding(object: &DynamicObject, until: Option<DateTime<Utc>>) -> SkippedClaim {
        let expires = object
            .data
            .pointer("/status/expiresAt")
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        let (client, claim) = Claim::new(&object.metadata, "1000000001", until, expires).unwrap();
        SkippedClaim::Holds(client, claim)
    }

    #[test]
    fn an_unreadable_account_claims_its_client_id_by_what_can_be_read_of_its_status() {
        let expiry: DateTime<Utc> = "2026-11-23T00:00:00Z".parse().unwrap();
        let never = Some(DateTime::<Utc>::MIN_UTC);
        for (status, until) in [
            (json!({"failedAttempts": 5_000_000_000u64}), None),
            (
                json!({"phase": "Ready", "expiresAt": expiry, "failedAttempts": -1}),
                None,
            ),
            (
                json!({"phase": "Failed", "expiresAt": expiry, "failedAttempts": -1}),
                Some(expiry),
            ),
            (json!({"phase": "Failed", "failedAttempts": -1}), never),
            (
                json!({"phase": "Failed", "expiresAt": null, "failedAttempts": -1}),
                never,
            ),
        ] {
            let object = object(status.clone());
            assert!(decode(&object).is_err(), "{status}");
            assert_eq!(skipped_claim(&object), holding(&object, until), "{status}");
        }
    }

    #[test]
    fn an_unreadable_phase_or_expiry_holds_the_client_id_for_ever() {
        // It may record a live token that a mint by another account would kill.
        for status in [
            json!({"phase": "Retired"}),
            json!({"phase": 3}),
            json!({"phase": "Failed", "expiresAt": "yesterday"}),
            json!({"phase": "Failed", "expiresAt": 1_700_000_000}),
            json!("not an object"),
            json!(true),
        ] {
            let object = object(status.clone());
            assert!(decode(&object).is_err(), "{status}");
            assert_eq!(skipped_claim(&object), holding(&object, None), "{status}");
        }
    }

    #[test]
    fn an_unreadable_spec_still_claims_its_client_id() {
        let mut bad = object(serde_json::Value::Null);
        bad.data["spec"]["refresh"] = json!({"schedule": 8});
        bad.data["spec"]["clientId"] = json!(" 1000000001 ");
        assert!(decode(&bad).is_err());
        assert_eq!(skipped_claim(&bad), holding(&bad, None));
        assert!(
            skipped_claim(&bad)
                .consequence()
                .contains("keeps its claim")
        );
    }

    #[test]
    fn an_unreadable_client_id_claims_nothing_and_says_so() {
        for client_id in [json!(1000000001), json!(null), json!({"id": "1"})] {
            let mut bad = object(json!({}));
            bad.data["spec"]["clientId"] = client_id.clone();
            let error = decode(&bad).unwrap_err();
            assert_eq!(error.claim, SkippedClaim::NoClientId, "{client_id}");
            assert_eq!(error.claim.filed(), None);
            assert!(error.claim.consequence().contains("claims no client ID"));
        }
    }

    #[test]
    fn an_unreadable_account_being_deleted_claims_nothing() {
        let mut bad = object(json!({"failedAttempts": -1}));
        bad.metadata.deletion_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap(),
        ));
        let error = decode(&bad).unwrap_err();
        assert_eq!(error.claim, SkippedClaim::Deleting);
        assert_eq!(error.claim.filed(), None);
    }

    #[test]
    fn the_claim_travels_with_the_decode_error() {
        let bad = object(json!({"failedAttempts": -1}));
        assert_eq!(decode(&bad).unwrap_err().claim, holding(&bad, None));
    }

    #[test]
    fn a_stand_in_keeps_the_identity_only() {
        let stand_in = stand_in(&object(json!({"failedAttempts": -1})));
        assert_eq!(stand_in.name_any(), "bad");
        assert_eq!(stand_in.namespace().as_deref(), Some("trading"));
        assert!(stand_in.status.is_none());
    }
}

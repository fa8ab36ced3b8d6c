//! Reading DhanAccounts one by one. The watch lists them as untyped objects, so one object that
//! does not fit the Rust types (say a status field out of range, written by anyone with status
//! rights, or an object stored under an older schema) is left out on its own, named with the
//! path of the offending field, instead of failing the whole list — which would stop every
//! account in every namespace.

use crate::crd::DhanAccount;
use crate::health::Skipped;
use kube::ResourceExt;
use kube::api::DynamicObject;

/// The longest decode error kept: it ends up in events and `/readyz`.
const MAX_WHY: usize = 300;

/// An object that is not a readable DhanAccount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undecodable {
    pub uid: String,
    pub skipped: Skipped,
}

/// The DhanAccount in `object`, or why it cannot be read.
pub fn decode(object: &DynamicObject) -> Result<DhanAccount, Undecodable> {
    let value = serde_json::to_value(object).expect("an object from the API serialises");
    serde_path_to_error::deserialize::<_, DhanAccount>(value).map_err(|error| {
        let path = error.path().to_string();
        let why: String = format!("{path}: {}", error.inner())
            .chars()
            .take(MAX_WHY)
            .collect();
        Undecodable {
            uid: object.uid().unwrap_or_default(),
            skipped: Skipped {
                object: format!(
                    "{}/{}",
                    object.namespace().unwrap_or_default(),
                    object.name_any()
                ),
                resource_version: object.resource_version(),
                why,
            },
        }
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
    use serde_json::json;

    fn object(status: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "dhan-operator.dev/v1alpha1", "kind": "DhanAccount",
            "metadata": {"name": "bad", "namespace": "trading", "uid": "u-1",
                         "resourceVersion": "42"},
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

    #[test]
    fn a_stand_in_keeps_the_identity_only() {
        let stand_in = stand_in(&object(json!({"failedAttempts": -1})));
        assert_eq!(stand_in.name_any(), "bad");
        assert_eq!(stand_in.namespace().as_deref(), Some("trading"));
        assert!(stand_in.status.is_none());
    }
}

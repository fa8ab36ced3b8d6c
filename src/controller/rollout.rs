//! Restarting workloads that read the token from environment variables, after a real token
//! change only: the pod-template annotation carries the token hash, so a rewrite of the same
//! token, or a reconcile that changed nothing, restarts nothing.
//!
//! A workload is restarted only if it names the account in its own
//! [`RESTART_ON_REFRESH_ANNOTATION`]. Whoever may create a DhanAccount must not be able to
//! restart any workload of the namespace through the operator's rights (a confused deputy);
//! the annotation is the workload owner's consent, checked on every restart, visible on the
//! workload and withdrawn by removing it. (Checking the account creator's own rights with a
//! SubjectAccessReview would need the creator's identity, which the API server does not record
//! on the object without an admission webhook.)

use crate::crd::RolloutTarget;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::output::TOKEN_HASH_ANNOTATION;

/// Annotation on a workload (its own metadata, not the pod template): the DhanAccounts of its
/// namespace whose new tokens may restart it, comma-separated.
pub const RESTART_ON_REFRESH_ANNOTATION: &str = "dhan-operator.dev/restart-on-refresh-of";

/// Whether a workload whose opt-in annotation is `annotation` accepts restarts by `account`.
/// Only exact names count: no wildcard, so an account created later cannot use an opt-in
/// meant for another.
pub fn opted_in(annotation: Option<&str>, account: &str) -> bool {
    annotation.is_some_and(|names| names.split(',').any(|name| name.trim() == account))
}

/// Sets the annotation on every target that opted in and does not carry `hash` yet. Returns
/// one message per target that could not be updated (missing, wrong kind, not opted in,
/// forbidden).
pub async fn restart_targets(
    client: &Client,
    namespace: &str,
    account: &str,
    targets: &[RolloutTarget],
    hash: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    for target in targets {
        if let Err(problem) = restart(client, namespace, account, target, hash).await {
            problems.push(problem);
        }
    }
    problems
}

async fn restart(
    client: &Client,
    namespace: &str,
    account: &str,
    target: &RolloutTarget,
    hash: &str,
) -> Result<(), String> {
    let RolloutTarget { kind, name } = target;
    if !matches!(kind.as_str(), "Deployment" | "StatefulSet" | "DaemonSet") {
        return Err(format!(
            "rolloutRestartTargets: kind {kind:?} is not Deployment, StatefulSet or DaemonSet"
        ));
    }
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", kind));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let current = match api.get_opt(name).await {
        Ok(Some(object)) => object,
        Ok(None) => return Err(format!("{kind} {name:?} not found")),
        Err(error) => return Err(format!("{kind} {name:?}: {error}")),
    };
    let consent = current
        .annotations()
        .get(RESTART_ON_REFRESH_ANNOTATION)
        .map(String::as_str);
    if !opted_in(consent, account) {
        return Err(format!(
            "{kind} {name:?} has not opted in: restarts need the annotation \
             {RESTART_ON_REFRESH_ANNOTATION}={account} on the {kind} itself"
        ));
    }
    let annotated =
        &current.data["spec"]["template"]["metadata"]["annotations"][TOKEN_HASH_ANNOTATION];
    if annotated.as_str() == Some(hash) {
        return Ok(());
    }
    let patch = json!({ "spec": { "template": { "metadata": { "annotations": {
        TOKEN_HASH_ANNOTATION: hash } } } } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|error| format!("{kind} {name:?}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_workload_naming_the_account_is_restarted_by_it() {
        assert!(opted_in(Some("alice"), "alice"));
        assert!(opted_in(Some("bob, alice"), "alice"));
        assert!(!opted_in(None, "alice"));
        assert!(!opted_in(Some(""), "alice"));
        assert!(!opted_in(Some("alice-2"), "alice"));
        assert!(!opted_in(Some("*"), "alice"), "no wildcard");
    }
}

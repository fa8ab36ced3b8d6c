//! Restarting workloads that read the token from environment variables, after a real token
//! change only: the pod-template annotation carries the token hash, so a rewrite of the same
//! token, or a reconcile that changed nothing, restarts nothing.

use crate::crd::RolloutTarget;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::output::TOKEN_HASH_ANNOTATION;

/// Sets the annotation on every target that does not carry `hash` yet. Returns one message
/// per target that could not be updated (missing, wrong kind, forbidden).
pub async fn restart_targets(
    client: &Client,
    namespace: &str,
    targets: &[RolloutTarget],
    hash: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    for target in targets {
        if !matches!(
            target.kind.as_str(),
            "Deployment" | "StatefulSet" | "DaemonSet"
        ) {
            problems.push(format!(
                "rolloutRestartTargets: kind {:?} is not Deployment, StatefulSet or DaemonSet",
                target.kind
            ));
            continue;
        }
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", &target.kind));
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        let current = match api.get_opt(&target.name).await {
            Ok(Some(object)) => object,
            Ok(None) => {
                problems.push(format!("{} {:?} not found", target.kind, target.name));
                continue;
            }
            Err(error) => {
                problems.push(format!("{} {:?}: {error}", target.kind, target.name));
                continue;
            }
        };
        let annotated =
            &current.data["spec"]["template"]["metadata"]["annotations"][TOKEN_HASH_ANNOTATION];
        if annotated.as_str() == Some(hash) {
            continue;
        }
        let patch = json!({ "spec": { "template": { "metadata": { "annotations": {
            TOKEN_HASH_ANNOTATION: hash } } } } });
        if let Err(error) = api
            .patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            problems.push(format!("{} {:?}: {error}", target.kind, target.name));
        }
    }
    problems
}

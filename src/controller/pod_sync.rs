//! A new token into running Pods within seconds, restarting nothing.
//!
//! Every mint kills the client's previous token at once, and a Pod that mounts the output Secret
//! reads the dead one until its kubelet rewrites the volume. The kubelet does that when it syncs
//! the Pod: on its periodic sync (`syncFrequency`, a minute by default, plus jitter) — or at once
//! when the Pod object changes. So once the new token is in the Secret, the operator writes one
//! annotation, [`SYNCED_ANNOTATION`], on each Pod that mounts the Secret and opted in; the
//! kubelet syncs the Pod and rewrites its Secret and projected volumes (with its default
//! watch-based Secret cache, from a copy that is already current). Only the Pod's metadata
//! changes: its spec, containers and their state are untouched, nothing restarts.
//!
//! Consent, as for rollout restarts (`rollout`): a Pod is touched only if it carries the label
//! [`SYNC_LABEL`] (how the operator finds it: one list per new token, filtered by the API server)
//! and names the account in its own [`SYNC_OF_ANNOTATION`] — whoever may create a DhanAccount
//! cannot make the operator write on other Pods of the namespace. A file mounted with `subPath`
//! is never rewritten by the kubelet, and an environment variable never changes: those Pods are
//! reported, not touched (they need `rolloutRestartTargets`).

use super::rollout::opted_in;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// Label a Pod (its template) carries to be found for syncs: any value.
pub const SYNC_LABEL: &str = "dhan-operator.dev/sync-on-refresh";
/// Annotation on a Pod (its template): the DhanAccounts of its namespace whose new tokens may
/// sync it, comma-separated, exact names.
pub const SYNC_OF_ANNOTATION: &str = "dhan-operator.dev/sync-on-refresh-of";
/// Annotation the operator writes on a Pod for a new token: `<account>/<token hash>`.
pub const SYNCED_ANNOTATION: &str = "dhan-operator.dev/token-synced";

/// Patches in flight at once (the API server's and kubelets' work, not the operator's).
const PARALLEL_PATCHES: usize = 8;

/// What became of the Pods that asked to be synced for a new token.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Synced {
    /// Pods told to sync (or told before, for this very token).
    pub pods: u32,
    /// One line per opted-in Pod that was not, and why.
    pub problems: Vec<String>,
}

/// What to do with one Pod.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Write the annotation: the kubelet syncs the Pod.
    Sync,
    /// It carries this token's annotation already (a repeat after a crash, say).
    Synced,
    /// Not this account's to touch, or nothing to sync (not running, being deleted).
    Leave,
    /// It opted in but cannot see a new token in place: why.
    Cannot(String),
}

fn plan(pod: &Pod, account: &str, secret: &str, value: &str) -> Plan {
    let name = pod.name_any();
    if !opted_in(
        pod.annotations()
            .get(SYNC_OF_ANNOTATION)
            .map(String::as_str),
        account,
    ) {
        return Plan::Leave;
    }
    let running = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_none_or(|phase| !matches!(phase, "Succeeded" | "Failed"));
    let Some(spec) = pod.spec.as_ref().filter(|_| running) else {
        return Plan::Leave;
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return Plan::Leave;
    }
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| {
            let direct = v
                .secret
                .as_ref()
                .is_some_and(|s| s.secret_name.as_deref() == Some(secret));
            let projected = v.projected.as_ref().is_some_and(|p| {
                p.sources
                    .iter()
                    .flatten()
                    .any(|s| s.secret.as_ref().is_some_and(|s| s.name == secret))
            });
            direct || projected
        })
        .map(|v| v.name.as_str())
        .collect();
    if volumes.is_empty() {
        return Plan::Cannot(format!(
            "Pod {name:?} mounts no volume of Secret {secret:?} (an environment variable \
             changes only with a restart: rolloutRestartTargets)"
        ));
    }
    let sub_path = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .any(|m| {
            volumes.contains(&m.name.as_str())
                && m.sub_path.as_deref().is_some_and(|p| !p.is_empty())
        });
    if sub_path {
        return Plan::Cannot(format!(
            "Pod {name:?} mounts Secret {secret:?} with subPath, which the kubelet never \
             rewrites: mount the volume without subPath, or restart the Pod"
        ));
    }
    if pod.annotations().get(SYNCED_ANNOTATION).map(String::as_str) == Some(value) {
        return Plan::Synced;
    }
    Plan::Sync
}

/// Tells every Pod of `namespace` that mounts Secret `secret` and opted in for `account` to
/// sync now, for the token whose keyed hash is `hash`.
pub async fn sync_pods(
    client: &Client,
    namespace: &str,
    account: &str,
    secret: &str,
    hash: &str,
) -> Synced {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = match api.list(&ListParams::default().labels(SYNC_LABEL)).await {
        Ok(pods) => pods.items,
        Err(error) => {
            return Synced {
                pods: 0,
                problems: vec![format!("could not list the Pods to sync: {error}")],
            };
        }
    };
    let value = format!("{account}/{hash}");
    let mut synced = Synced::default();
    let mut to_sync = Vec::new();
    for pod in &pods {
        match plan(pod, account, secret, &value) {
            Plan::Sync => to_sync.push(pod.name_any()),
            Plan::Synced => synced.pods += 1,
            Plan::Leave => {}
            Plan::Cannot(why) => synced.problems.push(why),
        }
    }
    let patch = json!({ "metadata": { "annotations": { SYNCED_ANNOTATION: value } } });
    let results: Vec<_> = futures::stream::iter(to_sync)
        .map(|name| {
            let (api, patch) = (&api, &patch);
            async move {
                let result = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await;
                (name, result)
            }
        })
        .buffer_unordered(PARALLEL_PATCHES)
        .collect()
        .await;
    for (name, result) in results {
        match result {
            Ok(_) => synced.pods += 1,
            // Gone since the list: nothing reads the old token there any more.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(error) => synced
                .problems
                .push(format!("Pod {name:?} could not be told to sync: {error}")),
        }
    }
    synced
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn pod(annotations: Value, volumes: Value, mounts: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": "algo-0", "annotations": annotations },
            "spec": {
                "containers": [{ "name": "algo", "image": "algo", "volumeMounts": mounts }],
                "volumes": volumes,
            },
            "status": { "phase": "Running" },
        }))
        .unwrap()
    }

    fn mounting(annotations: Value) -> Pod {
        pod(
            annotations,
            json!([{ "name": "token", "secret": { "secretName": "alice-token" } }]),
            json!([{ "name": "token", "mountPath": "/var/run/dhan" }]),
        )
    }

    const VALUE: &str = "alice/0123abcd";

    #[test]
    fn only_a_pod_naming_the_account_and_mounting_its_secret_is_synced() {
        let consent = json!({ SYNC_OF_ANNOTATION: "bob,alice" });
        assert_eq!(
            plan(&mounting(consent.clone()), "alice", "alice-token", VALUE),
            Plan::Sync
        );
        assert_eq!(
            plan(&mounting(json!({})), "alice", "alice-token", VALUE),
            Plan::Leave,
            "no consent"
        );
        assert_eq!(
            plan(
                &mounting(json!({ SYNC_OF_ANNOTATION: "alice-2" })),
                "alice",
                "alice-token",
                VALUE
            ),
            Plan::Leave,
            "exact names only"
        );
        let projected = pod(
            consent.clone(),
            json!([{ "name": "token", "projected": { "sources": [
                { "secret": { "name": "alice-token" } }] } }]),
            json!([{ "name": "token", "mountPath": "/var/run/dhan" }]),
        );
        assert_eq!(plan(&projected, "alice", "alice-token", VALUE), Plan::Sync);
    }

    #[test]
    fn a_pod_that_cannot_see_a_new_token_in_place_is_reported_not_touched() {
        let consent = json!({ SYNC_OF_ANNOTATION: "alice" });
        let other_secret = pod(
            consent.clone(),
            json!([{ "name": "token", "secret": { "secretName": "bob-token" } }]),
            json!([{ "name": "token", "mountPath": "/var/run/dhan" }]),
        );
        assert!(matches!(
            plan(&other_secret, "alice", "alice-token", VALUE),
            Plan::Cannot(why) if why.contains("rolloutRestartTargets")
        ));
        let sub_path = pod(
            consent,
            json!([{ "name": "token", "secret": { "secretName": "alice-token" } }]),
            json!([{ "name": "token", "mountPath": "/token", "subPath": "accessToken" }]),
        );
        assert!(matches!(
            plan(&sub_path, "alice", "alice-token", VALUE),
            Plan::Cannot(why) if why.contains("subPath")
        ));
    }

    #[test]
    fn a_pod_told_of_this_token_before_or_not_running_is_left_alone() {
        let told = mounting(json!({ SYNC_OF_ANNOTATION: "alice", SYNCED_ANNOTATION: VALUE }));
        assert_eq!(plan(&told, "alice", "alice-token", VALUE), Plan::Synced);
        let older =
            mounting(json!({ SYNC_OF_ANNOTATION: "alice", SYNCED_ANNOTATION: "alice/old" }));
        assert_eq!(plan(&older, "alice", "alice-token", VALUE), Plan::Sync);
        let mut done = mounting(json!({ SYNC_OF_ANNOTATION: "alice" }));
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert_eq!(plan(&done, "alice", "alice-token", VALUE), Plan::Leave);
    }
}

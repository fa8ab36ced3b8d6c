//! What the chart's identity did and did not do: workloads restarted only where they opted in,
//! Secrets fetched only where accounts live (from the apiserver's audit log), client-ID claims,
//! and secure metrics answered with the chart's review rights.

use crate::support::{self, ChildProcess, control_plane};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Annotation by which a workload accepts restarts by an account.
pub const OPT_IN: &str = "dhan-operator.dev/restart-on-refresh-of";

/// Deployment `name`, opted in to restarts by `account` or not.
pub async fn create_deployment(client: &Client, namespace: &str, name: &str, opt_in: Option<&str>) {
    let annotations = opt_in.map(|account| json!({ OPT_IN: account }));
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": name, "annotations": annotations },
        "spec": {
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "algo", "image": "example.invalid/algo:1" }] },
            },
        },
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
}

/// Pod `name` mounting Secret `secret`, labelled for pod syncs and naming `opt_in` in its
/// consent annotation (or not labelled at all). No node runs it: the operator only writes its
/// metadata.
pub async fn create_pod(
    client: &Client,
    namespace: &str,
    name: &str,
    secret: &str,
    opt_in: Option<&str>,
) {
    let (labels, annotations) = match opt_in {
        Some(account) => (
            json!({ "dhan-operator.dev/sync-on-refresh": "true" }),
            json!({ "dhan-operator.dev/sync-on-refresh-of": account }),
        ),
        None => (json!({}), json!({})),
    };
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels, "annotations": annotations },
        "spec": {
            "containers": [{ "name": "algo", "image": "example.invalid/algo:1",
                             "volumeMounts": [{ "name": "token", "mountPath": "/var/run/dhan" }] }],
            "volumes": [{ "name": "token", "secret": { "secretName": secret } }],
        },
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

/// The operator's sync annotation on Pod `name`, if it wrote one.
pub async fn synced_with(client: &Client, namespace: &str, name: &str) -> Option<String> {
    let pod = Api::<Pod>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .unwrap();
    pod.annotations()
        .get("dhan-operator.dev/token-synced")
        .cloned()
}

/// Pod syncs on: the Pod that opted in was told of the new token, the other one not.
pub async fn assert_only_opted_in_pods_synced(
    client: &Client,
    namespace: &str,
    account: &str,
    hash: &str,
) {
    let synced = support::wait_for(Duration::from_secs(20), || async {
        synced_with(client, namespace, "algo-pod").await
    })
    .await;
    assert_eq!(
        synced,
        format!("{account}/{hash}"),
        "the opted-in Pod was told"
    );
    assert_eq!(
        synced_with(client, namespace, "bystander-pod").await,
        None,
        "the operator's identity did not patch a Pod that did not opt in"
    );
}

/// The token hash on a Deployment's pod template, if the operator set one.
pub async fn restarted_with(client: &Client, namespace: &str, name: &str) -> Option<String> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .unwrap();
    deployment
        .spec?
        .template
        .metadata?
        .annotations?
        .get("dhan-operator.dev/token-hash")
        .cloned()
}

/// Waits for an event `reason` on account `name` and returns its message.
pub async fn event_note(client: &Client, namespace: &str, name: &str, reason: &str) -> String {
    support::wait_for(Duration::from_secs(20), || async {
        Api::<Event>::namespaced(client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.involved_object.name.as_deref() == Some(name)
                    && e.reason.as_deref() == Some(reason)
            })
            .map(|e| e.message.unwrap_or_default())
    })
    .await
}

/// Rollout restarts on: the opted-in Deployment carries the token hash, the other one was left
/// alone and the account says why.
pub async fn assert_only_opted_in_workloads_restarted(
    client: &Client,
    namespace: &str,
    account: &str,
    hash: &str,
) {
    let restarted = support::wait_for(Duration::from_secs(20), || async {
        restarted_with(client, namespace, "algo").await
    })
    .await;
    assert_eq!(
        restarted, hash,
        "the opted-in Deployment algo was restarted"
    );
    assert_eq!(
        restarted_with(client, namespace, "bystander").await,
        None,
        "the operator's identity did not patch a workload that did not opt in"
    );
    let note = event_note(client, namespace, account, "RolloutRestartFailed").await;
    assert!(
        note.contains("Deployment \"bystander\" has not opted in")
            && note.contains(&format!("{OPT_IN}={account}")),
        "{note}"
    );
}

/// Rollout restarts off (the default): nothing restarted, and the account says so.
pub async fn assert_no_workload_restarted(client: &Client, namespace: &str, account: &str) {
    let note = event_note(client, namespace, account, "RolloutRestartsOff").await;
    assert!(note.contains("--rollout-restarts is off"), "{note}");
    for name in ["algo", "bystander"] {
        assert_eq!(
            restarted_with(client, namespace, name).await,
            None,
            "{name}"
        );
    }
}

/// The audit log's Secret requests by `user`.
fn secret_requests_by(user: &str) -> Vec<Value> {
    control_plane()
        .audit_events()
        .into_iter()
        .filter(|e| e["user"]["username"] == user && e["objectRef"]["resource"] == "secrets")
        .collect()
}

/// Cluster mode: the identity asked for Secrets only in namespaces that hold a DhanAccount —
/// never cluster-wide, never in `untouched` — and did watch them where accounts are.
pub fn assert_secrets_fetched_only_where_accounts_live(
    user: &str,
    accounts_ns: &str,
    untouched: &str,
) {
    let requests = secret_requests_by(user);
    let line = |e: &Value| format!("{} {}", e["verb"], e["requestURI"]);
    let all: Vec<String> = requests.iter().map(line).collect();
    // The watch's own entry comes when it ends; its list shows it started.
    assert!(
        requests
            .iter()
            .any(|e| e["verb"] == "list" && e["objectRef"]["namespace"] == accounts_ns),
        "the Secret watch of the accounts' namespace is in the audit log: {all:#?}"
    );
    for request in &requests {
        let namespace = request["objectRef"]["namespace"].as_str();
        assert!(
            namespace.is_some(),
            "no cluster-wide Secret request: {}",
            line(request)
        );
        assert_ne!(
            namespace,
            Some(untouched),
            "no Secret of a namespace without DhanAccounts is fetched: {}",
            line(request)
        );
    }
}

/// The client-ID claim of `client_id` names this install.
pub async fn assert_claimed_by(client: &Client, client_id: &str, install: &str) {
    let claim = Api::<dhan_operator::claims::DhanClientClaim>::all(client.clone())
        .get(&dhan_operator::claims::claim_name(client_id))
        .await
        .expect("the client-ID claim");
    let holder = claim.spec.holder.expect("a holder");
    assert_eq!(holder.install, install, "the claim's holder");
}

/// Secure metrics with the chart's rights: /metrics over HTTPS for a caller the API server
/// authorises (the reviews need the chart's ClusterRole), 401 without a token.
pub async fn assert_secure_metrics(operator: &ChildProcess) {
    let addr = support::wait_for(Duration::from_secs(20), || async {
        json_log_field(&operator.output(), "serving /metrics", "addr")
    })
    .await;
    let http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let url = format!("https://{addr}/metrics");
    let admin = control_plane().token_of(&control_plane().kubeconfig_path());
    let response = http.get(&url).bearer_auth(admin).send().await.unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "reviews allowed by the chart's ClusterRole: {}",
        operator.output()
    );
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("dhan_operator_account_ready")
    );
    assert_eq!(http.get(&url).send().await.unwrap().status().as_u16(), 401);
    let ready = http
        .get(format!("https://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200, "HTTPS probes, no token");
}

/// A field of the first JSON log line whose message contains `message`.
fn json_log_field(output: &str, message: &str, field: &str) -> Option<String> {
    output
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| {
            line["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(message))
        })
        .and_then(|line| line["fields"][field].as_str().map(str::to_string))
}

/// The client-ID claims ClusterRole and its binding: claims (their names are hashes) and
/// installs' heartbeats, cluster-scoped, updating only this release's own heartbeat.
pub async fn assert_client_claims_rbac(
    client: &Client,
    fullname: &str,
    install_id: &str,
    sa_namespace: &str,
    sa: &str,
) {
    let name = format!("{fullname}-client-claims");
    let role = Api::<ClusterRole>::all(client.clone())
        .get(&name)
        .await
        .expect("the client-claims ClusterRole");
    let rules = role.rules.unwrap_or_default();
    let (named, unnamed): (Vec<_>, Vec<_>) = rules
        .into_iter()
        .partition(|r| r.resource_names.as_ref().is_some_and(|n| !n.is_empty()));
    let set = |verbs: &[&str]| verbs.iter().map(|v| v.to_string()).collect::<BTreeSet<_>>();
    let group = "dhan-operator.dev".to_string();
    assert_eq!(
        crate::flatten(&unnamed),
        BTreeMap::from([
            (
                (group.clone(), "dhanclientclaims".to_string()),
                set(&["create", "delete", "get", "list", "update", "watch"])
            ),
            (
                (group.clone(), "dhanoperatorinstalls".to_string()),
                set(&["create", "get"])
            ),
        ])
    );
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(
        named[0].resource_names.clone().unwrap(),
        [dhan_operator::claims::install_name(install_id)],
        "only this release's heartbeat is renewed"
    );
    assert_eq!(
        named[0].resources.clone().unwrap(),
        ["dhanoperatorinstalls"]
    );
    assert_eq!(named[0].verbs, ["update"]);
    let binding = Api::<ClusterRoleBinding>::all(client.clone())
        .get(&name)
        .await
        .expect("the client-claims ClusterRoleBinding");
    assert_eq!(binding.role_ref.name, name);
    assert!(crate::is_service_account(
        binding.subjects.as_ref(),
        sa_namespace,
        sa
    ));
}

/// Single-namespace mode with secure metrics: the only cluster-wide grants to the ServiceAccount
/// are the client-ID claims (cluster-scoped objects every install meets at) and the creation of
/// TokenReviews and SubjectAccessReviews; the metrics-reader ClusterRole is bound to nobody by
/// default.
pub async fn assert_only_metrics_reviews_are_cluster_wide(
    client: &Client,
    by_release: &ListParams,
    fullname: &str,
    namespace: &str,
    sa: &str,
) {
    let roles = Api::<ClusterRole>::all(client.clone())
        .list(by_release)
        .await
        .unwrap()
        .items;
    let names: BTreeSet<String> = roles.iter().map(|r| r.name_any()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            format!("{fullname}-client-claims"),
            format!("{fullname}-metrics-auth"),
            format!("{fullname}-metrics-reader")
        ])
    );
    let auth = roles
        .iter()
        .find(|r| r.name_any() == format!("{fullname}-metrics-auth"))
        .unwrap();
    assert_eq!(
        crate::flatten(auth.rules.as_deref().unwrap_or_default()),
        BTreeMap::from([
            (
                ("authentication.k8s.io".into(), "tokenreviews".into()),
                BTreeSet::from(["create".to_string()])
            ),
            (
                ("authorization.k8s.io".into(), "subjectaccessreviews".into()),
                BTreeSet::from(["create".to_string()])
            ),
        ])
    );
    let bound: Vec<String> = Api::<ClusterRoleBinding>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|b| crate::is_service_account(b.subjects.as_ref(), namespace, sa))
        .map(|b| b.role_ref.name)
        .collect();
    assert_eq!(
        bound.into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            format!("{fullname}-client-claims"),
            format!("{fullname}-metrics-auth")
        ])
    );
}

/// A tenant's Secret in `namespace`, which holds no DhanAccount.
pub async fn put_unrelated_secret(client: &Client, namespace: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "someone-elses" }, "stringData": { "password": "hunter2" },
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

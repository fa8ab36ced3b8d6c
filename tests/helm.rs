//! The Helm chart, for real: linted and installed by the official Helm library (helm-sdkpy, driven by
//! `hack/helm.py`) into the real control plane, its objects read back, and the operator binary run
//! with the Deployment's own args under the identity of the chart's ServiceAccount, so its RBAC is
//! shown to be enough for a refresh and no wider than the watch scope.
//!
//! The ServiceAccount identities are static tokens `hack/controlplane.sh` issues for
//! `helm-cluster:dhan-operator` and `helm-ns:dhan-operator` (no token controller runs here), so the
//! releases below are installed to get exactly those ServiceAccounts.

mod support;

#[path = "helm/checks.rs"]
mod checks;

use dhan_operator::crd::{DhanAccount, Phase};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions::is_crd_established};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::{
    CHART, ChildProcess, MockDhan, OPERATOR_BIN, control_plane, describe, helm, helm_install,
    helm_python,
};

const PIN: &str = "482913";
const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DP";
const WAIT: Duration = Duration::from_secs(60);

/// The two operator tests run one after the other: the cluster-wide operator would otherwise
/// reconcile the single-namespace test's account too (against the wrong mock).
static OPERATOR_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The trading calendar the chart ships as a ConfigMap.
const CHART_CALENDAR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/dhan-operator/files/trading-calendar.yaml"
);

/// Waits for the CRD the chart's crds/ directory installed (the tests never install it otherwise).
async fn wait_for_chart_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(crds, "dhanaccounts.dhan-operator.dev", is_crd_established()),
    )
    .await
    .expect("the chart's CRD is Established within 30 s")
    .expect("watching the CRD");
}

/// The rules of `dhan-operator.rules` as {(apiGroup, resource) → verbs}: the operator's rights,
/// least privilege. Widening them must be a deliberate change of this table. Jobs, Pods and
/// NetworkPolicies only with `browserLogin.enabled`, workloads only with
/// `rolloutRestarts.enabled`, listing and patching Pods only with `podSync.enabled` (on where
/// rollouts are, in these tests); DhanNotifiers with `notifications.enabled` (the default).
fn expected_rules(
    browser_logins: bool,
    rollouts: bool,
) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut table: Vec<(&str, &str, &[&str])> = vec![
        (
            "dhan-operator.dev",
            "dhanaccounts",
            &["get", "list", "watch"],
        ),
        ("dhan-operator.dev", "dhanaccounts/status", &["patch"]),
        ("dhan-operator.dev", "dhanaccounts/finalizers", &["update"]),
        (
            "dhan-operator.dev",
            "dhannotifiers",
            &["get", "list", "watch"],
        ),
        ("dhan-operator.dev", "dhannotifiers/status", &["patch"]),
        (
            "",
            "secrets",
            &["create", "delete", "get", "list", "patch", "watch"],
        ),
        ("events.k8s.io", "events", &["create", "patch"]),
    ];
    if rollouts {
        table.push(("apps", "deployments", &["get", "patch"]));
        table.push(("apps", "statefulsets", &["get", "patch"]));
        table.push(("apps", "daemonsets", &["get", "patch"]));
        table.push(("", "pods", &["list", "patch"]));
    }
    if browser_logins {
        table.push((
            "batch",
            "jobs",
            &["create", "delete", "get", "list", "watch"],
        ));
        table.push(("", "pods", &["get", "list", "watch"]));
        table.push((
            "networking.k8s.io",
            "networkpolicies",
            &["create", "get", "patch"],
        ));
    }
    let mut rules: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (group, resource, verbs) in table {
        rules
            .entry((group.to_string(), resource.to_string()))
            .or_default()
            .extend(verbs.iter().map(|v| v.to_string()));
    }
    rules
}

/// Flattens rules to {(apiGroup, resource) → verbs}; rules with resourceNames or
/// nonResourceURLs, and wildcards, are rejected (the operator's rules have none).
fn flatten(rules: &[PolicyRule]) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut map: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in rules {
        assert!(
            rule.resource_names.as_ref().is_none_or(Vec::is_empty)
                && rule.non_resource_urls.as_ref().is_none_or(Vec::is_empty),
            "unexpected rule {rule:?}"
        );
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    assert!(
                        group != "*" && resource != "*" && verb != "*",
                        "wildcard in {rule:?}"
                    );
                    map.entry((group.clone(), resource.clone()))
                        .or_default()
                        .insert(verb.clone());
                }
            }
        }
    }
    map
}

fn is_service_account(
    subjects: Option<&Vec<k8s_openapi::api::rbac::v1::Subject>>,
    namespace: &str,
    name: &str,
) -> bool {
    subjects.is_some_and(|subjects| {
        subjects.iter().any(|s| {
            s.kind == "ServiceAccount"
                && s.name == name
                && s.namespace.as_deref() == Some(namespace)
        })
    })
}

/// Checks the leader-election Role and RoleBinding every release gets in its namespace.
async fn assert_leader_election_rbac(client: &Client, namespace: &str, fullname: &str, sa: &str) {
    let role = Api::<Role>::namespaced(client.clone(), namespace)
        .get(&format!("{fullname}-leader-election"))
        .await
        .expect("the leader-election Role");
    let lease = format!("{fullname}-leader");
    let rules = role.rules.unwrap_or_default();
    assert_eq!(rules.len(), 2, "{rules:?}");
    for rule in &rules {
        assert_eq!(rule.api_groups, Some(vec!["coordination.k8s.io".into()]));
        assert_eq!(rule.resources, Some(vec!["leases".into()]));
    }
    assert!(
        rules
            .iter()
            .any(|r| r.verbs == ["create"] && r.resource_names.is_none()),
        "{rules:?}"
    );
    assert!(
        rules
            .iter()
            .any(|r| r.verbs == ["get", "patch"] && r.resource_names == Some(vec![lease.clone()])),
        "get/patch only on Lease {lease}: {rules:?}"
    );
    let binding = Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .get(&format!("{fullname}-leader-election"))
        .await
        .expect("the leader-election RoleBinding");
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(binding.role_ref.name, format!("{fullname}-leader-election"));
    assert!(is_service_account(binding.subjects.as_ref(), namespace, sa));
}

/// The release's Deployment, read back from the apiserver.
async fn deployment(client: &Client, namespace: &str, name: &str) -> Deployment {
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("Deployment {namespace}/{name}: {e}"))
}

fn operator_args(deployment: &Deployment) -> Vec<String> {
    let spec = deployment.spec.as_ref().unwrap();
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.containers.len(), 1);
    pod.containers[0].args.clone().unwrap_or_default()
}

fn env_value(deployment: &Deployment, name: &str) -> Option<String> {
    let pod = deployment.spec.as_ref()?.template.spec.as_ref()?;
    pod.containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)?
        .value
        .clone()
}

/// Runs the operator binary with the Deployment's args, as a pod of it would, but as a local
/// process: the metrics port becomes an ephemeral loopback one, the downward-API env is filled
/// in by hand, and `KUBECONFIG` authenticates as the chart's ServiceAccount.
fn run_like_the_deployment(
    deployment: &Deployment,
    kubeconfig: &Path,
    pod_name: &str,
) -> ChildProcess {
    let args: Vec<String> = operator_args(deployment)
        .into_iter()
        .map(|arg| {
            if arg.starts_with("--metrics-addr=") {
                "--metrics-addr=127.0.0.1:0".to_string()
            } else if arg.starts_with("--trading-calendar=") {
                // The ConfigMap's content (checked against this file by the cluster-wide test),
                // where the pod would have it mounted.
                format!("--trading-calendar={}", CHART_CALENDAR)
            } else {
                arg
            }
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let namespace = deployment.namespace().unwrap();
    let rust_log = env_value(deployment, "RUST_LOG").expect("RUST_LOG in the Deployment");
    ChildProcess::spawn(
        OPERATOR_BIN,
        &args,
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("POD_NAME", pod_name),
            ("POD_NAMESPACE", &namespace),
            ("RUST_LOG", &format!("{rust_log},dhan_operator=debug")),
        ],
    )
}

/// A TOTP account `name` in `namespace` (credentials Secret `<name>-dhan`), restarting
/// Deployments `algo` (which opted in) and `bystander` (which did not) after each new token,
/// and syncing Pods `algo-pod` (opted in) and `bystander-pod` (not) where pod syncs are on.
/// Created as admin, as a user would.
async fn create_account(client: &Client, namespace: &str, name: &str, client_id: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": format!("{name}-dhan") },
        "stringData": { "pin": PIN, "totpSecret": TOTP_SECRET },
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    checks::create_deployment(client, namespace, "algo", Some(name)).await;
    checks::create_deployment(client, namespace, "bystander", None).await;
    let secret = format!("{name}-token");
    checks::create_pod(client, namespace, "algo-pod", &secret, Some(name)).await;
    checks::create_pod(client, namespace, "bystander-pod", &secret, None).await;
    let account: DhanAccount = serde_json::from_value(json!({
        "apiVersion": "dhan-operator.dev/v1alpha1", "kind": "DhanAccount",
        "metadata": { "name": name },
        "spec": {
            "clientId": client_id,
            "credentialsSecret": format!("{name}-dhan"),
            "rolloutRestartTargets": [
                { "kind": "Deployment", "name": "algo" },
                { "kind": "Deployment", "name": "bystander" },
            ],
            // The chart's identity must be allowed to make the Secret owned by its account.
            "deletionPolicy": "Delete",
        },
    }))
    .unwrap();
    Api::<DhanAccount>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
}

/// Waits for Ready, then checks everything the operator's identity had to be allowed to write:
/// the output Secret (the token the mock issued), the status, an Event, the rollout annotation
/// where restarts are on and the workload opted in. Returns the token hash.
async fn assert_refreshed(
    client: &Client,
    mock: &MockDhan,
    operator: &ChildProcess,
    namespace: &str,
    name: &str,
    client_id: &str,
    rollouts: bool,
) -> String {
    let accounts: Api<DhanAccount> = Api::namespaced(client.clone(), namespace);
    let account = support::wait_for(WAIT, || async {
        let output = operator.output();
        assert!(
            !output.to_lowercase().contains("forbidden"),
            "the operator was refused something:\n{output}"
        );
        let account = accounts.get(name).await.ok()?;
        (account.status.as_ref()?.phase == Some(Phase::Ready)).then_some(account)
    })
    .await;
    let status = account.status.unwrap();
    assert_eq!(status.method.as_deref(), Some("totp"), "{status:?}");
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "{status:?}"
    );
    let hash = status.token_hash.expect("status.tokenHash");

    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(&format!("{name}-token"))
        .await
        .expect("the output Secret");
    let token = String::from_utf8(secret.data.unwrap()["DHAN_ACCESS_TOKEN"].0.clone()).unwrap();
    assert_eq!(
        mock.account(client_id).await["currentToken"].as_str(),
        Some(token.as_str()),
        "the Secret holds the token the mock issued"
    );
    assert!(
        secret
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "DhanAccount" && o.name == name),
        "deletionPolicy Delete: the output Secret is owned by its DhanAccount"
    );

    let events = support::wait_for(Duration::from_secs(10), || async {
        let events = Api::<Event>::namespaced(client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .ok()?
            .items;
        let ours: Vec<Event> = events
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .collect();
        (!ours.is_empty()).then_some(ours)
    })
    .await;
    assert!(
        events
            .iter()
            .all(|e| e.involved_object.kind.as_deref() == Some("DhanAccount")),
        "{events:?}"
    );

    if rollouts {
        checks::assert_only_opted_in_workloads_restarted(client, namespace, name, &hash).await;
        checks::assert_only_opted_in_pods_synced(client, namespace, name, &hash).await;
    } else {
        checks::assert_no_workload_restarted(client, namespace, name).await;
    }

    let output = operator.output();
    assert!(
        !output.to_lowercase().contains("forbidden"),
        "the operator was refused something:\n{output}"
    );
    hash
}

#[track_caller]
fn assert_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// `kubectl auth can-i VERB RESOURCE [-n NS | -A] --as USER`: "yes" or "no".
fn can_i(user: &str, verb: &str, resource: &str, namespace: Option<&str>) -> String {
    let mut args = vec!["auth", "can-i", verb, resource, "--as", user];
    match namespace {
        Some(ns) => args.extend(["-n", ns]),
        None => args.push("--all-namespaces"),
    }
    let out = control_plane().kubectl(&args);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn chart_lints_and_a_broken_chart_does_not() {
    let out = helm(&["lint", CHART]);
    assert!(
        out.status.success(),
        "helm lint {CHART}: {}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("lint ok"),
        "{}",
        describe(&out)
    );

    // The same chart with one template that does not parse: lint must fail, naming the place.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("dhan-operator");
    let cp = Command::new("cp")
        .arg("-r")
        .arg(CHART)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    std::fs::write(
        copy.join("templates/broken.yaml"),
        "kind: ConfigMap\nmetadata:\n  name: {{ .Release.Name \n",
    )
    .unwrap();
    let out = helm(&["lint", copy.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "lint passed a broken chart: {}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ERROR: templates/"),
        "{}",
        describe(&out)
    );
}

/// `values.schema.json` (derived from values.yaml, `tests/release.rs`): a misspelt key or a value
/// of the wrong type fails the install, naming it, instead of doing nothing.
#[test]
fn a_misspelt_value_fails_the_install() {
    let kubeconfig = control_plane().kubeconfig_path();
    let kubeconfig = kubeconfig.to_str().unwrap();
    for (values, named) in [
        (json!({ "podsync": { "enabled": true } }), "podsync"),
        (json!({ "podSync": { "enable": true } }), "enable"),
        (json!({ "podSync": { "enabled": "yes" } }), "enabled"),
        (json!({ "logFormat": "yaml" }), "logFormat"),
    ] {
        let out = helm(&[
            "install",
            "typo",
            "default",
            CHART,
            &values.to_string(),
            kubeconfig,
        ]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{values} installed: {}",
            describe(&out)
        );
        assert!(
            said.contains("don't meet the specifications of the schema") && said.contains(named),
            "{values}: {}",
            describe(&out)
        );
    }
}

/// `watchNamespaces`: a Role and RoleBinding in each listed namespace and no cluster-wide
/// operator role; the operator, run with the Deployment's args as the chart's ServiceAccount,
/// refreshes the accounts of both namespaces without being refused anything, and leaves a third
/// namespace's account alone.
#[tokio::test]
async fn a_release_watching_a_list_of_namespaces_has_a_role_in_each_and_serves_them_all() {
    const NS: &str = "helm-multi";
    const RELEASE: &str = "desks";
    const FULLNAME: &str = "desks-dhan-operator";
    const SA: &str = "dhan-operator";
    helm_python();
    let _serial = OPERATOR_TESTS.lock().await;
    let cp = control_plane();
    let client = cp.client().await;
    support::create_namespace(&client, NS).await;
    let equity = support::namespace(&client, "helm-equity").await;
    let futures = support::namespace(&client, "helm-futures").await;
    let elsewhere = support::namespace(&client, "helm-other").await;
    let mock = MockDhan::start(&[]).await;
    for client_id in ["1300000011", "1300000012", "1300000013"] {
        mock.register(json!({ "clientId": client_id, "pin": PIN, "totpSecret": TOTP_SECRET }))
            .await;
    }
    helm_install(
        RELEASE,
        NS,
        &json!({
            "watchNamespaces": [equity, futures],
            "serviceAccount": { "name": SA },
            "dhan": { "authUrl": mock.url, "apiUrl": mock.url },
        }),
    );
    for ns in [&equity, &futures] {
        let role = Api::<Role>::namespaced(client.clone(), ns)
            .get(FULLNAME)
            .await
            .unwrap_or_else(|e| panic!("a Role in {ns}: {e}"));
        assert_eq!(
            flatten(role.rules.as_deref().unwrap_or_default()),
            expected_rules(false, false)
        );
        let binding = Api::<RoleBinding>::namespaced(client.clone(), ns)
            .get(FULLNAME)
            .await
            .unwrap();
        assert!(is_service_account(binding.subjects.as_ref(), NS, SA));
    }
    assert!(
        Api::<ClusterRole>::all(client.clone())
            .get_opt(FULLNAME)
            .await
            .unwrap()
            .is_none(),
        "no cluster-wide operator role"
    );
    assert!(
        Api::<Role>::namespaced(client.clone(), &elsewhere)
            .get_opt(FULLNAME)
            .await
            .unwrap()
            .is_none()
    );
    let deployment = deployment(&client, NS, FULLNAME).await;
    let args = operator_args(&deployment);
    assert!(
        args.contains(&format!("--namespace={equity},{futures}")),
        "{args:?}"
    );

    wait_for_chart_crd(&client).await;
    let kubeconfig = cp.service_account_kubeconfig_path(NS, SA);
    let operator = run_like_the_deployment(&deployment, &kubeconfig, "desks-0");
    create_account(&client, &equity, "eve", "1300000011").await;
    create_account(&client, &futures, "fay", "1300000012").await;
    create_account(&client, &elsewhere, "gus", "1300000013").await;
    assert_refreshed(
        &client,
        &mock,
        &operator,
        &equity,
        "eve",
        "1300000011",
        false,
    )
    .await;
    assert_refreshed(
        &client,
        &mock,
        &operator,
        &futures,
        "fay",
        "1300000012",
        false,
    )
    .await;
    let gus = Api::<DhanAccount>::namespaced(client.clone(), &elsewhere)
        .get("gus")
        .await
        .unwrap();
    assert!(gus.status.is_none(), "{:?}", gus.status);
    assert!(
        mock.calls_to("generateAccessToken", "1300000013")
            .await
            .is_empty()
    );
}

/// `browserLogin.pod` reaches the operator as a file it reads at start: a ConfigMap, mounted,
/// named by `--login-pod-options`, with a checksum that rolls the operator when it changes. The
/// binary refuses a bad file before it does anything, naming the problem.
#[tokio::test]
async fn login_pod_options_reach_the_operator_as_a_checked_file() {
    const NS: &str = "helm-login-pod";
    helm_python();
    let client = control_plane().client().await;
    support::create_namespace(&client, NS).await;
    let pod = json!({
        "nodeSelector": { "pool": "logins" },
        "proxy": { "url": "http://proxy.corp:3128", "cidrs": ["10.20.0.0/16"] },
    });
    helm_install(
        "logins",
        NS,
        &json!({ "browserLogin": { "enabled": true, "pod": pod } }),
    );
    let config = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .get("logins-dhan-operator-login-pod")
        .await
        .expect("the login Pod options ConfigMap");
    let text = &config.data.unwrap()["options.yaml"];
    let parsed: serde_json::Value = serde_yaml::from_str(text).unwrap();
    assert_eq!(parsed, pod);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    dhan_operator::controller::login_pod::LoginPodOptions::load(file.path().to_str().unwrap())
        .expect("the operator takes what the chart writes");
    let deployment = deployment(&client, NS, "logins-dhan-operator").await;
    assert!(
        operator_args(&deployment)
            .contains(&"--login-pod-options=/etc/dhan-operator/login-pod/options.yaml".into())
    );
    let template = deployment.spec.unwrap().template;
    assert!(
        template
            .metadata
            .unwrap()
            .annotations
            .unwrap()
            .contains_key("checksum/login-pod")
    );

    // A label the operator sets itself: refused at start, before any API call.
    std::fs::write(file.path(), "labels: {dhan-operator.dev/login-for: bob}\n").unwrap();
    let out = Command::new(support::OPERATOR_BIN)
        .args(["run", "--login-pod-options", file.path().to_str().unwrap()])
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("invalid --login-pod-options")
            && said.contains("dhan-operator.dev/login-for is set by the operator"),
        "{said}"
    );
}

/// Default watch scope, replicaCount 2, rollout restarts on, a client-claim install ID of its own:
/// ClusterRole + ClusterRoleBinding for the chart's ServiceAccount, leader election on; the
/// operator, run with the Deployment's args as that ServiceAccount, refreshes an account in
/// another namespace without being refused anything, restarts only the workload that opted in,
/// and never fetches a Secret of a namespace without DhanAccounts.
#[tokio::test]
async fn cluster_wide_release_runs_the_operator_as_its_service_account() {
    const NS: &str = "helm-cluster";
    const RELEASE: &str = "dhan-operator"; // fullname = release name: it contains the chart name
    const SA: &str = "dhan-operator";
    const CLIENT_ID: &str = "1300000001";
    helm_python(); // fail with the install hint before anything else
    let _serial = OPERATOR_TESTS.lock().await;
    let cp = control_plane();
    let client = cp.client().await;
    const INSTALL: &str = "helm-cluster-install";
    support::create_namespace(&client, NS).await;
    let mock = MockDhan::start(&[]).await;
    mock.register(json!({ "clientId": CLIENT_ID, "pin": PIN, "totpSecret": TOTP_SECRET }))
        .await;

    helm_install(
        RELEASE,
        NS,
        &json!({
            "replicaCount": 2,
            "dhan": { "authUrl": mock.url, "apiUrl": mock.url },
            "rolloutRestarts": { "enabled": true },
            "podSync": { "enabled": true },
            "clientClaims": { "installId": INSTALL },
        }),
    );

    // What the values asked for.
    Api::<ServiceAccount>::namespaced(client.clone(), NS)
        .get(SA)
        .await
        .expect("the chart's ServiceAccount");
    let cluster_role = Api::<ClusterRole>::all(client.clone())
        .get(RELEASE)
        .await
        .expect("a ClusterRole in cluster-wide mode");
    assert_eq!(
        flatten(cluster_role.rules.as_deref().unwrap_or_default()),
        expected_rules(false, true)
    );
    let binding = Api::<ClusterRoleBinding>::all(client.clone())
        .get(RELEASE)
        .await
        .expect("a ClusterRoleBinding in cluster-wide mode");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(binding.role_ref.name, RELEASE);
    assert_eq!(binding.subjects.as_ref().map(Vec::len), Some(1));
    assert!(is_service_account(binding.subjects.as_ref(), NS, SA));
    let roles: Vec<String> = Api::<Role>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")))
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| r.name_any())
        .collect();
    assert_eq!(
        roles,
        [format!("{RELEASE}-leader-election")],
        "no namespaced operator Role in cluster-wide mode"
    );
    assert_leader_election_rbac(&client, NS, RELEASE, SA).await;
    checks::assert_client_claims_rbac(&client, RELEASE, INSTALL, NS, SA).await;

    let deployment = deployment(&client, NS, RELEASE).await;
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(
        spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
        Some("RollingUpdate")
    );
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(SA));
    let args = operator_args(&deployment);
    assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
    assert!(
        !args.iter().any(|a| a.starts_with("--namespace")),
        "cluster-wide: no --namespace in {args:?}"
    );
    for expected in [
        "--leader-elect".to_string(),
        format!("--leader-elect-lease={RELEASE}-leader"),
        format!("--dhan-auth-url={}", mock.url),
        format!("--dhan-api-url={}", mock.url),
        "--metrics-addr=0.0.0.0:8080".to_string(),
        "--notifications".to_string(),
        "--trading-calendar=/etc/dhan-operator/calendar/trading-calendar.yaml".to_string(),
        "--rollout-restarts".to_string(),
        "--sync-pods".to_string(),
        format!("--install-id={INSTALL}"),
        "--client-claim-duration=30m".to_string(),
    ] {
        assert!(args.contains(&expected), "{expected} missing from {args:?}");
    }
    let calendar = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .get(&format!("{RELEASE}-trading-calendar"))
        .await
        .expect("the trading-calendar ConfigMap");
    assert_eq!(
        calendar.data.unwrap_or_default()["trading-calendar.yaml"].trim_end(),
        std::fs::read_to_string(CHART_CALENDAR).unwrap().trim_end(),
        "the ConfigMap carries files/trading-calendar.yaml"
    );
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), NS)
            .get_opt(&format!("{RELEASE}-dashboard"))
            .await
            .unwrap()
            .is_none(),
        "the Grafana dashboard is off by default"
    );
    // Tenants' Secrets the operator has no business with, there before it starts.
    let unrelated = support::namespace(&client, "helm-no-accounts").await;
    checks::put_unrelated_secret(&client, &unrelated).await;

    // The operator as the ServiceAccount: takes the Lease in the release namespace...
    wait_for_chart_crd(&client).await;
    let kubeconfig = cp.service_account_kubeconfig_path(NS, SA);
    let operator = run_like_the_deployment(&deployment, &kubeconfig, "dhan-operator-0");
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    support::wait_for(Duration::from_secs(30), || async {
        let lease = leases.get(&format!("{RELEASE}-leader")).await.ok()?;
        (lease.spec?.holder_identity.as_deref() == Some("dhan-operator-0")).then_some(())
    })
    .await;

    // ...and refreshes an account in a namespace the release knows nothing about.
    let accounts_ns = support::namespace(&client, "helm-accounts").await;
    create_account(&client, &accounts_ns, "alice", CLIENT_ID).await;
    assert_refreshed(
        &client,
        &mock,
        &operator,
        &accounts_ns,
        "alice",
        CLIENT_ID,
        true,
    )
    .await;
    checks::assert_claimed_by(&client, CLIENT_ID, INSTALL).await;
    let user = format!("system:serviceaccount:{NS}:{SA}");
    checks::assert_secrets_fetched_only_where_accounts_live(&user, &accounts_ns, &unrelated);

    // Nothing beyond the table: no replacing Secrets (delete is granted for a token moved to a
    // renamed Secret), no ConfigMaps, no spec writes, no other Lease.
    let as_sa = cp.service_account_client(NS, SA).await;
    let secrets: Api<Secret> = Api::namespaced(as_sa.clone(), &accounts_ns);
    let mut secret = secrets.get("alice-token").await.expect("get is granted");
    secret.metadata.managed_fields = None;
    assert_forbidden(
        secrets
            .replace("alice-token", &PostParams::default(), &secret)
            .await,
        "update a Secret",
    );
    assert_forbidden(
        Api::<ConfigMap>::namespaced(as_sa.clone(), &accounts_ns)
            .list(&ListParams::default())
            .await,
        "list ConfigMaps",
    );
    assert_forbidden(
        Api::<DhanAccount>::namespaced(as_sa.clone(), &accounts_ns)
            .patch(
                "alice",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "suspend": true } })),
            )
            .await,
        "patch a DhanAccount's spec",
    );
    assert_forbidden(
        Api::<Lease>::namespaced(as_sa.clone(), NS)
            .get("someone-elses-lease")
            .await,
        "get another Lease",
    );
    assert_eq!(can_i(&user, "list", "secrets", None), "yes");
    assert_eq!(can_i(&user, "update", "secrets", None), "no");
    assert_eq!(can_i(&user, "create", "leases", Some("default")), "no");
    assert_eq!(can_i(&user, "update", "leases", Some(NS)), "no");
    assert_eq!(can_i(&user, "patch", "deployments", None), "yes");

    // Leave no account behind for the single-namespace test's cluster.
    Api::<DhanAccount>::namespaced(client.clone(), &accounts_ns)
        .delete("alice", &DeleteParams::default())
        .await
        .unwrap();
}

/// watchNamespace X, default rollout restarts (off) and client-claim install ID, secure
/// metrics: a Role + RoleBinding in X and no cluster-wide grant but the metrics reviews; the
/// operator, run with the Deployment's args (`--namespace=X`) as the ServiceAccount, refreshes an
/// account in X, restarts nothing, serves /metrics over HTTPS to an authorised caller, and that
/// identity cannot read a Secret anywhere else.
#[tokio::test]
async fn single_namespace_release_is_confined_to_its_namespace() {
    const NS: &str = "helm-ns";
    const RELEASE: &str = "trading-bots";
    const FULLNAME: &str = "trading-bots-dhan-operator";
    const SA: &str = "dhan-operator"; // serviceAccount.name, not the full name
    const CLIENT_ID: &str = "1300000002";
    helm_python(); // fail with the install hint before anything else
    let _serial = OPERATOR_TESTS.lock().await;
    let cp = control_plane();
    let client = cp.client().await;
    support::create_namespace(&client, NS).await;
    let watched = support::namespace(&client, "helm-watched").await;
    let elsewhere = support::namespace(&client, "helm-elsewhere").await;
    let mock = MockDhan::start(&[]).await;
    mock.register(json!({ "clientId": CLIENT_ID, "pin": PIN, "totpSecret": TOTP_SECRET }))
        .await;

    helm_install(
        RELEASE,
        NS,
        &json!({
            "watchNamespace": watched,
            "serviceAccount": { "name": SA },
            "dhan": { "authUrl": mock.url, "apiUrl": mock.url },
            // With browser logins the operator also watches Jobs: the Role must allow it.
            "browserLogin": { "enabled": true, "maxConcurrentJobs": 2 },
            "grafanaDashboard": { "enabled": true },
            "metrics": { "secure": { "enabled": true } },
        }),
    );

    // What the values asked for.
    Api::<ServiceAccount>::namespaced(client.clone(), NS)
        .get(SA)
        .await
        .expect("the ServiceAccount named by serviceAccount.name");
    let dashboard = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .get(&format!("{FULLNAME}-dashboard"))
        .await
        .expect("the dashboard ConfigMap with grafanaDashboard.enabled");
    assert_eq!(
        dashboard
            .labels()
            .get("grafana_dashboard")
            .map(String::as_str),
        Some("1"),
        "the label Grafana's sidecar selects"
    );
    let json: serde_json::Value =
        serde_json::from_str(&dashboard.data.unwrap_or_default()["dhan-operator.json"])
            .expect("the dashboard is JSON");
    assert_eq!(json["uid"], "dhan-operator");
    let role = Api::<Role>::namespaced(client.clone(), &watched)
        .get(FULLNAME)
        .await
        .expect("a Role in the watched namespace");
    assert_eq!(
        flatten(role.rules.as_deref().unwrap_or_default()),
        expected_rules(true, false)
    );
    let binding = Api::<RoleBinding>::namespaced(client.clone(), &watched)
        .get(FULLNAME)
        .await
        .expect("a RoleBinding in the watched namespace");
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(binding.role_ref.name, FULLNAME);
    assert_eq!(binding.subjects.as_ref().map(Vec::len), Some(1));
    assert!(is_service_account(binding.subjects.as_ref(), NS, SA));
    let by_release = ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}"));
    checks::assert_only_metrics_reviews_are_cluster_wide(&client, &by_release, FULLNAME, NS, SA)
        .await;
    let release_ns_roles: Vec<String> = Api::<Role>::namespaced(client.clone(), NS)
        .list(&by_release)
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| r.name_any())
        .collect();
    assert_eq!(release_ns_roles, [format!("{FULLNAME}-leader-election")]);
    assert_leader_election_rbac(&client, NS, FULLNAME, SA).await;
    let install_id = format!("{NS}/{FULLNAME}");
    checks::assert_client_claims_rbac(&client, FULLNAME, &install_id, NS, SA).await;

    let deployment = deployment(&client, NS, FULLNAME).await;
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(
        spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
        Some("Recreate")
    );
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(SA));
    let args = operator_args(&deployment);
    assert_eq!(
        args.iter()
            .filter(|a| a.starts_with("--namespace"))
            .collect::<Vec<_>>(),
        [&format!("--namespace={watched}")],
        "{args:?}"
    );
    assert!(
        !args.iter().any(|a| a.starts_with("--leader-elect")),
        "one replica: no leader election in {args:?}"
    );
    for expected in [
        "--browser-logins",
        "--max-concurrent-login-jobs=2",
        "--login-timeout=120s",
        "--chromium-image=chromedp/headless-shell@sha256:2d349b544a1ea6b5b5fd7c0fe99215ff662339c57407ee2e8c0a11af93516b04",
        "--chromium-command=/headless-shell/headless-shell",
        "--login-allowed-hosts=*.dhan.co",
    ] {
        assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
    }
    let image = &pod.containers[0].image;
    assert!(
        args.contains(&format!("--login-image={}", image.as_deref().unwrap())),
        "the login Jobs run the operator's own image: {args:?}"
    );

    // The operator as the ServiceAccount refreshes an account in the watched namespace.
    wait_for_chart_crd(&client).await;
    let kubeconfig = cp.service_account_kubeconfig_path(NS, SA);
    let operator = run_like_the_deployment(&deployment, &kubeconfig, "trading-bots-0");
    create_account(&client, &watched, "bob", CLIENT_ID).await;
    assert_refreshed(&client, &mock, &operator, &watched, "bob", CLIENT_ID, false).await;
    checks::assert_claimed_by(&client, CLIENT_ID, &format!("{NS}/{FULLNAME}")).await;
    checks::assert_secure_metrics(&operator).await;

    // The same identity reads Secrets in the watched namespace only.
    let stranger: Secret = serde_json::from_value(json!({
        "metadata": { "name": "stranger" }, "stringData": { "password": "hunter2" },
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &elsewhere)
        .create(&PostParams::default(), &stranger)
        .await
        .unwrap();
    let as_sa = cp.service_account_client(NS, SA).await;
    Api::<Secret>::namespaced(as_sa.clone(), &watched)
        .get("bob-dhan")
        .await
        .expect("the ServiceAccount reads Secrets in the watched namespace");
    assert_forbidden(
        Api::<Secret>::namespaced(as_sa.clone(), &elsewhere)
            .get("stranger")
            .await,
        "get a Secret in another namespace",
    );
    assert_forbidden(
        Api::<Secret>::namespaced(as_sa.clone(), NS)
            .list(&ListParams::default())
            .await,
        "list Secrets in the release namespace",
    );
    assert_forbidden(
        Api::<Secret>::all(as_sa.clone())
            .list(&ListParams::default())
            .await,
        "list Secrets cluster-wide",
    );
    assert_forbidden(
        Api::<DhanAccount>::all(as_sa.clone())
            .list(&ListParams::default())
            .await,
        "list DhanAccounts cluster-wide",
    );
    let user = format!("system:serviceaccount:{NS}:{SA}");
    assert_eq!(can_i(&user, "get", "secrets", Some(&watched)), "yes");
    assert_eq!(can_i(&user, "get", "secrets", Some(&elsewhere)), "no");
    assert_eq!(can_i(&user, "watch", "jobs", Some(&watched)), "yes");
    assert_eq!(can_i(&user, "create", "jobs", Some(&watched)), "yes");
    assert_eq!(can_i(&user, "create", "jobs", Some(&elsewhere)), "no");
    assert_eq!(can_i(&user, "patch", "deployments", Some(&watched)), "no");
    assert_eq!(can_i(&user, "create", "tokenreviews", None), "yes");

    Api::<DhanAccount>::namespaced(client.clone(), &watched)
        .delete("bob", &DeleteParams::default())
        .await
        .unwrap();
}

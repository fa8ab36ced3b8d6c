//! The chart as a user installs it, on a real node (`hack/node.sh`): the operator runs as a Pod
//! of the chart's Deployment, from the production image (`hack/images.sh operator`, the recipe
//! `make image` runs, here around this run's binary), as the chart's ServiceAccount with the
//! token the ServiceAccount admission plugin mounts (`hack/controlplane.sh --service-accounts`),
//! and reaches the apiserver at the `kubernetes` Service's address like any in-cluster client. A
//! DhanAccount becomes Ready through it.
//!
//! Its own binary: the node is one per machine, and this control plane differs from the other
//! real-node tests' (ServiceAccount admission on).

mod support;

use dhan_operator::crd::{DhanAccount, Phase};
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, Secret};
use kube::api::{Api, ListParams, LogParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::time::Duration;
use support::{
    MockDhan, PIN, TOTP_SECRET, control_plane_with_service_accounts, helm_install, helm_python,
    node, wait_for,
};

const RELEASE: &str = "dhan-operator";
const SYSTEM: &str = "dhan-system";
const TENANT: &str = "trading";
const CLIENT_ID: &str = "1500000001";
/// Admission waiting for the token controller, an image unpacked, a start, a mint: on 2 cores
/// shared with the control plane.
const READY_WAIT: Duration = Duration::from_secs(240);

async fn create_namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
}

/// What the operator Pods say, for a failure message.
async fn diagnose(client: &Client) -> String {
    let pods = Api::<Pod>::namespaced(client.clone(), SYSTEM);
    let mut out = String::new();
    for pod in pods.list(&ListParams::default()).await.unwrap().items {
        let name = pod.name_any();
        out += &format!("--- pod {name}: {:?}\n", pod.status);
        let params = LogParams {
            tail_lines: Some(40),
            ..LogParams::default()
        };
        out += &pods.logs(&name, &params).await.unwrap_or_default();
    }
    let events = Api::<Event>::namespaced(client.clone(), SYSTEM)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    for e in events {
        out += &format!(
            "event {}/{}: {} {}\n",
            e.involved_object.kind.unwrap_or_default(),
            e.involved_object.name.unwrap_or_default(),
            e.reason.unwrap_or_default(),
            e.message.unwrap_or_default()
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chart_runs_the_operator_image_as_a_pod_and_an_account_becomes_ready() {
    helm_python(); // fail with the install hint before anything else
    let cp = control_plane_with_service_accounts();
    let node = node();
    let client = cp.client().await;
    create_namespace(&client, SYSTEM).await;
    create_namespace(&client, TENANT).await;
    let mock = MockDhan::start_on(node.host_ip(), &[]).await;
    mock.register(json!({ "clientId": CLIENT_ID, "pin": PIN, "totpSecret": TOTP_SECRET }))
        .await;

    let (repository, tag) = node.operator_image().rsplit_once(':').unwrap();
    helm_install(
        RELEASE,
        SYSTEM,
        &json!({
            // Imported into the node's containerd; nothing is pulled.
            "image": { "repository": repository, "tag": tag, "pullPolicy": "Never" },
            "dhan": { "authUrl": mock.url, "apiUrl": mock.url },
            "leaderElection": { "enabled": true },
        }),
    );

    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "alice-dhan" },
        "stringData": { "pin": PIN, "totpSecret": TOTP_SECRET },
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), TENANT)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let account: DhanAccount = serde_json::from_value(json!({
        "apiVersion": "dhan-operator.dev/v1alpha1", "kind": "DhanAccount",
        "metadata": { "name": "alice" },
        "spec": { "clientId": CLIENT_ID, "credentialsSecret": "alice-dhan" },
    }))
    .unwrap();
    let accounts = Api::<DhanAccount>::namespaced(client.clone(), TENANT);
    // The chart's CRDs may still be settling.
    wait_for(Duration::from_secs(30), || async {
        accounts.create(&PostParams::default(), &account).await.ok()
    })
    .await;

    let ready = tokio::time::timeout(READY_WAIT, async {
        loop {
            if let Ok(a) = accounts.get("alice").await
                && a.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready)
            {
                return a;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    let ready = match ready {
        Ok(account) => account,
        Err(_) => panic!(
            "alice not Ready within {READY_WAIT:?}: {:?}\n{}",
            accounts.get("alice").await.ok().and_then(|a| a.status),
            diagnose(&client).await
        ),
    };

    // The token in the Secret is the one Dhan (the mock) holds as current.
    let secret = Api::<Secret>::namespaced(client.clone(), TENANT)
        .get("alice-token")
        .await
        .expect("the output Secret");
    let token = String::from_utf8(secret.data.unwrap()["DHAN_ACCESS_TOKEN"].0.clone()).unwrap();
    assert_eq!(
        mock.account(CLIENT_ID).await["currentToken"].as_str(),
        Some(token.as_str())
    );
    assert!(ready.status.unwrap().token_hash.is_some());

    // It was the Pod: the only operator running, from the image, as the chart's ServiceAccount
    // with an admission-mounted token, non-root on a read-only root filesystem.
    let pods = Api::<Pod>::namespaced(client.clone(), SYSTEM)
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")))
        .await
        .unwrap()
        .items;
    assert_eq!(pods.len(), 1, "{}", diagnose(&client).await);
    let pod = &pods[0];
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some(RELEASE));
    let container = &spec.containers[0];
    assert_eq!(container.image.as_deref(), Some(node.operator_image()));
    assert!(
        container
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == "/var/run/secrets/kubernetes.io/serviceaccount"),
        "the ServiceAccount admission plugin mounted the token: {container:?}"
    );
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    // The kubelet reports the phase a little after the container started.
    let pod_ip = wait_for(Duration::from_secs(30), || async {
        let pod = Api::<Pod>::namespaced(client.clone(), SYSTEM)
            .get(&pods[0].name_any())
            .await
            .ok()?;
        let status = pod.status?;
        (status.phase.as_deref() == Some("Running")).then_some(status.pod_ip?)
    })
    .await;
    assert!(pod_ip.starts_with("10.231.0."), "a Pod address: {pod_ip}");
    // Its Events name it: reportingInstance is the Pod's name (POD_NAME from the chart).
    let events = wait_for(Duration::from_secs(30), || async {
        let events = Api::<Event>::namespaced(client.clone(), TENANT)
            .list(&ListParams::default())
            .await
            .ok()?
            .items;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert!(
        events
            .iter()
            .all(|e| e.reporting_instance.as_deref() == Some(pod.name_any().as_str())),
        "{events:?}"
    );
    // And its logs are the chart's JSON lines, with no token in them.
    let logs = Api::<Pod>::namespaced(client.clone(), SYSTEM)
        .logs(&pod.name_any(), &LogParams::default())
        .await
        .unwrap();
    assert!(logs.lines().any(|l| l.starts_with('{')), "{logs}");
    assert!(
        !logs.contains(&token),
        "the token is in the operator's logs"
    );
    assert!(!logs.contains(PIN), "the PIN is in the operator's logs");
}

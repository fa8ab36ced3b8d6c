//! The chart as a user installs it, on a real node (`hack/node.sh`): the operator runs as a Pod
//! of the chart's Deployment, from the production image (`hack/images.sh operator`, the recipe
//! `make image` runs, here around this run's binary), as the chart's ServiceAccount with the
//! token the ServiceAccount admission plugin mounts (`hack/controlplane.sh --service-accounts`),
//! and reaches the apiserver at the `kubernetes` Service's address like any in-cluster client. A
//! DhanAccount becomes Ready through it, and a trading Pod reads its token: the README's quick
//! start, step by step.
//!
//! Its own binary: the node is one per machine, and this control plane differs from the other
//! real-node tests' (ServiceAccount admission on).

mod support;

use dhan_operator::crd::{DhanAccount, Phase};
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::api::{Api, ListParams, LogParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::time::Duration;
use support::{
    MockDhan, TOTP_SECRET, control_plane_with_service_accounts, helm_install, helm_python, node,
    wait_for,
};

const RELEASE: &str = "dhan-operator";
const SYSTEM: &str = "dhan-operator";
const TENANT: &str = "trading";
/// deploy/examples/totp-account.yaml's client ID and placeholder PIN.
const CLIENT_ID: &str = "1000000001";
const EXAMPLE_PIN: &str = "000000";

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

/// `kubectl ARGS` as the admin, with `stdin`; panics with its output on failure.
fn kubectl(args: &[&str], stdin: &str) -> String {
    let out = support::control_plane().kubectl_with_stdin(args, stdin);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        support::describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn example(name: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples/");
    std::fs::read_to_string(format!("{path}{name}")).unwrap()
}

/// The README's quick start, step by step, with Dhan at the mock and the image from the node's
/// containerd: the chart, the example account with its placeholders filled in, `kubectl wait`,
/// the example trading Pod reading the token.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_quick_start_runs_the_chart_image_as_a_pod_and_a_trading_pod_reads_the_token() {
    helm_python(); // fail with the install hint before anything else
    let cp = control_plane_with_service_accounts();
    let node = node();
    let client = cp.client().await;
    support::create_namespace(&client, SYSTEM).await;
    let mock = MockDhan::start_on(node.host_ip(), &[]).await;
    mock.register(json!({ "clientId": CLIENT_ID, "pin": EXAMPLE_PIN, "totpSecret": TOTP_SECRET }))
        .await;

    // 2. `helm install dhan-operator charts/dhan-operator -n dhan-operator ... --set
    //    podSync.enabled=true`, the image imported (nothing is pulled).
    let (repository, tag) = node.operator_image().rsplit_once(':').unwrap();
    helm_install(
        RELEASE,
        SYSTEM,
        &json!({
            "image": { "repository": repository, "tag": tag, "pullPolicy": "Never" },
            "dhan": { "authUrl": mock.url, "apiUrl": mock.url },
            "podSync": { "enabled": true },
        }),
    );

    // 3. The example account, its placeholders filled in.
    kubectl(&["create", "namespace", TENANT], "");
    let account = example("totp-account.yaml").replace("REPLACE_WITH_BASE32_KEY", TOTP_SECRET);
    assert!(account.contains(&format!("clientId: \"{CLIENT_ID}\"")));
    assert!(account.contains(&format!("pin: \"{EXAMPLE_PIN}\"")));
    // The chart's CRDs may still be settling.
    wait_for(Duration::from_secs(30), || async {
        let out = cp.kubectl_with_stdin(&["apply", "-f", "-"], &account);
        out.status.success().then_some(())
    })
    .await;
    let wait = cp.kubectl(&[
        // Admission waiting for the token controller, a start, a mint: 2 cores shared with
        // the control plane.
        "-n",
        TENANT,
        "wait",
        "--for=condition=Ready",
        "dhanaccount/alice",
        "--timeout=240s",
    ]);
    let accounts = Api::<DhanAccount>::namespaced(client.clone(), TENANT);
    assert!(
        wait.status.success(),
        "alice not Ready: {}\n{:?}\n{}",
        support::describe(&wait),
        accounts.get("alice").await.ok().and_then(|a| a.status),
        diagnose(&client).await
    );
    let ready = accounts.get("alice").await.unwrap();
    assert_eq!(ready.status.as_ref().unwrap().phase, Some(Phase::Ready));

    // The token in the Secret is the one Dhan (the mock) holds as current.
    let secret = Api::<Secret>::namespaced(client.clone(), TENANT)
        .get("alice-dhan-token")
        .await
        .expect("the output Secret");
    let data = secret.data.unwrap();
    let token = String::from_utf8(data["DHAN_ACCESS_TOKEN"].0.clone()).unwrap();
    let expires = String::from_utf8(data["DHAN_TOKEN_EXPIRES_AT"].0.clone()).unwrap();
    assert_eq!(
        mock.account(CLIENT_ID).await["currentToken"].as_str(),
        Some(token.as_str())
    );

    // 4. The example trading Pod: the node's static busybox stands in for busybox:1.36 (its
    //    shell is an applet of /bin/busybox).
    let trading = example("trading-pod.yaml")
        .replace(
            "image: busybox:1.36",
            &format!(
                "image: {}\n          imagePullPolicy: Never",
                node.busybox_image()
            ),
        )
        .replace(
            "            - sh\n",
            "            - /bin/busybox\n            - sh\n",
        );
    kubectl(&["apply", "-f", "-"], &trading);
    let pods = Api::<Pod>::namespaced(client.clone(), TENANT);
    let log = wait_for(Duration::from_secs(120), || async {
        let pod = pods
            .list(&ListParams::default().labels("app=algo-1"))
            .await
            .ok()?
            .items
            .into_iter()
            .next()?;
        let log = pods
            .logs(&pod.name_any(), &LogParams::default())
            .await
            .ok()?;
        log.contains("token file now expires").then_some(log)
    })
    .await;
    assert!(
        log.contains(&format!(
            "client {CLIENT_ID}, token from env expires {expires}"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("token file now expires {expires}")),
        "{log}"
    );

    // It was the operator's Pod: the only operator running, from the image, as the chart's
    // ServiceAccount with an admission-mounted token, non-root on a read-only root filesystem.
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
    let status = pod.status.as_ref().unwrap();
    let pod_ip = status.pod_ip.clone().unwrap_or_default();
    assert!(pod_ip.starts_with("10.231.0."), "a Pod address: {pod_ip}");
    // Its Events name it: reportingInstance is the Pod's name (POD_NAME from the chart).
    let events = Api::<Event>::namespaced(client.clone(), TENANT)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let ours: Vec<&Event> = events
        .iter()
        .filter(|e| e.involved_object.kind.as_deref() == Some("DhanAccount"))
        .collect();
    assert!(!ours.is_empty(), "{events:?}");
    assert!(
        ours.iter()
            .all(|e| e.reporting_instance.as_deref() == Some(pod.name_any().as_str())),
        "{ours:?}"
    );
    // And the operator's logs are the chart's JSON lines, with no token or PIN in them.
    let logs = Api::<Pod>::namespaced(client.clone(), SYSTEM)
        .logs(&pod.name_any(), &LogParams::default())
        .await
        .unwrap();
    assert!(logs.lines().any(|l| l.starts_with('{')), "{logs}");
    assert!(
        !logs.contains(&token),
        "the token is in the operator's logs"
    );
    assert!(
        !logs.contains(EXAMPLE_PIN),
        "the PIN is in the operator's logs"
    );
}

//! Shared harness for the integration tests: a real etcd + kube-apiserver started once per test
//! binary (see `hack/controlplane.sh`), child processes with captured output, operators run as the
//! Helm chart's ServiceAccount (`chart_identity`), and small helpers.
//! Use from a test file with `mod support;`.
#![allow(dead_code, unused_imports)] // every test binary uses a different subset

mod bed;
mod chart_identity;
mod chromium;
mod controlplane;
mod helm;
mod kubelet;
mod mock;
mod node;
mod process;

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions::is_crd_established};

pub use bed::{Bed, PIN, TOTP_SECRET, WAIT};
pub use chart_identity::ChartIdentity;
pub use chromium::{Chromium, free_port};
pub use controlplane::{ControlPlane, control_plane, control_plane_with_service_accounts};
pub use helm::{CHART, describe, helm, helm_install, helm_python};
pub use kubelet::{Kubelet, LoginRun};
pub use mock::MockDhan;
pub use node::{Node, Recorder, node};
pub use process::{ChildProcess, holiday_calendar, start_operator};

/// Path of the operator binary cargo built for this test run.
pub const OPERATOR_BIN: &str = env!("CARGO_BIN_EXE_dhan-operator");

/// The binary [`start_operator`] runs: `DHAN_OPERATOR_BIN` when set, else [`OPERATOR_BIN`].
/// Runs a test file against another build (the code before a fix, to see a test fail on it);
/// the CRDs still come from this build's `dhan-operator crd`.
pub fn operator_bin() -> String {
    std::env::var("DHAN_OPERATOR_BIN").unwrap_or_else(|_| OPERATOR_BIN.to_string())
}

/// Flags [`start_operator`] adds to every operator it starts: `DHAN_OPERATOR_ARGS`, split at
/// whitespace (flags another build needs, with `DHAN_OPERATOR_BIN`). Empty when unset.
pub fn operator_extra_args() -> Vec<String> {
    std::env::var("DHAN_OPERATOR_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Applies the CRDs printed by `dhan-operator crd` and waits until they are Established.
pub async fn install_crd(client: &Client) {
    let out = std::process::Command::new(OPERATOR_BIN)
        .arg("crd")
        .output()
        .expect("run dhan-operator crd");
    assert!(
        out.status.success(),
        "dhan-operator crd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    apply_crds(
        client,
        &String::from_utf8(out.stdout).expect("crd output is UTF-8"),
    )
    .await;
}

/// Server-side applies every CustomResourceDefinition in a (multi-document) YAML text, as field
/// manager "e2e", and waits until each is Established.
/// Applied exactly as generated: what a user installs must install on the 1.20 test bed too.
pub async fn apply_crds(client: &Client, yaml: &str) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let crd: serde_json::Value = serde::Deserialize::deserialize(doc).expect("CRD YAML parses");
        if crd.is_null() {
            continue; // empty document
        }
        let name = crd["metadata"]["name"]
            .as_str()
            .expect("CRD has metadata.name")
            .to_owned();
        api.patch(
            &name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established within 30 s"))
        .unwrap_or_else(|e| panic!("watching CRD {name}: {e}"));
    }
}

/// Creates namespace `name`.
pub async fn create_namespace(client: &Client, name: &str) {
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": name } })).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
}

/// Creates a namespace named `<prefix>-<random>` for one test and returns its name.
/// (No namespace controller runs, so deleting it would leave it Terminating; tests just leave it.)
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{:08x}", rand::random::<u32>());
    create_namespace(client, &name).await;
    name
}

/// Polls `check` every 100 ms until it returns `Some`, and returns that value; panics (naming the
/// caller's source line) if that takes longer than `timeout`.
#[track_caller]
pub fn wait_for<T, Fut>(
    timeout: Duration,
    mut check: impl FnMut() -> Fut,
) -> impl Future<Output = T>
where
    Fut: Future<Output = Option<T>>,
{
    let caller = std::panic::Location::caller();
    async move {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if Instant::now() >= deadline {
                panic!("wait_for at {caller}: condition not met within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The operator's `/metrics` URL, once its output names the address it serves on.
pub fn metrics_url(operator_output: &str) -> Option<String> {
    let line = operator_output
        .lines()
        .find(|l| l.contains("serving /metrics"))?;
    let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
    Some(format!("http://{addr}/metrics"))
}

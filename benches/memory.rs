//! The operator's memory next to Secrets it has nothing to do with, on a real kube-apiserver.
//!
//! `make bench` (or `cargo bench --bench memory`). Runs a cluster-wide operator over
//! `BENCH_MEMORY_ACCOUNTS` accounts (default 50) in one namespace, first alone, then with
//! `BENCH_UNRELATED_SECRETS` Secrets (default 5000, 2 KiB of data each, as many clusters carry in
//! Helm release and TLS Secrets) in ten other namespaces, and prints its resident memory once all
//! accounts are Ready, and its peak. `BENCH_OPERATOR_BIN=/path/to/dhan-operator` measures another
//! build of the operator (e.g. an older one) the same way.

#[path = "../tests/support/mod.rs"]
mod support;

use dhan_operator::crd::{DhanAccount, Phase};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use std::time::{Duration, Instant};
use support::{ChildProcess, MockDhan};

const PIN: &str = "482913";
const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DP";
const TENANT_NAMESPACES: usize = 10;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn create_accounts(client: &Client, mock: &MockDhan, ns: &str, count: usize, first: u64) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "creds" }, "stringData": { "pin": PIN, "totpSecret": TOTP_SECRET },
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let accounts: Api<DhanAccount> = Api::namespaced(client.clone(), ns);
    for i in 0..count as u64 {
        let client_id = (first + i).to_string();
        mock.register(json!({ "clientId": client_id, "pin": PIN, "totpSecret": TOTP_SECRET }))
            .await;
        let account: DhanAccount = serde_json::from_value(json!({
            "apiVersion": "dhan-operator.dev/v1alpha1", "kind": "DhanAccount",
            "metadata": { "name": format!("acct-{i}") },
            "spec": { "clientId": client_id, "credentialsSecret": "creds" },
        }))
        .unwrap();
        accounts
            .create(&PostParams::default(), &account)
            .await
            .unwrap();
    }
}

/// `count` Secrets of 2 KiB spread over namespaces that hold no DhanAccount.
async fn create_unrelated_secrets(client: &Client, count: usize) {
    let mut namespaces = Vec::new();
    for _ in 0..TENANT_NAMESPACES {
        namespaces.push(support::namespace(client, "tenant").await);
    }
    let payload = "x".repeat(2048);
    futures::stream::iter(0..count)
        .for_each_concurrent(16, |i| {
            let api: Api<Secret> =
                Api::namespaced(client.clone(), &namespaces[i % TENANT_NAMESPACES]);
            let secret: Secret = serde_json::from_value(json!({
                "metadata": { "name": format!("unrelated-{i}") },
                "stringData": { "data": payload },
            }))
            .unwrap();
            async move {
                api.create(&PostParams::default(), &secret).await.unwrap();
            }
        })
        .await;
}

/// VmRSS and VmHWM of `pid`, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Starts the operator (cluster-wide), waits for every account in `ns` to be Ready and five
/// quiet seconds, and returns (RSS, peak RSS, seconds to Ready).
async fn measure(client: &Client, mock: &MockDhan, ns: &str, count: usize) -> (f64, f64, f64) {
    let binary =
        std::env::var("BENCH_OPERATOR_BIN").unwrap_or_else(|_| support::OPERATOR_BIN.to_string());
    let kubeconfig = support::control_plane().kubeconfig_path();
    let started = Instant::now();
    let operator = ChildProcess::spawn(
        &binary,
        &[
            "run",
            "--metrics-addr",
            "127.0.0.1:0",
            "--dhan-auth-url",
            &mock.url,
            "--dhan-api-url",
            &mock.url,
            "--dhan-calls-per-second",
            "1000",
        ],
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("RUST_LOG", "warn"),
        ],
    );
    let accounts: Api<DhanAccount> = Api::namespaced(client.clone(), ns);
    loop {
        let ready = accounts
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|a| a.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready))
            .count();
        if ready == count {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not converging:\n{}",
            operator.output()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let to_ready = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss, peak) = memory(operator.pid());
    (rss, peak, to_ready)
}

#[tokio::main]
async fn main() {
    let accounts = env_number("BENCH_MEMORY_ACCOUNTS", 50);
    let unrelated = env_number("BENCH_UNRELATED_SECRETS", 5000);
    let cp = support::control_plane();
    let client = cp.client().await;
    support::install_crd(&client).await;
    let mock = MockDhan::start(&[]).await;

    let alone_ns = support::namespace(&client, "memory").await;
    create_accounts(&client, &mock, &alone_ns, accounts, 1_700_000_000).await;
    let alone = measure(&client, &mock, &alone_ns, accounts).await;

    let created = Instant::now();
    create_unrelated_secrets(&client, unrelated).await;
    let creating = created.elapsed().as_secs_f64();
    // A namespace of fresh accounts: the first operator's tokens would make the second one idle.
    let crowded_ns = support::namespace(&client, "memory").await;
    create_accounts(&client, &mock, &crowded_ns, accounts, 1_800_000_000).await;
    Api::<DhanAccount>::namespaced(client.clone(), &alone_ns)
        .delete_collection(&Default::default(), &ListParams::default())
        .await
        .unwrap();
    let crowded = measure(&client, &mock, &crowded_ns, accounts).await;

    let binary = std::env::var("BENCH_OPERATOR_BIN").unwrap_or_else(|_| "this build".into());
    println!("operator memory: {accounts} accounts, cluster-wide watch scope, {binary}");
    println!(
        "  unrelated Secrets in other namespaces : {:>9} {:>9}",
        0, unrelated
    );
    println!(
        "  RSS once all Ready + 5 s (MiB)        : {:>9.1} {:>9.1}",
        alone.0, crowded.0
    );
    println!(
        "  peak RSS (VmHWM, MiB)                 : {:>9.1} {:>9.1}",
        alone.1, crowded.1
    );
    println!(
        "  operator start -> all Ready (s)       : {:>9.1} {:>9.1}",
        alone.2, crowded.2
    );
    println!("  (creating the unrelated Secrets took {creating:.1} s)");
}

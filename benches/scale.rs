//! How the operator copes with many accounts, on a real kube-apiserver against `dhan-mock`.
//!
//! `make bench` (or `cargo bench --bench scale`; `BENCH_ACCOUNTS=N` to change the size). Prints:
//! time to create the accounts, time until all are Ready with the default Dhan rate limit and
//! with a generous one, the observed Dhan call rate, and the writes an idle minute causes.

#[path = "../tests/support/mod.rs"]
mod support;

use dhan_operator::crd::{DhanAccount, Phase};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::time::{Duration, Instant};
use support::MockDhan;

const PIN: &str = "482913";
const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DP";

async fn populate(client: &Client, mock: &MockDhan, ns: &str, count: usize, first_id: u64) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "creds" }, "stringData": { "pin": PIN, "totpSecret": TOTP_SECRET },
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let accounts: Api<DhanAccount> = Api::namespaced(client.clone(), ns);
    for i in 0..count as u64 {
        let client_id = (first_id + i).to_string();
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

async fn ready_count(client: &Client, ns: &str) -> (usize, Vec<DhanAccount>) {
    let list = Api::<DhanAccount>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let ready = list
        .iter()
        .filter(|a| a.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready))
        .count();
    (ready, list)
}

async fn run(label: &str, count: usize, first_id: u64, rate: &str) {
    let cp = support::control_plane();
    let client = cp.client().await;
    support::install_crd(&client).await;
    let ns = support::namespace(&client, "bench").await;
    let mock = MockDhan::start(&[]).await;

    let started = Instant::now();
    populate(&client, &mock, &ns, count, first_id).await;
    let created = started.elapsed();

    let operator_started = Instant::now();
    let _operator = support::start_operator(
        &[
            "--namespace",
            &ns,
            "--metrics-addr",
            "127.0.0.1:0",
            "--dhan-auth-url",
            &mock.url,
            "--dhan-api-url",
            &mock.url,
            "--dhan-calls-per-second",
            rate,
        ],
        &[("RUST_LOG", "warn")],
    );
    loop {
        let (ready, _) = ready_count(&client, &ns).await;
        if ready == count {
            break;
        }
        assert!(
            operator_started.elapsed() < Duration::from_secs(1800),
            "not converging"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all_ready = operator_started.elapsed();
    let calls = mock.calls().await;
    let mints: Vec<i64> = calls
        .iter()
        .filter(|c| c["endpoint"] == "generateAccessToken")
        .map(|c| c["at"].as_i64().unwrap())
        .collect();
    let span = (mints.iter().max().unwrap() - mints.iter().min().unwrap()) as f64 / 1000.0;

    // Idle: nothing due for ~19 h; reconciles triggered by our own writes must have settled.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, before) = ready_count(&client, &ns).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (_, after) = ready_count(&client, &ns).await;
    let changed = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| a.resource_version() != b.resource_version())
        .count();

    println!("{label}: {count} accounts, --dhan-calls-per-second {rate}");
    println!(
        "  create accounts + secrets via the API : {:>7.1} s",
        created.as_secs_f64()
    );
    println!(
        "  operator start -> all Ready           : {:>7.1} s",
        all_ready.as_secs_f64()
    );
    println!(
        "  per account                           : {:>7.1} ms",
        all_ready.as_secs_f64() * 1000.0 / count as f64
    );
    println!(
        "  mints                                 : {:>7}",
        mints.len()
    );
    println!(
        "  observed mint rate                    : {:>7.1} /s",
        (mints.len() as f64 - 1.0) / span.max(0.001)
    );
    println!("  accounts rewritten during 30 s idle   : {:>7}", changed);
}

#[tokio::main]
async fn main() {
    let count: usize = std::env::var("BENCH_ACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    run("default Dhan rate limit", count, 1_500_000_000, "5").await;
    run("generous Dhan rate limit", count, 1_600_000_000, "1000").await;
}

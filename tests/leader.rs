//! Several operator replicas with `--leader-elect`: only the Lease holder reconciles.

mod support;

use dhan_operator::crd::{DhanAccount, Phase};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;
use support::MockDhan;

const PIN: &str = "482913";
const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DP";

async fn add_account(client: &kube::Client, ns: &str, name: &str, client_id: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": format!("{name}-dhan") },
        "stringData": { "pin": PIN, "totpSecret": TOTP_SECRET },
    }))
    .unwrap();
    secrets
        .patch(
            &format!("{name}-dhan"),
            &PatchParams::apply("e2e"),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap();
    let account: DhanAccount = serde_json::from_value(json!({
        "apiVersion": "dhan-operator.dev/v1alpha1", "kind": "DhanAccount",
        "metadata": { "name": name },
        "spec": { "clientId": client_id, "credentialsSecret": format!("{name}-dhan") },
    }))
    .unwrap();
    Api::<DhanAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
}

async fn wait_ready(client: &kube::Client, ns: &str, name: &str, timeout: Duration) {
    let accounts: Api<DhanAccount> = Api::namespaced(client.clone(), ns);
    support::wait_for(timeout, || async {
        let a = accounts.get(name).await.ok()?;
        (a.status?.phase? == Phase::Ready).then_some(())
    })
    .await;
}

#[tokio::test]
async fn only_the_leader_mints_and_a_standby_takes_over() {
    let cp = support::control_plane();
    let client = cp.client().await;
    support::install_crd(&client).await;
    let ns = support::namespace(&client, "leader").await;
    let mock = MockDhan::start(&[]).await;
    for client_id in ["1200000001", "1200000002"] {
        mock.register(json!({ "clientId": client_id, "pin": PIN, "totpSecret": TOTP_SECRET }))
            .await;
    }
    let args = |lease: &str| {
        vec![
            "--namespace".to_string(),
            ns.clone(),
            "--metrics-addr".into(),
            "127.0.0.1:0".into(),
            "--dhan-auth-url".into(),
            mock.url.clone(),
            "--dhan-api-url".into(),
            mock.url.clone(),
            "--leader-elect".into(),
            "--leader-elect-namespace".into(),
            ns.clone(),
            "--leader-elect-lease".into(),
            lease.into(),
            "--leader-elect-lease-duration".into(),
            "15s".into(),
            "--dhan-timeout".into(),
            "3s".into(),
        ]
    };
    let a_args = args("test-leader");
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let mut first = support::start_operator(&a_args, &[("POD_NAME", "replica-a")]);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    support::wait_for(Duration::from_secs(30), || async {
        let lease = leases.get("test-leader").await.ok()?;
        (lease.spec?.holder_identity.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let mut second = support::start_operator(&a_args, &[("POD_NAME", "replica-b")]);

    add_account(&client, &ns, "alice", "1200000001").await;
    wait_ready(&client, &ns, "alice", Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        mock.calls_to("generateAccessToken", "1200000001")
            .await
            .len(),
        1,
        "exactly one replica minted"
    );
    assert!(
        second.output().contains("waiting to become leader")
            && !second.output().contains("Obtained a new token"),
        "the standby does not reconcile"
    );

    first.kill_9();
    support::wait_for(Duration::from_secs(40), || async {
        let lease = leases.get("test-leader").await.ok()?;
        (lease.spec?.holder_identity.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    add_account(&client, &ns, "bob", "1200000002").await;
    wait_ready(&client, &ns, "bob", Duration::from_secs(60)).await;
    assert_eq!(
        mock.calls_to("generateAccessToken", "1200000002")
            .await
            .len(),
        1
    );
    assert_eq!(
        mock.calls_to("generateAccessToken", "1200000001")
            .await
            .len(),
        1,
        "the new leader adopts alice's existing token instead of minting again"
    );
    assert!(second.try_wait().is_none(), "the new leader keeps running");
}

/// A leader frozen (SIGSTOP) long enough for a standby to take over resumes with its watch
/// events and reconciles pending: the Lease check before each mint stops it, so each refresh
/// still costs exactly one mint.
#[tokio::test]
async fn a_frozen_leader_that_resumes_after_a_takeover_never_mints() {
    let cp = support::control_plane();
    let client = cp.client().await;
    support::install_crd(&client).await;
    let ns = support::namespace(&client, "frozen").await;
    let mock = MockDhan::start(&[]).await;
    mock.register(json!({ "clientId": "1200000011", "pin": PIN, "totpSecret": TOTP_SECRET }))
        .await;
    let args = [
        "--namespace",
        &ns,
        "--metrics-addr",
        "127.0.0.1:0",
        "--dhan-auth-url",
        &mock.url,
        "--dhan-api-url",
        &mock.url,
        "--leader-elect",
        "--leader-elect-namespace",
        &ns,
        "--leader-elect-lease",
        "frozen-leader",
        "--leader-elect-lease-duration",
        "15s",
        "--dhan-timeout",
        "3s",
    ];
    let mut first = support::start_operator(&args, &[("POD_NAME", "replica-a")]);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let holder = |who: &'static str| {
        let leases = leases.clone();
        async move {
            support::wait_for(Duration::from_secs(60), || async {
                let lease = leases.get("frozen-leader").await.ok()?;
                (lease.spec?.holder_identity.as_deref() == Some(who)).then_some(())
            })
            .await
        }
    };
    holder("replica-a").await;
    // Frozen as a leader at work, not between taking the Lease and starting the controller.
    support::wait_for(Duration::from_secs(30), || async {
        first.output().contains("became leader").then_some(())
    })
    .await;
    let second = support::start_operator(&args, &[("POD_NAME", "replica-b")]);

    signal(first.pid(), "-STOP");
    // Created while the leader is frozen: both replicas see it, only one may mint.
    add_account(&client, &ns, "carol", "1200000011").await;
    holder("replica-b").await;
    wait_ready(&client, &ns, "carol", Duration::from_secs(60)).await;
    signal(first.pid(), "-CONT");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while first.try_wait().is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    assert_eq!(
        mock.calls_to("generateAccessToken", "1200000011")
            .await
            .len(),
        1,
        "exactly one mint: the resumed replica did not mint\n{}",
        first.output()
    );
    assert!(
        first.output().contains("lost leadership") || first.output().contains("not calling Dhan"),
        "the resumed replica noticed it no longer leads:\n{}",
        first.output()
    );
    assert!(second.output().contains("became leader"));
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

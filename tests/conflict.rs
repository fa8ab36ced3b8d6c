//! One minter per client ID across namespaces. Its own test binary (and control plane): the
//! operator here watches all namespaces.

mod support;

use dhan_operator::crd::{DhanAccount, Phase};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;
use support::MockDhan;

const PIN: &str = "482913";
const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DP";
const CLIENT_ID: &str = "1300000001";

async fn add_account(client: &kube::Client, ns: &str, name: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "creds" },
        "stringData": { "pin": PIN, "totpSecret": TOTP_SECRET },
    }))
    .unwrap();
    secrets
        .patch("creds", &PatchParams::apply("e2e"), &Patch::Apply(&secret))
        .await
        .unwrap();
    let account: DhanAccount = serde_json::from_value(json!({
        "apiVersion": "dhan-operator.dev/v1alpha1", "kind": "DhanAccount",
        "metadata": { "name": name },
        "spec": { "clientId": CLIENT_ID, "credentialsSecret": "creds" },
    }))
    .unwrap();
    Api::<DhanAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
}

async fn wait_phase(client: &kube::Client, ns: &str, name: &str, phase: Phase) -> DhanAccount {
    let accounts: Api<DhanAccount> = Api::namespaced(client.clone(), ns);
    support::wait_for(Duration::from_secs(90), || async {
        let a = accounts.get(name).await.ok()?;
        (a.status.as_ref()?.phase? == phase).then_some(a)
    })
    .await
}

#[tokio::test]
async fn the_older_account_wins_and_the_other_takes_over_when_it_is_deleted() {
    let cp = support::control_plane();
    let client = cp.client().await;
    support::install_crd(&client).await;
    let team_a = support::namespace(&client, "team-a").await;
    let team_b = support::namespace(&client, "team-b").await;
    let mock = MockDhan::start(&["--mint-throttle-seconds", "3"]).await;
    mock.register(json!({ "clientId": CLIENT_ID, "pin": PIN, "totpSecret": TOTP_SECRET }))
        .await;
    let _operator = support::start_operator(
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--dhan-auth-url",
            &mock.url,
            "--dhan-api-url",
            &mock.url,
            "--min-mint-interval",
            "5s",
        ],
        &[],
    );

    add_account(&client, &team_a, "alice").await;
    wait_phase(&client, &team_a, "alice", Phase::Ready).await;
    // creationTimestamp has one-second resolution: make the second account clearly younger.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    add_account(&client, &team_b, "alice-copy").await;
    let loser = wait_phase(&client, &team_b, "alice-copy", Phase::Conflict).await;
    let message = loser.status.unwrap().message.unwrap();
    assert!(
        message.contains("a DhanAccount in another namespace")
            && !message.contains(&team_a)
            && !message.contains("alice "),
        "tells the loser only what it may know: {message}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        mock.calls_to("generateAccessToken", CLIENT_ID).await.len(),
        1,
        "the loser never mints"
    );
    let winner: Api<DhanAccount> = Api::namespaced(client.clone(), &team_a);
    assert_eq!(
        winner.get("alice").await.unwrap().status.unwrap().phase,
        Some(Phase::Ready)
    );

    winner
        .delete("alice", &DeleteParams::default())
        .await
        .unwrap();
    wait_phase(&client, &team_b, "alice-copy", Phase::Ready).await;
    assert_eq!(
        mock.calls_to("generateAccessToken", CLIENT_ID).await.len(),
        2
    );
}

//! An account the operator cannot read keeps its claim on its client ID: it may hold a live
//! token, which a mint by another account would kill. Its own test binary (and control plane):
//! the operator here watches all namespaces, and would take other tests' accounts for its own.

mod support;

use dhan_operator::crd::{DhanAccount, Phase};
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};
use std::time::Duration;
use support::{ChildProcess, MockDhan, PIN, TOTP_SECRET, WAIT};

const CLIENT_ID: &str = "1600000001";
const MINT: &str = "generateAccessToken";

async fn add_account(client: &Client, ns: &str, name: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "creds" },
        "stringData": { "pin": PIN, "totpSecret": TOTP_SECRET },
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
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

async fn wait_phase(client: &Client, ns: &str, name: &str, phase: Phase) -> DhanAccount {
    let accounts: Api<DhanAccount> = Api::namespaced(client.clone(), ns);
    support::wait_for(Duration::from_secs(90), || async {
        let a = accounts.get(name).await.ok()?;
        (a.status.as_ref()?.phase? == phase).then_some(a)
    })
    .await
}

/// Merge-patches an account's status as an untyped object: a typed read would fail on it.
async fn patch_status(client: &Client, ns: &str, name: &str, status: Value) {
    let resource = ApiResource::erase::<DhanAccount>(&());
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap_or_else(|e| panic!("patching the status of {ns}/{name}: {e}"));
}

/// The operator's `/readyz`: status code and body.
async fn readyz(operator: &ChildProcess) -> (u16, String) {
    let metrics =
        support::wait_for(WAIT, || async { support::metrics_url(&operator.output()) }).await;
    let response = reqwest::get(metrics.replace("/metrics", "/readyz"))
        .await
        .expect("/readyz answers");
    let code = response.status().as_u16();
    (code, response.text().await.unwrap())
}

async fn scrape(operator: &ChildProcess) -> String {
    let url = support::wait_for(WAIT, || async { support::metrics_url(&operator.output()) }).await;
    reqwest::get(&url).await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn an_unreadable_account_with_a_live_token_keeps_a_newer_account_of_its_client_in_conflict() {
    let cp = support::control_plane();
    let client = cp.client().await;
    support::install_crd(&client).await;
    let team_a = support::namespace(&client, "team-a").await;
    let team_b = support::namespace(&client, "team-b").await;
    let mock = MockDhan::start(&["--mint-throttle-seconds", "3"]).await;
    mock.register(json!({ "clientId": CLIENT_ID, "pin": PIN, "totpSecret": TOTP_SECRET }))
        .await;
    let operator = support::start_operator(
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
    wait_phase(&client, &team_b, "alice-copy", Phase::Conflict).await;
    assert_eq!(mock.calls_to(MINT, CLIENT_ID).await.len(), 1);

    // Anyone with status rights can make the winner unreadable, its token still live.
    patch_status(
        &client,
        &team_a,
        "alice",
        json!({ "failedAttempts": 5_000_000_000u64 }),
    )
    .await;
    let event = support::wait_for(WAIT, || async {
        Api::<Event>::namespaced(client.clone(), &team_a)
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("Undecodable"))
    })
    .await;

    // A change to the loser reconciles it at once: still the loser.
    let copies: Api<DhanAccount> = Api::namespaced(client.clone(), &team_b);
    let edited = copies
        .patch(
            "alice-copy",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "refresh": { "renewBefore": "11m" } } })),
        )
        .await
        .unwrap();
    let generation = edited.metadata.generation;
    let seen = support::wait_for(Duration::from_secs(90), || async {
        let account = copies.get("alice-copy").await.ok()?;
        let status = account.status?;
        (status.observed_generation == generation).then_some(status)
    })
    .await;
    assert_eq!(seen.phase, Some(Phase::Conflict), "{:?}", seen.message);
    assert_eq!(
        mock.calls_to(MINT, CLIENT_ID).await.len(),
        1,
        "the unreadable account's token is not killed by a mint of the newer one"
    );

    // Reported, and the operator stays ready: a tenant's object says nothing about whether
    // this replica can work.
    let message = event.message.unwrap_or_default();
    assert!(
        message.contains("status.failedAttempts") && message.contains("keeps its claim"),
        "{message}"
    );
    let (code, body) = readyz(&operator).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(&format!("DhanAccount {team_a}/alice skipped")),
        "{body}"
    );
    assert!(
        scrape(&operator)
            .await
            .contains("dhan_operator_skipped_accounts 1")
    );

    // Deleted, it lets go of the client ID like any account.
    Api::<DhanAccount>::namespaced(client.clone(), &team_a)
        .delete("alice", &DeleteParams::default())
        .await
        .unwrap();
    wait_phase(&client, &team_b, "alice-copy", Phase::Ready).await;
    assert_eq!(mock.calls_to(MINT, CLIENT_ID).await.len(), 2);
    assert!(
        scrape(&operator)
            .await
            .contains("dhan_operator_skipped_accounts 0")
    );
}

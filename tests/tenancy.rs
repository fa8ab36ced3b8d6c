//! Many tenants, one cluster: an unreadable DhanAccount does not stop the others nor make the
//! operator unready, a broken watch does, two installs never both mint for one client ID, and
//! `/metrics` answers only whom the API server authorises.

mod support;

#[path = "tenancy/metrics.rs"]
mod metrics;

use dhan_operator::crd::Phase;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::api::events::v1::Event as NewEvent;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};
use std::time::Duration;
use support::{Bed, ChildProcess, MockDhan, PIN, TOTP_SECRET, WAIT};

/// The operator's `/metrics` URL, once it serves.
async fn metrics_url(operator: &ChildProcess) -> String {
    support::wait_for(WAIT, || async { support::metrics_url(&operator.output()) }).await
}

/// The operator's `/readyz`: status code and body.
async fn readyz(operator: &ChildProcess) -> (u16, String) {
    let url = metrics_url(operator).await.replace("/metrics", "/readyz");
    let response = reqwest::get(&url).await.expect("/readyz answers");
    let code = response.status().as_u16();
    (code, response.text().await.unwrap())
}

async fn scrape(operator: &ChildProcess) -> String {
    let url = metrics_url(operator).await;
    reqwest::get(&url).await.unwrap().text().await.unwrap()
}

/// Merge-patches an account's status as an untyped object: a typed read would fail on it.
async fn patch_status(client: &Client, ns: &str, name: &str, status: Value) {
    let resource = ApiResource::erase::<dhan_operator::crd::DhanAccount>(&());
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap_or_else(|e| panic!("patching the status of {ns}/{name}: {e}"));
}

#[tokio::test]
async fn an_unreadable_account_is_reported_and_skipped_while_the_others_refresh() {
    let bed = Bed::without_operator("malformed").await;
    bed.register("1500000001", PIN).await;
    bed.put_secret("creds", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    // Written before the operator's first list: with typed decoding the whole list would fail.
    bed.create_account(
        "broken",
        json!({ "clientId": "1500000009", "credentialsSecret": "creds" }),
    )
    .await;
    patch_status(
        &bed.client,
        &bed.ns,
        "broken",
        json!({ "failedAttempts": 5_000_000_000u64 }),
    )
    .await;
    bed.create_account(
        "good",
        json!({ "clientId": "1500000001", "credentialsSecret": "creds" }),
    )
    .await;
    let operator = bed.spawn_operator(&[], &[]);

    bed.wait_phase("good", Phase::Ready).await;
    // Named in /readyz, which stays 200: a tenant's object cannot make the operator unready.
    let (code, body) = support::wait_for(WAIT, || async {
        let (code, body) = readyz(&operator).await;
        body.contains("skipped").then_some((code, body))
    })
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(&format!(
            "DhanAccount {}/broken skipped: status.failedAttempts",
            bed.ns
        )),
        "{body}"
    );
    assert!(
        scrape(&operator)
            .await
            .contains("dhan_operator_skipped_accounts 1")
    );
    let event = support::wait_for(WAIT, || async {
        Api::<Event>::namespaced(bed.client.clone(), &bed.ns)
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.involved_object.name.as_deref() == Some("broken")
                    && e.reason.as_deref() == Some("Undecodable")
            })
    })
    .await;
    assert!(
        event
            .message
            .unwrap_or_default()
            .contains("status.failedAttempts"),
        "the event names the field"
    );
    assert!(operator.output().contains("skipping a DhanAccount"));

    // A new version, still unreadable: reported again, into the same event's series.
    let resource = ApiResource::erase::<dhan_operator::crd::DhanAccount>(&());
    Api::<DynamicObject>::namespaced_with(bed.client.clone(), &bed.ns, &resource)
        .patch(
            "broken",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "touched": "yes" } } })),
        )
        .await
        .expect("labelling the unreadable account");
    let series = support::wait_for(WAIT, || async {
        let undecodable: Vec<NewEvent> = Api::<NewEvent>::namespaced(bed.client.clone(), &bed.ns)
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Undecodable"))
            .collect();
        let count = undecodable.first()?.series.as_ref()?.count;
        (count == 2).then_some(undecodable)
    })
    .await;
    assert_eq!(series.len(), 1, "one event, counted twice: {series:?}");
    assert_eq!(
        bed.mock
            .calls_to("generateAccessToken", "1500000009")
            .await
            .len(),
        0,
        "the unreadable account is left alone"
    );

    // Fixed: it is read, reconciled, and no longer named.
    patch_status(
        &bed.client,
        &bed.ns,
        "broken",
        json!({ "failedAttempts": 1 }),
    )
    .await;
    bed.wait_status("broken", WAIT, |s| s.phase.is_some()).await;
    let (code, body) = readyz(&operator).await;
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains("broken"), "{body}");
    assert!(
        scrape(&operator)
            .await
            .contains("dhan_operator_skipped_accounts 0")
    );
}

#[tokio::test]
async fn a_watch_that_fails_makes_the_operator_unready_until_it_recovers() {
    let bed = Bed::without_operator("unready").await;
    bed.register("1500000002", PIN).await;
    bed.put_secret("creds", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    bed.create_account(
        "alice",
        json!({ "clientId": "1500000002", "credentialsSecret": "creds" }),
    )
    .await;
    // User dhan-operator has no rights in this namespace yet.
    let kubeconfig = support::control_plane().operator_kubeconfig_path();
    let operator = bed.spawn_operator(&[], &[("KUBECONFIG", kubeconfig.to_str().unwrap())]);

    // The accounts' watch says why it has not listed (the claims' watch may say so first).
    let body = support::wait_for(WAIT, || async {
        let (code, body) = readyz(&operator).await;
        (code == 503 && body.contains("watch dhanaccounts: not listed yet: list: ")).then_some(body)
    })
    .await;
    assert!(body.contains("forbidden"), "{body}");
    let metrics = scrape(&operator).await;
    assert!(
        metrics.contains("dhan_operator_watch_errors_total{watch=\"dhanaccounts\"}"),
        "{metrics}"
    );

    grant_operator_user(&bed.client, &bed.ns).await;
    // kube's watcher retries at most 30 s apart.
    support::wait_for(Duration::from_secs(90), || async {
        (readyz(&operator).await.0 == 200).then_some(())
    })
    .await;
    bed.wait_phase("alice", Phase::Ready).await;
}

/// The rights an operator needs for TOTP accounts in `ns`, for user `dhan-operator`.
async fn grant_operator_user(client: &Client, ns: &str) {
    support::control_plane().grant_operator_user_claims();
    let rules = json!([
        { "apiGroups": ["dhan-operator.dev"], "resources": ["dhanaccounts"],
          "verbs": ["get", "list", "watch"] },
        { "apiGroups": ["dhan-operator.dev"], "resources": ["dhanaccounts/status"],
          "verbs": ["patch"] },
        { "apiGroups": [""], "resources": ["secrets"],
          "verbs": ["get", "list", "watch", "create", "patch"] },
        { "apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"] },
    ]);
    let role: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(json!({
        "metadata": { "name": "operator" }, "rules": rules,
    }))
    .unwrap();
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "operator" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "operator" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                       "name": "dhan-operator" }],
    }))
    .unwrap();
    Api::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    Api::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

/// An operator for namespace `ns`, as install `install`.
fn install(ns: &str, mock: &MockDhan, install: &str) -> support::ChildProcess {
    support::start_operator(
        &[
            "--namespace",
            ns,
            "--metrics-addr",
            "127.0.0.1:0",
            "--dhan-auth-url",
            &mock.url,
            "--dhan-api-url",
            &mock.url,
            "--min-mint-interval",
            "5s",
            "--install-id",
            install,
        ],
        &[],
    )
}

async fn put_credentials(client: &Client, ns: &str, name: &str) {
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name },
        "stringData": { "pin": PIN, "totpSecret": TOTP_SECRET },
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::apply("e2e"), &Patch::Apply(&secret))
        .await
        .unwrap();
}

async fn add_account(client: &Client, ns: &str, name: &str, client_id: &str, creds: &str) {
    let account: dhan_operator::crd::DhanAccount = serde_json::from_value(json!({
        "apiVersion": "dhan-operator.dev/v1alpha1", "kind": "DhanAccount",
        "metadata": { "name": name },
        "spec": { "clientId": client_id, "credentialsSecret": creds },
    }))
    .unwrap();
    Api::<dhan_operator::crd::DhanAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
}

async fn wait_phase(client: &Client, ns: &str, name: &str, phase: Phase) -> String {
    let accounts: Api<dhan_operator::crd::DhanAccount> = Api::namespaced(client.clone(), ns);
    support::wait_for(Duration::from_secs(90), || async {
        let status = accounts.get(name).await.ok()?.status?;
        (status.phase? == phase).then(|| status.message.unwrap_or_default())
    })
    .await
}

#[tokio::test]
async fn two_installs_with_one_client_id_mint_once_and_hand_over_on_delete() {
    const CLIENT: &str = "1500000003";
    let cp = support::control_plane();
    let client = cp.client().await;
    support::install_crd(&client).await;
    let team_a = support::namespace(&client, "team-a").await;
    let team_b = support::namespace(&client, "team-b").await;
    let mock = MockDhan::start(&["--mint-throttle-seconds", "3"]).await;
    mock.register(json!({ "clientId": CLIENT, "pin": PIN, "totpSecret": TOTP_SECRET }))
        .await;
    // Two single-namespace installs: neither sees the other's DhanAccounts.
    // Two single-namespace installs: neither sees the other's DhanAccounts, and neither was told
    // of the other.
    let _a = install(&team_a, &mock, "install-a");
    let _b = install(&team_b, &mock, "install-b");

    // Team B names the client first, without credentials: it claims nothing.
    add_account(&client, &team_b, "bob", CLIENT, "bob-dhan").await;
    wait_phase(&client, &team_b, "bob", Phase::Failed).await;
    put_credentials(&client, &team_a, "alice-dhan").await;
    add_account(&client, &team_a, "alice", CLIENT, "alice-dhan").await;
    wait_phase(&client, &team_a, "alice", Phase::Ready).await;
    let claim_name = dhan_operator::claims::claim_name(CLIENT);
    let claims: Api<dhan_operator::claims::DhanClientClaim> = Api::all(client.clone());
    let holder = claims.get(&claim_name).await.unwrap().spec.holder;
    assert_eq!(holder.map(|h| h.install).as_deref(), Some("install-a"));

    // With credentials, team B's account is refused the claim, told nothing about team A.
    put_credentials(&client, &team_b, "bob-dhan").await;
    let message = wait_phase(&client, &team_b, "bob", Phase::Conflict).await;
    assert!(
        message.contains("claimed by another DhanAccount"),
        "{message}"
    );
    assert!(
        !message.contains(&team_a) && !message.contains("alice") && !message.contains("install-a"),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        mock.calls_to("generateAccessToken", CLIENT).await.len(),
        1,
        "one mint for two installs"
    );

    // Alice goes: her claim is released and bob's install takes it.
    Api::<dhan_operator::crd::DhanAccount>::namespaced(client.clone(), &team_a)
        .delete("alice", &DeleteParams::default())
        .await
        .unwrap();
    wait_phase(&client, &team_b, "bob", Phase::Ready).await;
    assert_eq!(mock.calls_to("generateAccessToken", CLIENT).await.len(), 2);
    let holder = claims.get(&claim_name).await.unwrap().spec.holder;
    assert_eq!(holder.map(|h| h.install).as_deref(), Some("install-b"));
}

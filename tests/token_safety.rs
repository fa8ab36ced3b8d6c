//! What never happens, on the real kube-apiserver against `dhan-mock`: a minted token is never
//! lost, a routine edit never mints, a bad spec never reaches Dhan. Each test counts the mock's
//! mints, not only what the status says.

mod support;

use dhan_operator::crd::Phase;
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::time::Duration;
use support::{Bed, PIN, TOTP_SECRET};

const MINT: &str = "generateAccessToken";

async fn credentials(bed: &Bed, client_id: &str, name: &str) {
    bed.register(client_id, PIN).await;
    bed.put_secret(
        &format!("{name}-dhan"),
        &[("pin", PIN), ("totpSecret", TOTP_SECRET)],
    )
    .await;
}

fn spec(client_id: &str, name: &str, extra: Value) -> Value {
    let mut spec = json!({ "clientId": client_id, "credentialsSecret": format!("{name}-dhan") });
    if let (Value::Object(spec), Value::Object(extra)) = (&mut spec, extra) {
        spec.extend(extra);
    }
    spec
}

async fn mints(bed: &Bed, client_id: &str) -> usize {
    bed.mock.calls_to(MINT, client_id).await.len()
}

/// A quota (no controller-manager runs: its status is written here, as the quota controller
/// would) that allows no more Secrets in the namespace than there are now.
async fn secrets_quota_full(bed: &Bed) -> Api<ResourceQuota> {
    let count = bed
        .secrets()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .len()
        .to_string();
    let quotas: Api<ResourceQuota> = Api::namespaced(bed.client.clone(), &bed.ns);
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": { "name": "secrets" },
        "spec": { "hard": { "secrets": count } },
    }))
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    quotas
        .patch_status(
            "secrets",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "hard": { "secrets": count },
                                              "used": { "secrets": count } } })),
        )
        .await
        .unwrap();
    quotas
}

#[tokio::test]
async fn a_secret_refused_by_a_quota_costs_one_mint_and_the_kept_token_lands() {
    const CLIENT: &str = "1600000001";
    let bed = Bed::start_with("safe", &[]).await;
    credentials(&bed, CLIENT, "quinn").await;
    let quotas = secrets_quota_full(&bed).await;
    bed.create_account("quinn", spec(CLIENT, "quinn", json!({})))
        .await;

    let refused = bed
        .wait_status("quinn", Duration::from_secs(30), |s| {
            s.conditions
                .iter()
                .any(|c| c.reason == "SecretWriteRefused")
        })
        .await
        .status
        .unwrap();
    assert_eq!(refused.phase, Some(Phase::Backoff));
    assert!(
        refused
            .message
            .as_deref()
            .unwrap()
            .contains("exceeded quota"),
        "{refused:?}"
    );
    // The quota holds for a while — far past Dhan's mint interval (5 s here): no second mint.
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(
        mints(&bed, CLIENT).await,
        1,
        "exactly one mint while refused"
    );
    assert!(
        bed.secrets()
            .get_opt("quinn-token")
            .await
            .unwrap()
            .is_none()
    );

    quotas
        .delete("secrets", &DeleteParams::default())
        .await
        .unwrap();
    bed.wait_phase_for("quinn", Phase::Ready, Duration::from_secs(90))
        .await;
    let token = bed.token_in_secret("quinn-token").await;
    assert_eq!(
        bed.mock.account(CLIENT).await["currentToken"],
        token.as_str(),
        "the kept token is Dhan's live one"
    );
    assert_eq!(mints(&bed, CLIENT).await, 1, "exactly one mint in all");
    bed.assert_nothing_leaks(&[PIN, TOTP_SECRET, &token]).await;
}

#[tokio::test]
async fn output_keys_the_api_server_would_refuse_fail_without_a_dhan_call() {
    const CLIENT: &str = "1600000002";
    let bed = Bed::start_with("safe", &[]).await;
    credentials(&bed, CLIENT, "kim").await;
    bed.create_account(
        "kim",
        spec(
            CLIENT,
            "kim",
            json!({ "secretTemplate": { "keys": { "accessToken": "TOKEN", "clientId": "TOKEN" } } }),
        ),
    )
    .await;
    let status = bed.wait_phase("kim", Phase::Failed).await.status.unwrap();
    assert!(
        status
            .message
            .as_deref()
            .unwrap()
            .starts_with("spec.secretTemplate.keys.clientId: \"TOKEN\" is also"),
        "{status:?}"
    );
    bed.create_account(
        "kim-2",
        spec(CLIENT, "kim", json!({ "secretName": "Kim_Token" })),
    )
    .await;
    let status = bed.wait_phase("kim-2", Phase::Failed).await.status.unwrap();
    assert!(
        status
            .message
            .as_deref()
            .unwrap()
            .starts_with("spec.secretName")
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = bed.mock.calls().await;
    assert!(
        !calls.iter().any(|c| c["clientId"] == CLIENT),
        "no Dhan call: {calls:?}"
    );
}

#[tokio::test]
async fn a_renamed_secret_and_a_recreated_account_keep_the_token_without_a_mint() {
    const CLIENT: &str = "1600000003";
    let bed = Bed::start_with("safe", &[]).await;
    credentials(&bed, CLIENT, "rita").await;
    bed.create_account("rita", spec(CLIENT, "rita", json!({})))
        .await;
    bed.wait_phase("rita", Phase::Ready).await;
    let token = bed.token_in_secret("rita-token").await;

    bed.patch_spec("rita", json!({ "secretName": "rita-moved" }))
        .await;
    bed.wait_status("rita", Duration::from_secs(30), |s| {
        s.secret_name.as_deref() == Some("rita-moved")
    })
    .await;
    assert_eq!(bed.token_in_secret("rita-moved").await, token);
    assert!(bed.secrets().get_opt("rita-token").await.unwrap().is_none());

    // kubectl delete + apply (a GitOps re-sync): the Secret stays (deletionPolicy Retain) and
    // the new account adopts its token.
    bed.accounts()
        .delete("rita", &DeleteParams::default())
        .await
        .unwrap();
    support::wait_for(Duration::from_secs(10), || async {
        bed.accounts()
            .get_opt("rita")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(bed.token_in_secret("rita-moved").await, token);
    bed.create_account(
        "rita",
        spec(CLIENT, "rita", json!({ "secretName": "rita-moved" })),
    )
    .await;
    let status = bed.wait_phase("rita", Phase::Ready).await.status.unwrap();
    assert_eq!(status.secret_name.as_deref(), Some("rita-moved"));
    assert_eq!(bed.token_in_secret("rita-moved").await, token);
    assert_eq!(
        mints(&bed, CLIENT).await,
        1,
        "no mint for a move or a re-creation"
    );
}

#[tokio::test]
async fn an_unknown_client_id_fails_after_one_call() {
    const CLIENT: &str = "1600000004";
    let bed = Bed::start_with("safe", &[]).await;
    // Credentials, but Dhan knows no such client ("Invalid Client ID").
    bed.put_secret("una-dhan", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    bed.create_account("una", spec(CLIENT, "una", json!({})))
        .await;
    let status = bed.wait_phase("una", Phase::Failed).await.status.unwrap();
    assert_eq!(
        status.last_failure_reason.as_deref(),
        Some("InvalidClientId")
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(mints(&bed, CLIENT).await, 1, "one call, no retry loop");
}

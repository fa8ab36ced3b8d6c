//! Getting tokens to pods and to operators' dashboards: rollout restarts, static-IP status and
//! the metrics endpoint.

mod support;

use dhan_operator::crd::Phase;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use std::time::Duration;
use support::{Bed, PIN, TOTP_SECRET};

fn template_hash(deployment: &Deployment) -> Option<String> {
    deployment
        .spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get("dhan-operator.dev/token-hash")
        .cloned()
}

#[tokio::test]
async fn rollout_targets_restart_once_per_token_change_and_never_when_idle() {
    let bed = Bed::start_with("rollout", &["--rollout-restarts"]).await;
    bed.register("1400000001", PIN).await;
    bed.put_secret("algo-dhan", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    let deployments: Api<Deployment> = Api::namespaced(bed.client.clone(), &bed.ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "algo-1",
                      "annotations": { "dhan-operator.dev/restart-on-refresh-of": "algo" } },
        "spec": {
            "selector": { "matchLabels": { "app": "algo" } },
            "template": {
                "metadata": { "labels": { "app": "algo" } },
                "spec": { "containers": [{ "name": "algo", "image": "busybox",
                    "envFrom": [{ "secretRef": { "name": "algo-token" } }] }] }
            }
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    bed.create_account(
        "algo",
        json!({ "clientId": "1400000001", "credentialsSecret": "algo-dhan",
                "rolloutRestartTargets": [{ "kind": "Deployment", "name": "algo-1" }] }),
    )
    .await;

    let ready = bed.wait_phase("algo", Phase::Ready).await;
    let first_hash = ready.status.unwrap().token_hash.unwrap();
    let annotated = support::wait_for(Duration::from_secs(30), || async {
        let d = deployments.get("algo-1").await.ok()?;
        (template_hash(&d).as_deref() == Some(first_hash.as_str())).then_some(d)
    })
    .await;
    let generation = annotated.metadata.generation;

    // Idle: reconciles happen (a label change on the credentials), nothing restarts.
    bed.put_secret("algo-dhan", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        deployments.get("algo-1").await.unwrap().metadata.generation,
        generation
    );

    // A real change: exactly one more template change.
    bed.request_refresh("algo", "1").await;
    let second_hash = support::wait_for(Duration::from_secs(60), || async {
        let hash = bed.status("algo").await.token_hash?;
        (hash != first_hash).then_some(hash)
    })
    .await;
    let restarted = support::wait_for(Duration::from_secs(30), || async {
        let d = deployments.get("algo-1").await.ok()?;
        (template_hash(&d).as_deref() == Some(second_hash.as_str())).then_some(d)
    })
    .await;
    assert_eq!(restarted.metadata.generation, generation.map(|g| g + 1));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        deployments.get("algo-1").await.unwrap().metadata.generation,
        generation.map(|g| g + 1),
        "at most once per change"
    );
}

#[tokio::test]
async fn status_shows_the_registered_static_ips() {
    let bed = Bed::start_with("ip", &[]).await;
    bed.mock
        .register(json!({ "clientId": "1400000002", "pin": PIN, "totpSecret": TOTP_SECRET,
            "ipInfo": { "primaryIP": "203.0.113.7", "secondaryIP": "", "modifyDatePrimary": "2026-04-01",
                        "modifyDateSecondary": "", "ordersAllowed": true } }))
        .await;
    bed.put_secret("ip-dhan", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    bed.create_account(
        "ip",
        json!({ "clientId": "1400000002", "credentialsSecret": "ip-dhan" }),
    )
    .await;
    let ready = bed.wait_phase("ip", Phase::Ready).await;
    let ip = ready
        .status
        .unwrap()
        .static_ip
        .expect("static IPs in status");
    assert_eq!(ip.primary_ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(ip.secondary_ip, None);
    assert_eq!(ip.orders_allowed, Some(true));
    let calls = bed.mock.calls().await;
    assert!(calls.iter().any(|c| c["endpoint"] == "getIP"));
    assert!(
        calls
            .iter()
            .all(|c| !c["endpoint"].as_str().unwrap().contains("setIP")
                && !c["endpoint"].as_str().unwrap().contains("modifyIP")),
        "never changes the IPs"
    );
}

#[tokio::test]
async fn metrics_describe_each_account_and_forget_deleted_ones() {
    let bed = Bed::start_with("metrics", &[]).await;
    bed.register("1400000003", PIN).await;
    bed.put_secret("m-dhan", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    bed.create_account(
        "m",
        json!({ "clientId": "1400000003", "credentialsSecret": "m-dhan" }),
    )
    .await;
    let ready = bed.wait_phase("m", Phase::Ready).await;
    let expires = ready.status.unwrap().expires_at.unwrap().timestamp();
    let url = support::wait_for(Duration::from_secs(10), || async {
        support::metrics_url(&bed.operator().output())
    })
    .await;
    let scrape = || async { reqwest::get(&url).await.unwrap().text().await.unwrap() };
    let labels = format!(
        "namespace=\"{}\",name=\"m\",client_id=\"1400000003\"",
        bed.ns
    );
    let text = support::wait_for(Duration::from_secs(20), || async {
        let text = scrape().await;
        text.contains(&format!("dhan_operator_account_ready{{{labels}}} 1"))
            .then_some(text)
    })
    .await;
    assert!(
        text.contains(&format!(
            "dhan_operator_account_token_expiry_timestamp_seconds{{{labels}}} {expires}"
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "dhan_operator_account_phase{{{labels},phase=\"Ready\"}} 1"
    )));
    assert!(text.contains(
        "dhan_operator_dhan_calls_total{endpoint=\"generateAccessToken\",outcome=\"Success\"} 1"
    ));
    assert!(text.contains("dhan_operator_refresh_duration_seconds_count{method=\"totp\"} 1"));

    bed.accounts()
        .delete("m", &DeleteParams::default())
        .await
        .unwrap();
    support::wait_for(Duration::from_secs(20), || async {
        (!scrape().await.contains(&labels)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_missing_rollout_target_is_reported_and_the_token_still_lands() {
    let bed = Bed::start_with("rollout-missing", &["--rollout-restarts"]).await;
    bed.register("1400000004", PIN).await;
    bed.put_secret("gone-dhan", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    bed.create_account(
        "gone",
        json!({ "clientId": "1400000004", "credentialsSecret": "gone-dhan",
                "rolloutRestartTargets": [{ "kind": "Deployment", "name": "not-there" }] }),
    )
    .await;
    bed.wait_phase("gone", Phase::Ready).await;
    let event = bed.wait_event("RolloutRestartFailed").await;
    let note = event.message.unwrap_or_default();
    assert!(
        note.contains("Deployment \"not-there\" not found"),
        "{note}"
    );
    let token = bed.token_in_secret("gone-token").await;
    assert_eq!(
        bed.mock.account("1400000004").await["currentToken"],
        token.as_str()
    );
}

/// Whoever may create a DhanAccount cannot restart a workload of the namespace through the
/// operator: a workload that does not name the account is left alone, and one that names
/// another account too.
#[tokio::test]
async fn a_workload_that_did_not_opt_in_is_never_restarted() {
    let bed = Bed::start_with("rollout-consent", &["--rollout-restarts"]).await;
    bed.register("1400000005", PIN).await;
    bed.put_secret("mallory-dhan", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    let deployments: Api<Deployment> = Api::namespaced(bed.client.clone(), &bed.ns);
    for (name, opt_in) in [("payments", None), ("algo-2", Some("someone-else"))] {
        let annotations = opt_in.map(|a| json!({ "dhan-operator.dev/restart-on-refresh-of": a }));
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": { "name": name, "annotations": annotations },
            "spec": {
                "selector": { "matchLabels": { "app": name } },
                "template": {
                    "metadata": { "labels": { "app": name } },
                    "spec": { "containers": [{ "name": "c", "image": "busybox" }] }
                }
            }
        }))
        .unwrap();
        deployments
            .create(&PostParams::default(), &deployment)
            .await
            .unwrap();
    }
    let generations = [
        deployments
            .get("payments")
            .await
            .unwrap()
            .metadata
            .generation,
        deployments.get("algo-2").await.unwrap().metadata.generation,
    ];
    bed.create_account(
        "mallory",
        json!({ "clientId": "1400000005", "credentialsSecret": "mallory-dhan",
                "rolloutRestartTargets": [{ "kind": "Deployment", "name": "payments" },
                                          { "kind": "Deployment", "name": "algo-2" }] }),
    )
    .await;
    bed.wait_phase("mallory", Phase::Ready).await;
    let event = bed.wait_event("RolloutRestartFailed").await;
    let note = event.message.unwrap_or_default();
    assert!(
        note.contains("Deployment \"payments\" has not opted in")
            && note.contains("Deployment \"algo-2\" has not opted in")
            && note.contains("dhan-operator.dev/restart-on-refresh-of=mallory"),
        "{note}"
    );
    for (name, generation) in ["payments", "algo-2"].into_iter().zip(generations) {
        let deployment = deployments.get(name).await.unwrap();
        assert_eq!(
            deployment.metadata.generation, generation,
            "{name} untouched"
        );
        assert_eq!(template_hash(&deployment), None, "{name}");
    }
}

#[tokio::test]
async fn with_restarts_off_the_targets_are_reported_and_left_alone() {
    let bed = Bed::start_with("rollout-off", &[]).await;
    bed.register("1400000006", PIN).await;
    bed.put_secret("off-dhan", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    bed.create_account(
        "off",
        json!({ "clientId": "1400000006", "credentialsSecret": "off-dhan",
                "rolloutRestartTargets": [{ "kind": "Deployment", "name": "algo" }] }),
    )
    .await;
    bed.wait_phase("off", Phase::Ready).await;
    let event = bed.wait_event("RolloutRestartsOff").await;
    assert!(
        event
            .message
            .unwrap_or_default()
            .contains("the new token is in Secret \"off-token\"")
    );
}

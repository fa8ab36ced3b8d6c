//! The operator under Dhan's failure modes and its own crashes, on the real kube-apiserver
//! against `dhan-mock`: throttle replies, 5xx, slow answers, 200-with-error bodies, early
//! revocation, permanent failures under a live token, a crash between the Secret and status
//! writes, and suspension.
//!
//! Every test has its own namespace, mock and operator (`--min-mint-interval 5s`, mock throttle
//! 3 s), and checks the mock's call log, not only the status the operator reports. Four tests
//! wait for real one-minute timers (backoff, `validateEvery: 1m`): with the default two test
//! threads on two cores the file takes about 3 minutes; the tests mostly wait, so
//! `-- --test-threads 9` runs it in a little over one.

mod support;

use chrono::{DateTime, Utc};
use dhan_operator::crd::{DhanAccountStatus, Phase};
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use std::time::Duration;
use support::{Bed, PIN, TOTP_SECRET, WAIT};

const MINT: &str = "generateAccessToken";

/// Registers `client_id`, stores its credentials and creates account `name` with `spec` merged
/// over `{clientId, credentialsSecret}`.
async fn create(bed: &Bed, name: &str, client_id: &str, extra_spec: Value) {
    let secret = format!("{name}-dhan");
    bed.put_secret(&secret, &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    let mut spec = json!({ "clientId": client_id, "credentialsSecret": secret });
    if let (Value::Object(spec), Value::Object(extra)) = (&mut spec, extra_spec) {
        spec.extend(extra);
    }
    bed.create_account(name, spec).await;
}

/// Creates a TOTP account and waits until it is Ready; returns the token in its Secret, after
/// checking that it is the one the mock issued last.
async fn ready_account(bed: &Bed, name: &str, client_id: &str, extra_spec: Value) -> String {
    bed.register(client_id, PIN).await;
    create(bed, name, client_id, extra_spec).await;
    bed.wait_phase(name, Phase::Ready).await;
    let token = bed.token_in_secret(&format!("{name}-token")).await;
    assert_eq!(
        bed.mock.account(client_id).await["currentToken"],
        token.as_str()
    );
    token
}

fn at_ms(call: &Value) -> i64 {
    call["at"].as_i64().expect("call has `at`")
}

/// Seconds from `lastFailureTime` to `nextRefreshTime`.
fn retry_delay(status: &DhanAccountStatus) -> i64 {
    let failed: DateTime<Utc> = status.last_failure_time.expect("lastFailureTime");
    let next: DateTime<Utc> = status.next_refresh_time.expect("nextRefreshTime");
    (next - failed).num_seconds()
}

fn ready_condition(status: &DhanAccountStatus) -> Option<&str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

#[tokio::test]
async fn throttle_reply_backs_off_then_mints_after_the_minimum_interval() {
    let bed = Bed::start_with("res", &[]).await;
    bed.register("1200000001", PIN).await;
    bed.mock
        .fault(json!({ "endpoint": MINT, "kind": "throttle", "count": 1 }))
        .await;
    create(&bed, "tina", "1200000001", json!({})).await;

    let backoff = bed.wait_phase("tina", Phase::Backoff).await.status.unwrap();
    let message = backoff.message.clone().unwrap();
    assert!(message.contains("2 minutes"), "{message}");
    assert_eq!(
        backoff.last_failure_reason.as_deref(),
        Some("MintThrottled")
    );
    assert_eq!(backoff.failed_attempts, Some(1));
    assert!(
        (4..=6).contains(&retry_delay(&backoff)),
        "a throttle reply waits the minimum mint interval (5 s here): {backoff:?}"
    );
    assert_eq!(ready_condition(&backoff), Some("False"));

    let ready = bed.wait_phase("tina", Phase::Ready).await.status.unwrap();
    assert_eq!(ready.failed_attempts, None);
    let calls = bed.mock.calls_to(MINT, "1200000001").await;
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0]["outcome"], "fault");
    assert_eq!(calls[1]["outcome"], "success");
    let gap = at_ms(&calls[1]) - at_ms(&calls[0]);
    assert!(gap >= 5000, "mints {gap} ms apart");
    assert_eq!(
        bed.mock.account("1200000001").await["currentToken"],
        bed.token_in_secret("tina-token").await.as_str()
    );
}

#[tokio::test]
async fn server_error_backs_off_a_minute() {
    let bed = Bed::start_with("res", &[]).await;
    bed.register("1200000002", PIN).await;
    bed.mock
        .fault(json!({ "endpoint": MINT, "kind": "http500", "count": 1 }))
        .await;
    create(&bed, "uma", "1200000002", json!({})).await;

    let backoff = bed.wait_phase("uma", Phase::Backoff).await.status.unwrap();
    assert_eq!(backoff.failed_attempts, Some(1));
    assert_eq!(backoff.last_failure_reason.as_deref(), Some("ServerError"));
    assert_eq!(backoff.failed_inputs, None, "a 5xx is not permanent");
    assert!(
        (59..=61).contains(&retry_delay(&backoff)),
        "first retry about a minute after the failure: {backoff:?}"
    );
    assert_eq!(ready_condition(&backoff), Some("False"));
    let message = backoff.message.unwrap();
    assert!(message.contains("attempt 1 failed"), "{message}");

    // The retry a minute later, and the recovery, are the reconciler's own timing: pinned in
    // virtual time by controller::tests::reconcile::transient_failures_back_off_from_a_minute_and_recover.
    let calls = bed.mock.calls_to(MINT, "1200000002").await;
    assert_eq!(calls.len(), 1, "no retry before the backoff: {calls:?}");
    assert_eq!(
        (calls[0]["status"].as_u64(), calls[0]["outcome"].as_str()),
        (Some(500), Some("fault"))
    );
}

#[tokio::test]
async fn mint_slower_than_the_client_timeout_backs_off_and_keeps_the_token() {
    let bed = Bed::start_with("res", &["--dhan-timeout", "2s"]).await;
    let token = ready_account(&bed, "vic", "1200000003", json!({})).await;
    let secret_before = bed.secrets().get("vic-token").await.unwrap();

    bed.mock
        .fault(json!({ "endpoint": MINT, "kind": "latency", "latencyMs": 5000, "count": 1 }))
        .await;
    bed.request_refresh("vic", "slow").await;
    let backoff = bed.wait_phase("vic", Phase::Backoff).await.status.unwrap();
    assert_eq!(backoff.last_failure_reason.as_deref(), Some("Timeout"));
    assert_eq!(backoff.failed_attempts, Some(1));
    assert_eq!(
        ready_condition(&backoff),
        Some("True"),
        "the current token is still valid"
    );
    assert!((59..=61).contains(&retry_delay(&backoff)), "{backoff:?}");
    assert_ne!(
        backoff.refresh_request_handled.as_deref(),
        Some("slow"),
        "a request that failed transiently stays pending, to be retried"
    );

    // Let the mock finish the slow request it was sent, then check nothing was lost.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let secret_after = bed.secrets().get("vic-token").await.unwrap();
    assert_eq!(secret_after.data, secret_before.data);
    assert_eq!(
        bed.mock.account("1200000003").await["currentToken"],
        token.as_str(),
        "the token in the Secret is still the one Dhan accepts"
    );
    assert_eq!(bed.mock.account("1200000003").await["mints"], 1);
    assert_eq!(bed.status("vic").await.phase, Some(Phase::Backoff));
}

/// Dhan words a refused PIN in more ways than "Invalid Pin" (docs/dhan-api.md §9), as the auth
/// host answers its errors: HTTP 200 with `{"status":"error","message":...}`. Whatever the words,
/// a refusal that is not "later" holds the account after one call: the wrong PIN is not sent
/// again when a transient failure's backoff (a minute, here waited out) would have retried.
#[tokio::test]
async fn every_wording_of_a_refusal_fails_the_account_after_one_mint_and_no_retry() {
    let bed = Bed::start_with("res", &[]).await;
    let cases = [
        (
            "ana",
            "1200000004",
            "loginFailed",
            "Login failed. Please retry",
        ),
        (
            "ben",
            "1200000005",
            "validationFailed",
            "Validation failed. Please check",
        ),
        ("cyd", "1200000006", "error200", "Something went wrong"),
    ];
    for (name, client, kind, _) in cases {
        bed.register(client, PIN).await;
        // Every attempt of this client is refused, as a wrong PIN would be.
        bed.mock
            .fault(json!({ "endpoint": MINT, "kind": kind, "clientId": client, "count": 10 }))
            .await;
        create(&bed, name, client, json!({})).await;
    }
    for (name, _, _, _) in cases {
        bed.wait_status(name, WAIT, |s| s.last_failure_time.is_some())
            .await;
    }
    let refused = std::time::Instant::now();
    // Past the first retry a transient failure gets (a minute after it).
    tokio::time::sleep(Duration::from_secs(75)).await;

    for (name, client, _, words) in cases {
        let calls = bed.mock.calls_to(MINT, client).await;
        assert_eq!(calls.len(), 1, "{name}: {calls:?}");
        assert_eq!(
            (calls[0]["status"].as_u64(), calls[0]["outcome"].as_str()),
            (Some(200), Some("fault"))
        );
        let status = bed.status(name).await;
        assert_eq!(status.phase, Some(Phase::Failed), "{name}: {status:?}");
        assert_eq!(
            status.last_failure_reason.as_deref(),
            Some("InvalidCredentials")
        );
        assert!(
            status.failed_inputs.is_some(),
            "held until the inputs change"
        );
        let message = status.message.unwrap();
        assert!(message.contains(words), "{name}: {message}");
        assert!(
            bed.secrets()
                .get_opt(&format!("{name}-token"))
                .await
                .unwrap()
                .is_none()
        );
    }
    println!(
        "no generateAccessToken call in the {} s after the refusals",
        refused.elapsed().as_secs()
    );
}

/// Status is the operator's only memory of a failed attempt. A reconcile queued while the
/// failing one runs (here by an event of the credentials Secret) must not decide on a cached
/// copy of the account from before the failure was written, and so retry at once. Whether the
/// cache has caught up when the queued reconcile starts is a race, so twenty accounts run it.
#[tokio::test]
async fn backoff_holds_when_a_reconcile_was_queued_during_the_failing_call() {
    const ACCOUNTS: u64 = 20;
    let bed = Bed::start_with("res", &[]).await;
    bed.put_secret("shared-dhan", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    let clients: Vec<String> = (0..ACCOUNTS)
        .map(|n| (1200000100 + n).to_string())
        .collect();
    for client in &clients {
        bed.register(client, PIN).await;
    }
    bed.mock
        .fault(
            json!({ "endpoint": MINT, "kind": "http500", "latencyMs": 3000,
                       "count": ACCOUNTS }),
        )
        .await;
    for (n, client) in clients.iter().enumerate() {
        bed.create_account(
            &format!("cal{n}"),
            json!({ "clientId": client, "credentialsSecret": "shared-dhan" }),
        )
        .await;
    }
    // Touch the Secret while the mints hang: each touch queues a reconcile of every account.
    let mut touches = 0;
    while bed.mock.calls().await.len() < ACCOUNTS as usize {
        touches += 1;
        let touch = json!({ "metadata": { "labels": { "touch": touches.to_string() } } });
        bed.secrets()
            .patch(
                "shared-dhan",
                &PatchParams::default(),
                &Patch::Merge(&touch),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(touches < 60, "the mints never happened");
    }

    // Every account's first mint has failed: give any premature retry time to show.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (n, client) in clients.iter().enumerate() {
        let calls = bed.mock.calls_to(MINT, client).await;
        assert_eq!(
            calls.len(),
            1,
            "cal{n} retried inside its backoff: {calls:?}"
        );
    }
    for n in 0..ACCOUNTS {
        let status = bed.status(&format!("cal{n}")).await;
        assert_eq!(status.phase, Some(Phase::Backoff), "cal{n}");
        assert_eq!(status.failed_attempts, Some(1), "cal{n}");
    }
}

/// `validateEvery: 1m`: a token revoked at Dhan is found dead by the next probe and replaced.
async fn revoked_token_is_probed_dead_and_replaced(client_id: &str, style: Option<&str>) {
    let bed = Bed::start_with("res", &[]).await;
    let mut registration = json!({ "clientId": client_id, "pin": PIN, "totpSecret": TOTP_SECRET });
    if let Some(style) = style {
        registration["deadTokenStyle"] = style.into();
    }
    bed.mock.register(registration).await;
    create(
        &bed,
        "xena",
        client_id,
        json!({ "refresh": { "validateEvery": "1m" } }),
    )
    .await;
    let ready = bed.wait_phase("xena", Phase::Ready).await.status.unwrap();
    let old = bed.token_in_secret("xena-token").await;
    bed.mock.revoke(client_id).await;
    let revoked_at = Utc::now().timestamp_millis();
    // The next probe comes at the account's own slot, at most one validateEvery away; the
    // cadence itself is pinned in virtual time by
    // controller::tests::reconcile::two_days_mint_on_schedule_and_probe_in_between.
    let replaced = bed
        .wait_status("xena", Duration::from_secs(120), |s| {
            s.phase == Some(Phase::Ready) && s.token_hash != ready.token_hash
        })
        .await
        .status
        .unwrap();
    let token = bed.token_in_secret("xena-token").await;
    assert_ne!(token, old);
    assert_eq!(
        bed.mock.account(client_id).await["currentToken"],
        token.as_str()
    );
    assert_eq!(replaced.method.as_deref(), Some("totp"));

    let expected_status = if style == Some("dh901") { 401 } else { 400 };
    let dead_probes: Vec<Value> = bed
        .mock
        .calls_to("profile", client_id)
        .await
        .into_iter()
        .filter(|c| c["outcome"] == "dead_token")
        .collect();
    assert!(!dead_probes.is_empty(), "the operator probed /v2/profile");
    assert!(
        dead_probes
            .iter()
            .all(|c| c["status"] == expected_status && at_ms(c) >= revoked_at),
        "{dead_probes:?}"
    );
    let mints = bed.mock.calls_to(MINT, client_id).await;
    assert_eq!(mints.len(), 2, "exactly one replacement: {mints:?}");
    assert!(
        at_ms(&mints[1]) >= at_ms(&dead_probes[0]),
        "minted after the dead probe"
    );
    let detected_after = at_ms(&mints[1]) - revoked_at;
    assert!(
        detected_after <= 90_000,
        "replaced {detected_after} ms after the revocation: within one validateEvery (1m) and a mint"
    );

    bed.wait_event("TokenRejected").await;
    // (Not from the "Refreshed" event: the event recorder folds a second event with the same
    // reason into the first one's series, keeping the first note.)
    let output = bed.operator().output();
    assert!(
        output
            .lines()
            .any(|l| l.contains("Obtained a new token") && l.contains("Dhan rejected the token")),
        "a refresh because Dhan rejected the token"
    );
}

// Client IDs differ between the tests of this file: they share one control plane, and a
// client's refusals of the day, on its cluster-scoped claim, hold for every account of it.
#[tokio::test]
async fn revoked_token_dh906_is_probed_dead_and_replaced() {
    revoked_token_is_probed_dead_and_replaced("1200000015", None).await;
}

#[tokio::test]
async fn revoked_token_dh901_is_probed_dead_and_replaced() {
    revoked_token_is_probed_dead_and_replaced("1200000016", Some("dh901")).await;
}

#[tokio::test]
async fn permanent_failure_never_overwrites_a_valid_token() {
    let bed = Bed::start_with("res", &[]).await;
    let token = ready_account(&bed, "yuri", "1200000007", json!({})).await;
    let before = bed.secrets().get("yuri-token").await.unwrap();

    // The user changed the PIN at Dhan; the mock keeps the current token.
    bed.register("1200000007", "777777").await;
    bed.request_refresh("yuri", "x").await;
    let failed = bed.wait_phase("yuri", Phase::Failed).await.status.unwrap();
    assert_eq!(failed.last_failure_reason.as_deref(), Some("InvalidPin"));
    assert_eq!(ready_condition(&failed), Some("True"));

    let after = bed.secrets().get("yuri-token").await.unwrap();
    assert_eq!(
        after.data.as_ref().unwrap()["DHAN_ACCESS_TOKEN"].0,
        token.as_bytes()
    );
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "the Secret was not written at all"
    );
    assert_eq!(
        bed.mock.account("1200000007").await["currentToken"],
        token.as_str()
    );
    let calls = bed.mock.calls_to(MINT, "1200000007").await;
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1]["outcome"], "invalid_pin");

    // Held: no retries with the wrong PIN.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(bed.mock.calls_to(MINT, "1200000007").await.len(), 2);
    let later = bed.status("yuri").await;
    assert_eq!(later.phase, Some(Phase::Failed));
    assert_eq!(ready_condition(&later), Some("True"));
}

/// Everything the operator needs in one namespace, except writing DhanAccount status.
fn role_without_status_writes(ns: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: dhan-operator-no-status, namespace: {ns}}}
rules:
- apiGroups: [dhan-operator.dev]
  resources: [dhanaccounts]
  verbs: [get, list, watch]
- apiGroups: ['']
  resources: [secrets]
  verbs: [get, list, watch, create, patch]
- apiGroups: ['', events.k8s.io]
  resources: [events]
  verbs: [create, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: dhan-operator-no-status, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: dhan-operator-no-status}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: dhan-operator}}]
"
    )
}

#[tokio::test]
async fn crash_between_secret_and_status_writes_does_not_mint_again() {
    let cp = support::control_plane();
    let mut bed = Bed::without_operator("res").await;
    cp.grant_operator_user_claims();
    let out = cp.kubectl_with_stdin(&["apply", "-f", "-"], &role_without_status_writes(&bed.ns));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // RBAC reaches the authorizer through an informer: wait until the grant is visible.
    let as_operator: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(cp.operator_client().await, &bed.ns);
    support::wait_for(Duration::from_secs(10), || async {
        as_operator.list(&Default::default()).await.ok()
    })
    .await;

    bed.register("1200000008", PIN).await;
    create(&bed, "zoe", "1200000008", json!({})).await;
    let limited_kubeconfig = cp.operator_kubeconfig_path();
    let mut limited =
        bed.spawn_operator(&[], &[("KUBECONFIG", limited_kubeconfig.to_str().unwrap())]);

    // It mints and writes the Secret, then cannot write status.
    let secrets = bed.secrets();
    let written = support::wait_for(WAIT, || async {
        secrets.get_opt("zoe-token").await.ok().flatten()
    })
    .await;
    support::wait_for(Duration::from_secs(20), || async {
        limited.output().contains("forbidden").then_some(())
    })
    .await;
    // Give the Secret's own watch event (and the error requeue path) a chance to mint again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        bed.accounts().get("zoe").await.unwrap().status.is_none(),
        "the limited operator cannot write status"
    );
    assert_eq!(bed.mock.calls_to(MINT, "1200000008").await.len(), 1);
    limited.kill_9();

    let token =
        String::from_utf8(written.data.clone().unwrap()["DHAN_ACCESS_TOKEN"].0.clone()).unwrap();
    bed.operator = Some(bed.spawn_operator(&[], &[]));
    let ready = bed.wait_phase("zoe", Phase::Ready).await.status.unwrap();
    let after = bed.secrets().get("zoe-token").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, written.metadata.resource_version,
        "the restarted operator left the Secret as it was"
    );
    assert_eq!(bed.token_in_secret("zoe-token").await, token);
    assert_eq!(
        bed.mock.account("1200000008").await["currentToken"],
        token.as_str()
    );
    let mints = bed.mock.calls_to(MINT, "1200000008").await;
    assert_eq!(mints.len(), 1, "one mint across the crash: {mints:?}");
    assert_eq!(bed.mock.account("1200000008").await["mints"], 1);
    assert_eq!(ready.method.as_deref(), Some("totp"));
    assert!(ready.last_refresh_time.is_some());
}

#[tokio::test]
async fn suspended_accounts_make_no_calls_and_leave_the_secret_alone() {
    let bed = Bed::start_with("res", &[]).await;
    // Suspended from the start: never a call, no Secret.
    bed.register("1200000009", PIN).await;
    create(&bed, "abe", "1200000009", json!({ "suspend": true })).await;
    // Suspended while Ready.
    let token = ready_account(&bed, "bea", "1200000010", json!({})).await;
    let before = bed.secrets().get("bea-token").await.unwrap();
    bed.patch_spec("bea", json!({ "suspend": true })).await;
    bed.wait_phase("bea", Phase::Suspended).await;
    let calls_when_suspended = bed.mock.calls().await.len();

    // Neither a revoked token nor a refresh request wakes a suspended account.
    bed.mock.revoke("1200000010").await;
    bed.request_refresh("bea", "please").await;
    let abe = bed
        .wait_phase("abe", Phase::Suspended)
        .await
        .status
        .unwrap();
    assert_eq!(abe.token_hash, None);
    tokio::time::sleep(Duration::from_secs(6)).await;

    let calls = bed.mock.calls().await;
    assert!(
        !calls.iter().any(|c| c["clientId"] == "1200000009"),
        "{calls:?}"
    );
    assert_eq!(calls.len(), calls_when_suspended, "{calls:?}");
    assert!(bed.secrets().get_opt("abe-token").await.unwrap().is_none());
    let after = bed.secrets().get("bea-token").await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(bed.token_in_secret("bea-token").await, token);
    assert_eq!(bed.status("bea").await.phase, Some(Phase::Suspended));
}

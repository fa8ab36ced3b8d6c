//! The operator end to end on a real kube-apiserver, against `dhan-mock`.
//!
//! Each test has its own namespace, mock Dhan and operator process (watching only that
//! namespace), so tests run in parallel without seeing each other.

mod support;

use dhan_operator::crd::Phase;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use std::time::Duration;
use support::{Bed, MockDhan, PIN, TOTP_SECRET, WAIT};

fn jwt_exp(token: &str) -> i64 {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .unwrap(),
    )
    .unwrap();
    claims["exp"].as_i64().unwrap()
}

#[tokio::test]
async fn totp_account_becomes_ready_with_the_token_the_mock_issued() {
    let bed = Bed::start().await;
    bed.register("1100000001", PIN).await;
    bed.put_secret("alice-dhan", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    bed.create_account(
        "alice",
        json!({ "clientId": "1100000001", "credentialsSecret": "alice-dhan",
                "secretTemplate": { "labels": { "team": "algo" } } }),
    )
    .await;

    let account = bed.wait_phase("alice", Phase::Ready).await;
    let status = account.status.clone().unwrap();
    let token = bed.token_in_secret("alice-token").await;
    let issued = bed.mock.account("1100000001").await;
    assert_eq!(
        issued["currentToken"],
        token.as_str(),
        "the Secret holds the mock's token"
    );
    assert_eq!(status.expires_at.unwrap().timestamp(), jwt_exp(&token));
    assert_eq!(status.method.as_deref(), Some("totp"));
    assert_eq!(status.token_type.as_deref(), Some("APP"));
    assert_eq!(status.token_hash.as_ref().map(String::len), Some(16));
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );

    let secret = bed.secrets().get("alice-token").await.unwrap();
    let data = secret.data.clone().unwrap();
    assert_eq!(data["DHAN_CLIENT_ID"].0, b"1100000001");
    let expires_text = String::from_utf8(data["DHAN_TOKEN_EXPIRES_AT"].0.clone()).unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&expires_text)
            .unwrap()
            .timestamp(),
        jwt_exp(&token)
    );
    assert_eq!(
        secret.labels().get("team").map(String::as_str),
        Some("algo")
    );
    assert!(
        secret.owner_references().is_empty(),
        "deletionPolicy Retain (the default): the Secret outlives its account"
    );
    assert_eq!(
        secret
            .annotations()
            .get("dhan-operator.dev/account")
            .map(String::as_str),
        Some("alice")
    );
    assert_eq!(
        bed.mock
            .calls_to("generateAccessToken", "1100000001")
            .await
            .len(),
        1
    );

    bed.wait_event("Refreshed").await;
    bed.assert_nothing_leaks(&[PIN, TOTP_SECRET, &token]).await;
}

#[tokio::test]
async fn kubectl_get_and_wait_work_against_the_real_apiserver() {
    let bed = Bed::start().await;
    bed.register("1100000002", PIN).await;
    bed.put_secret("bob-dhan", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    bed.create_account(
        "bob",
        json!({ "clientId": "1100000002", "credentialsSecret": "bob-dhan" }),
    )
    .await;
    let cp = support::control_plane();
    let wait = cp.kubectl(&[
        "wait",
        "-n",
        &bed.ns,
        "--for=condition=Ready",
        "dhanaccount/bob",
        "--timeout=60s",
    ]);
    assert!(
        wait.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&wait.stderr)
    );

    let get = cp.kubectl(&["get", "dhanaccounts", "-n", &bed.ns]);
    let table = String::from_utf8(get.stdout).unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "CLIENT", "PHASE", "METHOD", "EXPIRES", "NEXT", "REFRESH", "AGE"
        ]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["bob", "1100000002", "Ready", "totp"]);
    // Expiry and next refresh print as RFC 3339 times (a `date` column would print a future
    // time as "<invalid>").
    let status = bed.accounts().get("bob").await.unwrap().status.unwrap();
    let expires = status
        .expires_at
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(row[4], expires, "{table}");
    let next = status.next_refresh_time.unwrap();
    assert_eq!(
        row[5],
        next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );

    let short = cp.kubectl(&["get", "dhan", "-n", &bed.ns, "-o", "wide"]);
    let wide = String::from_utf8(short.stdout).unwrap();
    assert!(
        wide.contains("MESSAGE") && wide.contains("valid until"),
        "{wide}"
    );
}

#[tokio::test]
async fn web_token_is_adopted_then_renewed_and_stays_self() {
    let bed = Bed::start().await;
    bed.register("1100000003", PIN).await;
    let web = bed.mock.web_token("1100000003").await;
    bed.put_secret("carol-dhan", &[("accessToken", &web)]).await;
    bed.create_account(
        "carol",
        json!({ "clientId": "1100000003", "credentialsSecret": "carol-dhan", "methods": ["renew"] }),
    )
    .await;
    let adopted = bed.wait_phase("carol", Phase::Ready).await;
    assert_eq!(adopted.status.unwrap().method.as_deref(), Some("adopted"));
    assert_eq!(bed.token_in_secret("carol-token").await, web);

    bed.request_refresh("carol", "1").await;
    let accounts = bed.accounts();
    let renewed = support::wait_for(WAIT, || async {
        let a = accounts.get("carol").await.ok()?;
        (a.status.as_ref()?.method.as_deref() == Some("renew")).then_some(a)
    })
    .await;
    let status = renewed.status.unwrap();
    assert_eq!(status.token_type.as_deref(), Some("SELF"));
    let token = bed.token_in_secret("carol-token").await;
    assert_ne!(token, web, "RenewToken returns a new token");
    assert_eq!(
        bed.mock.account("1100000003").await["currentToken"],
        token.as_str()
    );
    assert_eq!(bed.mock.calls_to("RenewToken", "1100000003").await.len(), 1);
    assert!(
        bed.mock
            .calls_to("generateAccessToken", "1100000003")
            .await
            .is_empty()
    );
    bed.assert_nothing_leaks(&[&web, &token]).await;
}

#[tokio::test]
async fn app_token_is_never_sent_to_renew_token() {
    let bed = Bed::start().await;
    bed.register("1100000004", PIN).await;
    bed.put_secret("dave-dhan", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    bed.create_account(
        "dave",
        json!({ "clientId": "1100000004", "credentialsSecret": "dave-dhan",
                "methods": ["renew", "totp"] }),
    )
    .await;
    let first = bed.wait_phase("dave", Phase::Ready).await;
    let first_hash = first.status.unwrap().token_hash;
    bed.request_refresh("dave", "again").await;
    let accounts = bed.accounts();
    support::wait_for(WAIT, || async {
        let a = accounts.get("dave").await.ok()?;
        let s = a.status?;
        (s.token_hash != first_hash && s.phase == Some(Phase::Ready)).then_some(())
    })
    .await;
    assert!(
        bed.mock
            .calls_to("RenewToken", "1100000004")
            .await
            .is_empty()
    );
    assert_eq!(
        bed.mock
            .calls_to("generateAccessToken", "1100000004")
            .await
            .len(),
        2
    );
    let token = bed.token_in_secret("dave-token").await;
    assert_eq!(
        bed.mock.account("1100000004").await["currentToken"],
        token.as_str()
    );
}

#[tokio::test]
async fn wrong_pin_fails_after_one_attempt_and_a_fixed_secret_recovers() {
    let bed = Bed::start().await;
    bed.register("1100000005", PIN).await;
    bed.put_secret(
        "erin-dhan",
        &[("pin", "111111"), ("totpSecret", TOTP_SECRET)],
    )
    .await;
    bed.create_account(
        "erin",
        json!({ "clientId": "1100000005", "credentialsSecret": "erin-dhan" }),
    )
    .await;
    let failed = bed.wait_phase("erin", Phase::Failed).await;
    let message = failed.status.unwrap().message.unwrap();
    assert!(
        message.contains("PIN"),
        "message names the problem: {message}"
    );
    // No retry storm: still one attempt a while later.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        bed.mock
            .calls_to("generateAccessToken", "1100000005")
            .await
            .len(),
        1
    );
    assert!(bed.secrets().get_opt("erin-token").await.unwrap().is_none());

    bed.put_secret("erin-dhan", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    bed.wait_phase("erin", Phase::Ready).await;
    assert_eq!(
        bed.mock
            .calls_to("generateAccessToken", "1100000005")
            .await
            .len(),
        2
    );
    bed.assert_nothing_leaks(&[PIN, "111111", TOTP_SECRET])
        .await;
}

#[tokio::test]
async fn missing_secret_fails_and_recovers_when_the_secret_appears() {
    let bed = Bed::start().await;
    bed.register("1100000006", PIN).await;
    bed.create_account(
        "frank",
        json!({ "clientId": "1100000006", "credentialsSecret": "frank-dhan" }),
    )
    .await;
    let failed = bed.wait_phase("frank", Phase::Failed).await;
    let message = failed.status.unwrap().message.unwrap();
    assert!(message.contains("\"frank-dhan\" not found"), "{message}");
    assert!(
        bed.mock.calls().await.is_empty(),
        "no call to Dhan without credentials"
    );

    bed.put_secret("frank-dhan", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    let ready = bed.wait_phase("frank", Phase::Ready).await;
    assert_eq!(ready.status.unwrap().method.as_deref(), Some("totp"));
}

#[tokio::test]
async fn missing_key_names_the_key_and_the_secret() {
    let bed = Bed::start().await;
    bed.put_secret("gina-dhan", &[("pin", PIN)]).await;
    bed.create_account(
        "gina",
        json!({ "clientId": "1100000007", "credentialsSecret": "gina-dhan" }),
    )
    .await;
    let failed = bed.wait_phase("gina", Phase::Failed).await;
    let message = failed.status.unwrap().message.unwrap();
    assert!(
        message.contains("has no key \"totpSecret\"") && message.contains("gina-dhan"),
        "{message}"
    );
}

#[tokio::test]
async fn invalid_spec_fails_with_the_field_named() {
    let bed = Bed::start().await;
    bed.put_secret("hal-dhan", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    bed.create_account(
        "hal",
        json!({ "clientId": "1100000008", "credentialsSecret": "hal-dhan",
                "refresh": { "timeZone": "Asia/Mumbai" } }),
    )
    .await;
    let failed = bed.wait_phase("hal", Phase::Failed).await;
    let message = failed.status.unwrap().message.unwrap();
    assert!(message.starts_with("spec.refresh.timeZone:"), "{message}");
    assert!(bed.mock.calls().await.is_empty());
}

#[tokio::test]
async fn steady_state_writes_nothing() {
    let bed = Bed::start().await;
    bed.register("1100000009", PIN).await;
    bed.put_secret("ivy-dhan", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    bed.create_account(
        "ivy",
        json!({ "clientId": "1100000009", "credentialsSecret": "ivy-dhan" }),
    )
    .await;
    bed.wait_phase("ivy", Phase::Ready).await;
    // Let the write-triggered reconciles settle, then check nothing changes any more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let account_version = bed.accounts().get("ivy").await.unwrap().resource_version();
    let secret_version = bed
        .secrets()
        .get("ivy-token")
        .await
        .unwrap()
        .resource_version();
    // Touch the credentials Secret's labels: a reconcile runs but finds nothing to change.
    let touch = json!({ "metadata": { "labels": { "touched": "yes" } } });
    bed.secrets()
        .patch("ivy-dhan", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        bed.accounts().get("ivy").await.unwrap().resource_version(),
        account_version
    );
    assert_eq!(
        bed.secrets()
            .get("ivy-token")
            .await
            .unwrap()
            .resource_version(),
        secret_version
    );
    assert_eq!(
        bed.mock
            .calls_to("generateAccessToken", "1100000009")
            .await
            .len(),
        1
    );
}

/// Dhan speaks HTTPS: with the mock serving TLS, an operator that trusts its certificate
/// (`--dhan-ca-file`) makes the account Ready; one that does not says why, with no token lost
/// and no mint made.
#[tokio::test]
async fn dhan_over_tls_trusted_with_a_ca_file_and_refused_without() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("mock.pem");
    let cert = cert.to_str().unwrap();
    let mut bed = Bed::without_operator("e2e-tls").await;
    bed.mock = MockDhan::start(&["--mint-throttle-seconds", "3", "--tls-cert-out", cert]).await;
    assert!(
        bed.mock.url.starts_with("https://127.0.0.1:"),
        "{}",
        bed.mock.url
    );

    // Not trusted: the account backs off naming the certificate; Dhan saw no call.
    let mut untrusting = bed.spawn_operator(&[], &[]);
    bed.register("1000000091", PIN).await;
    bed.put_secret("tina-dhan", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    bed.create_account(
        "tina",
        json!({ "clientId": "1000000091", "credentialsSecret": "tina-dhan" }),
    )
    .await;
    let status = bed
        .wait_status("tina", WAIT, |s| s.last_failure_message.is_some())
        .await
        .status
        .unwrap();
    let message = status
        .last_failure_message
        .unwrap_or_default()
        .to_lowercase();
    assert!(message.contains("certificate"), "{message}");
    assert!(
        bed.mock
            .calls()
            .await
            .iter()
            .all(|c| c["endpoint"] != "generateAccessToken")
    );
    // Stopped cleanly, so the next process of its install acts at once.
    assert!(
        untrusting.terminate().is_some(),
        "the operator stops on SIGTERM"
    );

    // Trusted: Ready on a token the mock minted over TLS, once the backoff the failure set
    // (a minute, in status) is over.
    bed.operator = Some(bed.spawn_operator(&["--dhan-ca-file", cert], &[]));
    bed.wait_phase_for("tina", Phase::Ready, Duration::from_secs(150))
        .await;
    let token = bed.token_in_secret("tina-token").await;
    assert_eq!(
        bed.mock.account("1000000091").await["currentToken"].as_str(),
        Some(token.as_str())
    );
}

//! Each Dhan mint kills the previous token: a minted token is never lost, and the operator
//! never mints without need (docs/design.md "What never happens").

use super::fixtures::*;
use crate::crd::Phase;
use crate::dhan::DhanError;
use http::Method;
use serde_json::json;
use std::time::Duration;

const MINT: &str = "generateAccessToken";
const MINUTE: Duration = Duration::from_secs(60);
const SUNDAY_MORNING: &str = "2026-11-22T00:00:00Z";

fn bench() -> Bench {
    let bench = Bench::at(SUNDAY_MORNING);
    bench.credentials(PIN);
    bench.account("alice", json!({}));
    bench
}

#[tokio::test(start_paused = true)]
async fn a_refused_secret_write_keeps_the_token_and_never_mints_again() {
    let bench = bench();
    bench.api.refuse(
        Method::PATCH,
        "/secrets/alice-token",
        403,
        "secrets \"alice-token\" is forbidden: exceeded quota: secrets",
    );
    bench.run("alice", 5 * MINUTE).await;
    assert_eq!(
        bench.dhan.calls(MINT).len(),
        1,
        "exactly one mint in five minutes"
    );
    let status = bench.status("alice");
    assert_eq!(status.phase, Some(Phase::Backoff));
    assert_eq!(status.conditions[0].reason, "SecretWriteRefused");
    assert!(
        status
            .message
            .as_deref()
            .unwrap()
            .contains("exceeded quota"),
        "{status:?}"
    );

    bench.api.allow();
    bench.run("alice", 5 * MINUTE).await;
    assert_eq!(
        bench.dhan.calls(MINT).len(),
        1,
        "the kept token lands, no new mint"
    );
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
    let landed = bench.secret_token("alice-token").unwrap();
    assert!(
        bench.dhan.is_live(&landed),
        "the Secret holds Dhan's live token"
    );
}

#[tokio::test(start_paused = true)]
async fn duplicate_key_names_fail_without_calling_dhan() {
    let bench = Bench::at(SUNDAY_MORNING);
    bench.credentials(PIN);
    bench.account(
        "alice",
        json!({"secretTemplate": {"keys": {"accessToken": "TOKEN", "expiresAt": "TOKEN"}}}),
    );
    bench.run("alice", 10 * MINUTE).await;
    let status = bench.status("alice");
    assert_eq!(status.phase, Some(Phase::Failed));
    assert!(
        status
            .message
            .unwrap()
            .starts_with("spec.secretTemplate.keys.expiresAt: \"TOKEN\" is also")
    );
    assert_eq!(bench.dhan.all_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn renaming_the_secret_moves_the_token_without_a_mint() {
    let bench = bench();
    bench.reconcile("alice").await;
    let token = bench.secret_token("alice-token").unwrap();
    bench.edit_spec("alice", json!({"secretName": "alice-renamed"}));
    bench.reconcile("alice").await;
    assert_eq!(bench.secret_token("alice-renamed"), Some(token));
    assert!(
        bench.api.get(&secret_path("alice-token")).is_none(),
        "the old Secret is gone"
    );
    assert_eq!(bench.dhan.calls(MINT).len(), 1);
    let status = bench.status("alice");
    assert_eq!(status.phase, Some(Phase::Ready));
    assert_eq!(status.secret_name.as_deref(), Some("alice-renamed"));
}

#[tokio::test(start_paused = true)]
async fn renaming_the_token_key_moves_the_token_without_a_mint() {
    let bench = bench();
    bench.reconcile("alice").await;
    let token = bench.secret_token("alice-token").unwrap();
    bench.edit_spec(
        "alice",
        json!({"secretTemplate": {"keys": {"accessToken": "TOKEN"}}}),
    );
    bench.reconcile("alice").await;
    let secret = bench.api.get(&secret_path("alice-token")).unwrap();
    assert_eq!(secret["data"]["TOKEN"], b64(&token));
    assert!(
        secret["data"]["DHAN_ACCESS_TOKEN"].is_null(),
        "the old key is gone"
    );
    assert_eq!(bench.dhan.calls(MINT).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_recreated_account_adopts_the_retained_secret_without_a_mint() {
    let bench = bench();
    bench.reconcile("alice").await;
    let token = bench.secret_token("alice-token").unwrap();
    let secret = bench.api.get(&secret_path("alice-token")).unwrap();
    assert!(
        secret["metadata"]["ownerReferences"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // kubectl replace, a GitOps re-sync: a new object, a new UID, no status.
    bench.api.remove(&account_path("alice"));
    bench.account("alice", json!({}));
    bench.reconcile("alice").await;
    assert_eq!(bench.secret_token("alice-token"), Some(token));
    assert_eq!(bench.dhan.calls(MINT).len(), 1);
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
}

#[tokio::test(start_paused = true)]
async fn deletion_policy_delete_makes_the_secret_go_with_its_account() {
    let bench = Bench::at(SUNDAY_MORNING);
    bench.credentials(PIN);
    bench.account("alice", json!({"deletionPolicy": "Delete"}));
    bench.reconcile("alice").await;
    let secret = bench.api.get(&secret_path("alice-token")).unwrap();
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "DhanAccount");
    assert_eq!(owner["name"], "alice");
}

#[tokio::test(start_paused = true)]
async fn a_token_without_a_readable_expiry_is_kept_not_reminted() {
    let bench = bench();
    bench.dhan.script([Mint::IssueOpaque]);
    bench.run("alice", 10 * MINUTE).await;
    assert_eq!(bench.dhan.calls(MINT).len(), 1);
    let status = bench.status("alice");
    assert_eq!(status.phase, Some(Phase::Ready));
    assert!(status.expires_at.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_mint_whose_answer_was_lost_probes_the_old_token_then_mints_once() {
    let bench = bench();
    bench.reconcile("alice").await;
    let first = bench.secret_token("alice-token").unwrap();
    // A requested refresh whose answer is lost, but Dhan carried it out.
    bench.dhan.script([Mint::IssueButTimeOut]);
    let mut object = bench.api.get(&account_path("alice")).unwrap();
    object["metadata"]["annotations"] = json!({"dhan-operator.dev/refresh-requested": "1"});
    bench.api.put(&account_path("alice"), object);
    bench.advance(3 * MINUTE).await;
    bench.reconcile("alice").await;
    let lost_at = *bench.dhan.calls(MINT).last().unwrap();
    bench.run("alice", 5 * MINUTE).await;

    let mints = bench.dhan.calls(MINT);
    assert_eq!(
        mints.len(),
        3,
        "the lost mint, then exactly one more: {mints:?}"
    );
    let probes_between: Vec<_> = bench
        .dhan
        .calls("profile")
        .into_iter()
        .filter(|t| *t > lost_at && *t < mints[2])
        .collect();
    assert_eq!(
        probes_between.first().map(|t| (*t - lost_at).num_seconds()),
        Some(30),
        "the old token is probed 30 s after the lost answer"
    );
    assert!(
        (mints[2] - lost_at).num_seconds() >= 125,
        "Dhan's limit holds"
    );
    let token = bench.secret_token("alice-token").unwrap();
    assert_ne!(token, first);
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
}

#[tokio::test(start_paused = true)]
async fn an_unknown_client_id_fails_after_one_call() {
    let bench = bench();
    bench.dhan.script([Mint::Fail(DhanError::InvalidClientId {
        message: "Invalid Client".into(),
    })]);
    bench.run("alice", 30 * MINUTE).await;
    assert_eq!(bench.dhan.calls(MINT).len(), 1);
    let status = bench.status("alice");
    assert_eq!(status.phase, Some(Phase::Failed));
    assert_eq!(
        status.last_failure_reason.as_deref(),
        Some("InvalidClientId")
    );
}

#[tokio::test(start_paused = true)]
async fn a_revoked_web_token_whose_totp_fallback_fails_transiently_backs_off() {
    let bench = Bench::at(SUNDAY_MORNING);
    bench.credentials(PIN);
    bench.account("alice", json!({}));
    // A web token that Dhan no longer accepts, pasted in the credentials.
    let web = crate::dhan::jwt::testing::jwt(json!({
        "exp": (bench.now() + chrono::Duration::hours(20)).timestamp(),
        "iat": (bench.now() - chrono::Duration::hours(4)).timestamp(),
        "tokenConsumerType": "SELF",
    }));
    let mut creds = bench.api.get(&secret_path("alice-dhan")).unwrap();
    creds["data"]["accessToken"] = b64(&web).into();
    bench.api.put(&secret_path("alice-dhan"), creds);
    bench.dhan.script([Mint::Fail(DhanError::Timeout)]);
    // Adopts it, probes it: dead; 10 s later, probes it again: dead; renew: dead; totp: a
    // timeout.
    bench.reconcile("alice").await;
    bench.advance(Duration::from_secs(10)).await;
    bench.reconcile("alice").await;
    assert_eq!(bench.dhan.calls("profile").len(), 2);
    assert_eq!(bench.dhan.calls("RenewToken").len(), 1);
    let status = bench.status("alice");
    assert_eq!(status.phase, Some(Phase::Backoff), "{status:?}");
    bench.run("alice", 5 * MINUTE).await;
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
    assert_eq!(bench.status("alice").method.as_deref(), Some("totp"));
}

#[tokio::test(start_paused = true)]
async fn one_renew_timeout_leaves_a_renew_only_account_backing_off() {
    let bench = Bench::at(SUNDAY_MORNING);
    let web = crate::dhan::jwt::testing::jwt(json!({
        "exp": (bench.now() + chrono::Duration::hours(1)).timestamp(),
        "iat": (bench.now() - chrono::Duration::hours(23)).timestamp(),
        "tokenConsumerType": "SELF", "n": 0,
    }));
    bench.api.put(
        &secret_path("alice-dhan"),
        json!({"metadata": {"name": "alice-dhan", "namespace": NS},
               "data": {"accessToken": b64(&web)}}),
    );
    bench.account("alice", json!({"methods": ["renew"]}));
    // Dhan accepts the pasted token (it issued it).
    bench.dhan.accept(&web);
    bench.dhan.script([Mint::Fail(DhanError::Timeout)]);
    bench.run("alice", 10 * MINUTE).await;
    let status = bench.status("alice");
    assert_eq!(bench.dhan.calls("RenewToken").len(), 2, "{status:?}");
    assert_eq!(status.phase, Some(Phase::Ready), "{status:?}");
    assert_eq!(status.method.as_deref(), Some("renew"));
}

/// Logins that reach Dhan's PIN/TOTP step and fail — whatever the class — are counted per IST
/// day; the third stops the account until the next IST day before Dhan locks it, and no
/// further consent is spent.
#[tokio::test(start_paused = true)]
async fn the_third_failed_login_stops_the_account_with_no_further_consent() {
    use crate::browser::report::LoginReport;
    use crate::browser::{FailureClass, LoginFailure, Step};
    let bench = Bench::with_browser_logins(SUNDAY_MORNING);
    bench.app_credentials();
    bench.account("alice", json!({"methods": ["browser"]}));
    let mut failure =
        LoginFailure::rejected(Step::Pin, FailureClass::Unknown, "Something went wrong");
    failure.reached_credential_step = true;
    let report = LoginReport::Failed(failure).to_message();
    for attempt in 1..=3 {
        bench.reconcile("alice").await;
        let job = bench.status("alice").login.expect("a login Job").job_name;
        bench.finish_login(&job, 1, &report);
        bench.reconcile("alice").await;
        let status = bench.status("alice");
        assert_eq!(
            status.failed_logins.as_ref().map(|c| c.count),
            Some(attempt)
        );
        if attempt < 3 {
            assert_eq!(status.phase, Some(Phase::Backoff), "{status:?}");
            bench
                .advance(Duration::from_secs(60 << (attempt - 1)))
                .await;
        }
    }
    let stopped = bench.status("alice");
    assert_eq!(stopped.phase, Some(Phase::Backoff));
    assert_eq!(stopped.conditions[0].reason, "LoginLockout");
    assert_eq!(
        stopped.next_refresh_time,
        Some("2026-11-22T18:40:00Z".parse().unwrap()),
        "ten minutes past midnight IST (a clock a few minutes off stays in the next day)"
    );
    assert!(
        stopped
            .message
            .as_deref()
            .unwrap()
            .contains("check the mobile number, PIN and TOTP key")
    );
    bench.run("alice", 6 * 60 * MINUTE).await;
    assert_eq!(
        bench.dhan.calls("generate-consent").len(),
        3,
        "no further consent"
    );
}

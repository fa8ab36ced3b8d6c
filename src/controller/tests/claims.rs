//! Client-ID claims shared with other installs: who mints, the claim calls around a mint, and
//! what a claim keeps across restarts and re-creations.

use super::fixtures::*;
use crate::claims::Submission;
use crate::crd::Phase;
use http::Method;
use serde_json::{Value, json};
use std::time::Duration;

const MINT: &str = "generateAccessToken";
const CLIENT: &str = "1000000001";
/// Sunday 2026-11-22 05:30 IST: outside market hours.
const SUNDAY_MORNING: &str = "2026-11-22T00:00:00Z";
const MINUTE: Duration = Duration::from_secs(60);

fn bench() -> Bench {
    let bench = Bench::with_claims(SUNDAY_MORNING);
    bench.credentials(PIN);
    bench.account("alice", json!({}));
    bench
}

fn uid(bench: &Bench, name: &str) -> String {
    bench.api.get(&account_path(name)).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string()
}

fn claim(bench: &Bench) -> Option<Value> {
    bench.api.get(&claim_path(CLIENT))
}

/// `(install, account UID)` of the claim's holder.
fn holder(bench: &Bench) -> Option<(String, String)> {
    let holder = claim(bench)?["spec"]["holder"].clone();
    Some((
        holder["install"].as_str()?.to_string(),
        holder["account"].as_str()?.to_string(),
    ))
}

fn claim_writes(bench: &Bench) -> Vec<String> {
    bench
        .api
        .writes()
        .into_iter()
        .filter(|r| r.contains("/dhanclientclaims"))
        .collect()
}

fn renewal(credentials: Option<&str>) -> Submission {
    Submission {
        credentials: credentials.map(str::to_string),
        last_token: None,
        cap: 3,
        midnight_margin: crate::dhan::ist::MIDNIGHT_MARGIN,
    }
}

fn request_refresh(bench: &Bench, name: &str, value: &str) {
    let mut object = bench.api.get(&account_path(name)).unwrap();
    object["metadata"]["annotations"] = json!({"dhan-operator.dev/refresh-requested": value});
    bench.api.put(&account_path(name), object);
}

#[tokio::test(start_paused = true)]
async fn a_first_mint_takes_the_claim_in_the_name_of_install_and_account() {
    let bench = bench();
    bench.reconcile("alice").await;
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
    assert_eq!(bench.dhan.calls(MINT).len(), 1);
    assert_eq!(
        holder(&bench),
        Some(("install-a".into(), uid(&bench, "alice")))
    );
    let flight = &claim(&bench).unwrap()["spec"]["inFlight"];
    assert_eq!(
        flight["credentials"], true,
        "the mint was recorded before it was sent"
    );
    let claims = "/apis/dhan-operator.dev/v1alpha1/dhanclientclaims";
    assert_eq!(
        claim_writes(&bench),
        [format!("POST {claims}")],
        "one write: the claim with the mint in flight"
    );
    assert!(
        bench.api.get(&install_path("install-a")).is_some(),
        "the install's heartbeat"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_another_install_claimed_is_a_conflict_that_names_nobody() {
    let bench = bench();
    let other = bench.claims_of("install-b");
    other.beat().await.unwrap();
    other
        .secure("uid-of-team-b", CLIENT, &renewal(None))
        .await
        .unwrap();
    let requeue = bench.reconcile("alice").await;
    let status = bench.status("alice");
    assert_eq!(status.phase, Some(Phase::Conflict));
    assert_eq!(bench.dhan.all_calls(), 0, "no call to Dhan at all");
    let message = status.message.unwrap();
    assert!(
        message.contains("claimed by another DhanAccount"),
        "{message}"
    );
    assert!(
        !message.contains("install-b") && !message.contains("uid-of-team-b"),
        "{message}"
    );
    assert_eq!(requeue, Some(crate::controller::gather::CONFLICT_FALLBACK));
    // Its release wakes alice-copy through the claims watch (`controller::watch_claims`).

    other.release("uid-of-team-b").await;
    assert_eq!(claim(&bench), None, "released, with nothing to keep: gone");
    bench.advance(Duration::from_secs(30)).await;
    bench.reconcile("alice").await;
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
    assert_eq!(bench.dhan.calls(MINT).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_account_dhan_refuses_gives_its_claim_up_and_the_refusal_stays_counted() {
    let bench = Bench::with_claims(SUNDAY_MORNING);
    bench.credentials("000000");
    bench.account("alice", json!({}));
    bench.reconcile("alice").await;
    assert_eq!(bench.status("alice").phase, Some(Phase::Failed));
    assert_eq!(bench.dhan.calls(MINT).len(), 1);
    assert_eq!(
        holder(&bench),
        None,
        "naming a client ID with credentials Dhan refuses keeps nobody out"
    );
    assert_eq!(claim(&bench).unwrap()["spec"]["refusals"]["count"], 1);
    let owner = bench.claims_of("install-b");
    owner.beat().await.unwrap();
    owner
        .secure("uid-of-the-owner", CLIENT, &renewal(None))
        .await
        .expect("the real owner claims it");
}

#[tokio::test(start_paused = true)]
async fn a_claim_whose_install_stopped_beating_is_taken_over_once_it_lapsed() {
    let bench = bench();
    let gone = bench.claims_of("install-b");
    gone.beat().await.unwrap();
    gone.secure("uid-of-team-b", CLIENT, &renewal(None))
        .await
        .unwrap();
    bench.reconcile("alice").await;
    assert_eq!(bench.status("alice").phase, Some(Phase::Conflict));
    // Thirty minutes without a heartbeat of install-b, and the skew margin.
    bench.advance(Duration::from_secs(1800 + 10)).await;
    bench.reconcile("alice").await;
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
    assert_eq!(
        holder(&bench),
        Some(("install-a".into(), uid(&bench, "alice")))
    );
}

/// Found by the simulation (seed 123, 30 days): a suspended account gave its claim up at its
/// token's death by its own clock, 3 s fast; the other install's account, woken by the change,
/// minted 2 s before the token really died. A token keeps its claim for the clock-skew margin
/// (5 s) past its death.
#[tokio::test(start_paused = true)]
async fn a_dead_token_keeps_its_claim_for_the_skew_margin() {
    let bench = bench();
    bench.reconcile("alice").await;
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
    let mut object = bench.api.get(&account_path("alice")).unwrap();
    object["spec"]["suspend"] = true.into();
    bench.api.put(&account_path("alice"), object);
    // The token dies 24 h after the mint.
    bench.advance(Duration::from_secs(24 * 3600 + 3)).await;
    bench.reconcile("alice").await;
    assert_eq!(bench.status("alice").phase, Some(Phase::Suspended));
    assert_eq!(
        holder(&bench),
        Some(("install-a".into(), uid(&bench, "alice"))),
        "3 s after the token's death"
    );
    bench.advance(Duration::from_secs(3)).await;
    bench.reconcile("alice").await;
    assert_eq!(holder(&bench), None, "6 s after");
}

/// Found by the simulation (seed 238, 30 days, a slow API server): the release of a deleted
/// account's claim failed, the process forgot the claim all the same, and nothing released it
/// again; its install kept beating, so the other install's account waited in `Conflict` for
/// ever. A failed release is tried again after each heartbeat until it goes through.
#[tokio::test(start_paused = true)]
async fn a_release_that_failed_is_tried_again_after_the_next_heartbeat() {
    let bench = bench();
    let gone = bench.claims_of("install-b");
    gone.beat().await.unwrap();
    gone.secure("uid-of-a-deleted-account", CLIENT, &renewal(None))
        .await
        .unwrap();
    for method in [Method::DELETE, Method::PUT, Method::PATCH] {
        bench.api.refuse(
            method,
            "/dhanclientclaims",
            500,
            "etcdserver: request timed out",
        );
    }
    gone.release("uid-of-a-deleted-account").await;
    assert_eq!(
        holder(&bench),
        Some(("install-b".into(), "uid-of-a-deleted-account".into()))
    );
    bench.api.allow();
    bench.advance(Duration::from_secs(10)).await;
    gone.beat().await.unwrap();
    assert_eq!(holder(&bench), None, "{:?}", claim(&bench));
}

/// Found by the simulation (seed 344, 30 days): a holder replaced with its Secret retained,
/// while every claim call timed out; the re-created account could not take the claim, the
/// predecessor's was released once the API answered again, and another install minted over
/// the token the re-created account had adopted. At the end of the grace the claim passes to
/// the re-creation with no API call, and goes only when that account lets it go.
#[tokio::test(start_paused = true)]
async fn a_deleted_holders_claim_passes_to_its_recreation_without_an_api_call() {
    let bench = bench();
    let claims = bench.claims_of("install-b");
    claims.beat().await.unwrap();
    claims
        .secure("uid-old", CLIENT, &renewal(None))
        .await
        .unwrap();
    claims.leaving("uid-old");
    for method in [Method::GET, Method::DELETE, Method::PUT, Method::PATCH] {
        bench.api.refuse(
            method,
            "/dhanclientclaims",
            504,
            "Timeout: request did not complete",
        );
    }
    let live = ["uid-new".to_string()].into_iter().collect();
    crate::controller::prune_claims(&claims, &live).await;
    claims.departed("uid-old", Some("uid-new")).await;
    crate::controller::prune_claims(&claims, &live).await;
    claims.ensure("uid-new", CLIENT, None).await.unwrap();
    assert_eq!(claims.holders(), ["uid-new"]);
    bench.api.allow();
    bench.advance(Duration::from_secs(10)).await;
    claims.beat().await.unwrap();
    assert_eq!(
        holder(&bench),
        Some(("install-b".into(), "uid-old".into())),
        "the object changes only when the re-created account writes or lets go"
    );
    claims.release("uid-new").await;
    assert_eq!(holder(&bench), None, "{:?}", claim(&bench));
}

/// A deleted account's claim is not pruned within its grace; after it, with no re-creation,
/// it is released.
#[tokio::test(start_paused = true)]
async fn a_deleted_holders_claim_outlives_a_prune_within_its_grace() {
    let bench = bench();
    let claims = bench.claims_of("install-b");
    claims.beat().await.unwrap();
    claims
        .secure("uid-old", CLIENT, &renewal(None))
        .await
        .unwrap();
    claims.leaving("uid-old");
    crate::controller::prune_claims(&claims, &Default::default()).await;
    assert_eq!(holder(&bench), Some(("install-b".into(), "uid-old".into())));
    claims.departed("uid-old", None).await;
    assert_eq!(holder(&bench), None, "{:?}", claim(&bench));
}

/// The bug: claims followed the mint, not the token. After a restart, an upgrade or a leader
/// change no live token held its claim; it lapsed, and another install's waiting account
/// minted, killing the live token.
#[tokio::test(start_paused = true)]
async fn a_live_token_keeps_its_claim_across_restarts_with_no_write_per_claim() {
    // Sunday 10:00 IST: six hours to go before any scheduled refresh.
    let mut bench = Bench::with_claims("2026-11-22T04:30:00Z");
    bench.credentials(PIN);
    bench.account("alice", json!({}));
    bench.reconcile("alice").await;
    let minted = bench.secret_token("alice-token").unwrap();
    let other = bench.claims_of("install-b");
    for _ in 0..3 {
        bench.restart();
        bench.api.clear_log();
        // Hours of probes, far past any claim duration, with the heartbeat going on.
        for _ in 0..8 {
            bench.advance(15 * MINUTE).await;
            bench.reconcile("alice").await;
            other.beat().await.unwrap();
            assert!(
                other
                    .secure("uid-of-team-b", CLIENT, &renewal(Some("creds")))
                    .await
                    .is_err(),
                "another install never takes a live token's claim"
            );
        }
        assert_eq!(
            claim_writes(&bench),
            Vec::<String>::new(),
            "a quiet claim costs no write"
        );
    }
    assert_eq!(bench.dhan.calls(MINT).len(), 1);
    assert!(bench.dhan.is_live(&minted));
}

/// The bug: an adopted token (a pasted web token, a retained Secret) never took a claim.
#[tokio::test(start_paused = true)]
async fn an_adopted_web_token_takes_the_claim_without_a_mint() {
    let bench = Bench::with_claims(SUNDAY_MORNING);
    let web = crate::dhan::jwt::testing::jwt(json!({
        "exp": (bench.now() + chrono::Duration::hours(20)).timestamp(),
        "iat": (bench.now() - chrono::Duration::hours(4)).timestamp(),
        "tokenConsumerType": "SELF", "n": 0,
    }));
    bench.dhan.accept(&web);
    bench.api.put(
        &secret_path("alice-dhan"),
        json!({"metadata": {"name": "alice-dhan", "namespace": NS},
               "data": {"accessToken": b64(&web)}}),
    );
    bench.account("alice", json!({"methods": ["renew"]}));
    bench.reconcile("alice").await;
    assert_eq!(bench.status("alice").method.as_deref(), Some("adopted"));
    assert_eq!(
        bench.dhan.calls(MINT).len() + bench.dhan.calls("RenewToken").len(),
        0
    );
    assert_eq!(
        holder(&bench),
        Some(("install-a".into(), uid(&bench, "alice")))
    );
}

/// The bug: the cap lived in the account's status, so deleting and re-creating the account
/// reset it, and the same wrong PIN was typed into Dhan again.
#[tokio::test(start_paused = true)]
async fn a_recreated_account_never_resends_credentials_refused_today_and_the_cap_holds() {
    let bench = Bench::with_claims(SUNDAY_MORNING);
    let recreate = |pin: &str| {
        bench.credentials(pin);
        bench.api.remove(&account_path("alice"));
        bench.account("alice", json!({}));
    };
    recreate("000001");
    bench.reconcile("alice").await;
    assert_eq!(bench.status("alice").conditions[0].reason, "InvalidPin");
    recreate("000001");
    bench.advance(5 * MINUTE).await;
    bench.reconcile("alice").await;
    let status = bench.status("alice");
    assert_eq!(status.conditions[0].reason, "CredentialsRefusedToday");
    assert_eq!(status.phase, Some(Phase::Backoff), "until the next IST day");
    assert_eq!(bench.dhan.calls(MINT).len(), 1, "not sent again");
    for (n, pin) in ["000002", "000003"].into_iter().enumerate() {
        recreate(pin);
        bench.advance(5 * MINUTE).await;
        bench.reconcile("alice").await;
        assert_eq!(bench.dhan.calls(MINT).len(), n + 2);
    }
    // The cap: three refusals today. Even the right PIN waits for the next IST day.
    recreate(PIN);
    bench.advance(5 * MINUTE).await;
    bench.reconcile("alice").await;
    let status = bench.status("alice");
    assert_eq!(status.conditions[0].reason, "LoginLockout", "{status:?}");
    assert_eq!(bench.dhan.calls(MINT).len(), 3);
    // Midnight IST is 18:30 UTC.
    bench.run("alice", Duration::from_secs(19 * 3600)).await;
    assert_eq!(bench.dhan.calls(MINT).len(), 4);
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
}

/// Found by the simulation (seed 8, 30 days, a node clock 457 s slow): "Invalid TOTP" is also
/// Dhan's answer to a code made by a clock that is off, or used elsewhere in its step (§1). The
/// claim recorded it as a refusal of the credentials, so the retry it deserves was refused by
/// the operator itself ("refused earlier today"), and that held the account until someone
/// edited its Secret. A refused TOTP code counts toward the cap, but the PIN and key may be
/// sent again: once after the lock, then on the next IST day.
#[tokio::test(start_paused = true)]
async fn a_refused_totp_code_is_retried_once_then_on_the_next_ist_day_with_claims() {
    let invalid_totp = || {
        Mint::Fail(crate::dhan::DhanError::InvalidTotp {
            message: "Invalid TOTP".into(),
        })
    };
    let bench = bench();
    bench.dhan.script([invalid_totp(), invalid_totp()]);
    bench.run("alice", 30 * MINUTE).await;
    assert_eq!(bench.dhan.calls(MINT).len(), 2, "one retry after the lock");
    let status = bench.status("alice");
    assert_eq!(status.last_failure_reason.as_deref(), Some("InvalidTotp"));
    assert_eq!(claim(&bench).unwrap()["spec"]["refusals"]["count"], 2);
    // Midnight IST is 18:30 UTC: the next day's attempt mints.
    bench.run("alice", Duration::from_secs(19 * 3600)).await;
    assert_eq!(bench.dhan.calls(MINT).len(), 3);
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
}

/// The bug: the hold on a refused PIN was keyed on the credential Secret's resource version, so
/// a label, an annotation or a GitOps sync lifted it; a refresh request lifted it too.
#[tokio::test(start_paused = true)]
async fn neither_a_touch_of_the_secret_nor_a_refresh_request_resends_a_refused_pin() {
    let bench = Bench::with_claims(SUNDAY_MORNING);
    bench.credentials("000000");
    bench.account("alice", json!({}));
    bench.reconcile("alice").await;
    assert_eq!(bench.dhan.calls(MINT).len(), 1);
    for touch in 0..5 {
        let mut secret = bench.api.get(&secret_path("alice-dhan")).unwrap();
        secret["metadata"]["annotations"] = json!({"synced-by": format!("argo-{touch}")});
        bench.api.put(&secret_path("alice-dhan"), secret);
        request_refresh(&bench, "alice", &format!("request-{touch}"));
        bench.advance(MINUTE).await;
        bench.reconcile("alice").await;
    }
    assert_eq!(
        bench.dhan.calls(MINT).len(),
        1,
        "the wrong PIN went to Dhan once"
    );
    assert_eq!(bench.status("alice").phase, Some(Phase::Failed));
    // A new PIN is tried.
    bench.credentials(PIN);
    bench.advance(MINUTE).await;
    bench.reconcile("alice").await;
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
}

/// The bug: with `methods: [totp, browser]`, a PIN the API refused was typed into the login
/// page in the same attempt.
#[tokio::test(start_paused = true)]
async fn an_attempt_stops_at_the_first_refused_credential() {
    let bench = Bench::with_browser_logins(SUNDAY_MORNING);
    bench.api.put(
        &secret_path("alice-dhan"),
        json!({"metadata": {"name": "alice-dhan", "namespace": NS},
               "data": {"pin": b64("000000"), "totpSecret": b64(TOTP_SECRET),
                        "apiKey": b64("app-1"), "apiSecret": b64("app-secret-1"),
                        "mobile": b64("9876543210")}}),
    );
    bench.account("alice", json!({"methods": ["totp", "browser"]}));
    bench.run("alice", 30 * MINUTE).await;
    assert_eq!(bench.dhan.calls(MINT).len(), 1);
    assert_eq!(
        bench.dhan.calls("generate-consent").len(),
        0,
        "no login typed it again"
    );
    assert_eq!(bench.status("alice").conditions[0].reason, "InvalidPin");
}

#[tokio::test(start_paused = true)]
async fn changing_the_client_id_releases_the_old_claim_and_the_next_mint_takes_the_new_one() {
    let bench = bench();
    bench.reconcile("alice").await;
    bench.edit_spec("alice", json!({"clientId": "1000000002"}));
    bench.advance(Duration::from_secs(200)).await;
    bench.reconcile("alice").await;
    assert_eq!(
        holder(&bench),
        None,
        "the old client's claim is released (its account no longer names it)"
    );
    request_refresh(&bench, "alice", "1");
    bench.reconcile("alice").await;
    let new = bench.api.get(&claim_path("1000000002")).unwrap();
    assert_eq!(new["spec"]["holder"]["account"], uid(&bench, "alice"));
}

#[tokio::test(start_paused = true)]
async fn no_mint_without_the_heartbeat() {
    let bench = bench();
    bench.api.refuse(
        Method::POST,
        "/dhanoperatorinstalls",
        403,
        "dhanoperatorinstalls is forbidden",
    );
    let beat = bench.ctx.claims.clone().unwrap();
    assert!(beat.beat().await.is_err());
    let claims = bench.ctx.claims.clone().unwrap();
    assert!(
        claims
            .secure("uid", CLIENT, &renewal(Some("creds")))
            .await
            .is_err(),
        "a process that does not act for its install mints nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn claims_are_listed_in_account_order() {
    let bench = Bench::with_claims(SUNDAY_MORNING);
    let claims = bench.claims_of("install-b");
    claims.beat().await.unwrap();
    // Taken out of order: the order they are walked in must not depend on a hash seed.
    let uids: Vec<String> = (0..16)
        .map(|i| format!("uid-{:02}", (i * 7) % 16))
        .collect();
    for (i, uid) in uids.iter().enumerate() {
        claims
            .secure(uid, &format!("10000000{i:02}"), &renewal(None))
            .await
            .unwrap();
    }
    let mut sorted = uids.clone();
    sorted.sort();
    assert_eq!(claims.holders(), sorted);
}

/// Without leader election a second process of the install waits until the first one's
/// heartbeat has aged (it may still be minting); an elected leader takes over at once, as the
/// Lease, checked before every mint, already stops the deposed one.
#[tokio::test(start_paused = true)]
async fn an_elected_leader_takes_the_heartbeat_over_at_once() {
    let bench = Bench::with_claims(SUNDAY_MORNING);
    let first = bench.claims_with("install-a", "replica-a", false);
    first.beat().await.unwrap();
    let waiting = bench.claims_with("install-a", "replica-b", false);
    assert!(waiting.beat().await.is_err(), "replica-a still acts");
    let first = bench.claims_with("install-a", "replica-a", true);
    first.beat().await.unwrap();
    let leader = bench.claims_with("install-a", "replica-b", true);
    leader.beat().await.unwrap();
    assert!(leader.active(Duration::from_secs(5)));
}

//! What survives the operator's death: a mint it never heard the end of, a token it kept but
//! never wrote, and status values it must not trust (a tenant's status patch, a clock that
//! jumped).

use super::fixtures::*;
use crate::controller::reconcile;
use crate::crd::Phase;
use crate::dhan::totp;
use http::Method;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const MINT: &str = "generateAccessToken";
const MINUTE: Duration = Duration::from_secs(60);
/// Sunday 2026-11-22 10:00 IST: hours before any scheduled refresh, outside market hours.
const SUNDAY: &str = "2026-11-22T04:30:00Z";

fn bench() -> Bench {
    let bench = Bench::with_claims(SUNDAY);
    bench.credentials(PIN);
    bench.account("alice", json!({}));
    bench
}

fn request_refresh(bench: &Bench, value: &str) {
    let mut object = bench.api.get(&account_path("alice")).unwrap();
    object["metadata"]["annotations"] = json!({"dhan-operator.dev/refresh-requested": value});
    bench.api.put(&account_path("alice"), object);
}

/// Whether the Secret holds the token Dhan accepts now.
fn secret_is_live(bench: &Bench) -> bool {
    bench
        .secret_token("alice-token")
        .is_some_and(|t| bench.dhan.is_live(&t))
}

/// The bug: a process that died during a mint left no trace; the next one reported `Ready` on
/// the Secret's token, which Dhan had revoked, until the next probe slot (up to 15 minutes of
/// trading pods without a live token).
#[tokio::test(start_paused = true)]
async fn a_mint_the_process_died_during_is_checked_at_once_by_the_next_process() {
    let mut bench = bench();
    bench.reconcile("alice").await;
    assert!(secret_is_live(&bench));
    bench.advance(5 * MINUTE).await;
    request_refresh(&bench, "1");
    bench.dhan.script([Mint::IssueAndHang]);
    assert!(
        bench.reconcile_dies_after("alice", MINUTE).await.is_some(),
        "the process dies waiting for Dhan's answer"
    );
    assert!(!secret_is_live(&bench), "Dhan revoked the Secret's token");
    bench.restart();
    bench.run("alice", 3 * MINUTE).await;
    assert!(
        secret_is_live(&bench),
        "the next process found the token dead and minted: {:?}",
        bench.status("alice")
    );
    assert_eq!(
        bench.dhan.calls(MINT).len(),
        3,
        "the lost mint cost one more"
    );
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
}

/// The bug: a token kept in memory because its Secret write was refused was lost with the
/// process; the next one reported `Ready` on a token Dhan had already killed.
#[tokio::test(start_paused = true)]
async fn a_kept_token_lost_with_the_process_is_found_out_at_once() {
    let mut bench = bench();
    bench.reconcile("alice").await;
    bench.advance(5 * MINUTE).await;
    bench
        .api
        .refuse(Method::PATCH, "/secrets/alice-token", 403, "exceeded quota");
    request_refresh(&bench, "1");
    bench.reconcile("alice").await;
    assert_eq!(bench.dhan.calls(MINT).len(), 2);
    assert!(!secret_is_live(&bench));
    bench.restart();
    bench.api.allow();
    bench.run("alice", 3 * MINUTE).await;
    assert!(secret_is_live(&bench), "{:?}", bench.status("alice"));
    assert_eq!(bench.dhan.calls(MINT).len(), 3, "one extra mint, no more");
}

/// The bug: the next process, a new Pod, found the Secret's token dead, and while it could not
/// yet act for its install (the dead process's heartbeat was still fresh) it said `Backoff`
/// with the Ready condition `True`: a token Dhan had rejected, twice, reported valid.
#[tokio::test(start_paused = true)]
async fn a_token_found_dead_is_not_reported_valid_while_the_claim_is_unavailable() {
    let mut bench = bench();
    // Mints as soon as the token is found dead, while the claim is still unavailable.
    Arc::get_mut(&mut bench.ctx)
        .expect("no other reference yet")
        .limits
        .min_mint_interval = Duration::from_secs(5);
    bench.reconcile("alice").await;
    bench.advance(5 * MINUTE).await;
    bench
        .api
        .refuse(Method::PATCH, "/secrets/alice-token", 403, "exceeded quota");
    request_refresh(&bench, "1");
    bench.reconcile("alice").await;
    assert!(!secret_is_live(&bench));
    bench.restart_in_a_new_pod();
    bench.api.allow();

    let mut seen = vec![];
    while !secret_is_live(&bench) {
        let requeue = bench.reconcile("alice").await;
        let status = bench.status("alice");
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        let claimless = ready.is_some_and(|c| c.reason == "ClaimUnavailable");
        if claimless {
            assert_eq!(
                ready.map(|c| c.status.as_str()),
                Some("False"),
                "{status:?}"
            );
        }
        seen.push(claimless);
        assert!(seen.len() < 20, "never replaced: {status:?}");
        bench.advance(requeue.unwrap_or(MINUTE)).await;
    }
    assert!(
        seen.contains(&true),
        "the claim was unavailable at the mint"
    );
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
    assert_eq!(bench.dhan.calls(MINT).len(), 3, "one extra mint, no more");
}

/// The bug: a refused write of a kept token was retried with a backoff growing to 5 minutes
/// (and counted twice by a second reconcile), so trading pods waited minutes for a token that
/// could have been written at once.
#[tokio::test(start_paused = true)]
async fn a_kept_token_lands_within_half_a_minute_of_the_write_becoming_possible() {
    let bench = bench();
    bench
        .api
        .refuse(Method::PATCH, "/secrets/alice-token", 403, "exceeded quota");
    bench.run("alice", 10 * MINUTE).await;
    let attempts = bench
        .api
        .log()
        .iter()
        .filter(|r| r.starts_with("PATCH") && r.contains("/secrets/alice-token"))
        .count();
    assert!(
        (20..=41).contains(&attempts),
        "one attempt every 15 s for ten minutes: {attempts}"
    );
    bench.api.allow();
    bench.run("alice", Duration::from_secs(30)).await;
    assert!(secret_is_live(&bench));
    assert_eq!(bench.dhan.calls(MINT).len(), 1);
}

/// The bug: `status.lastTotpStep` far in the future (a tenant's status patch, a clock that had
/// jumped forward) made the mint wait without end, parking a worker for good.
#[tokio::test(start_paused = true)]
async fn status_values_from_the_future_neither_freeze_a_reconcile_nor_stop_the_account() {
    let bench = bench();
    let future = "2030-01-01T00:00:00Z";
    let mut object = bench.api.get(&account_path("alice")).unwrap();
    object["status"] = json!({
        "lastTotpStep": totp::step_at(bench.now()) + 10_000_000,
        "lastRefreshTime": future,
        "retryNotBefore": future,
        "mintUnconfirmedAt": future,
    });
    bench.api.put(&account_path("alice"), object);
    let requeue = tokio::time::timeout(5 * MINUTE, bench.reconcile("alice"))
        .await
        .expect("a reconcile ends within minutes whatever the status says");
    assert!(
        requeue.is_some_and(|r| r <= Duration::from_secs(25 * 3600)),
        "{requeue:?}"
    );
    bench.run("alice", 30 * MINUTE).await;
    assert_eq!(
        bench.status("alice").phase,
        Some(Phase::Ready),
        "{:?}",
        bench.status("alice")
    );
    assert_eq!(bench.dhan.calls(MINT).len(), 1);
}

/// The bug: a reconcile had no bound; one Dhan call or TOTP wait that never ended held its
/// worker for ever. Cut off at the deadline, the account is reconciled again and the lost mint
/// found out like a crash's.
#[tokio::test(start_paused = true)]
async fn a_reconcile_that_hangs_is_cut_off_at_the_deadline_and_the_mint_found_out() {
    let bench = bench();
    bench.reconcile("alice").await;
    bench.advance(5 * MINUTE).await;
    request_refresh(&bench, "1");
    bench.dhan.script([Mint::IssueAndHang]);
    let started = tokio::time::Instant::now();
    let result = tokio::time::timeout(10 * MINUTE, bench.reconcile_entry("alice"))
        .await
        .expect("the reconcile ends");
    assert!(
        matches!(result, Err(reconcile::Error::Deadline(_))),
        "{result:?}"
    );
    assert_eq!(started.elapsed(), reconcile::RECONCILE_DEADLINE);
    bench.run("alice", 3 * MINUTE).await;
    assert!(secret_is_live(&bench), "{:?}", bench.status("alice"));
    assert_eq!(
        bench.dhan.calls(MINT).len(),
        3,
        "the lost mint cost one more"
    );
}

/// The bug: leadership was checked before the waits (the rate limit, up to ~35 s for a fresh
/// TOTP step), not at the call: a replica that lost the Lease meanwhile still minted, killing
/// the new leader's token.
#[tokio::test(start_paused = true)]
async fn leadership_lost_while_waiting_for_a_totp_step_stops_the_mint() {
    use crate::leader::{ElectionSettings, Leadership};
    let mut bench = bench();
    let lease_path = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/leader");
    let lease = |holder: &str, renewed: chrono::DateTime<chrono::Utc>| {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": { "name": "leader", "namespace": NS },
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": 60,
                "renewTime": renewed.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            },
        })
    };
    bench.api.put(&lease_path, lease("replica-a", bench.now()));
    let settings = ElectionSettings {
        namespace: NS.into(),
        lease: "leader".into(),
        identity: "replica-a".into(),
        duration: Duration::from_secs(60),
    };
    let leadership = Leadership::new(bench.api.client(), settings, bench.ctx.clock.clone());
    std::sync::Arc::get_mut(&mut bench.ctx).unwrap().leadership =
        Some(std::sync::Arc::new(leadership));
    // The step of now was used: the mint waits for the next one.
    let mut object = bench.api.get(&account_path("alice")).unwrap();
    object["status"] = json!({ "lastTotpStep": totp::step_at(bench.now()) });
    bench.api.put(&account_path("alice"), object);

    let api = bench.api.clone();
    let taken_at = bench.now() + chrono::Duration::seconds(1);
    let takeover = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        api.put(&lease_path, lease("replica-b", taken_at));
    });
    let result = bench.reconcile_entry("alice").await;
    takeover.await.unwrap();
    assert!(
        matches!(result, Err(reconcile::Error::NotLeader(_))),
        "{result:?}"
    );
    assert_eq!(
        bench.dhan.calls(MINT).len(),
        0,
        "no mint after the takeover"
    );
}

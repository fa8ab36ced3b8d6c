//! Client-ID claims shared with other installs: the Lease calls around a mint, and who mints.

use super::fixtures::*;
use crate::crd::Phase;
use serde_json::json;
use std::time::Duration;

const MINT: &str = "generateAccessToken";
const CLIENT: &str = "1000000001";
/// Sunday 2026-11-22 05:30 IST: outside market hours.
const SUNDAY_MORNING: &str = "2026-11-22T00:00:00Z";

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

fn holder(bench: &Bench) -> Option<String> {
    let lease = bench.api.get(&lease_path(CLIENT))?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

fn lease_requests(bench: &Bench) -> Vec<String> {
    bench
        .api
        .log()
        .into_iter()
        .filter(|r| r.contains("/leases"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_first_mint_takes_the_claim_in_the_name_of_install_and_account() {
    let bench = bench();
    bench.reconcile("alice").await;
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
    assert_eq!(bench.dhan.calls(MINT).len(), 1);
    assert_eq!(
        holder(&bench),
        Some(format!("install-a/{}", uid(&bench, "alice")))
    );
    let lease = lease_path(CLIENT);
    assert_eq!(
        lease_requests(&bench),
        [
            format!("GET {lease}"),
            format!("POST {}", lease.rsplit_once('/').expect("a Lease path").0),
        ],
        "read, then created: once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_another_install_claimed_is_a_conflict_that_names_nobody() {
    let bench = bench();
    let other = bench.claims_of("install-b");
    other
        .secure("uid-of-team-b", CLIENT, Duration::from_secs(20))
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
    assert_eq!(requeue, Some(Duration::from_secs(30)));

    other.release("uid-of-team-b").await;
    assert_eq!(holder(&bench), None, "released: the Lease is gone");
    bench.advance(Duration::from_secs(30)).await;
    bench.reconcile("alice").await;
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
    assert_eq!(bench.dhan.calls(MINT).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_account_dhan_refuses_gives_its_claim_up() {
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
    let owner = bench.claims_of("install-b");
    owner
        .secure("uid-of-the-owner", CLIENT, Duration::from_secs(20))
        .await
        .expect("the real owner claims it");
}

#[tokio::test(start_paused = true)]
async fn a_fresh_claim_is_not_read_again_for_the_next_mint() {
    let bench = bench();
    bench.reconcile("alice").await;
    bench.api.clear_log();
    bench.advance(Duration::from_secs(600)).await;
    let mut object = bench.api.get(&account_path("alice")).unwrap();
    object["metadata"]["annotations"] = json!({"dhan-operator.dev/refresh-requested": "1"});
    bench.api.put(&account_path("alice"), object);
    bench.reconcile("alice").await;
    assert_eq!(bench.dhan.calls(MINT).len(), 2);
    assert_eq!(lease_requests(&bench), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_claim_its_install_stopped_renewing_is_taken_over_once_it_lapsed() {
    let bench = bench();
    let gone = bench.claims_of("install-b");
    gone.secure("uid-of-team-b", CLIENT, Duration::from_secs(20))
        .await
        .unwrap();
    bench.reconcile("alice").await;
    assert_eq!(bench.status("alice").phase, Some(Phase::Conflict));
    // Thirty minutes without renewal, and the skew margin.
    bench.advance(Duration::from_secs(1800 + 10)).await;
    bench.reconcile("alice").await;
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
    assert_eq!(
        holder(&bench),
        Some(format!("install-a/{}", uid(&bench, "alice")))
    );
    let lease = bench.api.get(&lease_path(CLIENT)).unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
}

#[tokio::test(start_paused = true)]
async fn renewals_keep_a_claim_from_lapsing() {
    let bench = bench();
    bench.reconcile("alice").await;
    let claims = bench.ctx.claims.clone().unwrap();
    let renewed = || {
        bench.api.get(&lease_path(CLIENT)).unwrap()["spec"]["renewTime"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = renewed();
    bench.advance(Duration::from_secs(300)).await;
    claims.renew_due().await;
    assert_eq!(renewed(), first, "not due before a third of its duration");
    bench.advance(Duration::from_secs(300)).await;
    claims.renew_due().await;
    assert_ne!(renewed(), first);

    let other = bench.claims_of("install-b");
    bench.advance(Duration::from_secs(1500)).await;
    assert!(
        other
            .secure("uid-of-team-b", CLIENT, Duration::from_secs(20))
            .await
            .is_err(),
        "still held 35 minutes after the first claim"
    );
}

#[tokio::test(start_paused = true)]
async fn changing_the_client_id_releases_the_old_claim_and_the_next_mint_takes_the_new_one() {
    let bench = bench();
    bench.reconcile("alice").await;
    bench.edit_spec("alice", json!({"clientId": "1000000002"}));
    bench.advance(Duration::from_secs(200)).await;
    bench.reconcile("alice").await;
    assert_eq!(holder(&bench), None, "the old client's claim is released");

    let mut object = bench.api.get(&account_path("alice")).unwrap();
    object["metadata"]["annotations"] = json!({"dhan-operator.dev/refresh-requested": "1"});
    bench.api.put(&account_path("alice"), object);
    bench.reconcile("alice").await;
    let new = bench.api.get(&lease_path("1000000002")).unwrap();
    assert_eq!(
        new["spec"]["holderIdentity"],
        format!("install-a/{}", uid(&bench, "alice"))
    );
}

#[tokio::test(start_paused = true)]
async fn claims_are_listed_and_renewed_in_account_order() {
    let bench = Bench::with_claims(SUNDAY_MORNING);
    let claims = bench.claims_of("install-b");
    // Taken out of order: the order they are walked in must not depend on a hash seed.
    let uids: Vec<String> = (0..16)
        .map(|i| format!("uid-{:02}", (i * 7) % 16))
        .collect();
    for (i, uid) in uids.iter().enumerate() {
        claims
            .secure(uid, &format!("10000000{i:02}"), Duration::from_secs(20))
            .await
            .unwrap();
    }
    let mut sorted = uids.clone();
    sorted.sort();
    assert_eq!(claims.holders(), sorted);

    bench.advance(Duration::from_secs(600)).await;
    bench.api.clear_log();
    claims.renew_due().await;
    let renewed: Vec<String> = lease_requests(&bench)
        .into_iter()
        .filter(|r| r.starts_with("GET "))
        .collect();
    let expected: Vec<String> = sorted
        .iter()
        .map(|uid| {
            let i = uids.iter().position(|u| u == uid).unwrap();
            format!("GET {}", lease_path(&format!("10000000{i:02}")))
        })
        .collect();
    assert_eq!(renewed, expected);
}

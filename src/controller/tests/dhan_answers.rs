//! Dhan's answers as Dhan really gives them (docs/dhan-api.md §9): a mint whose answer is lost
//! in more ways than a timeout, a throttle that re-arms on every refused attempt, and a fresh
//! token that answers one probe with 401.

use super::fixtures::*;
use crate::crd::Phase;
use crate::dhan::DhanError;
use chrono::{DateTime, Utc};
use serde_json::json;
use std::time::Duration;

const MINT: &str = "generateAccessToken";
const MINUTE: Duration = Duration::from_secs(60);
const SUNDAY_MORNING: &str = "2026-11-22T00:00:00Z";
/// Monday 2026-11-23 08:50 IST: ten minutes before the session opens.
const MONDAY_0850_IST: &str = "2026-11-23T03:20:00Z";

fn bench(start: &str) -> Bench {
    let bench = Bench::at(start);
    bench.credentials(PIN);
    bench.account("alice", json!({}));
    bench
}

fn request_refresh(bench: &Bench, value: &str) {
    let mut object = bench.api.get(&account_path("alice")).unwrap();
    object["metadata"]["annotations"] = json!({"dhan-operator.dev/refresh-requested": value});
    bench.api.put(&account_path("alice"), object);
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_seconds()
}

fn connection_reset() -> DhanError {
    DhanError::ConnectionLost {
        detail: "connection reset by peer".into(),
    }
}

fn malformed_200() -> DhanError {
    DhanError::UnexpectedResponse {
        status: 200,
        detail: "JSON without the expected fields and without an error marker".into(),
    }
}

fn dead_token_401() -> DhanError {
    DhanError::TokenDead {
        signal: "HTTP 401".into(),
        message: String::new(),
    }
}

/// A requested refresh at 08:58 IST whose answer is `lost`; Dhan carried the mint out or not.
/// Returns the bench after 30 minutes, and when the lost mint was sent.
async fn lost_answer_before_the_open(lost: DhanError, carried_out: bool) -> (Bench, DateTime<Utc>) {
    let bench = bench(MONDAY_0850_IST);
    bench.reconcile("alice").await;
    bench.advance(8 * MINUTE).await;
    bench.dhan.script([if carried_out {
        Mint::IssueButAnswer(lost)
    } else {
        Mint::Fail(lost)
    }]);
    request_refresh(&bench, "1");
    bench.reconcile("alice").await;
    let lost_at = *bench.dhan.calls(MINT).last().unwrap();
    bench.run("alice", 30 * MINUTE).await;
    (bench, lost_at)
}

/// The lost mint was carried out: the previous token is probed 30 s later, found dead (and
/// confirmed), and replaced as soon as Dhan's limit allows — in the session, as a dead token
/// must be.
async fn a_carried_out_mint_whose_answer_is_lost_is_detected_and_replaced(lost: DhanError) {
    let (bench, lost_at) = lost_answer_before_the_open(lost.clone(), true).await;
    let mints = bench.dhan.calls(MINT);
    assert_eq!(
        mints.len(),
        3,
        "{lost:?}: the lost mint, then one: {mints:?}"
    );
    let first_probe = bench
        .dhan
        .calls("profile")
        .into_iter()
        .find(|t| *t > lost_at);
    assert_eq!(
        first_probe.map(|t| seconds(lost_at, t)),
        Some(30),
        "{lost:?}: the old token is probed 30 s after the lost answer"
    );
    assert_eq!(
        seconds(lost_at, mints[2]),
        125,
        "{lost:?}: the replacement waits for Dhan's limit, and no longer"
    );
    let token = bench.secret_token("alice-token").unwrap();
    assert!(bench.dhan.is_live(&token), "{lost:?}");
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
}

/// The lost mint was not carried out: the previous token still works, so the requested refresh
/// is an ordinary proactive one again and waits for the session's close.
async fn a_lost_answer_of_a_mint_not_carried_out_keeps_the_old_token(lost: DhanError) {
    let (bench, lost_at) = lost_answer_before_the_open(lost.clone(), false).await;
    let mints = bench.dhan.calls(MINT);
    assert_eq!(
        mints.len(),
        2,
        "{lost:?}: no mint in the session: {mints:?}"
    );
    let first_probe = bench
        .dhan
        .calls("profile")
        .into_iter()
        .find(|t| *t > lost_at);
    assert_eq!(
        first_probe.map(|t| seconds(lost_at, t)),
        Some(30),
        "{lost:?}"
    );
    let token = bench.secret_token("alice-token").unwrap();
    assert!(bench.dhan.is_live(&token), "{lost:?}");
    assert!(
        bench
            .event_reasons()
            .contains(&"LateTokenCheck".to_string()),
        "{lost:?}: {:?}",
        bench.event_reasons()
    );
}

#[tokio::test(start_paused = true)]
async fn a_mint_whose_connection_was_reset_probes_the_old_token_and_mints_once_more_if_dead() {
    a_carried_out_mint_whose_answer_is_lost_is_detected_and_replaced(connection_reset()).await;
}

#[tokio::test(start_paused = true)]
async fn a_mint_answered_by_a_malformed_200_probes_the_old_token_and_mints_once_more_if_dead() {
    a_carried_out_mint_whose_answer_is_lost_is_detected_and_replaced(malformed_200()).await;
}

#[tokio::test(start_paused = true)]
async fn a_reset_mint_that_was_not_carried_out_leaves_the_old_token_in_place() {
    a_lost_answer_of_a_mint_not_carried_out_keeps_the_old_token(connection_reset()).await;
}

#[tokio::test(start_paused = true)]
async fn a_malformed_200_mint_that_was_not_carried_out_leaves_the_old_token_in_place() {
    a_lost_answer_of_a_mint_not_carried_out_keeps_the_old_token(malformed_200()).await;
}

/// A connection that never opened sent nothing: no mint can have happened, nothing to check.
#[tokio::test(start_paused = true)]
async fn a_connection_that_never_opened_is_retried_after_the_backoff_without_a_check() {
    let bench = bench(SUNDAY_MORNING);
    bench.dhan.script([Mint::Fail(DhanError::Network {
        detail: "connection refused".into(),
    })]);
    bench.run("alice", 5 * MINUTE).await;
    let mints = bench.dhan.calls(MINT);
    assert_eq!(mints.len(), 2);
    assert_eq!(seconds(mints[0], mints[1]), 60);
    assert_eq!(bench.status("alice").last_mint_attempt_time, None);
}

/// Dhan's 2-minute lock re-arms on each refused attempt (§9): a retry sooner is refused again
/// and re-arms it once more.
#[tokio::test(start_paused = true)]
async fn a_rate_limited_mint_is_retried_a_full_mint_interval_later_not_at_the_backoff() {
    let bench = bench(SUNDAY_MORNING);
    bench.dhan.script([Mint::Fail(DhanError::RateLimited {
        message: "Too many requests".into(),
    })]);
    bench.reconcile("alice").await;
    let refused_at = bench.dhan.calls(MINT)[0];
    let status = bench.status("alice");
    assert_eq!(status.phase, Some(Phase::Backoff));
    assert_eq!(status.last_mint_attempt_time, Some(refused_at));
    bench.run("alice", 5 * MINUTE).await;
    let mints = bench.dhan.calls(MINT);
    assert_eq!(mints.len(), 2, "{mints:?}");
    assert_eq!(seconds(refused_at, mints[1]), 125);
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
}

/// A wrong PIN fixed at once is tried a full mint interval after the refusal, not at once: the
/// refusal re-armed Dhan's lock, and the memory of it is in the status (a restarted operator
/// knows it too).
#[tokio::test(start_paused = true)]
async fn a_refused_pin_re_arms_the_mint_interval_even_when_fixed_at_once() {
    let bench = Bench::at(SUNDAY_MORNING);
    bench.credentials("000000");
    bench.account("alice", json!({}));
    bench.reconcile("alice").await;
    let refused_at = bench.dhan.calls(MINT)[0];
    let failed = bench.status("alice");
    assert_eq!(failed.phase, Some(Phase::Failed));
    assert_eq!(failed.last_mint_attempt_time, Some(refused_at));

    bench.advance(Duration::from_secs(10)).await;
    bench.credentials(PIN);
    bench.reconcile("alice").await;
    assert_eq!(bench.dhan.calls(MINT).len(), 1, "not within Dhan's lock");
    let waiting = bench.status("alice");
    assert_eq!(waiting.phase, Some(Phase::Pending), "{waiting:?}");
    assert!(
        waiting
            .message
            .as_deref()
            .unwrap()
            .contains("Dhan's limits allow"),
        "{waiting:?}"
    );
    bench.run("alice", 5 * MINUTE).await;
    let mints = bench.dhan.calls(MINT);
    assert_eq!(mints.len(), 2, "{mints:?}");
    assert_eq!(seconds(refused_at, mints[1]), 125);
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
}

/// A token fresh from Dhan has been seen to answer 401 once, then work (§9): one dead probe is
/// confirmed by a second, 10 s later, before any mint.
#[tokio::test(start_paused = true)]
async fn one_dead_probe_right_after_a_mint_is_confirmed_before_any_mint() {
    let bench = bench(SUNDAY_MORNING);
    bench.reconcile("alice").await;
    bench.dhan.script_profiles([dead_token_401()]);
    bench.run("alice", 20 * MINUTE).await;
    let probes = bench.dhan.calls("profile");
    assert!(probes.len() >= 2, "{probes:?}");
    assert_eq!(seconds(probes[0], probes[1]), 10, "confirmed 10 s later");
    assert_eq!(bench.dhan.calls(MINT).len(), 1, "the token works: no mint");
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
    assert!(
        !bench.event_reasons().contains(&"TokenRejected".to_string()),
        "{:?}",
        bench.event_reasons()
    );
}

/// A token that really is dead is replaced right after the confirming probe.
#[tokio::test(start_paused = true)]
async fn a_confirmed_dead_token_is_replaced_at_the_confirming_probe() {
    let bench = bench(SUNDAY_MORNING);
    let to_probe = bench.reconcile("alice").await.unwrap();
    // Revoked by Dhan before its expiry, with no new mint (§4).
    bench.dhan.accept("a token of someone else");
    bench.advance(to_probe).await;
    let to_confirm = bench.reconcile("alice").await.unwrap();
    assert_eq!(bench.dhan.calls("profile").len(), 1);
    assert_eq!(bench.dhan.calls(MINT).len(), 1, "not on one dead probe");
    assert_eq!(to_confirm, Duration::from_secs(10));
    bench.advance(to_confirm).await;
    bench.reconcile("alice").await;
    assert_eq!(bench.dhan.calls("profile").len(), 2);
    assert_eq!(
        bench.dhan.calls(MINT).len(),
        2,
        "the reconcile that confirms it replaces it"
    );
    let token = bench.secret_token("alice-token").unwrap();
    assert!(bench.dhan.is_live(&token));
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
    assert!(
        bench.event_reasons().contains(&"TokenRejected".to_string()),
        "{:?}",
        bench.event_reasons()
    );
}

/// The confirming probe does not give way to calls that obtain tokens, as a regular probe does:
/// a token that may be dead is not left alone until its next slot.
#[tokio::test(start_paused = true)]
async fn the_confirming_probe_does_not_give_way_to_a_busy_rate_limit() {
    let bench = bench(SUNDAY_MORNING);
    bench.reconcile("alice").await;
    bench.dhan.script_profiles([dead_token_401()]);
    bench.advance(15 * MINUTE).await;
    bench.reconcile("alice").await;
    assert_eq!(bench.dhan.calls("profile").len(), 1);
    bench.advance(Duration::from_secs(10)).await;
    // Two seconds of calls queued ahead (the bench's limit is 1000/s).
    for _ in 0..2_000 {
        bench.ctx.limiter.reserve_for_test();
    }
    bench.reconcile("alice").await;
    assert_eq!(bench.dhan.calls("profile").len(), 2, "not skipped");
    assert_eq!(bench.dhan.calls(MINT).len(), 1);
}

/// "Invalid TOTP" is also Dhan's answer to a correct code used elsewhere in its step (§1), and
/// like any refusal it re-arms the 2-minute lock (§9): the one retry it deserves comes a full
/// mint interval later, with a fresh code; a second refusal waits for the next IST day (a
/// clock that is off heals; a wrong key costs one refusal a day, within the cap).
#[tokio::test(start_paused = true)]
async fn an_invalid_totp_is_retried_once_a_mint_interval_later_then_on_the_next_ist_day() {
    let invalid_totp = || {
        Mint::Fail(DhanError::InvalidTotp {
            message: "Invalid TOTP".into(),
        })
    };
    let bench = bench(SUNDAY_MORNING);
    bench.dhan.script([invalid_totp(), invalid_totp()]);
    bench.reconcile("alice").await;
    assert_eq!(bench.dhan.calls(MINT).len(), 1, "no second code at once");
    assert_eq!(bench.status("alice").phase, Some(Phase::Backoff));
    bench.run("alice", 30 * MINUTE).await;
    let mints = bench.dhan.calls(MINT);
    assert_eq!(mints.len(), 2, "{mints:?}");
    assert_eq!(seconds(mints[0], mints[1]), 125);
    let status = bench.status("alice");
    assert_eq!(status.phase, Some(Phase::Backoff));
    assert_eq!(status.last_failure_reason.as_deref(), Some("InvalidTotp"));
    // 00:10 IST (18:40 UTC), ten minutes into the next IST day.
    assert_eq!(
        status.retry_not_before.map(|t| t.to_rfc3339()).as_deref(),
        Some("2026-11-22T18:40:00+00:00")
    );
}

#[tokio::test(start_paused = true)]
async fn a_replayed_totp_code_costs_one_mint_interval() {
    let bench = bench(SUNDAY_MORNING);
    bench.dhan.script([Mint::Fail(DhanError::InvalidTotp {
        message: "Invalid TOTP".into(),
    })]);
    bench.run("alice", 30 * MINUTE).await;
    let mints = bench.dhan.calls(MINT);
    assert_eq!(mints.len(), 2, "{mints:?}");
    assert_eq!(seconds(mints[0], mints[1]), 125);
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
}

/// Every refusal of the credentials by a mint counts toward the day's failed-login cap, as a
/// browser login that reached Dhan's PIN/TOTP step does: Dhan locks accounts after repeated
/// wrong PINs, however they were sent.
#[tokio::test(start_paused = true)]
async fn refused_credentials_of_mints_count_toward_the_daily_failed_login_cap() {
    let bench = Bench::at(SUNDAY_MORNING);
    bench.account("alice", json!({}));
    for (attempt, pin) in [(1, "000000"), (2, "111111"), (3, "222222")] {
        bench.credentials(pin);
        bench.run("alice", 5 * MINUTE).await;
        let status = bench.status("alice");
        assert_eq!(bench.dhan.calls(MINT).len(), attempt);
        // The cap holds until midnight IST, when the account tries again by itself.
        let phase = if attempt < 3 {
            Phase::Failed
        } else {
            Phase::Backoff
        };
        assert_eq!(status.phase, Some(phase));
        assert_eq!(
            status.failed_logins.as_ref().map(|c| c.count),
            Some(attempt as u32)
        );
        let reason = if attempt < 3 {
            "InvalidPin"
        } else {
            "LoginLockout"
        };
        assert_eq!(status.conditions[0].reason, reason, "{status:?}");
    }
}

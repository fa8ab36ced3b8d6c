//! Phase by phase: what a reconcile sends to the API server and to Dhan.

use super::fixtures::*;
use crate::crd::Phase;
use crate::decision::calendar::TradingCalendar;
use crate::dhan::DhanError;
use serde_json::json;
use std::time::Duration;

const MINT: &str = "generateAccessToken";
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// Sunday 2026-11-22 05:30 IST: outside market hours.
const SUNDAY_MORNING: &str = "2026-11-22T00:00:00Z";
/// Monday 2026-11-23 11:00 IST: market hours.
const MONDAY_1100_IST: &str = "2026-11-23T05:30:00Z";

fn ready_bench(start: &str) -> Bench {
    let bench = Bench::at(start);
    bench.credentials(PIN);
    bench.account("alice", json!({}));
    bench
}

#[tokio::test(start_paused = true)]
async fn a_new_account_mints_once_and_writes_the_secret_before_the_status() {
    let bench = ready_bench(SUNDAY_MORNING);
    let requeue = bench.reconcile("alice").await;

    assert_eq!(bench.dhan.calls(MINT).len(), 1);
    assert_eq!(bench.dhan.calls("getIP").len(), 1);
    assert_eq!(
        bench.api.writes(),
        [
            format!("PATCH {}", secret_path("alice-token")),
            format!("PATCH {}/status", account_path("alice")),
        ],
        "one Secret write, then one status write"
    );
    let status = bench.status("alice");
    assert_eq!(status.phase, Some(Phase::Ready));
    assert_eq!(status.method.as_deref(), Some("totp"));
    assert_eq!(status.secret_name.as_deref(), Some("alice-token"));
    assert!(bench.secret_token("alice-token").is_some());
    // The first probe is due at the account's next probe slot, at most validateEvery (15m)
    // away: the issue counts as a probe.
    let requeue = requeue.unwrap();
    assert!(requeue <= 15 * MINUTE && requeue >= Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_finds_nothing_new_writes_nothing() {
    let bench = ready_bench(SUNDAY_MORNING);
    bench.reconcile("alice").await;
    bench.api.clear_log();
    bench.advance(15 * MINUTE).await;
    bench.reconcile("alice").await;
    assert_eq!(bench.dhan.calls("profile").len(), 1);
    assert_eq!(bench.api.writes(), Vec::<String>::new());
    // The cache showed the operator's own last write: no GET of the account either.
    assert!(
        !bench.api.log().iter().any(|r| r.contains("/dhanaccounts/")),
        "{:?}",
        bench.api.log()
    );
}

#[tokio::test(start_paused = true)]
async fn two_days_mint_on_schedule_and_probe_in_between() {
    let bench = ready_bench(SUNDAY_MORNING);
    bench.run("alice", 48 * HOUR).await;
    let mints = bench.dhan.calls(MINT);
    // 05:30 IST at start, then 08:00 IST on Sunday and Monday.
    let at: Vec<String> = mints
        .iter()
        .map(|t| t.format("%d %H:%M").to_string())
        .collect();
    assert_eq!(at, ["22 00:00", "22 02:30", "23 02:30"]);
    let probes = bench.dhan.calls("profile").len();
    assert!(
        (180..=200).contains(&probes),
        "a probe every 15 minutes: {probes}"
    );
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
}

#[tokio::test(start_paused = true)]
async fn a_wrong_pin_fails_once_and_is_held_without_a_second_patch() {
    let bench = Bench::at(SUNDAY_MORNING);
    bench.credentials("000000");
    bench.account("alice", json!({}));
    bench.reconcile("alice").await;
    let failed = bench.status("alice");
    assert_eq!(failed.phase, Some(Phase::Failed));
    assert_eq!(failed.last_failure_reason.as_deref(), Some("InvalidPin"));
    assert!(failed.last_failure_time.is_some());
    assert_eq!(failed.conditions[0].reason, "InvalidPin");

    bench.api.clear_log();
    bench.run("alice", 2 * HOUR).await;
    assert_eq!(
        bench.dhan.calls(MINT).len(),
        1,
        "a wrong PIN is never retried"
    );
    assert_eq!(
        bench.api.writes(),
        Vec::<String>::new(),
        "no PATCH while held"
    );
    assert_eq!(
        bench.status("alice").last_failure_time,
        failed.last_failure_time
    );

    bench.credentials(PIN);
    bench.reconcile("alice").await;
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
}

#[tokio::test(start_paused = true)]
async fn transient_failures_back_off_from_a_minute_and_recover() {
    let bench = ready_bench(SUNDAY_MORNING);
    let timeout = || DhanError::ServerError {
        status: 502,
        message: String::new(),
    };
    bench.dhan.script([
        Mint::Fail(DhanError::Network {
            detail: "reset".into(),
        }),
        Mint::Fail(timeout()),
    ]);
    let first = bench.reconcile("alice").await;
    assert_eq!(bench.status("alice").phase, Some(Phase::Backoff));
    assert_eq!(first, Some(MINUTE));
    bench.run("alice", 10 * MINUTE).await;
    let mints = bench.dhan.calls(MINT);
    assert_eq!(mints.len(), 3);
    assert_eq!((mints[1] - mints[0]).num_seconds(), 60);
    // A 5xx may have been carried out by Dhan: the next mint waits for its 2-minute limit.
    assert_eq!((mints[2] - mints[1]).num_seconds(), 125);
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
    assert_eq!(bench.status("alice").failed_attempts, None);
}

#[tokio::test(start_paused = true)]
async fn suspended_accounts_call_nothing() {
    let bench = Bench::at(SUNDAY_MORNING);
    bench.credentials(PIN);
    bench.account("alice", json!({"suspend": true}));
    bench.run("alice", HOUR).await;
    assert_eq!(bench.dhan.all_calls(), 0);
    assert_eq!(bench.status("alice").phase, Some(Phase::Suspended));
}

#[tokio::test(start_paused = true)]
async fn the_younger_account_for_a_client_is_in_conflict_and_calls_nothing() {
    let bench = ready_bench(SUNDAY_MORNING);
    bench.reconcile("alice").await;
    bench.account("alice-copy", json!({}));
    let mut copy = bench.api.get(&account_path("alice-copy")).unwrap();
    copy["metadata"]["creationTimestamp"] = "2026-11-21T00:00:00Z".into();
    bench.api.put(&account_path("alice-copy"), copy.clone());
    let mut alice = bench.api.get(&account_path("alice")).unwrap();
    alice["metadata"]["creationTimestamp"] = "2026-11-01T00:00:00Z".into();
    bench.api.put(&account_path("alice"), alice);
    bench.reconcile("alice").await;
    let requeue = bench.reconcile("alice-copy").await;
    let status = bench.status("alice-copy");
    assert_eq!(status.phase, Some(Phase::Conflict));
    // Same namespace: the owner sees alice anyway, so she is named.
    assert!(
        status
            .message
            .unwrap()
            .contains("DhanAccount alice in this namespace")
    );
    // Alice's changes wake it (the index); her token lives a day: the fallback bounds it.
    assert_eq!(requeue, Some(crate::controller::gather::CONFLICT_FALLBACK));
    assert_eq!(bench.dhan.calls(MINT).len(), 1, "only alice minted");
}

#[tokio::test(start_paused = true)]
async fn an_older_account_naming_the_client_without_credentials_does_not_block_its_owner() {
    let bench = Bench::at(SUNDAY_MORNING);
    bench.credentials(PIN);
    bench.account("squatter", json!({"credentialsSecret": "nothing-here"}));
    bench.reconcile("squatter").await;
    assert_eq!(bench.status("squatter").phase, Some(Phase::Failed));
    bench.account("alice", json!({}));
    let mut alice = bench.api.get(&account_path("alice")).unwrap();
    alice["metadata"]["creationTimestamp"] = "2026-11-21T00:00:00Z".into();
    bench.api.put(&account_path("alice"), alice);
    bench.reconcile("squatter").await;
    bench.reconcile("alice").await;
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
    assert_eq!(bench.dhan.calls(MINT).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_requested_refresh_in_market_hours_waits_for_the_close() {
    let bench = ready_bench(MONDAY_1100_IST);
    // A token minted at 08:00 IST today (before the session), valid till tomorrow 08:00.
    bench.reconcile("alice").await; // emergency mint (no token) is allowed
    bench.edit_spec("alice", json!({}));
    let mut object = bench.api.get(&account_path("alice")).unwrap();
    object["metadata"]["annotations"] = json!({"dhan-operator.dev/refresh-requested": "1"});
    bench.api.put(&account_path("alice"), object);
    bench.reconcile("alice").await;
    let held = bench.status("alice");
    assert_eq!(held.phase, Some(Phase::Ready));
    assert!(
        held.message.as_deref().unwrap().contains("market hours"),
        "{held:?}"
    );
    assert_eq!(
        held.next_refresh_time.unwrap().to_rfc3339(),
        "2026-11-23T10:00:00+00:00",
        "15:30 IST"
    );
    bench.run("alice", 4 * HOUR + 29 * MINUTE).await; // to 15:29 IST
    assert_eq!(
        bench.dhan.calls(MINT).len(),
        1,
        "no mint during the session"
    );
    bench.run("alice", 2 * MINUTE).await;
    assert_eq!(
        bench.dhan.calls(MINT).len(),
        2,
        "the requested mint at the close"
    );
}

/// Two operators in one process (as in a simulation of several installs) each decide by their
/// own trading calendar.
#[tokio::test(start_paused = true)]
async fn each_operator_keeps_to_its_own_trading_calendar() {
    let holiday = TradingCalendar::parse("holidays: [{date: 2026-11-23, name: Test}]").unwrap();
    let on_holiday = Bench::with_calendar(MONDAY_1100_IST, holiday);
    let in_session = Bench::at(MONDAY_1100_IST);
    for bench in [&on_holiday, &in_session] {
        bench.credentials(PIN);
        bench.account("alice", json!({}));
        bench.reconcile("alice").await;
        let mut object = bench.api.get(&account_path("alice")).unwrap();
        object["metadata"]["annotations"] = json!({"dhan-operator.dev/refresh-requested": "1"});
        bench.api.put(&account_path("alice"), object);
        bench.advance(5 * MINUTE).await;
        bench.reconcile("alice").await;
    }
    assert_eq!(
        on_holiday.dhan.calls(MINT).len(),
        2,
        "no session on its holiday: the requested refresh goes ahead"
    );
    assert_eq!(
        in_session.dhan.calls(MINT).len(),
        1,
        "the requested refresh waits for the close"
    );
    assert!(
        in_session
            .status("alice")
            .message
            .unwrap()
            .contains("market hours"),
        "{:?}",
        in_session.status("alice")
    );
}

#[tokio::test(start_paused = true)]
async fn an_invalid_spec_stops_a_recorded_login_and_frees_its_slot() {
    let bench = ready_bench(SUNDAY_MORNING);
    bench.reconcile("alice").await;
    let mut object = bench.api.get(&account_path("alice")).unwrap();
    object["status"]["login"] = json!({
        "jobName": "alice-login-1", "startedAt": "2026-11-22T00:00:00Z", "reason": "Scheduled"
    });
    bench.api.put(&account_path("alice"), object);
    let uid = bench.api.get(&account_path("alice")).unwrap()["metadata"]["uid"].clone();
    bench.ctx.logins.hold(uid.as_str().unwrap());
    bench.edit_spec("alice", json!({"refresh": {"schedule": "never"}}));
    bench.api.clear_log();
    bench.reconcile("alice").await;
    let status = bench.status("alice");
    assert_eq!(status.phase, Some(Phase::Failed));
    assert!(status.message.unwrap().starts_with("spec.refresh.schedule"));
    assert_eq!(status.login, None);
    assert!(
        bench.api.log().contains(&format!(
            "DELETE /apis/batch/v1/namespaces/{NS}/jobs/alice-login-1"
        )),
        "{:?}",
        bench.api.log()
    );
    assert!(
        bench
            .ctx
            .logins
            .try_reserve("other", Default::default())
            .is_ok()
    );
    assert_eq!(bench.dhan.calls(MINT).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_memory_of_a_deleted_account_is_pruned() {
    let bench = ready_bench(SUNDAY_MORNING);
    bench.reconcile("alice").await;
    assert_eq!(bench.ctx.memos.len(), 1);
    // Another account, still there, with a memory of its own.
    let now = bench.ctx.clock.now();
    bench.ctx.memos.refused_write("uid-of-bob", now);
    bench.api.remove(&account_path("alice"));
    let live = ["uid-of-bob".to_string()].into_iter().collect();
    crate::controller::prune_once(&bench.ctx, &live);
    assert_eq!(bench.ctx.memos.len(), 1, "only alice's memory goes");
    assert_eq!(bench.ctx.memos.last_refused_write("uid-of-bob"), Some(now));
}

#[tokio::test(start_paused = true)]
async fn rollout_targets_are_left_alone_when_restarts_are_off() {
    let bench = Bench::at(SUNDAY_MORNING);
    bench.credentials(PIN);
    bench.account(
        "alice",
        json!({"rolloutRestartTargets": [{"kind": "Deployment", "name": "algo"}]}),
    );
    bench.reconcile("alice").await;
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
    assert!(
        !bench.api.log().iter().any(|r| r.contains("/apis/apps/")),
        "no workload read or patched: {:?}",
        bench.api.log()
    );
    assert!(
        bench
            .event_reasons()
            .contains(&"RolloutRestartsOff".to_string()),
        "{:?}",
        bench.event_reasons()
    );
}

#[tokio::test(start_paused = true)]
async fn a_restarted_operator_probes_each_account_at_its_own_slot_not_at_once() {
    let bench = ready_bench(SUNDAY_MORNING);
    bench.reconcile("alice").await;
    let uid = bench.api.get(&account_path("alice")).unwrap()["metadata"]["uid"].clone();
    bench.advance(MINUTE).await;
    // A new process: nothing remembered but the status and the Secret.
    bench.ctx.memos.forget(uid.as_str().unwrap());
    bench.api.clear_log();
    let requeue = bench.reconcile("alice").await.unwrap();
    assert_eq!(bench.dhan.calls("profile").len(), 0, "no probe at start-up");
    assert_eq!(bench.api.writes(), Vec::<String>::new());
    assert!(requeue <= 15 * MINUTE, "{requeue:?}");
    bench.run("alice", 15 * MINUTE).await;
    assert_eq!(bench.dhan.calls("profile").len(), 1, "then one per period");
}

#[tokio::test(start_paused = true)]
async fn a_probe_gives_way_when_mints_fill_the_rate_limit_and_writes_nothing() {
    let bench = ready_bench(SUNDAY_MORNING);
    bench.reconcile("alice").await;
    bench.api.clear_log();
    bench.advance(15 * MINUTE).await;
    // Two seconds of calls queued ahead (the bench's limit is 1000/s).
    for _ in 0..2_000 {
        bench.ctx.limiter.reserve_for_test();
    }
    bench.reconcile("alice").await;
    assert_eq!(bench.dhan.calls("profile").len(), 0, "skipped");
    assert_eq!(bench.api.writes(), Vec::<String>::new());
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
    // The queue has drained; the skipped probe's slot is spent all the same.
    bench.advance(3 * Duration::from_secs(1)).await;
    bench.reconcile("alice").await;
    assert_eq!(
        bench.dhan.calls("profile").len(),
        0,
        "not before the next slot"
    );
    bench.run("alice", 15 * MINUTE).await;
    assert_eq!(bench.dhan.calls("profile").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_repeated_failure_is_counted_into_one_event_series() {
    let bench = ready_bench(SUNDAY_MORNING);
    let reset = || {
        Mint::Fail(DhanError::Network {
            detail: "reset".into(),
        })
    };
    bench.dhan.script([reset(), reset()]);
    bench.run("alice", 10 * MINUTE).await;
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
    let events = bench
        .api
        .under(&format!("/apis/events.k8s.io/v1/namespaces/{NS}/events/"));
    let failures: Vec<_> = events.iter().filter(|e| e["type"] == "Warning").collect();
    assert_eq!(failures.len(), 1, "{events:#?}");
    assert_eq!(failures[0]["series"]["count"], 2, "{events:#?}");
    assert_eq!(failures[0]["regarding"]["name"], "alice");
    assert_eq!(
        bench.event_reasons().len(),
        2,
        "the failure's series and one for the new token: {events:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_repeat_of_an_event_that_is_gone_publishes_a_new_one() {
    let bench = ready_bench(SUNDAY_MORNING);
    let reset = || {
        Mint::Fail(DhanError::Network {
            detail: "reset".into(),
        })
    };
    bench.dhan.script([reset(), reset()]);
    bench.reconcile("alice").await;
    let prefix = format!("/apis/events.k8s.io/v1/namespaces/{NS}/events/");
    let first = bench.api.under(&prefix);
    assert_eq!(first.len(), 1, "{first:#?}");
    let first_name = first[0]["metadata"]["name"].as_str().unwrap().to_string();
    // Events expire after an hour, or someone deletes them.
    bench.api.remove(&format!("{prefix}{first_name}"));
    bench.run("alice", 10 * MINUTE).await;
    let failures: Vec<_> = bench
        .api
        .under(&prefix)
        .into_iter()
        .filter(|e| e["type"] == "Warning")
        .collect();
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert_ne!(failures[0]["metadata"]["name"], first_name.as_str());
    assert!(
        failures[0]["series"].is_null(),
        "a new event, not a series: {failures:#?}"
    );
}

/// The account names another client ID now: the token in its Secret is the old client's, so it
/// is not called `Ready` on it; it mints for the client it names.
#[tokio::test(start_paused = true)]
async fn a_changed_client_id_does_not_keep_the_other_clients_token() {
    let bench = ready_bench(SUNDAY_MORNING);
    bench.reconcile("alice").await;
    assert_eq!(bench.status("alice").phase, Some(Phase::Ready));
    let old = bench.secret_token("alice-token");
    bench.edit_spec("alice", json!({"clientId": "1000000002"}));
    bench.advance(Duration::from_secs(180)).await;
    bench.reconcile("alice").await;
    assert_eq!(
        bench.dhan.calls(MINT).len(),
        2,
        "a mint for the client it names"
    );
    assert_ne!(bench.secret_token("alice-token"), old);
}

/// `spec.apiKeyExpires` 20 days ahead: the account is Ready and says the key ends soon, once
/// (a warning event), in the condition `APIKeyValid`; a later date moves it back to `Valid`.
#[tokio::test(start_paused = true)]
async fn an_api_key_ending_within_a_month_is_reported_once() {
    let bench = Bench::at(SUNDAY_MORNING);
    bench.credentials(PIN);
    bench.account("alice", json!({ "apiKeyExpires": "2026-12-12" }));
    bench.reconcile("alice").await;
    let status = bench.status("alice");
    assert_eq!(status.phase, Some(Phase::Ready));
    let key = |status: &crate::crd::DhanAccountStatus| {
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == "APIKeyValid")
            .cloned()
            .expect("APIKeyValid");
        (c.status, c.reason)
    };
    assert_eq!(key(&status), ("True".into(), "ExpiresSoon".into()));
    assert_eq!(status.conditions[0].type_, "Ready", "Ready stays first");
    let warned = |bench: &Bench| {
        bench
            .event_reasons()
            .iter()
            .filter(|r| *r == "APIKeyExpiresSoon")
            .count()
    };
    assert_eq!(warned(&bench), 1);
    bench.advance(Duration::from_secs(3600)).await;
    bench.reconcile("alice").await;
    assert_eq!(warned(&bench), 1, "told once");

    bench.edit_spec("alice", json!({ "apiKeyExpires": "2027-11-30" }));
    bench.reconcile("alice").await;
    assert_eq!(key(&bench.status("alice")), ("True".into(), "Valid".into()));
}

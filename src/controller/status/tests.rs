use super::*;
use crate::decision::Phase;
use std::time::Duration;

fn now() -> DateTime<Utc> {
    "2026-11-23T02:30:00Z".parse().unwrap()
}

fn token() -> TokenFacts {
    TokenFacts {
        expires_at: now() + chrono::Duration::hours(24),
        issued_at: now(),
        obtained_at: now(),
        consumer_type: Some("APP".into()),
        hash: "0123456789abcdef".into(),
    }
}

fn ready() -> Assessment {
    Assessment {
        phase: Phase::Ready,
        ready: true,
        reason: "TokenValid".into(),
        message: "ok".into(),
        next_refresh: Some(now() + chrono::Duration::hours(24)),
        requeue: Some(Duration::from_secs(900)),
    }
}

fn report<'a>(
    token: Option<&'a TokenFacts>,
    memory: &'a Memory,
    assessment: &'a Assessment,
    at: DateTime<Utc>,
) -> Report<'a> {
    Report {
        memory,
        token,
        client_id: "1000000001",
        method: Some("totp"),
        secret_name: Some("alice-token"),
        static_ip: None,
        assessment,
        generation: Some(1),
        now: at,
    }
}

#[test]
fn recomposing_an_unchanged_status_gives_an_equal_status() {
    let token = token();
    let memory = Memory::default();
    let a = ready();
    let first = report(Some(&token), &memory, &a, now()).compose(&DhanAccountStatus::default());
    let later = report(
        Some(&token),
        &memory,
        &a,
        now() + chrono::Duration::minutes(15),
    )
    .compose(&first);
    assert_eq!(first, later, "no write on a reconcile that changed nothing");
    assert_eq!(first.conditions[0].status, "True");
    assert_eq!(first.token_hash.as_deref(), Some("0123456789abcdef"));
    assert_eq!(first.secret_name.as_deref(), Some("alice-token"));
}

#[test]
fn the_ready_condition_follows_the_assessment() {
    let token = token();
    let memory = Memory::default();
    let dead = Assessment {
        phase: Phase::Expired,
        ready: false,
        reason: "NoValidToken".into(),
        ..ready()
    };
    let status = report(Some(&token), &memory, &dead, now()).compose(&DhanAccountStatus::default());
    assert_eq!(status.conditions[0].status, "False");
    assert_eq!(status.conditions[0].reason, "NoValidToken");
    let none = report(None, &memory, &dead, now()).compose(&DhanAccountStatus::default());
    assert_eq!(none.token_hash, None);
    assert_eq!(none.secret_name, None);
}

#[test]
fn memory_survives_a_round_trip_through_status() {
    let token = token();
    let memory = Memory {
        last_mint: Some(now()),
        failed_attempts: 2,
        last_failure: Some(LastFailure {
            at: now(),
            reason: "MintThrottled".into(),
            message: "Dhan allows one token mint per client every 2 minutes".into(),
        }),
        retry_not_before: Some(now() + chrono::Duration::seconds(125)),
        held_inputs: Some("fp".into()),
        refresh_request_handled: Some("r1".into()),
        last_totp_step: Some(59_000_000),
        consents: Some(DayCount {
            day: "2026-11-23".into(),
            count: 3,
        }),
        failed_logins: Some(DayCount {
            day: "2026-11-23".into(),
            count: 1,
        }),
        login: Some(LoginRecord {
            job_name: "alice-login-1".into(),
            started_at: now(),
            reason: RefreshReason::Scheduled,
            refresh_request: None,
        }),
        mint_unconfirmed: Some(now()),
        last_mint_attempt: Some(now() - chrono::Duration::milliseconds(1_500)),
    };
    let a = ready();
    let status = report(Some(&token), &memory, &a, now()).compose(&DhanAccountStatus::default());
    assert_eq!(memory_from(&status, Some(&token), now()), memory);
}

#[test]
fn a_held_failure_keeps_its_time_on_the_next_reconcile() {
    // A held (permanent) failure has no failed attempts to count; its time must survive.
    let memory = Memory {
        last_failure: Some(LastFailure {
            at: now(),
            reason: "InvalidPin".into(),
            message: "Dhan rejected the PIN".into(),
        }),
        held_inputs: Some("fp".into()),
        ..Default::default()
    };
    let failed = Assessment {
        phase: Phase::Failed,
        ready: false,
        reason: "InvalidPin".into(),
        ..ready()
    };
    let first = report(None, &memory, &failed, now()).compose(&DhanAccountStatus::default());
    assert!(first.last_failure_time.is_some());
    let again = memory_from(&first, None, now());
    let second =
        report(None, &again, &failed, now() + chrono::Duration::minutes(1)).compose(&first);
    assert_eq!(first, second, "no second PATCH and no lost failure time");
}

/// Dhan refuses orders from any IP it does not have on record: the account says so as a
/// condition, from the IPs last read, and keeps the transition time while nothing changes.
#[test]
fn the_static_ip_condition_says_whether_dhan_takes_orders() {
    let now = now();
    let none = DhanAccountStatus::default();
    assert!(
        static_ip_condition(&none, None, None, now).is_none(),
        "not read yet"
    );

    let registered = StaticIpStatus {
        primary_ip: Some("203.0.113.7".into()),
        ..Default::default()
    };
    let c = static_ip_condition(&none, Some(&registered), Some(1), now).unwrap();
    assert_eq!(
        (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
        (STATIC_IP_CONDITION, "True", "Registered")
    );
    assert!(c.message.contains("203.0.113.7 (primary)"), "{}", c.message);

    let empty = StaticIpStatus::default();
    let later = now + chrono::Duration::hours(1);
    let old = DhanAccountStatus {
        conditions: vec![c.clone()],
        static_ip: Some(Box::new(registered.clone())),
        ..Default::default()
    };
    let gone = static_ip_condition(&old, Some(&empty), Some(1), later).unwrap();
    assert_eq!(
        (gone.status.as_str(), gone.reason.as_str()),
        ("False", "NoneRegistered")
    );
    assert_eq!(gone.last_transition_time, later);
    // Nothing read this time: as last read, the transition time kept.
    let kept = static_ip_condition(&old, None, Some(1), later).unwrap();
    assert_eq!(kept.status, "True");
    assert_eq!(kept.last_transition_time, now);

    let refused = StaticIpStatus {
        orders_allowed: Some(false),
        ..registered
    };
    let c = static_ip_condition(&none, Some(&refused), None, now).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "OrdersNotAllowed")
    );
}

/// An API key lives 12 months: the account says how long it has left, warns from 30 days
/// before the end of the IST day `spec.apiKeyExpires` names, and says when it has expired.
#[test]
fn the_api_key_condition_warns_a_month_ahead_and_fails_after_the_day() {
    let none = DhanAccountStatus::default();
    let date = chrono::NaiveDate::from_ymd_opt(2027, 6, 30).unwrap();
    assert!(api_key_condition(&none, None, None, now()).is_none());
    // The key works through 30 June IST: until 18:30 UTC that day.
    assert_eq!(
        api_key_end(date),
        "2027-06-30T18:30:00Z".parse::<DateTime<Utc>>().unwrap()
    );
    let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap();
    let c = api_key_condition(&none, Some(date), None, at("2027-05-01T00:00:00Z")).unwrap();
    assert_eq!(
        (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
        (API_KEY_CONDITION, "True", "Valid")
    );
    let c = api_key_condition(&none, Some(date), None, at("2027-06-10T00:00:00Z")).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "ExpiresSoon")
    );
    assert!(
        c.message.contains("2027-06-30, within 30 days"),
        "{}",
        c.message
    );
    // The same message the next day: no status write for a countdown.
    let next = api_key_condition(&none, Some(date), None, at("2027-06-11T00:00:00Z")).unwrap();
    assert_eq!(next.message, c.message);
    let c = api_key_condition(&none, Some(date), None, at("2027-06-30T18:29:59Z")).unwrap();
    assert_eq!(c.reason, "ExpiresSoon");
    let c = api_key_condition(&none, Some(date), None, at("2027-06-30T18:30:00Z")).unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Expired"));
}

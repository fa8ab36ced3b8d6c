//! The functional core driven through simulated days: a fake clock and a fake Dhan that
//! issues 24-hour tokens answer the steps of real [`Round`]s, and only what the operator
//! persists (the output Secret's token and the status [`Memory`]) is carried from one
//! reconcile to the next, plus the probe this process remembers.

use super::calendar::TradingCalendar;
use super::market::in_market_hours;
use super::round::{Held, Inputs, LoginSeen, Outcome, Round, Step, Stored};
use super::schedule::Schedule;
use super::*;
use crate::dhan::AccessToken;
use chrono::{Datelike, Duration as ChronoDuration, TimeZone, Timelike};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

const DAY: ChronoDuration = ChronoDuration::hours(24);
const LIMITS: Limits = Limits {
    min_mint_interval: policy::DEFAULT_MIN_MINT_INTERVAL,
    max_failed_logins: policy::DEFAULT_MAX_FAILED_LOGINS,
    refresh_spread: Duration::ZERO,
    midnight_margin: crate::dhan::ist::MIDNIGHT_MARGIN,
};

/// The calendar shipped with the operator, its default.
fn shipped() -> &'static TradingCalendar {
    static SHIPPED: LazyLock<Arc<TradingCalendar>> = LazyLock::new(TradingCalendar::builtin);
    &SHIPPED
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn policy_with(schedule: &str, validate_every: Option<Duration>) -> Policy {
    Policy {
        client_id: "1000000001".into(),
        methods: vec![Method::Renew, Method::Totp],
        schedule: Schedule::parse(schedule, "Asia/Kolkata").unwrap(),
        renew_before: policy::DEFAULT_RENEW_BEFORE,
        validate_every,
        suspend: false,
        stagger: 0,
    }
}

fn default_policy() -> Policy {
    policy_with("0 8 * * *", Some(policy::DEFAULT_VALIDATE_EVERY))
}

/// How the fake Dhan answers a mint.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum DhanAnswer {
    Token,
    /// The connection never opened: nothing reached Dhan, so its lock was not re-armed.
    Unreachable,
    Throttled,
    ConsentLimit,
}

impl DhanAnswer {
    fn failure(self) -> Option<FailureKind> {
        match self {
            DhanAnswer::Token => None,
            DhanAnswer::Unreachable => Some(FailureKind::Network),
            DhanAnswer::Throttled => Some(FailureKind::MintThrottled),
            DhanAnswer::ConsentLimit => Some(FailureKind::ConsentLimitExceeded),
        }
    }
}

fn totp_usable() -> Usable {
    Usable {
        totp: Ok(()),
        browser: Err("off".into()),
    }
}

/// The reconciler's loop with a fake Dhan: each reconcile is a real [`Round`].
struct Sim {
    now: DateTime<Utc>,
    policy: Policy,
    token: Option<TokenFacts>,
    memory: Memory,
    probe: Option<(DateTime<Utc>, ProbeVerdict)>,
    /// When Dhan revoked the current token early.
    revoked: bool,
    mints: Vec<(DateTime<Utc>, RefreshReason)>,
    attempts: Vec<DateTime<Utc>>,
    dhan: Box<dyn FnMut(DateTime<Utc>) -> DhanAnswer>,
    serial: u64,
    /// Seconds between a requeue time and the reconcile actually running.
    latency: i64,
}

impl Sim {
    fn new(start: DateTime<Utc>, policy: Policy) -> Sim {
        Sim {
            now: start,
            policy,
            token: None,
            memory: Memory::default(),
            probe: None,
            revoked: false,
            mints: vec![],
            attempts: vec![],
            dhan: Box::new(|_| DhanAnswer::Token),
            serial: 0,
            latency: 2,
        }
    }

    fn new_token(&mut self) -> Token {
        self.serial += 1;
        Token {
            value: AccessToken::from(format!("token-{}", self.serial)),
            facts: TokenFacts {
                expires_at: self.now + DAY,
                issued_at: self.now,
                obtained_at: self.now,
                consumer_type: Some("APP".into()),
                hash: format!("h{}", self.serial),
            },
        }
    }

    /// Runs one reconcile and returns when the next one happens.
    fn step(&mut self) -> DateTime<Utc> {
        let inputs = Inputs {
            policy: self.policy.clone(),
            limits: LIMITS,
            calendar: TradingCalendar::builtin(),
            usable: totp_usable(),
            fingerprint: "inputs".into(),
            web_token: None,
            refresh_request: None,
            refused_today: 0,
        };
        let held = self.token.clone().map(|facts| Held {
            token: Token {
                value: AccessToken::from("t".to_string()),
                facts,
            },
            method: Some("totp".into()),
            stored: Stored::Current,
        });
        let mut round = Round::new(
            inputs,
            held,
            self.probe,
            self.memory.clone(),
            LoginSeen::None,
            self.now,
        );
        loop {
            let outcome = match round.next(self.now) {
                Step::Finish => break,
                Step::Try(method) => {
                    assert_eq!(method, Method::Totp, "renew never applies to APP tokens");
                    self.attempts.push(self.now);
                    match (self.dhan)(self.now).failure() {
                        None => Outcome::Issued {
                            method,
                            token: self.new_token(),
                            totp_step: None,
                        },
                        Some(kind) => Outcome::Failed {
                            method,
                            failure: Failure::new(kind, kind.reason()),
                            totp_step: None,
                        },
                    }
                }
                Step::Probe => Outcome::Probed(if self.revoked {
                    ProbeVerdict::Dead
                } else {
                    ProbeVerdict::Alive
                }),
                Step::ReadStaticIp => Outcome::StaticIp(None),
                Step::Consume => panic!("no browser logins here"),
            };
            round.absorb(outcome, self.now);
        }
        if let Some(refreshed) = &round.refreshed {
            self.mints.push((self.now, refreshed.reason));
            self.revoked = false;
        }
        round.stored(Ok(()));
        self.token = round.token_facts().cloned();
        self.probe = round.probe;
        self.memory = round.memory.clone();
        match round.decision.clone() {
            Some(Decision::Wait(wait)) => {
                assert!(wait.until > self.now, "a wait must move time forward");
                wait.until
            }
            other => panic!("unexpected end of a round: {other:?}"),
        }
    }

    /// Runs reconciles until `end`; `on_tick` may change the world before each reconcile.
    fn run_until(&mut self, end: DateTime<Utc>, mut on_tick: impl FnMut(&mut Sim)) {
        let mut guard = 0;
        while self.now < end {
            on_tick(self);
            let next = self.step();
            self.now = next + ChronoDuration::seconds(self.latency);
            guard += 1;
            assert!(guard < 100_000, "simulation does not converge");
        }
    }

    fn mint_times(&self) -> Vec<DateTime<Utc>> {
        self.mints.iter().map(|(t, _)| *t).collect()
    }
}

fn ist_hm(t: DateTime<Utc>) -> (u32, u32) {
    let local = t.with_timezone(&market::ist());
    (local.hour(), local.minute())
}

/// 08:00 IST on the day of `t` (IST), in UTC.
fn eight_ist_on(t: DateTime<Utc>) -> DateTime<Utc> {
    let local = t.with_timezone(&market::ist()).date_naive();
    market::ist()
        .from_local_datetime(&local.and_hms_opt(8, 0, 0).unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn thirty_days_one_mint_a_day_within_a_minute_of_the_schedule() {
    let start = utc("2026-11-01T00:00:00Z");
    let mut sim = Sim::new(start, default_policy());
    sim.run_until(start + DAY * 30, |_| {});
    // Each token lives 24 h: the longest time without a live token is the longest lateness
    // of a mint past its predecessor's expiry.
    let max_expired = sim
        .mint_times()
        .windows(2)
        .map(|w| (w[1] - (w[0] + DAY)).max(ChronoDuration::zero()))
        .max()
        .unwrap();
    let mints = sim.mint_times();
    // The first mint happens at start (no token); then one per day at 08:00 IST.
    assert_eq!(mints[0], start);
    let daily = &mints[1..];
    assert_eq!(daily.len(), 30, "one mint per day: {daily:?}");
    for mint in daily {
        let scheduled = eight_ist_on(*mint);
        let late = *mint - scheduled;
        assert!(
            late >= ChronoDuration::zero() && late <= ChronoDuration::seconds(60),
            "mint at {mint} is not within a minute after {scheduled}"
        );
    }
    assert!(
        max_expired <= ChronoDuration::seconds(60),
        "token was expired for {max_expired}"
    );
    assert!(
        sim.mints
            .iter()
            .all(|(t, reason)| !in_market_hours(shipped(), *t)
                || *reason != RefreshReason::Scheduled),
        "no proactive mint inside market hours"
    );
}

#[test]
fn schedule_holds_with_slow_reconciles() {
    // Ten seconds of requeue latency every time must not push the schedule later each day.
    let start = utc("2026-11-01T00:00:00Z");
    let mut sim = Sim::new(start, default_policy());
    sim.latency = 10;
    sim.run_until(start + DAY * 30, |_| {});
    for mint in &sim.mint_times()[1..] {
        assert!(
            *mint - eight_ist_on(*mint) <= ChronoDuration::seconds(60),
            "{mint}"
        );
    }
}

#[test]
fn no_proactive_mint_inside_market_hours() {
    // A schedule inside market hours only fires on weekends; the safety net keeps the token
    // alive on weekdays without minting during the session.
    let start = utc("2026-11-01T00:00:00Z");
    let mut sim = Sim::new(
        start,
        policy_with("30 10 * * *", Some(policy::DEFAULT_VALIDATE_EVERY)),
    );
    sim.run_until(start + DAY * 30, |_| {});
    for (t, reason) in &sim.mints[1..] {
        assert!(
            !in_market_hours(shipped(), *t),
            "{reason:?} mint at {t} is inside market hours"
        );
    }
    // Never expired: each token was replaced before it lapsed.
    for pair in sim.mint_times().windows(2) {
        assert!(
            pair[1] - pair[0] <= DAY,
            "gap between {} and {}",
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn revoked_token_is_replaced_at_the_first_probe_after_the_throttle_allows() {
    let start = utc("2026-11-23T00:00:00Z"); // Monday
    let mut sim = Sim::new(start, default_policy());
    let revoke_at = utc("2026-11-24T05:30:00Z"); // Tuesday 11:00 IST
    let mut done = false;
    sim.run_until(start + DAY * 3, |sim| {
        if !done && sim.now >= revoke_at {
            sim.revoked = true;
            done = true;
        }
    });
    let replacement = sim
        .mints
        .iter()
        .find(|(t, _)| *t >= revoke_at)
        .expect("the revoked token is replaced");
    assert_eq!(replacement.1, RefreshReason::ProbedDead);
    assert!(
        replacement.0 - revoke_at <= ChronoDuration::minutes(16),
        "replaced at {} (revoked at {revoke_at})",
        replacement.0
    );
    // The next day is back on schedule, exactly one mint.
    let wednesday: Vec<_> = sim
        .mint_times()
        .into_iter()
        .filter(|t| t.with_timezone(&market::ist()).day0() == 24) // 25th IST, 0-based
        .collect();
    assert_eq!(wednesday.len(), 1);
    assert_eq!(ist_hm(wednesday[0]), (8, 0));
}

#[test]
fn dead_token_waits_for_the_mint_throttle() {
    // A token minted at 11:00 and revoked 30 s later is replaced only after 125 s.
    let now = utc("2026-11-24T05:30:00Z");
    let policy = default_policy();
    let memory = Memory {
        last_mint: Some(now - ChronoDuration::seconds(30)),
        ..Default::default()
    };
    let token = TokenFacts {
        expires_at: now + DAY,
        issued_at: now - ChronoDuration::seconds(30),
        obtained_at: now - ChronoDuration::seconds(30),
        consumer_type: Some("APP".into()),
        hash: "h".into(),
    };
    let decision = decide(&Facts {
        now,
        calendar: shipped(),
        policy: &policy,
        limits: &LIMITS,
        token: Some(&token),
        web_token: None,
        probe: Some((now, ProbeVerdict::Dead)),
        memory: &memory,
        inputs_fingerprint: "x",
        refresh_request: None,
    });
    assert_eq!(
        decision,
        Decision::Wait(Wait {
            until: now + ChronoDuration::seconds(95),
            next_refresh: now + ChronoDuration::seconds(95),
            blocked: Some((RefreshReason::ProbedDead, Block::Limits)),
        })
    );
}

#[test]
fn operator_down_from_0700_to_1000_mints_exactly_once_on_return() {
    let start = utc("2026-11-22T00:00:00Z");
    let mut sim = Sim::new(start, default_policy());
    sim.run_until(utc("2026-11-23T01:30:00Z"), |_| {}); // Monday 07:00 IST
    let before = sim.mints.len();
    // Down until 10:00 IST: time jumps, no reconcile runs; the in-memory probe is lost.
    sim.now = utc("2026-11-23T04:30:00Z");
    sim.probe = None;
    sim.run_until(utc("2026-11-24T01:30:00Z"), |_| {}); // Tuesday 07:00 IST
    let after: Vec<_> = sim.mints[before..].to_vec();
    assert_eq!(after.len(), 1, "exactly one mint on return: {after:?}");
    assert_eq!(after[0].0, utc("2026-11-23T04:30:00Z"));
    assert_eq!(after[0].1, RefreshReason::Expired);
    sim.run_until(utc("2026-11-25T00:00:00Z"), |_| {});
    let tuesday = sim.mints[before + 1].0;
    assert_eq!(ist_hm(tuesday), (8, 0), "back on schedule on Tuesday");
}

#[test]
fn transient_failures_back_off_exponentially_from_a_minute() {
    let start = utc("2026-11-22T00:00:00Z");
    let mut sim = Sim::new(start, default_policy());
    let mut failures = 7;
    sim.dhan = Box::new(move |_| {
        if failures > 0 {
            failures -= 1;
            DhanAnswer::Unreachable
        } else {
            DhanAnswer::Token
        }
    });
    sim.latency = 0;
    sim.run_until(utc("2026-11-22T02:00:00Z"), |_| {}); // before 08:00 IST
    let gaps: Vec<i64> = sim
        .attempts
        .windows(2)
        .take(7)
        .map(|w| (w[1] - w[0]).num_seconds())
        .collect();
    assert_eq!(gaps, [60, 120, 240, 480, 960, 1800, 1800]);
    assert_eq!(sim.mints.len(), 1, "recovers once Dhan does");
}

#[test]
fn throttle_replies_wait_at_least_the_mint_interval() {
    let start = utc("2026-11-22T00:00:00Z");
    let mut sim = Sim::new(start, default_policy());
    let mut throttled = 1;
    sim.dhan = Box::new(move |_| {
        if throttled > 0 {
            throttled -= 1;
            DhanAnswer::Throttled
        } else {
            DhanAnswer::Token
        }
    });
    sim.latency = 0;
    sim.run_until(start + ChronoDuration::hours(1), |_| {});
    assert_eq!(sim.attempts.len(), 2);
    assert_eq!((sim.attempts[1] - sim.attempts[0]).num_seconds(), 125);
}

#[test]
fn exhausted_consents_wait_for_the_next_ist_day() {
    // 20:00 IST: the next attempt may only come at 00:00 IST, four hours later.
    let start = utc("2026-11-22T14:30:00Z");
    let mut sim = Sim::new(start, default_policy());
    let mut refused = 1;
    sim.dhan = Box::new(move |_| {
        if refused > 0 {
            refused -= 1;
            DhanAnswer::ConsentLimit
        } else {
            DhanAnswer::Token
        }
    });
    sim.latency = 0;
    sim.run_until(start + ChronoDuration::hours(6), |_| {});
    assert_eq!(sim.attempts.len(), 2, "{:?}", sim.attempts);
    // Ten minutes past midnight IST (`--midnight-margin`).
    assert_eq!(sim.attempts[1], utc("2026-11-22T18:40:00Z"));
}

#[test]
fn never_mints_twice_within_the_throttle_even_after_a_restart() {
    // State comes from status and the Secret only: a fresh process with the same Memory and
    // token, forced to refresh, still waits out the interval.
    let now = utc("2026-11-22T10:00:00Z");
    let policy = default_policy();
    let memory = Memory {
        last_mint: Some(now - ChronoDuration::seconds(60)),
        ..Default::default()
    };
    let decision = decide(&Facts {
        now,
        calendar: shipped(),
        policy: &policy,
        limits: &LIMITS,
        token: None,
        web_token: None,
        probe: None,
        memory: &memory,
        inputs_fingerprint: "x",
        refresh_request: None,
    });
    assert!(
        matches!(decision, Decision::Wait(Wait { blocked: Some((RefreshReason::NoToken, Block::Limits)), until, .. }) if until == now + ChronoDuration::seconds(65))
    );
}

#[test]
fn schedule_in_ist_ignores_other_countries_daylight_saving() {
    // US and EU clocks change on 2026-03-08/29 and 2026-10-25/11-01; IST does not.
    let start = utc("2026-03-01T00:00:00Z");
    let mut sim = Sim::new(start, default_policy());
    sim.run_until(start + DAY * 70, |_| {});
    for mint in &sim.mint_times()[1..] {
        let hm = (mint.hour(), mint.minute());
        assert_eq!(hm, (2, 30), "08:00 IST is always 02:30 UTC: {mint}");
    }
}

#[test]
fn permanent_failure_holds_until_inputs_change_or_a_refresh_is_requested() {
    let now = utc("2026-11-22T10:00:00Z");
    let policy = default_policy();
    let memory = Memory {
        held_inputs: Some("v1".into()),
        refresh_request_handled: Some("a".into()),
        ..Default::default()
    };
    let facts = |fingerprint, request| Facts {
        now,
        calendar: shipped(),
        policy: &policy,
        limits: &LIMITS,
        token: None,
        web_token: None,
        probe: None,
        memory: &memory,
        inputs_fingerprint: fingerprint,
        refresh_request: request,
    };
    assert_eq!(
        decide(&facts("v1", Some("a"))),
        Decision::HoldFailed { until: None }
    );
    assert_eq!(
        decide(&facts("v2", Some("a"))),
        Decision::Refresh(RefreshReason::NoToken)
    );
    assert_eq!(
        decide(&facts("v1", Some("b"))),
        Decision::Refresh(RefreshReason::NoToken)
    );
}

fn live_token(now: DateTime<Utc>, hash: &str, issued_ago_h: i64, kind: &str) -> TokenFacts {
    let issued = now - ChronoDuration::hours(issued_ago_h);
    TokenFacts {
        expires_at: issued + DAY,
        issued_at: issued,
        obtained_at: issued,
        consumer_type: Some(kind.into()),
        hash: hash.into(),
    }
}

#[test]
fn adopts_a_newer_web_token_but_not_an_older_one() {
    let now = utc("2026-11-22T10:00:00Z");
    let policy = default_policy();
    let memory = Memory::default();
    let decide_with = |token: Option<&TokenFacts>, web: Option<&TokenFacts>| {
        decide(&Facts {
            now,
            calendar: shipped(),
            policy: &policy,
            limits: &LIMITS,
            token,
            web_token: web,
            probe: Some((now, ProbeVerdict::Alive)),
            memory: &memory,
            inputs_fingerprint: "x",
            refresh_request: None,
        })
    };
    let web = live_token(now, "web", 1, "SELF");
    assert_eq!(decide_with(None, Some(&web)), Decision::Adopt);
    let renewed = live_token(now, "renewed", 0, "SELF");
    assert!(matches!(
        decide_with(Some(&renewed), Some(&web)),
        Decision::Wait(_)
    ));
    let older = live_token(now, "older", 3, "APP");
    assert_eq!(decide_with(Some(&older), Some(&web)), Decision::Adopt);
    let expired_web = live_token(now, "dead", 25, "SELF");
    assert_eq!(
        decide_with(None, Some(&expired_web)),
        Decision::Refresh(RefreshReason::NoToken)
    );
}

#[test]
fn requested_refresh_happens_once_per_annotation_value() {
    let now = utc("2026-11-22T10:00:00Z");
    let policy = default_policy();
    let token = live_token(now, "t", 2, "APP");
    let handled = Memory {
        last_mint: Some(token.obtained_at),
        refresh_request_handled: Some("1".into()),
        ..Default::default()
    };
    let facts = |request| Facts {
        now,
        calendar: shipped(),
        policy: &policy,
        limits: &LIMITS,
        token: Some(&token),
        web_token: None,
        probe: Some((now, ProbeVerdict::Alive)),
        memory: &handled,
        inputs_fingerprint: "x",
        refresh_request: request,
    };
    assert_eq!(
        decide(&facts(Some("2"))),
        Decision::Refresh(RefreshReason::Requested)
    );
    assert!(matches!(decide(&facts(Some("1"))), Decision::Wait(_)));
}

/// A plain request in the session waits for the close (a new token kills the running Pods'
/// one); a `now-` request (`kubectl dhan refresh --now`) does not; neither beats Dhan's limit.
#[test]
fn a_now_request_refreshes_during_market_hours_and_a_plain_one_waits_for_the_close() {
    // Monday 2026-11-23 11:00 IST: in session.
    let now = utc("2026-11-23T05:30:00Z");
    let policy = default_policy();
    let token = live_token(now, "t", 2, "APP");
    let handled = Memory {
        last_mint: Some(token.obtained_at),
        refresh_request_handled: Some("1".into()),
        ..Default::default()
    };
    let facts = |request, memory| Facts {
        now,
        calendar: shipped(),
        policy: &policy,
        limits: &LIMITS,
        token: Some(&token),
        web_token: None,
        probe: Some((now, ProbeVerdict::Alive)),
        memory,
        inputs_fingerprint: "x",
        refresh_request: request,
    };
    assert!(matches!(
        decide(&facts(Some("2"), &handled)),
        Decision::Wait(Wait {
            blocked: Some((RefreshReason::Requested, Block::MarketHours)),
            ..
        })
    ));
    assert_eq!(
        decide(&facts(Some("now-2"), &handled)),
        Decision::Refresh(RefreshReason::Requested)
    );
    // Answered: not again.
    let answered = Memory {
        refresh_request_handled: Some("now-2".into()),
        ..handled.clone()
    };
    assert!(matches!(
        decide(&facts(Some("now-2"), &answered)),
        Decision::Wait(_)
    ));
    // A mint a minute ago: Dhan's limit holds the `now-` request too.
    let recent = Memory {
        last_mint_attempt: Some(now - chrono::Duration::seconds(60)),
        ..handled.clone()
    };
    assert!(matches!(
        decide(&facts(Some("now-3"), &recent)),
        Decision::Wait(Wait {
            blocked: Some((RefreshReason::Requested, Block::Limits)),
            ..
        })
    ));
}

#[test]
fn unknown_probe_verdict_never_mints() {
    let now = utc("2026-11-22T10:00:00Z");
    let policy = default_policy();
    let token = live_token(now, "t", 2, "APP");
    let memory = Memory::default();
    let decision = decide(&Facts {
        now,
        calendar: shipped(),
        policy: &policy,
        limits: &LIMITS,
        token: Some(&token),
        web_token: None,
        probe: Some((now, ProbeVerdict::Unknown)),
        memory: &memory,
        inputs_fingerprint: "x",
        refresh_request: None,
    });
    assert!(matches!(
        decision,
        Decision::Wait(Wait { blocked: None, .. })
    ));
}

#[test]
fn probes_at_the_accounts_slots_validate_every_apart_and_not_when_disabled() {
    let now = utc("2026-11-22T10:00:00Z"); // on the 15-minute grid
    let token = live_token(now, "t", 2, "APP");
    let memory = Memory::default();
    let run = |policy: &Policy, probe| {
        decide(&Facts {
            now,
            calendar: shipped(),
            policy,
            limits: &LIMITS,
            token: Some(&token),
            web_token: None,
            probe,
            memory: &memory,
            inputs_fingerprint: "x",
            refresh_request: None,
        })
    };
    let waits_until = |decision: Decision| match decision {
        Decision::Wait(w) => Some(w.until),
        _ => None,
    };
    let every_15m = default_policy();
    assert_eq!(run(&every_15m, None), Decision::Probe, "its slot is now");
    let probed = Some((now, ProbeVerdict::Alive));
    assert_eq!(
        waits_until(run(&every_15m, probed)),
        Some(now + ChronoDuration::minutes(15))
    );
    // Another account's slots lie elsewhere in the period: a quarter of the way in, for this
    // one.
    let staggered = Policy {
        stagger: 1 << 30,
        ..default_policy()
    };
    let quarter = now + ChronoDuration::seconds(225);
    let off_grid = Some((now - ChronoDuration::minutes(1), ProbeVerdict::Alive));
    assert_eq!(waits_until(run(&staggered, off_grid)), Some(quarter));
    let late = Some((quarter + ChronoDuration::seconds(2), ProbeVerdict::Alive));
    assert_eq!(
        waits_until(run(&staggered, late)),
        Some(quarter + ChronoDuration::minutes(15)),
        "a probe that ran late keeps its slots"
    );
    let disabled = policy_with("0 8 * * *", None);
    assert!(matches!(run(&disabled, None), Decision::Wait(_)));
}

#[test]
fn a_spread_starts_each_accounts_scheduled_refresh_at_its_own_time_before_the_schedule() {
    let limits = Limits {
        refresh_spread: Duration::from_secs(600),
        midnight_margin: crate::dhan::ist::MIDNIGHT_MARGIN,
        ..LIMITS
    };
    let minted = utc("2026-11-22T00:00:00Z"); // Sunday 05:30 IST
    let token = live_token(minted, "t", 2, "APP");
    let memory = Memory::default();
    let due = |stagger: u32| {
        let policy = Policy {
            stagger,
            validate_every: None,
            ..default_policy()
        };
        let decision = decide(&Facts {
            now: minted + ChronoDuration::minutes(1),
            calendar: shipped(),
            policy: &policy,
            limits: &limits,
            token: Some(&token),
            web_token: None,
            probe: None,
            memory: &memory,
            inputs_fingerprint: "x",
            refresh_request: None,
        });
        match decision {
            Decision::Wait(w) => w.next_refresh,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(due(0), utc("2026-11-22T02:30:00Z"), "08:00 IST");
    assert_eq!(
        due(1 << 31),
        utc("2026-11-22T02:25:00Z"),
        "halfway: 07:55 IST"
    );
    assert_eq!(due(u32::MAX), utc("2026-11-22T02:20:01Z"), "to the second");
}

#[test]
fn suspended_accounts_do_nothing() {
    let now = utc("2026-11-22T10:00:00Z");
    let mut policy = default_policy();
    policy.suspend = true;
    let memory = Memory::default();
    let decision = decide(&Facts {
        now,
        calendar: shipped(),
        policy: &policy,
        limits: &LIMITS,
        token: None,
        web_token: None,
        probe: None,
        memory: &memory,
        inputs_fingerprint: "x",
        refresh_request: None,
    });
    assert_eq!(decision, Decision::Suspended);
}

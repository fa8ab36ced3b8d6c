//! Planning proactive refreshes: daily schedules, market hours, the safety net and
//! `tradingDaysOnly`.

use super::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn daily_0800_ist() -> Schedule {
    Schedule::parse("0 8 * * *", "Asia/Kolkata").unwrap()
}

const TEN_MINUTES: Duration = Duration::from_secs(600);
const DAY: chrono::Duration = chrono::Duration::hours(24);

#[test]
fn daily_schedule_fires_at_0800_ist_the_next_day() {
    // Minted Monday 08:00:03 IST, expires Tuesday 08:00:03 IST.
    let minted = utc("2026-11-23T02:30:03Z");
    let (at, trigger) = next_proactive_refresh(
        &TradingCalendar::builtin(),
        &daily_0800_ist(),
        Duration::ZERO,
        TEN_MINUTES,
        minted,
        minted + DAY,
    );
    assert_eq!(at, utc("2026-11-24T02:30:00Z"));
    assert_eq!(trigger, ProactiveTrigger::Scheduled);
}

#[test]
fn sparse_schedule_uses_safety_net_before_expiry() {
    // Mondays only: Tuesday's expiry comes before the next Monday.
    let mondays = Schedule::parse("0 8 * * 1", "Asia/Kolkata").unwrap();
    let minted = utc("2026-11-23T02:30:03Z");
    let (at, trigger) = next_proactive_refresh(
        &TradingCalendar::builtin(),
        &mondays,
        Duration::ZERO,
        TEN_MINUTES,
        minted,
        minted + DAY,
    );
    assert_eq!(at, minted + DAY - chrono::Duration::minutes(10));
    assert_eq!(trigger, ProactiveTrigger::SafetyNet);
}

#[test]
fn scheduled_times_inside_market_hours_are_skipped() {
    // 11:00 IST daily is inside market hours on weekdays: only Saturday and Sunday remain.
    let schedule = Schedule::parse("0 11 * * *", "Asia/Kolkata").unwrap();
    let friday_noon = utc("2026-11-27T06:30:00Z");
    assert_eq!(
        schedule.next_slot_after(&TradingCalendar::builtin(), friday_noon),
        Some(utc("2026-11-28T05:30:00Z"))
    );
}

#[test]
fn safety_net_inside_market_hours_moves_before_open() {
    // A token re-minted at 11:00 IST on Sunday (dead token) expires Monday 11:00 IST; a
    // weekly Saturday schedule cannot cover it, and 10:50 IST Monday is market time.
    let schedule = Schedule::parse("0 8 * * 6", "Asia/Kolkata").unwrap();
    let minted = utc("2026-11-22T05:30:00Z");
    let (at, trigger) = next_proactive_refresh(
        &TradingCalendar::builtin(),
        &schedule,
        Duration::ZERO,
        TEN_MINUTES,
        minted,
        minted + DAY,
    );
    assert_eq!(at, utc("2026-11-23T03:15:00Z")); // Monday 08:45 IST
    assert_eq!(trigger, ProactiveTrigger::SafetyNet);
}

#[test]
fn safety_net_stays_near_expiry_for_a_token_younger_than_before_open() {
    // Minted Monday 08:50 IST (a dead token replaced), expiring Tuesday 08:50 IST: its
    // safety net is not in market hours, and pulling it back would be pointless anyway.
    let schedule = Schedule::parse("0 8 * * 6", "Asia/Kolkata").unwrap();
    let minted = utc("2026-11-23T03:20:00Z");
    let (at, _) = next_proactive_refresh(
        &TradingCalendar::builtin(),
        &schedule,
        Duration::ZERO,
        TEN_MINUTES,
        minted,
        minted + DAY,
    );
    assert_eq!(at, minted + DAY - chrono::Duration::minutes(10));
}

#[test]
fn rejects_bad_expressions_and_zones() {
    assert!(matches!(
        Schedule::parse("every morning", "Asia/Kolkata"),
        Err(ScheduleError::Expression(_))
    ));
    assert!(matches!(
        Schedule::parse("0 0 8 * * *", "Asia/Kolkata"),
        Err(ScheduleError::Expression(_))
    ));
    assert!(matches!(
        Schedule::parse("0 8 * * *", "Asia/Mumbai"),
        Err(ScheduleError::TimeZone(_))
    ));
}

#[test]
fn time_zone_is_honoured() {
    let schedule = Schedule::parse("0 8 * * *", "UTC").unwrap();
    assert_eq!(
        schedule.next_after(utc("2026-11-23T07:00:00Z")),
        Some(utc("2026-11-23T08:00:00Z"))
    );
}

/// Diwali 2026: Muhurat on Sunday 8 Nov, Balipratipada on Tuesday 10 Nov.
fn diwali_2026() -> TradingCalendar {
    TradingCalendar::parse(
        "holidays: [{date: 2026-11-10, name: Diwali-Balipratipada}]\n\
         specialSessions: [{date: 2026-11-08, open: '17:45', close: '19:30', name: Muhurat}]",
    )
    .unwrap()
}

fn trading_days_only() -> Schedule {
    daily_0800_ist().with_trading_days_only(true)
}

#[test]
fn trading_days_only_skips_weekends_and_holidays() {
    let calendar = diwali_2026();
    let cases = [
        // (token minted, expected next refresh, why)
        (
            "2026-11-20T02:30:03Z",
            "2026-11-23T02:30:00Z",
            "Friday: next Monday",
        ),
        (
            "2026-11-09T02:30:03Z",
            "2026-11-11T02:30:00Z",
            "Monday: Tuesday is a holiday",
        ),
        (
            "2026-11-06T02:30:03Z",
            "2026-11-08T02:30:00Z",
            "Friday: Sunday has Muhurat",
        ),
    ];
    for (minted, expected, why) in cases {
        let minted = utc(minted);
        let (at, trigger) = next_proactive_refresh(
            &calendar,
            &trading_days_only(),
            Duration::ZERO,
            TEN_MINUTES,
            minted,
            minted + DAY,
        );
        assert_eq!(
            (at, trigger),
            (utc(expected), ProactiveTrigger::Scheduled),
            "{why}"
        );
    }
}

#[test]
fn every_day_schedules_still_refresh_on_weekends() {
    let minted = utc("2026-11-20T02:30:03Z"); // Friday
    let (at, _) = next_proactive_refresh(
        &diwali_2026(),
        &daily_0800_ist(),
        Duration::ZERO,
        TEN_MINUTES,
        minted,
        minted + DAY,
    );
    assert_eq!(at, utc("2026-11-21T02:30:00Z"), "Saturday 08:00 IST");
}

#[test]
fn trading_days_only_keeps_the_safety_net_for_a_session_the_token_would_miss() {
    // Minted Sunday 11:00 IST (a dead token replaced): it expires Monday 11:00 IST, in the
    // middle of Monday's session, so it is refreshed before Monday's open.
    let schedule = Schedule::parse("0 8 * * 6", "Asia/Kolkata")
        .unwrap()
        .with_trading_days_only(true);
    let minted = utc("2026-11-22T05:30:00Z");
    let (at, trigger) = next_proactive_refresh(
        &diwali_2026(),
        &schedule,
        Duration::ZERO,
        TEN_MINUTES,
        minted,
        minted + DAY,
    );
    assert_eq!(trigger, ProactiveTrigger::SafetyNet);
    assert_eq!(at, utc("2026-11-23T03:15:00Z"), "Monday 08:45 IST");
}

#[test]
fn a_lapsed_token_waits_for_the_next_trading_day_only_when_asked() {
    let calendar = diwali_2026();
    let saturday_0800 = utc("2026-11-21T02:30:03Z");
    assert_eq!(
        trading_days_only().lapse_until(&calendar, saturday_0800),
        Some(utc("2026-11-23T02:30:00Z")),
        "Saturday: wait for Monday 08:00 IST"
    );
    assert_eq!(daily_0800_ist().lapse_until(&calendar, saturday_0800), None);
    // Monday 08:00: the session is due before the next scheduled time.
    assert_eq!(
        trading_days_only().lapse_until(&calendar, utc("2026-11-23T02:30:00Z")),
        None
    );
    // Friday noon, during a session: mint now.
    assert_eq!(
        trading_days_only().lapse_until(&calendar, utc("2026-11-20T06:30:00Z")),
        None
    );
}

/// November 2026 through the whole decision logic with the shipped calendar: Diwali's
/// Sunday Muhurat session, the Balipratipada and Guru Nanak holidays, four weekends.
#[test]
fn trading_days_only_mints_once_per_trading_day_and_covers_every_session() {
    use crate::decision::market::next_session;
    use crate::decision::method::Method;
    use crate::decision::policy::{self, Policy};
    use crate::decision::{Decision, Facts, Limits, Memory, ProbeVerdict, TokenFacts, decide};

    let calendar = TradingCalendar::builtin();
    let policy = Policy {
        client_id: "1000000001".into(),
        methods: vec![Method::Totp],
        schedule: trading_days_only(),
        renew_before: policy::DEFAULT_RENEW_BEFORE,
        validate_every: Some(policy::DEFAULT_VALIDATE_EVERY),
        suspend: false,
        stagger: 0,
    };
    let limits = Limits::default();
    let (start, end) = (utc("2026-11-02T02:00:00Z"), utc("2026-12-01T00:00:00Z"));
    let mut now = start;
    let mut token: Option<TokenFacts> = None;
    let mut memory = Memory::default();
    let mut probe = None;
    let mut mints = Vec::new();
    while now < end {
        let facts = Facts {
            now,
            calendar: &calendar,
            policy: &policy,
            limits: &limits,
            token: token.as_ref(),
            web_token: None,
            probe,
            memory: &memory,
            inputs_fingerprint: "inputs",
            refresh_request: None,
        };
        match decide(&facts) {
            Decision::Refresh(_) => {
                mints.push(now);
                token = Some(TokenFacts {
                    expires_at: now + DAY,
                    issued_at: now,
                    obtained_at: now,
                    consumer_type: Some("APP".into()),
                    hash: mints.len().to_string(),
                });
                memory.last_mint = Some(now);
                probe = Some((now, ProbeVerdict::Alive));
            }
            Decision::Probe => probe = Some((now, ProbeVerdict::Alive)),
            Decision::Wait(wait) => now = wait.until.max(now + chrono::Duration::seconds(1)),
            other => panic!("unexpected {other:?} at {now}"),
        }
    }
    for mint in &mints[1..] {
        assert!(
            calendar.is_trading_day(ist_date(*mint)),
            "minted on a non-trading day: {mint}"
        );
    }
    assert!(
        mints.contains(&utc("2026-11-08T02:30:00Z")),
        "Muhurat Sunday 08:00 IST"
    );
    assert!(
        !mints
            .iter()
            .any(|m| ist_date(*m) == ist_date(utc("2026-11-10T06:00:00Z")))
    );
    // Every session of the month runs on a token minted before it that outlives it.
    let mut t = start;
    while let Some((open, close)) = next_session(&calendar, t).filter(|(o, _)| *o < end) {
        assert!(
            mints.iter().any(|m| *m <= open && *m + DAY >= close),
            "session {open}..{close} without a token"
        );
        t = close;
    }
    // November 2026: 21 weekdays less 2 holidays, plus the Muhurat Sunday = 20 trading days,
    // one scheduled mint each, plus the first token at the start (07:30 IST, Monday 2nd).
    assert_eq!(mints.len(), 20 + 1, "{mints:?}");
}

#[test]
fn a_lead_moves_the_refresh_earlier_and_keeps_it_daily() {
    let lead = Duration::from_secs(7 * 60);
    let mut minted = utc("2026-11-22T00:00:00Z"); // Sunday 05:30 IST
    for _ in 0..5 {
        let (at, trigger) = next_proactive_refresh(
            &TradingCalendar::builtin(),
            &daily_0800_ist(),
            lead,
            TEN_MINUTES,
            minted,
            minted + DAY,
        );
        assert_eq!(trigger, ProactiveTrigger::Scheduled);
        assert_eq!(
            at.format("%H:%M").to_string(),
            "02:23",
            "07:53 IST every day"
        );
        assert!(at > minted && at < minted + DAY);
        // The next token comes a few seconds later, and is planned for the next day.
        minted = at + chrono::Duration::seconds(4);
    }
}

#[test]
fn a_lead_never_moves_a_refresh_into_the_session() {
    let just_after_close = Schedule::parse("35 15 * * 1-5", "Asia/Kolkata").unwrap();
    let minted = utc("2026-11-23T00:00:00Z"); // Monday 05:30 IST
    let (at, _) = next_proactive_refresh(
        &TradingCalendar::builtin(),
        &just_after_close,
        Duration::from_secs(600),
        TEN_MINUTES,
        minted,
        minted + DAY,
    );
    assert_eq!(at, utc("2026-11-23T10:05:00Z"), "15:35 IST, not 15:25");
}

#[test]
fn slots_are_every_apart_from_the_offset_and_strictly_later() {
    let every = Duration::from_secs(900);
    let offset = Duration::from_secs(100);
    let t = utc("2026-11-22T10:00:00Z");
    assert_eq!(
        next_grid_slot_after(t, every, offset),
        utc("2026-11-22T10:01:40Z")
    );
    let slot = utc("2026-11-22T10:01:40Z");
    assert_eq!(
        next_grid_slot_after(slot, every, offset),
        utc("2026-11-22T10:16:40Z")
    );
    assert_eq!(
        next_grid_slot_after(slot + chrono::Duration::milliseconds(30), every, offset),
        utc("2026-11-22T10:16:40Z"),
        "a probe that ran late keeps the grid"
    );
}

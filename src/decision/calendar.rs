//! The exchange's trading calendar as data: which IST dates have a session and when. NSE closes
//! on holidays that fall on weekdays and now and then trades outside 09:00–15:30 (the Diwali
//! Muhurat session, a budget-day Saturday), so weekdays alone are not enough (docs/dhan-api.md §8).
//!
//! The calendar ships in the chart (`charts/dhan-operator/files/trading-calendar.yaml`, compiled
//! in as the default) and can be replaced at run time without a release. Which calendar is in
//! force is the operator's, not the process's (`crate::calendar_file::CalendarInForce`): the
//! decision core is handed the calendar it decides by.

use chrono::{Datelike, NaiveDate, NaiveTime, Weekday};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

/// The calendar shipped with this release.
pub const BUILTIN_CALENDAR: &str =
    include_str!("../../charts/dhan-operator/files/trading-calendar.yaml");

/// A window, IST, inside which no proactive refresh may mint: from pre-open to close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    pub open: NaiveTime,
    pub close: NaiveTime,
}

/// Trading days and sessions of one exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TradingCalendar {
    valid_through: Option<NaiveDate>,
    regular: Session,
    holidays: BTreeMap<NaiveDate, String>,
    special: BTreeMap<NaiveDate, Vec<Session>>,
}

/// A calendar file that cannot be used, naming the entry at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("not a trading calendar: {0}")]
    Format(String),
    #[error("{entry}: {problem}")]
    Entry { entry: String, problem: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCalendar {
    #[serde(default)]
    valid_through: Option<NaiveDate>,
    #[serde(default)]
    regular_session: Option<RawWindow>,
    #[serde(default)]
    holidays: Vec<RawHoliday>,
    #[serde(default)]
    special_sessions: Vec<RawSpecial>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    open: String,
    close: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHoliday {
    date: NaiveDate,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpecial {
    date: NaiveDate,
    open: String,
    close: String,
    #[serde(default)]
    name: String,
}

fn parse_time(entry: &str, text: &str) -> Result<NaiveTime, CalendarError> {
    NaiveTime::parse_from_str(text.trim(), "%H:%M").map_err(|_| CalendarError::Entry {
        entry: entry.to_string(),
        problem: format!("{text:?} is not a time like \"09:00\""),
    })
}

fn window(entry: &str, open: &str, close: &str) -> Result<Session, CalendarError> {
    let session = Session {
        open: parse_time(entry, open)?,
        close: parse_time(entry, close)?,
    };
    if session.close <= session.open {
        return Err(CalendarError::Entry {
            entry: entry.to_string(),
            problem: format!("closes ({close}) before it opens ({open})"),
        });
    }
    Ok(session)
}

impl TradingCalendar {
    /// Reads the YAML format of `trading-calendar.yaml`.
    pub fn parse(text: &str) -> Result<TradingCalendar, CalendarError> {
        let raw: RawCalendar =
            serde_yaml::from_str(text).map_err(|e| CalendarError::Format(e.to_string()))?;
        let regular = match raw.regular_session {
            Some(w) => window("regularSession", &w.open, &w.close)?,
            None => window("regularSession", "09:00", "15:30")?,
        };
        let holidays = raw.holidays.into_iter().map(|h| (h.date, h.name)).collect();
        let mut special: BTreeMap<NaiveDate, Vec<Session>> = BTreeMap::new();
        for s in raw.special_sessions {
            let entry = format!("specialSessions[{}] {}", s.date, s.name);
            special
                .entry(s.date)
                .or_default()
                .push(window(&entry, &s.open, &s.close)?);
        }
        Ok(TradingCalendar {
            valid_through: raw.valid_through,
            regular,
            holidays,
            special,
        })
    }

    /// The calendar shipped with this release.
    pub fn builtin() -> Arc<TradingCalendar> {
        static BUILTIN: LazyLock<Arc<TradingCalendar>> = LazyLock::new(|| {
            Arc::new(
                TradingCalendar::parse(BUILTIN_CALENDAR).expect("the shipped calendar is valid"),
            )
        });
        BUILTIN.clone()
    }

    /// The sessions on an IST date: the regular one on a weekday that is no holiday, plus any
    /// special session.
    pub fn sessions_on(&self, date: NaiveDate) -> Vec<Session> {
        let weekend = matches!(date.weekday(), Weekday::Sat | Weekday::Sun);
        let regular = (!weekend && !self.holidays.contains_key(&date)).then_some(self.regular);
        regular
            .into_iter()
            .chain(self.special.get(&date).into_iter().flatten().copied())
            .collect()
    }

    /// Whether the exchange trades at all on this IST date.
    pub fn is_trading_day(&self, date: NaiveDate) -> bool {
        !self.sessions_on(date).is_empty()
    }

    /// The holiday's name, when `date` is a listed holiday.
    pub fn holiday(&self, date: NaiveDate) -> Option<&str> {
        self.holidays.get(&date).map(String::as_str)
    }

    /// The last date the list is complete for.
    pub fn valid_through(&self) -> Option<NaiveDate> {
        self.valid_through
    }

    /// The regular session's window.
    pub fn regular_session(&self) -> Session {
        self.regular
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn hm(s: &str) -> NaiveTime {
        NaiveTime::parse_from_str(s, "%H:%M").unwrap()
    }

    #[test]
    fn shipped_calendar_knows_2026_holidays_and_the_muhurat_session() {
        let calendar = TradingCalendar::builtin();
        assert_eq!(
            calendar.holiday(date("2026-11-10")),
            Some("Diwali-Balipratipada")
        );
        assert!(!calendar.is_trading_day(date("2026-11-10")));
        // Sunday 8 Nov 2026: Diwali Laxmi Pujan, trading only in the Muhurat session.
        let muhurat = calendar.sessions_on(date("2026-11-08"));
        assert_eq!(muhurat.len(), 1);
        assert!(muhurat[0].open >= hm("12:00"), "an evening-side session");
        assert!(
            calendar.is_trading_day(date("2026-11-09")),
            "an ordinary Monday"
        );
        assert!(calendar.valid_through() >= Some(date("2026-12-31")));
    }

    #[test]
    fn trading_days_are_weekdays_less_holidays_plus_special_sessions() {
        let calendar = TradingCalendar::parse(
            "holidays: [{date: 2026-11-10, name: Diwali-Balipratipada}]\n\
             specialSessions: [{date: 2026-11-08, open: '17:45', close: '19:30', name: Muhurat}]",
        )
        .unwrap();
        let regular = Session {
            open: hm("09:00"),
            close: hm("15:30"),
        };
        let cases = [
            ("2026-11-09", vec![regular]), // Monday
            ("2026-11-10", vec![]),        // Tuesday, a holiday
            ("2026-11-07", vec![]),        // Saturday
            (
                "2026-11-08",
                vec![Session {
                    open: hm("17:45"),
                    close: hm("19:30"),
                }],
            ), // Sunday with the Muhurat session
        ];
        for (day, sessions) in cases {
            assert_eq!(calendar.sessions_on(date(day)), sessions, "{day}");
        }
    }

    #[test]
    fn bad_entries_are_named() {
        let cases = [
            ("holidays: [{date: 2026-13-01}]", "not a trading calendar"),
            (
                "regularSession: {open: '9 am', close: '15:30'}",
                "regularSession",
            ),
            (
                "specialSessions: [{date: 2026-11-08, open: '19:30', close: '17:45', name: M}]",
                "specialSessions[2026-11-08] M: closes (17:45) before it opens (19:30)",
            ),
            ("holidayz: []", "unknown field"),
        ];
        for (text, expected) in cases {
            let error = TradingCalendar::parse(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}

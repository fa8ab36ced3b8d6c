//! The trading calendar an operator decides by: the file given with `--trading-calendar` (else
//! the shipped one), read at start, then re-read every 30 s so an edited ConfigMap takes effect
//! without a restart (the kubelet swaps mounted files in place).

use crate::clock::Clock;
use crate::decision::calendar::TradingCalendar;
use crate::decision::market::ist_date;
use crate::metrics::Metrics;
use anyhow::Context as _;
use arc_swap::ArcSwap;
use chrono::Days;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

const RECHECK_EVERY: Duration = Duration::from_secs(30);
/// Warn this long before the calendar runs out, so there is time to add NSE's next list.
const WARN_BEFORE_END: Days = Days::new(30);

/// The calendar in force for one operator: replaced when its file changes, and read as a
/// snapshot by each reconcile and notifier pass. It belongs to the operator, not the process,
/// so several operators in one process (a simulation) can keep different calendars.
#[derive(Clone, Debug)]
pub struct CalendarInForce(Arc<ArcSwap<TradingCalendar>>);

impl CalendarInForce {
    pub fn new(calendar: Arc<TradingCalendar>) -> CalendarInForce {
        CalendarInForce(Arc::new(ArcSwap::new(calendar)))
    }

    /// The calendar in force now. A decision keeps the snapshot it took, even if the file
    /// changes while it runs.
    pub fn snapshot(&self) -> Arc<TradingCalendar> {
        self.0.load_full()
    }

    fn replace(&self, calendar: Arc<TradingCalendar>) {
        self.0.store(calendar);
    }
}

impl Default for CalendarInForce {
    /// The shipped calendar.
    fn default() -> Self {
        CalendarInForce::new(TradingCalendar::builtin())
    }
}

/// Reads and parses a calendar file.
pub fn load(path: &Path) -> anyhow::Result<(String, TradingCalendar)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the trading calendar {}", path.display()))?;
    let calendar = TradingCalendar::parse(&text)
        .with_context(|| format!("trading calendar {}", path.display()))?;
    Ok((text, calendar))
}

/// Reports how long `calendar` lasts, as of `clock`'s today.
fn report(calendar: &TradingCalendar, metrics: &Metrics, clock: &dyn Clock) {
    let valid_through = calendar.valid_through();
    metrics.set_calendar_valid_through(valid_through);
    match valid_through {
        Some(end) if end < ist_date(clock.now()) + WARN_BEFORE_END => warn!(
            valid_through = %end,
            "the trading calendar ends soon: add the exchange's next holiday list \
             (after that date every weekday counts as a trading day)"
        ),
        _ => {}
    }
}

/// The calendar at `path`, or the shipped one when there is none, put in force; with the
/// file's text, for [`watch`] to compare against.
pub fn initial(
    path: Option<&Path>,
    metrics: &Metrics,
    clock: &dyn Clock,
) -> anyhow::Result<(CalendarInForce, Option<String>)> {
    let (calendar, text) = match path {
        None => (TradingCalendar::builtin(), None),
        Some(path) => {
            let (text, calendar) = load(path)?;
            info!(path = %path.display(), "trading calendar loaded");
            (Arc::new(calendar), Some(text))
        }
    };
    report(&calendar, metrics, clock);
    Ok((CalendarInForce::new(calendar), text))
}

/// Re-reads `path` every 30 s; a changed, valid file replaces the calendar in force, an
/// invalid one is reported and ignored (the last good calendar stays).
pub async fn watch(
    path: PathBuf,
    mut last: String,
    in_force: CalendarInForce,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
) {
    loop {
        tokio::time::sleep(RECHECK_EVERY).await;
        match load(&path) {
            Ok((text, _)) if text == last => {}
            Ok((text, calendar)) => {
                info!(path = %path.display(), "trading calendar changed; using the new one");
                report(&calendar, &metrics, clock.as_ref());
                in_force.replace(Arc::new(calendar));
                last = text;
            }
            Err(e) => error!(
                error = format!("{e:#}"),
                "keeping the previous trading calendar"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TokioClock;
    use chrono::NaiveDate;

    #[tokio::test(start_paused = true)]
    async fn an_edited_file_replaces_the_calendar_in_force_and_a_broken_one_does_not() {
        let monday = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calendar.yaml");
        std::fs::write(&path, "holidays: [{date: 2026-11-23, name: Closed}]\n").unwrap();
        let metrics = Arc::new(Metrics::default());
        let clock = Arc::new(TokioClock::starting_at(
            "2026-11-22T00:00:00Z".parse().unwrap(),
        ));
        let (in_force, text) = initial(Some(&path), &metrics, clock.as_ref()).unwrap();
        tokio::spawn(watch(
            path.clone(),
            text.unwrap(),
            in_force.clone(),
            metrics,
            clock,
        ));
        let before = in_force.snapshot();
        assert!(!before.is_trading_day(monday));

        std::fs::write(&path, "holidays: []\n").unwrap();
        tokio::time::sleep(RECHECK_EVERY + Duration::from_secs(1)).await;
        assert!(in_force.snapshot().is_trading_day(monday));
        assert!(
            !before.is_trading_day(monday),
            "a snapshot taken earlier keeps its calendar"
        );

        std::fs::write(&path, "holidays: [{date: not-a-date}]\n").unwrap();
        tokio::time::sleep(RECHECK_EVERY).await;
        assert!(
            in_force.snapshot().is_trading_day(monday),
            "the last good one stays"
        );
    }
}

//! The trading calendar file (`--trading-calendar`): read at start, then re-read every 30 s so
//! an edited ConfigMap takes effect without a restart (the kubelet swaps mounted files in place).

use crate::decision::calendar::{self, TradingCalendar};
use crate::decision::market::ist_date;
use crate::metrics::Metrics;
use anyhow::Context as _;
use chrono::{Days, Utc};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

const RECHECK_EVERY: Duration = Duration::from_secs(30);
/// Warn this long before the calendar runs out, so there is time to add NSE's next list.
const WARN_BEFORE_END: Days = Days::new(30);

/// Reads and parses a calendar file.
pub fn load(path: &Path) -> anyhow::Result<(String, TradingCalendar)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the trading calendar {}", path.display()))?;
    let calendar = TradingCalendar::parse(&text)
        .with_context(|| format!("trading calendar {}", path.display()))?;
    Ok((text, calendar))
}

/// Puts `calendar` in force and reports how long it lasts.
pub fn install(calendar: TradingCalendar, metrics: &Metrics) {
    let valid_through = calendar.valid_through();
    metrics.set_calendar_valid_through(valid_through);
    match valid_through {
        Some(end) if end < ist_date(Utc::now()) + WARN_BEFORE_END => warn!(
            valid_through = %end,
            "the trading calendar ends soon: add the exchange's next holiday list \
             (after that date every weekday counts as a trading day)"
        ),
        _ => {}
    }
    calendar::install(Arc::new(calendar));
}

/// Installs the calendar at `path`, or the shipped one when there is none.
pub fn install_initial(path: Option<&Path>, metrics: &Metrics) -> anyhow::Result<Option<String>> {
    match path {
        None => {
            install((*TradingCalendar::builtin()).clone(), metrics);
            Ok(None)
        }
        Some(path) => {
            let (text, calendar) = load(path)?;
            info!(path = %path.display(), "trading calendar loaded");
            install(calendar, metrics);
            Ok(Some(text))
        }
    }
}

/// Re-reads `path` every 30 s; a changed, valid file replaces the calendar in force, an
/// invalid one is reported and ignored (the last good calendar stays).
pub async fn watch(path: PathBuf, mut last: String, metrics: Arc<Metrics>) {
    loop {
        tokio::time::sleep(RECHECK_EVERY).await;
        match load(&path) {
            Ok((text, _)) if text == last => {}
            Ok((text, calendar)) => {
                info!(path = %path.display(), "trading calendar changed; using the new one");
                install(calendar, &metrics);
                last = text;
            }
            Err(e) => error!(
                error = format!("{e:#}"),
                "keeping the previous trading calendar"
            ),
        }
    }
}

//! Prometheus metrics. Per-account series are read from the controller's cache at scrape time,
//! so they disappear with the account.

use crate::clock::Clock;
use crate::crd::{DhanAccount, Phase};
use crate::decision::calendar::TradingCalendar;
use chrono::{DateTime, Utc};
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::{Arc, OnceLock};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub endpoint: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// `telegram` or `webhook`.
    pub channel: String,
    /// `Sent` or `Failed`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    pub watch: String,
}

/// How per-account series carry the client ID: whoever can scrape `/metrics` sees every
/// account's labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientIdLabel {
    /// The client ID itself.
    #[default]
    Plain,
    /// A short hash of it (the one naming its claim Lease): tells accounts apart, hides the
    /// ID from a casual reader (not from one who hashes candidate IDs).
    Hashed,
    /// No client ID label.
    Omit,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    pub dhan_calls: Family<CallLabels, Counter>,
    pub refresh_duration: Family<MethodLabels, Histogram>,
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    pub notifications: Family<NotificationLabels, Counter>,
    calendar_valid_through: Gauge,
    pub watch_errors: Family<WatchLabels, Counter>,
    pub skipped_accounts: Gauge,
    accounts: Arc<AccountCollector>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(ClientIdLabel::Plain)
    }
}

impl Metrics {
    pub fn new(client_id: ClientIdLabel) -> Self {
        let mut registry = Registry::with_prefix("dhan_operator");
        let dhan_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "dhan_calls",
            "Calls to Dhan by endpoint and outcome",
            dhan_calls.clone(),
        );
        let refresh_duration = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.05, 2.0, 12))
        });
        registry.register(
            "refresh_duration_seconds",
            "Time to obtain a new token, by method",
            refresh_duration.clone(),
        );
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconcile failures by reason",
            reconcile_errors.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notification deliveries by channel and outcome",
            notifications.clone(),
        );
        let calendar_valid_through = Gauge::default();
        registry.register(
            "trading_calendar_valid_through_timestamp_seconds",
            "End of the last day the trading calendar lists holidays for (Unix seconds)",
            calendar_valid_through.clone(),
        );
        // Counters start at zero rather than appearing at their first increment: a family with no
        // series is left out of the scrape, and increase() over a series that appears at 1
        // misses that first event.
        let _ = reconcile_errors.get_or_create(&ReasonLabels {
            reason: "KubeApi".into(), // controller::reconcile::Error::metric_label
        });
        for channel in ["telegram", "webhook", "queue"] {
            for outcome in ["Sent", "Failed"] {
                let _ = notifications.get_or_create(&NotificationLabels {
                    channel: channel.into(),
                    outcome: outcome.into(),
                });
            }
        }
        let watch_errors = Family::<WatchLabels, Counter>::default();
        registry.register(
            "watch_errors",
            "Failed list or watch calls, by watch (each is retried with backoff)",
            watch_errors.clone(),
        );
        // The running version, as Prometheus's own build_info: 1, with the version as a label.
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register(
            "build_info",
            "The operator's version (the value is always 1)",
            build_info,
        );
        let skipped_accounts = Gauge::default();
        registry.register(
            "skipped_accounts",
            "DhanAccounts left out because they cannot be decoded (see their events)",
            skipped_accounts.clone(),
        );
        let accounts = Arc::new(AccountCollector {
            watched: OnceLock::new(),
            client_id,
        });
        registry.register_collector(Box::new(accounts.clone()));
        Metrics {
            registry,
            dhan_calls,
            refresh_duration,
            reconcile_errors,
            notifications,
            calendar_valid_through,
            watch_errors,
            skipped_accounts,
            accounts,
        }
    }

    /// Counts a call to Dhan.
    pub fn dhan_call(&self, endpoint: crate::dhan::Endpoint, outcome: &str) {
        self.dhan_calls
            .get_or_create(&CallLabels {
                endpoint: endpoint.as_str().into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Counts one notification delivery attempt.
    pub fn notification(&self, channel: &str, sent: bool) {
        self.notifications
            .get_or_create(&NotificationLabels {
                channel: channel.into(),
                outcome: if sent { "Sent" } else { "Failed" }.into(),
            })
            .inc();
    }

    /// Records the last IST date the trading calendar covers.
    pub fn set_calendar_valid_through(&self, date: Option<chrono::NaiveDate>) {
        let end = date
            .and_then(|d| d.succ_opt())
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc().timestamp() - 5 * 3600 - 1800)
            .unwrap_or(0);
        self.calendar_valid_through.set(end);
    }

    /// Makes per-account series come from this cache, as of `clock`'s time and by the trading
    /// calendar `calendar` gives at each scrape (the one in force).
    pub fn watch_accounts(
        &self,
        store: Store<DhanAccount>,
        clock: Arc<dyn Clock>,
        calendar: CalendarSource,
    ) {
        let _ = self.accounts.watched.set((store, clock, calendar));
    }

    /// The Prometheus/OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The trading calendar in force, as a scrape reads it.
pub type CalendarSource = Arc<dyn Fn() -> Arc<TradingCalendar> + Send + Sync>;

struct AccountCollector {
    watched: OnceLock<(Store<DhanAccount>, Arc<dyn Clock>, CalendarSource)>,
    client_id: ClientIdLabel,
}

impl std::fmt::Debug for AccountCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountCollector")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl AccountCollector {
    /// `namespace`, `name` and (unless omitted) `client_id`.
    fn labels(&self, account: &DhanAccount) -> Vec<(&'static str, String)> {
        let mut labels = vec![
            ("namespace", account.namespace().unwrap_or_default()),
            ("name", account.name_any()),
        ];
        let client_id = account.spec.client_id.trim();
        match self.client_id {
            ClientIdLabel::Plain => labels.push(("client_id", client_id.to_string())),
            ClientIdLabel::Hashed => {
                labels.push(("client_id", crate::claims::client_hash(client_id)))
            }
            ClientIdLabel::Omit => {}
        }
        labels
    }
}

impl prometheus_client::collector::Collector for AccountCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some((store, clock, calendar)) = self.watched.get() else {
            return Ok(());
        };
        let accounts = store.state();
        let now = clock.now();
        let labels = |a: &DhanAccount| self.labels(a);
        type Value = fn(&DhanAccount, DateTime<Utc>) -> Option<f64>;
        let series: [(&str, &str, Value); 6] = [
            (
                "account_token_expiry_timestamp_seconds",
                "When the account's current token expires (Unix seconds)",
                |a, _| Some(a.status.as_ref()?.expires_at?.timestamp() as f64),
            ),
            (
                "account_api_key_expiry_timestamp_seconds",
                "When the account's API key stops working (Unix seconds): the end of the IST day \
                 spec.apiKeyExpires names",
                |a, _| {
                    let date = a.spec.api_key_expires?;
                    Some(crate::controller::status::api_key_end(date).timestamp() as f64)
                },
            ),
            (
                "account_next_refresh_timestamp_seconds",
                "When the operator will next refresh the account's token (Unix seconds)",
                |a, _| Some(a.status.as_ref()?.next_refresh_time?.timestamp() as f64),
            ),
            (
                "account_consents_today",
                "Consents generated for the account's client on the current IST day (Dhan allows 25)",
                |a, now| {
                    let consents = a.status.as_ref()?.consents.as_ref()?;
                    let count = crate::decision::DayCount {
                        day: consents.day.clone(),
                        count: consents.count,
                    };
                    let today = crate::decision::DayCount::today(Some(&count), now);
                    Some(f64::from(today))
                },
            ),
            (
                "account_pod_sync_seconds",
                "From the last new token's mint until the last running Pod that mounts it was told \
                 to sync (--sync-pods); each kubelet rewrites the volume right after",
                |a, _| {
                    let sync = a.status.as_ref()?.pod_sync.as_ref()?;
                    Some(sync.millis_after_mint as f64 / 1000.0)
                },
            ),
            (
                "account_ready",
                "1 when the account has a valid token, else 0",
                |a, _| {
                    let status = a.status.as_ref();
                    let ready = status
                        .map(|s| {
                            s.conditions
                                .iter()
                                .any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                        .unwrap_or(false);
                    Some(if ready { 1.0 } else { 0.0 })
                },
            ),
        ];
        for (name, help, value) in series {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for account in &accounts {
                if let Some(v) = value(account, now) {
                    ConstGauge::new(v).encode(family.encode_family(&labels(account))?)?;
                }
            }
        }
        let calendar = calendar();
        let mut lapse = encoder.encode_descriptor(
            "account_lapse_planned_until_timestamp_seconds",
            "With tradingDaysOnly: the account is without a valid token on purpose until then (no \
             session before its next refresh); the not-ready and expiry alerts keep quiet for it",
            None,
            MetricType::Gauge,
        )?;
        for account in &accounts {
            if let Some(until) = crate::notify::health::lapse_planned_until(account, &calendar, now)
            {
                ConstGauge::new(until.timestamp() as f64)
                    .encode(lapse.encode_family(&labels(account))?)?;
            }
        }
        let mut phase = encoder.encode_descriptor(
            "account_phase",
            "1 for the account's current phase",
            None,
            MetricType::Gauge,
        )?;
        for account in &accounts {
            if let Some(p) = account.status.as_ref().and_then(|s| s.phase) {
                let labels = (
                    labels(account),
                    PhaseLabel {
                        phase: phase_name(p),
                    },
                );
                ConstGauge::new(1i64).encode(phase.encode_family(&labels)?)?;
            }
        }
        let logins = accounts
            .iter()
            .filter(|a| a.status.as_ref().is_some_and(|s| s.login.is_some()))
            .count();
        let family = encoder.encode_descriptor(
            "login_jobs_running",
            "Browser-login Jobs in progress",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(logins as i64).encode(family)?;
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: String,
}

fn phase_name(p: Phase) -> String {
    p.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_info_names_the_running_version() {
        let text = Metrics::default().render();
        let line = format!(
            "dhan_operator_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&line), "{text}");
    }

    /// docs/operations.md lists every metric the operator exports, with its type and help, as
    /// `/metrics` says them (one account in the cache, so every per-account family shows).
    #[test]
    fn the_operations_guide_lists_every_metric_as_exported() {
        let metrics = Metrics::default();
        let (reader, mut writer) = kube::runtime::reflector::store::<DhanAccount>();
        let account: DhanAccount = serde_json::from_value(serde_json::json!({
            "apiVersion": "dhan-operator.dev/v1alpha1", "kind": "DhanAccount",
            "metadata": { "name": "alice", "namespace": "trading", "uid": "u" },
            "spec": { "clientId": "1000000001", "credentialsSecret": "alice-dhan",
                      "apiKeyExpires": "2027-06-30" },
        }))
        .unwrap();
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(account));
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::SystemClock);
        let calendar: CalendarSource = Arc::new(TradingCalendar::builtin);
        metrics.watch_accounts(reader, clock, calendar);
        // Families show once they have a series.
        metrics.dhan_call(crate::dhan::Endpoint::GenerateAccessToken, "success");
        let method = MethodLabels {
            method: "totp".into(),
        };
        metrics.refresh_duration.get_or_create(&method).observe(1.0);
        let watch = WatchLabels {
            watch: "accounts".into(),
        };
        metrics.watch_errors.get_or_create(&watch).inc();
        let text = metrics.render();
        let mut exported: Vec<(String, String, String)> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                exported.push((name.into(), String::new(), help.replace("\\n", " ")));
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                let entry = exported.iter_mut().find(|e| e.0 == name).unwrap();
                entry.1 = kind.into();
            }
        }
        let doc = include_str!("../docs/operations.md");
        let rows: Vec<(String, String, String)> = doc
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.strip_prefix("| `dhan_operator_")?.split(" | ").collect();
                let name = format!("dhan_operator_{}", cells[0].trim_end_matches('`'));
                let help = cells.get(2)?.trim_end_matches(" |").to_string();
                Some((name, cells.get(1)?.to_string(), help))
            })
            .collect();
        let mut problems = Vec::new();
        for (name, kind, help) in &exported {
            match rows.iter().find(|r| &r.0 == name) {
                None => problems.push(format!("| `{name}` | {kind} | {help} |")),
                Some(row) if (&row.1, &row.2) != (kind, help) => problems.push(format!(
                    "{name}: docs/operations.md says `{} | {}`, /metrics `{kind} | {help}`",
                    row.1, row.2
                )),
                Some(_) => {}
            }
        }
        for row in &rows {
            if !exported.iter().any(|e| e.0 == row.0) {
                problems.push(format!("{} is documented but not exported", row.0));
            }
        }
        assert!(
            problems.is_empty(),
            "docs/operations.md's metrics table differs from /metrics:\n{}",
            problems.join("\n")
        );
    }
}
